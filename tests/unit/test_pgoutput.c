/*
 * Unit tests of the pgoutput decoder.  The captured messages live in
 * tests/data/pgoutput/ (capture.sh there made them): one a line, the LSN the
 * server gave it and its bytes in hex.  Malformed messages are built here
 * from those or by hand.  Run with --bench to measure the decoder instead of
 * testing it.
 */
#include <check.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lsn.h"
#include "pgoutput.h"
#include "proto.h"
#include "walq.h"

#define DATA_DIR WALQ_TEST_DATA "/pgoutput/"

/* The OIDs the captured session gave its tables and its enum type. */
#define OID_T     16384u
#define OID_TFULL 16391u
#define OID_DOC   16396u
#define OID_PT_A  16406u
#define OID_PT_B  16411u
#define OID_MOOD  16417u
#define OID_TM    16421u
#define OID_ALT   16426u

static walq__pgoutput *dec;

static void setup(void)
{
    ck_assert_int_eq(walq__pgoutput_new(&dec), 0);
    ck_assert_ptr_nonnull(dec);
}

static void teardown(void)
{
    walq__pgoutput_free(dec);
    dec = NULL;
}

typedef struct msg {
    uint64_t lsn; /* the one the server gave the message */
    unsigned char *data;
    size_t len;
} msg;

typedef struct stream {
    msg *m;
    size_t n;
} stream;

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/*
 * Reads a captured file: "LSN HEX" lines.  It stays clear of Check's
 * assertions, which only work inside a test, for --bench; 0 or -1.
 */
static int read_stream(const char *name, stream *s)
{
    char path[4096], *line = NULL;
    size_t cap = 0;
    ssize_t got;
    FILE *f;
    int rc = 0;

    memset(s, 0, sizeof(*s));
    snprintf(path, sizeof(path), "%s%s", DATA_DIR, name);
    f = fopen(path, "r");
    if (f == NULL)
        return -1;
    while (rc == 0 && (got = getline(&line, &cap, f)) > 0) {
        char *sp = strchr(line, ' ');
        size_t hexlen;
        msg *m;

        while (got > 0 && (line[got - 1] == '\n' || line[got - 1] == '\r'))
            line[--got] = '\0';
        if (sp == NULL || (hexlen = strlen(sp + 1)) % 2 != 0) {
            rc = -1;
            break;
        }
        m = realloc(s->m, (s->n + 1) * sizeof(*m));
        if (m == NULL) {
            rc = -1;
            break;
        }
        s->m = m;
        m = &s->m[s->n];
        m->len = hexlen / 2;
        m->data = malloc(m->len ? m->len : 1);
        if (m->data == NULL || walq__lsn_parse_n(line, (size_t)(sp - line), &m->lsn) != 0) {
            free(m->data);
            rc = -1;
            break;
        }
        s->n++;
        for (size_t i = 0; i < m->len; i++) {
            int hi = hexval(sp[1 + 2 * i]), lo = hexval(sp[2 + 2 * i]);

            if (hi < 0 || lo < 0)
                rc = -1;
            m->data[i] = (unsigned char)(hi << 4 | lo);
        }
    }
    free(line);
    fclose(f);
    return rc;
}

static void free_stream(stream *s)
{
    for (size_t i = 0; i < s->n; i++)
        free(s->m[i].data);
    free(s->m);
    memset(s, 0, sizeof(*s));
}

static stream load(const char *name)
{
    stream s;

    ck_assert_msg(read_stream(name, &s) == 0, "cannot read %s%s", DATA_DIR, name);
    return s;
}

/*
 * Decodes from an exact-size heap copy, which is overwritten and freed at
 * once: AddressSanitizer then catches a read past len, and the checks that
 * follow catch any pointer into the input instead of into the decoder's
 * storage.
 */
static int decode_n(const void *data, size_t len, walq__change *c)
{
    char *copy = malloc(len ? len : 1);
    int rc;

    ck_assert_ptr_nonnull(copy);
    if (len > 0)
        memcpy(copy, data, len);
    rc = walq__pgoutput_decode(dec, copy, len, c);
    memset(copy, '#', len);
    free(copy);
    return rc;
}

static void decode_ok(const msg *m, walq__change *c)
{
    int rc = decode_n(m->data, m->len, c);

    ck_assert_msg(rc == 0, "message at %X/%X ('%c'): %s", (unsigned)(m->lsn >> 32),
                  (unsigned)m->lsn, m->data[0], walq__pgoutput_error(dec));
    ck_assert_str_eq(walq__pgoutput_error(dec), "");
}

/* A message that carries nothing: every field is zero. */
static void check_none(const walq__change *c)
{
    walq__change zero;

    memset(&zero, 0, sizeof(zero));
    ck_assert_int_eq(c->action, WALQ__ACT_NONE);
    ck_assert(memcmp(c, &zero, sizeof(zero)) == 0);
}

static void check_begin(const walq__change *c, uint64_t lsn, uint32_t xid, int64_t ts)
{
    ck_assert_int_eq(c->action, WALQ__ACT_BEGIN);
    ck_assert_msg(c->lsn == lsn, "begin lsn %llX", (unsigned long long)c->lsn);
    ck_assert(c->next_lsn == 0);
    ck_assert_uint_eq(c->xid, xid);
    ck_assert_msg(c->timestamp_us == ts, "begin time %lld", (long long)c->timestamp_us);
    ck_assert_ptr_null(c->schema);
    ck_assert_ptr_null(c->table);
    ck_assert_ptr_null(c->columns);
    ck_assert_ptr_null(c->identity);
    ck_assert_ptr_null(c->prefix);
}

static void check_commit(const walq__change *c, uint64_t lsn, uint64_t end, int64_t ts)
{
    ck_assert_int_eq(c->action, WALQ__ACT_COMMIT);
    ck_assert_msg(c->lsn == lsn, "commit lsn %llX", (unsigned long long)c->lsn);
    ck_assert_msg(c->next_lsn == end, "commit end %llX", (unsigned long long)c->next_lsn);
    ck_assert_uint_eq(c->xid, 0);
    ck_assert(c->timestamp_us == ts);
    ck_assert_ptr_null(c->schema);
    ck_assert_ptr_null(c->columns);
    ck_assert_ptr_null(c->prefix);
}

