/*
 * Unit tests of the consumer's options, without a server: the defaults, the
 * versions accepted, the conversion of version 1, the checks, and the
 * calling of version-1 callbacks.  walq_consumer_open() connects to nothing,
 * so it is called as a program would.
 */
#include <check.h>
#include <limits.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "handler.h"
#include "options.h"

static const char *const queues[] = {"q1", "q2"};
static const char *const true_argv[] = {"true", NULL};
static const char *const missing_argv[] = {"/nonexistent/walq-handler", NULL};

/* Options that walq_consumer_open() takes: the tests change one thing each. */
static walq_options valid_options(void)
{
    walq_options o = WALQ_OPTIONS_INIT;

    o.group = "g";
    o.queues = queues;
    o.nqueues = 2;
    o.handler = WALQ_HANDLER_NOOP;
    return o;
}

/*
 * Version 1's WALQ_OPTIONS_INIT, as walq.h wrote it, laid over the private
 * copy of that struct: what a program built against the old header passes.
 */
static walq__options_v1 v1_defaults(void)
{
    walq__options_v1 o = {1,    NULL, NULL, NULL,          NULL, 0,     WALQ_HANDLER_EXEC,
                          NULL, 1,    0,    0.0,           1.0,  600.0, NULL,
                          NULL, NULL, 16,   1000,          10,   10000, 10.0,
                          60.0, NULL, NULL, WALQ_LOG_INFO, 0,    1,     0};

    o.group = "g";
    o.queues = queues;
    o.nqueues = 2;
    o.handler = WALQ_HANDLER_NOOP;
    return o;
}

static void assert_same_options(const walq_options *a, const walq_options *b)
{
    ck_assert_uint_eq(a->version, b->version);
    ck_assert_ptr_eq(a->source, b->source);
    ck_assert_ptr_eq(a->primary, b->primary);
    ck_assert_ptr_eq(a->group, b->group);
    ck_assert_ptr_eq(a->queues, b->queues);
    ck_assert_uint_eq(a->nqueues, b->nqueues);
    ck_assert_int_eq(a->handler, b->handler);
    ck_assert_ptr_eq(a->argv, b->argv);
    ck_assert_int_eq(a->concurrency, b->concurrency);
    ck_assert_int_eq(a->drain, b->drain);
    ck_assert_int_eq(a->timeout_ms, b->timeout_ms);
    ck_assert_int_eq(a->backoff_min_ms, b->backoff_min_ms);
    ck_assert_int_eq(a->backoff_max_ms, b->backoff_max_ms);
    ck_assert_ptr_eq(a->sql, b->sql);
    ck_assert(a->callback == b->callback);
    ck_assert_ptr_eq(a->callback_payload, b->callback_payload);
    ck_assert_int_eq(a->coprocess_inflight, b->coprocess_inflight);
    ck_assert_int_eq(a->batch_size, b->batch_size);
    ck_assert_int_eq(a->ack_delay_ms, b->ack_delay_ms);
    ck_assert_int_eq(a->max_in_flight, b->max_in_flight);
    ck_assert_int_eq(a->status_interval_ms, b->status_interval_ms);
    ck_assert_int_eq(a->timer_horizon_ms, b->timer_horizon_ms);
    ck_assert(a->log == b->log);
    ck_assert_ptr_eq(a->log_payload, b->log_payload);
    ck_assert_int_eq(a->log_level, b->log_level);
    ck_assert_int_eq(a->partition, b->partition);
    ck_assert_int_eq(a->partitions, b->partitions);
    ck_assert_int_eq(a->keep_outcomes, b->keep_outcomes);
}

/* walq_last_error() holds want, and a hint when hint is set. */
static void assert_error(const char *want, int hint)
{
    const char *msg = walq_last_error();

    ck_assert_msg(strstr(msg, want) != NULL, "message \"%s\" lacks \"%s\"", msg, want);
    if (hint)
        ck_assert_msg(strstr(msg, "\nHINT:  ") != NULL, "message \"%s\" has no hint", msg);
}

