/*
 * walq serve: /metrics, /healthz and a status page for the whole database,
 * over src/http.c.  Where `walq consume --http` shows one process, this
 * shows every consumer group of the database: each reader's lag in bytes
 * and seconds, its jobs by status per queue, the WAL its slot keeps, and
 * the last dead jobs.  One dashboard then covers a database.
 *
 * Every request reads the database afresh, on serve's own connections (to
 * the primary, and to the source when the slots are on another server),
 * one request at a time.  Every wait is bounded: the connect by
 * connect_timeout, each statement by statement_timeout on the server and
 * by a deadline here (past which the connection is dropped), and the turn
 * of a request waiting for another by the same deadline.  A connection
 * that was lost is made again at the next request.  While the database
 * cannot be read, /metrics and / answer 503 with the reason.
 */
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/serve.h"
#include "cli/webdb.h"
#include "db.h"
#include "http.h"
#include "text.h"
#include "walq.h"

#define EXIT_USAGE 2

#define progname walq__progname

#define DEFAULT_TIMEOUT_MS 5000

typedef struct serve {
    const char *primary, *source; /* conninfo; NULL: the libpq environment */
    int timeout_ms;
    pthread_mutex_t mu; /* one request at a time on the connections */
    PGconn *pconn, *sconn;
} serve;

/* What one request read; every result owned. */
typedef struct snapshot {
    PGresult *readers, *queues, *slots, *dead;
    double took; /* seconds */
} snapshot;

static volatile sig_atomic_t stop_asked;

static void on_stop(void *arg, int immediate)
{
    (void)arg;
    (void)immediate;
    stop_asked = 1;
}

/* ------------------------------------------------------------------ */
/* SQL with deadlines                                                   */

/* How long a statement's answer is waited for: a second past statement_timeout. */
static int wait_ms(const serve *s)
{
    return s->timeout_ms + 1000;
}

static PGconn *db_connect(const serve *s, const char *conninfo, char *err, size_t errlen)
{
    PGconn *conn = NULL;
    char why[512];

    if (walq__connect(&conn, conninfo, WALQ__CONN_SQL, "walq serve") != 0) {
        snprintf(err, errlen, "%s", walq_last_error());
        if (conn)
            PQfinish(conn);
        return NULL;
    }
    /* The server cancels a statement past the bound itself. */
    if (walq__webdb_statement_timeout(&conn, s->timeout_ms, wait_ms(s), why, sizeof(why)) != 0) {
        snprintf(err, errlen, "could not set statement_timeout: %s", why);
        return NULL;
    }
    return conn;
}

/*
 * Runs sql; the result, or NULL with err saying what could not be done and
 * why.  Past the wait, or when the connection broke, the connection is
 * closed (*conn = NULL) and made again by the next request.
 */
static PGresult *db_query(const serve *s, PGconn **conn, const char *what, const char *sql, int n,
                          const char *const *params, char *err, size_t errlen)
{
    char why[512];
    PGresult *res = walq__webdb_query(conn, wait_ms(s), sql, n, params, why, sizeof(why));

    if (res == NULL)
        snprintf(err, errlen, "could not %s: %s", what, why);
    return res;
}

/* The connection to the primary, or to the source; made again if it was lost. */
static PGconn **db_conn(serve *s, int source, char *err, size_t errlen)
{
    PGconn **c = source && s->source ? &s->sconn : &s->pconn;
    const char *info = source && s->source ? s->source : s->primary;

    if (*c != NULL && PQstatus(*c) != CONNECTION_OK) {
        PQfinish(*c);
        *c = NULL;
    }
    if (*c == NULL)
        *c = db_connect(s, info, err, errlen);
    return *c ? c : NULL;
}

/* ------------------------------------------------------------------ */
/* What a request reads                                                 */

static const char readers_sql[] = "SELECT r.group_name, r.partition, r.partitions, r.slot_name,"
                                  "       walq.reader_held(r.slot_name), coalesce(r.holder, ''),"
                                  "       array_to_string(r.queues, ','), r.cursor_lsn::text"
                                  "  FROM walq.readers r ORDER BY r.group_name, r.partition";

