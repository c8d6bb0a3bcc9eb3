/*
 * Inside the consumer: its state, and the functions its files share.
 *
 *   consumer_open.c    the public functions (open, run, reconfigure,
 *                      free, ...) and the stages wired together
 *   consumer_setup.c   set-up: the two servers, the reader's row, the slot
 *                      and its plugin, resume or resynchronize
 *   consumer_stream.c  what the reader hands over: transactions, job rows
 *                      and the rows of walq.commands
 *   consumer.c         the loop and its phases, and a job's way through the
 *                      stages (outcomes, acks, the primary, timers, the
 *                      backlog)
 *
 * Each file calls only those below it in this list.  Nothing outside them
 * includes this header.
 */
#ifndef WALQ_CONSUMER_INT_H
#define WALQ_CONSUMER_INT_H

#include <pthread.h>
#include <stdint.h>

#include "ack.h"
#include "common.h"
#include "db.h"
#include "handler.h"
#include "metrics.h"
#include "options.h"
#include "reader.h"
#include "registry.h"
#include "retry.h"
#include "route.h"
#include "schedule.h"
#include "seal.h"
#include "walq.h"

/* An outcome decided inside the ack transaction, applied once it commits. */
typedef struct tentative {
    walq__job *job;
    walq__status st;
    int recorded; /* st was recorded before: nothing is written, nothing counted */
    int64_t run_at;
    /* The job's fields before, restored if the transaction fails. */
    walq__status old_pending;
    int32_t old_pending_attempts;
    char *old_error;
    int64_t old_run_at;
} tentative;

struct walq_consumer {
    walq_options o;
    char *source, *primary, *group;
    char **queues;
    char **argv;
    char **pass_env; /* NULL: none */
    char *sql;
    char slot[64];
    char plugin[16]; /* the plugin asked for: "", "auto", "pgoutput", "wal2json" */
    walq__log log;
    char errmsg[2048];
    walq_stats stats;
    walq__metrics *m; /* what --http serves: the loop writes, HTTP threads read */
    int64_t ack_delay_us;

    walq__reader rd;   /* the stream, its position and the wait */
    walq__registry rg; /* who the statements are for */
    walq__route route; /* which jobs are this reader's */
    walq__sched sched; /* jobs in memory */
    walq__txnq txq;    /* transactions with jobs whose first outcome is unrecorded */
    walq__ack ack;     /* the next ack transaction */
    walq__seals seals; /* the generations whose seal the cursor passed */
    walq__handler *h;  /* the run stage */
    tentative *tent;   /* outcomes decided inside the ack transaction */
    size_t ntent, tentcap;

    PGconn *pconn; /* primary: outcomes, cursor, the reader's lock */
    PGconn *sconn; /* source, plain SQL: checks and the backlog's cursor */
    walq__retry primary_retry;
    int64_t epoch; /* of the reader's row when this process took it */
    int fenced;    /* another process had the reader meanwhile: start over */
    int pooled;    /* the primary connection goes through a pooler: the reader is leased */
    int64_t lease_us, lease_renew_at; /* the lease's length; when it is renewed next (monotonic) */
    char lease_text[32];              /* the lease, as an interval */
    int standby;                      /* the source is a hot standby */
    int pub_seen;                     /* the primary sees the source's publications (one system) */
    int slot_gone;                    /* the slot was lost while streaming: start over */
    int flush_failed;                 /* an ack transaction failed: hold confirmations back */
    int64_t next_maintain, maintain_us; /* the generations' upkeep: when next, how often */
    walq__waiter waiter;                /* what waits on a server do meanwhile, and their bound */
    walq__watcher watcher;              /* the owner's watch callback */
    /* A reload's options (walq_consumer_reconfigure), taken at the loop's next turn. */
    pthread_mutex_t reconf_lock;
    walq_options reconf;
    int reconf_pending;
    int reached;    /* set-up reached both servers once */
    walq__txn *cur; /* the transaction being received, NULL between them */

    /* Set-up and recovery. */
    int backfilling;
    walq__txn *bf_txn;
    uint64_t sync_end; /* consistent point the cursor must be written past, or 0 */
};

/* consumer.c */

/* Tells the owner's watch callback, when it is due, what the consumer is doing. */
void walq__consumer_watch_state(walq_consumer *c, walq_state st);
/* The same state again: a wait on a server or a nap is no change. */
void walq__consumer_watch_again(walq_consumer *c);
/* A nap of ms at most, short enough for the watch callback to come on time. */
int walq__consumer_nap_ms(const walq_consumer *c, int ms);
/* Puts the job's outcome st (err: why, or NULL) in the next ack transaction. */
int walq__consumer_record(walq_consumer *c, walq__job *job, walq__status st, const char *err);
/*
 * A job of transaction txn (ending at lsn) enters memory; has_row says that
 * walq.outcomes has a row of it already, which its outcomes update.
 */
int walq__consumer_take(walq_consumer *c, const walq__job_row *row, walq__txn *txn, uint64_t lsn,
                        int has_row);
/* Waits for the ack transaction in flight, if any: 0, or an error. */
int walq__consumer_settle_acks(walq_consumer *c);
/* The reader's lease was renewed at the monotonic time at. */
void walq__consumer_lease_renewed(walq_consumer *c, int64_t at);
/* Scheduled jobs due after after (exclusive) and by until, from the table. */
int walq__consumer_load_timers(walq_consumer *c, int64_t after, int64_t until);
/* Everything in memory dropped: what is recorded is safe in the table, the rest comes back. */
void walq__consumer_reset_memory(walq_consumer *c);
/* Closes the stream and both sessions. */
void walq__consumer_close_all(walq_consumer *c);
/*
 * A session to conninfo, checked and non-blocking; *pooled says it goes
 * through a pooler.  0, or an error.
 */
int walq__consumer_connect_session(walq_consumer *c, PGconn **conn, const char *conninfo,
                                   int *pooled);
/* The primary's session; through a pooler the acks carry what they need. */
int walq__consumer_connect_primary_session(walq_consumer *c);
/* The loop, turn after turn, until it stops or fails: 0, or an error. */
int walq__consumer_loop(walq_consumer *c);
/* The handler's callbacks (handler.h), and what waits on a server do meanwhile (db.h). */
int walq__consumer_on_done(void *arg, walq__job *job, walq__verdict v, const char *err);
int walq__consumer_on_decided(void *arg, walq__job *job, walq__verdict v, const char *err);
int walq__consumer_on_recorded(void *arg, walq__job *job, walq__status st);
void walq__consumer_on_abandon(void *arg, walq__job *job);
int walq__consumer_wait_tick(void *arg);

/* consumer_setup.c */

/*
 * Everything before the loop: both servers, the reader's row, the slot
 * (resumed, or made and the group resynchronized), timers, the drain's
 * target.  0, or an error.
 */
int walq__consumer_setup(walq_consumer *c);

/* consumer_stream.c */

/* The reader's callbacks: transactions, job rows, commands, idle and pause. */
extern const walq__reader_ops walq__consumer_reader_ops;

#endif
