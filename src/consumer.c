/*
 * The consumer: wires the stages together.
 *
 *   reader (stream -> decode) -> route -> schedule -> run -> ack -> confirm
 *
 * One thread, one poll loop, whose turn is a short list of named phases.
 * The slot's confirmed position only moves past transactions all of whose
 * jobs have an outcome committed on the primary.  What each stage decides
 * lives with that stage; the statements the consumer runs are in registry.c.
 * The public functions, set-up and what the reader hands over are in files
 * of their own, above this one (consumer_int.h lists them).
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "consumer_int.h"
#include "db.h"
#include "lsn.h"
#include "publication.h"
#include "text.h"

/* The most of a handler's error text that is kept, in bytes. */
#define LAST_ERROR_MAX 2048

/* Tells the owner's watch callback, when it is due, what the consumer is doing. */
void walq__consumer_watch_state(walq_consumer *c, walq_state st)
{
    walq_watch w;

    if (c->watcher.fn == NULL)
        return;
    w.state = c->rd.stop_req ? WALQ_STATE_STOPPING : st;
    w.received_lsn = c->rd.recv_lsn > c->rd.last_end ? c->rd.recv_lsn : c->rd.last_end;
    w.confirmed_lsn = c->rd.confirmed;
    w.in_memory = c->sched.in_memory;
    walq__watcher_call(&c->watcher, &w, walq__mono_us());
}

/* The same state again: a wait on a server or a nap is no change. */
void walq__consumer_watch_again(walq_consumer *c)
{
    walq__consumer_watch_state(c, c->watcher.state < 0 ? WALQ_STATE_STARTING
                                                       : (walq_state)c->watcher.state);
}

/* A nap of ms at most, short enough for the watch callback to come on time. */
int walq__consumer_nap_ms(const walq_consumer *c, int ms)
{
    int64_t every = c->watcher.interval_us / 1000;

    return c->watcher.fn != NULL && every > 0 && every < ms ? (int)every : ms;
}

/* ------------------------------------------------------------------ */
/* Outcomes                                                            */

static void count(walq_consumer *c, const walq__job *job, walq__status st)
{
    if (st == WALQ__ST_DONE)
        c->stats.done++;
    else if (st == WALQ__ST_DEAD)
        c->stats.dead++;
    else if (st == WALQ__ST_SCHEDULED)
        c->stats.retried++;
    if (st == WALQ__ST_DONE || st == WALQ__ST_DEAD || st == WALQ__ST_SCHEDULED)
        walq__metrics_job(c->m, job->queue,
                          st == WALQ__ST_DONE   ? WALQ__EV_DONE
                          : st == WALQ__ST_DEAD ? WALQ__EV_DEAD
                                                : WALQ__EV_RETRIED);
}

/*
 * A job's last error as it will be stored: whatever a handler wrote, made
 * valid UTF-8 and cut to a sane length, so that no text a handler writes can
 * make the ack fail.  *out is NULL for no error.
 */
static int error_text(const char *err, char **out)
{
    *out = NULL;
    if (err == NULL || *err == '\0')
        return 0;
    *out = walq__utf8_clean(err, strlen(err), LAST_ERROR_MAX);
    return *out ? 0 : walq__error(WALQ_ENOMEM, NULL, "out of memory");
}

/* Puts the job's outcome in the next ack transaction. */
int walq__consumer_record(walq_consumer *c, walq__job *job, walq__status st, const char *err)
{
    char *text;
    int rc = error_text(err, &text);

    if (rc != 0)
        return rc;
    free(job->last_error);
    job->last_error = text;
    job->pending = st;
    job->pending_attempts = job->attempts;
    return walq__ack_add(&c->ack, job);
}

/* A new job: a job whose time has not come is recorded as scheduled at once. */
static int admit(walq_consumer *c, walq__job *job, int64_t now_wall)
{
    int scheduled = 0, rc;

    c->stats.received++;
    walq__metrics_job(c->m, job->queue, WALQ__EV_RECEIVED);
    rc = walq__sched_admit(&c->sched, job, now_wall, &scheduled);
    return rc ? rc : scheduled ? walq__consumer_record(c, job, WALQ__ST_SCHEDULED, NULL) : 0;
}

/*
 * A job walq cannot run, for its data alone (a run_at it cannot schedule):
 * dead at once, with the reason, and its transaction lets go of it as of
 * any other job.  The group goes on.
 */
static int reject(walq_consumer *c, walq__job *job, const char *why)
{
    walq__warn(&c->log, "job %lld is dead: %s", (long long)job->id, why);
    c->stats.dead++;
    walq__metrics_job(c->m, job->queue, WALQ__EV_DEAD);
    walq__sched_reject(&c->sched, job);
    return walq__consumer_record(c, job, WALQ__ST_DEAD, why);
}

/*
 * A job of transaction txn (ending at lsn) enters memory; has_row says that
 * walq.outcomes has a row of it already, which its outcomes update.
 */
int walq__consumer_take(walq_consumer *c, const walq__job_row *row, walq__txn *txn, uint64_t lsn,
                        int has_row)
{
    walq__job *job = walq__sched_job(&c->sched, row);
    char why[256];

    if (job == NULL)
        return walq__error(WALQ_ENOMEM, NULL, "out of memory");
    job->has_row = has_row;
    job->lsn = lsn;
    job->txn = txn;
    txn->outstanding++;
    if (row->bad_run_at != NULL) {
        c->stats.received++;
        walq__metrics_job(c->m, job->queue, WALQ__EV_RECEIVED);
        snprintf(why, sizeof(why),
                 "run_at \"%.64s\" is out of the range walq schedules (the years 1 to 9999)",
                 row->bad_run_at);
        return reject(c, job, why);
    }
    return admit(c, job, walq__wall_us());
}

