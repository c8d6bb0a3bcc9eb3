/*
 * The consumer: wires the stages together.
 *
 *   stream -> decode -> route -> schedule -> run -> ack -> confirm
 *
 * One thread, one poll loop.  The slot's confirmed position only moves past
 * transactions all of whose jobs have an outcome committed on the primary.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ack.h"
#include "common.h"
#include "db.h"
#include "decode.h"
#include "lsn.h"
#include "handler.h"
#include "options.h"
#include "run.h"
#include "route.h"
#include "schedule.h"
#include "stream.h"

/* Rows fetched from the backfill cursor at a time. */
#define BACKFILL_PAGE 1000
/* Stream messages handled before the loop looks at everything else again. */
#define READ_BURST 2000

struct walq_consumer {
    walq_options o;
    char *source, *primary, *group;
    char **queues;
    char **argv;
    char *sql;
    char slot[64];
    int partition, partitions; /* this reader takes the jobs of one partition */
    int64_t epoch;             /* of the reader's row when this process took it */
    int fenced;                /* another process had the reader meanwhile: start over */
    int standby;               /* the source is a hot standby */
    walq__log log;
    volatile sig_atomic_t stop_req; /* 1: drain and stop; 2: stop at once */
    int wake[2];
    char errmsg[2048];
    walq_stats stats;

    PGconn *pconn; /* primary: outcomes, cursor, group lock */
    PGconn *sconn; /* source, plain SQL: checks and the backfill cursor */
    walq__stream st;
    walq__decoder *dec;

    walq__heap ready, timers;
    walq__idset live; /* ids of the jobs in memory: never two copies of one */
    walq__txnq txq;
    walq__ack ack;
    walq__handler *h; /* the run stage; NULL for the sql handler */
    walq__job **sqlq; /* sql handler: jobs for the next ack transaction */
    size_t nsql, sqlcap;
    int64_t sql_oldest;
    int flush_failed;  /* an ack transaction failed: hold confirmations back */
    int slot_gone;     /* the slot was lost while streaming: start over */
    int64_t status_us; /* status update interval, within the server's timeout */
    /* The options' durations the loop uses, in microseconds. */
    int64_t ack_delay_us, status_interval_us;
    /*
     * Scheduled jobs due before timers_until are all in memory; later ones
     * may live only in the table (timers_offloaded) and are loaded as their
     * time comes near, so far-future jobs cost no memory.
     */
    int64_t timers_until;
    int timers_offloaded;
    int64_t horizon_us;
    size_t in_memory;    /* ready, running and final-but-unacked jobs */
    size_t retry_timers; /* timers that are retries, which --drain waits for */
    uint64_t seq, rng;

    /* Stream position. */
    uint64_t last_end;  /* end of the last whole transaction received */
    uint64_t recv_lsn;  /* furthest position the server told us about */
    uint64_t durable;   /* what may be confirmed: recorded on the primary */
    uint64_t confirmed; /* what the last status update said */
    walq__txn *cur;     /* transaction being received, NULL between them */
    uint64_t cur_end;
    size_t cur_inserts;
    int skip_cur;
    size_t resume_skip; /* inserts of cur taken before a lost connection */
    int64_t next_status;
    int reply_now;
    int64_t next_ping; /* --drain asks the server where it is when idle */

    /* Set-up and recovery. */
    int backfilling;
    walq__txn *bf_txn;
    uint64_t sync_end; /* consistent point the cursor must be written past, or 0 */
    int64_t *skip;     /* sorted ids recorded beyond the cursor */
    size_t nskip;
    uint64_t drain_target;
    int64_t stream_retry_at, primary_retry_at;
    int stream_failures, primary_failures;

    /*
     * The outcome horizon (sql/005_outcome_horizon.sql): horizon commands
     * seen in the stream and not yet passed by the cursor, the reader's
     * horizon for the next ack, and the making of the next command.
     */
    struct {
        uint64_t lsn;    /* end of the command's transaction */
        int64_t last_id; /* every job up to it is in the stream before */
    } marks[16];
    size_t nmarks;
    int64_t done_below;         /* every job of the reader below it has an outcome */
    int64_t done_below_written; /* as far as the acks committed so far say */
    int compact_due;            /* done_below_written moved: compact the outcomes */
    int mark_pending;           /* walq.horizon_begin() answered; horizon_mark() next */
    char mark_last_id[32];
    char *mark_lockers;
    uint64_t mark_activity; /* outcomes recorded when the last command was made */
    int64_t next_mark;
};

/* How often a reader makes a horizon command while jobs flow. */
#define MARK_INTERVAL_US 1000000

static void set_errmsg(walq_consumer *c)
{
    snprintf(c->errmsg, sizeof(c->errmsg), "%s", walq_last_error());
}

static void wake_up(walq_consumer *c)
{
    int saved = errno;
    char b = 1;

    if (write(c->wake[1], &b, 1) < 0) {
        /* A full pipe already wakes the loop. */
    }
    errno = saved;
}

void walq_consumer_stop(walq_consumer *c, int immediate)
{
    c->stop_req = (immediate || c->stop_req) ? 2 : 1;
    wake_up(c);
}

const char *walq_consumer_errmsg(const walq_consumer *c)
{
    return c->errmsg;
}

void walq_consumer_stats(walq_stats *out, const walq_consumer *c)
{
    /* A version-1 program calls it as (c, out); its out is writable. */
    if (walq__v1_consumer_is(out)) {
        const walq_consumer *v1_c = (const walq_consumer *)(const void *)out;
        walq_stats *v1_out = (walq_stats *)(uintptr_t)c;

        *v1_out = v1_c->stats;
        return;
    }
    *out = c->stats;
}

static char **copy_strv(const char *const *v, size_t n)
{
    char **out = calloc(n + 1, sizeof(*out));

    if (out == NULL)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        out[i] = walq__strdup(v[i]);
        if (out[i] == NULL) {
            for (size_t k = 0; k < i; k++)
                free(out[k]);
            free(out);
            return NULL;
        }
    }
    return out;
}

static void free_strv(char **v)
{
    if (v == NULL)
        return;
    for (char **p = v; *p; p++)
        free(*p);
    free(v);
}

static int on_done(void *arg, walq__job *job, walq__verdict v, const char *err);
static void on_abandon(void *arg, walq__job *job);

int walq_consumer_open(walq_consumer **out, const walq_options *opts)
{
    walq_consumer *c;
    walq__options conf;
    size_t argc = 0;
    int rc;

    *out = NULL;
    rc = walq__options_load(&conf, opts);
    if (rc != 0)
        return rc;
    /* From here on, the options in the current version's terms. */
    opts = &conf.o;
    if (opts->handler == WALQ_HANDLER_EXEC || opts->handler == WALQ_HANDLER_COPROCESS)
        while (opts->argv[argc])
            argc++;

    c = calloc(1, sizeof(*c));
    if (c == NULL)
        return walq__error(WALQ_ENOMEM, NULL, "out of memory");
    c->o = *opts;
    c->wake[0] = c->wake[1] = -1;
    c->source = walq__strdup(opts->source ? opts->source : "");
    c->primary = walq__strdup(opts->primary ? opts->primary : "");
    c->group = walq__strdup(opts->group);
    c->queues = copy_strv(opts->queues, opts->nqueues);
    if (opts->handler == WALQ_HANDLER_EXEC || opts->handler == WALQ_HANDLER_COPROCESS)
        c->argv = copy_strv(opts->argv, argc);
    c->sql = walq__strdup(opts->sql);
    if (!c->source || !c->primary || !c->group || !c->queues || (argc > 0 && !c->argv) ||
        (opts->sql && !c->sql) || walq__decoder_new(&c->dec) != 0) {
        walq_consumer_free(c);
        return walq__error(WALQ_ENOMEM, NULL, "out of memory");
    }
    if (pipe2(c->wake, O_CLOEXEC | O_NONBLOCK) != 0) {
        rc = walq__error(WALQ_ESYS, NULL, "could not create a pipe: %s", strerror(errno));
        walq_consumer_free(c);
        return rc;
    }
    c->partition = opts->partition;
    c->partitions = opts->partitions > 0 ? opts->partitions : 1;
    c->log.fn = opts->log;
    c->log.fn_v1 = conf.log_v1;
    c->log.arg = opts->log_payload;
    c->log.level = opts->log_level;
    if (c->partitions == 1) {
        snprintf(c->slot, sizeof(c->slot), "walq_%s", c->group);
        snprintf(c->log.prefix, sizeof(c->log.prefix), "group \"%s\": ", c->group);
    } else {
        int n = snprintf(c->slot, sizeof(c->slot), "walq_%s_%dof%d", c->group, c->partition,
                         c->partitions);

        if (n < 0 || (size_t)n >= sizeof(c->slot)) {
            rc = walq__error(WALQ_EINVAL,
                             "Slot names have at most 63 characters; choose a shorter group name.",
                             "consumer group name \"%s\" is too long for %d partitions", c->group,
                             c->partitions);
            walq_consumer_free(c);
            return rc;
        }
        snprintf(c->log.prefix, sizeof(c->log.prefix), "group \"%s\" partition %d/%d: ", c->group,
                 c->partition, c->partitions);
    }
    walq__heap_init(&c->ready, walq__ready_less);
    walq__heap_init(&c->timers, walq__timer_less);
    c->rng = (uint64_t)walq__wall_us() ^ ((uint64_t)getpid() << 32);
    /* The options count milliseconds, the loop microseconds. */
    c->ack_delay_us = opts->ack_delay_ms * 1000;
    c->status_interval_us = opts->status_interval_ms * 1000;
    c->horizon_us = opts->timer_horizon_ms * 1000;
    switch (opts->handler) {
    case WALQ_HANDLER_EXEC:
        rc = walq__handler_exec_new(&c->h, c->argv, opts->concurrency,
                                    (double)opts->timeout_ms / 1e3);
        break;
    case WALQ_HANDLER_COPROCESS:
        rc = walq__handler_coproc_new(&c->h, c->argv, opts->concurrency, opts->coprocess_inflight,
                                      (double)opts->timeout_ms / 1e3);
        break;
    case WALQ_HANDLER_CALLBACK:
        rc = walq__handler_callback_new(&c->h, opts->callback, conf.callback_v1,
                                        opts->callback_payload);
        break;
    case WALQ_HANDLER_NOOP:
        rc = walq__handler_noop_new(&c->h);
        break;
    default:
        rc = 0;
        break;
    }
    if (rc != 0) {
        walq_consumer_free(c);
        return rc;
    }
    if (c->h != NULL) {
        c->h->done = on_done;
        c->h->abandon = on_abandon;
        c->h->arg = c;
        c->h->log = &c->log;
        c->h->group = c->group;
    }
    if (conf.version == 1 && (rc = walq__v1_consumer_add(c)) != 0) {
        walq_consumer_free(c);
        return rc;
    }
    *out = c;
    return 0;
}

/* ------------------------------------------------------------------ */
/* Jobs in memory                                                      */

