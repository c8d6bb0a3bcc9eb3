/* Unit tests of the replication protocol messages. */
#include <check.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "proto.h"
#include "walq.h"

/* Builds an XLogData message the way the server sends it. */
static size_t make_xlogdata(unsigned char *buf, uint64_t start, uint64_t end, int64_t send_time,
                            const char *data, size_t len)
{
    buf[0] = 'w';
    walq__put_u64(buf + 1, start);
    walq__put_u64(buf + 9, end);
    walq__put_u64(buf + 17, (uint64_t)send_time);
    if (len > 0)
        memcpy(buf + 25, data, len);
    return 25 + len;
}

static size_t make_keepalive(unsigned char *buf, uint64_t end, int64_t send_time, int reply)
{
    buf[0] = 'k';
    walq__put_u64(buf + 1, end);
    walq__put_u64(buf + 9, (uint64_t)send_time);
    buf[17] = (unsigned char)reply;
    return 18;
}

START_TEST(u64_big_endian)
{
    unsigned char b[8];
    static const unsigned char want[8] = {1, 2, 3, 4, 5, 6, 7, 8};

    walq__put_u64(b, UINT64_C(0x0102030405060708));
    ck_assert_mem_eq(b, want, 8);
    ck_assert(walq__get_u64(want) == UINT64_C(0x0102030405060708));
    walq__put_u64(b, UINT64_MAX);
    ck_assert(walq__get_u64(b) == UINT64_MAX);
    walq__put_u64(b, 0);
    ck_assert(walq__get_u64(b) == 0);
    walq__put_u64(b, UINT64_C(0x8000000000000000));
    ck_assert_uint_eq(b[0], 0x80);
    ck_assert(walq__get_u64(b) == UINT64_C(0x8000000000000000));
}
END_TEST

START_TEST(xlogdata_round_trip)
{
    unsigned char buf[64];
    size_t len = make_xlogdata(buf, UINT64_C(0x1529E48), UINT64_C(0x152A0B8),
                               INT64_C(817331107992647), "{\"action\":\"B\"}", 14);
    walq__msg m;
    char err[128];

    ck_assert_int_eq(walq__proto_parse((char *)buf, len, &m, err, sizeof(err)), 0);
    ck_assert_int_eq(m.kind, WALQ__MSG_XLOGDATA);
    ck_assert(m.wal_start == UINT64_C(0x1529E48));
    ck_assert(m.wal_end == UINT64_C(0x152A0B8));
    ck_assert(m.send_time == INT64_C(817331107992647));
    ck_assert_int_eq(m.reply_requested, 0);
    ck_assert_ptr_eq(m.data, (char *)buf + 25);
    ck_assert_uint_eq(m.len, 14);
    ck_assert_mem_eq(m.data, "{\"action\":\"B\"}", 14);
    ck_assert_str_eq(err, "");
}
END_TEST

START_TEST(xlogdata_empty_data)
{
    unsigned char buf[25];
    size_t len = make_xlogdata(buf, 1, 2, 3, NULL, 0);
    walq__msg m;

    ck_assert_uint_eq(len, 25);
    ck_assert_int_eq(walq__proto_parse((char *)buf, len, &m, NULL, 0), 0);
    ck_assert_int_eq(m.kind, WALQ__MSG_XLOGDATA);
    ck_assert_uint_eq(m.len, 0);
    ck_assert_ptr_eq(m.data, (char *)buf + 25);
}
END_TEST

START_TEST(xlogdata_max_values)
{
    unsigned char buf[26];
    walq__msg m;

    memset(buf, 0xff, sizeof(buf));
    buf[0] = 'w';
    ck_assert_int_eq(walq__proto_parse((char *)buf, sizeof(buf), &m, NULL, 0), 0);
    ck_assert(m.wal_start == UINT64_MAX);
    ck_assert(m.wal_end == UINT64_MAX);
    ck_assert(m.send_time == -1);
    ck_assert_uint_eq(m.len, 1);

    make_xlogdata(buf, 0, 0, INT64_MIN, "x", 1);
    ck_assert_int_eq(walq__proto_parse((char *)buf, 26, &m, NULL, 0), 0);
    ck_assert(m.send_time == INT64_MIN);
}
END_TEST