/* Per reader and queue: the counts, and how long the oldest queued job waited. */
static const char queues_sql[] =
    "SELECT r.group_name, r.partition, q.queue, q.queued, q.running, q.scheduled, q.done,"
    "       q.dead, q.cancelled,"
    "       coalesce(extract(epoch FROM now() - q.oldest_queued), 0)::float8"
    "  FROM walq.readers r,"
    "       LATERAL walq.queue_summary(r.group_name, r.partitions, r.partition) q"
    " ORDER BY r.group_name, r.partition, q.queue";

static const char slots_sql[] =
    "WITH w AS (SELECT CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn()"
    "                       ELSE pg_current_wal_lsn() END AS lsn)"
    "SELECT s.slot_name, s.active,"
    "       pg_wal_lsn_diff(w.lsn, s.confirmed_flush_lsn)::bigint,"
    "       pg_wal_lsn_diff(w.lsn, s.restart_lsn)::bigint,"
    "       coalesce(s.wal_status, ''), s.safe_wal_size, s.plugin,"
    "       (SELECT pg_wal_lsn_diff(w.lsn, r.sent_lsn)::bigint"
    "          FROM pg_stat_replication r WHERE r.pid = s.active_pid)"
    "  FROM pg_replication_slots s, w WHERE s.slot_name = ANY ($1::text[])";

static const char dead_sql[] =
    "SELECT d.job_id, d.queue, d.consumer_group, d.attempts, coalesce(d.last_error, ''),"
    "       to_char(d.died_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') || ' UTC'"
    "  FROM walq.dead_jobs d ORDER BY d.died_at DESC LIMIT 20";

static void snapshot_free(snapshot *snap)
{
    PQclear(snap->readers);
    PQclear(snap->queues);
    PQclear(snap->slots);
    PQclear(snap->dead);
    memset(snap, 0, sizeof(*snap));
}

/* The slots' names as a text[] literal. */
static int slot_array(const PGresult *readers, walq__buf *b)
{
    int rc = walq__buf_puts(b, "{");

    for (int i = 0; rc == 0 && i < PQntuples(readers); i++) {
        if (i > 0)
            rc = walq__buf_puts(b, ",");
        if (rc == 0)
            rc = walq__buf_array_elem(b, PQgetvalue(readers, i, 3));
    }
    return rc ? rc : walq__buf_puts(b, "}");
}

/*
 * Reads everything a request shows, under the lock of the connections.
 * 0, or -1 with the reason in err.
 */
static int take_snapshot(serve *s, snapshot *snap, int with_dead, char *err, size_t errlen)
{
    int64_t t0 = walq__mono_us();
    struct timespec until;
    PGconn **c = NULL;
    walq__buf names = {0};
    int rc = -1, lk;

    memset(snap, 0, sizeof(*snap));
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += wait_ms(s) / 1000 + 1;
    lk = pthread_mutex_timedlock(&s->mu, &until);
    if (lk != 0) {
        snprintf(err, errlen, "another request has been reading the database for %d s",
                 wait_ms(s) / 1000 + 1);
        return -1;
    }
    /*
     * A connection made by an earlier request may have been lost since (a
     * server restart): the first statement tells, and a new one is made at
     * once rather than failing this request.
     */
    for (int attempt = 0; attempt < 2 && snap->readers == NULL; attempt++) {
        int had = s->pconn != NULL;

        c = db_conn(s, 0, err, errlen);
        if (c == NULL)
            goto done;
        snap->readers =
            db_query(s, c, "read the consumer groups", readers_sql, 0, NULL, err, errlen);
        if (snap->readers == NULL && (!had || s->pconn != NULL))
            goto done;
    }
    if (snap->readers == NULL)
        goto done;
    snap->queues = db_query(s, c, "count the jobs of the groups", queues_sql, 0, NULL, err, errlen);
    if (snap->queues == NULL)
        goto done;
    if (with_dead) {
        snap->dead = db_query(s, c, "read the dead jobs", dead_sql, 0, NULL, err, errlen);
        if (snap->dead == NULL)
            goto done;
    }
    if (slot_array(snap->readers, &names) != 0) {
        snprintf(err, errlen, "out of memory");
        goto done;
    }
    c = db_conn(s, 1, err, errlen);
    if (c == NULL)
        goto done;
    {
        const char *params[1] = {names.data};

        snap->slots = db_query(s, c, "read the slots", slots_sql, 1, params, err, errlen);
    }
    if (snap->slots == NULL)
        goto done;
    snap->took = (double)(walq__mono_us() - t0) / 1e6;
    rc = 0;
done:
    pthread_mutex_unlock(&s->mu);
    walq__buf_free(&names);
    if (rc != 0)
        snapshot_free(snap);
    return rc;
}