static int job_skipped(const walq_consumer *c, int64_t id)
{
    size_t lo = 0, hi = c->nskip;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;

        if (c->skip[mid] == id)
            return 1;
        if (c->skip[mid] < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return 0;
}

/* Another reader of the group takes the jobs of other partitions. */
static int mine(const walq_consumer *c, int64_t id)
{
    return c->partitions == 1 || walq__partition_of(id, c->partitions) == c->partition;
}

static int queue_wanted(const walq_consumer *c, const char *queue)
{
    for (size_t i = 0; i < c->o.nqueues; i++)
        if (strcmp(c->queues[i], queue) == 0)
            return 1;
    return 0;
}

static int make_ready(walq_consumer *c, walq__job *job)
{
    job->state = WALQ__JOB_READY;
    c->in_memory++;
    return walq__heap_push(&c->ready, job) ? walq__error(WALQ_ENOMEM, NULL, "out of memory") : 0;
}

static int make_timer(walq_consumer *c, walq__job *job, int retry)
{
    job->state = WALQ__JOB_TIMER;
    job->retry_timer = retry;
    if (retry)
        c->retry_timers++;
    return walq__heap_push(&c->timers, job) ? walq__error(WALQ_ENOMEM, NULL, "out of memory") : 0;
}

static int record(walq_consumer *c, walq__job *job, walq__status st, const char *err)
{
    free(job->last_error);
    job->last_error = NULL;
    if (err != NULL && *err != '\0') {
        job->last_error = walq__strdup(err);
        if (job->last_error == NULL)
            return walq__error(WALQ_ENOMEM, NULL, "out of memory");
    }
    job->pending = st;
    return walq__ack_add(&c->ack, job);
}

/*
 * A new job from the table or the stream: one whose time has not come is
 * recorded as scheduled right away, so that the cursor can pass it.
 */
/*
 * A job recorded as scheduled for later than the timers in memory reach
 * leaves memory once that record commits; the table has it.
 */
static int offload(walq_consumer *c, walq__job *job)
{
    job->state = WALQ__JOB_ACKING;
    c->timers_offloaded = 1;
    return 0;
}

static int admit(walq_consumer *c, walq__job *job, int64_t now_wall)
{
    int rc;

    c->stats.received++;
    if (job->run_at > now_wall + 1000) {
        if (job->run_at > c->timers_until) {
            c->in_memory++; /* until the record commits */
            rc = offload(c, job);
        } else {
            rc = make_timer(c, job, 0);
        }
        return rc ? rc : record(c, job, WALQ__ST_SCHEDULED, NULL);
    }
    return make_ready(c, job);
}

static walq__job *new_job(walq_consumer *c, int64_t id, const char *queue, const char *payload,
                          size_t payload_len)
{
    walq__job *job = calloc(1, sizeof(*job));

    if (job == NULL)
        return NULL;
    job->id = id;
    job->queue = walq__strdup(queue);
    job->payload = walq__strndup(payload, payload_len);
    job->payload_len = payload_len;
    job->max_attempts = 25;
    job->pending_idx = -1;
    job->seq = ++c->seq;
    if (job->queue == NULL || job->payload == NULL || walq__idset_add(&c->live, id) != 0) {
        walq__job_free(job);
        return NULL;
    }
    return job;
}

/* A job leaves memory. */
static void forget(walq_consumer *c, walq__job *job)
{
    walq__idset_del(&c->live, job->id);
    walq__job_free(job);
}

/* ------------------------------------------------------------------ */
/* Running jobs                                                        */

/*
 * What an attempt's verdict means for the job: done, dead (at once when the
 * handler gave up), or scheduled again after a backoff.  Pure, so that the
 * sql handler can decide before its transaction commits and apply after.
 */
static walq__status decide(walq_consumer *c, const walq__job *job, walq__verdict v, int64_t *run_at)
{
    if (v == WALQ__VERDICT_DONE)
        return WALQ__ST_DONE;
    if (v == WALQ__VERDICT_DEAD || job->attempts >= job->max_attempts)
        return WALQ__ST_DEAD;
    *run_at = walq__wall_us() + walq__backoff_us(job->attempts, (double)c->o.backoff_min_ms / 1e3,
                                                 (double)c->o.backoff_max_ms / 1e3, &c->rng);
    return WALQ__ST_SCHEDULED;
}

/* Moves a job whose attempt ended to where its outcome puts it. */
static int settle(walq_consumer *c, walq__job *job, walq__status st, int64_t run_at,
                  const char *err)
{
    switch (st) {
    case WALQ__ST_DONE:
        c->stats.done++;
        job->state = WALQ__JOB_ACKING;
        return 0;
    case WALQ__ST_DEAD:
        c->stats.dead++;
        walq__warn(&c->log, "job %lld is dead after %d attempt%s: %s", (long long)job->id,
                   job->attempts, job->attempts == 1 ? "" : "s", err ? err : "");
        job->state = WALQ__JOB_ACKING;
        return 0;
    default:
        c->stats.retried++;
        job->run_at = run_at;
        walq__debug(&c->log, "job %lld attempt %d failed, retrying: %s", (long long)job->id,
                    job->attempts, err ? err : "");
        if (run_at > c->timers_until)
            return offload(c, job);
        c->in_memory--;
        return make_timer(c, job, 1);
    }
}

/* The handler's report of an attempt: settle the job, queue its outcome. */
static int finish(walq_consumer *c, walq__job *job, walq__verdict v, const char *err)
{
    int64_t run_at = 0;
    walq__status st = decide(c, job, v, &run_at);
    int rc = settle(c, job, st, run_at, err);

    return rc ? rc : record(c, job, st, st == WALQ__ST_DONE ? NULL : err);
}

static int on_done(void *arg, walq__job *job, walq__verdict v, const char *err)
{
    return finish(arg, job, v, err);
}

/* A job whose handler was killed: no outcome, it runs again after a restart. */
static void on_abandon(void *arg, walq__job *job)
{
    /* A job in the ack batch is freed with the batch; see reset_memory(). */
    if (job->pending_idx >= 0)
        job->state = WALQ__JOB_ACKING;
    else
        forget(arg, job);
}

static int handler_has_room(walq_consumer *c)
{
    if (c->o.handler == WALQ_HANDLER_SQL)
        return c->nsql < (size_t)c->o.batch_size;
    return c->h->ops->has_room(c->h);
}

static size_t handler_running(walq_consumer *c)
{
    return c->o.handler == WALQ_HANDLER_SQL ? c->nsql : c->h->ops->running(c->h);
}

static int start_job(walq_consumer *c, walq__job *job, int64_t now)
{
    job->attempts++;
    job->state = WALQ__JOB_RUNNING;
    if (c->o.handler != WALQ_HANDLER_SQL)
        return c->h->ops->start(c->h, job, now);
    /* The sql handler runs its jobs in the next ack transaction. */
    if (c->nsql == c->sqlcap) {
        size_t cap = c->sqlcap ? c->sqlcap * 2 : 64;
        walq__job **q = realloc(c->sqlq, cap * sizeof(*q));

        if (q == NULL)
            return walq__error(WALQ_ENOMEM, NULL, "out of memory");
        c->sqlq = q;
        c->sqlcap = cap;
    }
    if (c->nsql == 0)
        c->sql_oldest = now;
    c->sqlq[c->nsql++] = job;
    return 0;
}

static int dispatch(walq_consumer *c, int64_t now)
{
    while (c->ready.n > 0 && handler_has_room(c)) {
        walq__job *job = walq__heap_pop(&c->ready);
        int rc = start_job(c, job, now);

        /* A failure here stops the consumer; the job must not leak. */
        if (rc != 0 && job->state == WALQ__JOB_RUNNING && job->pending_idx < 0) {
            c->in_memory--;
            forget(c, job);
        }
        if (rc != 0)
            return rc;
    }
    return 0;
}

static int promote_timers(walq_consumer *c, int64_t now_wall)
{
    walq__job *job;

    while ((job = walq__heap_top(&c->timers)) != NULL && job->run_at <= now_wall) {
        int rc;

        walq__heap_pop(&c->timers);
        if (job->retry_timer)
            c->retry_timers--;
        job->retry_timer = 0;
        rc = make_ready(c, job);
        if (rc != 0)
            return rc;
    }
    return 0;
}

static void kill_all(walq_consumer *c)
{
    if (c->h != NULL)
        c->h->ops->kill_all(c->h);
    for (size_t i = 0; i < c->nsql; i++)
        on_abandon(c, c->sqlq[i]);
    c->nsql = 0;
}

/* ------------------------------------------------------------------ */
/* Acks                                                                */

/* Reconnect delays: 0.1 s doubling up to 3.2 s. */
static void stream_lost(walq_consumer *c);

static void primary_lost(walq_consumer *c)
{
    int64_t delay = walq__reconnect_delay_us(c->primary_failures);

    walq__warn_retry(&c->log, delay);
    if (c->ack.inflight) {
        /* Its result will never come: the batch is written again. */
        c->ack.inflight = 0;
        walq__ack_requeue(&c->ack);
        c->flush_failed = 1;
    }
    if (c->pconn)
        PQfinish(c->pconn);
    c->pconn = NULL;
    c->primary_failures++;
    c->primary_retry_at = walq__mono_us() + delay;
    /*
     * Without the primary nothing can be confirmed, and a server shutting
     * down waits for its walsenders until their client confirms everything
     * sent; letting go of the stream lets it stop.
     */
    if (c->st.conn != NULL)
        stream_lost(c);
}

/*
 * Tries to take the reader's lock on the primary.  *epoch is the reader's
 * epoch (-1 before its row exists); when another process holds the lock,
 * *got is 0 and who says which.
 */
static int lock_reader(walq_consumer *c, int *got, int64_t *epoch, char *who, size_t wholen)
{
    const char *params[1] = {c->slot};
    PGresult *res;
    int rc;

    rc = walq__query(c->pconn, &res, "take the reader's lock",
                     "SELECT walq.lock_reader($1), walq.reader_lock_pid($1),"
                     "       (SELECT coalesce(holder, '') || '|' || epoch FROM walq.readers"
                     "         WHERE slot_name = $1)",
                     1, params);
    if (rc != 0)
        return rc;
    *got = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
    *epoch = -1;
    who[0] = '\0';
    if (!PQgetisnull(res, 0, 2)) {
        const char *v = PQgetvalue(res, 0, 2), *bar = strrchr(v, '|');

        *epoch = strtoll(bar + 1, NULL, 10);
        if (bar > v)
            snprintf(who, wholen, "%.*s, ", (int)(bar - v), v);
    }
    snprintf(who + strlen(who), wholen - strlen(who), "backend pid %s", PQgetvalue(res, 0, 1));
    PQclear(res);
    return 0;
}

/*
 * Sleeps for up to ms, or until walq_consumer_stop(); says whether to stop.
 */
static int nap(walq_consumer *c, int ms)
{
    struct pollfd p = {.fd = c->wake[0], .events = POLLIN};
    char buf[64];

    if (c->stop_req == 0 && poll(&p, 1, ms) > 0)
        while (read(c->wake[0], buf, sizeof(buf)) > 0) {
        }
    return c->stop_req != 0;
}

/*
 * Back on the primary after losing it.  If another process held the reader
 * in the meantime (its epoch moved), what is in memory is stale: the loop
 * starts over.  A lock still held at the old epoch is this process's own
 * previous session, not yet gone: that is retried.
 */
static int connect_primary(walq_consumer *c)
{
    char who[256];
    int64_t epoch;
    int rc = walq__connect(&c->pconn, c->primary, WALQ__CONN_SQL, "walq consume"), got = 0;

    if (rc == 0)
        rc = walq__exec(c->pconn, "set up the session",
                        "SET synchronous_commit = on; SET application_name = 'walq consume'");
    if (rc == 0)
        rc = lock_reader(c, &got, &epoch, who, sizeof(who));
    if (rc == 0 && epoch != c->epoch) {
        walq__warn(&c->log,
                   "another process took this reader over while the primary was unreachable "
                   "(%s); starting over",
                   who);
        c->fenced = 1;
    } else if (rc == 0 && !got) {
        rc = walq__error(WALQ_EBUSY, NULL, "the reader's lock is still held by %s", who);
    }
    if (rc != 0 && c->pconn) {
        PQfinish(c->pconn);
        c->pconn = NULL;
    }
    return rc;
}

/* What a sql job's attempt came to, decided before its transaction commits. */
typedef struct sql_result {
    walq__status st;
    int64_t run_at;
    char *err;
    /* The job's fields before, restored if the transaction fails. */
    walq__status old_pending;
    char *old_error;
    int64_t old_run_at;
    int applied; /* the fields above hold what to restore */
} sql_result;

/*
 * Runs the sql handler's jobs inside the open ack transaction: each in a
 * subtransaction of walq.run_sql(), so that one job's error fails that job
 * alone.  Their outcomes join the batch.
 */
static int run_sql_jobs(walq_consumer *c, sql_result *res)
{
    walq__buf ids = {0}, payloads = {0};
    PGresult *r = NULL;
    int rc = 0;

    rc |= walq__buf_puts(&ids, "{");
    rc |= walq__buf_puts(&payloads, "{");
    for (size_t i = 0; i < c->nsql && rc == 0; i++) {
        rc |= walq__buf_printf(&ids, "%s%lld", i ? "," : "", (long long)c->sqlq[i]->id);
        rc |= walq__buf_puts(&payloads, i ? "," : "");
        rc |= walq__buf_array_elem(&payloads, c->sqlq[i]->payload);
    }
    rc |= walq__buf_puts(&ids, "}");
    rc |= walq__buf_puts(&payloads, "}");
    if (rc != 0) {
        rc = walq__error(WALQ_ENOMEM, NULL, "out of memory");
        goto done;
    }
    {
        const char *params[4] = {c->group, c->sql, ids.data, payloads.data};

        rc = walq__query(c->pconn, &r, "run the sql handler",
                         "SELECT job_id, error FROM walq.run_sql($1, $2, $3::bigint[],"
                         " $4::jsonb[])",
                         4, params);
    }
    if (rc != 0)
        goto done;
    if ((size_t)PQntuples(r) != c->nsql) {
        rc = walq__error(WALQ_EQUERY, NULL, "walq.run_sql returned %d rows for %zu jobs",
                         PQntuples(r), c->nsql);
        goto done;
    }
    for (size_t i = 0; i < c->nsql; i++) {
        walq__job *job = c->sqlq[i];
        int failed = !PQgetisnull(r, (int)i, 1);
        sql_result *sr = &res[i];

        sr->err = failed ? walq__strdup(PQgetvalue(r, (int)i, 1)) : NULL;
        sr->st = decide(c, job, failed ? WALQ__VERDICT_FAIL : WALQ__VERDICT_DONE, &sr->run_at);
        sr->old_pending = job->pending;
        sr->old_error = job->last_error;
        sr->old_run_at = job->run_at;
        job->last_error = sr->st == WALQ__ST_DONE ? NULL : sr->err;
        job->pending = sr->st;
        if (sr->st == WALQ__ST_SCHEDULED)
            job->run_at = sr->run_at;
        sr->applied = 1;
        rc = walq__ack_add(&c->ack, job);
        if (rc != 0)
            goto done;
    }
done:
    PQclear(r);
    walq__buf_free(&ids);
    walq__buf_free(&payloads);
    return rc;
}

/* ------------------------------------------------------------------ */
/* The outcome horizon                                                 */

/* A horizon command arrived in the transaction being received. */
static void note_mark(walq_consumer *c, int64_t last_id)
{
    if (c->cur == NULL)
        return;
    /* Full: the newest takes the last place, which only delays that one. */
    if (c->nmarks == WALQ__ARRAY_SIZE(c->marks))
        c->nmarks--;
    c->marks[c->nmarks].lsn = c->cur_end;
    c->marks[c->nmarks].last_id = last_id;
    c->nmarks++;
}

/*
 * Horizon commands the cursor has passed: every job up to theirs came before
 * them in the stream, and has an outcome in this ack or an earlier one.
 */
static void pass_marks(walq_consumer *c)
{
    size_t k = 0;

    while (k < c->nmarks && c->marks[k].lsn <= c->txq.safe_lsn) {
        if (c->marks[k].last_id >= c->done_below)
            c->done_below = c->marks[k].last_id + 1;
        k++;
    }
    if (k > 0) {
        memmove(c->marks, c->marks + k, (c->nmarks - k) * sizeof(c->marks[0]));
        c->nmarks -= k;
    }
}

/*
 * The ack statement in flight is finished (rc): on success its jobs are
 * recorded and the cursor it wrote is durable; on failure they go back into
 * the batch for the next try.
 */
static int acks_sent(walq_consumer *c, int rc)
{
    if (rc != 0) {
        walq__ack_requeue(&c->ack);
        c->flush_failed = 1;
        return rc;
    }
    c->stats.acks++;
    c->primary_failures = 0;
    for (size_t i = 0; i < c->ack.nsent; i++) {
        walq__job *job = c->ack.sent[i];

        if (job->state == WALQ__JOB_ACKING && job->pending_idx < 0) {
            c->in_memory--;
            forget(c, job);
        }
    }
    c->ack.nsent = 0;
    c->flush_failed = 0;
    c->durable = c->ack.sent_cursor;
    if (c->ack.sent_done_below > c->done_below_written) {
        c->done_below_written = c->ack.sent_done_below;
        c->compact_due = 1;
    }
    if (c->sync_end && c->durable >= c->sync_end)
        c->sync_end = 0;
    return 0;
}

/*
 * Sends the batch without waiting for it, so that the stream is read and
 * handlers run while the primary writes it.  A failure shows when the
 * result comes (acks_sent).
 */
static int send_acks(walq_consumer *c)
{
    for (size_t i = 0; i < c->ack.n; i++) {
        walq__job *job = c->ack.jobs[i];

        if (job->txn != NULL) {
            walq__txnq_record(&c->txq, job->txn);
            job->txn = NULL;
        }
    }
    pass_marks(c);
    return walq__ack_send(&c->ack, c->pconn, c->group, c->slot, c->txq.safe_lsn, c->done_below);
}

/*
 * Waits for the ack statement in flight, if any, so that the primary
 * connection can take another query.  A lost connection is handled here:
 * afterwards c->pconn may be NULL.
 */
static int settle_acks(walq_consumer *c)
{
    int rc;

    if (!c->ack.inflight)
        return 0;
    rc = acks_sent(c, walq__ack_wait(&c->ack, c->pconn));
    if (rc == WALQ_ECONN) {
        primary_lost(c);
        rc = 0;
    }
    return rc;
}

/*
 * Writes the batch.  Each job's first outcome lets its transaction go; the
 * cursor written is how far that takes the group.  With the sql handler the

 * jobs' statements run in the same transaction, so their effects commit
 * exactly once, with the outcome.
 */
static int flush_acks(walq_consumer *c)
{
    sql_result *res = NULL;
    size_t batch_before = c->ack.n, nsql = c->nsql;
    int rc;

    /* One statement in flight at a time: the next batch gathers meanwhile. */
    if (c->ack.inflight)
        return 0;
    /*
     * An empty batch is still written once after a resync, so that the
     * cursor records that the backlog is done even if it had no job.
     */
    pass_marks(c);
    if (c->ack.n == 0 && nsql == 0 && !(c->sync_end && c->txq.safe_lsn >= c->sync_end) &&
        c->done_below <= c->done_below_written)
        return 0;
    if (c->pconn == NULL)
        return WALQ_ECONN;
    if (c->sql == NULL)
        return send_acks(c);
    if (nsql > 0) {
        res = calloc(nsql, sizeof(*res));
        if (res == NULL)
            return walq__error(WALQ_ENOMEM, NULL, "out of memory");
        rc = walq__exec(c->pconn, "begin the ack transaction", "BEGIN");
        if (rc == 0)
            rc = run_sql_jobs(c, res);
        if (rc != 0)
            goto fail;
    }
    for (size_t i = 0; i < c->ack.n; i++) {
        walq__job *job = c->ack.jobs[i];

        if (job->txn != NULL) {
            walq__txnq_record(&c->txq, job->txn);
            job->txn = NULL;
        }
    }
    pass_marks(c);
    rc = walq__ack_flush(&c->ack, c->pconn, c->group, c->slot, c->txq.safe_lsn, c->done_below);
    if (rc == 0 && nsql > 0)
        rc = walq__exec(c->pconn, "commit the ack transaction", "COMMIT");
    if (rc != 0)
        goto fail;

    c->stats.acks++;
    c->primary_failures = 0;
    for (size_t i = 0; i < nsql; i++) {
        walq__job *job = c->sqlq[i];

        free(res[i].old_error);
        rc = settle(c, job, res[i].st, res[i].run_at, res[i].err);
        if (res[i].st == WALQ__ST_DONE)
            free(res[i].err);
        if (rc != 0)
            break;
    }
    c->nsql = 0;
    free(res);
    for (size_t i = 0; i < c->ack.n; i++) {
        walq__job *job = c->ack.jobs[i];

        job->pending_idx = -1;
        if (job->state == WALQ__JOB_ACKING) {
            c->in_memory--;
            forget(c, job);
        }
    }
    c->ack.n = 0;
    c->flush_failed = 0;
    c->durable = c->txq.safe_lsn;
    if (c->done_below > c->done_below_written) {
        c->done_below_written = c->done_below;
        c->compact_due = 1;
    }
    if (c->sync_end && c->durable >= c->sync_end)
        c->sync_end = 0;
    return rc;

fail:
    /*
     * Nothing was recorded.  The batch stays for the next try; the sql jobs
     * go back to how they were, to run again in that try.
     */
    c->flush_failed = 1;
    if (nsql > 0) {
        if (PQstatus(c->pconn) == CONNECTION_OK)
            PQclear(PQexec(c->pconn, "ROLLBACK"));
        for (size_t i = 0; i < nsql; i++) {
            walq__job *job = c->sqlq[i];

            if (!res[i].applied)
                continue;
            free(res[i].err);
            job->last_error = res[i].old_error;
            job->pending = res[i].old_pending;
            job->run_at = res[i].old_run_at;
        }
        for (size_t i = batch_before; i < c->ack.n; i++)
            c->ack.jobs[i]->pending_idx = -1;
        c->ack.n = batch_before;
        free(res);
    }
    return rc;
}

/* ------------------------------------------------------------------ */
/* The stream                                                          */

static const char *const plugin_options[] = {
    "format-version", "2", "include-xids", "1", "include-timestamp", "1", "include-lsn", "1",
    /* Jobs are read by column name and JSON kind. */
    "include-types", "0", "add-tables", "walq.jobs,walq.commands", "actions", "insert", NULL};

static int start_stream(walq_consumer *c)
{
    char lsn[WALQ__LSN_BUFSZ];
    /*
     * Status updates are what keeps the walsender from timing us out, also
     * while a full consumer reads nothing: send them at least twice per
     * wal_sender_timeout.
     */
    int rc = walq__stream_open(&c->st, c->source, "walq consume", c->slot, c->last_end,
                               plugin_options, c->status_interval_us, &c->status_us);

    if (rc != 0)
        return rc;
    walq__info(&c->log, "streaming slot \"%s\" from %s", c->slot,
               walq__lsn_format(c->last_end, lsn));
    c->stream_failures = 0;
    c->next_status = 0;
    return 0;
}

/*
 * The slot went away under us (dropped, or invalidated for falling behind).
 * Finish and record what is running, then start over: set-up recreates the
 * slot and reads the group's unfinished jobs from the table.
 */
static void slot_lost(walq_consumer *c)
{
    walq__warn(&c->log, "%s; finishing the running jobs, then resynchronizing", walq_last_error());
    walq__stream_close(&c->st);
    c->slot_gone = 1;
}

static void stream_lost(walq_consumer *c)
{
    int64_t delay = walq__reconnect_delay_us(c->stream_failures);

    walq__warn_retry(&c->log, delay);
    walq__stream_close(&c->st);
    c->stats.reconnects++;
    c->stream_failures++;
    c->stream_retry_at = walq__mono_us() + delay;
    /*
     * The transaction being received comes again from its start; the inserts
     * already taken from it are passed over then.
     */
    if (c->cur != NULL && !c->skip_cur && c->cur_inserts > c->resume_skip)
        c->resume_skip = c->cur_inserts;
    c->skip_cur = 0;
}

static int job_from_change(walq_consumer *c, const walq__change *ch, walq__job **out)
{
    const walq__value *id = walq__change_column(ch, "id");
    const walq__value *queue = walq__change_column(ch, "queue");
    const walq__value *payload = walq__change_column(ch, "payload");
    const walq__value *prio = walq__change_column(ch, "priority");
    const walq__value *run_at = walq__change_column(ch, "run_at");
    const walq__value *maxa = walq__change_column(ch, "max_attempts");
    const walq__value *dedup = walq__change_column(ch, "dedup_key");
    walq__job *job;

    *out = NULL;
    if (id == NULL || id->kind != WALQ__V_INT || queue == NULL || queue->kind != WALQ__V_STR)
        return walq__error(WALQ_EDECODE, "Check that walq.jobs has the columns walq init made.",
                           "job row from the stream has no usable \"id\" or \"queue\"");
    /* A job already in memory (a replay after a retry command, say) stays one. */
    if (!mine(c, id->i) || !queue_wanted(c, queue->str) || job_skipped(c, id->i) ||
        walq__idset_has(&c->live, id->i))
        return 0;
    job = new_job(c, id->i, queue->str,
                  payload && payload->kind == WALQ__V_STR ? payload->str : "null",
                  payload && payload->kind == WALQ__V_STR ? payload->len : 4);
    if (job == NULL)
        return walq__error(WALQ_ENOMEM, NULL, "out of memory");
    if (prio && prio->kind == WALQ__V_INT)
        job->priority = (int32_t)prio->i;
    if (maxa && maxa->kind == WALQ__V_INT)
        job->max_attempts = (int32_t)maxa->i;
    job->has_dedup = dedup != NULL && dedup->kind == WALQ__V_STR;
    if (run_at && run_at->kind == WALQ__V_STR &&
        walq__parse_timestamp(run_at->str, run_at->len, &job->run_at) != 0) {
        forget(c, job);
        return walq__error(WALQ_EDECODE, NULL, "job %lld has an unreadable run_at \"%s\"",
                           (long long)id->i, run_at->str);
    }
    *out = job;
    return 0;
}

/* The job with this id among those waiting in memory, or NULL. */
static walq__job *find_waiting(walq_consumer *c, int64_t id, walq__heap **where)
{
    walq__heap *heaps[2] = {&c->ready, &c->timers};

    /* A linear look: commands are rare, and this keeps jobs free of an index. */
    for (int k = 0; k < 2; k++) {
        for (size_t i = 0; i < heaps[k]->n; i++) {
            if (heaps[k]->items[i]->id == id) {
                *where = heaps[k];
                return heaps[k]->items[i];
            }
        }
    }
    return NULL;
}

static walq__job *job_from_row(walq_consumer *c, PGresult *res, int row);

/*
 * `walq job cancel`: the job, if it is still waiting here, never runs.  The
 * outcome is recorded already; the job only goes through the ack batch to let
 * its transaction go.
 */
static int cancel_job(walq_consumer *c, int64_t id)
{
    walq__heap *where = NULL;
    walq__job *job = find_waiting(c, id, &where);
    char idtext[32];
    const char *params[2] = {c->group, idtext};
    PGresult *res;
    int rc, cancelled;

    if (job != NULL) {
        rc = settle_acks(c);
        if (rc != 0)
            return rc;
    }
    if (job != NULL && c->pconn != NULL) {

        /* A replayed command may be stale: a retry can have come after it. */
        snprintf(idtext, sizeof(idtext), "%lld", (long long)id);
        rc = walq__query(c->pconn, &res, "read a cancelled job's outcome",
                         "SELECT 1 FROM walq.outcomes WHERE group_name = $1 AND job_id = $2"
                         "   AND status = 'cancelled'",
                         2, params);
        if (rc != 0)
            return rc;
        cancelled = PQntuples(res) == 1;
        PQclear(res);
        if (!cancelled)
            return 0;
    }
    if (job == NULL) {
        walq__info(&c->log, "job %lld cancelled (not waiting here)", (long long)id);
        return 0;
    }
    walq__heap_remove(where, job);
    if (where == &c->timers) {
        if (job->retry_timer)
            c->retry_timers--;
        c->in_memory++; /* counted again until its release is acked */
    }
    job->state = WALQ__JOB_ACKING;
    walq__info(&c->log, "job %lld cancelled", (long long)id);
    return record(c, job, WALQ__ST_CANCELLED, NULL);
}

/*
 * `walq job retry`: a dead or cancelled job runs again.  It belongs to the
 * command's transaction, so the cursor does not pass the command before the
 * job's new outcome is recorded.
 */
static int retry_job(walq_consumer *c, int64_t id)
{
    char idtext[32];
    const char *params[2] = {c->group, idtext};
    PGresult *res;
    walq__job *job;
    int rc;

    if (!mine(c, id) || walq__idset_has(&c->live, id))
        return 0; /* another reader's, or here already and not finished: it runs once */
    rc = settle_acks(c);
    if (rc != 0)
        return rc;
    if (c->pconn == NULL)
        return WALQ_ECONN;

    snprintf(idtext, sizeof(idtext), "%lld", (long long)id);
    rc = walq__query(c->pconn, &res, "read a retried job",
                     "SELECT j.id, j.queue, j.payload, j.priority,"
                     "       (extract(epoch FROM j.run_at) * 1000000)::int8, j.max_attempts,"
                     "       j.dedup_key IS NOT NULL AS has_dedup"
                     "  FROM walq.jobs j JOIN walq.outcomes o ON o.job_id = j.id"
                     " WHERE o.group_name = $1 AND j.id = $2 AND o.status = 'queued'",
                     2, params);
    if (rc != 0)
        return rc;
    /* Nothing to do if its new outcome is recorded already (a replay). */
    if (PQntuples(res) == 0) {
        PQclear(res);
        return 0;
    }
    job = job_from_row(c, res, 0);
    PQclear(res);
    if (job == NULL)
        return walq__error(WALQ_ENOMEM, NULL, "out of memory");
    job->has_row = 1;
    job->run_at = 0;
    job->lsn = c->cur_end;
    job->txn = c->cur;
    c->cur->outstanding++;
    walq__info(&c->log, "job %lld queued again by walq job retry", (long long)id);
    return admit(c, job, walq__wall_us());
}

static int on_command(walq_consumer *c, const walq__change *ch)
{
    const walq__value *group = walq__change_column(ch, "group_name");
    const walq__value *id = walq__change_column(ch, "job_id");
    const walq__value *action = walq__change_column(ch, "action");

    if (group == NULL || group->kind != WALQ__V_STR || strcmp(group->str, c->group) != 0)
        return 0;
    if (id == NULL || id->kind != WALQ__V_INT || action == NULL || action->kind != WALQ__V_STR)
        return walq__error(WALQ_EDECODE, NULL, "unreadable row in walq.commands");
    if (strcmp(action->str, "cancel") == 0)
        return cancel_job(c, id->i);
    if (strcmp(action->str, "retry") == 0)
        return c->pconn ? retry_job(c, id->i) : WALQ_ECONN;
    if (strcmp(action->str, "horizon") == 0) {
        note_mark(c, id->i);
        return 0;
    }
    walq__warn(&c->log, "unknown command \"%s\" for job %lld ignored", action->str,
               (long long)id->i);
    return 0;
}

static int on_change(walq_consumer *c, const walq__change *ch, uint64_t wal_start)
{
    char lsn[WALQ__LSN_BUFSZ];
    walq__job *job;
    int rc;

    switch (ch->action) {
    case WALQ__ACT_BEGIN:
        if (ch->next_lsn <= c->last_end) {
            c->skip_cur = 1; /* had it already, before a reconnect */
            return 0;
        }
        c->skip_cur = 0;
        c->cur_inserts = 0;
        if (c->cur != NULL) {
            /* The one cut off by a reconnect, coming again from its start. */
            if (ch->next_lsn == c->cur_end)
                return 0;
            return walq__error(WALQ_EPROTO, NULL, "transaction began at %s inside another one",
                               walq__lsn_format(wal_start, lsn));
        }
        c->cur_end = ch->next_lsn;
        c->resume_skip = 0;
        c->cur = walq__txnq_open(&c->txq, ch->next_lsn);
        return c->cur ? 0 : walq__error(WALQ_ENOMEM, NULL, "out of memory");
    case WALQ__ACT_INSERT:
        if (c->skip_cur)
            return 0;
        if (c->cur == NULL)
            return walq__error(WALQ_EPROTO, NULL, "change at %s outside a transaction",
                               walq__lsn_format(wal_start, lsn));
        if (++c->cur_inserts <= c->resume_skip)
            return 0;
        if (ch->schema == NULL || ch->table == NULL || strcmp(ch->schema, "walq") != 0)
            return 0;
        if (strcmp(ch->table, "commands") == 0)
            return on_command(c, ch);
        if (strcmp(ch->table, "jobs") != 0)
            return 0;
        rc = job_from_change(c, ch, &job);
        if (rc != 0 || job == NULL)
            return rc;
        job->lsn = c->cur_end;
        job->txn = c->cur;
        c->cur->outstanding++;
        return admit(c, job, walq__wall_us());
    case WALQ__ACT_COMMIT:
        if (c->skip_cur) {
            c->skip_cur = 0;
            return 0;
        }
        if (c->cur == NULL)
            return walq__error(WALQ_EPROTO, NULL, "commit at %s without a transaction",
                               walq__lsn_format(wal_start, lsn));
        walq__txnq_close(&c->txq, c->cur);
        c->cur = NULL;
        c->resume_skip = 0;
        c->last_end = ch->next_lsn;
        if (ch->next_lsn > c->recv_lsn)
            c->recv_lsn = ch->next_lsn;
        return 0;
    default:
        /* Other actions are filtered out by the plugin options. */
        return 0;
    }
}

/* Handles what has arrived; stops early while too much is in memory. */
static int read_stream(walq_consumer *c)
{
    for (int i = 0; i < READ_BURST; i++) {
        walq__msg msg;
        walq__change ch;
        int rc;

        if (c->in_memory >= (size_t)c->o.max_in_flight)
            return 0;
        rc = walq__stream_read(&c->st, &msg);
        if (rc <= 0)
            return rc;
        if (msg.kind == WALQ__MSG_KEEPALIVE) {
            if (msg.wal_end > c->recv_lsn)
                c->recv_lsn = msg.wal_end;
            if (c->cur == NULL) {
                walq__txnq_idle(&c->txq, msg.wal_end);
                if (msg.wal_end > c->last_end && c->txq.head == NULL)
                    c->last_end = msg.wal_end;
            }
            if (msg.reply_requested)
                c->reply_now = 1;
            continue;
        }
        rc = walq__decode(c->dec, msg.data, msg.len, &ch);
        if (rc != 0)
            return walq__error(rc, NULL, "could not decode the change at %X/%X: %s",
                               (unsigned)(msg.wal_start >> 32), (unsigned)msg.wal_start,
                               walq__decoder_error(c->dec));
        rc = on_change(c, &ch, msg.wal_start);
        if (rc != 0)
            return rc;
    }
    return 0;
}

static int send_status(walq_consumer *c, int64_t now, int reply)
{
    int rc;

    /* With nothing waiting to be recorded, everything safe is durable. */
    if (c->ack.n == 0 && !c->ack.inflight && c->nsql == 0 && !c->flush_failed &&
        c->txq.safe_lsn > c->durable)
        c->durable = c->txq.safe_lsn;
    rc = walq__stream_status(&c->st, c->recv_lsn > c->durable ? c->recv_lsn : c->durable,
                             c->durable, reply);
    if (rc != 0)
        return rc;
    if (c->durable != c->confirmed) {
        char lsn[WALQ__LSN_BUFSZ];

        walq__debug(&c->log, "confirmed %s", walq__lsn_format(c->durable, lsn));
    }
    c->confirmed = c->durable;
    c->stats.confirmed_lsn = c->durable;
    c->reply_now = 0;
    c->next_status = now + c->status_us;
    return 0;
}

/* ------------------------------------------------------------------ */
/* Set-up: group row, slot, resync, timers                             */

static int query1(PGconn *conn, PGresult **res, const char *what, const char *sql, const char *p1)
{
    const char *params[1] = {p1};

    return walq__query(conn, res, what, sql, p1 ? 1 : 0, params);
}

static void mark_reset(walq_consumer *c)
{
    free(c->mark_lockers);
    c->mark_lockers = NULL;
    c->mark_pending = 0;
}

/*
 * One step towards the group's next horizon command: step 1 reads the last
 * job id and the transactions that may still hold ids up to it, step 2 (once
 * they ended) inserts the command.  *made is set when it was inserted.
 */
static int mark_step(walq_consumer *c, int *made)
{
    PGresult *res;
    int rc;

    *made = 0;
    if (!c->mark_pending) {
        rc = walq__query(c->pconn, &res, "read the last job id",
                         "SELECT last_id, lockers FROM walq.horizon_begin()", 0, NULL);
        if (rc != 0)
            return rc;
        if (PQgetisnull(res, 0, 0)) {
            PQclear(res); /* no job was ever published */
            return 0;
        }
        snprintf(c->mark_last_id, sizeof(c->mark_last_id), "%s", PQgetvalue(res, 0, 0));
        c->mark_lockers = walq__strdup(PQgetvalue(res, 0, 1));
        PQclear(res);
        if (c->mark_lockers == NULL)
            return walq__error(WALQ_ENOMEM, NULL, "out of memory");
        c->mark_pending = 1;
    }
    {
        const char *params[3] = {c->group, c->mark_last_id, c->mark_lockers};

        rc = walq__query(c->pconn, &res, "make a horizon command",
                         "SELECT walq.horizon_mark($1, $2::bigint, $3::text[])", 3, params);
    }
    if (rc != 0)
        return rc;
    *made = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
    PQclear(res);
    if (*made)
        mark_reset(c);
    return 0;
}

static int compact(walq_consumer *c)
{
    PGresult *res;
    int rc = query1(c->pconn, &res, "compact the outcomes", "SELECT walq.compact_outcomes($1)",
                    c->group);

    if (rc != 0)
        return rc;
    PQclear(res);
    c->compact_due = 0;
    return 0;
}

/*
 * About once a second while outcomes are recorded: the next horizon command,
 * and the compaction of what the last horizon passed.  Each is one short
 * statement on the primary connection, after the ack in flight.
 */
static int horizon_tick(walq_consumer *c, int64_t now)
{
    uint64_t activity = c->stats.done + c->stats.dead + c->stats.retried;
    int rc, made;

    if (c->pconn == NULL || now < c->next_mark || c->o.keep_outcomes)
        return 0;
    c->next_mark = now + MARK_INTERVAL_US;
    if (!c->compact_due && !c->mark_pending && activity == c->mark_activity)
        return 0;
    rc = settle_acks(c);
    if (rc != 0 || c->pconn == NULL)
        return rc;
    if (c->compact_due) {
        rc = compact(c);
        if (rc != 0)
            return rc;
    }
    if (c->mark_pending || activity != c->mark_activity) {
        c->mark_activity = activity;
        rc = mark_step(c, &made);
        if (rc != 0)
            return rc;
        /* A producer's transaction still runs: look again soon. */
        if (c->mark_pending)
            c->next_mark = now + 50000;
    }
    return 0;
}

/*
 * --drain: a horizon command before the end of what is drained, so that the
 * drain ends with the outcomes it recorded compacted.  A producer's
 * transaction left open delays it; after a few seconds the drain goes on
 * without.
 */
static int mark_before_drain(walq_consumer *c)
{
    int64_t give_up = walq__mono_us() + 3000000;
    int made = 0, rc;

    while ((rc = mark_step(c, &made)) == 0 && c->mark_pending && !c->stop_req &&
           walq__mono_us() < give_up)
        nap(c, 20);
    if (rc == 0 && c->mark_pending)
        walq__info(&c->log, "a transaction publishing jobs is still open: this drain leaves its "
                            "outcomes to the next horizon");
    mark_reset(c);
    return rc;
}

/* What the last acks let go is deleted before the process ends. */
static void compact_at_exit(walq_consumer *c)
{
    if (c->compact_due && c->pconn != NULL && compact(c) != 0)
        walq__warn(&c->log, "%s; the group's next horizon compacts them", walq_last_error());
}

static int queues_literal(walq_consumer *c, walq__buf *b)
{
    int rc = walq__buf_puts(b, "{");

    for (size_t i = 0; rc == 0 && i < c->o.nqueues; i++) {
        if (i)
            rc = walq__buf_puts(b, ",");
        if (rc == 0)
            rc = walq__buf_array_elem(b, c->queues[i]);
    }
    return rc ? rc : walq__buf_puts(b, "}");
}

static int load_skip(walq_consumer *c, uint64_t cursor)
{
    char lsn[WALQ__LSN_BUFSZ];
    char k[16], n[16];
    const char *params[4] = {c->group, walq__lsn_format(cursor, lsn), k, n};
    PGresult *res;
    int rc;

    snprintf(k, sizeof(k), "%d", c->partition);
    snprintf(n, sizeof(n), "%d", c->partitions);
    rc = walq__query(c->pconn, &res, "read recorded outcomes",
                     "SELECT job_id FROM ("
                     "  SELECT job_id FROM walq.outcomes WHERE group_name = $1"
                     "     AND (lsn > $2::pg_lsn OR (status = 'cancelled' AND lsn IS NULL))"
                     "  UNION"
                     "  SELECT unnest(job_ids) FROM walq.outcome_batches"
                     "   WHERE group_name = $1 AND lsn > $2::pg_lsn) x (job_id)"
                     " WHERE $4::int = 1 OR walq.partition_of(job_id, $4::int) = $3::int"
                     " ORDER BY job_id",
                     4, params);
    if (rc != 0)
        return rc;
    free(c->skip);
    c->nskip = (size_t)PQntuples(res);
    c->skip = malloc((c->nskip ? c->nskip : 1) * sizeof(*c->skip));
    if (c->skip == NULL) {
        PQclear(res);
        return walq__error(WALQ_ENOMEM, NULL, "out of memory");
    }
    for (size_t i = 0; i < c->nskip; i++)
        c->skip[i] = strtoll(PQgetvalue(res, (int)i, 0), NULL, 10);
    PQclear(res);
    return 0;
}

static walq__job *job_from_row(walq_consumer *c, PGresult *res, int row)
{
    /* Columns: id, queue, payload, priority, run_at (Unix us), max_attempts, [attempts]. */
    walq__job *job = new_job(c, strtoll(PQgetvalue(res, row, 0), NULL, 10), PQgetvalue(res, row, 1),
                             PQgetvalue(res, row, 2), (size_t)PQgetlength(res, row, 2));

    if (job == NULL)
        return NULL;
    job->priority = (int32_t)strtol(PQgetvalue(res, row, 3), NULL, 10);
    job->run_at = strtoll(PQgetvalue(res, row, 4), NULL, 10);
    job->max_attempts = (int32_t)strtol(PQgetvalue(res, row, 5), NULL, 10);
    if (PQfnumber(res, "attempts") >= 0)
        job->attempts = (int32_t)strtol(PQgetvalue(res, row, PQfnumber(res, "attempts")), NULL, 10);
    if (PQfnumber(res, "has_dedup") >= 0)
        job->has_dedup = *PQgetvalue(res, row, PQfnumber(res, "has_dedup")) == 't';
    return job;
}

/* Jobs waiting for their time, recorded as scheduled, come back as timers. */
/*
 * Loads the jobs recorded as scheduled with a run_at after `after` and up to
 * `until` (Unix microseconds), and learns whether later ones remain.
 */
static int load_timers(walq_consumer *c, int64_t after, int64_t until)
{
    char a[32], u[32], pk[16], pn[16];
    const char *params[5] = {c->group, a, u, pk, pn};
    PGresult *res;
    int rc, n = 0;

    rc = settle_acks(c);
    if (rc != 0)
        return rc;
    if (c->pconn == NULL)
        return 0;
    snprintf(a, sizeof(a), "%lld", (long long)after);
    snprintf(u, sizeof(u), "%lld", (long long)until);
    snprintf(pk, sizeof(pk), "%d", c->partition);
    snprintf(pn, sizeof(pn), "%d", c->partitions);
    rc = walq__query(
        c->pconn, &res, "read scheduled jobs",
        "SELECT j.id, j.queue, j.payload, j.priority,"
        "       (extract(epoch FROM coalesce(o.run_at, j.run_at)) * 1000000)::int8,"
        "       j.max_attempts, o.attempts AS attempts, j.dedup_key IS NOT NULL AS has_dedup"
        "  FROM walq.outcomes o JOIN walq.jobs j ON j.id = o.job_id"
        " WHERE o.group_name = $1 AND o.status = 'scheduled'"
        "   AND o.run_at > timestamptz 'epoch' + $2::int8 * interval '1 microsecond'"
        "   AND o.run_at <= timestamptz 'epoch' + $3::int8 * interval '1 microsecond'"
        "   AND ($5::int = 1 OR walq.partition_of(o.job_id, $5::int) = $4::int)",
        5, params);
    if (rc != 0)
        return rc;
    for (int i = 0; i < PQntuples(res); i++) {
        walq__job *job;

        /* Here already (waiting for its record to commit, say): one copy. */
        if (walq__idset_has(&c->live, strtoll(PQgetvalue(res, i, 0), NULL, 10)))
            continue;
        job = job_from_row(c, res, i);
        if (job == NULL) {
            PQclear(res);
            return walq__error(WALQ_ENOMEM, NULL, "out of memory");
        }
        job->has_row = 1;
        rc = make_timer(c, job, job->attempts > 0);
        if (rc != 0) {
            forget(c, job);
            PQclear(res);
            return rc;
        }
        n++;
    }
    PQclear(res);
    if (n > 0)
        walq__info(&c->log, "%d scheduled jobs waiting for their time", n);
    c->timers_until = until;
    rc = walq__query(c->pconn, &res, "look for later scheduled jobs",
                     "SELECT EXISTS (SELECT 1 FROM walq.outcomes WHERE group_name = $1"
                     "   AND status = 'scheduled' AND $2::int8 IS NOT NULL"
                     "   AND run_at > timestamptz 'epoch' + $3::int8 * interval '1 microsecond'"
                     "   AND ($5::int = 1 OR walq.partition_of(job_id, $5::int) = $4::int))",
                     5, params);
    if (rc != 0)
        return rc;
    c->timers_offloaded = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
    PQclear(res);
    return 0;
}

/*
 * The next page of the backfill: jobs of the group's queues that were
 * committed before the slot's consistent point and have no outcome.
 */
static int backfill_page(walq_consumer *c)
{
    PGresult *res, *known = NULL;
    walq__buf ids = {0}, queues = {0};
    int rc, n;
    int64_t now_wall = walq__wall_us();

    /* The page is checked against outcomes on the primary connection. */
    rc = settle_acks(c);
    if (rc != 0 || c->pconn == NULL)
        return rc;
    rc = walq__query(c->sconn, &res, "read the backlog",
                     "FETCH " /* constant page size */ "1000 FROM walq_backfill", 0, NULL);
    if (rc != 0)
        return rc;
    n = PQntuples(res);
    if (n == 0) {
        PQclear(res);
        rc = walq__exec(c->sconn, "finish reading the backlog", "COMMIT");
        if (rc != 0)
            return rc;
        PQfinish(c->sconn);
        c->sconn = NULL;
        walq__txnq_close(&c->txq, c->bf_txn);
        c->bf_txn = NULL;
        c->backfilling = 0;
        walq__info(&c->log, "backlog read: %llu jobs", (unsigned long long)c->stats.received);
        return 0;
    }
    /*
     * The outcomes live on the primary, which may be another server: the
     * page's status there, one row per job in the page's (id) order.  Done
     * is a row, a batch, or the group's horizon.
     */
    rc = walq__buf_puts(&ids, "{");
    for (int i = 0; rc == 0 && i < n; i++)
        rc = walq__buf_printf(&ids, "%s%s", i ? "," : "", PQgetvalue(res, i, 0));
    rc = rc ? rc : walq__buf_puts(&ids, "}");
    rc = rc ? rc : walq__buf_puts(&queues, "{");
    for (int i = 0; rc == 0 && i < n; i++) {
        rc = walq__buf_puts(&queues, i ? "," : "");
        rc = rc ? rc : walq__buf_array_elem(&queues, PQgetvalue(res, i, 1));
    }
    rc = rc ? rc : walq__buf_puts(&queues, "}");
    if (rc == 0) {
        const char *params[3] = {c->group, ids.data, queues.data};

        rc = walq__query(
            c->pconn, &known, "check the backlog against recorded outcomes",
            "SELECT coalesce(o.status,"
            "                CASE WHEN (p.id < g.done_below AND p.queue = ANY (g.done_queues))"
            "                          OR walq.done_in_batch($1, p.id) THEN 'done' END)"
            "  FROM unnest($2::bigint[], $3::text[]) WITH ORDINALITY p (id, queue, n)"
            "  JOIN walq.groups g ON g.name = $1"
            "  LEFT JOIN walq.outcomes o ON o.group_name = $1 AND o.job_id = p.id"
            " ORDER BY p.n",
            3, params);
    }
    walq__buf_free(&ids);
    walq__buf_free(&queues);
    if (rc == 0 && PQntuples(known) != n) {
        PQclear(known);
        rc = walq__error(WALQ_ESERVER, NULL, "consumer group \"%s\" is missing", c->group);
    }
    if (rc != 0) {
        PQclear(res);
        return rc;
    }
    for (int i = 0; i < n; i++) {
        int64_t id = strtoll(PQgetvalue(res, i, 0), NULL, 10);
        int queued_row = strcmp(PQgetvalue(known, i, 0), "queued") == 0;
        walq__job *job;

        /* Recorded already, unless a retry queued it again. */
        if (!PQgetisnull(known, i, 0) && !queued_row)
            continue;
        if (walq__idset_has(&c->live, id))
            continue;
        job = job_from_row(c, res, i);
        if (job == NULL) {
            rc = walq__error(WALQ_ENOMEM, NULL, "out of memory");
            break;
        }
        job->has_row = queued_row;
        job->lsn = c->bf_txn->end_lsn;
        job->txn = c->bf_txn;
        c->bf_txn->outstanding++;
        rc = admit(c, job, now_wall);
        if (rc != 0)
            break;
    }
    PQclear(known);
    PQclear(res);
    return rc;
}

typedef struct slot_info {
    int exists;
    int lost;
    int active;
    char active_pid[32];
    uint64_t confirmed;
    char plugin[64];
} slot_info;

static int read_slot(walq_consumer *c, slot_info *si)
{
    PGresult *res;
    int rc;

    memset(si, 0, sizeof(*si));
    rc = query1(c->sconn, &res, "look up the replication slot",
                "SELECT coalesce(confirmed_flush_lsn::text, ''), coalesce(wal_status, ''),"
                "       coalesce(active_pid::text, ''), coalesce(plugin, ''), database"
                "  FROM pg_replication_slots WHERE slot_name = $1",
                c->slot);
    if (rc != 0)
        return rc;
    if (PQntuples(res) == 1) {
        si->exists = 1;
        if (walq__lsn_parse(PQgetvalue(res, 0, 0), &si->confirmed) != 0)
            si->confirmed = 0;
        si->lost = strcmp(PQgetvalue(res, 0, 1), "lost") == 0 || *PQgetvalue(res, 0, 0) == '\0';
        snprintf(si->active_pid, sizeof(si->active_pid), "%s", PQgetvalue(res, 0, 2));
        si->active = si->active_pid[0] != '\0';
        snprintf(si->plugin, sizeof(si->plugin), "%s", PQgetvalue(res, 0, 3));
    }
    PQclear(res);
    return 0;
}

static int check_source(walq_consumer *c)
{
    PGresult *res;
    char name[128], level[32], feedback[16];
    int rc, version;

    rc = walq__query(c->sconn, &res, "read the source's settings",
                     "SELECT current_setting('wal_level'), pg_is_in_recovery(),"
                     "       current_setting('server_version_num')::int,"
                     "       current_setting('hot_standby_feedback')",
                     0, NULL);
    if (rc != 0)
        return rc;
    snprintf(level, sizeof(level), "%s", PQgetvalue(res, 0, 0));
    c->standby = strcmp(PQgetvalue(res, 0, 1), "t") == 0;
    version = atoi(PQgetvalue(res, 0, 2));
    snprintf(feedback, sizeof(feedback), "%s", PQgetvalue(res, 0, 3));
    PQclear(res);
    walq__conn_name(c->sconn, name, sizeof(name));
    if (strcmp(level, "logical") != 0)
        return walq__error(WALQ_ESERVER,
                           "Set wal_level = logical in postgresql.conf and restart the server.",
                           "logical decoding requires wal_level = logical, but \"%s\" has "
                           "wal_level = %s",
                           name, level);
    if (!c->standby)
        return 0;
    /*
     * A hot standby: PostgreSQL 16 decodes there, as long as the primary
     * keeps the catalog rows the slot needs, which hot_standby_feedback
     * tells it.
     */
    if (version < 160000)
        return walq__error(WALQ_ESERVER,
                           "Read from the primary, from a standby running PostgreSQL 16 or later, "
                           "or from a logical subscriber (walq replica setup).",
                           "\"%s\" is a standby running PostgreSQL %d.%d, which cannot decode: "
                           "logical decoding on a standby needs PostgreSQL 16",
                           name, version / 10000, version % 10000);
    if (strcmp(feedback, "on") != 0)
        return walq__error(WALQ_ESERVER,
                           "Set hot_standby_feedback = on on the standby (and give it a physical "
                           "slot on the primary with primary_slot_name), then reload it.",
                           "the standby \"%s\" has hot_standby_feedback = off, so the primary may "
                           "remove rows its logical slots still need",
                           name);
    walq__info(&c->log, "the source \"%s\" is a hot standby; acks go to the primary", name);
    return 0;
}

/*
 * A standby creating a slot waits for the primary to log its running
 * transactions, which the primary does on its own only every 15 seconds.
 */
static void log_standby_snapshot(void *arg)
{
    walq_consumer *c = arg;
    PGresult *res;

    if (c->pconn == NULL)
        return;
    res = PQexec(c->pconn, "SELECT pg_log_standby_snapshot()");
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        char msg[512];

        walq__debug(&c->log, "could not log a standby snapshot on the primary: %s",
                    walq__pg_message(c->pconn, res, msg, sizeof(msg)));
    }
    PQclear(res);
}

