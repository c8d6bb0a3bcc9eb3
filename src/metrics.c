/*
 * Metrics of a consumer or an audit (see metrics.h): counters the loop
 * bumps under a mutex, gauges it publishes once a turn, and their
 * rendering in Prometheus's text format for the HTTP threads.
 */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "metrics.h"

/* Handler durations: a millisecond to five minutes. */
static const double run_bounds[] = {0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                                    1,     2.5,   5,    10,    30,   60,  300};
/* Ack transactions: a millisecond to ten seconds (the primary's default timeout). */
static const double ack_bounds[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                    0.1,    0.25,  0.5,    1,     2.5,  5,     10};

static void hist_init(walq__histogram *h, const double *bounds, size_t n)
{
    memset(h, 0, sizeof(*h));
    h->bounds = bounds;
    h->nbounds = n;
}

static void hist_observe(walq__histogram *h, double v)
{
    size_t i = 0;

    while (i < h->nbounds && v > h->bounds[i])
        i++;
    h->counts[i]++;
    h->sum += v;
    h->count++;
}

walq__metrics *walq__metrics_new(const char *kind, const char *group, const char *slot,
                                 int partition, int partitions, const char *const *queues,
                                 size_t nqueues)
{
    walq__metrics *m = calloc(1, sizeof(*m));

    if (m == NULL)
        return NULL;
    m->queues = nqueues ? calloc(nqueues, sizeof(*m->queues)) : NULL;
    m->pending = nqueues ? calloc(nqueues, sizeof(*m->pending)) : NULL;
    if (nqueues && (m->queues == NULL || m->pending == NULL)) {
        free(m->queues);
        free(m->pending);
        free(m);
        return NULL;
    }
    for (size_t i = 0; i < nqueues; i++) {
        m->queues[i].name = walq__strdup(queues[i]);
        if (m->queues[i].name == NULL) {
            m->nqueues = i;
            walq__metrics_free(m);
            return NULL;
        }
        hist_init(&m->queues[i].run, run_bounds, WALQ__ARRAY_SIZE(run_bounds));
        m->pending[i].name = m->queues[i].name;
        hist_init(&m->pending[i].run, run_bounds, WALQ__ARRAY_SIZE(run_bounds));
    }
    m->nqueues = nqueues;
    pthread_mutex_init(&m->mu, NULL);
    m->kind = kind;
    snprintf(m->group, sizeof(m->group), "%s", group ? group : "");
    snprintf(m->slot, sizeof(m->slot), "%s", slot ? slot : "");
    m->partition = partition;
    m->partitions = partitions;
    m->started_wall_us = walq__wall_us();
    m->wal_retained = -1;
    hist_init(&m->ack_latency, ack_bounds, WALQ__ARRAY_SIZE(ack_bounds));
    return m;
}

void walq__metrics_free(walq__metrics *m)
{
    if (m == NULL)
        return;
    for (size_t i = 0; i < m->nqueues; i++)
        free(m->queues[i].name);
    free(m->queues);
    free(m->pending);
    pthread_mutex_destroy(&m->mu);
    free(m);
}

void walq__metrics_lock(walq__metrics *m)
{
    pthread_mutex_lock(&m->mu);
}

void walq__metrics_unlock(walq__metrics *m)
{
    pthread_mutex_unlock(&m->mu);
}

/* The loop's pending counts of the queue, or NULL for a queue not listed. */
static walq__metrics_queue *pending_of(walq__metrics *m, const char *queue)
{
    if (queue == NULL)
        return NULL;
    if (m->last_queue < m->nqueues && strcmp(m->queues[m->last_queue].name, queue) == 0)
        return &m->pending[m->last_queue];
    for (size_t i = 0; i < m->nqueues; i++)
        if (strcmp(m->queues[i].name, queue) == 0) {
            m->last_queue = i;
            return &m->pending[i];
        }
    return NULL;
}

/* This minute's slot of the ring, emptied if it held an older minute. */
static walq__minute *this_minute(walq__metrics *m)
{
    int64_t minute = walq__wall_us() / 60000000;
    walq__minute *s = &m->minutes[minute % WALQ__MINUTES];

    if (s->minute != minute) {
        memset(s, 0, sizeof(*s));
        s->minute = minute;
    }
    return s;
}

