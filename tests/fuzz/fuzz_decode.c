/*
 * The wal2json decoder (src/decode.c): one format-version 2 object per
 * input, as XLogData carries it.  One decoder for all inputs, as a stream
 * has, so that state left by one input meets the next.
 */
#include <string.h>

#include "decode.h"
#include "fuzz.h"
#include "walq.h"

static volatile size_t sink;

static void touch_text(const char *s)
{
    if (s != NULL)
        sink += strlen(s);
}

static void touch_values(const walq__value *v, size_t n)
{
    FUZZ_CHECK(n == 0 || v != NULL);
    for (size_t i = 0; i < n; i++) {
        FUZZ_CHECK(v[i].name != NULL);
        touch_text(v[i].name);
        touch_text(v[i].type);
        FUZZ_CHECK(v[i].kind >= WALQ__V_NULL && v[i].kind <= WALQ__V_STR);
        if (v[i].kind == WALQ__V_STR || v[i].kind == WALQ__V_NUM || v[i].kind == WALQ__V_INT) {
            FUZZ_CHECK(v[i].str != NULL);
            /* NUL-terminated at len, as the header promises. */
            FUZZ_CHECK(v[i].str[v[i].len] == '\0');
            if (v[i].len > 0)
                sink += (unsigned char)v[i].str[v[i].len - 1];
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static walq__decoder *d;
    walq__change ch;
    int rc;

    if (d == NULL && walq__decoder_new(&d) != 0)
        abort();
    memset(&ch, 0, sizeof(ch));
    rc = walq__decode(d, (const char *)data, size, &ch);
    if (rc != 0) {
        FUZZ_CHECK(rc == WALQ_EDECODE || rc == WALQ_ENOMEM);
        touch_text(walq__decoder_error(d));
        return 0;
    }
    switch (ch.action) {
    case WALQ__ACT_BEGIN:
    case WALQ__ACT_COMMIT:
    case WALQ__ACT_INSERT:
    case WALQ__ACT_UPDATE:
    case WALQ__ACT_DELETE:
    case WALQ__ACT_TRUNCATE:
    case WALQ__ACT_MESSAGE:
        break;
    default:
        FUZZ_CHECK(!"unknown action");
    }
    touch_text(ch.schema);
    touch_text(ch.table);
    touch_text(ch.prefix);
    touch_values(ch.columns, ch.ncolumns);
    touch_values(ch.identity, ch.nidentity);
    if (ch.content != NULL && ch.content_len > 0)
        sink += (unsigned char)ch.content[ch.content_len - 1];
    sink += walq__change_column(&ch, "id") != NULL;
    return 0;
}