/* A row change: no LSN, time or transaction ID of its own in protocol version 1. */
static void check_row(const walq__change *c, walq__action action, const char *schema,
                      const char *table, size_t ncolumns, size_t nidentity)
{
    ck_assert_int_eq(c->action, action);
    ck_assert_str_eq(c->schema, schema);
    ck_assert_str_eq(c->table, table);
    ck_assert_uint_eq(c->ncolumns, ncolumns);
    if (action == WALQ__ACT_DELETE || action == WALQ__ACT_TRUNCATE)
        ck_assert_ptr_null(c->columns);
    else if (ncolumns > 0)
        ck_assert_ptr_nonnull(c->columns);
    ck_assert_uint_eq(c->nidentity, nidentity);
    if (nidentity == 0)
        ck_assert_ptr_null(c->identity);
    ck_assert_uint_eq(c->xid, 0);
    ck_assert(c->lsn == 0);
    ck_assert(c->next_lsn == 0);
    ck_assert(c->timestamp_us == 0);
    ck_assert_ptr_null(c->prefix);
    ck_assert_ptr_null(c->content);
}

static void check_name(const walq__value *v, const char *name)
{
    ck_assert_str_eq(v->name, name);
    ck_assert_ptr_null(v->type);
}

static void check_int(const walq__value *v, const char *name, int64_t i, const char *text)
{
    check_name(v, name);
    ck_assert_msg(v->kind == WALQ__V_INT, "column \"%s\" is of kind %d", name, v->kind);
    ck_assert_msg(v->i == i, "column \"%s\" is %lld", name, (long long)v->i);
    ck_assert_str_eq(v->str, text);
    ck_assert_uint_eq(v->len, strlen(text));
}

static void check_num(const walq__value *v, const char *name, const char *text)
{
    check_name(v, name);
    ck_assert_msg(v->kind == WALQ__V_NUM, "column \"%s\" is of kind %d", name, v->kind);
    ck_assert_str_eq(v->str, text);
    ck_assert_uint_eq(v->len, strlen(text));
}

static void check_str(const walq__value *v, const char *name, const char *s, size_t len)
{
    check_name(v, name);
    ck_assert_msg(v->kind == WALQ__V_STR, "column \"%s\" is of kind %d", name, v->kind);
    ck_assert_uint_eq(v->len, len);
    ck_assert_mem_eq(v->str, s, len);
    ck_assert_int_eq(v->str[len], '\0');
}

static void check_bool(const walq__value *v, const char *name, int b)
{
    check_name(v, name);
    ck_assert_int_eq(v->kind, WALQ__V_BOOL);
    ck_assert_int_eq(v->b, b);
    ck_assert_ptr_null(v->str);
}

static void check_null(const walq__value *v, const char *name)
{
    check_name(v, name);
    ck_assert_int_eq(v->kind, WALQ__V_NULL);
    ck_assert_ptr_null(v->str);
    ck_assert_uint_eq(v->len, 0);
}

/* The jsonb of the first row of t, as the server prints it. */
static const char first_p[] = "{\"x\": \"\xc3\xa9\\\\n\\\"q\"}";
static const char first_q[] = "\xc3\xa9\xe4\xb8\xad\xe2\x82\xac \xf0\x9f\x98\x80";

/* The first row of t after the update of its q. */
static void check_t_row(const walq__value *v, int64_t id, const char *idtext, const char *q)
{
    check_int(&v[0], "id", id, idtext);
    check_str(&v[1], "q", q, strlen(q));
    check_str(&v[2], "p", first_p, strlen(first_p));
    check_num(&v[3], "n", "1.5");
    check_bool(&v[4], "b", 1);
    check_null(&v[5], "f");
    check_str(&v[6], "ts", "2026-11-24 20:25:07.989324+00", 29);
    check_int(&v[7], "s", -32768, "-32768");
    check_int(&v[8], "i", 2147483647, "2147483647");
    check_int(&v[9], "o", INT64_C(4294967295), "4294967295");
    check_num(&v[10], "r", "1.25");
    check_null(&v[11], "nul");
}

START_TEST(insert_stream)
{
    stream s = load("insert.hex");
    walq__change c;
    const walq__value *v;

    ck_assert_uint_eq(s.n, 5);
    decode_ok(&s.m[0], &c);
    check_begin(&c, UINT64_C(0x151EF28), 736, INT64_C(1796169686335463));
    decode_ok(&s.m[1], &c);
    check_none(&c);

    decode_ok(&s.m[2], &c);
    check_row(&c, WALQ__ACT_INSERT, "public", "t", 12, 0);
    v = c.columns;
    check_int(&v[0], "id", 1, "1");
    /* Non-ASCII text passes as the server's UTF-8 bytes. */
    check_str(&v[1], "q", first_q, 13);
    check_str(&v[2], "p", first_p, 17);
    check_num(&v[3], "n", "1.5");
    check_bool(&v[4], "b", 1);
    check_null(&v[5], "f");
    check_str(&v[6], "ts", "2026-11-24 20:25:07.989324+00", 29);
    check_int(&v[7], "s", -32768, "-32768");
    check_int(&v[8], "i", 2147483647, "2147483647");
    check_int(&v[9], "o", INT64_C(4294967295), "4294967295");
    check_num(&v[10], "r", "1.25");
    check_null(&v[11], "nul");
    ck_assert_ptr_eq(walq__change_column(&c, "r"), &v[10]);

    decode_ok(&s.m[3], &c);
    check_row(&c, WALQ__ACT_INSERT, "public", "t", 12, 0);
    v = c.columns;
    check_int(&v[0], "id", INT64_MIN, "-9223372036854775808");
    check_str(&v[1], "q", "", 0);
    check_str(&v[2], "p", "[]", 2);
    /* No JSON number holds these: text, as wal2json quotes them. */
    check_str(&v[3], "n", "NaN", 3);
    check_bool(&v[4], "b", 0);
    check_str(&v[5], "f", "Infinity", 8);
    check_str(&v[6], "ts", "infinity", 8);
    check_int(&v[7], "s", 32767, "32767");
    check_int(&v[8], "i", -2147483648, "-2147483648");
    check_int(&v[9], "o", 0, "0");
    check_num(&v[10], "r", "-0.5");
    check_null(&v[11], "nul");

    decode_ok(&s.m[4], &c);
    check_commit(&c, UINT64_C(0x151EF28), UINT64_C(0x151EF58), INT64_C(1796169686335463));
    free_stream(&s);
}
END_TEST