/* The handler's report of an attempt: settle the job, queue its outcome. */
int walq__consumer_on_done(void *arg, walq__job *job, walq__verdict v, const char *err)
{
    walq_consumer *c = arg;
    int64_t run_at = 0;
    walq__status st = walq__sched_decide(&c->sched, job, v, &run_at);
    int rc = walq__sched_settle(&c->sched, job, st, run_at, err);

    walq__metrics_ran(c->m, job->queue, job->started_us);
    count(c, job, st);
    return rc ? rc : walq__consumer_record(c, job, st, st == WALQ__ST_DONE ? NULL : err);
}

/*
 * An attempt of a handler that runs inside the ack transaction: its outcome
 * joins the batch now, and the job moves only once the transaction commits.
 */
/* Room for one more tentative outcome; NULL when out of memory. */
static tentative *tentative_next(walq_consumer *c, walq__job *job)
{
    tentative *t;

    if (c->ntent == c->tentcap) {
        size_t cap = c->tentcap ? c->tentcap * 2 : 64;
        tentative *grown = realloc(c->tent, cap * sizeof(*grown));

        if (grown == NULL)
            return NULL;
        c->tent = grown;
        c->tentcap = cap;
    }
    t = &c->tent[c->ntent];
    t->job = job;
    t->run_at = 0;
    t->recorded = 0;
    t->old_pending = job->pending;
    t->old_pending_attempts = job->pending_attempts;
    t->old_error = job->last_error;
    t->old_run_at = job->run_at;
    return t;
}

int walq__consumer_on_decided(void *arg, walq__job *job, walq__verdict v, const char *err)
{
    walq_consumer *c = arg;
    tentative *t = tentative_next(c, job);

    if (t == NULL)
        return walq__error(WALQ_ENOMEM, NULL, "out of memory");
    walq__metrics_ran(c->m, job->queue, job->started_us);
    t->st = walq__sched_decide(&c->sched, job, v, &t->run_at);
    job->last_error = NULL;
    if (t->st != WALQ__ST_DONE && error_text(err, &job->last_error) != 0) {
        job->last_error = t->old_error;
        return WALQ_ENOMEM;
    }
    job->pending = t->st;
    job->pending_attempts = job->attempts;
    if (t->st == WALQ__ST_SCHEDULED)
        job->run_at = t->run_at;
    c->ntent++;
    return walq__ack_add(&c->ack, job);
}

/*
 * A job the group finished in an earlier try (its ack committed, and the
 * answer was lost): it goes through the batch only to let its transaction
 * go, as a cancelled one does, so that the outcome that stands is the only
 * one written.
 */
int walq__consumer_on_recorded(void *arg, walq__job *job, walq__status st)
{
    walq_consumer *c = arg;
    tentative *t = tentative_next(c, job);

    if (t == NULL)
        return walq__error(WALQ_ENOMEM, NULL, "out of memory");
    t->st = st;
    t->recorded = 1;
    job->last_error = NULL;
    job->pending = WALQ__ST_CANCELLED;
    job->pending_attempts = job->attempts;
    c->ntent++;
    return walq__ack_add(&c->ack, job);
}

/* The ack transaction committed: the outcomes decided in it stand. */
static int tentative_commit(walq_consumer *c)
{
    int rc = 0;

    for (size_t i = 0; i < c->ntent; i++) {
        tentative *t = &c->tent[i];

        free(t->old_error);
        if (t->recorded) {
            walq__info(&c->log, "job %lld was recorded %s already; not run again",
                       (long long)t->job->id,
                       t->st == WALQ__ST_DONE   ? "done"
                       : t->st == WALQ__ST_DEAD ? "dead"
                                                : "cancelled");
            t->job->state = WALQ__JOB_ACKING;
            continue;
        }
        if (rc == 0)
            rc = walq__sched_settle(&c->sched, t->job, t->st, t->run_at, t->job->last_error);
        count(c, t->job, t->st);
    }
    c->ntent = 0;
    return rc;
}

/* It failed: the jobs go back to how they were, to run again in the next try. */
static void tentative_undo(walq_consumer *c, size_t batch_before)
{
    for (size_t i = 0; i < c->ntent; i++) {
        walq__job *job = c->tent[i].job;

        free(job->last_error);
        job->last_error = c->tent[i].old_error;
        job->pending = c->tent[i].old_pending;
        job->pending_attempts = c->tent[i].old_pending_attempts;
        job->run_at = c->tent[i].old_run_at;
    }
    c->ntent = 0;
    for (size_t i = batch_before; i < c->ack.n; i++)
        c->ack.jobs[i]->pending_idx = -1;
    c->ack.n = batch_before;
}

/* A job whose handler was killed: no outcome, it runs again after a restart. */
void walq__consumer_on_abandon(void *arg, walq__job *job)
{
    walq_consumer *c = arg;

    /* A job in the ack batch is freed with the batch; see walq__consumer_reset_memory(). */
    if (job->pending_idx >= 0)
        job->state = WALQ__JOB_ACKING;
    else
        walq__sched_forget(&c->sched, job);
}

/* Jobs waiting for the ack transaction to run them (the sql handler's). */
static size_t in_ack_waiting(const walq_consumer *c)
{
    return c->h->in_ack ? c->h->in_ack->waiting(c->h) : 0;
}

