/*
 * The consumer's SQL: its registry of groups and readers on the primary, the
 * reader's lock, cursor and skips, the scheduled jobs, the backlog, the
 * generations and the administrators' commands.  Every statement the
 * consumer sends, but the ack statement (ack.c) and the sql handler's
 * (handler_sql.c), is here; the consumer only decides when.
 */
#ifndef WALQ_REGISTRY_H
#define WALQ_REGISTRY_H

#include <stddef.h>
#include <stdint.h>
#include <libpq-fe.h>

#include "common.h"
#include "schedule.h"

/* Who the consumer is: its group, its reader and what it reads. */
typedef struct walq__registry {
    const char *group;
    const char *slot;
    int partition, partitions;
    const char *const *queues;
    size_t nqueues;
    const walq__log *log;
    int64_t timeout_ms; /* the server's bound on a statement or lock wait (0: none) */
    int standby;        /* the source is a hot standby (set once it is checked) */
} walq__registry;

/*
 * The session settings a connection of the consumer gets, unless it goes
 * through a connection pooler (*pooled), whose server sessions serve other
 * clients between transactions: its statements and lock waits end after
 * timeout_ms (0: no limit).  A pooler shows itself by the backend pid it
 * gives the client, which is not the server's.
 */
int walq__reg_session(PGconn *conn, int64_t timeout_ms, int *pooled);

/*
 * Begins a transaction on the primary with the settings its writes need
 * (synchronous_commit on, rg->timeout_ms), set for that transaction alone.
 */
int walq__reg_begin(const walq__registry *rg, PGconn *primary, const char *what);

/*
 * Prepares the sql handler's statement once, so that one that cannot even
 * be prepared is reported before any job runs.
 */
int walq__reg_check_sql(PGconn *primary, const char *sql);

/*
 * Who holds the reader, and whether this process may: by the advisory lock
 * of its session on the primary, or, for a process whose connection goes
 * through a pooler, by a lease (walq.readers.lease_until).
 */
typedef struct walq__reg_lock {
    int got;       /* this process may take the reader (its session holds the lock if not pooled) */
    int64_t epoch; /* the reader's epoch; -1 before its row exists */
    int leased;    /* the holder holds a lease that has not run out */
    char holder[160]; /* walq.readers.holder: "host pid N" */
    char who[256];    /* "host pid N, backend pid M" of the holder, or its lease */
} walq__reg_lock;

/* mine: the epoch this process took the reader at, or -1; a lease of its own does not stop it. */
int walq__reg_try_lock(const walq__registry *rg, PGconn *primary, int pooled, int64_t mine,
                       walq__reg_lock *out);

/* Lets the advisory lock go: another process took the reader first. */
int walq__reg_unlock(const walq__registry *rg, PGconn *primary);

/*
 * Moves the lease of the reader held at epoch to lease (an interval; NULL
 * lets it go).  *held is 0 when another process has taken the reader over.
 */
int walq__reg_lease(const walq__registry *rg, PGconn *primary, int64_t epoch, const char *lease,
                    int *held);

/* This reader's row as the process that took it over found it. */
typedef struct walq__reg_reader {
    int64_t epoch;
    uint64_t cursor;
    uint64_t sync_lsn;  /* the consistent point of its slot; UINT64_MAX: none yet */
    int queues_changed; /* it read other queues before */
    int source_changed; /* its cursor was of another source's WAL: reset */
    int lost;           /* another process took the reader first: nothing was done */
} walq__reg_reader;

/*
 * Registers the group and this reader and takes the reader over (a new
 * epoch, this process as its holder), in one transaction on the primary.
 * Readers of the group set up for another number of partitions are retired
 * there: their slots dropped on the source, their rows deleted, unless one
 * of them still runs.  The caller holds the reader's lock, or found it free
 * through a pooler; either way the row is taken only at the epoch seen (by
 * walq__reg_try_lock), else out->lost.  lease: the holder's lease (an
 * interval), NULL for a holder by lock.
 */