START_TEST(update_stream)
{
    stream s = load("update.hex");
    walq__change c;
    const walq__value *v;

    ck_assert_uint_eq(s.n, 15);
    decode_ok(&s.m[0], &c);
    check_begin(&c, UINT64_C(0x1520D10), 739, INT64_C(1796169686439597));
    decode_ok(&s.m[1], &c);
    check_none(&c);
    /* The key did not change: no old key. */
    decode_ok(&s.m[2], &c);
    check_row(&c, WALQ__ACT_UPDATE, "public", "t", 12, 0);
    check_t_row(c.columns, 1, "1", "changed");
    decode_ok(&s.m[3], &c);
    check_commit(&c, UINT64_C(0x1520D10), UINT64_C(0x1520D40), INT64_C(1796169686439597));

    /* The key changed: 'K' holds the old key, and only the key. */
    decode_ok(&s.m[4], &c);
    check_begin(&c, UINT64_C(0x1520E28), 740, INT64_C(1796169686453444));
    decode_ok(&s.m[5], &c);
    check_row(&c, WALQ__ACT_UPDATE, "public", "t", 12, 1);
    check_t_row(c.columns, 2, "2", "changed");
    check_int(&c.identity[0], "id", 1, "1");
    decode_ok(&s.m[6], &c);
    check_commit(&c, UINT64_C(0x1520E28), UINT64_C(0x1520E58), INT64_C(1796169686453444));

    /* The TOASTed body did not change: it is left out. */
    decode_ok(&s.m[7], &c);
    check_begin(&c, UINT64_C(0x1520EF0), 741, INT64_C(1796169686468894));
    decode_ok(&s.m[8], &c);
    check_none(&c);
    decode_ok(&s.m[9], &c);
    check_row(&c, WALQ__ACT_UPDATE, "public", "doc", 2, 0);
    check_int(&c.columns[0], "id", 1, "1");
    check_str(&c.columns[1], "title", "second", 6);
    ck_assert_ptr_null(walq__change_column(&c, "body"));
    decode_ok(&s.m[10], &c);
    check_commit(&c, UINT64_C(0x1520EF0), UINT64_C(0x1520F20), INT64_C(1796169686468894));

    /* Replica identity full: 'O' holds the whole old row. */
    decode_ok(&s.m[11], &c);
    check_begin(&c, UINT64_C(0x1520F78), 742, INT64_C(1796169686490937));
    decode_ok(&s.m[12], &c);
    check_none(&c);
    decode_ok(&s.m[13], &c);
    check_row(&c, WALQ__ACT_UPDATE, "public", "tfull", 2, 2);
    v = c.columns;
    check_int(&v[0], "a", 1, "1");
    check_str(&v[1], "b", "uno", 3);
    v = c.identity;
    check_int(&v[0], "a", 1, "1");
    check_str(&v[1], "b", "one", 3);
    ck_assert_ptr_ne(c.columns, c.identity);
    decode_ok(&s.m[14], &c);
    check_commit(&c, UINT64_C(0x1520F78), UINT64_C(0x1520FA8), INT64_C(1796169686490937));
    free_stream(&s);
}
END_TEST

START_TEST(delete_stream)
{
    stream s = load("delete.hex");
    walq__change c;

    ck_assert_uint_eq(s.n, 12);
    decode_ok(&s.m[0], &c);
    check_begin(&c, UINT64_C(0x1520FF8), 743, INT64_C(1796169686606574));
    decode_ok(&s.m[1], &c);
    check_none(&c);
    decode_ok(&s.m[2], &c);
    check_row(&c, WALQ__ACT_DELETE, "public", "t", 0, 1);
    check_int(&c.identity[0], "id", 2, "2");
    decode_ok(&s.m[3], &c);
    check_commit(&c, UINT64_C(0x1520FF8), UINT64_C(0x1521028), INT64_C(1796169686606574));

    decode_ok(&s.m[4], &c);
    check_begin(&c, UINT64_C(0x1521070), 744, INT64_C(1796169686640039));
    decode_ok(&s.m[5], &c);
    check_none(&c);
    decode_ok(&s.m[6], &c);
    check_row(&c, WALQ__ACT_DELETE, "public", "tfull", 0, 2);
    check_int(&c.identity[0], "a", 1, "1");
    check_str(&c.identity[1], "b", "uno", 3);
    decode_ok(&s.m[7], &c);
    check_commit(&c, UINT64_C(0x1521070), UINT64_C(0x15210A0), INT64_C(1796169686640039));

    decode_ok(&s.m[8], &c);
    check_begin(&c, UINT64_C(0x15211C0), 745, INT64_C(1796169686662990));
    decode_ok(&s.m[9], &c);
    check_none(&c);
    decode_ok(&s.m[10], &c);
    check_row(&c, WALQ__ACT_DELETE, "public", "doc", 0, 1);
    check_int(&c.identity[0], "id", 1, "1");
    decode_ok(&s.m[11], &c);
    check_commit(&c, UINT64_C(0x15211C0), UINT64_C(0x15211F0), INT64_C(1796169686662990));
    free_stream(&s);
}
END_TEST

START_TEST(truncate_stream)
{
    stream s = load("truncate.hex");
    walq__change c;

    ck_assert_uint_eq(s.n, 5);
    decode_ok(&s.m[0], &c);
    check_begin(&c, UINT64_C(0x15225B8), 746, INT64_C(1796169686715135));
    /* Each table truncated is described first. */
    decode_ok(&s.m[1], &c);
    check_none(&c);
    decode_ok(&s.m[2], &c);
    check_none(&c);
    /* TRUNCATE t, tfull: one message, which reports the first. */
    decode_ok(&s.m[3], &c);
    check_row(&c, WALQ__ACT_TRUNCATE, "public", "t", 0, 0);
    ck_assert_ptr_null(c.columns);
    decode_ok(&s.m[4], &c);
    check_commit(&c, UINT64_C(0x15225B8), UINT64_C(0x15227F8), INT64_C(1796169686715135));
    free_stream(&s);
}
END_TEST

static void check_message(const walq__change *c, int transactional, uint64_t lsn,
                          const char *prefix, const char *content, size_t len)
{
    ck_assert_int_eq(c->action, WALQ__ACT_MESSAGE);
    ck_assert_int_eq(c->transactional, transactional);
    ck_assert(c->lsn == lsn);
    ck_assert_uint_eq(c->xid, 0);
    ck_assert(c->timestamp_us == 0);
    ck_assert(c->next_lsn == 0);
    ck_assert_str_eq(c->prefix, prefix);
    ck_assert_uint_eq(c->content_len, len);
    ck_assert_mem_eq(c->content, content, len);
    ck_assert_int_eq(c->content[len], '\0');
    ck_assert_ptr_null(c->schema);
    ck_assert_ptr_null(c->columns);
}

START_TEST(message_stream)
{
    stream s = load("message.hex");
    walq__change c;

    ck_assert_uint_eq(s.n, 5);
    decode_ok(&s.m[0], &c);
    check_begin(&c, UINT64_C(0x1522880), 747, INT64_C(1796169686762983));
    decode_ok(&s.m[1], &c);
    check_message(&c, 1, UINT64_C(0x1522840), "walq", "wake \"up\"\n", 10);
    ck_assert(c.lsn == s.m[1].lsn);
    /* The content is bytes: a NUL inside it counts. */
    decode_ok(&s.m[2], &c);
    check_message(&c, 1, UINT64_C(0x1522880), "walq.bin", "\0\xff\0", 3);
    decode_ok(&s.m[3], &c);
    check_commit(&c, UINT64_C(0x1522880), UINT64_C(0x15228B0), INT64_C(1796169686762983));
    /* A message that is not transactional comes outside any transaction. */
    decode_ok(&s.m[4], &c);
    check_message(&c, 0, UINT64_C(0x15228F0), "walq.notice", "", 0);
    free_stream(&s);
}
END_TEST

