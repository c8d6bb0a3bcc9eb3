/*
 * The reader: what `walq consume` and `walq audit` share of reading a slot.
 *
 * It owns the replication stream and the decoder, the position (received,
 * durable, confirmed), the schedule of status updates, reconnecting with
 * backoff, the slot's inspection and creation, transaction framing, the
 * drain target, the stop rule and the wait.  Its owner gets the changes
 * through callbacks and tells it how far its work is durable; everything up
 * to that is confirmed to the server, nothing beyond.
 *
 * stream.c keeps the protocol; this module keeps the bookkeeping around it.
 */
#ifndef WALQ_READER_H
#define WALQ_READER_H

#include <poll.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <libpq-fe.h>

#include "common.h"
#include "decode.h"
#include "pgoutput.h"
#include "retry.h"
#include "stream.h"

/* The transaction being received. */
typedef struct walq__reader_txn {
    uint32_t xid;
    uint64_t commit_lsn;    /* start of its commit record */
    uint64_t end_lsn;       /* end of its commit record: where a reader resumes */
    int64_t commit_time_us; /* microseconds since the Unix epoch; 0: unknown */
    size_t rows;            /* rows of it the owner has taken */
} walq__reader_txn;

/*
 * What the owner does with the stream.  A callback that fails makes
 * walq__reader_read() return its code; the row it was given counts as not
 * taken, so it comes again if the transaction is read again.
 */
typedef struct walq__reader_ops {
    /* A transaction begins (not called again when one cut off resumes). */
    int (*begin)(void *owner, const walq__reader_txn *t);
    /* An insert, update or delete of the transaction. */
    int (*row)(void *owner, const walq__reader_txn *t, const walq__change *ch, uint64_t wal_start);
    /* Its commit: every row of it has been taken. */
    int (*commit)(void *owner, const walq__reader_txn *t);
    /*
     * Between transactions the server says it has sent everything before
     * lsn.  Returns whether the reader may restart from there after a lost
     * connection.  NULL: always.
     */
    int (*idle)(void *owner, uint64_t lsn);
    /*
     * Should reading pause before the next message (memory full, a stop
     * between transactions)?  in_txn says whether a transaction is open.
     * NULL: never.
     */
    int (*paused)(void *owner, int in_txn);
} walq__reader_ops;

typedef struct walq__reader_config {
    const char *conninfo;              /* the source; NULL or "": the libpq environment */
    const char *appname;               /* "walq consume", for the server and for messages */
    const char *slot;                  /* the slot's name */
    const char *const *plugin_options; /* wal2json's: pairs of name and value, NULL-terminated */
    int64_t status_us;                 /* wanted interval between status updates */
    int drain;                         /* the owner stops once caught up */
    const walq__reader_ops *ops;
    void *owner;
    const walq__log *log;
    /*
     * pgoutput's publication (the slot's name), or NULL when the owner reads
     * wal2json only.
     */
    const char *publication;
    int failover; /* the slot is made a failover slot */
} walq__reader_config;

/* A replication slot as pg_replication_slots shows it. */
typedef struct walq__slot_info {
    int exists;
    int lost; /* invalidated, or never consistent */
    int active;
    char active_pid[32];
    char plugin[64];
    char database[128];
    uint64_t confirmed;
    int failover; /* a failover slot (PostgreSQL 17) */
    int synced;   /* a standby's copy of a primary's failover slot */
} walq__slot_info;

/* What a reader needs to know of its source server. */
typedef struct walq__source_info {
    int standby; /* a hot standby, with what decoding there needs */
    int version; /* server_version_num */
    char database[128];
    char system_id[32]; /* pg_control_system()'s system identifier */
    uint64_t wal_lsn;   /* where its WAL ends now (the replay position on a standby) */
} walq__source_info;

typedef struct walq__reader {
    walq__reader_config cfg;
    walq__stream st;
    walq__decoder *dec;  /* wal2json's */
    walq__pgoutput *pgo; /* pgoutput's */
    int pgoutput;        /* the slot is read with pgoutput */
    const char *pgo_options[7];
    int wake[2];
    volatile sig_atomic_t stop_req; /* 1: finish and stop; 2: stop at once */

    /* Position. */
    uint64_t last_end;     /* end of the last whole transaction received, or a keepalive's */
    uint64_t recv_lsn;     /* furthest position the server told us about */
    uint64_t durable;      /* what the owner has made durable: may be confirmed */
    uint64_t confirmed;    /* what the last status update said */
    uint64_t drain_target; /* where --drain ends */

    /* Transaction framing. */
    int in_txn;
    int skip_txn; /* received whole before a reconnect: passed over */
    walq__reader_txn txn;
    size_t seen; /* rows of txn in this delivery of it */

    /* Status updates and reconnects. */
    int64_t status_us, next_status, next_ping;
    int reply_now;
    walq__retry retry;
    uint64_t reconnects;
    uint64_t bytes; /* of the replication messages received (metrics) */
} walq__reader;

/* Copies nothing: cfg's strings must outlive the reader. */
int walq__reader_init(walq__reader *r, const walq__reader_config *cfg);
void walq__reader_free(walq__reader *r);

/*
 * Asks the owner's loop to stop: the first call finishes, a second (or one
 * with immediate set) stops at once.  Safe in a signal handler.
 */
void walq__reader_stop(walq__reader *r, int immediate);

/* Sleeps up to ms, or until a stop is asked; says whether one was. */
int walq__reader_nap(walq__reader *r, int ms);

