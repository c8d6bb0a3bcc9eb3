/*
 * Unit tests of the audit trail's lines (names, times, JSON), of reading a
 * file's end, and of the file sink in a directory of its own.
 */
#include <check.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "audit.h"
#include "audit_format.h"
#include "audit_sink.h"
#include "decode.h"
#include "walq.h"

START_TEST(group_names)
{
    /* The longest: 50 characters. */
    static const char *const good[] = {"audit", "a", "x_1", "0",
                                       "abcdefghijabcdefghijabcdefghijabcdefghijabcdefghij"};
    static const char *const bad[] = {
        "",    "Audit", "a-b",  "a b",     "é",
        "a.b", "a/b",   "a\"b", "audit\n", "abcdefghijabcdefghijabcdefghijabcdefghijabcdefghijx"};

    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
        ck_assert_msg(walq__audit_group_valid(good[i]), "\"%s\" refused", good[i]);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        ck_assert_msg(!walq__audit_group_valid(bad[i]), "\"%s\" accepted", bad[i]);
    ck_assert(!walq__audit_group_valid(NULL));
}
END_TEST

START_TEST(table_names)
{
    static const char *const good[] = {"audit_log", "trail.changes", "_x", "a$1", "s.t_2"};
    static const char *const bad[] = {"",     "Audit", "a.b.c", ".a",    "a.",
                                      "1abc", "a b",   "a-b",   "\"a\"", "a.B"};

    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
        ck_assert_msg(walq__audit_table_valid(good[i]), "\"%s\" refused", good[i]);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        ck_assert_msg(!walq__audit_table_valid(bad[i]), "\"%s\" accepted", bad[i]);
}
END_TEST

START_TEST(times_as_postgresql_prints_them)
{
    static const struct {
        int64_t us;
        const char *text;
    } cases[] = {
        {INT64_C(1795551907992647), "2026-11-24 20:25:07.992647+00"},
        {INT64_C(1795551907500000), "2026-11-24 20:25:07.5+00"},
        {INT64_C(1795551907000000), "2026-11-24 20:25:07+00"},
        {INT64_C(1795551907000010), "2026-11-24 20:25:07.00001+00"},
        {1, "1970-01-01 00:00:00.000001+00"},
        {-1, "1969-12-31 23:59:59.999999+00"},
        {INT64_MAX, "infinity"},
        {INT64_MIN, "-infinity"},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char buf[40];
        int64_t back;

        ck_assert_str_eq(walq__audit_format_time(cases[i].us, buf), cases[i].text);
        /* What is printed reads back as the same instant. */
        ck_assert_int_eq(walq__parse_timestamp(buf, strlen(buf), &back), 0);
        ck_assert_msg(back == cases[i].us, "%s read back as %lld", buf, (long long)back);
    }
}
END_TEST

