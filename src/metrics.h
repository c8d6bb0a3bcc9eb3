/*
 * Metrics of a running consumer or audit: what `--http` serves at /metrics,
 * /readyz and on the status page.
 *
 * The loop is the only writer.  It counts the jobs' events as they happen
 * (a job received, an outcome recorded, a handler run) in counts of its
 * own, without the mutex, and once a turn, before it waits, publishes them
 * with its gauges (positions, in flight, streaming or not); an ack takes
 * the mutex for its few stores.  No write holds the mutex for I/O.  The HTTP
 * threads read under the same mutex, so a scrape sees one consistent
 * snapshot and never waits for the loop longer than those stores.
 *
 * walq__metrics_write() renders the Prometheus text exposition format
 * (version 0.0.4); the names are listed in docs/operations.md ("Metrics").
 */
#ifndef WALQ_METRICS_H
#define WALQ_METRICS_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "common.h"

#define WALQ__HIST_MAX    16
#define WALQ__MINUTES     16 /* the per-minute ring: the last quarter of an hour and the current */
#define WALQ__LAG_SAMPLES 128

typedef struct walq__histogram {
    const double *bounds; /* upper bounds in seconds, ascending; +Inf is implied */
    size_t nbounds;
    uint64_t counts[WALQ__HIST_MAX + 1]; /* per bucket, not cumulative; the last is +Inf */
    double sum;
    uint64_t count;
} walq__histogram;

/* Counters of one queue of the group. */
typedef struct walq__metrics_queue {
    char *name;
    uint64_t received, done, retried, dead, cancelled;
    walq__histogram run; /* handler durations */
} walq__metrics_queue;

/* One minute of the ring: what happened in it. */
typedef struct walq__minute {
    int64_t minute; /* Unix minutes; 0: unused */
    uint64_t received, done, retried, dead;
} walq__minute;

typedef enum walq__job_event {
    WALQ__EV_RECEIVED,
    WALQ__EV_DONE,
    WALQ__EV_RETRIED,
    WALQ__EV_DEAD,
    WALQ__EV_CANCELLED
} walq__job_event;

/* What the loop publishes once a turn. */
typedef struct walq__gauges {
    int streaming;      /* the replication stream is up */
    int primary_up;     /* the primary (or the audit's sink) is connected */
    uint64_t in_flight; /* jobs a handler is running */
    uint64_t in_memory; /* jobs held in memory (ready, timers, running, acking) */
    uint64_t ack_waiting;
    int64_t ack_oldest_us; /* monotonic: when the oldest outcome waiting for an ack came; 0 */
    uint64_t server_lsn;   /* the source's WAL end, as its last message said */
    uint64_t received_lsn; /* end of the last whole transaction received */
    uint64_t confirmed_lsn;
    int64_t commit_time_us; /* commit time of the transaction received last (Unix µs); 0 */
    uint64_t bytes;         /* bytes of replication messages received */
    uint64_t reconnects;
    /* The audit's. */
    uint64_t transactions, changes, flushes;
} walq__gauges;

typedef struct walq__metrics {
    pthread_mutex_t mu;
    const char *kind; /* "consume" or "audit" */
    char group[64];
    char slot[64];
    int partition, partitions;
    int64_t started_wall_us;

    walq__metrics_queue *queues;
    size_t nqueues;

    uint64_t acks;
    walq__histogram ack_latency;
    int64_t last_ack_wall_us; /* 0: none yet */

    walq__gauges g;
    int64_t published_mono_us;
    int64_t streaming_mono_us;  /* the last turn that saw the stream up; 0: never */
    int64_t primary_ok_mono_us; /* the last ack, upkeep or flush that succeeded; 0: never */
    int64_t wal_retained;       /* bytes the slot retains; -1: unknown */
    uint64_t sampled_wal_lsn;   /* the source's WAL end, read with it; 0: unknown */
    int64_t retained_at_mono_us;

    /* When received first reached each position: the confirmed lag in seconds. */
    struct {
        uint64_t lsn;
        int64_t at_us;
    } lag[WALQ__LAG_SAMPLES];
    size_t lag_head, lag_n;

    walq__minute minutes[WALQ__MINUTES];

    /*
     * The loop's own: the jobs' events since its last publish, added in
     * by walq__metrics_publish (pending[i] counts queues[i]; its name is
     * not its own), and the queue an event named last.
     */
    walq__metrics_queue *pending;
    walq__minute pending_minute;
    size_t last_queue;
} walq__metrics;

/* kind and the queue names are copied; NULL when out of memory. */
walq__metrics *walq__metrics_new(const char *kind, const char *group, const char *slot,
                                 int partition, int partitions, const char *const *queues,
                                 size_t nqueues);
void walq__metrics_free(walq__metrics *m);

/* The loop's side.  m may be NULL: then they do nothing. */
void walq__metrics_job(walq__metrics *m, const char *queue, walq__job_event ev);
void walq__metrics_ran(walq__metrics *m, const char *queue, int64_t started_mono_us);
void walq__metrics_acked(walq__metrics *m, int64_t sent_mono_us);
void walq__metrics_primary_ok(walq__metrics *m);
void walq__metrics_publish(walq__metrics *m, const walq__gauges *g);

/* The HTTP side. */
/* What the source said of the slot: the WAL it retains (-1: unknown) and its WAL end (0: unknown).
 */
void walq__metrics_set_retained(walq__metrics *m, int64_t bytes, uint64_t wal_lsn);

/*
 * The source's WAL end: the later of what its last message said and what
 * the last reading of it said.  Under the mutex.
 */
uint64_t walq__metrics_server_lsn(const walq__metrics *m);

/*
 * Appends the metrics in the Prometheus text format.  0, or WALQ_ENOMEM.
 */
int walq__metrics_write(walq__metrics *m, walq__buf *out);

/*
 * Whether the process has been streaming and acking within within_us: 1,
 * or 0 with the reason in why.
 */
int walq__metrics_ready(walq__metrics *m, int64_t within_us, char *why, size_t len);

/* Lags derived from a snapshot taken under the mutex. */
double walq__metrics_lag_received_seconds(const walq__metrics *m, int64_t now_wall_us);
double walq__metrics_lag_confirmed_seconds(const walq__metrics *m, int64_t now_mono_us);

void walq__metrics_lock(walq__metrics *m);
void walq__metrics_unlock(walq__metrics *m);

/* The metrics of a consumer and of an audit.  Borrowed: they live as long as it does. */
struct walq__audit;
walq__metrics *walq__consumer_metrics(walq_consumer *c);
walq__metrics *walq__audit_metrics(struct walq__audit *a);

#endif
