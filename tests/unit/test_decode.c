/*
 * Unit tests of the wal2json decoder.  The sample changes live in
 * tests/data/wal2json/, one per line.  Run with --bench to measure the
 * decoder instead of testing it.
 */
#include <check.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "decode.h"
#include "walq.h"

#define DATA_DIR WALQ_TEST_DATA "/wal2json/"

static walq__decoder *dec;

static void setup(void)
{
    ck_assert_int_eq(walq__decoder_new(&dec), 0);
    ck_assert_ptr_nonnull(dec);
}

static void teardown(void)
{
    walq__decoder_free(dec);
    dec = NULL;
}

/*
 * Reads a data file whole; *len excludes the final newline.  It stays clear
 * of Check's assertions, which only work inside a test, for --bench.
 */
static char *read_data(const char *name, size_t *len)
{
    char path[4096];
    FILE *f;
    char *buf = NULL;
    long size;

    snprintf(path, sizeof(path), "%s%s", DATA_DIR, name);
    f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    if (fseek(f, 0, SEEK_END) != 0 || (size = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0)
        goto done;
    buf = malloc((size_t)size + 1);
    if (buf == NULL)
        goto done;
    if (fread(buf, 1, (size_t)size, f) != (size_t)size) {
        free(buf);
        buf = NULL;
        goto done;
    }
    buf[size] = '\0';
    if (size > 0 && buf[size - 1] == '\n')
        buf[--size] = '\0';
    *len = (size_t)size;
done:
    fclose(f);
    return buf;
}

static char *load(const char *name, size_t *len)
{
    char *buf = read_data(name, len);

    ck_assert_msg(buf != NULL, "cannot read %s%s", DATA_DIR, name);
    return buf;
}

/*
 * Decodes from an exact-size heap copy without a NUL, which is freed at once:
 * AddressSanitizer then catches a read past len, and the checks that follow
 * catch any pointer into the input instead of into the decoder's storage.
 */
static int decode_n(const char *text, size_t len, walq__change *c)
{
    char *copy = malloc(len ? len : 1);
    int rc;

    ck_assert_ptr_nonnull(copy);
    memcpy(copy, text, len);
    rc = walq__decode(dec, copy, len, c);
    memset(copy, '#', len);
    free(copy);
    return rc;
}

static int decode_str(const char *text, walq__change *c)
{
    return decode_n(text, strlen(text), c);
}

static int decode_file(const char *name, walq__change *c)
{
    size_t len;
    char *text = load(name, &len);
    int rc = decode_n(text, len, c);

    free(text);
    return rc;
}

static const walq__value *col(const walq__change *c, const char *name)
{
    const walq__value *v = walq__change_column(c, name);

    ck_assert_msg(v != NULL, "no column \"%s\"", name);
    return v;
}

static void check_int(const walq__change *c, const char *name, int64_t i, const char *text)
{
    const walq__value *v = col(c, name);

    ck_assert_msg(v->kind == WALQ__V_INT, "column \"%s\" is of kind %d", name, v->kind);
    ck_assert_msg(v->i == i, "column \"%s\" is %lld", name, (long long)v->i);
    ck_assert_str_eq(v->str, text);
    ck_assert_uint_eq(v->len, strlen(text));
}

static void check_num(const walq__change *c, const char *name, const char *text)
{
    const walq__value *v = col(c, name);

    ck_assert_msg(v->kind == WALQ__V_NUM, "column \"%s\" is of kind %d", name, v->kind);
    ck_assert_str_eq(v->str, text);
    ck_assert_uint_eq(v->len, strlen(text));
}

static void check_str(const walq__change *c, const char *name, const char *s, size_t len)
{
    const walq__value *v = col(c, name);

    ck_assert_msg(v->kind == WALQ__V_STR, "column \"%s\" is of kind %d", name, v->kind);
    ck_assert_uint_eq(v->len, len);
    ck_assert_mem_eq(v->str, s, len);
    ck_assert_int_eq(v->str[len], '\0');
}

START_TEST(insert_sample)
{
    walq__change c;
    const walq__value *v;

    ck_assert_int_eq(decode_file("insert.json", &c), 0);
    ck_assert_str_eq(walq__decoder_error(dec), "");
    ck_assert_int_eq(c.action, WALQ__ACT_INSERT);
    ck_assert_uint_eq(c.xid, 725);
    ck_assert(c.lsn == UINT64_C(0x1529E48));
    ck_assert(c.next_lsn == 0);
    ck_assert(c.timestamp_us == INT64_C(1795551907992647));
    ck_assert_str_eq(c.schema, "public");
    ck_assert_str_eq(c.table, "t");
    ck_assert_uint_eq(c.ncolumns, 7);
    ck_assert_ptr_null(c.identity);
    ck_assert_uint_eq(c.nidentity, 0);
    ck_assert_ptr_null(c.prefix);
    ck_assert_ptr_null(c.content);

    ck_assert_str_eq(c.columns[0].name, "id");
    ck_assert_str_eq(c.columns[0].type, "bigint");
    check_int(&c, "id", 1, "1");
    check_str(&c, "q", "a", 1);
    ck_assert_str_eq(col(&c, "p")->type, "jsonb");
    check_str(&c, "p", "{\"x\": \"\xc3\xa9\\\\n\\\"q\"}", 17);
    check_num(&c, "n", "1.5");
    v = col(&c, "b");
    ck_assert_int_eq(v->kind, WALQ__V_BOOL);
    ck_assert_int_eq(v->b, 1);
    v = col(&c, "f");
    ck_assert_int_eq(v->kind, WALQ__V_NULL);
    ck_assert_str_eq(v->type, "double precision");
    ck_assert_ptr_null(v->str);
    check_str(&c, "ts", "2026-11-24 20:25:07.989324+00", 29);
    ck_assert_str_eq(c.columns[6].type, "timestamp with time zone");
}
END_TEST

START_TEST(begin_and_commit)
{
    walq__change c;

    ck_assert_int_eq(decode_file("begin.json", &c), 0);
    ck_assert_int_eq(c.action, WALQ__ACT_BEGIN);
    ck_assert_uint_eq(c.xid, 725);
    ck_assert(c.lsn == UINT64_C(0x152A088));
    ck_assert(c.next_lsn == UINT64_C(0x152A0B8));
    ck_assert(c.timestamp_us == INT64_C(1795551907992647));
    ck_assert_ptr_null(c.schema);
    ck_assert_ptr_null(c.table);
    ck_assert_ptr_null(c.columns);
    ck_assert_uint_eq(c.ncolumns, 0);

    ck_assert_int_eq(decode_file("commit.json", &c), 0);
    ck_assert_int_eq(c.action, WALQ__ACT_COMMIT);
    ck_assert_uint_eq(c.xid, 725);
    ck_assert(c.lsn == UINT64_C(0x152A088));
    ck_assert(c.next_lsn == UINT64_C(0x152A0B8));
}
END_TEST

START_TEST(update)
{
    walq__change c;

    ck_assert_int_eq(decode_file("update.json", &c), 0);
    ck_assert_int_eq(c.action, WALQ__ACT_UPDATE);
    ck_assert_uint_eq(c.xid, 726);
    ck_assert(c.lsn == UINT64_C(0x152A2F0));
    ck_assert(c.timestamp_us == INT64_C(1795551960000000));
    ck_assert_str_eq(c.table, "jobs");
    ck_assert_uint_eq(c.ncolumns, 3);
    check_int(&c, "id", 42, "42");
    check_str(&c, "state", "done", 4);
    check_int(&c, "attempts", 3, "3");
    ck_assert_uint_eq(c.nidentity, 1);
    ck_assert_str_eq(c.identity[0].name, "id");
    ck_assert_str_eq(c.identity[0].type, "bigint");
    ck_assert_int_eq(c.identity[0].kind, WALQ__V_INT);
    ck_assert(c.identity[0].i == 41);
    ck_assert_str_eq(c.identity[0].str, "41");
}
END_TEST

START_TEST(update_without_identity)
{
    walq__change c;

    ck_assert_int_eq(decode_str("{\"action\":\"U\",\"schema\":\"s\",\"table\":\"t\",\"columns\":"
                                "[{\"name\":\"a\",\"type\":\"integer\",\"value\":2}]}",
                                &c),
                     0);
    ck_assert_uint_eq(c.ncolumns, 1);
    ck_assert_ptr_null(c.identity);
    ck_assert_uint_eq(c.nidentity, 0);
}
END_TEST

START_TEST(delete)
{
    walq__change c;

    ck_assert_int_eq(decode_file("delete.json", &c), 0);
    ck_assert_int_eq(c.action, WALQ__ACT_DELETE);
    ck_assert_uint_eq(c.xid, 727);
    ck_assert(c.timestamp_us == INT64_C(1795552020500000));
    ck_assert_str_eq(c.schema, "public");
    ck_assert_str_eq(c.table, "jobs");
    ck_assert_ptr_null(c.columns);
    ck_assert_uint_eq(c.ncolumns, 0);
    ck_assert_ptr_null(walq__change_column(&c, "id"));
    ck_assert_uint_eq(c.nidentity, 2);
    ck_assert_str_eq(c.identity[0].name, "id");
    ck_assert(c.identity[0].i == 42);
    ck_assert_str_eq(c.identity[1].name, "queue");
    ck_assert_int_eq(c.identity[1].kind, WALQ__V_STR);
    ck_assert_str_eq(c.identity[1].str, "mail");
}
END_TEST

START_TEST(truncate)
{
    walq__change c;

    ck_assert_int_eq(decode_file("truncate.json", &c), 0);
    ck_assert_int_eq(c.action, WALQ__ACT_TRUNCATE);
    ck_assert_uint_eq(c.xid, 728);
    ck_assert(c.lsn == UINT64_C(0x152A600));
    ck_assert_str_eq(c.schema, "public");
    ck_assert_str_eq(c.table, "jobs");
    ck_assert_uint_eq(c.ncolumns, 0);
    ck_assert_uint_eq(c.nidentity, 0);
}
END_TEST

START_TEST(message)
{
    walq__change c;

    ck_assert_int_eq(decode_file("message.json", &c), 0);
    ck_assert_int_eq(c.action, WALQ__ACT_MESSAGE);
    ck_assert_uint_eq(c.xid, 729);
    ck_assert(c.lsn == UINT64_C(0x152A700));
    ck_assert(c.timestamp_us == INT64_C(1795552140000000));
    ck_assert_int_eq(c.transactional, 1);
    ck_assert_str_eq(c.prefix, "walq");
    ck_assert_uint_eq(c.content_len, 10);
    ck_assert_str_eq(c.content, "wake \"up\"\n");
    ck_assert_ptr_null(c.schema);
    ck_assert_ptr_null(c.table);

    ck_assert_int_eq(decode_file("message_nontx.json", &c), 0);
    ck_assert_int_eq(c.action, WALQ__ACT_MESSAGE);
    ck_assert_int_eq(c.transactional, 0);
    ck_assert_uint_eq(c.xid, 0);
    ck_assert(c.timestamp_us == 0);
    ck_assert(c.lsn == UINT64_C(0x152A800));
    ck_assert_str_eq(c.prefix, "walq.notice");
    ck_assert_uint_eq(c.content_len, 0);
    ck_assert_str_eq(c.content, "");
}
END_TEST

/* Without include-xids, include-timestamp and include-lsn those keys are absent. */
START_TEST(minimal_transaction)
{
    size_t len;
    char *text = load("minimal.json", &len);
    static const walq__action want[] = {WALQ__ACT_BEGIN, WALQ__ACT_TRUNCATE, WALQ__ACT_INSERT,
                                        WALQ__ACT_COMMIT};
    char *line = text;
    size_t n = 0;

    while (line < text + len) {
        char *nl = memchr(line, '\n', (size_t)(text + len - line));
        size_t linelen = nl ? (size_t)(nl - line) : (size_t)(text + len - line);
        walq__change c;

        ck_assert_uint_lt(n, 4);
        ck_assert_int_eq(decode_n(line, linelen, &c), 0);
        ck_assert_int_eq(c.action, want[n]);
        ck_assert_uint_eq(c.xid, 0);
        ck_assert(c.lsn == 0);
        ck_assert(c.next_lsn == 0);
        ck_assert(c.timestamp_us == 0);
        if (c.action == WALQ__ACT_INSERT) {
            check_int(&c, "a", 1, "1");
            check_str(&c, "b", "test1", 5);
        }
        if (c.action == WALQ__ACT_TRUNCATE)
            ck_assert_str_eq(c.table, "table_truncate_1");
        n++;
        line += linelen + 1;
    }
    ck_assert_uint_eq(n, 4);
    free(text);
}
END_TEST

START_TEST(keys_in_any_order)
{
    walq__change c;

    ck_assert_int_eq(decode_file("reordered.json", &c), 0);
    ck_assert_int_eq(c.action, WALQ__ACT_INSERT);
    ck_assert_uint_eq(c.xid, 1);
    ck_assert(c.lsn == 0x10);
    ck_assert_str_eq(c.schema, "s");
    ck_assert_str_eq(c.table, "t");
    ck_assert_uint_eq(c.ncolumns, 2);
    ck_assert_str_eq(c.columns[0].name, "q");
    ck_assert_str_eq(c.columns[0].type, "text");
    check_str(&c, "q", "x", 1);
    check_int(&c, "n", 7, "7");
}
END_TEST

START_TEST(value_encodings)
{
    walq__change c;
    const walq__value *v;

    ck_assert_int_eq(decode_file("values.json", &c), 0);
    ck_assert_uint_eq(c.ncolumns, 20);
    v = col(&c, "null");
    ck_assert_int_eq(v->kind, WALQ__V_NULL);
    ck_assert_ptr_null(v->str);
    ck_assert_uint_eq(v->len, 0);
    v = col(&c, "t");
    ck_assert_int_eq(v->kind, WALQ__V_BOOL);
    ck_assert_int_eq(v->b, 1);
    v = col(&c, "f");
    ck_assert_int_eq(v->kind, WALQ__V_BOOL);
    ck_assert_int_eq(v->b, 0);
    check_int(&c, "zero", 0, "0");
    check_int(&c, "neg", -1, "-1");
    check_int(&c, "max", INT64_MAX, "9223372036854775807");
    check_int(&c, "min", INT64_MIN, "-9223372036854775808");
    check_num(&c, "over", "9223372036854775808");
    check_num(&c, "under", "-9223372036854775809");
    check_num(&c, "huge", "123456789012345678901234567890");
    check_num(&c, "hugedec", "123456789012345678901234567890.123");
    check_num(&c, "dec", "1.50");
    check_num(&c, "negdec", "-0.25");
    check_num(&c, "exp", "1e10");
    check_num(&c, "exp2", "1.5E-7");
    check_num(&c, "exp3", "2E+3");
    check_int(&c, "negzero", 0, "-0");
    check_num(&c, "negzerof", "-0.0");
    check_str(&c, "nan", "NaN", 3);
    check_str(&c, "empty", "", 0);
}
END_TEST

START_TEST(string_escapes)
{
    walq__change c;

    ck_assert_int_eq(decode_file("escapes.json", &c), 0);
    check_str(&c, "esc", "q\"b\\s/n\nr\rt\tb\bf\f.", 17);
    check_str(&c, "bmp", "\xc3\xa9\xe4\xb8\xad\xe2\x82\xac", 8);
    check_str(&c, "pair", "\xf0\x9f\x98\x80", 4);
    check_str(&c, "raw", "\xc3\xa9\xe4\xb8\xad\xf0\x9f\x98\x80", 9);
    check_str(&c, "nul", "a\0b", 3);
    check_str(&c, "ctl", "\x01\x1f", 2);
    check_str(&c, "jsonb", "{\"a\": [1, \"two\\\"\"], \"b\": {\"c\": null}}", 37);
    check_str(&c, "sp ace", "x", 1);
    ck_assert_str_eq(col(&c, "sp ace")->type, "character varying(10)");
}
END_TEST

/*
 * yajl stands in '?' for a high surrogate without its pair.  wal2json escapes
 * only control characters, so no change it prints holds a \u surrogate.
 */
START_TEST(lone_surrogate)
{
    walq__change c;

    ck_assert_int_eq(decode_str("{\"action\":\"I\",\"schema\":\"s\",\"table\":\"t\",\"columns\":"
                                "[{\"name\":\"a\",\"type\":\"text\",\"value\":\"\\ud83dx\"}]}",
                                &c),
                     0);
    check_str(&c, "a", "?x", 2);
}
END_TEST

START_TEST(escaped_names)
{
    walq__change c;

    ck_assert_int_eq(
        decode_str("{\"action\":\"I\",\"schema\":\"my \\\"schema\\\"\",\"table\":\"t\\u00e9\","
                   "\"columns\":[{\"name\":\"a\\\\b\",\"type\":\"text\",\"value\":\"v\"}]}",
                   &c),
        0);
    ck_assert_str_eq(c.schema, "my \"schema\"");
    ck_assert_str_eq(c.table, "t\xc3\xa9");
    check_str(&c, "a\\b", "v", 1);
}
END_TEST

/* Numbers keep the text the plugin printed, whatever their size and wherever they are. */
START_TEST(number_text_recovery)
{
    walq__change c;
    char digits[1001];
    char line[2200];

    ck_assert_int_eq(
        decode_str("{\"action\":\"U\",\"schema\":\"s-0\",\"table\":\"t\\\"-0\",\"extra\":"
                   "[18446744073709551616,-0],\"columns\":[{\"name\":\"c3-0\",\"type\":"
                   "\"int4\",\"value\":-0},{\"name\":\"z\",\"type\":\"int4\",\"value\":0},"
                   "{\"name\":\"x\",\"type\":\"numeric\",\"value\":99999999999999999999}],"
                   "\"identity\":[{\"name\":\"k\",\"type\":\"numeric\",\"value\":"
                   "-99999999999999999999},{\"name\":\"m\",\"type\":\"bigint\",\"value\":"
                   "-9223372036854775808}]}",
                   &c),
        0);
    ck_assert_str_eq(c.schema, "s-0");
    ck_assert_str_eq(c.table, "t\"-0");
    check_int(&c, "c3-0", 0, "-0");
    check_int(&c, "z", 0, "0");
    check_num(&c, "x", "99999999999999999999");
    ck_assert_uint_eq(c.nidentity, 2);
    ck_assert_int_eq(c.identity[0].kind, WALQ__V_NUM);
    ck_assert_str_eq(c.identity[0].str, "-99999999999999999999");
    ck_assert_int_eq(c.identity[1].kind, WALQ__V_INT);
    ck_assert(c.identity[1].i == INT64_MIN);

    /* A numeric column can hold far more digits than any machine integer. */
    memset(digits, '7', 1000);
    digits[1000] = '\0';
    snprintf(line, sizeof(line),
             "{\"action\":\"I\",\"schema\":\"s\",\"table\":\"t\",\"columns\":[{\"name\":\"n\","
             "\"type\":\"numeric\",\"value\":%s},{\"name\":\"d\",\"type\":\"numeric\","
             "\"value\":%s.5}]}",
             digits, digits);
    ck_assert_int_eq(decode_str(line, &c), 0);
    check_num(&c, "n", digits);
    ck_assert_uint_eq(col(&c, "d")->len, 1002);

    /* A zero written without a sign reads back as written. */
    ck_assert_int_eq(decode_str("{\"action\":\"I\",\"schema\":\"s\",\"table\":\"t\",\"columns\":"
                                "[{\"name\":\"z\",\"type\":\"integer\",\"value\":0}]}",
                                &c),
                     0);
    check_int(&c, "z", 0, "0");
}
END_TEST

START_TEST(large_payload)
{
    /* Each unit unescapes to "abc\n" and a two-byte e-acute: six bytes. */
    static const char unit[] = "abc\\n\\u00e9";
    static const char head[] = "{\"action\":\"I\",\"schema\":\"s\",\"table\":\"t\",\"columns\":["
                               "{\"name\":\"big\",\"type\":\"text\",\"value\":\"";
    static const char mid[] = "\"},{\"name\":\"plain\",\"type\":\"bytea\",\"value\":\"";
    static const char tail[] = "\"}]}";
    const size_t units = 174763, plain = 1024 * 1024;
    size_t ulen = strlen(unit);
    size_t len = strlen(head) + units * ulen + strlen(mid) + plain + strlen(tail);
    char *buf = malloc(len);
    char *p = buf;
    walq__change c;
    const walq__value *v;

    ck_assert_ptr_nonnull(buf);
    memcpy(p, head, strlen(head));
    p += strlen(head);
    for (size_t i = 0; i < units; i++, p += ulen)
        memcpy(p, unit, ulen);
    memcpy(p, mid, strlen(mid));
    p += strlen(mid);
    memset(p, 'x', plain);
    p += plain;
    memcpy(p, tail, strlen(tail));
    p += strlen(tail);
    ck_assert_uint_eq((size_t)(p - buf), len);

    ck_assert_int_eq(walq__decode(dec, buf, len, &c), 0);
    free(buf);
    v = col(&c, "big");
    ck_assert_int_eq(v->kind, WALQ__V_STR);
    ck_assert_uint_eq(v->len, units * 6);
    ck_assert_uint_ge(v->len, 1024 * 1024);
    for (size_t i = 0; i < units; i++)
        ck_assert(memcmp(v->str + i * 6, "abc\n\xc3\xa9", 6) == 0);
    v = col(&c, "plain");
    ck_assert_uint_eq(v->len, plain);
    ck_assert_int_eq(v->str[0], 'x');
    ck_assert_int_eq(v->str[plain - 1], 'x');
    ck_assert_int_eq(v->str[plain], '\0');
}
END_TEST

START_TEST(many_columns)
{
    size_t cap = 64 * 1024, len = 0;
    char *buf = malloc(cap);
    walq__change c;

    ck_assert_ptr_nonnull(buf);
    len += (size_t)snprintf(buf + len, cap - len,
                            "{\"action\":\"I\",\"schema\":\"s\",\"table\":\"t\",\"columns\":[");
    for (int i = 0; i < 1000; i++)
        len += (size_t)snprintf(buf + len, cap - len,
                                "%s{\"name\":\"c%d\",\"type\":\"integer\",\"value\":%d}",
                                i ? "," : "", i, i * 3 - 1500);
    len += (size_t)snprintf(buf + len, cap - len, "]}");
    ck_assert_uint_lt(len, cap);

    ck_assert_int_eq(decode_n(buf, len, &c), 0);
    ck_assert_uint_eq(c.ncolumns, 1000);
    for (int i = 0; i < 1000; i++) {
        char name[16];

        snprintf(name, sizeof(name), "c%d", i);
        ck_assert_str_eq(c.columns[i].name, name);
        ck_assert(c.columns[i].i == i * 3 - 1500);
    }
    check_int(&c, "c999", 1497, "1497");
    free(buf);

    /* Fewer columns afterwards reuse the grown array. */
    ck_assert_int_eq(decode_file("insert.json", &c), 0);
    ck_assert_uint_eq(c.ncolumns, 7);
    check_num(&c, "n", "1.5");
}
END_TEST

START_TEST(arrays_reused)
{
    walq__change a, b;

    ck_assert_int_eq(decode_file("insert.json", &a), 0);
    ck_assert_int_eq(decode_file("update.json", &b), 0);
    ck_assert_ptr_eq(a.columns, b.columns);
    ck_assert_int_eq(decode_file("delete.json", &a), 0);
    ck_assert_int_eq(decode_file("update.json", &b), 0);
    ck_assert_ptr_eq(a.identity, b.identity);
}
END_TEST

/* A slot started with include-types=0 prints no "type": the values decode all the same. */
START_TEST(columns_without_types)
{
    walq__change c;

    /* A change with types first, so that none lingers in the reused arrays. */
    ck_assert_int_eq(decode_file("insert.json", &c), 0);
    ck_assert_int_eq(
        decode_str(
            "{\"action\":\"I\",\"xid\":9,\"schema\":\"walq\",\"table\":\"jobs\",\"columns\":["
            "{\"name\":\"id\",\"value\":123456},{\"name\":\"queue\",\"value\":\"bench\"},"
            "{\"name\":\"payload\",\"value\":\"{\\\"n\\\": 1}\"},{\"name\":\"ratio\","
            "\"value\":0.5},{\"name\":\"dedup_key\",\"value\":null},{\"name\":\"ok\","
            "\"value\":false},{\"name\":\"t\",\"typeoid\":25,\"value\":\"x\"}]}",
            &c),
        0);
    ck_assert_uint_eq(c.ncolumns, 7);
    for (size_t i = 0; i < c.ncolumns; i++)
        ck_assert_ptr_null(c.columns[i].type);
    check_int(&c, "id", 123456, "123456");
    check_str(&c, "queue", "bench", 5);
    check_str(&c, "payload", "{\"n\": 1}", 8);
    check_num(&c, "ratio", "0.5");
    ck_assert_int_eq(col(&c, "dedup_key")->kind, WALQ__V_NULL);
    ck_assert_int_eq(col(&c, "ok")->kind, WALQ__V_BOOL);
    ck_assert_int_eq(col(&c, "ok")->b, 0);
    check_str(&c, "t", "x", 1);

    /* Updates and deletes carry their old key the same way. */
    ck_assert_int_eq(decode_str("{\"action\":\"U\",\"schema\":\"s\",\"table\":\"t\",\"columns\":"
                                "[{\"name\":\"a\",\"value\":2}],\"identity\":"
                                "[{\"name\":\"a\",\"value\":1}]}",
                                &c),
                     0);
    ck_assert_ptr_null(c.columns[0].type);
    check_int(&c, "a", 2, "2");
    ck_assert_uint_eq(c.nidentity, 1);
    ck_assert_ptr_null(c.identity[0].type);
    ck_assert(c.identity[0].i == 1);
    ck_assert_int_eq(decode_str("{\"action\":\"D\",\"schema\":\"s\",\"table\":\"t\",\"identity\":"
                                "[{\"name\":\"id\",\"value\":42},{\"name\":\"q\",\"value\":"
                                "\"mail\"}]}",
                                &c),
                     0);
    ck_assert_uint_eq(c.nidentity, 2);
    ck_assert_ptr_null(c.identity[0].type);
    ck_assert_ptr_null(c.identity[1].type);
    ck_assert_str_eq(c.identity[1].str, "mail");

    /* Columns with and without a type mix; a type that is there must be a string. */
    ck_assert_int_eq(decode_str("{\"action\":\"I\",\"schema\":\"s\",\"table\":\"t\",\"columns\":"
                                "[{\"name\":\"a\",\"value\":1},{\"name\":\"b\",\"type\":\"text\","
                                "\"value\":\"x\"}]}",
                                &c),
                     0);
    ck_assert_ptr_null(c.columns[0].type);
    ck_assert_str_eq(c.columns[1].type, "text");
    ck_assert_int_eq(decode_str("{\"action\":\"I\",\"schema\":\"s\",\"table\":\"t\",\"columns\":"
                                "[{\"name\":\"a\",\"value\":1},{\"name\":\"b\",\"type\":null,"
                                "\"value\":\"x\"}]}",
                                &c),
                     WALQ_EDECODE);
    ck_assert_str_eq(walq__decoder_error(dec), "\"type\" of column 2 is not a string");
}
END_TEST

/* A key given twice counts with its last value, as it did when json-c parsed. */
START_TEST(duplicate_keys)
{
    walq__change c;

    ck_assert_int_eq(decode_str("{\"action\":\"B\",\"action\":\"C\",\"xid\":1,\"xid\":2}", &c), 0);
    ck_assert_int_eq(c.action, WALQ__ACT_COMMIT);
    ck_assert_uint_eq(c.xid, 2);

    ck_assert_int_eq(
        decode_str("{\"action\":\"I\",\"schema\":\"s\",\"table\":\"t\",\"table\":\"u\","
                   "\"columns\":[{\"name\":\"a\",\"name\":\"b\",\"type\":\"numeric\","
                   "\"value\":1,\"value\":123456789012345678901234567890}]}",
                   &c),
        0);
    ck_assert_str_eq(c.table, "u");
    ck_assert_uint_eq(c.ncolumns, 1);
    check_num(&c, "b", "123456789012345678901234567890");

    /* A second array replaces the first, and what was wrong with the first. */
    ck_assert_int_eq(decode_str("{\"action\":\"I\",\"schema\":\"s\",\"table\":\"t\",\"columns\":"
                                "[{\"name\":\"a\"},{\"name\":\"z\",\"value\":0}],\"columns\":"
                                "[{\"name\":\"b\",\"value\":\"x\"}]}",
                                &c),
                     0);
    ck_assert_uint_eq(c.ncolumns, 1);
    check_str(&c, "b", "x", 1);
    ck_assert_int_eq(decode_str("{\"action\":\"I\",\"schema\":\"s\",\"table\":\"t\",\"columns\":"
                                "[{\"name\":\"b\",\"value\":\"x\"}],\"columns\":7}",
                                &c),
                     WALQ_EDECODE);
    ck_assert_str_eq(walq__decoder_error(dec), "\"columns\" is not an array");
}
END_TEST

START_TEST(unterminated_input)
{
    size_t len;
    char *text = load("insert.json", &len);
    char *buf = malloc(len + 16);
    walq__change c;

    /* What follows len would be trailing garbage if it were read. */
    ck_assert_ptr_nonnull(buf);
    memcpy(buf, text, len);
    memcpy(buf + len, "}garbage\"[{", 12);
    ck_assert_int_eq(walq__decode(dec, buf, len, &c), 0);
    ck_assert_uint_eq(c.ncolumns, 7);
    free(buf);
    free(text);
}
END_TEST

START_TEST(trailing_whitespace)
{
    walq__change c;

    ck_assert_int_eq(decode_str("{\"action\":\"B\"}\n", &c), 0);
    ck_assert_int_eq(c.action, WALQ__ACT_BEGIN);
    ck_assert_int_eq(decode_str(" \t{\"action\" : \"C\" , \"xid\" : 5 } \r\n", &c), 0);
    ck_assert_int_eq(c.action, WALQ__ACT_COMMIT);
    ck_assert_uint_eq(c.xid, 5);
}
END_TEST

START_TEST(every_truncation)
{
    size_t len;
    char *text = load("insert.json", &len);

    for (size_t n = 1; n < len; n++) {
        walq__change c;

        ck_assert_int_eq(decode_n(text, n, &c), WALQ_EDECODE);
        ck_assert_msg(strstr(walq__decoder_error(dec), "truncated JSON") != NULL, "%zu bytes: %s",
                      n, walq__decoder_error(dec));
        ck_assert_ptr_null(c.columns);
    }
    free(text);
}
END_TEST

/* Each malformed sample and a part of the message that must describe it. */
static const struct {
    const char *file;
    const char *message;
} bad_cases[] = {
    {"bad_json.json", "invalid JSON at offset 32: object value separator ',' expected"},
    {"bad_truncated.json", "truncated JSON"},
    {"bad_trailing.json", "unexpected data after the JSON object at offset 15"},
    {"bad_two_objects.json", "unexpected data after the JSON object at offset 14"},
    {"bad_comment.json", "unexpected data after the JSON object"},
    {"bad_trailing_comma.json", "invalid JSON at offset 14"},
    {"bad_single_quote.json", "invalid JSON at offset 10"},
    {"bad_leading_zero.json", "invalid JSON"},
    {"bad_escape.json", "invalid JSON at offset 32"},
    {"bad_array.json", "change is a JSON array, not an object"},
    {"bad_string.json", "change is a JSON string, not an object"},
    {"bad_null.json", "change is a JSON null, not an object"},
    {"bad_number.json", "change is a JSON int, not an object"},
    {"bad_empty.json", "empty change"},
    {"bad_no_action.json", "change has no \"action\" key"},
    {"bad_action_type.json", "\"action\" is not a string"},
    {"bad_action.json", "unknown action \"X\""},
    {"bad_action_long.json", "unknown action \"BEGIN\""},
    {"bad_lsn.json", "\"lsn\" is not a valid LSN: \"zz\""},
    {"bad_nextlsn.json", "\"nextlsn\" is not a valid LSN: \"0/\""},
    {"bad_lsn_type.json", "\"lsn\" is not a string"},
    {"bad_xid.json", "\"xid\" is not a valid transaction ID: -1"},
    {"bad_xid_big.json", "\"xid\" is not a valid transaction ID: 4294967296"},
    {"bad_xid_string.json", "\"xid\" is not a valid transaction ID: \"725\""},
    {"bad_timestamp.json", "\"timestamp\" is not a valid timestamp: \"2026-13-01 00:00:00+00\""},
    {"bad_timestamp_type.json", "\"timestamp\" is not a string"},
    {"bad_no_schema.json", "\"I\" change has no \"schema\" key"},
    {"bad_no_table.json", "\"D\" change has no \"table\" key"},
    {"bad_truncate_no_table.json", "\"T\" change has no \"table\" key"},
    {"bad_schema_type.json", "\"schema\" is not a string"},
    {"bad_no_columns.json", "\"I\" change has no \"columns\" key"},
    {"bad_columns_type.json", "\"columns\" is not an array"},
    {"bad_column_not_object.json", "column 2 is not an object"},
    {"bad_column_no_name.json", "column 3 has no \"name\""},
    {"bad_column_name_type.json", "\"name\" of column 1 is not a string"},
    {"bad_column_no_value.json", "column 1 has no \"value\""},
    {"bad_value_array.json", "value of column 1 (\"a\") is a JSON array"},
    {"bad_value_object.json", "value of column 1 (\"a\") is a JSON object"},
    {"bad_value_nan.json", "invalid JSON at offset 101: unexpected character"},
    {"bad_value_dot.json", "invalid JSON at offset 94: digit expected after decimal point"},
    {"bad_identity_type.json", "\"identity\" is not an array"},
    {"bad_delete_no_identity.json", "\"D\" change has no \"identity\" key"},
    {"bad_message_no_prefix.json", "\"M\" change has no \"prefix\" key"},
    {"bad_message_no_content.json", "\"M\" change has no \"content\" key"},
    {"bad_message_transactional.json", "\"transactional\" is not a boolean"},
};

START_TEST(malformed)
{
    walq__change c;
    const char *err;

    ck_assert_int_eq(decode_file(bad_cases[_i].file, &c), WALQ_EDECODE);
    err = walq__decoder_error(dec);
    ck_assert_msg(strstr(err, bad_cases[_i].message) != NULL, "%s: got \"%s\", want \"%s\"",
                  bad_cases[_i].file, err, bad_cases[_i].message);
    /* A failed decode leaves nothing dangling behind. */
    ck_assert_ptr_null(c.schema);
    ck_assert_ptr_null(c.columns);
    ck_assert_uint_eq(c.ncolumns, 0);
    ck_assert_ptr_null(c.identity);
    ck_assert_uint_eq(c.xid, 0);

    /* The decoder recovers: the next good change decodes and clears the message. */
    ck_assert_int_eq(decode_file("insert.json", &c), 0);
    ck_assert_str_eq(walq__decoder_error(dec), "");
}
END_TEST

/*
 * Syntax errors written inline, each with the message it must get: the offset
 * is that of the token yajl rejected, or of the fault inside it.
 */
static const struct {
    const char *text;
    const char *message;
} syntax_cases[] = {
    {"{\"action\":\"B\",\"xid\":tru}",
     "invalid JSON at offset 23: invalid literal: true, false or null expected"},
    {"{\"action\":\"B\",\"xid\":-}", "invalid JSON at offset 20: digit expected after minus"},
    {"{\"action\":\"B\",\"xid\":1e}", "invalid JSON at offset 22: digit expected in exponent"},
    {"{\"action\":\"B\",,}", "invalid JSON at offset 14: quoted object property name expected"},
    {"{\"action\":\"B\" , }", "invalid JSON at offset 16: quoted object property name expected"},
    {"{\"action\" \"B\"}",
     "invalid JSON at offset 10: object property name separator ':' expected"},
    {"{\"action\":\"B\",\"x\":[1 2]}",
     "invalid JSON at offset 21: array value separator ',' expected"},
    {"{\"action\":\"B\",\"x\":\"a\\u12g4\"}",
     "invalid JSON at offset 24: four hex digits expected after \\u in string"},
    {"{\"action\":\"B\",\"x\":\"a\x01\"}",
     "invalid JSON at offset 20: unescaped control character in string"},
    {"{\"action\":\"B\",\"x\":}", "invalid JSON at offset 18: value expected"},
    {"}", "invalid JSON at offset 0: value expected"},
    {"{\"action\":\"B\"} tr", "unexpected data after the JSON object at offset 15"},
    {"{\"action\":\"B\"}\n12", "unexpected data after the JSON object at offset 15"},
    {"{\"action\":\"B\"}]", "unexpected data after the JSON object at offset 14"},
    {" \t\r\n", "empty change"},
    {"tr", "truncated JSON: input ends after 2 bytes inside a value"},
    {"-", "truncated JSON: input ends after 1 bytes inside a value"},
    {"\"B", "truncated JSON: input ends after 2 bytes inside a value"},
    {"1.5", "change is a JSON double, not an object"},
    {" \"B\" ", "change is a JSON string, not an object"},
    {"[1,{\"a\":[2]}]", "change is a JSON array, not an object"},
};

START_TEST(syntax_errors)
{
    walq__change c;

    ck_assert_int_eq(decode_str(syntax_cases[_i].text, &c), WALQ_EDECODE);
    ck_assert_str_eq(walq__decoder_error(dec), syntax_cases[_i].message);
    ck_assert_ptr_null(c.schema);
    ck_assert_ptr_null(c.columns);

    /* The parser is left mid-value by most of these: the next change must not see it. */
    ck_assert_int_eq(decode_file("insert.json", &c), 0);
    ck_assert_uint_eq(c.ncolumns, 7);
    ck_assert_int_eq(decode_file("update.json", &c), 0);
    ck_assert_uint_eq(c.nidentity, 1);
}
END_TEST

START_TEST(malformed_messages_style)
{
    /* PostgreSQL style: lower case first letter, no final period. */
    for (size_t i = 0; i < sizeof(bad_cases) / sizeof(bad_cases[0]); i++) {
        walq__change c;
        const char *err;
        size_t n;

        ck_assert_int_eq(decode_file(bad_cases[i].file, &c), WALQ_EDECODE);
        err = walq__decoder_error(dec);
        n = strlen(err);
        ck_assert_uint_gt(n, 0);
        ck_assert_msg(err[n - 1] != '.', "%s ends with a period", err);
        ck_assert_msg(!(err[0] >= 'A' && err[0] <= 'Z'), "%s starts upper case", err);
    }
}
END_TEST

START_TEST(invalid_arguments)
{
    walq__change c;

    ck_assert_int_eq(walq__decoder_new(NULL), WALQ_EINVAL);
    ck_assert_int_eq(walq__decode(NULL, "{}", 2, &c), WALQ_EINVAL);
    ck_assert_int_eq(walq__decode(dec, "{}", 2, NULL), WALQ_EINVAL);
    ck_assert_int_eq(walq__decode(dec, NULL, 2, &c), WALQ_EINVAL);
    ck_assert_int_eq(walq__decode(dec, NULL, 0, &c), WALQ_EDECODE);
    ck_assert_str_eq(walq__decoder_error(NULL), "");
    ck_assert_ptr_null(walq__change_column(NULL, "a"));
    walq__decoder_free(NULL);
}
END_TEST

START_TEST(change_column_lookup)
{
    walq__change c;

    ck_assert_int_eq(decode_file("insert.json", &c), 0);
    ck_assert_ptr_eq(walq__change_column(&c, "id"), &c.columns[0]);
    ck_assert_ptr_eq(walq__change_column(&c, "ts"), &c.columns[6]);
    ck_assert_ptr_null(walq__change_column(&c, "nope"));
    ck_assert_ptr_null(walq__change_column(&c, "I"));
    ck_assert_ptr_null(walq__change_column(&c, ""));
    ck_assert_ptr_null(walq__change_column(&c, NULL));
}
END_TEST

START_TEST(timestamp_known_values)
{
    static const struct {
        const char *text;
        int64_t us;
    } cases[] = {
        {"1970-01-01 00:00:00+00", 0},
        {"2000-01-01 00:00:00+00", INT64_C(946684800000000)},
        {"2000-01-01 00:00:00+05:30", INT64_C(946665000000000)},
        {"2000-01-01 00:00:00-08", INT64_C(946713600000000)},
        {"2000-01-01 00:00:00+05:30:15", INT64_C(946664985000000)},
        {"1970-01-01 12:00:00.5+00", INT64_C(43200500000)},
        {"1970-01-01 00:00:00.000001+00", 1},
        {"1970-01-01 00:00:00.123456+00", 123456},
        {"1970-01-01 00:00:00.12+00", 120000},
        {"1969-12-31 23:59:59.999999+00", -1},
        {"1970-01-01 00:00:00-00", 0},
        {"2026-11-24 20:25:07.992647+00", INT64_C(1795551907992647)},
        {"2024-02-29 12:34:56.000001+00", INT64_C(1709210096000001)},
        {"2000-02-29 00:00:00+00", INT64_C(951782400000000)},
        {"1900-03-01 00:00:00+00", INT64_C(-2203891200000000)},
        {"0001-01-01 00:00:00+00", INT64_C(-62135596800000000)},
        {"9999-12-31 23:59:59.999999+00", INT64_C(253402300799999999)},
        {"10000-01-01 00:00:00+00", INT64_C(253402300800000000)},
        {"0044-03-15 12:00:00+00 BC", INT64_C(-63517780800000000)},
        {"infinity", INT64_MAX},
        {"-infinity", INT64_MIN},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int64_t us = 42;

        ck_assert_msg(walq__parse_timestamp(cases[i].text, strlen(cases[i].text), &us) == 0,
                      "\"%s\" was rejected", cases[i].text);
        ck_assert_msg(us == cases[i].us, "\"%s\" is %lld, want %lld", cases[i].text, (long long)us,
                      (long long)cases[i].us);
    }
}
END_TEST

START_TEST(timestamp_invalid)
{
    static const char *const cases[] = {
        "",
        "2026-13-01 00:00:00+00",
        "2026-00-01 00:00:00+00",
        "2026-01-00 00:00:00+00",
        "2026-01-32 00:00:00+00",
        "2026-04-31 00:00:00+00",
        "2023-02-29 00:00:00+00",
        "1900-02-29 00:00:00+00",
        "2026-01-01 25:00:00+00",
        "2026-01-01 24:00:00+00",
        "2026-01-01 00:60:00+00",
        "2026-01-01 00:00:60+00",
        "2026-01-01 00:00:00+16",
        "2026-01-01 00:00:00+05:60",
        "2026-01-01 00:00:00+05:30:60",
        "2026-01-01 00:00:00",
        "2026-01-01 00:00:00Z",
        "2026-01-01 00:00:00+0",
        "2026-01-01 00:00:00+00 ",
        "2026-01-01 00:00:00+00x",
        "2026-01-01 00:00:00+00:",
        "2026-01-01 00:00:00+00:3",
        "2026-01-01 00:00:00.+00",
        "2026-01-01 00:00:00.1234567+00",
        "2026-01-01T00:00:00+00",
        " 2026-01-01 00:00:00+00",
        "26-01-01 00:00:00+00",
        "2026-1-01 00:00:00+00",
        "2026-01-01 0:00:00+00",
        "0000-01-01 00:00:00+00",
        "0000-01-01 00:00:00+00 BC",
        "1000000-01-01 00:00:00+00",
        "294277-01-01 00:00:00+00",
        "2026/01/01 00:00:00+00",
        "infinityx",
        "Infinity",
        "+infinity",
        "2026-01-01 00:00:00+00 AD",
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int64_t us = 42;

        ck_assert_msg(walq__parse_timestamp(cases[i], strlen(cases[i]), &us) == WALQ_EINVAL,
                      "\"%s\" was accepted as %lld", cases[i], (long long)us);
        ck_assert_int_eq(us, 42);
    }
    ck_assert_int_eq(walq__parse_timestamp(NULL, 0, NULL), WALQ_EINVAL);
}
END_TEST

START_TEST(timestamp_unterminated)
{
    const char text[] = "1970-01-01 00:00:01+00:30junk";
    int64_t us;

    ck_assert_int_eq(walq__parse_timestamp(text, 22, &us), 0);
    ck_assert(us == 1000000);
    ck_assert_int_eq(walq__parse_timestamp(text, 25, &us), 0);
    ck_assert(us == 1000000 - INT64_C(1800000000));
    ck_assert_int_eq(walq__parse_timestamp(text, 21, &us), WALQ_EINVAL);
    ck_assert_int_eq(walq__parse_timestamp(text, 26, &us), WALQ_EINVAL);
    ck_assert_int_eq(walq__parse_timestamp("infinity!", 8, &us), 0);
    ck_assert(us == INT64_MAX);
}
END_TEST

static Suite *decode_suite(void)
{
    Suite *s = suite_create("decode");
    TCase *tc = tcase_create("changes");
    TCase *bad = tcase_create("malformed");
    TCase *ts = tcase_create("timestamp");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, insert_sample);
    tcase_add_test(tc, begin_and_commit);
    tcase_add_test(tc, update);
    tcase_add_test(tc, update_without_identity);
    tcase_add_test(tc, delete);
    tcase_add_test(tc, truncate);
    tcase_add_test(tc, message);
    tcase_add_test(tc, minimal_transaction);
    tcase_add_test(tc, keys_in_any_order);
    tcase_add_test(tc, value_encodings);
    tcase_add_test(tc, string_escapes);
    tcase_add_test(tc, lone_surrogate);
    tcase_add_test(tc, escaped_names);
    tcase_add_test(tc, number_text_recovery);
    tcase_add_test(tc, large_payload);
    tcase_add_test(tc, many_columns);
    tcase_add_test(tc, arrays_reused);
    tcase_add_test(tc, unterminated_input);
    tcase_add_test(tc, trailing_whitespace);
    tcase_add_test(tc, every_truncation);
    tcase_add_test(tc, invalid_arguments);
    tcase_add_test(tc, change_column_lookup);
    tcase_add_test(tc, columns_without_types);
    tcase_add_test(tc, duplicate_keys);
    suite_add_tcase(s, tc);

    tcase_add_checked_fixture(bad, setup, teardown);
    tcase_add_loop_test(bad, malformed, 0, (int)(sizeof(bad_cases) / sizeof(bad_cases[0])));
    tcase_add_test(bad, malformed_messages_style);
    tcase_add_loop_test(bad, syntax_errors, 0,
                        (int)(sizeof(syntax_cases) / sizeof(syntax_cases[0])));
    suite_add_tcase(s, bad);

    tcase_add_test(ts, timestamp_known_values);
    tcase_add_test(ts, timestamp_invalid);
    tcase_add_test(ts, timestamp_unterminated);
    suite_add_tcase(s, ts);
    return s;
}