START_TEST(xlogdata_every_short_length)
{
    unsigned char full[25];

    make_xlogdata(full, 1, 2, 3, NULL, 0);
    for (size_t len = 1; len < 25; len++) {
        /* An exact-size copy lets AddressSanitizer catch a read past the end. */
        char *buf = malloc(len);
        char err[128];
        char want[128];
        walq__msg m;

        ck_assert_ptr_nonnull(buf);
        memcpy(buf, full, len);
        ck_assert_int_eq(walq__proto_parse(buf, len, &m, err, sizeof(err)), WALQ_EPROTO);
        snprintf(want, sizeof(want),
                 "XLogData message of %zu bytes is shorter than its 25-byte header", len);
        ck_assert_str_eq(err, want);
        free(buf);
    }
}
END_TEST

START_TEST(xlogdata_message_text)
{
    char buf[12] = {'w'};
    char err[128];
    walq__msg m;

    ck_assert_int_eq(walq__proto_parse(buf, 12, &m, err, sizeof(err)), WALQ_EPROTO);
    ck_assert_str_eq(err, "XLogData message of 12 bytes is shorter than its 25-byte header");
}
END_TEST

START_TEST(keepalive_round_trip)
{
    unsigned char buf[18];
    walq__msg m;

    make_keepalive(buf, UINT64_C(0x16B374D848), 123456789, 0);
    ck_assert_int_eq(walq__proto_parse((char *)buf, 18, &m, NULL, 0), 0);
    ck_assert_int_eq(m.kind, WALQ__MSG_KEEPALIVE);
    ck_assert(m.wal_end == UINT64_C(0x16B374D848));
    ck_assert(m.send_time == 123456789);
    ck_assert_int_eq(m.reply_requested, 0);
    ck_assert_ptr_null(m.data);
    ck_assert_uint_eq(m.len, 0);

    make_keepalive(buf, UINT64_MAX, INT64_MAX, 1);
    ck_assert_int_eq(walq__proto_parse((char *)buf, 18, &m, NULL, 0), 0);
    ck_assert(m.wal_end == UINT64_MAX);
    ck_assert(m.send_time == INT64_MAX);
    ck_assert_int_eq(m.reply_requested, 1);

    /* Any non-zero byte asks for a reply. */
    make_keepalive(buf, 0, 0, 0x80);
    ck_assert_int_eq(walq__proto_parse((char *)buf, 18, &m, NULL, 0), 0);
    ck_assert_int_eq(m.reply_requested, 1);
}
END_TEST

START_TEST(keepalive_every_wrong_length)
{
    unsigned char full[64];

    memset(full, 0, sizeof(full));
    full[0] = 'k';
    for (size_t len = 1; len <= sizeof(full); len++) {
        char *buf;
        char err[128];
        char want[128];
        walq__msg m;

        if (len == 18)
            continue;
        buf = malloc(len);
        ck_assert_ptr_nonnull(buf);
        memcpy(buf, full, len);
        ck_assert_int_eq(walq__proto_parse(buf, len, &m, err, sizeof(err)), WALQ_EPROTO);
        snprintf(want, sizeof(want), "keepalive message has %zu bytes, expected 18", len);
        ck_assert_str_eq(err, want);
        free(buf);
    }
}
END_TEST

START_TEST(unknown_type)
{
    char buf[40] = {'x'};
    char err[128];
    walq__msg m;

    ck_assert_int_eq(walq__proto_parse(buf, sizeof(buf), &m, err, sizeof(err)), WALQ_EPROTO);
    ck_assert_str_eq(err, "unexpected replication message type \"x\"");

    /* The server never sends a standby status update. */
    buf[0] = 'r';
    ck_assert_int_eq(walq__proto_parse(buf, 34, &m, err, sizeof(err)), WALQ_EPROTO);
    ck_assert_str_eq(err, "unexpected replication message type \"r\"");

    buf[0] = 1;
    ck_assert_int_eq(walq__proto_parse(buf, 1, &m, err, sizeof(err)), WALQ_EPROTO);
    ck_assert_str_eq(err, "unexpected replication message type 0x01");

    buf[0] = (char)0xff;
    ck_assert_int_eq(walq__proto_parse(buf, 1, &m, err, sizeof(err)), WALQ_EPROTO);
    ck_assert_str_eq(err, "unexpected replication message type 0xff");
}
END_TEST