START_TEST(init_fills_the_defaults_of_the_macro)
{
    walq_options from_macro = WALQ_OPTIONS_INIT, from_function;

    /* Every field is written, whatever was there. */
    memset(&from_function, 0xa5, sizeof(from_function));
    ck_assert_int_eq(walq_options_init(&from_function, WALQ_OPTIONS_VERSION), 0);
    assert_same_options(&from_function, &from_macro);
    ck_assert_uint_eq(from_macro.version, 2);
    ck_assert_int_eq(from_macro.handler, WALQ_HANDLER_EXEC);
    ck_assert_int_eq(from_macro.concurrency, 1);
    ck_assert_int_eq(from_macro.timeout_ms, 0);
    ck_assert_int_eq(from_macro.backoff_min_ms, 1000);
    ck_assert_int_eq(from_macro.backoff_max_ms, 600000);
    ck_assert_int_eq(from_macro.coprocess_inflight, 16);
    ck_assert_int_eq(from_macro.batch_size, 1000);
    ck_assert_int_eq(from_macro.ack_delay_ms, 10);
    ck_assert_int_eq(from_macro.max_in_flight, 10000);
    ck_assert_int_eq(from_macro.status_interval_ms, 10000);
    ck_assert_int_eq(from_macro.timer_horizon_ms, 60000);
    ck_assert_int_eq(from_macro.log_level, WALQ_LOG_INFO);
    ck_assert_int_eq(from_macro.partitions, 1);
}
END_TEST

START_TEST(init_refuses_unknown_versions)
{
    static const unsigned int bad[] = {0, 1, WALQ_OPTIONS_VERSION + 1, UINT_MAX};
    walq_options o;
    char want[64];

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        ck_assert_int_eq(walq_options_init(&o, bad[i]), WALQ_EINVAL);
        snprintf(want, sizeof(want), "does not know options version %u", bad[i]);
        assert_error(want, 1);
    }
    ck_assert_int_eq(walq_options_init(NULL, WALQ_OPTIONS_VERSION), WALQ_EINVAL);
}
END_TEST

START_TEST(open_refuses_unknown_versions)
{
    walq_options o = valid_options();
    walq_consumer *c = (walq_consumer *)(void *)&o; /* not NULL: open must clear it */

    o.version = 0;
    ck_assert_int_eq(walq_consumer_open(&c, &o), WALQ_EINVAL);
    ck_assert_ptr_null(c);
    assert_error("options have version 0", 1);
    assert_error("walq_options_init()", 1);

    o.version = WALQ_OPTIONS_VERSION + 1;
    ck_assert_int_eq(walq_consumer_open(&c, &o), WALQ_EINVAL);
    assert_error("options have version 3, but this library knows versions 1 to 2", 1);
    assert_error("newer walq.h", 1);

    ck_assert_int_eq(walq_consumer_open(&c, NULL), WALQ_EINVAL);
    assert_error("no options given", 1);

    o.version = WALQ_OPTIONS_VERSION;
    ck_assert_int_eq(walq_consumer_open(&c, &o), 0);
    ck_assert_ptr_nonnull(c);
    walq_consumer_free(c);
}
END_TEST

#if UINTPTR_MAX == UINT64_MAX
/* The layout of version 1 on LP64, as walq 0.1's walq.h compiled. */
START_TEST(v1_layout_is_the_old_one)
{
    ck_assert_uint_eq(offsetof(walq__options_v1, handler), 48);
    ck_assert_uint_eq(offsetof(walq__options_v1, timeout), 72);
    ck_assert_uint_eq(offsetof(walq__options_v1, callback), 104);
    ck_assert_uint_eq(offsetof(walq__options_v1, ack_delay_ms), 128);
    ck_assert_uint_eq(offsetof(walq__options_v1, status_interval), 136);
    ck_assert_uint_eq(offsetof(walq__options_v1, log), 152);
    ck_assert_uint_eq(offsetof(walq__options_v1, log_level), 168);
    ck_assert_uint_eq(offsetof(walq__options_v1, keep_outcomes), 180);
    ck_assert_uint_eq(sizeof(walq__options_v1), 184);
}
END_TEST
#endif

static void v1_log(void *arg, walq_log_level level, const char *msg);
static walq_verdict v1_handle(void *arg, const walq_job *job, char *err, size_t errlen);

