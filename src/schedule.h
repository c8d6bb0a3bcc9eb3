/*
 * The schedule stage: jobs in memory, ready by priority then arrival, a
 * timer heap for jobs whose time has not come, and the transaction FIFO that
 * decides how far the group's cursor may move.
 */
#ifndef WALQ_SCHEDULE_H
#define WALQ_SCHEDULE_H

#include <stddef.h>
#include <stdint.h>

#include "common.h"
#include "run.h"

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
    int32_t attempts;   /* attempts made so far */
    int64_t run_at;     /* Unix microseconds */
    int32_t generation; /* of its row in walq.jobs, which its records carry too */
    uint64_t seq;       /* arrival order, the tie-breaker */
    uint64_t lsn;       /* end LSN of the transaction that brought the job */
    walq__txn *txn;     /* counts the job until its first outcome commits */
    walq__job_state state;
    int retry_timer; /* in the timer heap for a retry, not its own run_at */
    int has_dedup;   /* holds a dedup key, which its final outcome releases */
    int has_row;     /* walq.outcomes has a row for it, which its outcomes update */
    size_t heap_idx;
    /* The outcome waiting for the next ack transaction, and the attempts it counts. */
    walq__status pending;
    int32_t pending_attempts;
    int pending_idx;    /* index in the ack batch, -1 if none */
    int64_t started_us; /* monotonic: when its handler started this attempt (metrics) */
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
    walq__txn *prev; /* so that closing the tail costs no walk */
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

/* A job's fields as walq.jobs holds them, from the stream or from a query. */
typedef struct walq__job_row {
    int64_t id;
    const char *queue;
    const char *payload; /* JSON text; "null" when absent */
    size_t payload_len;
    int32_t priority;
    int32_t max_attempts;
    int32_t attempts; /* made so far, by earlier lives of the group's readers */
    int64_t run_at;   /* Unix microseconds */
    int has_dedup;
    int32_t generation;
    const char *bad_run_at; /* the run_at text, when it could not be read */
} walq__job_row;

/*
 * The schedule proper: which jobs are in memory and in what state, which
 * runs next, when a scheduled one is due, and what an attempt's verdict
 * makes of a job.  Jobs live here from their admission until their final
 * outcome is acked; the run stage borrows them while they run.
 */
typedef struct walq__sched_config {
    size_t max_in_flight;     /* jobs in memory, at most, whatever their state */
    size_t max_bytes;         /* their payloads' bytes, at most */
    int64_t timer_horizon_us; /* scheduled jobs due within it are kept in memory */
    int64_t backoff_min_us, backoff_max_us;
    const walq__log *log;
} walq__sched_config;

typedef struct walq__sched {
    walq__sched_config cfg;
    walq__heap ready, timers;
    walq__idset live;    /* ids of the jobs in memory: never two copies of one */
    size_t in_memory;    /* ready, running and final-but-unacked jobs (not timers) */
    size_t bytes;        /* payload bytes of every job in memory, timers too */
    size_t retry_timers; /* timers that are retries, which --drain waits for */
    /*
     * Scheduled jobs due before timers_until are all in memory; later ones
     * may live only in the table (timers_offloaded) and are loaded as their
     * time comes near, so far-future jobs cost no memory.
     */
    int64_t timers_until;
    int timers_offloaded;
    uint64_t seq, rng;
} walq__sched;

void walq__sched_init(walq__sched *s, const walq__sched_config *cfg, uint64_t seed);
void walq__sched_free(walq__sched *s);

/* Every job leaves memory (a restart of the group's reading). */
void walq__sched_clear(walq__sched *s);

/* A new job in memory, not yet admitted; NULL when out of memory. */
walq__job *walq__sched_job(walq__sched *s, const walq__job_row *row);

/* Is the job with this id in memory? */
int walq__sched_has(const walq__sched *s, int64_t id);

/* The job leaves memory, whatever its state (it is not counted any more). */
void walq__sched_forget(walq__sched *s, walq__job *job);

/* Its final outcome committed: the job leaves memory. */
void walq__sched_release(walq__sched *s, walq__job *job);

/*
 * A new job: ready, or, when its time has not come, a timer (or only a row
 * in the table, when it is beyond the timers in memory).  *record_scheduled
 * says that its outcome "scheduled" must be recorded, so that the cursor can
 * pass it.
 */
int walq__sched_admit(walq__sched *s, walq__job *job, int64_t now_wall, int *record_scheduled);

/* A new job that will not run: it waits in memory only for its record. */
void walq__sched_reject(walq__sched *s, walq__job *job);

/* A scheduled job read back from the table. */
int walq__sched_timer(walq__sched *s, walq__job *job);

/* Timers whose time has come become ready. */
int walq__sched_promote(walq__sched *s, int64_t now_wall);

/* The next ready job, taken out of the ready heap, or NULL. */
walq__job *walq__sched_next(walq__sched *s);

/* A job taken with walq__sched_next that could not start leaves memory. */
void walq__sched_unstart(walq__sched *s, walq__job *job);

/*
 * What an attempt's verdict means for the job: done, dead, or scheduled
 * again (*run_at) after a backoff.  Pure, so that the sql handler can decide
 * before its transaction commits and apply after.
 */
walq__status walq__sched_decide(walq__sched *s, const walq__job *job, walq__verdict v,
                                int64_t *run_at);

/* Moves a job whose attempt ended to where its outcome puts it. */
int walq__sched_settle(walq__sched *s, walq__job *job, walq__status st, int64_t run_at,
                       const char *err);

/* The job with this id among those waiting (ready or timers), or NULL. */
walq__job *walq__sched_find_waiting(walq__sched *s, int64_t id);

/* A waiting job found so is taken out to be released (cancelled). */
void walq__sched_withdraw(walq__sched *s, walq__job *job);

/*
 * Is memory full: should the reading of new jobs pause?  Every job in
 * memory counts, timers included, by number and by payload bytes.
 */
int walq__sched_full(const walq__sched *s);

/* How many more jobs memory has room for now (0 when full). */
size_t walq__sched_room(const walq__sched *s);

/* Monotonic deadline of the next timer, given both clocks now; 0: none. */
int64_t walq__sched_next_due(const walq__sched *s, int64_t now_mono, int64_t now_wall);

/* Timers up to until are loaded; later_exist says whether the table has later ones. */
void walq__sched_timers_loaded(walq__sched *s, int64_t until, int later_exist);

/* Should the next window of scheduled jobs be read from the table now? */
int walq__sched_timers_wanted(const walq__sched *s, int64_t now_wall);

/* Nothing in memory and no retry waiting: what --drain waits for. */
int walq__sched_idle(const walq__sched *s);

/* Exponential backoff with full jitter in [min, max] for the given attempt. */
int64_t walq__backoff_us(int attempt, double min_s, double max_s, uint64_t *rng);

#endif