/*
 * Creates the slot afresh and reads, from the snapshot of its consistent
 * point, every job of the group's queues that has no outcome: the table
 * covers what came before the slot and the stream what comes after, without
 * a gap or an overlap.
 */
static int resync(walq_consumer *c, const slot_info *si, uint64_t cursor)
{
    char snapshot[128], lsn[WALQ__LSN_BUFSZ], sql[256];
    walq__buf queues = {0};
    uint64_t consistent;
    PGresult *res;
    int rc;

    if (si->exists) {
        rc = walq__stream_drop_slot(&c->st, c->slot);
        if (rc != 0)
            return rc;
    }
    rc = walq__stream_create_slot_waiting(&c->st, c->slot, &consistent, snapshot, sizeof(snapshot),
                                          c->standby ? log_standby_snapshot : NULL, c);
    if (rc != 0)
        return rc;
    rc = walq__exec(c->sconn, "begin reading the backlog",
                    "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY");
    if (rc == 0) {
        snprintf(sql, sizeof(sql), "SET TRANSACTION SNAPSHOT '%s'", snapshot);
        rc = walq__exec(c->sconn, "import the slot's snapshot", sql);
    }
    if (rc == 0)
        rc = queues_literal(c, &queues);
    if (rc == 0) {
        char k[16], n[16];
        const char *params[3] = {queues.data, k, n};

        /*
         * The source may be a subscriber with nothing of walq's but the
         * tables, so the partition is computed inline, as
         * walq.partition_of() does.
         */
        snprintf(k, sizeof(k), "%d", c->partition);
        snprintf(n, sizeof(n), "%d", c->partitions);
        rc = walq__query(c->sconn, &res, "open the backlog",
                         "DECLARE walq_backfill NO SCROLL CURSOR FOR"
                         " SELECT id, queue, payload, priority,"
                         "        (extract(epoch FROM run_at) * 1000000)::int8, max_attempts,"
                         "        dedup_key IS NOT NULL AS has_dedup"
                         "   FROM walq.jobs WHERE queue = ANY ($1::text[])"
                         "    AND ($3::int = 1"
                         "         OR (hashint8(id)::int8 & 4294967295) % $3::int = $2::int)"
                         "  ORDER BY id",
                         3, params);
        PQclear(res);
    }
    if (rc == 0) {
        const char *params[3] = {c->slot, walq__lsn_format(consistent, lsn), queues.data};

        rc = walq__query(c->pconn, &res, "record the reader's new slot",
                         "UPDATE walq.readers SET sync_lsn = $2::pg_lsn, queues = $3::text[],"
                         " done_below = 0, updated_at = now() WHERE slot_name = $1",
                         3, params);
        PQclear(res);
    }
    walq__buf_free(&queues);
    if (rc != 0)
        return rc;
    /* The reader's horizon starts afresh, for the queues it reads now. */
    c->done_below = c->done_below_written = 0;
    c->nmarks = 0;
    c->bf_txn = walq__txnq_open(&c->txq, consistent);
    if (c->bf_txn == NULL)
        return walq__error(WALQ_ENOMEM, NULL, "out of memory");
    c->backfilling = 1;
    c->sync_end = consistent;
    c->txq.safe_lsn = cursor < consistent ? cursor : consistent;
    c->last_end = c->recv_lsn = consistent;
    walq__info(&c->log, "created slot \"%s\" at %s; reading the backlog from walq.jobs", c->slot,
               walq__lsn_format(consistent, lsn));
    return 0;
}