START_TEST(v1_is_converted)
{
    walq__options_v1 v1 = v1_defaults();
    walq__options conf;
    int token;

    v1.timeout = 2.5;
    v1.backoff_min = 0.01;
    v1.backoff_max = 0.1;
    v1.status_interval = 0.5;
    v1.timer_horizon = 0.1;
    v1.ack_delay_ms = 25;
    v1.concurrency = 3;
    v1.batch_size = 7;
    v1.handler = WALQ_HANDLER_CALLBACK;
    v1.callback = v1_handle;
    v1.callback_arg = &token;
    v1.log = v1_log;
    v1.log_arg = &token;
    v1.log_level = WALQ_LOG_DEBUG;
    v1.partition = 1;
    v1.partitions = 4;
    v1.keep_outcomes = 1;
    ck_assert_int_eq(walq__options_load(&conf, (const walq_options *)(const void *)&v1), 0);
    ck_assert_uint_eq(conf.version, 1);
    ck_assert_uint_eq(conf.o.version, WALQ_OPTIONS_VERSION);
    ck_assert_int_eq(conf.o.timeout_ms, 2500);
    ck_assert_int_eq(conf.o.backoff_min_ms, 10);
    ck_assert_int_eq(conf.o.backoff_max_ms, 100);
    ck_assert_int_eq(conf.o.status_interval_ms, 500);
    ck_assert_int_eq(conf.o.timer_horizon_ms, 100);
    ck_assert_int_eq(conf.o.ack_delay_ms, 25);
    ck_assert_int_eq(conf.o.concurrency, 3);
    ck_assert_int_eq(conf.o.batch_size, 7);
    ck_assert_int_eq(conf.o.coprocess_inflight, 16);
    ck_assert_int_eq(conf.o.max_in_flight, 10000);
    ck_assert_ptr_eq(conf.o.group, v1.group);
    ck_assert_ptr_eq(conf.o.queues, queues);
    ck_assert_uint_eq(conf.o.nqueues, 2);
    ck_assert_int_eq(conf.o.handler, WALQ_HANDLER_CALLBACK);
    ck_assert_int_eq(conf.o.log_level, WALQ_LOG_DEBUG);
    ck_assert_int_eq(conf.o.partition, 1);
    ck_assert_int_eq(conf.o.partitions, 4);
    ck_assert_int_eq(conf.o.keep_outcomes, 1);
    /* The old callbacks are kept apart, never called as new ones. */
    ck_assert(conf.o.callback == NULL);
    ck_assert(conf.o.log == NULL);
    ck_assert(conf.callback_v1 == v1_handle);
    ck_assert(conf.log_v1 == v1_log);
    ck_assert_ptr_eq(conf.o.callback_payload, &token);
    ck_assert_ptr_eq(conf.o.log_payload, &token);
}
END_TEST

START_TEST(v1_defaults_become_v2_defaults)
{
    walq__options_v1 v1 = v1_defaults();
    walq_options v2 = valid_options();
    walq__options conf;

    ck_assert_int_eq(walq__options_load(&conf, (const walq_options *)(const void *)&v1), 0);
    assert_same_options(&conf.o, &v2);
}
END_TEST

START_TEST(v1_short_durations_stay_positive)
{
    walq__options_v1 v1 = v1_defaults();
    walq__options conf;

    /* 0.1 ms rounds to 0, which would mean "no limit". */
    v1.timeout = 0.0001;
    v1.backoff_min = 0.0004;
    v1.backoff_max = 0.0016;
    ck_assert_int_eq(walq__options_from_v1(&conf, &v1), 0);
    ck_assert_int_eq(conf.o.timeout_ms, 1);
    ck_assert_int_eq(conf.o.backoff_min_ms, 1);
    ck_assert_int_eq(conf.o.backoff_max_ms, 2);
}
END_TEST

START_TEST(v1_is_opened)
{
    walq__options_v1 v1 = v1_defaults();
    walq_consumer *c = NULL;

    ck_assert_int_eq(walq_consumer_open(&c, (const walq_options *)(const void *)&v1), 0);
    ck_assert_ptr_nonnull(c);
    walq_consumer_free(c);
}
END_TEST

/* The stats of a consumer that never ran; the tests fill st with ones first. */
static int stats_are_zero(const walq_stats *st)
{
    return st->received == 0 && st->done == 0 && st->retried == 0 && st->dead == 0 &&
           st->acks == 0 && st->reconnects == 0 && st->confirmed_lsn == 0;
}