void walq__metrics_job(walq__metrics *m, const char *queue, walq__job_event ev)
{
    walq__metrics_queue *q;
    walq__minute *min;

    if (m == NULL)
        return;
    /* The loop's own counts: published with the gauges (walq__metrics_publish). */
    q = pending_of(m, queue);
    min = &m->pending_minute;
    switch (ev) {
    case WALQ__EV_RECEIVED:
        min->received++;
        if (q)
            q->received++;
        break;
    case WALQ__EV_DONE:
        min->done++;
        if (q)
            q->done++;
        break;
    case WALQ__EV_RETRIED:
        min->retried++;
        if (q)
            q->retried++;
        break;
    case WALQ__EV_DEAD:
        min->dead++;
        if (q)
            q->dead++;
        break;
    case WALQ__EV_CANCELLED:
        if (q)
            q->cancelled++;
        break;
    }
}

void walq__metrics_ran(walq__metrics *m, const char *queue, int64_t started_mono_us)
{
    walq__metrics_queue *q;
    int64_t took;

    if (m == NULL || (q = pending_of(m, queue)) == NULL)
        return;
    took = walq__mono_us() - started_mono_us;
    hist_observe(&q->run, took > 0 ? (double)took / 1e6 : 0.0);
}

void walq__metrics_acked(walq__metrics *m, int64_t sent_mono_us)
{
    int64_t now = walq__mono_us(), took = now - sent_mono_us;

    if (m == NULL)
        return;
    pthread_mutex_lock(&m->mu);
    m->acks++;
    hist_observe(&m->ack_latency, took > 0 ? (double)took / 1e6 : 0.0);
    m->last_ack_wall_us = walq__wall_us();
    m->primary_ok_mono_us = now;
    pthread_mutex_unlock(&m->mu);
}

void walq__metrics_primary_ok(walq__metrics *m)
{
    if (m == NULL)
        return;
    pthread_mutex_lock(&m->mu);
    m->primary_ok_mono_us = walq__mono_us();
    pthread_mutex_unlock(&m->mu);
}

/* Remembers when received first reached each position, coarsely, for the confirmed lag. */
static void lag_sample(walq__metrics *m, int64_t now)
{
    size_t tail;

    if (m->lag_n > 0) {
        tail = (m->lag_head + m->lag_n - 1) % WALQ__LAG_SAMPLES;
        if (m->g.received_lsn <= m->lag[tail].lsn)
            goto drop;
        /* A tenth of a second apart at most, or the ring is full: the last one grows. */
        if (now - m->lag[tail].at_us < 100000 || m->lag_n == WALQ__LAG_SAMPLES) {
            m->lag[tail].lsn = m->g.received_lsn;
            goto drop;
        }
    }
    tail = (m->lag_head + m->lag_n) % WALQ__LAG_SAMPLES;
    m->lag[tail].lsn = m->g.received_lsn;
    m->lag[tail].at_us = now;
    m->lag_n++;
drop:
    while (m->lag_n > 0 && m->lag[m->lag_head].lsn <= m->g.confirmed_lsn) {
        m->lag_head = (m->lag_head + 1) % WALQ__LAG_SAMPLES;
        m->lag_n--;
    }
}

/* Adds h's counts to into, and empties h. */
static void hist_add(walq__histogram *into, walq__histogram *h)
{
    for (size_t i = 0; i <= h->nbounds; i++) {
        into->counts[i] += h->counts[i];
        h->counts[i] = 0;
    }
    into->sum += h->sum;
    into->count += h->count;
    h->sum = 0;
    h->count = 0;
}

/* The loop's counts since the last publish, added in (under the mutex) and emptied. */
static void add_pending(walq__metrics *m)
{
    walq__minute *p = &m->pending_minute, *min;

    if (p->received || p->done || p->retried || p->dead) {
        min = this_minute(m);
        min->received += p->received;
        min->done += p->done;
        min->retried += p->retried;
        min->dead += p->dead;
        memset(p, 0, sizeof(*p));
    }
    for (size_t i = 0; i < m->nqueues; i++) {
        walq__metrics_queue *q = &m->queues[i], *n = &m->pending[i];

        q->received += n->received;
        q->done += n->done;
        q->retried += n->retried;
        q->dead += n->dead;
        q->cancelled += n->cancelled;
        n->received = n->done = n->retried = n->dead = n->cancelled = 0;
        if (n->run.count > 0)
            hist_add(&q->run, &n->run);
    }
}