static double seconds_between(const struct timespec *a, const struct timespec *b)
{
    return (double)(b->tv_sec - a->tv_sec) + (double)(b->tv_nsec - a->tv_nsec) / 1e9;
}

/*
 * Decodes the sample insert a million times and prints the rate.  The rate
 * per CPU second is printed beside the wall-clock one because it is the
 * steadier figure on a shared machine.
 */
static int bench(void)
{
    const long n = 1000000;
    struct timespec w0, w1, c0, c1;
    walq__decoder *d;
    walq__change c;
    size_t len;
    char *text = read_data("insert.json", &len);
    double wall, cpu;

    if (text == NULL) {
        fprintf(stderr, "cannot read %sinsert.json\n", DATA_DIR);
        return EXIT_FAILURE;
    }
    if (walq__decoder_new(&d) != 0)
        return EXIT_FAILURE;
    clock_gettime(CLOCK_MONOTONIC, &w0);
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &c0);
    for (long i = 0; i < n; i++) {
        if (walq__decode(d, text, len, &c) != 0 || c.ncolumns != 7) {
            fprintf(stderr, "decode failed: %s\n", walq__decoder_error(d));
            return EXIT_FAILURE;
        }
    }
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &c1);
    clock_gettime(CLOCK_MONOTONIC, &w1);
    wall = seconds_between(&w0, &w1);
    cpu = seconds_between(&c0, &c1);
    printf("decoded %ld changes of %zu bytes in %.3f s (%.3f s of CPU): %.0f changes/s, "
           "%.0f changes per CPU second\n",
           n, len, wall, cpu, (double)n / wall, (double)n / cpu);
    walq__decoder_free(d);
    free(text);
    return EXIT_SUCCESS;
}

int main(int argc, char **argv)
{
    SRunner *sr;
    int failed;

    if (argc > 1 && strcmp(argv[1], "--bench") == 0)
        return bench();
    sr = srunner_create(decode_suite());
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