START_TEST(stats_in_either_order)
{
    walq__options_v1 v1 = v1_defaults();
    walq_options v2 = valid_options();
    walq_consumer *old_c = NULL, *new_c = NULL;
    walq_stats st;

    ck_assert_int_eq(walq_consumer_open(&old_c, (const walq_options *)(const void *)&v1), 0);
    ck_assert_int_eq(walq_consumer_open(&new_c, &v2), 0);

    /* How a program built against version 1's walq.h calls it: (c, out). */
    memset(&st, 0xff, sizeof(st));
    walq_consumer_stats((walq_stats *)(void *)old_c, (const walq_consumer *)(void *)&st);
    ck_assert(stats_are_zero(&st));

    memset(&st, 0xff, sizeof(st));
    walq_consumer_stats(&st, old_c);
    ck_assert(stats_are_zero(&st));
    memset(&st, 0xff, sizeof(st));
    walq_consumer_stats(&st, new_c);
    ck_assert(stats_are_zero(&st));

    walq_consumer_free(old_c);
    ck_assert(!walq__v1_consumer_is(old_c));
    walq_consumer_free(new_c);
}
END_TEST

START_TEST(v1_bad_durations_are_refused)
{
    static const struct {
        double timeout, backoff_min, backoff_max, status_interval, timer_horizon;
        const char *want;
    } cases[] = {
        {-1, 1, 600, 10, 60, "timeout must be between 0 and 10000000 seconds, not -1"},
        {NAN, 1, 600, 10, 60, "timeout must be between 0 and 10000000 seconds, not nan"},
        {1e12, 1, 600, 10, 60, "timeout must be between 0 and 10000000 seconds, not 1e+12"},
        {0, -0.5, 600, 10, 60, "backoff_min must be between 0 and 10000000 seconds"},
        {0, 1, INFINITY, 10, 60, "backoff_max must be between 0 and 10000000 seconds"},
        {0, 1, 600, -10, 60, "status_interval must be between 0 and 10000000 seconds"},
        {0, 1, 600, 0, 60, "status_interval_ms must be between 1 and"},
        {0, 1, 600, 10, 0.05, "timer_horizon_ms must be between 100 and"},
        {0, 5, 2, 10, 60, "backoff_max_ms (2000) must not be less than backoff_min_ms (5000)"},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        walq__options_v1 v1 = v1_defaults();
        walq_consumer *c = NULL;

        v1.timeout = cases[i].timeout;
        v1.backoff_min = cases[i].backoff_min;
        v1.backoff_max = cases[i].backoff_max;
        v1.status_interval = cases[i].status_interval;
        v1.timer_horizon = cases[i].timer_horizon;
        ck_assert_int_eq(walq_consumer_open(&c, (const walq_options *)(const void *)&v1),
                         WALQ_EINVAL);
        ck_assert_ptr_null(c);
        assert_error(cases[i].want, 0);
    }
}
END_TEST

static walq_verdict v2_handle(char *err, size_t errlen, const walq_job *job, void *payload);

/*
 * Makes valid options invalid in the i-th way, and returns what walq must
 * say of it; NULL past the last way.
 */