int walq__reg_take_over(const walq__registry *rg, PGconn *primary, PGconn *source,
                        const char *source_id, int64_t seen, const char *lease,
                        walq__reg_reader *out);

/*
 * Before the reader's slot is dropped and made again: until the new slot is
 * recorded (walq__reg_new_slot), a reader that starts again resynchronizes
 * again, whatever slot it finds.
 */
int walq__reg_resync_begins(const walq__registry *rg, PGconn *primary);

/* The reader's new slot, made at consistent: its resync starts there. */
int walq__reg_new_slot(const walq__registry *rg, PGconn *primary, uint64_t consistent);

/* Ids of the reader's jobs recorded beyond cursor (sorted; *ids malloc'ed). */
int walq__reg_skips(const walq__registry *rg, PGconn *primary, uint64_t cursor, int64_t **ids,
                    size_t *n);

/*
 * The reader's jobs recorded as scheduled with run_at in (after, until]
 * (Unix microseconds), the first limit of them by run_at, as rows for
 * walq__reg_job_row(); *later says whether some are due after until.
 */
int walq__reg_timers(const walq__registry *rg, PGconn *primary, int64_t after, int64_t until,
                     size_t limit, PGresult **res);
int walq__reg_later_timers(const walq__registry *rg, PGconn *primary, int64_t until, int *later);

/* Row i of a result of walq__reg_timers, the backlog or a retried job. */
void walq__reg_job_row(const PGresult *res, int row, walq__job_row *out);

/*
 * The backlog: in the snapshot of the slot's consistent point (on the
 * source, which may be a subscriber with only walq's tables), every job of
 * the reader's queues and partition, in id order, a page at a time.
 */
int walq__reg_backlog_open(const walq__registry *rg, PGconn *source, const char *snapshot);
int walq__reg_backlog_page(PGconn *source, PGresult **page);
int walq__reg_backlog_close(PGconn *source);

/* What the primary has of a backlog page's jobs, in the page's order. */
typedef enum walq__reg_known {
    WALQ__KNOWN_NONE = 0, /* no outcome: the job runs */
    WALQ__KNOWN_QUEUED,   /* a retry queued it again: it runs, updating its row */
    WALQ__KNOWN_RECORDED  /* it has an outcome: passed over */
} walq__reg_known;

int walq__reg_backlog_known(const walq__registry *rg, PGconn *primary, const PGresult *page,
                            PGresult **known);
walq__reg_known walq__reg_known_at(const PGresult *known, int row);

/*
 * One round of the generations' upkeep (walq.maintain(), sql/007): *next_us
 * says when the next one is due.
 */
int walq__reg_maintain(PGconn *primary, int64_t *next_us);

/*
 * The last generation sealed before the backlog's snapshot (open on
 * source): every job of it is in the backlog.
 */
int walq__reg_snapshot_seal(PGconn *source, int32_t *generation);

/*
 * Whether a seal command read from the stream names a generation walq has
 * closed (one below the current generation, as walq.maintain() seals
 * them): *opened is the current one.  walq.commands is written only by
 * walq's functions, but a reader acts on no command it cannot check.
 */
int walq__reg_seal_valid(PGconn *primary, int64_t generation, int *valid, int64_t *opened);

/* Is the job's outcome in this group "cancelled" (a command may be stale)? */
int walq__reg_cancelled(const walq__registry *rg, PGconn *primary, int64_t id, int *yes);

/*
 * A job that `walq job retry` queued again in this group, as a row for
 * walq__reg_job_row() (no row: its new outcome is recorded already).
 */
int walq__reg_retried(const walq__registry *rg, PGconn *primary, int64_t id, PGresult **res);

/*
 * Asks the primary to log its running transactions, which a standby
 * creating a slot waits for (the primary does it on its own every 15 s).
 */
void walq__reg_standby_snapshot(PGconn *primary, const walq__log *log);

#endif
