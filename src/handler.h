/*
 * The run stage's interface.  Each kind of handler (exec, coprocess, C
 * callback, sql, noop) implements these operations; the consumer only sees
 * them.  The sql handler also runs its jobs inside the ack transaction,
 * through the hook below.
 */
#ifndef WALQ_HANDLER_H
#define WALQ_HANDLER_H

#include <poll.h>
#include <stddef.h>
#include <stdint.h>
#include <libpq-fe.h>

#include "common.h"
#include "options.h"
#include "run.h"
#include "schedule.h"

typedef struct walq__handler walq__handler;

/* What a reload may change of a running handler. */
typedef struct walq__handler_limits {
    int concurrency;    /* exec: processes at once */
    int64_t timeout_us; /* exec, coprocess: 0 for no limit */
    int batch_size;     /* sql: jobs in one ack transaction at most */
    int64_t delay_us;   /* sql: the longest a job waits for its transaction */
} walq__handler_limits;

typedef struct walq__handler_ops {
    /* Can another job start now? */
    int (*has_room)(walq__handler *h);
    /*
     * Starts job.  The handler reports the end through h->done, possibly
     * before start returns.  A non-zero return is a failure of the consumer
     * (out of memory), not of the job.
     */
    int (*start)(walq__handler *h, walq__job *job, int64_t now);
    /*
     * Fills at most room poll entries with what the handler waits for and
     * lowers *wake_at (monotonic microseconds, 0: none) to its next deadline.
     * Returns how many entries it used.
     */
    size_t (*fds)(walq__handler *h, struct pollfd *pfd, size_t room, int64_t now, int64_t *wake_at);
    /* The most poll entries fds() ever uses. */
    size_t (*max_fds)(walq__handler *h);
    /* Makes progress after poll and reports finished jobs. */
    int (*process)(walq__handler *h, int64_t now);
    /* Kills everything running; each job comes back through h->abandon. */
    void (*kill_all)(walq__handler *h);
    /* Jobs running now. */
    size_t (*running)(walq__handler *h);
    void (*free)(walq__handler *h);
    /*
     * Kills what has run past its timeout, reporting nothing: the consumer
     * calls it while it waits on a server, and process() reports the kills
     * afterwards.  NULL where nothing can run past a timeout.
     */
    void (*kill_overdue)(walq__handler *h, int64_t now);
    /*
     * A reload's new limits, for what starts from now on (a running job
     * keeps the deadline it started with).  0, WALQ_ENOMEM, or 1 when the
     * concurrency cannot change while running (a coprocess handler's workers
     * are started with it); NULL where no limit applies.
     */
    int (*set_limits)(walq__handler *h, const walq__handler_limits *lim);
} walq__handler_ops;

/*
 * A handler whose jobs run inside the ack transaction (the sql handler):
 * started jobs wait for it, and their effects commit with their outcomes.
 */
typedef struct walq__ack_hook {
    /* Jobs waiting for the next ack transaction. */
    size_t (*waiting)(walq__handler *h);
    /* Should the ack transaction be written now for them? */
    int (*due)(walq__handler *h, int64_t now);
    /*
     * Runs them inside the transaction open on conn, reporting each job's
     * attempt through h->decided (or h->recorded, for a job the group
     * finished already) before the transaction commits.
     */
    int (*run)(walq__handler *h, PGconn *conn);
    /* The transaction committed (their outcomes stand) or failed (they run again). */
    void (*end)(walq__handler *h, int committed);
} walq__ack_hook;

struct walq__handler {
    const walq__handler_ops *ops;
    const walq__ack_hook *in_ack; /* NULL but for the sql handler */
    /* Where finished jobs go; the consumer records the outcome. */
    int (*done)(void *arg, walq__job *job, walq__verdict v, const char *err);
    /*
     * Where jobs run inside the ack transaction go: the outcome joins the
     * batch being written, and holds only if the transaction commits.
     */
    int (*decided)(void *arg, walq__job *job, walq__verdict v, const char *err);
    /*
     * A job of those whose final outcome the group recorded already (an
     * earlier try committed): it did not run, and nothing more is written.
     */
    int (*recorded)(void *arg, walq__job *job, walq__status st);
    /* Where jobs of a kill_all go; their outcome is not recorded. */
    void (*abandon)(void *arg, walq__job *job);
    void *arg;
    const walq__log *log;
    const char *group;
    const char *const *pass_env; /* walq_options.pass_env, the consumer's copy */
};

/* exec: argv per job, at most concurrency at once, timeout in seconds (0: none). */
int walq__handler_exec_new(walq__handler **out, char *const *argv, int concurrency, double timeout);

/*
 * coprocess: `workers` long-lived processes of argv speaking JSON lines, each
 * with up to `inflight` jobs at once; timeout in seconds (0: none).
 */
int walq__handler_coproc_new(walq__handler **out, char *const *argv, int workers, int inflight,
                             double timeout);

/*
 * sql: the statement run per job inside the ack transaction, at most
 * batch_size jobs in one, which waits at most delay_us for more.
 */
int walq__handler_sql_new(walq__handler **out, const char *group, const char *sql, int batch_size,
                          int64_t delay_us);

/* noop: every job done at once. */
int walq__handler_noop_new(walq__handler **out);

/*
 * callback: the C API's handler function, called in the consumer's thread
 * with payload.  fn_v1, when fn is NULL, is a version-1 caller's function:
 * payload first, and its verdict 2 (WALQ_JOB_FAIL) is a retry.
 */
int walq__handler_callback_new(walq__handler **out, walq_handler_fn fn, walq__handler_fn_v1 fn_v1,
                               void *payload);

#endif