static const char *make_invalid(walq_options *o, int i)
{
    static const char *const empty_queue[] = {"q1", ""};
    static const char *const unknown_argv[] = {"walq-no-such-program", NULL};

    switch (i) {
    case 0:
        o->group = NULL;
        return "invalid consumer group name \"\"";
    case 1:
        o->group = "Bad";
        return "invalid consumer group name \"Bad\"";
    case 2:
        o->nqueues = 0;
        return "consumer group \"g\" has no queues";
    case 3:
        o->queues = NULL;
        return "consumer group \"g\" has no queues";
    case 4:
        o->queues = empty_queue;
        return "queue names must not be empty";
    case 5:
        o->handler = WALQ_HANDLER_EXEC;
        return "no handler program given";
    case 6:
        o->handler = WALQ_HANDLER_EXEC;
        o->argv = missing_argv;
        return "handler program \"/nonexistent/walq-handler\" is not executable";
    case 7:
        o->handler = WALQ_HANDLER_EXEC;
        o->argv = unknown_argv;
        return "handler program \"walq-no-such-program\" was not found in PATH";
    case 8:
        o->handler = WALQ_HANDLER_COPROCESS;
        o->argv = true_argv;
        o->coprocess_inflight = 0;
        return "coprocess_inflight must be between 1 and 100000, not 0";
    case 9:
        o->handler = WALQ_HANDLER_SQL;
        return "the sql handler needs a statement";
    case 10:
        o->handler = WALQ_HANDLER_CALLBACK;
        return "the callback handler needs a function";
    case 11:
        o->handler = (walq_handler_kind)99;
        return "unknown handler kind 99";
    case 12:
        o->partition = 2;
        o->partitions = 2;
        return "invalid partition 2 of 2";
    case 13:
        o->partitions = 2000;
        return "invalid partition 0 of 2000";
    case 14:
        o->concurrency = 0;
        return "concurrency must be between 1 and 4096, not 0";
    case 15:
        o->concurrency = 5000;
        return "concurrency must be between 1 and 4096, not 5000";
    case 16:
        o->batch_size = 0;
        return "batch_size must be at least 1, not 0";
    case 17:
        o->max_in_flight = -1;
        return "max_in_flight must be at least 1, not -1";
    case 18:
        o->timeout_ms = -1;
        return "timeout_ms must be between 0 and 10000000000, not -1";
    case 19:
        o->timeout_ms = WALQ__OPTIONS_MAX_MS + 1;
        return "timeout_ms must be between 0 and 10000000000, not 10000000001";
    case 20:
        o->backoff_min_ms = -1;
        return "backoff_min_ms must be between 0 and 10000000000, not -1";
    case 21:
        o->backoff_max_ms = -1;
        return "backoff_max_ms must be between 0 and 10000000000, not -1";
    case 22:
        o->backoff_max_ms = 999;
        return "backoff_max_ms (999) must not be less than backoff_min_ms (1000)";
    case 23:
        o->ack_delay_ms = -1;
        return "ack_delay_ms must be between 0 and 10000000000, not -1";
    case 24:
        o->status_interval_ms = 0;
        return "status_interval_ms must be between 1 and 10000000000, not 0";
    case 25:
        o->timer_horizon_ms = 99;
        return "timer_horizon_ms must be between 100 and 10000000000, not 99";
    case 26: {
        static const char *const bad[] = {"PGHOST", "PG PASSWORD", NULL};

        o->pass_env = bad;
        return "invalid pass_env name \"PG PASSWORD\"";
    }
    case 27: {
        static const char *const bad[] = {"", NULL};

        o->pass_env = bad;
        return "invalid pass_env name \"\"";
    }
    case 28: {
        static const char *const bad[] = {"1PG", NULL};

        o->pass_env = bad;
        return "invalid pass_env name \"1PG\"";
    }
    case 29: {
        static const char *const bad[] = {"PG**", NULL};

        o->pass_env = bad;
        return "invalid pass_env name \"PG**\"";
    }
    }
    return NULL;
}

#define N_INVALID 30

START_TEST(invalid_values_are_refused)
{
    walq_options o = valid_options();
    walq_consumer *c = (walq_consumer *)(void *)&o; /* not NULL: open must clear it */
    const char *want = make_invalid(&o, _i);

    ck_assert_ptr_nonnull(want);
    ck_assert_msg(walq_consumer_open(&c, &o) == WALQ_EINVAL, "change %d was accepted", _i);
    ck_assert_ptr_null(c);
    assert_error(want, 0);
}
END_TEST

START_TEST(every_invalid_value_is_tried)
{
    walq_options o = valid_options();

    ck_assert_ptr_null(make_invalid(&o, N_INVALID));
}
END_TEST

START_TEST(limits_are_accepted)
{
    walq_options o = valid_options();
    walq_consumer *c = NULL;

    o.handler = WALQ_HANDLER_CALLBACK;
    o.callback = v2_handle;
    o.timeout_ms = WALQ__OPTIONS_MAX_MS;
    o.backoff_min_ms = 0;
    o.backoff_max_ms = 0;
    o.ack_delay_ms = 0;
    o.status_interval_ms = 1;
    o.timer_horizon_ms = 100;
    o.partition = 1023;
    o.partitions = 1024;
    ck_assert_int_eq(walq_consumer_open(&c, &o), 0);
    walq_consumer_free(c);
}
END_TEST