/* The row of the slot in snap->slots, or -1. */
static int slot_row(const snapshot *snap, const char *slot)
{
    for (int i = 0; i < PQntuples(snap->slots); i++)
        if (strcmp(PQgetvalue(snap->slots, i, 0), slot) == 0)
            return i;
    return -1;
}

/* A reader's lag in seconds: its oldest queued job's wait, over its queues. */
static double reader_lag_s(const snapshot *snap, const char *group, const char *part)
{
    double lag = 0;

    for (int i = 0; i < PQntuples(snap->queues); i++) {
        if (strcmp(PQgetvalue(snap->queues, i, 0), group) == 0 &&
            strcmp(PQgetvalue(snap->queues, i, 1), part) == 0) {
            double l = strtod(PQgetvalue(snap->queues, i, 9), NULL);

            if (l > lag)
                lag = l;
        }
    }
    return lag;
}

/* ------------------------------------------------------------------ */
/* /metrics                                                             */

static int head(walq__buf *b, const char *name, const char *help)
{
    return walq__buf_printf(b, "# HELP %s %s\n# TYPE %s gauge\n", name, help, name);
}

/* name{group="...",partition="..."[,slot="..."]} */
static int labels(walq__buf *b, const char *name, const char *group, const char *part,
                  const char *slot)
{
    int rc = walq__buf_printf(b, "%s{group=\"", name);

    rc = rc ? rc : walq__http_label(b, group);
    rc = rc ? rc : walq__buf_printf(b, "\",partition=\"%s\"", part);
    if (slot) {
        rc = rc ? rc : walq__buf_puts(b, ",slot=\"");
        rc = rc ? rc : walq__http_label(b, slot);
        rc = rc ? rc : walq__buf_puts(b, "\"");
    }
    return rc ? rc : walq__buf_puts(b, "} ");
}

/* One gauge per reader: column col of snap->readers' slot row, or a computed value. */
enum reader_value {
    RV_LIVE,
    RV_LAG_BYTES,
    RV_LAG_RECEIVED,
    RV_LAG_S,
    RV_RETAINED,
    RV_SAFE,
    RV_ACTIVE
};

static int reader_gauge(walq__buf *b, const snapshot *snap, const char *name, const char *help,
                        enum reader_value v)
{
    int rc = head(b, name, help);

    for (int i = 0; rc == 0 && i < PQntuples(snap->readers); i++) {
        const char *g = PQgetvalue(snap->readers, i, 0), *part = PQgetvalue(snap->readers, i, 1);
        const char *slot = PQgetvalue(snap->readers, i, 3);
        int k = slot_row(snap, slot);
        int with_slot = v == RV_RETAINED || v == RV_SAFE || v == RV_ACTIVE;

        switch (v) {
        case RV_LIVE:
            rc = labels(b, name, g, part, NULL);
            rc = rc ? rc : walq__buf_printf(b, "%d\n", *PQgetvalue(snap->readers, i, 4) == 't');
            continue;
        case RV_LAG_S:
            rc = labels(b, name, g, part, NULL);
            rc = rc ? rc : walq__buf_printf(b, "%.3f\n", reader_lag_s(snap, g, part));
            continue;
        case RV_ACTIVE:
            rc = labels(b, name, g, part, slot);
            rc = rc ? rc
                    : walq__buf_printf(b, "%d\n", k >= 0 && *PQgetvalue(snap->slots, k, 1) == 't');
            continue;
        default:
            break;
        }
        /* The slot's numbers: none for a slot that is missing, or a value it lacks. */
        {
            int col = v == RV_LAG_BYTES ? 2 : v == RV_RETAINED ? 3 : v == RV_LAG_RECEIVED ? 7 : 5;

            if (k < 0 || PQgetisnull(snap->slots, k, col))
                continue;
            rc = labels(b, name, g, part, with_slot ? slot : NULL);
            rc = rc ? rc : walq__buf_printf(b, "%s\n", PQgetvalue(snap->slots, k, col));
        }
    }
    return rc;
}

