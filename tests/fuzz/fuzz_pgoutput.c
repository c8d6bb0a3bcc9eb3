/*
 * The pgoutput decoder (src/pgoutput.c): a replication session's messages.
 * An input is a sequence of messages, each after a 2-byte big-endian length
 * (the last one takes what is left when fewer bytes remain), so that the
 * Relation messages of an input describe the tables its changes name.  A
 * length of 0xffff is no message but a new session (walq__pgoutput_reset).
 * Each input starts a session of its own, so that a crash replays alone.
 *
 * The seeds in tests/fuzz/corpus/pgoutput are the captured sessions of
 * tests/data/pgoutput, one file each with its messages framed so, and
 * "reset": the first insert of insert.hex again after a new session, which
 * no longer knows its relation.
 */
#include <string.h>

#include "fuzz.h"
#include "pgoutput.h"
#include "walq.h"

#define RESET_MARK 0xffff

static volatile size_t sink;

static void touch_text(const char *s)
{
    if (s != NULL)
        sink += strlen(s);
}

static void touch_values(const walq__value *v, size_t n)
{
    FUZZ_CHECK(n == 0 || v != NULL);
    /* A TupleData has at most 32767 columns (an Int16). */
    FUZZ_CHECK(n <= 32767);
    for (size_t i = 0; i < n; i++) {
        FUZZ_CHECK(v[i].name != NULL);
        touch_text(v[i].name);
        FUZZ_CHECK(v[i].type == NULL);
        switch (v[i].kind) {
        case WALQ__V_NULL:
        case WALQ__V_BOOL:
            FUZZ_CHECK(v[i].str == NULL && v[i].len == 0);
            FUZZ_CHECK(v[i].b == 0 || v[i].b == 1);
            break;
        case WALQ__V_INT:
        case WALQ__V_NUM:
        case WALQ__V_STR:
            FUZZ_CHECK(v[i].str != NULL);
            /* NUL-terminated at len, as the header promises. */
            FUZZ_CHECK(v[i].str[v[i].len] == '\0');
            if (v[i].len > 0)
                sink += (unsigned char)v[i].str[v[i].len - 1];
            break;
        default:
            FUZZ_CHECK(!"unknown value kind");
        }
    }
}

static void check_change(const walq__change *ch, size_t len)
{
    switch (ch->action) {
    case WALQ__ACT_NONE: {
        walq__change zero;

        memset(&zero, 0, sizeof(zero));
        FUZZ_CHECK(memcmp(ch, &zero, sizeof(zero)) == 0);
        return;
    }
    case WALQ__ACT_BEGIN:
        FUZZ_CHECK(len == 21 && ch->next_lsn == 0);
        break;
    case WALQ__ACT_COMMIT:
        FUZZ_CHECK(len == 26 && ch->xid == 0);
        break;
    case WALQ__ACT_INSERT:
    case WALQ__ACT_UPDATE:
    case WALQ__ACT_DELETE:
    case WALQ__ACT_TRUNCATE:
        FUZZ_CHECK(ch->schema != NULL && ch->table != NULL);
        FUZZ_CHECK(ch->xid == 0 && ch->lsn == 0 && ch->timestamp_us == 0);
        break;
    case WALQ__ACT_MESSAGE:
        FUZZ_CHECK(ch->prefix != NULL && ch->content != NULL);
        FUZZ_CHECK(ch->content_len < len && ch->content[ch->content_len] == '\0');
        FUZZ_CHECK(ch->transactional == 0 || ch->transactional == 1);
        break;
    default:
        FUZZ_CHECK(!"unknown action");
    }
    FUZZ_CHECK(ch->action == WALQ__ACT_INSERT || ch->action == WALQ__ACT_UPDATE ||
               ch->columns == NULL);
    FUZZ_CHECK(ch->action == WALQ__ACT_UPDATE || ch->action == WALQ__ACT_DELETE ||
               ch->identity == NULL);
    touch_text(ch->schema);
    touch_text(ch->table);
    touch_text(ch->prefix);
    touch_values(ch->columns, ch->ncolumns);
    touch_values(ch->identity, ch->nidentity);
    sink += walq__change_column(ch, "id") != NULL;
}

static void decode_one(walq__pgoutput *d, const uint8_t *data, size_t size)
{
    walq__change ch;
    walq__action action;
    size_t ncolumns, nidentity;
    int rc;

    rc = walq__pgoutput_decode(d, (const char *)data, size, &ch);
    if (rc != 0) {
        FUZZ_CHECK(rc == WALQ_EDECODE || rc == WALQ_ENOMEM);
        FUZZ_CHECK(walq__pgoutput_error(d)[0] != '\0');
        touch_text(walq__pgoutput_error(d));
        return;
    }
    FUZZ_CHECK(walq__pgoutput_error(d)[0] == '\0');
    check_change(&ch, size);
    /* Decoding the same bytes again gives the same change (a Relation replaces itself). */
    action = ch.action;
    ncolumns = ch.ncolumns;
    nidentity = ch.nidentity;
    FUZZ_CHECK(walq__pgoutput_decode(d, (const char *)data, size, &ch) == 0);
    FUZZ_CHECK(ch.action == action && ch.ncolumns == ncolumns && ch.nidentity == nidentity);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static walq__pgoutput *d;
    size_t pos = 0;

    if (d == NULL && walq__pgoutput_new(&d) != 0)
        abort();
    walq__pgoutput_reset(d);
    while (pos + 2 <= size) {
        size_t n = (size_t)data[pos] << 8 | data[pos + 1];

        pos += 2;
        if (n == RESET_MARK) {
            walq__pgoutput_reset(d);
            continue;
        }
        if (n > size - pos)
            n = size - pos;
        /* An exact copy, so that AddressSanitizer sees a read past the message. */
        {
            uint8_t *msg = malloc(n ? n : 1);

            if (msg == NULL)
                abort();
            if (n > 0)
                memcpy(msg, data + pos, n);
            decode_one(d, msg, n);
            free(msg);
        }
        pos += n;
    }
    return 0;
}