/* A statement that cannot even be prepared would fail every job: say so now. */
static int check_sql(walq_consumer *c)
{
    walq__buf sql = {0};
    PGresult *res;
    char msg[1024];

    if (walq__buf_printf(&sql, "PREPARE walq_sql_check (jsonb, bigint) AS %s", c->sql) != 0)
        return walq__error(WALQ_ENOMEM, NULL, "out of memory");
    res = PQexec(c->pconn, sql.data);
    walq__buf_free(&sql);
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        walq__pg_message(c->pconn, res, msg, sizeof(msg));
        PQclear(res);
        return walq__error(WALQ_EINVAL,
                           "The statement gets the payload as $1 (jsonb) and the job id as $2 "
                           "(bigint).",
                           "invalid sql handler statement: %s", msg);
    }
    PQclear(res);
    return walq__exec(c->pconn, "release the checked statement", "DEALLOCATE walq_sql_check");
}

/*
 * Readers of the group set up for another number of partitions: their slots
 * are dropped and their rows deleted, unless one of them is still running.
 * Runs inside the transaction that registers this reader.
 */
static int retire_other_readers(walq_consumer *c, const char *np)
{
    const char *params[2] = {c->group, np};
    PGresult *res;
    int rc;

    rc = walq__query(c->pconn, &res, "read the group's other readers",
                     "SELECT slot_name, partition, partitions,"
                     "       walq.reader_lock_pid(slot_name) IS NOT NULL"
                     "  FROM walq.readers WHERE group_name = $1 AND partitions <> $2::int"
                     "   FOR UPDATE",
                     2, params);
    if (rc != 0)
        return rc;
    for (int i = 0; i < PQntuples(res); i++) {
        if (strcmp(PQgetvalue(res, i, 3), "t") == 0) {
            rc = walq__error(WALQ_EBUSY,
                             "Stop every reader of the group before starting it with another "
                             "number of partitions.",
                             "consumer group \"%s\" is still read as partition %s of %s (slot "
                             "\"%s\")",
                             c->group, PQgetvalue(res, i, 1), PQgetvalue(res, i, 2),
                             PQgetvalue(res, i, 0));
            break;
        }
    }
    for (int i = 0; rc == 0 && i < PQntuples(res); i++) {
        const char *slot[1] = {PQgetvalue(res, i, 0)};
        PGresult *r = NULL;

        rc = walq__query(c->sconn, &r, "drop a slot of the previous partitions",
                         "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots"
                         " WHERE slot_name = $1",
                         1, slot);
        PQclear(r);
        if (rc == 0)
            rc = walq__query(c->pconn, &r, "forget a reader of the previous partitions",
                             "DELETE FROM walq.readers WHERE slot_name = $1", 1, slot);
        PQclear(r);
        if (rc == 0)
            walq__info(&c->log, "dropped slot \"%s\" of the group's previous partitioning",
                       slot[0]);
    }
    PQclear(res);
    return rc;
}