START_TEST(partition_stream)
{
    stream s = load("partition.hex");
    walq__change c;

    /* Without publish_via_partition_root each partition is a relation of its own. */
    ck_assert_uint_eq(s.n, 7);
    decode_ok(&s.m[0], &c);
    check_begin(&c, UINT64_C(0x15229B0), 748, INT64_C(1796169686892140));
    decode_ok(&s.m[1], &c);
    check_none(&c);
    decode_ok(&s.m[2], &c);
    check_row(&c, WALQ__ACT_INSERT, "public", "pt_a", 2, 0);
    check_int(&c.columns[0], "id", 1, "1");
    check_str(&c.columns[1], "k", "a", 1);
    decode_ok(&s.m[3], &c);
    check_none(&c);
    decode_ok(&s.m[4], &c);
    check_row(&c, WALQ__ACT_INSERT, "public", "pt_b", 2, 0);
    check_int(&c.columns[0], "id", 2, "2");
    check_str(&c.columns[1], "k", "b", 1);
    decode_ok(&s.m[5], &c);
    check_row(&c, WALQ__ACT_INSERT, "public", "pt_a", 2, 0);
    check_int(&c.columns[0], "id", 3, "3");
    decode_ok(&s.m[6], &c);
    check_commit(&c, UINT64_C(0x15229B0), UINT64_C(0x15229E0), INT64_C(1796169686892140));
    free_stream(&s);
}
END_TEST

START_TEST(type_stream)
{
    stream s = load("type.hex");
    walq__change c;

    ck_assert_uint_eq(s.n, 5);
    decode_ok(&s.m[0], &c);
    check_begin(&c, UINT64_C(0x1522AC0), 749, INT64_C(1796169686952342));
    ck_assert_int_eq(s.m[1].data[0], 'Y');
    decode_ok(&s.m[1], &c);
    check_none(&c);
    decode_ok(&s.m[2], &c);
    check_none(&c);
    /* An enum is text. */
    decode_ok(&s.m[3], &c);
    check_row(&c, WALQ__ACT_INSERT, "public", "tm", 2, 0);
    check_int(&c.columns[0], "id", 1, "1");
    check_str(&c.columns[1], "m", "sad", 3);
    decode_ok(&s.m[4], &c);
    check_commit(&c, UINT64_C(0x1522AC0), UINT64_C(0x1522AF0), INT64_C(1796169686952342));
    free_stream(&s);
}
END_TEST

/* After ALTER TABLE the session describes the table again, under the same OID. */
START_TEST(alter_stream)
{
    stream s = load("alter.hex");
    walq__change c;

    ck_assert_uint_eq(s.n, 8);
    decode_ok(&s.m[0], &c);
    check_begin(&c, UINT64_C(0x1522BD0), 750, INT64_C(1796169687004397));
    decode_ok(&s.m[1], &c);
    check_none(&c);
    decode_ok(&s.m[2], &c);
    check_row(&c, WALQ__ACT_INSERT, "public", "alt", 1, 0);
    check_int(&c.columns[0], "id", 1, "1");
    decode_ok(&s.m[3], &c);
    check_commit(&c, UINT64_C(0x1522BD0), UINT64_C(0x1522C00), INT64_C(1796169687004397));

    /* The old description no longer fits the row. */
    ck_assert_int_eq(decode_n(s.m[6].data, s.m[6].len, &c), WALQ_EDECODE);
    ck_assert_str_eq(walq__pgoutput_error(dec),
                     "invalid insert message: the new row of relation 16426 (\"public\".\"alt\") "
                     "has 2 columns (offset 6), but its Relation message described 1");

    decode_ok(&s.m[4], &c);
    check_begin(&c, UINT64_C(0x15250C0), 752, INT64_C(1796169687071849));
    decode_ok(&s.m[5], &c);
    check_none(&c);
    decode_ok(&s.m[6], &c);
    check_row(&c, WALQ__ACT_INSERT, "public", "alt", 2, 0);
    check_int(&c.columns[0], "id", 2, "2");
    check_str(&c.columns[1], "extra", "x", 1);
    decode_ok(&s.m[7], &c);
    check_commit(&c, UINT64_C(0x15250C0), UINT64_C(0x15250F0), INT64_C(1796169687071849));

    /* And the first insert no longer fits the new one. */
    ck_assert_int_eq(decode_n(s.m[2].data, s.m[2].len, &c), WALQ_EDECODE);
    ck_assert_ptr_nonnull(strstr(walq__pgoutput_error(dec), "has 1 columns"));
    free_stream(&s);
}
END_TEST

START_TEST(origin_stream)
{
    stream s = load("origin.hex");
    walq__change c;

    ck_assert_uint_eq(s.n, 5);
    /* pg_replication_origin_xact_setup() set this commit time. */
    decode_ok(&s.m[0], &c);
    check_begin(&c, UINT64_C(0x15253A8), 754, INT64_C(1767323045000000));
    ck_assert_int_eq(s.m[1].data[0], 'O');
    decode_ok(&s.m[1], &c);
    check_none(&c);
    decode_ok(&s.m[2], &c);
    check_none(&c);
    decode_ok(&s.m[3], &c);
    check_row(&c, WALQ__ACT_INSERT, "public", "tfull", 2, 0);
    check_int(&c.columns[0], "a", 7, "7");
    check_str(&c.columns[1], "b", "from upstream", 13);
    decode_ok(&s.m[4], &c);
    check_commit(&c, UINT64_C(0x15253A8), UINT64_C(0x15253F0), INT64_C(1767323045000000));
    free_stream(&s);
}
END_TEST

static const char *const captured[] = {
    "insert.hex", "update.hex",    "delete.hex", "truncate.hex", "message.hex",
    "type.hex",   "partition.hex", "alter.hex",  "origin.hex",
};

/*
 * Every prefix of every captured message is a truncated message, and says
 * so; the cache is as it was, so the whole message still decodes after.
 */