/* Names, and prefixes of names with "*", are taken. */
START_TEST(pass_env_names_are_accepted)
{
    static const char *const pass[] = {"PGPASSWORD", "PGSSL*", "PG*", "_X1", "pgpass", NULL};
    walq_options o = valid_options();
    walq_consumer *c = NULL;

    o.pass_env = pass;
    ck_assert_int_eq(walq_consumer_open(&c, &o), 0);
    walq_consumer_free(c);
}
END_TEST

/* ------------------------------------------------------------------ */
/* Callbacks of either version                                         */

static struct {
    void *arg;
    const walq_job *job;
    size_t errlen;
    walq_log_level level;
    char msg[256];
    int calls;
    walq_verdict answer;
    const char *err; /* what the handler writes into err, or NULL */
} seen;

static struct {
    walq__verdict v;
    char err[1100];
    int calls;
} ended;

static void v1_log(void *arg, walq_log_level level, const char *msg)
{
    seen.arg = arg;
    seen.level = level;
    snprintf(seen.msg, sizeof(seen.msg), "%s", msg);
    seen.calls++;
}

static void v2_log(walq_log_level level, const char *msg, void *payload)
{
    v1_log(payload, level, msg);
}

static walq_verdict v1_handle(void *arg, const walq_job *job, char *err, size_t errlen)
{
    seen.arg = arg;
    seen.job = job;
    seen.errlen = errlen;
    seen.calls++;
    if (seen.err != NULL)
        snprintf(err, errlen, "%s", seen.err);
    return seen.answer;
}

static walq_verdict v2_handle(char *err, size_t errlen, const walq_job *job, void *payload)
{
    return v1_handle(payload, job, err, errlen);
}

static int on_done(void *arg, walq__job *job, walq__verdict v, const char *err)
{
    (void)arg;
    (void)job;
    ended.v = v;
    snprintf(ended.err, sizeof(ended.err), "%s", err ? err : "");
    ended.calls++;
    return 0;
}

/* Runs one job through a callback handler whose function answers answer. */
static void run_callback(walq_handler_fn fn, walq__handler_fn_v1 fn_v1, int answer, const char *err)
{
    static int token;
    walq__handler *h;
    walq__job job;

    memset(&job, 0, sizeof(job));
    job.id = 42;
    job.queue = "q1";
    job.payload = "{}";
    job.payload_len = 2;
    job.attempts = 1;
    job.pending_idx = -1;
    memset(&seen, 0, sizeof(seen));
    memset(&ended, 0, sizeof(ended));
    seen.answer = (walq_verdict)answer;
    seen.err = err;
    ck_assert_int_eq(walq__handler_callback_new(&h, fn, fn_v1, &token), 0);
    h->done = on_done;
    ck_assert_int_eq(h->ops->start(h, &job, 0), 0);
    h->ops->free(h);
    ck_assert_int_eq(seen.calls, 1);
    ck_assert_int_eq(ended.calls, 1);
    ck_assert_ptr_eq(seen.arg, &token);
    ck_assert_ptr_eq(seen.job, &job);
    ck_assert_uint_gt(seen.errlen, 0);
}

START_TEST(v1_callback_gets_the_old_order)
{
    run_callback(NULL, v1_handle, WALQ__JOB_DONE_V1, NULL);
    ck_assert_int_eq(ended.v, WALQ__VERDICT_DONE);

    run_callback(NULL, v1_handle, WALQ__JOB_RETRY_V1, NULL);
    ck_assert_int_eq(ended.v, WALQ__VERDICT_RETRY);
    ck_assert_str_eq(ended.err, "handler asked for a retry");

    /* Version 1's WALQ_JOB_FAIL is a failed attempt that is retried, not a death. */
    run_callback(NULL, v1_handle, WALQ__JOB_FAIL_V1, "smtp said 451");
    ck_assert_int_eq(ended.v, WALQ__VERDICT_FAIL);
    ck_assert_str_eq(ended.err, "smtp said 451");

    run_callback(NULL, v1_handle, WALQ__JOB_FAIL_V1, NULL);
    ck_assert_int_eq(ended.v, WALQ__VERDICT_FAIL);
    ck_assert_str_eq(ended.err, "handler failed");

    /* 3 meant nothing in version 1: a failure, as it was then. */
    run_callback(NULL, v1_handle, 3, NULL);
    ck_assert_int_eq(ended.v, WALQ__VERDICT_FAIL);
}
END_TEST

