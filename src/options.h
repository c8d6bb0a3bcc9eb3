/*
 * The consumer's options: the versions walq_consumer_open() accepts, their
 * conversion to the current one, and the checks of their values.
 */
#ifndef WALQ_OPTIONS_H
#define WALQ_OPTIONS_H

#include <stddef.h>
#include <stdint.h>

#include "walq.h"

/* The longest duration an option takes: 10^7 seconds, about 115 days. */
#define WALQ__OPTIONS_MAX_MS INT64_C(10000000000)

/* Version 1's callbacks, which took their payload first. */
typedef void (*walq__log_fn_v1)(void *arg, walq_log_level level, const char *msg);
typedef walq_verdict (*walq__handler_fn_v1)(void *arg, const walq_job *job, char *err,
                                            size_t errlen);

/* Version 1's verdicts: FAIL meant what WALQ_JOB_RETRY means now. */
#define WALQ__JOB_DONE_V1  0
#define WALQ__JOB_RETRY_V1 1
#define WALQ__JOB_FAIL_V1  2

/*
 * walq_options as walq.h declared it in version 1, field for field, so that
 * programs built against that header keep working.  Never change it.
 */
typedef struct walq__options_v1 {
    unsigned int version;
    const char *source;
    const char *primary;
    const char *group;
    const char *const *queues;
    size_t nqueues;
    walq_handler_kind handler;
    const char *const *argv;
    int concurrency;
    int drain;
    double timeout;     /* seconds */
    double backoff_min; /* seconds */
    double backoff_max; /* seconds */
    const char *sql;
    walq__handler_fn_v1 callback;
    void *callback_arg;
    int coprocess_inflight;
    int batch_size;
    int ack_delay_ms;
    int max_in_flight;
    double status_interval; /* seconds */
    double timer_horizon;   /* seconds */
    walq__log_fn_v1 log;
    void *log_arg;
    walq_log_level log_level;
    int partition;
    int partitions;
    int keep_outcomes;
} walq__options_v1;

/*
 * Options as the library keeps them: the current struct, the version the
 * caller wrote for, and a version-1 caller's callbacks, which must be called
 * with the old argument order (o.log and o.callback are NULL then).
 */
typedef struct walq__options {
    walq_options o;
    unsigned int version;
    walq__log_fn_v1 log_v1;
    walq__handler_fn_v1 callback_v1;
} walq__options;

/*
 * Reads the caller's options, of any version walq_consumer_open() accepts,
 * into out and checks them.  WALQ_EINVAL with walq_last_error() saying what
 * is wrong and how to fix it.  Strings stay borrowed from the caller.
 */
int walq__options_load(walq__options *out, const walq_options *opts);

/* Converts version-1 options; durations in seconds become milliseconds. */
int walq__options_from_v1(walq__options *out, const walq__options_v1 *v1);

/* Checks every value, as walq__options_load() does after converting. */
int walq__options_check(const walq__options *opts);

/*
 * The consumers opened with version-1 options.  Version 1 declared
 * walq_consumer_stats(c, out), the other way round; a call whose first
 * pointer is one of these consumers comes from a version-1 program.  add
 * returns WALQ_ENOMEM or 0; del of a consumer not added does nothing.
 */
int walq__v1_consumer_add(const walq_consumer *c);
void walq__v1_consumer_del(const walq_consumer *c);
int walq__v1_consumer_is(const void *p);

#endif