/* This reader's state, read when the process takes it over. */
typedef struct reader_state {
    uint64_t cursor, sync_lsn;
    int queues_changed;
    int source_changed; /* the cursor was of another source's WAL: reset */
    char source_id[32]; /* the source's system identifier */
} reader_state;

/*
 * Registers the group and this reader, retiring readers of another
 * partitioning, and takes the reader over: a new epoch, and this process as
 * its holder.  The caller holds the reader's lock.
 */
static int register_reader(walq_consumer *c, reader_state *rs)
{
    walq__buf queues = {0};
    char k[16], n[16], holder[160], host[128] = "";
    PGresult *res = NULL;
    int rc;

    snprintf(k, sizeof(k), "%d", c->partition);
    snprintf(n, sizeof(n), "%d", c->partitions);
    gethostname(host, sizeof(host) - 1);
    snprintf(holder, sizeof(holder), "%s pid %ld", *host ? host : "localhost", (long)getpid());
    rc = queues_literal(c, &queues);
    if (rc != 0)
        return walq__error(WALQ_ENOMEM, NULL, "out of memory");
    rc = walq__exec(c->pconn, "begin registering the reader", "BEGIN");
    if (rc == 0) {
        const char *params[3] = {c->group, queues.data, n};

        rc = walq__query(c->pconn, &res, "register the consumer group",
                         "INSERT INTO walq.groups (name, queues, partitions)"
                         " VALUES ($1, $2::text[], $3::int) ON CONFLICT (name) DO UPDATE"
                         "   SET queues = excluded.queues, partitions = excluded.partitions,"
                         "       updated_at = now()",
                         3, params);
        PQclear(res);
        res = NULL;
    }
    if (rc == 0)
        rc = retire_other_readers(c, n);
    if (rc == 0) {
        const char *params[5] = {c->group, k, n, c->slot, queues.data};

        rc = walq__query(c->pconn, &res, "register the reader",
                         "INSERT INTO walq.readers (group_name, partition, partitions, slot_name,"
                         "                          queues)"
                         " VALUES ($1, $2::int, $3::int, $4, $5::text[])"
                         " ON CONFLICT (group_name, partition) DO NOTHING",
                         5, params);
        PQclear(res);
        res = NULL;
    }
    if (rc == 0) {
        const char *params[4] = {c->slot, holder, queues.data, rs->source_id};

        /*
         * A cursor is a position in the source's WAL.  Another source (a
         * subscriber instead of the primary, say) has other positions: the
         * reader starts from nothing there, and resynchronizes.
         */
        rc = walq__query(c->pconn, &res, "take the reader over",
                         "WITH old AS (SELECT source_id FROM walq.readers WHERE slot_name = $1)"
                         " UPDATE walq.readers r SET epoch = epoch + 1, holder = $2,"
                         "       held_since = now(), updated_at = now(), source_id = $4,"
                         "       cursor_lsn = CASE WHEN old.source_id <> $4 THEN '0/0'"
                         "                         ELSE cursor_lsn END,"
                         "       sync_lsn = CASE WHEN old.source_id <> $4 THEN NULL"
                         "                       ELSE sync_lsn END"
                         "  FROM old WHERE r.slot_name = $1"
                         " RETURNING epoch, cursor_lsn::text, coalesce(sync_lsn::text, ''),"
                         "           NOT (queues @> $3::text[] AND queues <@ $3::text[]),"
                         "           coalesce(old.source_id <> $4, false)",
                         4, params);
    }
    if (rc == 0 && PQntuples(res) != 1)
        rc = walq__error(WALQ_ESERVER, NULL, "reader with slot \"%s\" is missing", c->slot);
    if (rc == 0) {
        c->epoch = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
        walq__lsn_parse(PQgetvalue(res, 0, 1), &rs->cursor);
        if (walq__lsn_parse(PQgetvalue(res, 0, 2), &rs->sync_lsn) != 0)
            rs->sync_lsn = UINT64_MAX;
        rs->queues_changed = strcmp(PQgetvalue(res, 0, 3), "t") == 0;
        rs->source_changed = strcmp(PQgetvalue(res, 0, 4), "t") == 0;
        rc = walq__exec(c->pconn, "commit the reader", "COMMIT");
    }
    PQclear(res);
    walq__buf_free(&queues);
    if (rc != 0 && PQstatus(c->pconn) == CONNECTION_OK)
        PQclear(PQexec(c->pconn, "ROLLBACK"));
    return rc;
}