/* ------------------------------------------------------------------ */
/* The primary                                                         */

static void primary_lost(walq_consumer *c)
{
    walq__retry_lost(&c->primary_retry, &c->log, "the primary");
    if (c->ack.inflight) {
        /* Its result will never come: the batch is written again. */
        c->ack.inflight = 0;
        walq__ack_requeue(&c->ack);
        c->flush_failed = 1;
    }
    if (c->pconn)
        PQfinish(c->pconn);
    c->pconn = NULL;
    /*
     * Without the primary nothing can be confirmed, and a server shutting
     * down waits for its walsenders until their client confirms everything
     * sent; letting go of the stream lets it stop.
     */
    if (c->rd.st.conn != NULL)
        walq__reader_lost(&c->rd);
}

/*
 * A plain connection of the consumer's: it does not block on sends (waits
 * are walq__wait_result's, bounded), and its statements are bounded too.
 * *pooled: it goes through a connection pooler.
 */
int walq__consumer_connect_session(walq_consumer *c, PGconn **conn, const char *conninfo,
                                   int *pooled)
{
    int rc = walq__connect(conn, conninfo, WALQ__CONN_SQL, "walq consume");

    if (rc == 0 && PQsetnonblocking(*conn, 1) != 0)
        rc = walq__error(WALQ_ECONN, NULL, "could not make a connection non-blocking");
    if (rc == 0)
        rc = walq__reg_session(*conn, c->o.primary_timeout_ms, pooled);
    return rc;
}

/* The primary's session; through a pooler the acks carry what they need. */
int walq__consumer_connect_primary_session(walq_consumer *c)
{
    int rc = walq__consumer_connect_session(c, &c->pconn, c->primary, &c->pooled);

    c->ack.pooled = c->pooled;
    c->ack.lease = c->pooled ? c->lease_text : NULL;
    snprintf(c->ack.timeout_text, sizeof(c->ack.timeout_text), "%lld",
             (long long)c->o.primary_timeout_ms);
    return rc;
}

/* The lease is renewed a third of its length after it was last. */
void walq__consumer_lease_renewed(walq_consumer *c, int64_t at)
{
    c->lease_renew_at = at + c->lease_us / 3;
}

/*
 * Back on the primary after losing it.  If another process held the reader
 * in the meantime (its epoch moved), what is in memory is stale: the loop
 * starts over.  A lock still held at the old epoch is this process's own
 * previous session, not yet gone: that is retried.  Through a pooler the
 * lease is renewed at the same epoch, or the reader is gone.
 */
static int connect_primary(walq_consumer *c)
{
    walq__reg_lock lk;
    int64_t now = walq__mono_us();
    int rc = walq__consumer_connect_primary_session(c), held = 1;

    if (rc == 0 && c->pooled) {
        rc = walq__reg_lease(&c->rg, c->pconn, c->epoch, c->lease_text, &held);
        lk.epoch = held ? c->epoch : -1;
        lk.got = held;
        snprintf(lk.who, sizeof(lk.who), "its epoch moved on");
        if (rc == 0 && held)
            walq__consumer_lease_renewed(c, now);
    } else if (rc == 0) {
        rc = walq__reg_try_lock(&c->rg, c->pconn, 0, c->epoch, &lk);
    }
    if (rc == 0 && lk.epoch != c->epoch) {
        walq__warn(&c->log,
                   "another process took this reader over while the primary was unreachable "
                   "(%s); starting over",
                   lk.who);
        c->fenced = 1;
    } else if (rc == 0 && !lk.got) {
        rc = walq__error(WALQ_EBUSY, NULL, "the reader's lock is still held by %s", lk.who);
    }
    if (rc != 0 && c->pconn) {
        PQfinish(c->pconn);
        c->pconn = NULL;
    }
    return rc;
}

/* ------------------------------------------------------------------ */
/* Acks                                                                */

/* An ack committed: how far it took the cursor and the seals is durable. */
static void acked(walq_consumer *c, uint64_t cursor, int32_t sealed_through, int64_t sent_at)
{
    c->stats.acks++;
    walq__metrics_acked(c->m, sent_at);
    walq__consumer_lease_renewed(c, sent_at);
    walq__retry_ok(&c->primary_retry);
    c->flush_failed = 0;
    c->rd.durable = cursor;
    walq__seals_written(&c->seals, sealed_through);
    if (c->sync_end && cursor >= c->sync_end)
        c->sync_end = 0;
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
    for (size_t i = 0; i < c->ack.nsent; i++) {
        walq__job *job = c->ack.sent[i];

        if (job->state == WALQ__JOB_ACKING && job->pending_idx < 0)
            walq__sched_release(&c->sched, job);
    }
    c->ack.nsent = 0;
    acked(c, c->ack.sent_cursor, c->ack.sent_sealed_through, c->ack.sent_at);
    return 0;
}

/* Each job's first outcome lets its transaction go; the cursor is how far that takes it. */
static void release_txns(walq_consumer *c)
{
    for (size_t i = 0; i < c->ack.n; i++) {
        walq__job *job = c->ack.jobs[i];

        if (job->txn != NULL) {
            walq__txnq_record(&c->txq, job->txn);
            job->txn = NULL;
        }
    }
    walq__seals_pass(&c->seals, c->txq.safe_lsn);
}

/*
 * Waits for the ack statement in flight, if any, so that the primary
 * connection can take another query.  A lost connection is handled here:
 * afterwards c->pconn may be NULL.
 */