START_TEST(empty_and_invalid_arguments)
{
    char buf[18] = {'k'};
    char err[128];
    walq__msg m;

    ck_assert_int_eq(walq__proto_parse(buf, 0, &m, err, sizeof(err)), WALQ_EPROTO);
    ck_assert_str_eq(err, "empty replication message");
    ck_assert_int_eq(walq__proto_parse(NULL, 0, &m, err, sizeof(err)), WALQ_EPROTO);
    ck_assert_int_eq(walq__proto_parse(NULL, 18, &m, err, sizeof(err)), WALQ_EINVAL);
    ck_assert_int_eq(walq__proto_parse(buf, 18, NULL, err, sizeof(err)), WALQ_EINVAL);
}
END_TEST

START_TEST(error_buffer_limits)
{
    char buf[12] = {'w'};
    char small[9];
    walq__msg m;

    /* No room for a message is fine, and a short buffer gets a truncated one. */
    ck_assert_int_eq(walq__proto_parse(buf, 12, &m, NULL, 100), WALQ_EPROTO);
    ck_assert_int_eq(walq__proto_parse(buf, 12, &m, small, 0), WALQ_EPROTO);
    ck_assert_int_eq(walq__proto_parse(buf, 12, &m, small, sizeof(small)), WALQ_EPROTO);
    ck_assert_str_eq(small, "XLogData");
}
END_TEST

START_TEST(status_update_layout)
{
    char out[WALQ__STATUS_UPDATE_LEN];
    const unsigned char *p = (const unsigned char *)out;

    ck_assert_uint_eq(walq__proto_status_update(out, 1, 2, 3, 4, 0), 34);
    ck_assert_uint_eq(WALQ__STATUS_UPDATE_LEN, 34);
    ck_assert_int_eq(out[0], 'r');
    ck_assert(walq__get_u64(p + 1) == 1);
    ck_assert(walq__get_u64(p + 9) == 2);
    ck_assert(walq__get_u64(p + 17) == 3);
    ck_assert(walq__get_u64(p + 25) == 4);
    ck_assert_uint_eq(p[33], 0);
    ck_assert_uint_eq(p[8], 1);
    ck_assert_uint_eq(p[1], 0);

    walq__proto_status_update(out, UINT64_MAX, UINT64_C(0x16B374D848), 0, INT64_MIN, 7);
    ck_assert(walq__get_u64(p + 1) == UINT64_MAX);
    ck_assert(walq__get_u64(p + 9) == UINT64_C(0x16B374D848));
    ck_assert(walq__get_u64(p + 17) == 0);
    ck_assert((int64_t)walq__get_u64(p + 25) == INT64_MIN);
    ck_assert_uint_eq(p[33], 1);
}
END_TEST

START_TEST(pg_now_is_current)
{
    int64_t now = walq__pg_now();
    time_t unix_now = time(NULL);
    int64_t unix_secs = (now + WALQ__PG_EPOCH_OFFSET_US) / 1000000;

    ck_assert_msg(unix_secs >= (int64_t)unix_now - 2 && unix_secs <= (int64_t)unix_now + 2,
                  "walq__pg_now() is %lld s from time()", (long long)(unix_secs - unix_now));
    /* 2020-01-01 in PostgreSQL's epoch. */
    ck_assert(now > INT64_C(631152000000000));
}
END_TEST

static Suite *proto_suite(void)
{
    Suite *s = suite_create("proto");
    TCase *tc = tcase_create("proto");

    tcase_add_test(tc, u64_big_endian);
    tcase_add_test(tc, xlogdata_round_trip);
    tcase_add_test(tc, xlogdata_empty_data);
    tcase_add_test(tc, xlogdata_max_values);
    tcase_add_test(tc, xlogdata_every_short_length);
    tcase_add_test(tc, xlogdata_message_text);
    tcase_add_test(tc, keepalive_round_trip);
    tcase_add_test(tc, keepalive_every_wrong_length);
    tcase_add_test(tc, unknown_type);
    tcase_add_test(tc, empty_and_invalid_arguments);
    tcase_add_test(tc, error_buffer_limits);
    tcase_add_test(tc, status_update_layout);
    tcase_add_test(tc, pg_now_is_current);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(proto_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