START_TEST(every_truncation)
{
    stream s = load(captured[_i]);

    for (size_t k = 0; k < s.n; k++) {
        const msg *m = &s.m[k];
        walq__change c;

        for (size_t n = 0; n < m->len; n++) {
            ck_assert_int_eq(decode_n(m->data, n, &c), WALQ_EDECODE);
            ck_assert_msg(
                strstr(walq__pgoutput_error(dec), n == 0 ? "empty message" : "truncated ") != NULL,
                "%s message %zu cut to %zu bytes: %s", captured[_i], k, n,
                walq__pgoutput_error(dec));
            ck_assert_ptr_null(c.schema);
            ck_assert_ptr_null(c.columns);
            ck_assert_int_eq(c.action, WALQ__ACT_NONE);
        }
        decode_ok(m, &c);
    }
    free_stream(&s);
}
END_TEST

/* Every captured message with a byte more is refused, at the offset of that byte. */
START_TEST(every_trailing_byte)
{
    stream s = load(captured[_i]);

    for (size_t k = 0; k < s.n; k++) {
        const msg *m = &s.m[k];
        unsigned char *longer = malloc(m->len + 1);
        char want[160];
        walq__change c;

        ck_assert_ptr_nonnull(longer);
        memcpy(longer, m->data, m->len);
        longer[m->len] = 'x';
        ck_assert_int_eq(decode_n(longer, m->len + 1, &c), WALQ_EDECODE);
        snprintf(want, sizeof(want), " message at offset %zu (1 bytes)", m->len);
        ck_assert_msg(strstr(walq__pgoutput_error(dec), "unexpected data after the end of the ") !=
                              NULL &&
                          strstr(walq__pgoutput_error(dec), want) != NULL,
                      "%s message %zu: %s", captured[_i], k, walq__pgoutput_error(dec));
        ck_assert_int_eq(c.action, WALQ__ACT_NONE);
        free(longer);
        decode_ok(m, &c);
    }
    free_stream(&s);
}
END_TEST

/* Hand-made messages. */
typedef struct builder {
    unsigned char b[512];
    size_t n;
} builder;

static void put_u8(builder *w, unsigned v)
{
    ck_assert_uint_lt(w->n, sizeof(w->b));
    w->b[w->n++] = (unsigned char)v;
}

static void put_u16(builder *w, unsigned v)
{
    put_u8(w, v >> 8 & 0xff);
    put_u8(w, v & 0xff);
}

static void put_u32(builder *w, uint32_t v)
{
    put_u16(w, v >> 16);
    put_u16(w, v & 0xffff);
}

static void put_u64(builder *w, uint64_t v)
{
    put_u32(w, (uint32_t)(v >> 32));
    put_u32(w, (uint32_t)v);
}

static void put_str(builder *w, const char *s)
{
    for (size_t i = 0; i <= strlen(s); i++)
        put_u8(w, (unsigned char)s[i]);
}

static void put_text(builder *w, const char *s)
{
    put_u8(w, 't');
    put_u32(w, (uint32_t)strlen(s));
    for (size_t i = 0; i < strlen(s); i++)
        put_u8(w, (unsigned char)s[i]);
}

/*
 * A Relation message for "s"."r" (OID oid) of columns "k" (int8, the key),
 * "flag" (bool) and "txt" (text).
 */
static void relation3(builder *w, uint32_t oid)
{
    w->n = 0;
    put_u8(w, 'R');
    put_u32(w, oid);
    put_str(w, "s");
    put_str(w, "r");
    put_u8(w, 'd');
    put_u16(w, 3);
    put_u8(w, 1);
    put_str(w, "k");
    put_u32(w, 20);
    put_u32(w, UINT32_MAX);
    put_u8(w, 0);
    put_str(w, "flag");
    put_u32(w, 16);
    put_u32(w, UINT32_MAX);
    put_u8(w, 0);
    put_str(w, "txt");
    put_u32(w, 25);
    put_u32(w, UINT32_MAX);
}

static void describe(uint32_t oid)
{
    builder w;
    walq__change c;

    relation3(&w, oid);
    ck_assert_int_eq(decode_n(w.b, w.n, &c), 0);
    check_none(&c);
}

/* An insert into relation oid with a tuple header of ncols columns. */
static void insert_head(builder *w, uint32_t oid, unsigned ncols)
{
    w->n = 0;
    put_u8(w, 'I');
    put_u32(w, oid);
    put_u8(w, 'N');
    put_u16(w, ncols);
}

static void expect_error(const builder *w, const char *message)
{
    walq__change c;
    const char *err;
    size_t n;

    ck_assert_int_eq(decode_n(w->b, w->n, &c), WALQ_EDECODE);
    err = walq__pgoutput_error(dec);
    ck_assert_msg(strcmp(err, message) == 0, "got \"%s\", want \"%s\"", err, message);
    /* A failed decode leaves nothing dangling behind. */
    check_none(&c);
    /* PostgreSQL style: lower case first letter, no final period. */
    n = strlen(err);
    ck_assert_msg(err[n - 1] != '.', "%s ends with a period", err);
    ck_assert_msg(!(err[0] >= 'A' && err[0] <= 'Z'), "%s starts upper case", err);
}

START_TEST(hand_made_insert)
{
    builder w;
    walq__change c;

    describe(7);
    insert_head(&w, 7, 3);
    put_text(&w, "-12");
    put_text(&w, "f");
    put_u8(&w, 'b');
    put_u32(&w, 3);
    put_u8(&w, 0);
    put_u8(&w, 1);
    put_u8(&w, 0xff);
    ck_assert_int_eq(decode_n(w.b, w.n, &c), 0);
    check_row(&c, WALQ__ACT_INSERT, "s", "r", 3, 0);
    check_int(&c.columns[0], "k", -12, "-12");
    check_bool(&c.columns[1], "flag", 0);
    /* A binary value is its bytes, whatever the type. */
    check_str(&c.columns[2], "txt", "\0\1\xff", 3);

    /* Unchanged TOAST values are left out, wherever they are. */
    insert_head(&w, 7, 3);
    put_u8(&w, 'u');
    put_u8(&w, 'n');
    put_u8(&w, 'u');
    ck_assert_int_eq(decode_n(w.b, w.n, &c), 0);
    check_row(&c, WALQ__ACT_INSERT, "s", "r", 1, 0);
    check_null(&c.columns[0], "flag");
}
END_TEST