int walq__consumer_settle_acks(walq_consumer *c)
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
 * The batch with the jobs of a handler that runs inside the ack transaction
 * (the sql handler): their statements and their outcomes commit together,
 * so their effects happen exactly once.
 */
static int flush_in_ack(walq_consumer *c)
{
    size_t batch_before = c->ack.n;
    int with_jobs = in_ack_waiting(c) > 0, rc = 0;
    int64_t began = walq__mono_us();

    if (with_jobs) {
        rc = walq__reg_begin(&c->rg, c->pconn, "begin the ack transaction");
        if (rc == 0)
            rc = c->h->in_ack->run(c->h, c->pconn);
    }
    if (rc == 0) {
        release_txns(c);
        rc = walq__ack_flush(&c->ack, c->pconn, c->group, c->slot, c->txq.safe_lsn, c->rd.durable,
                             c->seals.through);
    }
    if (rc == 0 && with_jobs)
        rc = walq__exec(c->pconn, "commit the ack transaction", "COMMIT");
    if (rc != 0) {
        /* Nothing was recorded: the batch stays for the next try. */
        c->flush_failed = 1;
        if (with_jobs) {
            if (PQstatus(c->pconn) == CONNECTION_OK && rc != WALQ_ECONN)
                walq__exec(c->pconn, "roll back the ack transaction", "ROLLBACK");
            c->h->in_ack->end(c->h, 0);
            tentative_undo(c, batch_before);
        }
        return rc;
    }
    if (with_jobs)
        c->h->in_ack->end(c->h, 1);
    rc = tentative_commit(c);
    for (size_t i = 0; i < c->ack.n; i++) {
        walq__job *job = c->ack.jobs[i];

        job->pending_idx = -1;
        if (job->state == WALQ__JOB_ACKING)
            walq__sched_release(&c->sched, job);
    }
    c->ack.n = 0;
    acked(c, c->txq.safe_lsn, c->seals.through, began);
    return rc;
}

/*
 * Writes the batch.  Without a handler in the ack transaction it is sent
 * without waiting, so that the stream is read and handlers run while the
 * primary writes it; its result comes in acks_sent().
 */
static int flush_acks(walq_consumer *c)
{
    /* One statement in flight at a time: the next batch gathers meanwhile. */
    if (c->ack.inflight)
        return 0;
    /*
     * An empty batch is still written once after a resync, so that the
     * cursor records that the backlog is done even if it had no job.
     */
    walq__seals_pass(&c->seals, c->txq.safe_lsn);
    if (c->ack.n == 0 && in_ack_waiting(c) == 0 &&
        !(c->sync_end && c->txq.safe_lsn >= c->sync_end) && !walq__seals_unwritten(&c->seals))
        return 0;
    if (c->pconn == NULL)
        return WALQ_ECONN;
    if (c->h->in_ack != NULL)
        return flush_in_ack(c);
    release_txns(c);
    return walq__ack_send(&c->ack, c->pconn, c->group, c->slot, c->txq.safe_lsn, c->rd.durable,
                          c->seals.through);
}

/* Is it time to write the batch? */
static int acks_due(const walq_consumer *c, int64_t now, int stopping)
{
    size_t n = c->ack.n;

    if (c->pconn == NULL)
        return 0;
    return (n > 0 && (n >= (size_t)c->o.batch_size || now - c->ack.oldest >= c->ack_delay_us ||
                      (stopping && c->h->ops->running(c->h) == 0))) ||
           (c->h->in_ack != NULL && c->h->in_ack->due(c->h, now)) ||
           (c->sync_end && c->txq.safe_lsn >= c->sync_end) || walq__seals_unwritten(&c->seals);
}

/* ------------------------------------------------------------------ */
/* What the reader hands over                                          */

/* ------------------------------------------------------------------ */
/* Taking jobs in: timers, the backlog, the stream                     */

/*
 * Loads the jobs recorded as scheduled with a run_at after `after` and up to
 * `until` (Unix microseconds), and learns whether later ones remain.
 */
int walq__consumer_load_timers(walq_consumer *c, int64_t after, int64_t until)
{
    size_t room = walq__sched_room(&c->sched);
    PGresult *res;
    int rc, n = 0, later = 0;

    rc = walq__consumer_settle_acks(c);
    if (rc != 0 || c->pconn == NULL || room == 0)
        return rc;
    rc = walq__reg_timers(&c->rg, c->pconn, after, until, room, &res);
    if (rc != 0)
        return rc;
    /*
     * As many as there is room for: the window ends just before the last
     * one's time (those of that time that are here already stay, once).
     */
    if ((size_t)PQntuples(res) == room) {
        walq__job_row last;

        walq__reg_job_row(res, PQntuples(res) - 1, &last);
        until = last.run_at - 1 > after ? last.run_at - 1 : after;
    }
    for (int i = 0; rc == 0 && i < PQntuples(res); i++) {
        walq__job_row row;
        walq__job *job;

        walq__reg_job_row(res, i, &row);
        /* Here already (waiting for its record to commit, say): one copy. */
        if (walq__sched_has(&c->sched, row.id))
            continue;
        job = walq__sched_job(&c->sched, &row);
        if (job == NULL) {
            rc = walq__error(WALQ_ENOMEM, NULL, "out of memory");
            break;
        }
        job->has_row = 1;
        rc = walq__sched_timer(&c->sched, job);
        if (rc != 0)
            walq__sched_forget(&c->sched, job);
        n++;
    }
    PQclear(res);
    if (rc != 0)
        return rc;
    if (n > 0)
        walq__info(&c->log, "%d scheduled jobs waiting for their time", n);
    rc = walq__reg_later_timers(&c->rg, c->pconn, until, &later);
    if (rc == 0)
        walq__sched_timers_loaded(&c->sched, until, later);
    return rc;
}

