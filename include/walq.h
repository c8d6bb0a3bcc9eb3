/*
 * walq: a PostgreSQL job queue and pub/sub bus that reads its jobs from a
 * logical replication slot instead of polling.
 *
 * Conventions: every function returns 0 or a negative WALQ_E* code.  Handles
 * are opaque; the caller owns what an *_open() call gives it and releases it
 * with the matching *_free().  Getters return borrowed pointers that stay
 * valid as long as the object they come from.  The library never logs on its
 * own and never exits: it hands messages to the log callback of the options.
 */
#ifndef WALQ_H
#define WALQ_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define WALQ_VERSION_MAJOR  0
#define WALQ_VERSION_MINOR  1
#define WALQ_VERSION_PATCH  0
#define WALQ_VERSION_STRING "0.1.0"

#if defined(__GNUC__) && __GNUC__ >= 4
#define WALQ_EXTERN __attribute__((visibility("default")))
#else
#define WALQ_EXTERN
#endif

/* One table of error codes: name, value, short description. */
#define WALQ_ERRNO_MAP(XX)                                                                         \
    XX(EINVAL, -1, "invalid argument")                                                             \
    XX(ENOMEM, -2, "out of memory")                                                                \
    XX(ECONN, -3, "could not connect to the server")                                               \
    XX(ESERVER, -4, "server is not set up for logical decoding")                                   \
    XX(ESCHEMA, -5, "walq schema is missing or out of date")                                       \
    XX(EPERM, -6, "permission denied")                                                             \
    XX(EBUSY, -7, "consumer group is held by another process")                                     \
    XX(EPROTO, -8, "replication protocol violation")                                               \
    XX(EDECODE, -9, "malformed change from the output plugin")                                     \
    XX(EQUERY, -10, "query failed")                                                                \
    XX(ESYS, -11, "system call failed")                                                            \
    XX(ESLOT, -12, "replication slot is missing or invalidated")                                   \
    XX(EHANDLER, -13, "handler could not be started")                                              \
    XX(ECANCELED, -14, "operation canceled")

typedef enum walq_error {
    WALQ_OK = 0,
#define WALQ__ERRNO_ENUM(name, value, text) WALQ_##name = (value),
    WALQ_ERRNO_MAP(WALQ__ERRNO_ENUM)
#undef WALQ__ERRNO_ENUM
} walq_error;

/* Short, static description of an error code. */
WALQ_EXTERN const char *walq_strerror(int err);

/*
 * The detailed message of the last failure of a free function (one that takes
 * no handle) on the calling thread, or "" if none.  Borrowed; valid until the
 * next walq call on this thread.
 */
WALQ_EXTERN const char *walq_last_error(void);

typedef enum walq_log_level {
    WALQ_LOG_ERROR = 0,
    WALQ_LOG_WARNING = 1,
    WALQ_LOG_INFO = 2,
    WALQ_LOG_DEBUG = 3
} walq_log_level;

/*
 * Log callback.  msg is one line without a trailing newline, in PostgreSQL's
 * message style; a hint, when there is one, follows on a line that starts
 * with "HINT:  ".  payload is the options' log_payload.
 */
typedef void (*walq_log_fn)(walq_log_level level, const char *msg, void *payload);

/* Which handler runs the jobs. */
typedef enum walq_handler_kind {
    WALQ_HANDLER_EXEC = 0,     /* run argv per job, payload on stdin */
    WALQ_HANDLER_NOOP = 1,     /* record every job done without running anything */
    WALQ_HANDLER_CALLBACK = 2, /* call a C function per job */
    WALQ_HANDLER_SQL = 3,      /* run a statement in the ack transaction */
    WALQ_HANDLER_COPROCESS = 4 /* long-lived workers speaking JSON lines */
} walq_handler_kind;

/*
 * What a handler says of one attempt.  (Value 2 was WALQ_JOB_FAIL in version
 * 1 of the options, which meant what WALQ_JOB_RETRY means now; it is not
 * used again.)
 */