START_TEST(v2_callback_gets_the_new_order)
{
    run_callback(v2_handle, NULL, WALQ_JOB_DONE, "ignored");
    ck_assert_int_eq(ended.v, WALQ__VERDICT_DONE);
    ck_assert_str_eq(ended.err, "");

    run_callback(v2_handle, NULL, WALQ_JOB_RETRY, "busy");
    ck_assert_int_eq(ended.v, WALQ__VERDICT_RETRY);
    ck_assert_str_eq(ended.err, "busy");

    run_callback(v2_handle, NULL, WALQ_JOB_DEAD, "no such user");
    ck_assert_int_eq(ended.v, WALQ__VERDICT_DEAD);
    ck_assert_str_eq(ended.err, "no such user");

    run_callback(v2_handle, NULL, WALQ_JOB_DEAD, NULL);
    ck_assert_int_eq(ended.v, WALQ__VERDICT_DEAD);
    ck_assert_str_eq(ended.err, "handler gave up on the job");

    run_callback(v2_handle, NULL, 7, NULL);
    ck_assert_int_eq(ended.v, WALQ__VERDICT_FAIL);
    ck_assert_str_eq(ended.err, "handler returned unknown verdict 7");
}
END_TEST

START_TEST(overlong_error_is_cut)
{
    char long_err[2000];

    memset(long_err, 'x', sizeof(long_err) - 1);
    long_err[sizeof(long_err) - 1] = '\0';
    run_callback(v2_handle, NULL, WALQ_JOB_RETRY, long_err);
    ck_assert_uint_eq(strlen(ended.err), seen.errlen - 1);
}
END_TEST

START_TEST(log_callbacks_of_either_version)
{
    int token;
    walq__log lg = {.level = WALQ_LOG_INFO};

    snprintf(lg.prefix, sizeof(lg.prefix), "group \"g\": ");
    lg.arg = &token;
    ck_assert(!walq__log_on(&lg, WALQ_LOG_ERROR));

    lg.fn_v1 = v1_log;
    memset(&seen, 0, sizeof(seen));
    walq__warn(&lg, "slot \"%s\" is gone", "walq_g");
    walq__debug(&lg, "%s", "below the level");
    ck_assert_int_eq(seen.calls, 1);
    ck_assert_ptr_eq(seen.arg, &token);
    ck_assert_int_eq(seen.level, WALQ_LOG_WARNING);
    ck_assert_str_eq(seen.msg, "group \"g\": slot \"walq_g\" is gone");

    lg.fn_v1 = NULL;
    lg.fn = v2_log;
    memset(&seen, 0, sizeof(seen));
    walq__err(&lg, "could not connect: %s", "refused");
    ck_assert_int_eq(seen.calls, 1);
    ck_assert_ptr_eq(seen.arg, &token);
    ck_assert_int_eq(seen.level, WALQ_LOG_ERROR);
    ck_assert_str_eq(seen.msg, "group \"g\": could not connect: refused");
}
END_TEST

static Suite *options_suite(void)
{
    Suite *s = suite_create("options");
    TCase *tc = tcase_create("core");

    tcase_add_test(tc, init_fills_the_defaults_of_the_macro);
    tcase_add_test(tc, pass_env_names_are_accepted);
    tcase_add_test(tc, init_refuses_unknown_versions);
    tcase_add_test(tc, open_refuses_unknown_versions);
#if UINTPTR_MAX == UINT64_MAX
    tcase_add_test(tc, v1_layout_is_the_old_one);
#endif
    tcase_add_test(tc, v1_is_converted);
    tcase_add_test(tc, v1_defaults_become_v2_defaults);
    tcase_add_test(tc, v1_short_durations_stay_positive);
    tcase_add_test(tc, v1_is_opened);
    tcase_add_test(tc, stats_in_either_order);
    tcase_add_test(tc, v1_bad_durations_are_refused);
    tcase_add_loop_test(tc, invalid_values_are_refused, 0, N_INVALID);
    tcase_add_test(tc, every_invalid_value_is_tried);
    tcase_add_test(tc, limits_are_accepted);
    tcase_add_test(tc, v1_callback_gets_the_old_order);
    tcase_add_test(tc, v2_callback_gets_the_new_order);
    tcase_add_test(tc, overlong_error_is_cut);
    tcase_add_test(tc, log_callbacks_of_either_version);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(options_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