/*
 * Waits until this process holds the reader: while another consumer of the
 * same group and partition runs, this one stands by and takes over when
 * that one's session ends.  Returns 0 with c->stop_req set if asked to stop
 * while waiting.
 */
static int take_reader(walq_consumer *c, reader_state *rs)
{
    char who[256];
    int64_t epoch;
    int got = 0, rc, waited = 0;

    for (;;) {
        rc = lock_reader(c, &got, &epoch, who, sizeof(who));
        if (rc != 0 || got)
            break;
        if (!waited)
            walq__info(&c->log, "the reader is held by %s; standing by to take over", who);
        waited = 1;
        if (nap(c, 500))
            return 0;
    }
    if (rc == 0)
        rc = register_reader(c, rs);
    if (rc == 0 && waited)
        walq__info(&c->log, "took the reader over");
    return rc;
}

/*
 * The slot may still be held a moment by the walsender of a consumer that
 * just died (or held by something else altogether): wait for it.
 */
static int wait_for_slot(walq_consumer *c, slot_info *si)
{
    int rc, warned = 0;

    for (;;) {
        rc = read_slot(c, si);
        if (rc != 0 || !si->active)
            return rc;
        if (!warned)
            walq__warn(&c->log, "replication slot \"%s\" is still in use by process %s; waiting",
                       c->slot, si->active_pid);
        warned = 1;
        if (nap(c, 500))
            return 0;
    }
}