typedef enum walq_verdict {
    WALQ_JOB_DONE = 0,  /* finished: recorded done */
    WALQ_JOB_RETRY = 1, /* the attempt failed: run again after the backoff, until max_attempts */
    WALQ_JOB_DEAD = 3   /* give up now: recorded dead with the error, no further attempt */
} walq_verdict;

/* A job as a handler sees it; borrowed for the duration of the call. */
typedef struct walq_job walq_job;

WALQ_EXTERN int64_t walq_job_id(const walq_job *job);
WALQ_EXTERN const char *walq_job_queue(const walq_job *job);
/* The payload as JSON text (jsonb's output form); *len may be NULL. */
WALQ_EXTERN const char *walq_job_payload(const walq_job *job, size_t *len);
/* 1 for the first attempt. */
WALQ_EXTERN int walq_job_attempt(const walq_job *job);
WALQ_EXTERN int walq_job_priority(const walq_job *job);

/*
 * A C handler.  Called in the consumer's thread, one job at a time: keep it
 * short, or hand the work to threads of your own and use the exec or
 * coprocess handler instead.  On failure write a one-line reason into err
 * (errlen bytes, NUL included); it becomes the job's last_error.  payload is
 * the options' callback_payload.
 */
typedef walq_verdict (*walq_handler_fn)(char *err, size_t errlen, const walq_job *job,
                                        void *payload);

/*
 * Options of a consumer.  Initialise them with WALQ_OPTIONS_INIT or
 * walq_options_init() and change what you need; strings are copied by
 * walq_consumer_open().  Every duration is in milliseconds.
 */
typedef struct walq_options {
    unsigned int version;
    const char *source;  /* conninfo of the server holding the slot; NULL: libpq environment */
    const char *primary; /* conninfo of the server taking the acks; NULL: libpq environment */
    const char *group;   /* consumer group: [a-z0-9_]+, at most 58 characters */
    const char *const *queues; /* queues the group reads */
    size_t nqueues;
    walq_handler_kind handler;
    const char *const *argv;  /* exec handler: program and arguments, NULL-terminated */
    int concurrency;          /* handlers running at once */
    int drain;                /* stop once the backlog present at start is done */
    int64_t timeout_ms;       /* how long a handler may run; 0: no limit */
    int64_t backoff_min_ms;   /* delay before the first retry */
    int64_t backoff_max_ms;   /* ceiling of the retry delay */
    const char *sql;          /* sql handler: statement with $1 = payload, $2 = job id */
    walq_handler_fn callback; /* callback handler */
    void *callback_payload;
    int coprocess_inflight;     /* coprocess handler: jobs in flight per worker */
    int batch_size;             /* outcomes per ack transaction at most */
    int64_t ack_delay_ms;       /* longest an outcome waits for its ack transaction */
    int max_in_flight;          /* jobs held in memory before the stream is paused */
    int64_t status_interval_ms; /* time between standby status updates */
    int64_t timer_horizon_ms;   /* how far ahead scheduled jobs are kept in memory */
    walq_log_fn log;
    void *log_payload;
    walq_log_level log_level;
    /*
     * A group split over several readers: this one takes the jobs whose id
     * hashes to `partition` of `partitions` (walq.partition_of in SQL).  Each
     * reader has its own slot; 0 of 1 (or 0 of 0) is the whole group.
     */
    int partition;
    int partitions;
    /*
     * No longer has an effect: every outcome is kept, exactly, until the
     * retention period removes its job (walq.set_retention() in SQL).
     */
    int keep_outcomes;
    /*
     * The longest the consumer waits for one answer of the primary before it
     * drops that connection and reconnects with backoff (statements and
     * lock waits there are bounded by it too); 0: no limit.
     */
    int64_t primary_timeout_ms;
    /*
     * Payload bytes held in memory (ready, running, waiting for their time
     * or for their ack) before the stream is paused, beside max_in_flight.
     */
    int64_t max_in_flight_bytes;
    /*
     * The output plugin a new slot is made with: "pgoutput" (PostgreSQL's
     * own, allowed on every server), "wal2json", or NULL or "auto" for
     * pgoutput.  A slot that exists keeps the plugin it was made with; naming
     * another one is an error.
     */
    const char *plugin;
    /*
     * Make the slot a failover slot (PostgreSQL 17 and later, a slot on the
     * primary): standbys with sync_replication_slots = on keep a copy, and
     * after a failover the group reads on from the promoted standby without
     * reading walq.jobs again.  A slot that exists is made one.
     */
    int failover_slot;
    /*
     * Variables of the consumer's environment that handlers get although
     * walq keeps them back.  Exec and coprocess handlers run on what
     * producers wrote, so no variable whose name starts with PG (libpq's
     * PGPASSWORD, PGPASSFILE, PGSERVICEFILE, PGSSLKEY, where and as whom to
     * connect) reaches them unless a name here says so; a name ending in "*"
     * names every variable it begins.  NULL-terminated; NULL: none.
     */
    const char *const *pass_env;
} walq_options;