static int backfill_done(walq_consumer *c)
{
    int rc = walq__reg_backlog_close(c->sconn);

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
 * The source's connection broke while the backlog was read from it: what is
 * recorded is safe, and set-up starts over (as for a lost slot), reading the
 * backlog again from a new snapshot.
 */
static int source_lost(walq_consumer *c)
{
    walq__warn(&c->log, "%s; finishing the running jobs, then reading the backlog again",
               walq_last_error());
    walq__reader_close(&c->rd);
    c->slot_gone = 1;
    return 0;
}

/*
 * The next page of the backlog: jobs of the group's queues that were
 * committed before the slot's consistent point and have no outcome.
 */
static int backfill_page(walq_consumer *c)
{
    PGresult *page = NULL, *known = NULL;
    int rc;

    /* The page is checked against outcomes on the primary connection. */
    rc = walq__consumer_settle_acks(c);
    if (rc != 0 || c->pconn == NULL)
        return rc;
    rc = walq__reg_backlog_page(c->sconn, &page);
    if (rc == 0 && PQntuples(page) == 0) {
        PQclear(page);
        rc = backfill_done(c);
        if (rc == 0)
            return 0;
    }
    if (rc == WALQ_ECONN)
        return source_lost(c);
    if (rc != 0)
        return rc;
    rc = walq__reg_backlog_known(&c->rg, c->pconn, page, &known);
    for (int i = 0; rc == 0 && i < PQntuples(page); i++) {
        walq__reg_known k = walq__reg_known_at(known, i);
        walq__job_row row;

        walq__reg_job_row(page, i, &row);
        if (k == WALQ__KNOWN_RECORDED || walq__sched_has(&c->sched, row.id))
            continue;
        rc = walq__consumer_take(c, &row, c->bf_txn, c->bf_txn->end_lsn, k == WALQ__KNOWN_QUEUED);
    }
    PQclear(known);
    PQclear(page);
    return rc;
}

/*
 * The slot went away under us (dropped, or invalidated for falling behind).
 * Finish and record what is running, then start over: set-up recreates the
 * slot and reads the group's unfinished jobs from the table.
 */
static void slot_lost(walq_consumer *c)
{
    walq__warn(&c->log, "%s; finishing the running jobs, then resynchronizing", walq_last_error());
    walq__reader_close(&c->rd);
    c->slot_gone = 1;
}

static int start_stream(walq_consumer *c)
{
    int rc = walq__reader_start(&c->rd);

    /*
     * Busy: the walsender of a consumer that held the reader before may not
     * have noticed its end yet.  This process holds the reader's lock, so it
     * waits for the slot.
     */
    if (rc == WALQ_ECONN || rc == WALQ_EBUSY) {
        walq__reader_lost(&c->rd);
        rc = 0;
    }
    return rc;
}

static void kill_all(walq_consumer *c)
{
    c->h->ops->kill_all(c->h);
}

/* ------------------------------------------------------------------ */
/* The loop, phase by phase                                            */

/* Reconnects the primary when due. */
static int phase_reconnect(walq_consumer *c, int64_t now)
{
    int rc;

    if (c->pconn != NULL || !walq__retry_due(&c->primary_retry, now))
        return 0;
    rc = connect_primary(c);
    if (c->fenced)
        return WALQ_EBUSY;
    if (rc != 0)
        return WALQ_ECONN; /* walq_last_error() says why; tried again later */
    walq__info(&c->log, "reconnected to the primary");
    return 0;
}

/*
 * Takes jobs in: timers whose time came, scheduled jobs that live only in
 * the table as their time nears (not while some wait for their record to
 * commit, or one of those could fall between the table and memory), the
 * backlog a page at a time, and the stream once the backlog is read.
 */
static int phase_take_in(walq_consumer *c, int64_t now, int64_t wall)
{
    int rc = walq__sched_promote(&c->sched, wall);

    if (rc == 0 && c->pconn && walq__sched_timers_wanted(&c->sched, wall) && c->ack.n == 0 &&
        !c->ack.inflight && in_ack_waiting(c) == 0)
        rc = walq__consumer_load_timers(c, c->sched.timers_until,
                                        wall + c->sched.cfg.timer_horizon_us);
    if (rc == 0 && c->backfilling && c->pconn && !walq__sched_full(&c->sched))
        rc = backfill_page(c);
    if (rc == 0 && !c->backfilling && c->pconn && walq__reader_start_due(&c->rd, now))
        rc = start_stream(c);
    return rc;
}

/* Starts ready jobs while the handler has room. */
static int phase_dispatch(walq_consumer *c, int64_t now)
{
    while (c->sched.ready.n > 0 && c->h->ops->has_room(c->h)) {
        walq__job *job = walq__sched_next(&c->sched);
        int rc;

        job->attempts++;
        job->state = WALQ__JOB_RUNNING;
        job->started_us = now;
        rc = c->h->ops->start(c->h, job, now);
        /* A failure here stops the consumer; the job must not leak. */
        if (rc != 0 && job->state == WALQ__JOB_RUNNING && job->pending_idx < 0)
            walq__sched_unstart(&c->sched, job);
        if (rc != 0)
            return rc;
    }
    return 0;
}

/* Writes the batch of outcomes when it is due. */
static int phase_record(walq_consumer *c, int64_t now, int stopping)
{
    walq__seals_pass(&c->seals, c->txq.safe_lsn);
    return acks_due(c, now, stopping) ? flush_acks(c) : 0;
}

/* With nothing waiting to be recorded, everything safe is durable. */
static void settle_durable(walq_consumer *c)
{
    if (c->ack.n == 0 && !c->ack.inflight && in_ack_waiting(c) == 0 && !c->flush_failed &&
        c->txq.safe_lsn > c->rd.durable)
        c->rd.durable = c->txq.safe_lsn;
}

/*
 * Through a pooler the reader is held by a lease, which every ack moves on;
 * with no ack for a while, it is renewed on its own.  The reader may have
 * been taken over meanwhile (the lease ran out while the primary was slow):
 * the loop starts over.
 */
static int renew_lease(walq_consumer *c, int64_t now)
{
    int held = 0;
    int rc = walq__reg_lease(&c->rg, c->pconn, c->epoch, c->lease_text, &held);

    if (rc != 0)
        return rc;
    if (!held) {
        walq__warn(&c->log, "another process took this reader over; starting over");
        c->fenced = 1;
        return WALQ_EBUSY;
    }
    walq__consumer_lease_renewed(c, now);
    return 0;
}

/*
 * Status updates to the source (at once when it asks; an idle --drain asks
 * it where it is), and every so often the generations' upkeep on the
 * primary: the next generation, seals, and the removal of finished jobs
 * after the retention period.
 */
/*
 * PostgreSQL 18 skips a publication that went away, and the stream goes on
 * sending nothing; 15 to 17 end it.  Where the primary sees the source's
 * publications (the source is the primary or its standby), a pgoutput
 * reader looks for its own now and then and reads the group again from
 * walq.jobs when it is gone.
 */
static int check_publication(walq_consumer *c)
{
    int exists = 1;
    int rc;

    if (!c->rd.pgoutput || !c->pub_seen || !c->rd.st.streaming || c->pconn == NULL)
        return 0;
    rc = walq__pub_exists(c->pconn, c->slot, &exists);
    if (rc == 0 && !exists)
        rc = walq__error(WALQ_ESLOT, NULL, "publication \"%s\" of replication slot \"%s\" is gone",
                         c->slot, c->slot);
    return rc;
}

static int phase_tick(walq_consumer *c, int64_t now, int stopping)
{
    int rc;

    settle_durable(c);
    rc = walq__reader_tick(&c->rd, now, c->ack.n == 0);
    if (rc == 0 && c->sched.in_memory == 0)
        rc = walq__reader_ping(&c->rd, now);
    /* The ack in flight has as long as any other answer of the primary. */
    if (rc == 0 && c->ack.inflight && c->waiter.timeout_us > 0 &&
        now - c->ack.sent_at > c->waiter.timeout_us) {
        char name[128];

        rc = walq__error(
            WALQ_ECONN, NULL, "could not record outcomes: \"%s\" did not answer within %.1f s",
            walq__conn_name(c->pconn, name, sizeof(name)), (double)c->waiter.timeout_us / 1e6);
    }
    if (rc == 0 && !stopping && c->pconn != NULL && now >= c->next_maintain) {
        rc = walq__consumer_settle_acks(c);
        if (rc == 0 && c->pconn != NULL)
            rc = walq__reg_maintain(c->pconn, &c->maintain_us);
        if (rc == 0 && c->pconn != NULL)
            walq__metrics_primary_ok(c->m);
        if (rc == 0)
            rc = check_publication(c);
        if (rc == 0)
            c->next_maintain = now + c->maintain_us;
    }
    if (rc == 0 && c->pooled && c->pconn != NULL && !c->ack.inflight && now >= c->lease_renew_at)
        rc = renew_lease(c, now);
    return rc;
}

/* The last word to the server: everything recorded is confirmed. */
static void final_status(walq_consumer *c)
{
    settle_durable(c);
    walq__reader_final_status(&c->rd);
}

static int drained(const walq_consumer *c)
{
    return !c->backfilling && c->sync_end == 0 && c->rd.st.streaming &&
           walq__reader_caught_up(&c->rd) && walq__sched_idle(&c->sched) && c->ack.n == 0 &&
           !c->ack.inflight && c->txq.head == NULL && !walq__seals_unwritten(&c->seals);
}

/* 1 when the loop is done: stopped with everything recorded, or drained. */
static int phase_finish(walq_consumer *c, int stopping)
{
    if (stopping && c->h->ops->running(c->h) == 0 && c->ack.n == 0 && !c->ack.inflight) {
        if (c->slot_gone)
            return WALQ_ESLOT;
        final_status(c);
        return 1;
    }
    if (c->o.drain && drained(c)) {
        final_status(c);
        walq__info(&c->log, "drained: every job committed before the start has an outcome");
        return 1;
    }
    return 0;
}

/*
 * Waits for the stream (for input only while there is room), the ack in
 * flight, the handlers, and the next deadline of any of them.
 */
static int phase_wait(walq_consumer *c, walq__wait *w, int64_t now, int stopping, int *ack_idx)
{
    unsigned flags = 0;

    if (!stopping)
        flags |= WALQ__WAIT_STREAM | (walq__sched_full(&c->sched) ? 0 : WALQ__WAIT_INPUT);
    if (!c->backfilling && c->pconn != NULL)
        flags |= WALQ__WAIT_START;
    if (c->sched.in_memory == 0)
        flags |= WALQ__WAIT_PING;
    walq__reader_wait_begin(&c->rd, w, now, flags);
    *ack_idx = -1;
    if (c->ack.inflight && c->pconn != NULL) {
        /* A connection that does not block may hold part of the statement still. */
        short events = PQflush(c->pconn) == 1 ? POLLIN | POLLOUT : POLLIN;

        *ack_idx = walq__wait_add(w, PQsocket(c->pconn), events);
        if (c->waiter.timeout_us > 0)
            walq__wait_until(w, c->ack.sent_at + c->waiter.timeout_us);
    }
    w->n += c->h->ops->fds(c->h, w->pfd + w->n, w->cap - w->n, now, &w->wake_at);
    if (c->ack.n > 0 && !c->ack.inflight)
        walq__wait_until(w, c->ack.oldest + c->ack_delay_us);
    if (c->pconn == NULL)
        walq__wait_until(w, c->primary_retry.at > now ? c->primary_retry.at : now);
    else if (c->pooled)
        walq__wait_until(w, c->lease_renew_at);
    walq__wait_until(w, walq__sched_next_due(&c->sched, now, walq__wall_us()));
    walq__wait_until(w, walq__watcher_due(&c->watcher));
    if ((c->backfilling && !walq__sched_full(&c->sched)) ||
        (c->sched.ready.n > 0 && !stopping && c->h->ops->has_room(c->h)))
        w->at_once = 1;
    return walq__reader_wait(&c->rd, w);
}

/* What arrived: the stream, the ack statement's result, the handlers' progress. */
static int phase_read(walq_consumer *c, walq__wait *w, int stopping, int ack_idx)
{
    int64_t now = walq__mono_us();
    int rc = 0;

    if (!stopping)
        rc = walq__reader_read(&c->rd, NULL);
    if (rc == 0 && ack_idx >= 0 && c->ack.inflight && c->pconn != NULL &&
        w->pfd[ack_idx].revents != 0) {
        int finished = 0;

        rc = walq__ack_poll(&c->ack, c->pconn, &finished);
        if (finished)
            rc = acks_sent(c, rc);
    }
    if (rc == 0)
        rc = c->h->ops->process(c->h, now);
    return rc;
}

/* What the loop is doing, for the watch callback. */
static walq_state loop_state(const walq_consumer *c)
{
    if (c->pconn == NULL)
        return WALQ_STATE_RECONNECTING;
    if (c->backfilling)
        return WALQ_STATE_BACKFILL;
    if (c->rd.st.streaming)
        return WALQ_STATE_STREAMING;
    return c->rd.retry.failures > 0 ? WALQ_STATE_RECONNECTING : WALQ_STATE_STARTING;
}

/*
 * The gauges of --http and the jobs' counts since the last turn, once a
 * turn: a few stores under the metrics' mutex.
 */
static void publish(walq_consumer *c)
{
    walq__gauges g = {0};

    walq__reader_gauges(&c->rd, &g);
    g.primary_up = c->pconn != NULL;
    g.in_flight = (uint64_t)c->h->ops->running(c->h);
    g.in_memory = c->sched.in_memory;
    g.ack_waiting = c->ack.n + c->ack.nsent + in_ack_waiting(c);
    g.ack_oldest_us = c->ack.n > 0 ? c->ack.oldest : c->ack.inflight ? c->ack.sent_at : 0;
    walq__metrics_publish(c->m, &g);
}

/*
 * What a reload may change while the consumer runs, with the names its log
 * gives them (docs/c-api.md lists them).  The other fields of the options
 * are fixed when the consumer is opened.
 */
#define RELOADED(XX)                                                                               \
    XX(concurrency, "concurrency", int)                                                            \
    XX(timeout_ms, "timeout_ms", int64_t)                                                          \
    XX(backoff_min_ms, "backoff_min_ms", int64_t)                                                  \
    XX(backoff_max_ms, "backoff_max_ms", int64_t)                                                  \
    XX(batch_size, "batch_size", int)                                                              \
    XX(ack_delay_ms, "ack_delay_ms", int64_t)                                                      \
    XX(max_in_flight, "max_in_flight", int)                                                        \
    XX(max_in_flight_bytes, "max_in_flight_bytes", int64_t)                                        \
    XX(log_level, "log_level", int)

/*
 * Applies the options of walq_consumer_reconfigure(), if any came: what
 * runs keeps its limits (a handler its deadline), what starts from now on
 * has the new ones.  The wait grows with the handlers' slots.
 */
static int phase_settings(walq_consumer *c, walq__wait *w)
{
    walq__handler_limits lim;
    walq_options n;
    size_t fds;
    int pending, rc = 0;

    pthread_mutex_lock(&c->reconf_lock);
    pending = c->reconf_pending;
    n = c->reconf;
    c->reconf_pending = 0;
    pthread_mutex_unlock(&c->reconf_lock);
    if (!pending)
        return 0;
    lim = (walq__handler_limits){n.concurrency, n.timeout_ms * 1000, n.batch_size,
                                 n.ack_delay_ms * 1000};
    if (c->h->ops->set_limits != NULL && (rc = c->h->ops->set_limits(c->h, &lim)) < 0)
        return rc;
    if (rc == 1 && n.concurrency != c->o.concurrency) {
        walq__warn(&c->log,
                   "a coprocess handler stops no worker while it runs: concurrency %d takes a "
                   "restart; keeping %d workers",
                   n.concurrency, c->o.concurrency);
        n.concurrency = c->o.concurrency;
    }
#define WALQ__RELOAD_LOG(field, name, type)                                                        \
    if (n.field != c->o.field)                                                                     \
        walq__info(&c->log, "%s changed from %lld to %lld", name, (long long)c->o.field,           \
                   (long long)n.field);                                                            \
    c->o.field = n.field;
    RELOADED(WALQ__RELOAD_LOG)
#undef WALQ__RELOAD_LOG
    c->log.level = c->o.log_level;
    c->ack_delay_us = c->o.ack_delay_ms * 1000;
    c->sched.cfg.backoff_min_us = c->o.backoff_min_ms * 1000;
    c->sched.cfg.backoff_max_us = c->o.backoff_max_ms * 1000;
    c->sched.cfg.max_in_flight = (size_t)c->o.max_in_flight;
    c->sched.cfg.max_bytes = (size_t)c->o.max_in_flight_bytes;
    fds = 1 + c->h->ops->max_fds(c->h);
    if (w->cap < 2 + fds) {
        walq__wait bigger;

        if (walq__wait_init(&bigger, fds) != 0)
            return walq__error(WALQ_ENOMEM, NULL, "out of memory");
        walq__wait_free(w);
        *w = bigger;
    }
    return 0;
}

/* One turn of the loop: 0 to go on, 1 when done, or an error. */
static int turn(walq_consumer *c, walq__wait *w)
{
    int64_t now = walq__mono_us(), wall = walq__wall_us();
    int stopping = c->rd.stop_req != 0 || c->slot_gone, ack_idx = -1, rc;

    if (c->rd.stop_req == 2) {
        kill_all(c);
        return walq__error(WALQ_ECANCELED, NULL, "stopped at once; unfinished jobs will run again");
    }
    walq__consumer_watch_state(c, loop_state(c));
    rc = phase_settings(c, w);
    if (rc == 0)
        rc = phase_reconnect(c, now);
    if (rc == 0 && !stopping)
        rc = phase_take_in(c, now, wall);
    if (rc == 0 && !stopping)
        rc = phase_dispatch(c, now);
    if (rc == 0)
        rc = phase_record(c, now, stopping);
    if (rc == 0)
        rc = phase_tick(c, now, stopping);
    if (rc == 0)
        rc = phase_finish(c, stopping);
    /* What the turn did, for --http, before the loop may block. */
    publish(c);
    if (rc == 0)
        rc = phase_wait(c, w, now, stopping, &ack_idx);
    if (rc == 0)
        rc = phase_read(c, w, stopping, ack_idx);
    return rc;
}

/*
 * The one place errors of a turn are handled: a lost primary and a lost
 * slot are recovered from; everything else ends the loop.
 */
static int recover(walq_consumer *c, int rc)
{
    switch (rc) {
    case WALQ_EBUSY:
        /* The ack found the reader taken over: nothing of it was written. */
        if (c->ack.fenced && !c->fenced) {
            walq__warn(&c->log, "another process took this reader over; starting over");
            c->fenced = 1;
        }
        return rc;
    case WALQ_ECONN:
        primary_lost(c);
        return 0;
    case WALQ_ESLOT:
        if (c->slot_gone)
            return rc; /* stopped for it: set-up starts over */
        slot_lost(c);
        return 0;
    default:
        return rc;
    }
}

int walq__consumer_loop(walq_consumer *c)
{
    walq__wait w;
    int rc = walq__wait_init(&w, 1 + c->h->ops->max_fds(c->h));

    while (rc == 0)
        rc = recover(c, turn(c, &w));
    walq__wait_free(&w);
    return rc > 0 ? 0 : rc;
}

/* ------------------------------------------------------------------ */
/* Life cycle                                                          */

void walq__consumer_reset_memory(walq_consumer *c)
{
    kill_all(c);
    /* A batch in flight is abandoned with the connection: back with the rest. */
    c->ack.inflight = 0;
    walq__ack_requeue(&c->ack);
    /* A job sits in the ack batch and possibly also in a heap. */
    for (size_t i = 0; i < c->ack.n; i++) {
        walq__job *job = c->ack.jobs[i];

        if (job->state == WALQ__JOB_ACKING)
            walq__sched_forget(&c->sched, job);
        else
            job->pending_idx = -1;
    }
    c->ack.n = 0;
    c->ntent = 0;
    walq__sched_clear(&c->sched);
    walq__txnq_free(&c->txq);
    c->cur = c->bf_txn = NULL;
    c->backfilling = 0;
    c->sync_end = 0;
    c->slot_gone = 0;
    c->fenced = 0;
    c->ack.fenced = 0;
    walq__route_set_skip(&c->route, NULL, 0);
    walq__reader_skip_to(&c->rd, c->rd.last_end);
    walq__seals_forget(&c->seals);
}

void walq__consumer_close_all(walq_consumer *c)
{
    walq__reader_close(&c->rd);
    if (c->sconn)
        PQfinish(c->sconn);
    if (c->pconn)
        PQfinish(c->pconn);
    c->sconn = c->pconn = NULL;
}

/*
 * While the consumer waits on a server: status updates go on, handlers past
 * their timeout are killed, and a stop at once ends the wait.
 */
int walq__consumer_wait_tick(void *arg)
{
    walq_consumer *c = arg;
    int64_t now = walq__mono_us();

    settle_durable(c);
    walq__reader_tick(&c->rd, now, 0);
    walq__consumer_watch_again(c);
    if (c->h->ops->kill_overdue != NULL)
        c->h->ops->kill_overdue(c->h, now);
    return c->rd.stop_req == 2;
}