/* Decodes a wal2json v2 change and returns its audit line. */
static char *line_of(const char *change, size_t index, int last)
{
    walq__decoder *d;
    walq__change c;
    walq__audit_txn t = {726, UINT64_C(0x152A3F0), UINT64_C(0x152A420), INT64_C(1795551960000000)};
    json_object *o, *v;
    char *text;

    ck_assert_int_eq(walq__decoder_new(&d), 0);
    ck_assert_int_eq(walq__decode(d, change, strlen(change), &c), 0);
    ck_assert_int_eq(walq__audit_change_json(&o, &t, &c, index), 0);
    walq__decoder_free(d); /* the object holds copies */
    ck_assert(json_object_object_get_ex(o, "last", &v));
    json_object_set_boolean(v, last);
    text = strdup(
        json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
    json_object_put(o);
    return text;
}

START_TEST(insert_line)
{
    char *line = line_of(
        "{\"action\":\"I\",\"xid\":726,\"lsn\":\"0/152A2F0\",\"schema\":\"walq\",\"table\":"
        "\"jobs\",\"columns\":[{\"name\":\"id\",\"type\":\"bigint\",\"value\":42},{\"name\":"
        "\"payload\",\"type\":\"jsonb\",\"value\":\"{\\\"a\\\": \\\"b/c\\\"}\"},{\"name\":\"p\","
        "\"type\":\"numeric\",\"value\":1.50},{\"name\":\"huge\",\"type\":\"numeric\",\"value\":"
        "123456789012345678901234567890},{\"name\":\"t\",\"type\":\"boolean\",\"value\":true},"
        "{\"name\":\"k\",\"type\":\"text\",\"value\":null}]}",
        1, 0);

    ck_assert_str_eq(line, "{\"lsn\":\"0/152A2F0\",\"xid\":726,\"commit_time\":\"2026-11-24 "
                           "20:26:00+00\",\"commit_lsn\":\"0/152A3F0\",\"end_lsn\":\"0/152A420\","
                           "\"index\":1,\"last\":false,\"table\":\"walq.jobs\",\"action\":"
                           "\"insert\",\"new\":{\"id\":42,\"payload\":\"{\\\"a\\\": \\\"b/c\\\"}"
                           "\",\"p\":1.50,\"huge\":123456789012345678901234567890,\"t\":true,"
                           "\"k\":null},\"old_key\":null}");
    free(line);
}
END_TEST

START_TEST(update_and_delete_lines)
{
    char *line = line_of(
        "{\"action\":\"U\",\"xid\":726,\"lsn\":\"0/152A300\",\"schema\":\"walq\",\"table\":"
        "\"outcomes\",\"columns\":[{\"name\":\"job_id\",\"type\":\"bigint\",\"value\":42},"
        "{\"name\":\"status\",\"type\":\"text\",\"value\":\"done\"}],\"identity\":[{\"name\":"
        "\"job_id\",\"type\":\"bigint\",\"value\":42}]}",
        2, 0);

    ck_assert_ptr_nonnull(strstr(line, "\"index\":2,\"last\":false,\"table\":\"walq.outcomes\","
                                       "\"action\":\"update\",\"new\":{\"job_id\":42,\"status\":"
                                       "\"done\"},\"old_key\":{\"job_id\":42}}"));
    free(line);
    line = line_of("{\"action\":\"D\",\"xid\":726,\"lsn\":\"0/152A310\",\"schema\":\"walq\","
                   "\"table\":\"jobs\",\"identity\":[{\"name\":\"id\",\"type\":\"bigint\","
                   "\"value\":42}]}",
                   3, 1);
    ck_assert_ptr_nonnull(strstr(line, "\"index\":3,\"last\":true,\"table\":\"walq.jobs\","
                                       "\"action\":\"delete\",\"new\":null,\"old_key\":{\"id\":"
                                       "42}}"));
    free(line);
}
END_TEST

/* ---- reading the end of a file ---- */

#define LINE_FMT "{\"lsn\":\"0/1\",\"end_lsn\":\"%s\",\"index\":%d,\"last\":%s}\n"

/* A file of whole transactions (end LSN, size) then extra text; returns its fd. */
static int make_file(const char *extra, int ntx, const char *const *ends, const int *sizes,
                     off_t *whole)
{
    char path[] = "/tmp/walq-test-audit.XXXXXX";
    int fd = mkstemp(path);
    FILE *f;

    ck_assert_int_ge(fd, 0);
    unlink(path);
    f = fdopen(dup(fd), "w");
    for (int t = 0; t < ntx; t++)
        for (int i = 1; i <= sizes[t]; i++)
            fprintf(f, LINE_FMT, ends[t], i, i == sizes[t] ? "true" : "false");
    fflush(f);
    *whole = ftello(f);
    fputs(extra, f);
    fclose(f);
    return fd;
}

START_TEST(tail_of_whole_transactions)
{
    static const char *const ends[] = {"0/100", "0/200"};
    static const int sizes[] = {3, 1};
    walq__audit_tail t;
    off_t whole;
    int fd = make_file("", 2, ends, sizes, &whole);

    ck_assert_int_eq(walq__audit_read_tail(fd, "f", &t), 0);
    ck_assert_int_eq(t.keep, whole);
    ck_assert_int_eq(t.size, whole);
    ck_assert_uint_eq(t.end_lsn, 0x200);
    ck_assert_uint_eq(t.dropped_lines, 0);
    close(fd);
}
END_TEST

START_TEST(tail_of_empty_file)
{
    walq__audit_tail t;
    off_t whole;
    int fd = make_file("", 0, NULL, NULL, &whole);

    ck_assert_int_eq(walq__audit_read_tail(fd, "f", &t), 0);
    ck_assert_int_eq(t.keep, 0);
    ck_assert_uint_eq(t.end_lsn, 0);
    close(fd);
}
END_TEST

START_TEST(tail_cuts_a_line_cut_short)
{
    static const char *const ends[] = {"0/100"};
    static const int sizes[] = {2};
    walq__audit_tail t;
    off_t whole;
    int fd = make_file("{\"lsn\":\"0/1\",\"end_l", 1, ends, sizes, &whole);

    ck_assert_int_eq(walq__audit_read_tail(fd, "f", &t), 0);
    ck_assert_int_eq(t.keep, whole);
    ck_assert_int_gt(t.size, whole);
    ck_assert_uint_eq(t.end_lsn, 0x100);
    close(fd);
}
END_TEST

START_TEST(tail_cuts_an_unfinished_transaction)
{
    static const char *const ends[] = {"0/100", "0/200"};
    static const int sizes[] = {2, 3};
    char extra[512];
    walq__audit_tail t;
    off_t whole;
    int fd;

    /* Two lines of transaction 0/300 and half a third. */
    snprintf(extra, sizeof(extra),
             "{\"end_lsn\":\"0/300\",\"index\":1,\"last\":false}\n"
             "{\"end_lsn\":\"0/300\",\"index\":2,\"last\":false}\n"
             "{\"end_lsn\":\"0/3");
    fd = make_file(extra, 2, ends, sizes, &whole);
    ck_assert_int_eq(walq__audit_read_tail(fd, "f", &t), 0);
    ck_assert_int_eq(t.keep, whole);
    ck_assert_uint_eq(t.end_lsn, 0x200);
    ck_assert_uint_eq(t.dropped_lines, 2);
    close(fd);
}
END_TEST

START_TEST(tail_cuts_a_first_unfinished_transaction)
{
    walq__audit_tail t;
    off_t whole;
    int fd =
        make_file("{\"end_lsn\":\"0/300\",\"index\":1,\"last\":false}\n", 0, NULL, NULL, &whole);

    ck_assert_int_eq(walq__audit_read_tail(fd, "f", &t), 0);
    ck_assert_int_eq(t.keep, 0);
    ck_assert_uint_eq(t.end_lsn, 0);
    ck_assert_uint_eq(t.dropped_lines, 1);
    close(fd);
}
END_TEST

START_TEST(tail_of_a_foreign_file)
{
    static const char *const texts[] = {
        "hello\n",
        "{\"index\":1,\"last\":true}\n",
        "{\"end_lsn\":\"0/1\",\"index\":0,\"last\":true}\n",
        "{\"end_lsn\":\"0/1\",\"index\":1}\n",
        /* An unfinished transaction whose numbering does not add up. */
        "{\"end_lsn\":\"0/1\",\"index\":3,\"last\":false}\n",
        "{\"end_lsn\":\"0/2\",\"index\":1,\"last\":true}\n"
        "{\"end_lsn\":\"0/1\",\"index\":2,\"last\":false}\n",
        /* The transaction before the unfinished one ends after it. */
        "{\"end_lsn\":\"0/5\",\"index\":1,\"last\":true}\n"
        "{\"end_lsn\":\"0/1\",\"index\":1,\"last\":false}\n",
    };

    for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
        walq__audit_tail t;
        off_t whole;
        int fd = make_file(texts[i], 0, NULL, NULL, &whole);

        ck_assert_msg(walq__audit_read_tail(fd, "f", &t) == WALQ_EINVAL, "accepted: %s", texts[i]);
        ck_assert_ptr_nonnull(strstr(walq_last_error(), "does not end like a walq audit trail"));
        close(fd);
    }
}
END_TEST