START_TEST(unknown_relation)
{
    builder w;
    walq__change c;

    insert_head(&w, OID_T, 0);
    expect_error(&w, "insert for relation 16384, which no Relation message described");
    w.b[0] = 'U';
    expect_error(&w, "update for relation 16384, which no Relation message described");
    w.b[0] = 'D';
    expect_error(&w, "delete for relation 16384, which no Relation message described");

    describe(OID_T);
    w.n = 0;
    put_u8(&w, 'T');
    put_u32(&w, 2);
    put_u8(&w, 0);
    put_u32(&w, OID_T);
    put_u32(&w, 4000000000u);
    expect_error(&w, "truncate for relation 4000000000 (offset 10), which no Relation message "
                     "described");
    /* A truncate names at least one table. */
    w.n = 0;
    put_u8(&w, 'T');
    put_u32(&w, 0);
    put_u8(&w, 0);
    expect_error(&w, "invalid truncate message: the relation count at offset 1 is 0");
    w.n = 0;
    put_u8(&w, 'T');
    put_u32(&w, UINT32_MAX);
    put_u8(&w, 3);
    put_u32(&w, OID_T);
    expect_error(&w, "truncated truncate message: 4294967295 relation OIDs at offset 6 need "
                     "17179869180 bytes, but 4 remain");
    w.n = 0;
    put_u8(&w, 'T');
    put_u32(&w, 1);
    put_u8(&w, 3);
    put_u32(&w, OID_T);
    ck_assert_int_eq(decode_n(w.b, w.n, &c), 0);
    check_row(&c, WALQ__ACT_TRUNCATE, "s", "r", 0, 0);

    /* A new session describes its relations again; the old descriptions are gone. */
    walq__pgoutput_reset(dec);
    expect_error(&w, "truncate for relation 16384 (offset 6), which no Relation message described");
    describe(OID_T);
    ck_assert_int_eq(decode_n(w.b, w.n, &c), 0);
}
END_TEST

START_TEST(bad_tuples)
{
    builder w;

    describe(7);
    insert_head(&w, 7, 2);
    expect_error(&w, "invalid insert message: the new row of relation 7 (\"s\".\"r\") has 2 "
                     "columns (offset 6), but its Relation message described 3");
    insert_head(&w, 7, 0xffff);
    expect_error(&w, "invalid insert message: the new row of relation 7 (\"s\".\"r\") has -1 "
                     "columns (offset 6), but its Relation message described 3");

    insert_head(&w, 7, 3);
    put_text(&w, "12x");
    expect_error(&w,
                 "invalid insert message: the value of column 1 (\"k\") in the new row at "
                 "offset 13 is of type int8, but its text \"12x\" is not an integer of 64 bits");
    insert_head(&w, 7, 3);
    put_text(&w, "9223372036854775808");
    expect_error(&w, "invalid insert message: the value of column 1 (\"k\") in the new row at "
                     "offset 13 is of type int8, but its text \"9223372036854775808\" is not an "
                     "integer of 64 bits");
    insert_head(&w, 7, 3);
    put_text(&w, "");
    expect_error(&w, "invalid insert message: the value of column 1 (\"k\") in the new row at "
                     "offset 13 is of type int8, but its text \"\" is not an integer of 64 bits");

    insert_head(&w, 7, 3);
    put_u8(&w, 'n');
    put_text(&w, "true");
    expect_error(&w, "invalid insert message: the value of column 2 (\"flag\") in the new row at "
                     "offset 14 is of type bool, but its text is \"true\", not t or f");

    insert_head(&w, 7, 3);
    put_u8(&w, 'n');
    put_u8(&w, 'n');
    put_u8(&w, 't');
    put_u32(&w, 0x80000000u);
    expect_error(&w, "invalid insert message: the length of column 3 (\"txt\") in the new row at "
                     "offset 11 is negative (-2147483648)");

    insert_head(&w, 7, 3);
    put_u8(&w, 'n');
    put_u8(&w, 'n');
    put_u8(&w, 't');
    put_u32(&w, 5);
    put_u8(&w, 'a');
    expect_error(&w, "truncated insert message: the value of column 3 (\"txt\") in the new row at "
                     "offset 15 needs 5 bytes, but 1 remain");

    insert_head(&w, 7, 3);
    put_u8(&w, 'n');
    put_u8(&w, 'x');
    expect_error(&w, "invalid insert message: the kind of column 2 (\"flag\") in the new row at "
                     "offset 9 is 'x', not 'n', 'u', 't' or 'b'");
    insert_head(&w, 7, 3);
    put_u8(&w, 0);
    expect_error(&w, "invalid insert message: the kind of column 1 (\"k\") in the new row at "
                     "offset 8 is 0x00, not 'n', 'u', 't' or 'b'");

    /* A row where the new row belongs. */
    insert_head(&w, 7, 3);
    w.b[5] = 'K';
    expect_error(
        &w, "invalid insert message: the tuple kind at offset 5 is 'K', not 'N' (the new row)");
    w.b[0] = 'D';
    w.b[5] = 'N';
    expect_error(&w, "invalid delete message: the tuple kind at offset 5 is 'N', not 'K' (the key) "
                     "or 'O' (the old row)");
    w.b[0] = 'U';
    w.b[5] = 'X';
    expect_error(&w, "invalid update message: the tuple kind at offset 5 is 'X', not 'K' (the "
                     "key), 'O' (the old row) or 'N' (the new row)");

    /* An update with an old key but no new row. */
    w.n = 0;
    put_u8(&w, 'U');
    put_u32(&w, 7);
    put_u8(&w, 'K');
    put_u16(&w, 3);
    put_text(&w, "1");
    put_u8(&w, 'n');
    put_u8(&w, 'n');
    expect_error(&w, "truncated update message: the tuple kind at offset 16 needs 1 bytes, but 0 "
                     "remain");
    put_u8(&w, 'O');
    expect_error(&w, "invalid update message: the tuple kind at offset 16 is 'O', not 'N' (the new "
                     "row)");
}
END_TEST

/* A key carries the key's columns; the others are placeholders and left out. */
START_TEST(update_with_key)
{
    builder w;
    walq__change c;

    describe(7);
    w.n = 0;
    put_u8(&w, 'U');
    put_u32(&w, 7);
    put_u8(&w, 'K');
    put_u16(&w, 3);
    put_text(&w, "41");
    put_u8(&w, 'n');
    put_u8(&w, 'n');
    put_u8(&w, 'N');
    put_u16(&w, 3);
    put_text(&w, "42");
    put_text(&w, "t");
    put_text(&w, "x");
    ck_assert_int_eq(decode_n(w.b, w.n, &c), 0);
    check_row(&c, WALQ__ACT_UPDATE, "s", "r", 3, 1);
    check_int(&c.identity[0], "k", 41, "41");
    check_int(&c.columns[0], "k", 42, "42");
    check_bool(&c.columns[1], "flag", 1);
    check_str(&c.columns[2], "txt", "x", 1);

    /* An old row ('O') is whole, NULLs and all. */
    w.b[5] = 'O';
    ck_assert_int_eq(decode_n(w.b, w.n, &c), 0);
    check_row(&c, WALQ__ACT_UPDATE, "s", "r", 3, 3);
    check_int(&c.identity[0], "k", 41, "41");
    check_null(&c.identity[1], "flag");
    check_null(&c.identity[2], "txt");

    /* A delete's key the same way. */
    w.b[0] = 'D';
    w.b[5] = 'K';
    w.n = 17;
    ck_assert_int_eq(decode_n(w.b, w.n, &c), 0);
    check_row(&c, WALQ__ACT_DELETE, "s", "r", 0, 1);
    check_int(&c.identity[0], "k", 41, "41");
}
END_TEST