static int setup(walq_consumer *c)
{
    PGresult *res = NULL;
    slot_info si;
    reader_state rs = {0};
    int rc, synced;
    char lsn[WALQ__LSN_BUFSZ];

    rc = walq__connect(&c->pconn, c->primary, WALQ__CONN_SQL, "walq consume");
    if (rc != 0)
        return rc;
    rc = walq__schema_check(c->pconn);
    if (rc == 0 && c->sql != NULL)
        rc = check_sql(c);
    if (rc == 0)
        rc = walq__exec(c->pconn, "set up the session", "SET synchronous_commit = on");
    if (rc == 0)
        rc = walq__connect(&c->sconn, c->source, WALQ__CONN_SQL, "walq consume");
    if (rc == 0)
        rc = check_source(c);
    if (rc == 0) {
        rc = walq__query(c->sconn, &res, "identify the source",
                         "SELECT system_identifier::text FROM pg_control_system()", 0, NULL);
        if (rc == 0) {
            snprintf(rs.source_id, sizeof(rs.source_id), "%s", PQgetvalue(res, 0, 0));
            PQclear(res);
            res = NULL;
        }
    }
    if (rc == 0)
        rc = take_reader(c, &rs);
    if (rc == 0 && !c->stop_req)
        rc = wait_for_slot(c, &si);
    if (rc != 0 || c->stop_req)
        return rc;
    synced = rs.cursor >= rs.sync_lsn;
    if (si.exists && strcmp(si.plugin, "wal2json") != 0)
        return walq__error(WALQ_ESLOT, "Drop the slot, or choose another group name.",
                           "replication slot \"%s\" exists but uses plugin \"%s\", not wal2json",
                           c->slot, si.plugin);
    rc = walq__stream_connect(&c->st, c->source, "walq consume");
    if (rc != 0)
        return rc;

    if (!si.exists || si.lost || !synced || rs.queues_changed) {
        if (synced && !si.exists)
            walq__warn(&c->log,
                       "replication slot \"%s\" is missing; recreating it and resynchronizing "
                       "the group from walq.jobs",
                       c->slot);
        else if (synced && si.lost)
            walq__warn(&c->log,
                       "replication slot \"%s\" was invalidated; recreating it and "
                       "resynchronizing the group from walq.jobs",
                       c->slot);
        else if (synced && rs.queues_changed)
            walq__info(&c->log, "queues changed; resynchronizing the group from walq.jobs");
        else if (rs.source_changed)
            walq__warn(&c->log,
                       "the reader was last read from another source server; resynchronizing "
                       "the group from walq.jobs (a slot \"%s\" left on the old source holds WAL "
                       "there until it is dropped)",
                       c->slot);

        rc = resync(c, &si, rs.cursor);
    } else {
        c->last_end = c->recv_lsn = rs.cursor > si.confirmed ? rs.cursor : si.confirmed;
        c->txq.safe_lsn = c->last_end;
        c->durable = c->confirmed = c->last_end;
        rc = load_skip(c, rs.cursor);
        walq__debug(&c->log, "cursor %s, %zu jobs already recorded beyond it",
                    walq__lsn_format(rs.cursor, lsn), c->nskip);
    }
    if (rc == 0)
        rc = load_timers(c, 0, walq__wall_us() + c->horizon_us);
    if (rc == 0 && c->o.drain && !c->o.keep_outcomes)
        rc = mark_before_drain(c);
    if (rc == 0 && c->o.drain) {
        rc = walq__query(c->sconn, &res, "read the server's WAL position",
                         "SELECT CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn()"
                         "            ELSE pg_current_wal_insert_lsn() END::text",
                         0, NULL);
        if (rc == 0) {
            walq__lsn_parse(PQgetvalue(res, 0, 0), &c->drain_target);
            PQclear(res);
            walq__debug(&c->log, "draining up to %s", walq__lsn_format(c->drain_target, lsn));
        }
    }
    if (rc == 0 && !c->backfilling) {
        PQfinish(c->sconn);
        c->sconn = NULL;
    }
    return rc;
}

/* ------------------------------------------------------------------ */
/* The loop                                                            */

static int drained(const walq_consumer *c)
{
    return !c->backfilling && c->sync_end == 0 && c->st.streaming && c->cur == NULL &&
           c->in_memory == 0 && c->retry_timers == 0 && c->ack.n == 0 && !c->ack.inflight &&
           c->last_end >= c->drain_target && c->txq.head == NULL &&
           c->done_below <= c->done_below_written;
}

/* The last word to the server: everything recorded is confirmed. */
static void final_status(walq_consumer *c)
{
    if (c->st.streaming && c->st.conn != NULL) {
        if (send_status(c, walq__mono_us(), 0) == 0) {
            PQsetnonblocking(c->st.conn, 0);
            PQflush(c->st.conn);
        }
    }
}

