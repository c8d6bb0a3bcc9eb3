/*
 * Unit tests of src/metrics.c: counters by queue, histograms rendered
 * cumulative with +Inf equal to _count, label values escaped as the text
 * exposition format says, the lags, and /readyz's reasons.
 */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "metrics.h"

static char *render(walq__metrics *m)
{
    walq__buf b = {NULL, 0, 0};

    ck_assert_int_eq(walq__metrics_write(m, &b), 0);
    ck_assert_ptr_nonnull(b.data);
    return b.data;
}

/* The value of the sample line that starts with key followed by a space. */
static const char *value_of(const char *text, const char *key)
{
    size_t n = strlen(key);

    for (const char *p = text; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL)
        if (strncmp(p, key, n) == 0 && p[n] == ' ')
            return p + n + 1;
    return NULL;
}

static long long ival(const char *text, const char *key)
{
    const char *v = value_of(text, key);

    ck_assert_msg(v != NULL, "no sample %s in:\n%s", key, text);
    return strtoll(v, NULL, 10);
}

/* What the loop does once a turn, twice: the counts of the events before, added in once. */
static void publish_twice(walq__metrics *m)
{
    walq__gauges g = {0};

    walq__metrics_publish(m, &g);
    walq__metrics_publish(m, &g);
}

START_TEST(counters_by_queue)
{
    const char *queues[] = {"a", "b"};
    walq__metrics *m = walq__metrics_new("consume", "g", "walq_g", 0, 1, queues, 2);
    char *t;

    ck_assert_ptr_nonnull(m);
    for (int i = 0; i < 5; i++)
        walq__metrics_job(m, "a", WALQ__EV_RECEIVED);
    walq__metrics_job(m, "b", WALQ__EV_RECEIVED);
    walq__metrics_job(m, "a", WALQ__EV_DONE);
    walq__metrics_job(m, "a", WALQ__EV_DEAD);
    walq__metrics_job(m, "a", WALQ__EV_RETRIED);
    walq__metrics_job(m, "b", WALQ__EV_CANCELLED);
    /* A queue the group does not read counts nowhere. */
    walq__metrics_job(m, "zzz", WALQ__EV_DONE);
    /* The loop's counts are served once it publishes, and counted once however often it does. */
    publish_twice(m);
    t = render(m);
    ck_assert_int_eq(ival(t, "walq_jobs_received_total{group=\"g\",partition=\"0\",queue=\"a\"}"),
                     5);
    ck_assert_int_eq(ival(t, "walq_jobs_received_total{group=\"g\",partition=\"0\",queue=\"b\"}"),
                     1);
    ck_assert_int_eq(ival(t, "walq_jobs_done_total{group=\"g\",partition=\"0\",queue=\"a\"}"), 1);
    ck_assert_int_eq(ival(t, "walq_jobs_done_total{group=\"g\",partition=\"0\",queue=\"b\"}"), 0);
    ck_assert_int_eq(ival(t, "walq_jobs_dead_total{group=\"g\",partition=\"0\",queue=\"a\"}"), 1);
    ck_assert_int_eq(ival(t, "walq_jobs_retried_total{group=\"g\",partition=\"0\",queue=\"a\"}"),
                     1);
    ck_assert_int_eq(ival(t, "walq_jobs_cancelled_total{group=\"g\",partition=\"0\",queue=\"b\"}"),
                     1);
    ck_assert_ptr_null(strstr(t, "zzz"));
    /* Every family has its HELP and TYPE. */
    ck_assert_ptr_nonnull(strstr(t, "# TYPE walq_jobs_done_total counter\n"));
    ck_assert_ptr_nonnull(strstr(t, "# TYPE walq_handler_duration_seconds histogram\n"));
    ck_assert_ptr_nonnull(strstr(t, "# HELP walq_jobs_done_total "));
    free(t);
    walq__metrics_free(m);
}
END_TEST

START_TEST(histogram_is_cumulative)
{
    const char *queues[] = {"a"};
    walq__metrics *m = walq__metrics_new("consume", "g", "walq_g", 2, 4, queues, 1);
    int64_t now = walq__mono_us();
    char *t;

    /* 0 s, about 20 ms, about 2 s and 400 s (past the last bound). */
    walq__metrics_ran(m, "a", now + 1000000);
    walq__metrics_ran(m, "a", now - 20000);
    walq__metrics_ran(m, "a", now - 2000000);
    walq__metrics_ran(m, "a", now - 400000000LL);
    publish_twice(m);
    t = render(m);
#define B(le)                                                                                      \
    "walq_handler_duration_seconds_bucket{group=\"g\",partition=\"2\",queue=\"a\",le=\"" le "\"}"
    ck_assert_int_eq(ival(t, B("0.001")), 1);
    ck_assert_int_eq(ival(t, B("0.01")), 1);
    ck_assert_int_eq(ival(t, B("0.025")), 2);
    ck_assert_int_eq(ival(t, B("2.5")), 3);
    ck_assert_int_eq(ival(t, B("300")), 3);
    ck_assert_int_eq(ival(t, B("+Inf")), 4);
#undef B
    ck_assert_int_eq(
        ival(t, "walq_handler_duration_seconds_count{group=\"g\",partition=\"2\",queue=\"a\"}"), 4);
    ck_assert_double_ge(
        strtod(value_of(
                   t, "walq_handler_duration_seconds_sum{group=\"g\",partition=\"2\",queue=\"a\"}"),
               NULL),
        402.0);
    ck_assert_ptr_nonnull(strstr(t, "partitions=\"4\""));
    free(t);
    walq__metrics_free(m);
}
END_TEST

