/*
 * The ack stage: outcomes gathered into one transaction on the primary that
 * also moves the group's cursor, so that acking costs one round trip per
 * batch, never one per job.
 */
#ifndef WALQ_ACK_H
#define WALQ_ACK_H

#include <stddef.h>
#include <stdint.h>
#include <libpq-fe.h>

#include "common.h"
#include "schedule.h"

/* A job done at its first attempt, for the batch rows. */
typedef struct walq__ack_done {
    int64_t id;
    int32_t generation;
} walq__ack_done;

typedef struct walq__ack {
    walq__job **jobs;
    size_t n;
    size_t cap;
    int64_t oldest; /* monotonic time the first outcome of the batch arrived */
    walq__buf ids, statuses, attempts, errors, run_ats, lsns, gens;
    walq__buf done_ids, done_gens; /* the batch rows: jobs done at their first attempt */
    walq__ack_done *done;
    size_t done_cap;
    char cursor_text[32], done_lsn_text[32], sealed_text[32], known_text[32], epoch_text[32];
    char lo_text[24], hi_text[24]; /* the batch's lowest and highest done id */
    /*
     * The batch of the statement in flight (walq__ack_send), while the next
     * one gathers in jobs.  At most one statement is in flight.
     */
    walq__job **sent;
    size_t nsent, sentcap;
    uint64_t sent_cursor;
    int32_t sent_sealed_through;
    int64_t sent_at; /* monotonic: when it was sent */
    int inflight;
    int piped;      /* the statement in flight is in a pipeline (pooled) */
    PGresult *kept; /* its first failed result so far, else its last */
    /* The session the statements are prepared in. */
    PGconn *prepared_conn;
    int prepared_pid;
    /*
     * Set by the caller: the primary connection goes through a pooler (no
     * prepared statement, the settings sent with each statement); the
     * reader's epoch, which every ack checks; the lease each ack moves on
     * (an interval, NULL for a holder by lock); the server's bound on the
     * statement and its lock waits, in milliseconds ("0": none).
     */
    int pooled;
    int64_t epoch;
    const char *lease;
    char timeout_text[24];
    /* The last statement found the reader taken over by another process. */
    int fenced;
} walq__ack;

/*
 * Puts job's current outcome (job->pending and friends) in the batch; a job
 * already there keeps its place and the newest outcome wins.
 */
int walq__ack_add(walq__ack *a, walq__job *job);

/* The ack statement's parameters. */
#define WALQ__ACK_PARAMS 19

/*
 * Writes the batch, the cursor and the last generation whose seal the
 * reader's cursor has passed (sealed_through: every job of the reader in it,
 * and in those before, has an outcome) in one statement.  The batch is left
 * as it was: on success the caller walks a->jobs and empties it; on failure
 * it can try again later with more added.  known is the cursor the caller
 * knows committed: a batch written since then may hold the same jobs, sent
 * by an ack whose answer was lost.  If another process has taken the reader
 * over (its epoch is not a->epoch), nothing is written: WALQ_EBUSY, with
 * a->fenced set.
 */
int walq__ack_flush(walq__ack *a, PGconn *primary, const char *group, const char *slot,
                    uint64_t cursor, uint64_t known, int32_t sealed_through);

/*
 * The same, without waiting: the statement is sent and the batch moves to
 * a->sent, a new batch gathering meanwhile.  walq__ack_poll (when the
 * connection's socket is readable) or walq__ack_wait collects the result;
 * after a failure walq__ack_requeue puts the sent jobs back in the batch.
 * Nothing else may use the connection while a->inflight.
 */
int walq__ack_send(walq__ack *a, PGconn *primary, const char *group, const char *slot,
                   uint64_t cursor, uint64_t known, int32_t sealed_through);

/* Collects the result if it is in: *finished then, and the statement's outcome. */
int walq__ack_poll(walq__ack *a, PGconn *primary, int *finished);

/*
 * Waits until the statement in flight, if any, is finished, within the
 * bounds of the thread's waiter (db.h).
 */
int walq__ack_wait(walq__ack *a, PGconn *primary);

void walq__ack_requeue(walq__ack *a);

void walq__ack_free(walq__ack *a);

#endif
