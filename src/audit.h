/*
 * The audit trail: every insert, update and delete of walq.jobs and
 * walq.outcomes, in commit order, read from a replication slot of its own
 * ("walqaudit_<group>") and written as JSON lines to a file or as rows of an
 * append-only table, exactly once across restarts.
 */
#ifndef WALQ_AUDIT_H
#define WALQ_AUDIT_H

#include <signal.h>
#include <stdint.h>

#include "common.h"

typedef struct walq__audit_options {
    const char *source;     /* conninfo of the server with the slot; NULL: libpq environment */
    const char *target;     /* conninfo of the server of `into`; NULL: libpq environment */
    const char *group;      /* audit group, ^[a-z0-9_]{1,50}$ */
    const char *output;     /* file, or "-" for standard output; NULL with into */
    const char *into;       /* table, [schema.]name; NULL with output */
    int drain;              /* stop once caught up with the WAL position at start */
    int file_mode;          /* permissions of an output file the audit creates; 0: 0600 */
    double status_interval; /* seconds between standby status updates at most */
    walq_log_fn log;
    void *log_arg;
    walq_log_level log_level;
    /* Told what the audit does, as walq_consumer_watch() tells a consumer; NULL: nothing. */
    walq_watch_fn watch;
    void *watch_arg;
    int64_t watch_interval_ms;
} walq__audit_options;

typedef struct walq__audit_stats {
    uint64_t transactions; /* transactions with changes, written durably */
    uint64_t changes;      /* their changes */
    uint64_t flushes;      /* fsyncs of the file, or commits into the table */
    uint64_t reconnects;
    uint64_t confirmed_lsn;
} walq__audit_stats;

typedef struct walq__audit walq__audit;

/*
 * Checks the options and copies them; nothing is opened yet.  WALQ_EINVAL
 * with walq_last_error() saying what is wrong.
 */
int walq__audit_open(walq__audit **out, const walq__audit_options *opts);

/*
 * Runs until walq__audit_stop() (or, with drain, until caught up).  0 after a
 * clean stop; otherwise a WALQ_E* code and walq_last_error().
 */
int walq__audit_run(walq__audit *a);

/*
 * Asks a running audit to stop: it finishes the transaction being received,
 * writes what is whole, confirms it and returns; with immediate set it
 * returns at once.  Safe to call from a signal handler.
 */
void walq__audit_stop(walq__audit *a, int immediate);

/*
 * A reload (SIGHUP): the running audit logs at log_level from its loop's
 * next turn.  Safe from any thread, not from a signal handler.
 */
void walq__audit_reconfigure(walq__audit *a, walq_log_level log_level);

void walq__audit_stats_get(const walq__audit *a, walq__audit_stats *out);

void walq__audit_free(walq__audit *a);

#endif