START_TEST(label_values_escaped)
{
    const char *queues[] = {"we\"ird\\queue\nname"};
    walq__metrics *m = walq__metrics_new("consume", "g", "walq_g", 0, 1, queues, 1);
    char *t;

    walq__metrics_job(m, queues[0], WALQ__EV_DONE);
    publish_twice(m);
    t = render(m);
    ck_assert_int_eq(ival(t, "walq_jobs_done_total{group=\"g\",partition=\"0\",queue="
                             "\"we\\\"ird\\\\queue\\nname\"}"),
                     1);
    /* No raw newline inside a sample line: each line starts with # or walq_. */
    for (const char *p = t; *p; p = strchr(p, '\n') + 1)
        ck_assert_msg(*p == '#' || strncmp(p, "walq_", 5) == 0, "a line starts with %.20s", p);
    free(t);
    walq__metrics_free(m);
}
END_TEST

START_TEST(lags)
{
    walq__metrics *m = walq__metrics_new("audit", "au", "walqaudit_au", 0, 1, NULL, 0);
    walq__gauges g = {0};
    char *t;

    g.streaming = 1;
    g.primary_up = 1;
    g.server_lsn = 5000;
    g.received_lsn = 3000;
    g.confirmed_lsn = 1000;
    g.commit_time_us = walq__wall_us() - 7000000;
    walq__metrics_publish(m, &g);
    t = render(m);
    ck_assert_int_eq(ival(t, "walq_lag_received_bytes{group=\"au\",partition=\"0\"}"), 2000);
    ck_assert_int_eq(ival(t, "walq_lag_confirmed_bytes{group=\"au\",partition=\"0\"}"), 2000);
    ck_assert_double_ge(
        strtod(value_of(t, "walq_lag_received_seconds{group=\"au\",partition=\"0\"}"), NULL), 6.9);
    /* The audit has no job families. */
    ck_assert_ptr_null(strstr(t, "walq_jobs_done_total"));
    ck_assert_ptr_nonnull(strstr(t, "walq_audit_changes_total"));
    free(t);
    /* Caught up: no lag, whatever the last commit's age. */
    g.server_lsn = g.received_lsn = g.confirmed_lsn = 6000;
    walq__metrics_publish(m, &g);
    t = render(m);
    ck_assert_int_eq(ival(t, "walq_lag_received_bytes{group=\"au\",partition=\"0\"}"), 0);
    ck_assert_double_eq(
        strtod(value_of(t, "walq_lag_received_seconds{group=\"au\",partition=\"0\"}"), NULL), 0);
    ck_assert_double_eq(
        strtod(value_of(t, "walq_lag_confirmed_seconds{group=\"au\",partition=\"0\"}"), NULL), 0);
    /* The retained WAL shows only once known. */
    ck_assert_ptr_null(strstr(t, "walq_slot_retained_wal_bytes{"));
    free(t);
    walq__metrics_set_retained(m, 12345, 9000);
    t = render(m);
    ck_assert_int_eq(
        ival(t, "walq_slot_retained_wal_bytes{group=\"au\",partition=\"0\",slot=\"walqaudit_au\"}"),
        12345);
    /* The source read later than its last message: its WAL end is the later one. */
    ck_assert_int_eq(ival(t, "walq_server_wal_lsn_bytes{group=\"au\",partition=\"0\"}"), 9000);
    ck_assert_int_eq(ival(t, "walq_lag_received_bytes{group=\"au\",partition=\"0\"}"), 3000);
    free(t);
    walq__metrics_free(m);
}
END_TEST

START_TEST(readiness)
{
    const char *queues[] = {"a"};
    walq__metrics *m = walq__metrics_new("consume", "g", "walq_g", 0, 1, queues, 1);
    walq__gauges g = {0};
    char why[256];

    ck_assert_int_eq(walq__metrics_ready(m, 1000000, why, sizeof(why)), 0);
    ck_assert_str_eq(why, "not streaming from replication slot \"walq_g\" yet");
    g.streaming = 1;
    walq__metrics_publish(m, &g);
    ck_assert_int_eq(walq__metrics_ready(m, 1000000, why, sizeof(why)), 0);
    ck_assert_str_eq(why, "no ack or upkeep on the primary has succeeded yet");
    g.primary_up = 1;
    walq__metrics_publish(m, &g);
    walq__metrics_primary_ok(m);
    ck_assert_int_eq(walq__metrics_ready(m, 1000000, why, sizeof(why)), 1);
    /* The stream lost: ready still within the time given, not past it. */
    g.streaming = 0;
    walq__metrics_publish(m, &g);
    ck_assert_int_eq(walq__metrics_ready(m, 1000000, why, sizeof(why)), 1);
    ck_assert_int_eq(walq__metrics_ready(m, 0, why, sizeof(why)), 0);
    ck_assert_ptr_nonnull(strstr(why, "not streaming from replication slot \"walq_g\" for"));
    g.streaming = 1;
    g.primary_up = 0;
    walq__metrics_publish(m, &g);
    ck_assert_int_eq(walq__metrics_ready(m, 0, why, sizeof(why)), 0);
    ck_assert_ptr_nonnull(strstr(why, "the primary has been unreachable for"));
    walq__metrics_free(m);
}
END_TEST

static Suite *metrics_suite(void)
{
    Suite *s = suite_create("metrics");
    TCase *tc = tcase_create("core");

    tcase_add_test(tc, counters_by_queue);
    tcase_add_test(tc, histogram_is_cumulative);
    tcase_add_test(tc, label_values_escaped);
    tcase_add_test(tc, lags);
    tcase_add_test(tc, readiness);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(metrics_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