void walq__metrics_publish(walq__metrics *m, const walq__gauges *g)
{
    int64_t now = walq__mono_us();

    if (m == NULL)
        return;
    pthread_mutex_lock(&m->mu);
    add_pending(m);
    m->g = *g;
    m->published_mono_us = now;
    if (g->streaming)
        m->streaming_mono_us = now;
    lag_sample(m, now);
    pthread_mutex_unlock(&m->mu);
}

void walq__metrics_set_retained(walq__metrics *m, int64_t bytes, uint64_t wal_lsn)
{
    pthread_mutex_lock(&m->mu);
    m->wal_retained = bytes;
    m->sampled_wal_lsn = wal_lsn;
    m->retained_at_mono_us = walq__mono_us();
    pthread_mutex_unlock(&m->mu);
}

uint64_t walq__metrics_server_lsn(const walq__metrics *m)
{
    return m->sampled_wal_lsn > m->g.server_lsn ? m->sampled_wal_lsn : m->g.server_lsn;
}

double walq__metrics_lag_received_seconds(const walq__metrics *m, int64_t now_wall_us)
{
    if (walq__metrics_server_lsn(m) <= m->g.received_lsn || m->g.commit_time_us <= 0 ||
        now_wall_us <= m->g.commit_time_us)
        return 0.0;
    return (double)(now_wall_us - m->g.commit_time_us) / 1e6;
}

double walq__metrics_lag_confirmed_seconds(const walq__metrics *m, int64_t now_mono_us)
{
    if (m->lag_n == 0 || m->g.confirmed_lsn >= m->g.received_lsn)
        return 0.0;
    return (double)(now_mono_us - m->lag[m->lag_head].at_us) / 1e6;
}

int walq__metrics_ready(walq__metrics *m, int64_t within_us, char *why, size_t len)
{
    int64_t now = walq__mono_us();
    int ok = 0;

    pthread_mutex_lock(&m->mu);
    if (m->streaming_mono_us == 0)
        snprintf(why, len, "not streaming from replication slot \"%s\" yet", m->slot);
    else if (!m->g.streaming && now - m->streaming_mono_us > within_us)
        snprintf(why, len, "not streaming from replication slot \"%s\" for %.0f s", m->slot,
                 (double)(now - m->streaming_mono_us) / 1e6);
    else if (m->primary_ok_mono_us == 0)
        snprintf(why, len, "no %s has succeeded yet",
                 strcmp(m->kind, "audit") == 0 ? "write" : "ack or upkeep on the primary");
    else if (!m->g.primary_up && now - m->primary_ok_mono_us > within_us)
        snprintf(why, len, "the %s has been unreachable for %.0f s",
                 strcmp(m->kind, "audit") == 0 ? "audit's target" : "primary",
                 (double)(now - m->primary_ok_mono_us) / 1e6);
    else if (m->g.ack_waiting > 0 && m->g.ack_oldest_us > 0 &&
             now - m->g.ack_oldest_us > within_us && now - m->primary_ok_mono_us > within_us)
        snprintf(why, len, "%llu outcomes have waited %.0f s for an ack",
                 (unsigned long long)m->g.ack_waiting, (double)(now - m->g.ack_oldest_us) / 1e6);
    else if (now - m->published_mono_us > within_us)
        snprintf(why, len, "the loop has not turned for %.0f s",
                 (double)(now - m->published_mono_us) / 1e6);
    else
        ok = 1;
    pthread_mutex_unlock(&m->mu);
    return ok;
}

/* ------------------------------------------------------------------ */
/* The text exposition format                                          */

typedef struct writer {
    walq__buf *b;
    const walq__metrics *m;
    int rc;
} writer;

/* Appends to the exposition; its first error stays in w->rc. */
#define put(w, ...) walq__buf_putf((w)->b, &(w)->rc, __VA_ARGS__)

/* A label value, escaped: backslash, double quote and newline. */
static void put_label(writer *w, const char *s)
{
    for (; *s && w->rc == 0; s++) {
        const char *esc = *s == '\\' ? "\\\\" : *s == '"' ? "\\\"" : *s == '\n' ? "\\n" : NULL;

        w->rc = esc ? walq__buf_puts(w->b, esc) : walq__buf_append(w->b, s, 1);
    }
}