/*
 * Reads and checks the source over a plain SQL connection: wal_level =
 * logical, and on a hot standby PostgreSQL 16 or later with
 * hot_standby_feedback.  Errors name the server and the fix.
 */
int walq__source_check(PGconn *conn, walq__source_info *out);

/* The source's system identifier, which tells one server's WAL from another's. */
int walq__source_system_id(PGconn *conn, char *buf, size_t len);

/* Where the source's WAL ends now (the replay position on a standby). */
int walq__source_wal_lsn(PGconn *conn, uint64_t *out);

/* Looks the reader's slot up over a plain SQL connection to the source. */
int walq__reader_slot(const walq__reader *r, PGconn *conn, walq__slot_info *out);

/*
 * Creates the slot on the replication connection (made if needed) and
 * exports a snapshot of its consistent point; tick(arg), when not NULL,
 * runs every second while the server works on it.
 */
int walq__reader_create_slot(walq__reader *r, uint64_t *consistent, char *snapshot, size_t len,
                             void (*tick)(void *), void *arg);
int walq__reader_drop_slot(walq__reader *r);

/* Makes the existing slot a failover slot. */
int walq__reader_set_failover(walq__reader *r);

/*
 * The plugin the slot is made with or was made with: "pgoutput" or
 * "wal2json".  pgoutput's Begin carries no end LSN, so a transaction is
 * known by its commit record's start plus one: the first position past
 * which the server does not send it again.  That is what the reader
 * reports as end_lsn and what it confirms; it is at most the record's end.
 */
void walq__reader_use_plugin(walq__reader *r, const char *plugin);

/* The plugin in use, as a name. */
const char *walq__reader_plugin(const walq__reader *r);

/* Makes the replication connection now, so that its errors show at set-up. */
int walq__reader_connect(walq__reader *r);

/* The next start streams from lsn; everything up to it counts as confirmed. */
void walq__reader_resume_at(walq__reader *r, uint64_t lsn);

/*
 * The same for a slot made at lsn, whose confirmation is the owner's to
 * give; also forgets a transaction being received.
 */
void walq__reader_skip_to(walq__reader *r, uint64_t lsn);

/* Starts streaming from last_end.  On failure the connection is closed. */
int walq__reader_start(walq__reader *r);

/* Is the stream down and a new start due? */
int walq__reader_start_due(const walq__reader *r, int64_t now);

/*
 * The stream broke (walq_last_error() says how): warns, closes it and
 * schedules the next start with backoff.  A transaction cut off comes again
 * from its start; the rows the owner took of it are passed over then.
 */
void walq__reader_lost(walq__reader *r);

/* Closes the stream without counting a failure. */
void walq__reader_close(walq__reader *r);

/*
 * Starts over from lsn, what the owner made durable (its own server was
 * lost): the stream is closed now and started again at monotonic time when.
 */
void walq__reader_restart_at(walq__reader *r, uint64_t lsn, int64_t when);

/*
 * Handles what has arrived, a burst at most.  A broken stream is handled
 * here (walq__reader_lost); a slot that went away is WALQ_ESLOT; a failure
 * of the owner's callbacks is its code.  *more, when not NULL, says whether
 * it stopped at the end of a burst.
 */
int walq__reader_read(walq__reader *r, int *more);

/* Sends a status update when due (eager: also early, when durable moved). */
int walq__reader_tick(walq__reader *r, int64_t now, int eager);

/* --drain, with nothing in flight: asks the server where it is now and then. */
int walq__reader_ping(walq__reader *r, int64_t now);

/* The last word: everything durable is confirmed before the connection goes. */
void walq__reader_final_status(walq__reader *r);

/* Between transactions, with everything before the drain target received. */
int walq__reader_caught_up(const walq__reader *r);

struct walq__gauges;

/*
 * The reader's part of the gauges of --http (src/metrics.h): the stream,
 * the positions, the last commit time, the bytes and the reconnects.
 */
void walq__reader_gauges(const walq__reader *r, struct walq__gauges *g);

/* What the loop waits for: the wake pipe, the stream, the owner's own. */
typedef struct walq__wait {
    struct pollfd *pfd;
    size_t n, cap;
    int64_t now;
    int64_t wake_at; /* monotonic microseconds; 0: none */
    int at_once;     /* there is work: poll without waiting */
    int stream_idx;  /* -1 when the stream is not polled */
} walq__wait;

/* Flags of walq__reader_wait_begin. */
#define WALQ__WAIT_STREAM 1 /* poll the stream's socket (its hang-up is seen) */
#define WALQ__WAIT_INPUT  2 /* ... for input too */
#define WALQ__WAIT_START  4 /* wake when a new start of the stream is due */
#define WALQ__WAIT_PING   8 /* wake when a --drain ping is due */

int walq__wait_init(walq__wait *w, size_t owner_fds);
void walq__wait_free(walq__wait *w);

/* Starts a round: the wake pipe, the stream per flags and its deadlines. */
void walq__reader_wait_begin(walq__reader *r, walq__wait *w, int64_t now, unsigned flags);

/* Adds a descriptor of the owner's; returns its index (its revents after the wait). */
int walq__wait_add(walq__wait *w, int fd, short events);

/* Wake by deadline at the latest (monotonic microseconds; 0: no change). */
void walq__wait_until(walq__wait *w, int64_t deadline);

/*
 * Polls (at most a second), empties the wake pipe, and notices a stream that
 * hung up even while it was not read.
 */
int walq__reader_wait(walq__reader *r, walq__wait *w);

#endif