static void begin_msg(builder *w, int64_t pg_time)
{
    w->n = 0;
    put_u8(w, 'B');
    put_u64(w, 0x100);
    put_u64(w, (uint64_t)pg_time);
    put_u32(w, 9);
}

START_TEST(bad_messages)
{
    builder w;
    walq__change c;

    w.n = 0;
    put_u8(&w, 'X');
    expect_error(&w, "unknown message type 'X' at offset 0");
    w.b[0] = 0xfe;
    expect_error(&w, "unknown message type 0xfe at offset 0");
    w.b[0] = 'S';
    expect_error(&w, "the stream start message ('S') at offset 0 belongs to protocol version 2, "
                     "but walq decodes version 1");
    w.b[0] = 'P';
    expect_error(&w, "the prepare message ('P') at offset 0 belongs to protocol version 3, but "
                     "walq decodes version 1");
    w.n = 0;
    expect_error(&w, "empty message");

    /* Commit times, each way past the epochs. */
    begin_msg(&w, INT64_MAX - WALQ__PG_EPOCH_OFFSET_US);
    ck_assert_int_eq(decode_n(w.b, w.n, &c), 0);
    check_begin(&c, 0x100, 9, INT64_MAX);
    begin_msg(&w, INT64_MAX - WALQ__PG_EPOCH_OFFSET_US + 1);
    expect_error(&w, "invalid begin message: the commit time at offset 9 (9222425352054775808 "
                     "microseconds after 2000-01-01) is out of range");
    begin_msg(&w, INT64_MIN);
    ck_assert_int_eq(decode_n(w.b, w.n, &c), 0);
    check_begin(&c, 0x100, 9, INT64_MIN + WALQ__PG_EPOCH_OFFSET_US);
    begin_msg(&w, -WALQ__PG_EPOCH_OFFSET_US);
    ck_assert_int_eq(decode_n(w.b, w.n, &c), 0);
    check_begin(&c, 0x100, 9, 0);

    w.n = 0;
    put_u8(&w, 'C');
    put_u8(&w, 1);
    put_u64(&w, 1);
    put_u64(&w, 2);
    put_u64(&w, 3);
    expect_error(&w, "invalid commit message: the flags at offset 1 are 0x01, but protocol version "
                     "1 defines none (must be 0)");
    w.b[1] = 0;
    ck_assert_int_eq(decode_n(w.b, w.n, &c), 0);
    check_commit(&c, 1, 2, 3 + WALQ__PG_EPOCH_OFFSET_US);

    w.n = 0;
    put_u8(&w, 'M');
    put_u8(&w, 2);
    expect_error(&w, "invalid logical decoding message: the flags at offset 1 are 0x02, not 0 or 1 "
                     "(transactional)");
    w.n = 0;
    put_u8(&w, 'M');
    put_u8(&w, 0);
    put_u64(&w, 5);
    put_str(&w, "p");
    put_u32(&w, UINT32_MAX);
    expect_error(&w, "invalid logical decoding message: the content length at offset 12 is "
                     "negative (-1)");
    w.n -= 4;
    put_u32(&w, 2);
    put_u8(&w, 'a');
    expect_error(&w, "truncated logical decoding message: the content at offset 16 needs 2 bytes, "
                     "but 1 remain");
    w.n = 0;
    put_u8(&w, 'M');
    put_u8(&w, 0);
    put_u64(&w, 5);
    put_u8(&w, 'p');
    expect_error(&w, "truncated logical decoding message: the prefix at offset 10 has no "
                     "terminating NUL");

    w.n = 0;
    put_u8(&w, 'Y');
    put_u32(&w, OID_MOOD);
    put_str(&w, "public");
    put_u8(&w, 'm');
    expect_error(&w, "truncated type message: the type name at offset 12 has no terminating NUL");
    w.n = 0;
    put_u8(&w, 'O');
    put_u64(&w, 1);
    expect_error(&w, "truncated origin message: the origin name at offset 9 has no terminating "
                     "NUL");
}
END_TEST

START_TEST(bad_relations)
{
    builder w;
    walq__change c;

    relation3(&w, 7);
    w.b[10] = 0xff; /* the column count, after "s\0r\0d" */
    w.b[11] = 0xfe;
    expect_error(&w, "invalid relation message: the column count at offset 10 is negative (-2)");

    /* Cut inside the second column's name. */
    relation3(&w, 7);
    w.n = 27;
    expect_error(&w, "truncated relation message: the name of column 2 at offset 24 has no "
                     "terminating NUL");
    relation3(&w, 7);
    w.n = 31;
    expect_error(&w, "truncated relation message: the type OID of column 2 (\"flag\") at offset 29 "
                     "needs 4 bytes, but 2 remain");
    /* A relation that failed is not described: the inserts that need it fail. */
    insert_head(&w, 7, 0);
    expect_error(&w, "insert for relation 7, which no Relation message described");

    /* Relations of no columns exist (CREATE TABLE e ()). */
    w.n = 0;
    put_u8(&w, 'R');
    put_u32(&w, 8);
    put_str(&w, "");
    put_str(&w, "e");
    put_u8(&w, 'n');
    put_u16(&w, 0);
    ck_assert_int_eq(decode_n(w.b, w.n, &c), 0);
    insert_head(&w, 8, 0);
    ck_assert_int_eq(decode_n(w.b, w.n, &c), 0);
    /* An empty namespace is pg_catalog's. */
    check_row(&c, WALQ__ACT_INSERT, "pg_catalog", "e", 0, 0);
}
END_TEST

/* A message is refused whole: a bad Relation leaves the old description in place. */
START_TEST(relation_replaced_only_when_whole)
{
    builder w;
    walq__change c;

    describe(7);
    relation3(&w, 7);
    put_u8(&w, 0);
    expect_error(&w,
                 "unexpected data after the end of the relation message at offset 50 (1 bytes)");
    insert_head(&w, 7, 3);
    put_text(&w, "5");
    put_u8(&w, 'n');
    put_u8(&w, 'n');
    ck_assert_int_eq(decode_n(w.b, w.n, &c), 0);
    check_row(&c, WALQ__ACT_INSERT, "s", "r", 3, 0);
}
END_TEST