/* The gauges of each reader, in the order /metrics gives them. */
static const struct {
    const char *name, *help;
    enum reader_value v;
} reader_gauges[] = {
    {"walq_reader_live", "1 when a process holds the reader (walq.reader_held), else 0.", RV_LIVE},
    {"walq_group_lag_bytes", "WAL of the source past the confirmed position of the reader's slot.",
     RV_LAG_BYTES},
    {"walq_group_lag_received_bytes",
     "WAL of the source past what the walsender streaming the slot has sent; absent when none "
     "streams from it.",
     RV_LAG_RECEIVED},
    {"walq_group_lag_seconds",
     "How long the oldest queued job of the reader has waited; 0 when none is queued.", RV_LAG_S},
    {"walq_slot_retained_wal_bytes",
     "WAL the replication slot keeps on the source (pg_replication_slots' restart_lsn to the WAL "
     "end).",
     RV_RETAINED},
    {"walq_slot_safe_wal_size_bytes",
     "WAL that can still be written before the server invalidates the slot "
     "(max_slot_wal_keep_size); absent without a limit.",
     RV_SAFE},
    {"walq_slot_active",
     "1 when a walsender streams from the slot; 0 when none does or the slot is missing.",
     RV_ACTIVE},
};

static int render_metrics(const snapshot *snap, walq__buf *b)
{
    static const char *const status[] = {"queued", "running", "scheduled",
                                         "done",   "dead",    "cancelled"};
    int rc = 0, ngroups = 0;

    for (int i = 0; i < PQntuples(snap->readers); i++)
        if (i == 0 ||
            strcmp(PQgetvalue(snap->readers, i, 0), PQgetvalue(snap->readers, i - 1, 0)) != 0)
            ngroups++;
    rc = head(b, "walq_groups", "Consumer groups in the database.");
    rc = rc ? rc : walq__buf_printf(b, "walq_groups %d\n", ngroups);
    for (size_t i = 0; rc == 0 && i < WALQ__ARRAY_SIZE(reader_gauges); i++)
        rc =
            reader_gauge(b, snap, reader_gauges[i].name, reader_gauges[i].help, reader_gauges[i].v);
    rc = rc ? rc
            : head(b, "walq_jobs",
                   "Jobs kept of the group's queue in each status (walq.queue_summary); "
                   "status=\"dead\" counts the dead jobs.");
    for (int i = 0; rc == 0 && i < PQntuples(snap->queues); i++) {
        for (int k = 0; rc == 0 && k < 6; k++) {
            rc = walq__buf_puts(b, "walq_jobs{group=\"");
            rc = rc ? rc : walq__http_label(b, PQgetvalue(snap->queues, i, 0));
            rc = rc ? rc
                    : walq__buf_printf(b, "\",partition=\"%s\",queue=\"",
                                       PQgetvalue(snap->queues, i, 1));
            rc = rc ? rc : walq__http_label(b, PQgetvalue(snap->queues, i, 2));
            rc = rc ? rc
                    : walq__buf_printf(b, "\",status=\"%s\"} %s\n", status[k],
                                       PQgetvalue(snap->queues, i, 3 + k));
        }
    }
    rc = rc ? rc
            : head(b, "walq_scrape_duration_seconds",
                   "How long reading the database for this answer took.");
    rc = rc ? rc : walq__buf_printf(b, "walq_scrape_duration_seconds %.6f\n", snap->took);
    return rc;
}

static int on_metrics(void *arg, const walq__http_request *req, walq__http_response *resp)
{
    snapshot snap;
    char err[1024];
    int rc;

    (void)req;
    if (take_snapshot(arg, &snap, 0, err, sizeof(err)) != 0) {
        resp->status = 503;
        return walq__buf_printf(&resp->body, "walq serve: %s\n", err);
    }
    resp->content_type = WALQ__HTTP_PROMETHEUS;
    rc = render_metrics(&snap, &resp->body);
    snapshot_free(&snap);
    return rc;
}

static int on_healthz(void *arg, const walq__http_request *req, walq__http_response *resp)
{
    (void)arg;
    (void)req;
    return walq__buf_puts(&resp->body, "ok\n");
}