static int loop(walq_consumer *c)
{
    struct pollfd *pfd;
    size_t npfd = 3 + (c->h ? c->h->ops->max_fds(c->h) : 0);
    int rc = 0, stream_pfd = -1, ack_pfd = -1;

    pfd = calloc(npfd, sizeof(*pfd));
    if (pfd == NULL)
        return walq__error(WALQ_ENOMEM, NULL, "out of memory");

    for (;;) {
        int64_t now = walq__mono_us(), wall = walq__wall_us(), wake_at = 0;
        int stopping = c->stop_req != 0 || c->slot_gone, n = 0, timeout_ms;

        if (c->stop_req == 2) {
            kill_all(c);
            rc = WALQ_ECANCELED;
            walq__error(rc, NULL, "stopped at once; unfinished jobs will run again");
            break;
        }
        if (c->pconn == NULL && now >= c->primary_retry_at) {
            rc = connect_primary(c);
            if (c->fenced) {
                rc = WALQ_EBUSY;
                break;
            }
            if (rc != 0)
                primary_lost(c);
            else
                walq__info(&c->log, "reconnected to the primary");
            rc = 0;
        }
        if (!stopping) {
            rc = promote_timers(c, wall);
            /*
             * Scheduled jobs that live only in the table come in as their
             * time nears; not while some wait for their record to commit,
             * or one of those could fall between the table and memory.
             */
            if (rc == 0 && c->timers_offloaded && c->pconn && c->ack.n == 0 && !c->ack.inflight &&
                c->nsql == 0 && wall + c->horizon_us / 2 >= c->timers_until)
                rc = load_timers(c, c->timers_until, wall + c->horizon_us);
            if (rc == 0 && c->backfilling && c->pconn && c->in_memory < (size_t)c->o.max_in_flight)
                rc = backfill_page(c);
            if (rc != 0)
                break;
            if (!c->backfilling && !c->st.streaming && c->pconn != NULL &&
                now >= c->stream_retry_at) {
                rc = start_stream(c);
                /*
                 * Busy: the walsender of a consumer that held the reader
                 * before may not have noticed its end yet.  This process
                 * holds the reader's lock, so it waits for the slot.
                 */
                if (rc == WALQ_ECONN || rc == WALQ_EBUSY) {
                    stream_lost(c);
                    rc = 0;
                } else if (rc == WALQ_ESLOT) {
                    slot_lost(c);
                    rc = 0;
                } else if (rc != 0) {
                    break;
                }
            }
            rc = dispatch(c, now);
            if (rc == 0 && !c->backfilling)
                rc = horizon_tick(c, now);
            if (rc == WALQ_ECONN) {
                primary_lost(c);
                rc = 0;
            }
            if (rc != 0)
                break;
        }
        pass_marks(c);
        if (c->pconn != NULL && ((c->ack.n > 0 && (c->ack.n >= (size_t)c->o.batch_size ||
                                                   now - c->ack.oldest >= c->ack_delay_us ||
                                                   (stopping && handler_running(c) == 0))) ||
                                 (c->nsql > 0 && (c->nsql >= (size_t)c->o.batch_size ||
                                                  now - c->sql_oldest >= c->ack_delay_us)) ||
                                 (c->sync_end && c->txq.safe_lsn >= c->sync_end) ||
                                 c->done_below > c->done_below_written)) {
            rc = flush_acks(c);
            if (rc == WALQ_ECONN) {
                primary_lost(c);
                rc = 0;
            } else if (rc != 0) {
                break;
            }
        }
        if (c->st.streaming && (now >= c->next_status || c->reply_now ||
                                (c->ack.n == 0 && c->txq.safe_lsn > c->confirmed &&
                                 now >= c->next_status - c->status_us * 9 / 10))) {
            rc = send_status(c, now, 0);
            if (rc == WALQ_ECONN) {
                stream_lost(c);
                rc = 0;
            } else if (rc != 0) {
                break;
            }
        }
        if (stopping && handler_running(c) == 0 && c->ack.n == 0 && !c->ack.inflight) {

            if (c->slot_gone) {
                rc = WALQ_ESLOT;
                break;
            }
            compact_at_exit(c);
            final_status(c);
            break;
        }
        if (c->o.drain && drained(c)) {
            compact_at_exit(c);
            final_status(c);
            walq__info(&c->log, "drained: every job committed before the start has an outcome");
            break;
        }
        /* Idle and draining: ask the server how far it has read. */
        if (c->o.drain && c->st.streaming && c->in_memory == 0 && c->cur == NULL &&
            now >= c->next_ping) {
            rc = send_status(c, now, 1);
            if (rc == WALQ_ECONN) {
                stream_lost(c);
                rc = 0;
            }
            c->next_ping = now + 200000;
        }

        /* What to wait for. */
        pfd[n].fd = c->wake[0];
        pfd[n++].events = POLLIN;
        stream_pfd = -1;
        if (c->st.streaming && !stopping) {
            stream_pfd = n;
            pfd[n].fd = walq__stream_socket(&c->st);
            pfd[n].events = (c->in_memory < (size_t)c->o.max_in_flight) ? POLLIN : 0;
            if (PQflush(c->st.conn) == 1)
                pfd[n].events |= POLLOUT;
            n++;
        }
        ack_pfd = -1;
        if (c->ack.inflight && c->pconn != NULL) {
            ack_pfd = n;
            pfd[n].fd = PQsocket(c->pconn);
            pfd[n++].events = POLLIN;
        }
        if (c->h != NULL)
            n += c->h->ops->fds(c->h, pfd + n, npfd - (size_t)n, now, &wake_at);
        if (c->st.streaming)
            wake_at = walq__min_deadline(wake_at, c->next_status);
        if (c->ack.n > 0)
            wake_at = walq__min_deadline(wake_at, c->ack.oldest + c->ack_delay_us);
        if (c->nsql > 0)
            wake_at = walq__min_deadline(wake_at, c->sql_oldest + c->ack_delay_us);
        if (c->pconn == NULL)
            wake_at = walq__min_deadline(wake_at, c->primary_retry_at);
        if (!c->st.streaming && !c->backfilling)
            wake_at = walq__min_deadline(wake_at, c->stream_retry_at);
        if (c->o.drain && c->st.streaming)
            wake_at = walq__min_deadline(wake_at, c->next_ping);
        if (c->timers.n > 0) {
            int64_t due = walq__heap_top(&c->timers)->run_at - wall;

            wake_at = walq__min_deadline(wake_at, now + (due > 0 ? due : 0));
        }
        if ((c->backfilling && c->in_memory < (size_t)c->o.max_in_flight) ||
            (c->ready.n > 0 && !stopping && handler_has_room(c)))
            timeout_ms = 0;
        else if (wake_at == 0)
            timeout_ms = 1000;
        else
            timeout_ms = wake_at <= now ? 0 : (int)((wake_at - now + 999) / 1000);
        if (timeout_ms > 1000)
            timeout_ms = 1000;

        if (poll(pfd, (nfds_t)n, timeout_ms) < 0 && errno != EINTR) {
            rc = walq__error(WALQ_ESYS, NULL, "poll failed: %s", strerror(errno));
            break;
        }
        if (pfd[0].revents & POLLIN) {
            char buf[64];

            while (read(c->wake[0], buf, sizeof(buf)) > 0) {
            }
        }
        now = walq__mono_us();

        /*
         * The stream: what arrived, as much as there is room for.  A socket
         * that hung up is noticed even while the consumer is too full to read.
         */
        if (stream_pfd >= 0 && (pfd[stream_pfd].revents & (POLLHUP | POLLERR)) &&
            PQconsumeInput(c->st.conn) == 0) {
            char msg[512];

            walq__error(WALQ_ECONN, NULL, "lost the replication connection to \"%s\": %s",
                        c->st.server, walq__pg_message(c->st.conn, NULL, msg, sizeof(msg)));
            stream_lost(c);
        }
        if (c->st.streaming && !stopping) {
            rc = read_stream(c);
            if (rc == WALQ_ECONN) {
                stream_lost(c);
                rc = 0;
            } else if (rc == WALQ_ESLOT) {
                slot_lost(c);
                rc = 0;
            } else if (rc != 0) {
                break;
            }
        }
        /* The ack statement in flight, if its result is in (the socket said so). */
        if (c->ack.inflight && c->pconn != NULL && ack_pfd >= 0 && pfd[ack_pfd].revents != 0) {
            int finished;

            rc = walq__ack_poll(&c->ack, c->pconn, &finished);
            if (finished)
                rc = acks_sent(c, rc);
            if (rc == WALQ_ECONN) {
                primary_lost(c);
                rc = 0;
            } else if (rc != 0) {
                break;
            }
        }
        /* Handlers: their progress, their finished jobs. */

        if (rc == 0 && c->h != NULL)
            rc = c->h->ops->process(c->h, now);
        if (rc != 0)
            break;
    }
    free(pfd);
    return rc;
}

static void reset_memory(walq_consumer *c)
{
    walq__job *job;

    kill_all(c);
    /* A batch in flight is abandoned with the connection: back with the rest. */
    c->ack.inflight = 0;
    walq__ack_requeue(&c->ack);
    /* A job sits in the ack batch and possibly also in a heap. */
    for (size_t i = 0; i < c->ack.n; i++) {
        job = c->ack.jobs[i];
        if (job->state == WALQ__JOB_ACKING)
            forget(c, job);
        else
            job->pending_idx = -1;
    }
    c->ack.n = 0;
    while ((job = walq__heap_pop(&c->ready)) != NULL)
        forget(c, job);
    while ((job = walq__heap_pop(&c->timers)) != NULL)
        forget(c, job);
    walq__txnq_free(&c->txq);
    walq__idset_clear(&c->live);
    c->cur = c->bf_txn = NULL;
    c->in_memory = c->retry_timers = 0;
    c->backfilling = 0;
    c->sync_end = 0;
    c->slot_gone = 0;
    c->fenced = 0;

    c->nskip = 0;
    c->cur_inserts = c->resume_skip = 0;
    c->skip_cur = 0;
    c->nmarks = 0;
    mark_reset(c);
}

static void close_all(walq_consumer *c)
{
    walq__stream_close(&c->st);
    if (c->sconn)
        PQfinish(c->sconn);
    if (c->pconn)
        PQfinish(c->pconn);
    c->sconn = c->pconn = NULL;
}

int walq_consumer_run(walq_consumer *c)
{
    int rc;

    c->errmsg[0] = '\0';
    for (;;) {
        rc = setup(c);
        if (rc == 0)
            rc = loop(c);
        if (!((rc == WALQ_ESLOT && c->slot_gone) || c->fenced) || c->stop_req)
            break;
        /* Everything recorded is safe in the table; the rest comes back. */
        reset_memory(c);
        close_all(c);
    }
    if (rc != 0)
        set_errmsg(c);
    reset_memory(c);
    close_all(c);
    return rc;
}

void walq_consumer_free(walq_consumer *c)
{
    if (c == NULL)
        return;
    walq__v1_consumer_del(c);
    reset_memory(c);
    close_all(c);
    walq__heap_free(&c->ready);
    walq__heap_free(&c->timers);
    walq__idset_free(&c->live);
    walq__ack_free(&c->ack);
    walq__decoder_free(c->dec);
    if (c->wake[0] >= 0)
        close(c->wake[0]);
    if (c->wake[1] >= 0)
        close(c->wake[1]);
    if (c->h != NULL)
        c->h->ops->free(c->h);
    free(c->sqlq);
    free(c->sql);
    free(c->skip);
    free(c->mark_lockers);
    free(c->source);
    free(c->primary);
    free(c->group);
    free_strv(c->queues);
    free_strv(c->argv);
    free(c);
}