/* Thousands of partitions, each with its own OID: each finds its own description. */
START_TEST(many_relations)
{
    const uint32_t n = 20000;
    builder w;
    walq__change c;

    for (uint32_t i = 0; i < n; i++) {
        w.n = 0;
        put_u8(&w, 'R');
        /* OIDs 4096 apart as well as in sequence, to crowd a poor hash. */
        put_u32(&w, i % 2 ? 100000 + i : i * 4096);
        put_str(&w, "s");
        put_str(&w, i % 2 ? "odd" : "even");
        put_u8(&w, 'd');
        put_u16(&w, 1 + i % 3);
        for (uint32_t k = 0; k < 1 + i % 3; k++) {
            put_u8(&w, 0);
            put_str(&w, k == 0 ? "a" : k == 1 ? "b" : "c");
            put_u32(&w, 23);
            put_u32(&w, UINT32_MAX);
        }
        ck_assert_int_eq(decode_n(w.b, w.n, &c), 0);
    }
    for (uint32_t i = 0; i < n; i++) {
        char text[16];

        snprintf(text, sizeof(text), "%u", i);
        insert_head(&w, i % 2 ? 100000 + i : i * 4096, 1 + i % 3);
        for (uint32_t k = 0; k < 1 + i % 3; k++)
            put_text(&w, text);
        ck_assert_int_eq(decode_n(w.b, w.n, &c), 0);
        check_row(&c, WALQ__ACT_INSERT, "s", i % 2 ? "odd" : "even", 1 + i % 3, 0);
        ck_assert(c.columns[c.ncolumns - 1].i == i);
    }
    walq__pgoutput_reset(dec);
    insert_head(&w, 4096, 2);
    expect_error(&w, "insert for relation 4096, which no Relation message described");
}
END_TEST

START_TEST(arrays_reused)
{
    stream s = load("update.hex");
    walq__change a, b;

    for (size_t i = 0; i < s.n; i++)
        decode_ok(&s.m[i], &a);
    decode_ok(&s.m[2], &a);
    decode_ok(&s.m[13], &b);
    ck_assert_ptr_eq(a.columns, b.columns);
    decode_ok(&s.m[5], &a);
    decode_ok(&s.m[13], &b);
    ck_assert_ptr_eq(a.identity, b.identity);
    free_stream(&s);
}
END_TEST

START_TEST(invalid_arguments)
{
    walq__change c;

    ck_assert_int_eq(walq__pgoutput_new(NULL), WALQ_EINVAL);
    ck_assert_int_eq(walq__pgoutput_decode(NULL, "B", 1, &c), WALQ_EINVAL);
    ck_assert_int_eq(walq__pgoutput_decode(dec, "B", 1, NULL), WALQ_EINVAL);
    ck_assert_int_eq(walq__pgoutput_decode(dec, NULL, 1, &c), WALQ_EINVAL);
    ck_assert_str_eq(walq__pgoutput_error(dec), "invalid argument");
    ck_assert_int_eq(walq__pgoutput_decode(dec, NULL, 0, &c), WALQ_EDECODE);
    ck_assert_str_eq(walq__pgoutput_error(dec), "empty message");
    ck_assert_str_eq(walq__pgoutput_error(NULL), "");
    walq__pgoutput_reset(NULL);
    walq__pgoutput_free(NULL);
}
END_TEST

static Suite *pgoutput_suite(void)
{
    Suite *s = suite_create("pgoutput");
    TCase *tc = tcase_create("captured");
    TCase *bad = tcase_create("malformed");
    int ncaptured = (int)(sizeof(captured) / sizeof(captured[0]));

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, insert_stream);
    tcase_add_test(tc, update_stream);
    tcase_add_test(tc, delete_stream);
    tcase_add_test(tc, truncate_stream);
    tcase_add_test(tc, message_stream);
    tcase_add_test(tc, partition_stream);
    tcase_add_test(tc, type_stream);
    tcase_add_test(tc, alter_stream);
    tcase_add_test(tc, origin_stream);
    tcase_add_test(tc, arrays_reused);
    suite_add_tcase(s, tc);

    tcase_add_checked_fixture(bad, setup, teardown);
    tcase_set_timeout(bad, 60);
    tcase_add_loop_test(bad, every_truncation, 0, ncaptured);
    tcase_add_loop_test(bad, every_trailing_byte, 0, ncaptured);
    tcase_add_test(bad, hand_made_insert);
    tcase_add_test(bad, unknown_relation);
    tcase_add_test(bad, bad_tuples);
    tcase_add_test(bad, update_with_key);
    tcase_add_test(bad, bad_messages);
    tcase_add_test(bad, bad_relations);
    tcase_add_test(bad, relation_replaced_only_when_whole);
    tcase_add_test(bad, many_relations);
    tcase_add_test(bad, invalid_arguments);
    suite_add_tcase(s, bad);
    return s;
}

static double seconds_between(const struct timespec *a, const struct timespec *b)
{
    return (double)(b->tv_sec - a->tv_sec) + (double)(b->tv_nsec - a->tv_nsec) / 1e9;
}

/*
 * Decodes the first captured insert (12 columns) a million times and prints
 * the rate, per wall-clock and per CPU second (the steadier figure on a
 * shared machine).
 */
static int bench(void)
{
    const long n = 1000000;
    struct timespec w0, w1, c0, c1;
    walq__pgoutput *d;
    walq__change c;
    stream s;
    double wall, cpu;

    if (read_stream("insert.hex", &s) != 0 || s.n < 3) {
        fprintf(stderr, "cannot read %sinsert.hex\n", DATA_DIR);
        return EXIT_FAILURE;
    }
    if (walq__pgoutput_new(&d) != 0 ||
        walq__pgoutput_decode(d, (const char *)s.m[1].data, s.m[1].len, &c) != 0)
        return EXIT_FAILURE;
    clock_gettime(CLOCK_MONOTONIC, &w0);
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &c0);
    for (long i = 0; i < n; i++) {
        if (walq__pgoutput_decode(d, (const char *)s.m[2].data, s.m[2].len, &c) != 0 ||
            c.ncolumns != 12) {
            fprintf(stderr, "decode failed: %s\n", walq__pgoutput_error(d));
            return EXIT_FAILURE;
        }
    }
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &c1);
    clock_gettime(CLOCK_MONOTONIC, &w1);
    wall = seconds_between(&w0, &w1);
    cpu = seconds_between(&c0, &c1);
    printf("decoded %ld inserts of %zu bytes in %.3f s (%.3f s of CPU): %.0f changes/s, "
           "%.0f changes per CPU second\n",
           n, s.m[2].len, wall, cpu, (double)n / wall, (double)n / cpu);
    walq__pgoutput_free(d);
    free_stream(&s);
    return EXIT_SUCCESS;
}

int main(int argc, char **argv)
{
    SRunner *sr;
    int failed;

    if (argc > 1 && strcmp(argv[1], "--bench") == 0)
        return bench();
    sr = srunner_create(pgoutput_suite());
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