/* ------------------------------------------------------------------ */
/* The status page                                                      */

static const char page_css[] =
    "body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222;background:#fafafa}"
    "h1{font-size:1.3em}h2{font-size:1.1em;margin-top:1.5em}"
    "table{border-collapse:collapse;background:#fff}"
    "th,td{border:1px solid #ddd;padding:.25em .6em;text-align:left;vertical-align:top}"
    "th{background:#f0f0f0}td.n{text-align:right;font-variant-numeric:tabular-nums}"
    ".warn{color:#a40000;font-weight:bold}.err{font-family:monospace;white-space:pre-wrap}"
    ".muted{color:#777}";

/* s as HTML text, with control characters shown as escapes (walq__text_escape). */
static int html_text(walq__buf *b, const char *s)
{
    char *e = walq__text_escape(s);
    int rc;

    if (e == NULL)
        return WALQ_ENOMEM;
    rc = walq__http_html(b, e);
    free(e);
    return rc;
}

static int render_page(const snapshot *snap, walq__buf *b)
{
    time_t t = time(NULL);
    struct tm tm;
    char stamp[32];
    int rc;

    gmtime_r(&t, &tm);
    strftime(stamp, sizeof(stamp), "%Y-%m-%d %H:%M:%S UTC", &tm);
    rc = walq__buf_printf(b,
                          "<!DOCTYPE html><html><head><meta charset=\"utf-8\">"
                          "<meta http-equiv=\"refresh\" content=\"10\">"
                          "<title>walq serve</title><style>%s</style></head><body>"
                          "<h1>walq %s: the consumer groups of the database</h1>"
                          "<p class=\"muted\">Read at %s in %.3f s; this page refreshes every "
                          "10 s.</p><h2>Readers</h2>",
                          page_css, WALQ_VERSION_STRING, stamp, snap->took);
    if (rc == 0 && PQntuples(snap->readers) == 0)
        rc = walq__buf_puts(b, "<p id=\"no-groups\">No consumer group yet: start one with "
                               "<code>walq consume</code>.</p>");
    else if (rc == 0)
        rc = walq__buf_puts(b, "<table id=\"readers\"><tr><th>group</th><th>partition</th>"
                               "<th>slot</th><th>held by</th><th>lag (bytes)</th>"
                               "<th>lag (s)</th><th>WAL retained</th><th>wal_status</th>"
                               "<th>queued</th><th>running</th><th>scheduled</th><th>done</th>"
                               "<th>dead</th><th>cancelled</th><th>queues</th></tr>");
    for (int i = 0; rc == 0 && i < PQntuples(snap->readers); i++) {
        const char *g = PQgetvalue(snap->readers, i, 0), *part = PQgetvalue(snap->readers, i, 1);
        int k = slot_row(snap, PQgetvalue(snap->readers, i, 3));
        int live = *PQgetvalue(snap->readers, i, 4) == 't';
        long long counts[6] = {0};

        for (int q = 0; q < PQntuples(snap->queues); q++)
            if (strcmp(PQgetvalue(snap->queues, q, 0), g) == 0 &&
                strcmp(PQgetvalue(snap->queues, q, 1), part) == 0)
                for (int c = 0; c < 6; c++)
                    counts[c] += strtoll(PQgetvalue(snap->queues, q, 3 + c), NULL, 10);
        rc = walq__buf_puts(b, "<tr data-group=\"");
        rc = rc ? rc : walq__http_html(b, g);
        rc = rc ? rc : walq__buf_puts(b, "\"><td>");
        rc = rc ? rc : html_text(b, g);
        rc = rc ? rc
                : walq__buf_printf(b, "</td><td class=\"n\">%s/%s</td><td>", part,
                                   PQgetvalue(snap->readers, i, 2));
        rc = rc ? rc : html_text(b, PQgetvalue(snap->readers, i, 3));
        rc = rc ? rc : walq__buf_puts(b, live ? "</td><td>" : "</td><td class=\"muted\">");
        rc = rc ? rc : html_text(b, live ? PQgetvalue(snap->readers, i, 5) : "no one");
        if (k < 0)
            rc = rc ? rc
                    : walq__buf_puts(b, "</td><td class=\"warn\" colspan=\"4\">the slot is "
                                        "missing on the source");
        else
            rc =
                rc ? rc
                   : walq__buf_printf(b,
                                      "</td><td class=\"n\">%s</td><td class=\"n\">%.1f</td>"
                                      "<td class=\"n\">%s</td><td>%s",
                                      PQgetvalue(snap->slots, k, 2), reader_lag_s(snap, g, part),
                                      PQgetvalue(snap->slots, k, 3), PQgetvalue(snap->slots, k, 4));
        for (int c = 0; rc == 0 && c < 6; c++)
            rc = walq__buf_printf(b, "</td><td class=\"n\">%lld", counts[c]);
        rc = rc ? rc : walq__buf_puts(b, "</td><td>");
        rc = rc ? rc : html_text(b, PQgetvalue(snap->readers, i, 6));
        rc = rc ? rc : walq__buf_puts(b, "</td></tr>");
    }
    if (rc == 0 && PQntuples(snap->readers) > 0)
        rc = walq__buf_puts(b, "</table>");
    rc = rc ? rc
            : walq__buf_printf(b, "<h2>The last dead jobs</h2>%s",
                               PQntuples(snap->dead) == 0 ? "<p id=\"no-dead\">None.</p>" : "");
    if (rc == 0 && PQntuples(snap->dead) > 0)
        rc = walq__buf_puts(b, "<table id=\"dead\"><tr><th>job</th><th>queue</th><th>group</th>"
                               "<th>attempts</th><th>died</th><th>last error</th></tr>");
    for (int i = 0; rc == 0 && i < PQntuples(snap->dead); i++) {
        rc = walq__buf_printf(b, "<tr><td class=\"n\">%s</td><td>", PQgetvalue(snap->dead, i, 0));
        rc = rc ? rc : html_text(b, PQgetvalue(snap->dead, i, 1));
        rc = rc ? rc : walq__buf_puts(b, "</td><td>");
        rc = rc ? rc : html_text(b, PQgetvalue(snap->dead, i, 2));
        rc = rc ? rc
                : walq__buf_printf(b, "</td><td class=\"n\">%s</td><td>%s</td><td class=\"err\">",
                                   PQgetvalue(snap->dead, i, 3), PQgetvalue(snap->dead, i, 5));
        rc = rc ? rc : html_text(b, PQgetvalue(snap->dead, i, 4));
        rc = rc ? rc : walq__buf_puts(b, "</td></tr>");
    }
    if (rc == 0 && PQntuples(snap->dead) > 0)
        rc = walq__buf_puts(b, "</table>");
    return rc ? rc : walq__buf_puts(b, "</body></html>\n");
}