/*
 * Version 2 made every duration an int64_t of milliseconds, put the payload
 * of the callbacks last, and added WALQ_JOB_DEAD.  walq_consumer_open() still
 * accepts version 1; see docs/c-api.md.
 */
#define WALQ_OPTIONS_VERSION 2

/*
 * The defaults, every field named in the order of the struct (so that C++20
 * takes it too).
 */
#define WALQ_OPTIONS_INIT                                                                          \
    {                                                                                              \
        .version = WALQ_OPTIONS_VERSION, .source = NULL, .primary = NULL, .group = NULL,           \
        .queues = NULL, .nqueues = 0, .handler = WALQ_HANDLER_EXEC, .argv = NULL,                  \
        .concurrency = 1, .drain = 0, .timeout_ms = 0, .backoff_min_ms = 1000,                     \
        .backoff_max_ms = 600000, .sql = NULL, .callback = NULL, .callback_payload = NULL,         \
        .coprocess_inflight = 16, .batch_size = 1000, .ack_delay_ms = 10, .max_in_flight = 10000,  \
        .status_interval_ms = 10000, .timer_horizon_ms = 60000, .log = NULL, .log_payload = NULL,  \
        .log_level = WALQ_LOG_INFO, .partition = 0, .partitions = 1, .keep_outcomes = 0,           \
        .primary_timeout_ms = 10000, .max_in_flight_bytes = 268435456, .plugin = NULL,             \
        .failover_slot = 0, .pass_env = NULL                                                       \
    }

/*
 * Fills every field of opts with its default for version, which is the
 * WALQ_OPTIONS_VERSION of the walq.h the caller was compiled with: the
 * function form of WALQ_OPTIONS_INIT, for callers without designated
 * initializers (C++ before C++20, other languages).  WALQ_EINVAL, with
 * walq_last_error() saying why, for a version this library does not know.
 */
WALQ_EXTERN int walq_options_init(walq_options *opts, unsigned int version);

typedef struct walq_consumer walq_consumer;

/* Counters of a consumer since it was opened. */
typedef struct walq_stats {
    uint64_t received; /* jobs taken from the table or the stream */
    uint64_t done;     /* jobs recorded done */
    uint64_t retried;  /* failed attempts scheduled again */
    uint64_t dead;     /* jobs recorded dead */
    uint64_t acks;     /* ack transactions committed */
    uint64_t reconnects;
    uint64_t confirmed_lsn; /* last position confirmed to the source */
} walq_stats;

/*
 * Validates the options and prepares a consumer; no connection is made yet.
 * Options of version 1 (the first walq.h) are accepted too, and their
 * callbacks called as version 1 declared them.  On failure *out is NULL and
 * walq_last_error() says why.
 */
WALQ_EXTERN int walq_consumer_open(walq_consumer **out, const walq_options *opts);

