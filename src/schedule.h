/*
 * The schedule stage: jobs in memory, ready by priority then arrival, a
 * timer heap for jobs whose time has not come, and the transaction FIFO that
 * decides how far the group's cursor may move.
 */
#ifndef WALQ_SCHEDULE_H
#define WALQ_SCHEDULE_H

#include <stddef.h>
#include <stdint.h>

typedef struct walq__txn walq__txn;

typedef enum walq__job_state {
    WALQ__JOB_READY = 0, /* in the ready heap */
    WALQ__JOB_TIMER,     /* in the timer heap */
    WALQ__JOB_RUNNING,   /* a handler has it */
    WALQ__JOB_ACKING     /* final outcome waiting for its ack transaction */
} walq__job_state;

typedef enum walq__status {
    WALQ__ST_NONE = 0,
    WALQ__ST_SCHEDULED,
    WALQ__ST_DONE,
    WALQ__ST_DEAD,
    WALQ__ST_CANCELLED /* by an administrator; recorded already, only released */
} walq__status;

typedef struct walq_job {
    int64_t id;
    char *queue;
    char *payload;
    size_t payload_len;
    int32_t priority;
    int32_t max_attempts;
    int32_t attempts; /* attempts made so far */
    int64_t run_at;   /* Unix microseconds */
    uint64_t seq;     /* arrival order, the tie-breaker */
    uint64_t lsn;     /* end LSN of the transaction that brought the job */
    walq__txn *txn;   /* counts the job until its first outcome commits */
    walq__job_state state;
    int retry_timer; /* in the timer heap for a retry, not its own run_at */
    int has_dedup;   /* holds a dedup key, which its final outcome releases */
    int has_row;     /* walq.outcomes has a row for it, which its outcomes update */
    size_t heap_idx;
    /* The outcome waiting for the next ack transaction. */
    walq__status pending;
    int pending_idx; /* index in the ack batch, -1 if none */
    char *last_error;
    void *handler_ctx; /* the run stage's per-job state */
} walq__job;

void walq__job_free(walq__job *job);

typedef int (*walq__heap_less)(const walq__job *a, const walq__job *b);

typedef struct walq__heap {
    walq__job **items;
    size_t n;
    size_t cap;
    walq__heap_less less;
} walq__heap;

void walq__heap_init(walq__heap *h, walq__heap_less less);
void walq__heap_free(walq__heap *h);
int walq__heap_push(walq__heap *h, walq__job *job);
walq__job *walq__heap_top(const walq__heap *h);
walq__job *walq__heap_pop(walq__heap *h);
void walq__heap_remove(walq__heap *h, walq__job *job);

/* Lower priority number first, then arrival order. */
int walq__ready_less(const walq__job *a, const walq__job *b);
/* Earlier run_at first, then arrival order. */
int walq__timer_less(const walq__job *a, const walq__job *b);

/*
 * A transaction with jobs whose first outcome is not recorded yet.  through
 * is the end of the last transaction behind it that had nothing left to
 * record, so that empty transactions never take a place of their own.
 */
struct walq__txn {
    uint64_t end_lsn;
    uint64_t through;
    size_t outstanding;
    int open; /* still receiving jobs (or a backfill still fetching) */
    walq__txn *next;
};

typedef struct walq__txnq {
    walq__txn *head;
    walq__txn *tail;
    size_t len;
    uint64_t safe_lsn; /* every transaction ending at or below is recorded */
} walq__txnq;

/* Appends an open transaction. Returns NULL when out of memory. */
walq__txn *walq__txnq_open(walq__txnq *q, uint64_t end_lsn);

/* The transaction has all its jobs; an empty one folds into its neighbour. */
void walq__txnq_close(walq__txnq *q, walq__txn *t);

/* One of t's jobs got its first outcome; pops finished heads. */
void walq__txnq_record(walq__txnq *q, walq__txn *t);

/* Nothing in flight: move safe_lsn up to lsn (a keepalive's position). */
void walq__txnq_idle(walq__txnq *q, uint64_t lsn);

void walq__txnq_free(walq__txnq *q);

/*
 * A set of job ids: which jobs are in memory, so that a job never runs as
 * two copies.  Open addressing with linear probing.
 */
typedef struct walq__idset {
    int64_t *keys;
    size_t cap; /* a power of two, or 0 */
    size_t n;
} walq__idset;

int walq__idset_add(walq__idset *s, int64_t id);
int walq__idset_has(const walq__idset *s, int64_t id);
void walq__idset_del(walq__idset *s, int64_t id);
void walq__idset_clear(walq__idset *s);
void walq__idset_free(walq__idset *s);

/* Exponential backoff with full jitter in [min, max] for the given attempt. */
int64_t walq__backoff_us(int attempt, double min_s, double max_s, uint64_t *rng);

#endif