START_TEST(tail_of_a_long_unfinished_transaction)
{
    static const char *const ends[] = {"0/100"};
    static const int sizes[] = {1};
    walq__buf extra = {0};
    walq__audit_tail t;
    off_t whole;
    int fd;

    /* Longer than the block the file is read back with, many times over. */
    for (int i = 1; i <= 20000; i++)
        ck_assert_int_eq(walq__buf_printf(&extra, LINE_FMT, "1/0", i, "false"), 0);
    fd = make_file(extra.data, 1, ends, sizes, &whole);
    ck_assert_int_eq(walq__audit_read_tail(fd, "f", &t), 0);
    ck_assert_int_eq(t.keep, whole);
    ck_assert_uint_eq(t.end_lsn, 0x100);
    ck_assert_uint_eq(t.dropped_lines, 20000);
    walq__buf_free(&extra);
    close(fd);
}
END_TEST

/* ---- the file sink ---- */

/* A directory of its own for each test, removed with what is in it. */
static char sink_dir[64];
static char sink_path[128];

static void sink_dir_make(void)
{
    snprintf(sink_dir, sizeof(sink_dir), "/tmp/walq-test-sink.XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(sink_dir));
    snprintf(sink_path, sizeof(sink_path), "%s/audit.jsonl", sink_dir);
}

static void sink_dir_remove(void)
{
    unlink(sink_path);
    rmdir(sink_dir);
}

static void sink_open_file(walq__audit_sink *s, uint64_t *cursor)
{
    walq__audit_sink_config c = {.output = sink_path, .group = "audit"};

    walq__audit_sink_init(s, &c);
    ck_assert_int_eq(walq__audit_sink_open(s, cursor), 0);
    ck_assert_int_eq(s->kind, WALQ__AUDIT_SINK_FILE);
}

/* Change index of the transaction that ends at end_lsn, with pad bytes of payload. */
static void sink_emit(walq__audit_sink *s, uint64_t end_lsn, size_t index, size_t pad, int last)
{
    static char payload[4096];
    walq__audit_txn t = {7, end_lsn - 0x30, end_lsn, 0};
    walq__value v = {.name = "payload", .kind = WALQ__V_STR, .str = payload};
    walq__change ch = {.action = WALQ__ACT_INSERT,
                       .lsn = end_lsn - 0x40,
                       .schema = "walq",
                       .table = "jobs",
                       .columns = &v,
                       .ncolumns = 1};
    json_object *o;

    ck_assert_uint_lt(pad, sizeof(payload));
    memset(payload, 'x', pad);
    payload[pad] = '\0';
    v.len = pad;
    ck_assert_int_eq(walq__audit_change_json(&o, &t, &ch, index), 0);
    ck_assert_int_eq(walq__audit_sink_emit(s, o, last), 0);
    json_object_put(o);
}

/* A whole transaction of n changes. */
static void sink_txn(walq__audit_sink *s, uint64_t end_lsn, size_t n, size_t pad)
{
    for (size_t i = 1; i <= n; i++)
        sink_emit(s, end_lsn, i, pad, i == n);
    walq__audit_sink_end_txn(s, end_lsn, n);
}

static off_t file_size(void)
{
    struct stat sb;

    ck_assert_int_eq(stat(sink_path, &sb), 0);
    return sb.st_size;
}

static size_t file_lines(void)
{
    FILE *f = fopen(sink_path, "r");
    size_t n = 0;
    int ch;

    ck_assert_ptr_nonnull(f);
    while ((ch = fgetc(f)) != EOF)
        n += ch == '\n';
    fclose(f);
    return n;
}

START_TEST(file_sink_flushes_whole_transactions)
{
    walq__audit_sink s;
    walq__audit_sink_counts n;
    uint64_t cursor = 1;
    int64_t now;

    sink_dir_make();
    sink_open_file(&s, &cursor);
    ck_assert_uint_eq(cursor, 0);
    ck_assert(walq__audit_sink_ready(&s));
    ck_assert_int_eq(walq__audit_sink_deadline(&s), 0);

    sink_txn(&s, 0x200, 3, 10);
    ck_assert(walq__audit_sink_pending(&s));
    ck_assert(walq__audit_sink_can_flush(&s));
    /* Not yet due: a flush waits a little for more. */
    now = walq__mono_us();
    ck_assert(!walq__audit_sink_flush_due(&s, now));
    ck_assert_int_gt(walq__audit_sink_deadline(&s), now);
    ck_assert(walq__audit_sink_flush_due(&s, walq__audit_sink_deadline(&s)));
    ck_assert_int_eq(file_size(), 0); /* buffered until the flush */

    ck_assert_int_eq(walq__audit_sink_flush(&s), 0);
    ck_assert(!walq__audit_sink_pending(&s));
    ck_assert_int_eq(walq__audit_sink_deadline(&s), 0);
    ck_assert_uint_eq(file_lines(), 3);
    walq__audit_sink_counts_get(&s, &n);
    ck_assert_uint_eq(n.transactions, 1);
    ck_assert_uint_eq(n.changes, 3);
    ck_assert_uint_eq(n.flushes, 1);
    ck_assert(!walq__audit_sink_lost(&s));

    /* A transaction with no changes in the sink is nothing to flush. */
    walq__audit_sink_end_txn(&s, 0x300, 0);
    ck_assert(!walq__audit_sink_pending(&s));
    walq__audit_sink_close(&s);
    /* The counts outlive the close: they are the run's stats. */
    walq__audit_sink_counts_get(&s, &n);
    ck_assert_uint_eq(n.changes, 3);
    walq__audit_sink_close(&s);
    sink_dir_remove();
}
END_TEST

START_TEST(file_sink_reopens_at_its_last_transaction)
{
    walq__audit_sink s;
    uint64_t cursor;

    sink_dir_make();
    sink_open_file(&s, &cursor);
    sink_txn(&s, 0x200, 2, 10);
    sink_txn(&s, 0x300, 1, 10);
    ck_assert_int_eq(walq__audit_sink_flush(&s), 0);
    walq__audit_sink_close(&s);

    sink_open_file(&s, &cursor);
    ck_assert_uint_eq(cursor, 0x300);
    sink_txn(&s, 0x400, 1, 10);
    ck_assert_int_eq(walq__audit_sink_flush(&s), 0);
    ck_assert_uint_eq(file_lines(), 4);
    walq__audit_sink_close(&s);
    sink_dir_remove();
}
END_TEST

START_TEST(file_sink_is_locked)
{
    walq__audit_sink s, t;
    walq__audit_sink_config c = {.output = sink_path, .group = "audit"};
    uint64_t cursor;

    sink_dir_make();
    sink_open_file(&s, &cursor);
    walq__audit_sink_init(&t, &c);
    ck_assert_int_eq(walq__audit_sink_open(&t, &cursor), WALQ_EBUSY);
    ck_assert_ptr_nonnull(strstr(walq_last_error(), "could not lock output file"));
    walq__audit_sink_close(&t);
    walq__audit_sink_close(&s);
    sink_dir_remove();
}
END_TEST

START_TEST(file_sink_cuts_a_buffered_transaction)
{
    walq__audit_sink s;
    uint64_t cursor;
    off_t whole;

    sink_dir_make();
    sink_open_file(&s, &cursor);
    sink_txn(&s, 0x200, 2, 10);
    ck_assert_int_eq(walq__audit_sink_flush(&s), 0);
    whole = file_size();
    /* Two changes of the next one, still in the buffer, and more whole ones before. */
    sink_txn(&s, 0x300, 1, 10);
    sink_emit(&s, 0x400, 1, 10, 0);
    sink_emit(&s, 0x400, 2, 10, 0);
    ck_assert_int_eq(walq__audit_sink_cut(&s), 0);
    ck_assert_int_eq(walq__audit_sink_flush(&s), 0);
    ck_assert_uint_eq(file_lines(), 3);
    ck_assert_int_gt(file_size(), whole);
    walq__audit_sink_close(&s);

    sink_open_file(&s, &cursor);
    ck_assert_uint_eq(cursor, 0x300);
    walq__audit_sink_close(&s);
    sink_dir_remove();
}
END_TEST

/* More than the sink buffers, so that part of it is in the file already. */
#define BIG_TXN_CHANGES 600

START_TEST(file_sink_cuts_a_written_transaction)
{
    walq__audit_sink s;
    uint64_t cursor;
    off_t whole;

    sink_dir_make();
    sink_open_file(&s, &cursor);
    sink_txn(&s, 0x200, 2, 10);
    ck_assert_int_eq(walq__audit_sink_flush(&s), 0);
    whole = file_size();
    for (size_t i = 1; i <= BIG_TXN_CHANGES; i++)
        sink_emit(&s, 0x300, i, 3000, 0);
    ck_assert_int_gt(file_size(), whole);
    ck_assert_int_eq(walq__audit_sink_cut(&s), 0);
    /* The cut itself is made durable. */
    ck_assert(walq__audit_sink_pending(&s));
    ck_assert_int_eq(walq__audit_sink_flush(&s), 0);
    ck_assert_int_eq(file_size(), whole);
    ck_assert_uint_eq(file_lines(), 2);

    /* The transaction comes again, whole this time. */
    sink_txn(&s, 0x300, 3, 10);
    ck_assert_int_eq(walq__audit_sink_flush(&s), 0);
    ck_assert_uint_eq(file_lines(), 5);
    walq__audit_sink_close(&s);
    sink_dir_remove();
}
END_TEST

START_TEST(file_sink_recovers_its_tail)
{
    walq__audit_sink s;
    uint64_t cursor;
    off_t whole;
    FILE *f;

    sink_dir_make();
    sink_open_file(&s, &cursor);
    sink_txn(&s, 0x200, 2, 10);
    ck_assert_int_eq(walq__audit_sink_flush(&s), 0);
    whole = file_size();
    /* Closed in the middle of a transaction, as by kill -9: no cut. */
    for (size_t i = 1; i <= BIG_TXN_CHANGES; i++)
        sink_emit(&s, 0x300, i, 3000, 0);
    ck_assert_int_gt(file_size(), whole);
    walq__audit_sink_close(&s);

    sink_open_file(&s, &cursor);
    ck_assert_uint_eq(cursor, 0x200);
    ck_assert_int_eq(file_size(), whole);
    walq__audit_sink_close(&s);

    /* A line cut short is cut too. */
    f = fopen(sink_path, "a");
    ck_assert_ptr_nonnull(f);
    fputs("{\"lsn\":\"0/1\",\"end_l", f);
    fclose(f);
    sink_open_file(&s, &cursor);
    ck_assert_uint_eq(cursor, 0x200);
    ck_assert_int_eq(file_size(), whole);

    /* And the trail goes on from there. */
    sink_txn(&s, 0x300, 1, 10);
    ck_assert_int_eq(walq__audit_sink_flush(&s), 0);
    ck_assert_uint_eq(file_lines(), 3);
    walq__audit_sink_close(&s);
    sink_open_file(&s, &cursor);
    ck_assert_uint_eq(cursor, 0x300);
    walq__audit_sink_close(&s);
    sink_dir_remove();
}
END_TEST

START_TEST(file_sink_refuses_a_foreign_file)
{
    walq__audit_sink s;
    walq__audit_sink_config c = {.output = sink_path, .group = "audit"};
    uint64_t cursor;
    FILE *f;

    sink_dir_make();
    f = fopen(sink_path, "w");
    ck_assert_ptr_nonnull(f);
    fputs("hello\n", f);
    fclose(f);
    walq__audit_sink_init(&s, &c);
    ck_assert_int_eq(walq__audit_sink_open(&s, &cursor), WALQ_EINVAL);
    ck_assert_ptr_nonnull(strstr(walq_last_error(), "does not end like a walq audit trail"));
    walq__audit_sink_close(&s);
    ck_assert_int_eq(file_size(), 6); /* left as it was */

    /* A file ahead of the source was written from another server. */
    unlink(sink_path);
    sink_open_file(&s, &cursor);
    ck_assert_int_eq(walq__audit_sink_from_elsewhere(&s, 0x300, 0x200), WALQ_EINVAL);
    ck_assert_ptr_nonnull(strstr(walq_last_error(), "ends at 0/300, beyond the source's WAL "
                                                    "position 0/200"));
    walq__audit_sink_close(&s);
    sink_dir_remove();
}
END_TEST

START_TEST(file_sink_of_a_device_is_a_stream)
{
    walq__audit_sink s;
    walq__audit_sink_config c = {.output = "/dev/null", .group = "audit"};
    uint64_t cursor = 1;

    walq__audit_sink_init(&s, &c);
    ck_assert_int_eq(walq__audit_sink_open(&s, &cursor), 0);
    ck_assert_uint_eq(cursor, 0);
    ck_assert_int_eq(s.kind, WALQ__AUDIT_SINK_STREAM);
    sink_txn(&s, 0x200, 2, 10);
    ck_assert_int_eq(walq__audit_sink_flush(&s), 0);
    walq__audit_sink_close(&s);
}
END_TEST

static Suite *audit_suite(void)
{
    Suite *s = suite_create("audit");
    TCase *tc = tcase_create("core");

    tcase_add_test(tc, group_names);
    tcase_add_test(tc, table_names);
    tcase_add_test(tc, times_as_postgresql_prints_them);
    tcase_add_test(tc, insert_line);
    tcase_add_test(tc, update_and_delete_lines);
    tcase_add_test(tc, tail_of_whole_transactions);
    tcase_add_test(tc, tail_of_empty_file);
    tcase_add_test(tc, tail_cuts_a_line_cut_short);
    tcase_add_test(tc, tail_cuts_an_unfinished_transaction);
    tcase_add_test(tc, tail_cuts_a_first_unfinished_transaction);
    tcase_add_test(tc, tail_of_a_foreign_file);
    tcase_add_test(tc, tail_of_a_long_unfinished_transaction);
    suite_add_tcase(s, tc);
    tc = tcase_create("file sink");
    tcase_add_test(tc, file_sink_flushes_whole_transactions);
    tcase_add_test(tc, file_sink_reopens_at_its_last_transaction);
    tcase_add_test(tc, file_sink_is_locked);
    tcase_add_test(tc, file_sink_cuts_a_buffered_transaction);
    tcase_add_test(tc, file_sink_cuts_a_written_transaction);
    tcase_add_test(tc, file_sink_recovers_its_tail);
    tcase_add_test(tc, file_sink_refuses_a_foreign_file);
    tcase_add_test(tc, file_sink_of_a_device_is_a_stream);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(audit_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