static void head(writer *w, const char *name, const char *type, const char *help)
{
    put(w, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* name{group="...",partition="..."[,queue="..."][extra] */
static void labels(writer *w, const char *name, const char *queue, const char *extra)
{
    put(w, "%s{group=\"", name);
    put_label(w, w->m->group);
    put(w, "\",partition=\"%d\"", w->m->partition);
    if (queue != NULL) {
        put(w, ",queue=\"");
        put_label(w, queue);
        put(w, "\"");
    }
    if (extra != NULL)
        put(w, ",%s", extra);
    put(w, "}");
}

static void sample_u(writer *w, const char *name, const char *queue, uint64_t v)
{
    labels(w, name, queue, NULL);
    put(w, " %llu\n", (unsigned long long)v);
}

static void sample_d(writer *w, const char *name, const char *queue, double v)
{
    labels(w, name, queue, NULL);
    put(w, " %.6f\n", v);
}

static void histogram(writer *w, const char *name, const char *queue, const walq__histogram *h)
{
    char n[128], le[64];
    uint64_t cum = 0;

    snprintf(n, sizeof(n), "%s_bucket", name);
    for (size_t i = 0; i <= h->nbounds; i++) {
        cum += h->counts[i];
        if (i < h->nbounds)
            snprintf(le, sizeof(le), "le=\"%g\"", h->bounds[i]);
        else
            snprintf(le, sizeof(le), "le=\"+Inf\"");
        labels(w, n, queue, le);
        put(w, " %llu\n", (unsigned long long)cum);
    }
    snprintf(n, sizeof(n), "%s_sum", name);
    sample_d(w, n, queue, h->sum);
    snprintf(n, sizeof(n), "%s_count", name);
    sample_u(w, n, queue, h->count);
}

/* One counter per queue, from the field at offset off of walq__metrics_queue. */
static void per_queue(writer *w, const char *name, const char *help, size_t off)
{
    head(w, name, "counter", help);
    for (size_t i = 0; i < w->m->nqueues; i++) {
        const walq__metrics_queue *q = &w->m->queues[i];

        sample_u(w, name, q->name, *(const uint64_t *)(const void *)((const char *)q + off));
    }
}

static void write_jobs(writer *w)
{
    const walq__metrics *m = w->m;

    per_queue(w, "walq_jobs_received_total", "Jobs taken from the stream or the table.",
              offsetof(walq__metrics_queue, received));
    per_queue(w, "walq_jobs_done_total", "Jobs recorded done.",
              offsetof(walq__metrics_queue, done));
    per_queue(w, "walq_jobs_retried_total", "Failed attempts scheduled to run again.",
              offsetof(walq__metrics_queue, retried));
    per_queue(w, "walq_jobs_dead_total", "Jobs recorded dead.",
              offsetof(walq__metrics_queue, dead));
    per_queue(w, "walq_jobs_cancelled_total", "Waiting jobs let go after walq job cancel.",
              offsetof(walq__metrics_queue, cancelled));
    head(w, "walq_handler_duration_seconds", "histogram",
         "Time from a handler's start to its verdict.");
    for (size_t i = 0; i < m->nqueues; i++)
        histogram(w, "walq_handler_duration_seconds", m->queues[i].name, &m->queues[i].run);
    head(w, "walq_jobs_in_flight", "gauge", "Jobs a handler is running now.");
    sample_u(w, "walq_jobs_in_flight", NULL, m->g.in_flight);
    head(w, "walq_jobs_in_memory", "gauge",
         "Jobs held in memory: ready, scheduled soon, running or waiting for their ack.");
    sample_u(w, "walq_jobs_in_memory", NULL, m->g.in_memory);
    head(w, "walq_acks_total", "counter", "Ack transactions committed on the primary.");
    sample_u(w, "walq_acks_total", NULL, m->acks);
    head(w, "walq_ack_duration_seconds", "histogram",
         "Time from sending an ack transaction to its commit.");
    histogram(w, "walq_ack_duration_seconds", NULL, &m->ack_latency);
}

static void write_audit(writer *w)
{
    const walq__metrics *m = w->m;

    head(w, "walq_audit_transactions_total", "counter",
         "Transactions written durably to the trail.");
    sample_u(w, "walq_audit_transactions_total", NULL, m->g.transactions);
    head(w, "walq_audit_changes_total", "counter", "Changes written durably to the trail.");
    sample_u(w, "walq_audit_changes_total", NULL, m->g.changes);
    head(w, "walq_acks_total", "counter", "Durable writes of the trail (fsyncs or commits).");
    sample_u(w, "walq_acks_total", NULL, m->g.flushes);
}

int walq__metrics_write(walq__metrics *m, walq__buf *out)
{
    writer w = {out, m, 0};
    int64_t now_wall = walq__wall_us(), now_mono = walq__mono_us();
    char extra[160];
    uint64_t server;
    int audit;

    pthread_mutex_lock(&m->mu);
    server = walq__metrics_server_lsn(m);
    audit = strcmp(m->kind, "audit") == 0;
    head(&w, "walq_info", "gauge", "The process: what it runs, its slot and partitions; always 1.");
    /* The slot is a replication slot's name: nothing in it needs escaping. */
    snprintf(extra, sizeof(extra), "kind=\"%s\",partitions=\"%d\",slot=\"%s\"", m->kind,
             m->partitions, m->slot);
    labels(&w, "walq_info", NULL, extra);
    put(&w, " 1\n");
    head(&w, "walq_start_time_seconds", "gauge", "When the process started, in Unix seconds.");
    sample_d(&w, "walq_start_time_seconds", NULL, (double)m->started_wall_us / 1e6);
    if (audit)
        write_audit(&w);
    else
        write_jobs(&w);
    head(&w, "walq_last_ack_timestamp_seconds", "gauge",
         "Unix time of the last successful ack; 0 before the first.");
    sample_d(&w, "walq_last_ack_timestamp_seconds", NULL, (double)m->last_ack_wall_us / 1e6);
    head(&w, "walq_stream_bytes_total", "counter",
         "Bytes of replication messages received from the slot.");
    sample_u(&w, "walq_stream_bytes_total", NULL, m->g.bytes);
    head(&w, "walq_reconnects_total", "counter",
         "Times the replication stream was lost and made again.");
    sample_u(&w, "walq_reconnects_total", NULL, m->g.reconnects);
    head(&w, "walq_streaming", "gauge", "1 while the replication stream is up.");
    sample_u(&w, "walq_streaming", NULL, (uint64_t)m->g.streaming);
    head(&w, "walq_primary_up", "gauge",
         audit ? "1 while the trail's target is reachable." : "1 while the primary is connected.");
    sample_u(&w, "walq_primary_up", NULL, (uint64_t)m->g.primary_up);
    head(&w, "walq_server_wal_lsn_bytes", "gauge",
         "The source's WAL end as its last message said, as a byte position.");
    sample_u(&w, "walq_server_wal_lsn_bytes", NULL, server);
    head(&w, "walq_received_lsn_bytes", "gauge",
         "End of the last whole transaction received, as a byte position.");
    sample_u(&w, "walq_received_lsn_bytes", NULL, m->g.received_lsn);
    head(&w, "walq_confirmed_lsn_bytes", "gauge",
         "Position last confirmed to the source, as a byte position.");
    sample_u(&w, "walq_confirmed_lsn_bytes", NULL, m->g.confirmed_lsn);
    head(&w, "walq_lag_received_bytes", "gauge", "WAL the source has that is not received yet.");
    sample_u(&w, "walq_lag_received_bytes", NULL,
             server > m->g.received_lsn ? server - m->g.received_lsn : 0);
    head(&w, "walq_lag_received_seconds", "gauge",
         "Age of the transaction being received while behind the source; 0 when caught up.");
    sample_d(&w, "walq_lag_received_seconds", NULL,
             walq__metrics_lag_received_seconds(m, now_wall));
    head(&w, "walq_lag_confirmed_bytes", "gauge",
         "WAL received but not yet confirmed to the source.");
    sample_u(&w, "walq_lag_confirmed_bytes", NULL,
             m->g.received_lsn > m->g.confirmed_lsn ? m->g.received_lsn - m->g.confirmed_lsn : 0);
    head(&w, "walq_lag_confirmed_seconds", "gauge",
         "How long ago the oldest received but unconfirmed WAL was received.");
    sample_d(&w, "walq_lag_confirmed_seconds", NULL,
             walq__metrics_lag_confirmed_seconds(m, now_mono));
    if (m->wal_retained >= 0) {
        head(&w, "walq_slot_retained_wal_bytes", "gauge",
             "WAL the replication slot keeps on the source (pg_replication_slots' restart_lsn to "
             "the WAL end).");
        snprintf(extra, sizeof(extra), "slot=\"%s\"", m->slot);
        labels(&w, "walq_slot_retained_wal_bytes", NULL, extra);
        put(&w, " %lld\n", (long long)m->wal_retained);
    }
    pthread_mutex_unlock(&m->mu);
    return w.rc;
}