static int on_page(void *arg, const walq__http_request *req, walq__http_response *resp)
{
    snapshot snap;
    char err[1024];
    int rc;

    (void)req;
    resp->content_type = WALQ__HTTP_HTML;
    if (take_snapshot(arg, &snap, 1, err, sizeof(err)) != 0) {
        resp->status = 503;
        rc = walq__buf_printf(&resp->body,
                              "<!DOCTYPE html><html><head><meta charset=\"utf-8\">"
                              "<meta http-equiv=\"refresh\" content=\"10\">"
                              "<title>walq serve</title><style>%s</style></head><body>"
                              "<h1>walq serve</h1><p class=\"warn\" id=\"error\">",
                              page_css);
        rc = rc ? rc : html_text(&resp->body, err);
        return rc ? rc : walq__buf_puts(&resp->body, "</p></body></html>\n");
    }
    rc = render_page(&snap, &resp->body);
    snapshot_free(&snap);
    return rc;
}

/* ------------------------------------------------------------------ */

static const walq__http_route routes[] = {
    {"/metrics", on_metrics},
    {"/healthz", on_healthz},
    {"/", on_page},
};

int walq__cli_serve(int argc, char **argv)
{
    static const struct option longopts[] = {{"http", required_argument, NULL, 'H'},
                                             {"dbname", required_argument, NULL, 'd'},
                                             {"source", required_argument, NULL, 's'},
                                             {"statement-timeout", required_argument, NULL, 't'},
                                             {"help", no_argument, NULL, 'h'},
                                             {NULL, 0, NULL, 0}};
    serve s = {0};
    const char *listen = NULL;
    walq__http *http = NULL;
    char err[512];
    int opt;

    s.timeout_ms = DEFAULT_TIMEOUT_MS;
    while ((opt = getopt_long(argc, argv, "d:h", longopts, NULL)) != -1) {
        switch (opt) {
        case 'H':
            listen = optarg;
            break;
        case 'd':
            s.primary = optarg;
            break;
        case 's':
            s.source = optarg;
            break;
        case 't': {
            int64_t us = walq__parse_duration_us(optarg);

            if (us < 100000 || us > INT64_C(600000000)) {
                walq__cli_usage("serve", NULL,
                                "invalid --statement-timeout \"%s\": give 100ms to 10min "
                                "(\"5s\", \"500ms\"; a bare number is milliseconds)",
                                optarg);
                return EXIT_USAGE;
            }
            s.timeout_ms = (int)(us / 1000);
            break;
        }
        case 'h':
            printf("Usage: %s serve --http ADDR:PORT [--dbname CONNINFO] [--source CONNINFO]\n"
                   "                  [--statement-timeout DURATION]\n\n"
                   "Serves, for every consumer group of the database:\n"
                   "  /metrics   Prometheus metrics: each reader's lag in bytes and seconds,\n"
                   "             its jobs by status per queue, the WAL its slot retains, and\n"
                   "             whether a process holds it\n"
                   "  /healthz   200 while the process runs\n"
                   "  /          a status page: the groups, their lag and counts, and the\n"
                   "             last dead jobs with their errors; it refreshes itself\n\n"
                   "Options:\n"
                   "  --http ADDR:PORT     where to listen (\"127.0.0.1:9188\"; port 0 picks one)\n"
                   "  --dbname CONNINFO    the primary, with walq's tables (default: libpq\n"
                   "                       environment)\n"
                   "  --source CONNINFO    the server with the slots, when it is not the primary\n"
                   "  --statement-timeout DURATION\n"
                   "                       bound of each statement of a request (default 5s);\n"
                   "                       past it /metrics and / answer 503 with the reason\n\n"
                   "It reads the database at every request and stops at SIGTERM or SIGINT.\n",
                   progname);
            return 0;
        default:
            walq__cli_usage("serve", NULL, "%s", "invalid option for \"serve\"");
            return EXIT_USAGE;
        }
    }
    if (optind < argc) {
        walq__cli_usage("serve", NULL, "unexpected argument \"%s\"", argv[optind]);
        return EXIT_USAGE;
    }
    if (listen == NULL) {
        walq__cli_usage("serve", NULL, "%s",
                        "serve needs --http ADDR:PORT, for example --http 127.0.0.1:9188");
        return EXIT_USAGE;
    }
    if (walq__http_check_addr(listen, err, sizeof(err)) != 0) {
        walq__cli_usage("serve", NULL, "%s", err);
        return EXIT_USAGE;
    }
    pthread_mutex_init(&s.mu, NULL);
    /* The database is checked once at the start, so a wrong --dbname fails now. */
    {
        PGconn *conn = NULL;
        int rc = walq__connect(&conn, s.primary, WALQ__CONN_SQL, "walq serve");

        if (rc == 0)
            rc = walq__schema_check(conn);
        if (conn)
            PQfinish(conn);
        if (rc != 0) {
            walq__cli_fail(rc);
            pthread_mutex_destroy(&s.mu);
            return 1;
        }
    }
    walq__cli_on_stop(on_stop, NULL);
    if (walq__http_start(&http, listen, routes, WALQ__ARRAY_SIZE(routes), &s, err, sizeof(err)) !=
        0) {
        walq__cli_message("ERROR", err);
        walq__cli_on_stop(NULL, NULL);
        pthread_mutex_destroy(&s.mu);
        return 1;
    }
    snprintf(err, sizeof(err), "serving /metrics, /healthz and / of the database on port %d",
             walq__http_port(http));
    walq__cli_log(WALQ_LOG_INFO, err, NULL);
    while (!stop_asked) {
        struct timespec ts = {0, 200 * 1000 * 1000};

        nanosleep(&ts, NULL);
    }
    walq__http_stop(http);
    walq__cli_on_stop(NULL, NULL);
    if (s.pconn)
        PQfinish(s.pconn);
    if (s.sconn)
        PQfinish(s.sconn);
    pthread_mutex_destroy(&s.mu);
    return 0;
}