/*
 * Runs until walq_consumer_stop() is called, or, with drain set, until the
 * backlog present at start has final outcomes.  Returns 0 after a clean stop.
 */
WALQ_EXTERN int walq_consumer_run(walq_consumer *c);

/*
 * Asks a running consumer to stop: the first call finishes the running jobs,
 * acks and confirms them; a call with immediate set stops at once, killing the
 * handlers.  Safe to call from a signal handler.
 */
WALQ_EXTERN void walq_consumer_stop(walq_consumer *c, int immediate);

/*
 * Gives a running (or not yet running) consumer new settings: opts is a
 * whole set of options, checked as walq_consumer_open() checks them, of
 * which these fields are taken and the others ignored: concurrency (a
 * coprocess handler starts more workers, but stops none before a restart),
 * timeout_ms, backoff_min_ms, backoff_max_ms, batch_size, ack_delay_ms,
 * max_in_flight, max_in_flight_bytes and log_level.  The consumer's loop
 * applies them at its next turn: running handlers keep the timeout they
 * started with, new ones get the new limits, and each change is logged.
 * Nothing of opts is kept once it returns.  May be called from another
 * thread than walq_consumer_run()'s, but not from a signal handler.
 * WALQ_EINVAL, with walq_last_error() saying why, leaves the settings as
 * they were.
 */
WALQ_EXTERN int walq_consumer_reconfigure(walq_consumer *c, const walq_options *opts);

/* The message of the consumer's last failure, or "". Borrowed. */
WALQ_EXTERN const char *walq_consumer_errmsg(const walq_consumer *c);

/* Copies the consumer's counters into *out. */
WALQ_EXTERN void walq_consumer_stats(walq_stats *out, const walq_consumer *c);

/* What a consumer is doing, as its watch callback is told. */
typedef enum walq_state {
    WALQ_STATE_STARTING = 0,     /* connecting, taking the reader, opening the slot */
    WALQ_STATE_STANDBY = 1,      /* another process holds the reader: waiting to take over */
    WALQ_STATE_BACKFILL = 2,     /* reading jobs from walq.jobs (the first start, a resync) */
    WALQ_STATE_STREAMING = 3,    /* reading the slot */
    WALQ_STATE_RECONNECTING = 4, /* a server was lost: trying again with backoff */
    WALQ_STATE_STOPPING = 5      /* asked to stop: finishing and recording the running jobs */
} walq_state;

/* What a watch callback is told; borrowed for the call. */
typedef struct walq_watch {
    walq_state state;
    uint64_t received_lsn;  /* furthest WAL position the source reported */
    uint64_t confirmed_lsn; /* last position confirmed to the source */
    uint64_t in_memory;     /* jobs held in memory: ready, running, waiting */
} walq_watch;

typedef void (*walq_watch_fn)(const walq_watch *w, void *payload);

/*
 * Has walq_consumer_run() call fn in its own thread at every change of
 * state, and at least every interval_ms while it runs: in its loop, while it
 * waits on a server and while it stands by.  A consumer stuck anywhere stops
 * calling it, which is what a watchdog (systemd's WATCHDOG=1) wants to know.
 * fn must return quickly and may call walq_consumer_stats() but nothing else
 * of the consumer.  Call it before walq_consumer_run(); fn NULL: no calls.
 */
WALQ_EXTERN void walq_consumer_watch(walq_consumer *c, walq_watch_fn fn, void *payload,
                                     int64_t interval_ms);

WALQ_EXTERN void walq_consumer_free(walq_consumer *c);

/*
 * Creates or upgrades the walq schema on the server named by conninfo (NULL:
 * libpq environment).  Idempotent.  *applied, when not NULL, receives how many
 * migrations ran.
 */
WALQ_EXTERN int walq_schema_init(const char *conninfo, int *applied);

/* Group names allowed by walq: what a replication slot name allows. */
WALQ_EXTERN int walq_group_name_valid(const char *group);

#ifdef __cplusplus
}
#endif

#endif /* WALQ_H */
