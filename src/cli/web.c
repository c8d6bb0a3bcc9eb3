/*
 * --http of consume and audit (see web.h).  The endpoints:
 *
 *   /metrics  the loop's counters and gauges (Prometheus text format), and
 *             the WAL the slot retains, read from the source at most every
 *             RETAINED_EVERY_US
 *   /healthz  200 while the process answers
 *   /readyz   200 while it streams and acks (walq__metrics_ready), else 503
 *   /         the status page: HTML and CSS from here, a meta refresh, no
 *             script; the group's counts, readers and dead jobs from SQL
 *
 * The SQL runs on the HTTP thread, one request at a time (db_mu), over
 * connections of its own: connecting and every query have a deadline, so a
 * slow or gone server makes a page say so, and never stalls the loop.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libpq-fe.h>

#include "cli/cli.h"
#include "cli/web.h"
#include "cli/webdb.h"
#include "http.h"
#include "lsn.h"

#define QUERY_TIMEOUT_MS  3000
#define RETAINED_EVERY_US 10000000
#define DEAD_SHOWN        20
#define STR_(x)           #x
#define STR(x)            STR_(x)

struct walq__web {
    walq__http *http;
    walq__metrics *m;
    int64_t ready_within_us;
    char *primary, *source;
    int same; /* the source is the primary: one connection */
    pthread_mutex_t db_mu;
    PGconn *pconn, *sconn;
};

/* ------------------------------------------------------------------ */
/* SQL with deadlines                                                  */

/* A connection of the HTTP thread's: connect_timeout bounds the connecting. */
static PGconn *db_connect(const char *conninfo, char *err, size_t errlen)
{
    const char *keys[] = {"dbname", "connect_timeout", "application_name", NULL};
    const char *vals[] = {conninfo, "3", "walq http", NULL};
    PGconn *conn = PQconnectdbParams(keys, vals, 1);

    if (conn == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    if (PQstatus(conn) != CONNECTION_OK) {
        snprintf(err, errlen, "%s", PQerrorMessage(conn));
        PQfinish(conn);
        return NULL;
    }
    /* The server's own bound too, below ours, so that it cancels the query itself. */
    if (walq__webdb_statement_timeout(&conn, 2500, QUERY_TIMEOUT_MS, err, errlen) != 0)
        return NULL;
    return conn;
}

/* The connection to the primary or the source, made again if it was lost. */
static PGconn **db_conn(walq__web *w, int source, char *err, size_t errlen)
{
    PGconn **slot = source && !w->same ? &w->sconn : &w->pconn;

    if (*slot != NULL && PQstatus(*slot) != CONNECTION_OK) {
        PQfinish(*slot);
        *slot = NULL;
    }
    if (*slot == NULL)
        *slot = db_connect(source ? w->source : w->primary, err, errlen);
    return *slot ? slot : NULL;
}

/* Reads the WAL the slot retains when the last reading is old; under db_mu. */
static void sample_retained(walq__web *w)
{
    static const char sql[] =
        "SELECT (w.lsn - s.restart_lsn)::bigint, (w.lsn - '0/0')::bigint"
        "  FROM (SELECT CASE WHEN pg_is_in_recovery()"
        "                    THEN coalesce(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn())"
        "                    ELSE pg_current_wal_lsn() END AS lsn) w"
        "  LEFT JOIN pg_replication_slots s ON s.slot_name = $1";
    const char *params[1] = {w->m->slot};
    char err[512];
    PGconn **conn;
    PGresult *res;
    int64_t at;

    walq__metrics_lock(w->m);
    at = w->m->retained_at_mono_us;
    walq__metrics_unlock(w->m);
    if (at != 0 && walq__mono_us() - at < RETAINED_EVERY_US)
        return;
    conn = db_conn(w, 1, err, sizeof(err));
    res = conn ? walq__webdb_query(conn, QUERY_TIMEOUT_MS, sql, 1, params, err, sizeof(err)) : NULL;
    if (res == NULL) {
        /* Unknown: the metric is left out rather than wrong. */
        walq__metrics_set_retained(w->m, -1, 0);
        return;
    }
    if (PQntuples(res) == 1)
        walq__metrics_set_retained(
            w->m, PQgetisnull(res, 0, 0) ? -1 : strtoll(PQgetvalue(res, 0, 0), NULL, 10),
            PQgetisnull(res, 0, 1) ? 0 : strtoull(PQgetvalue(res, 0, 1), NULL, 10));
    PQclear(res);
}

/* ------------------------------------------------------------------ */
/* /metrics, /healthz, /readyz                                         */

static int on_metrics(void *arg, const walq__http_request *req, walq__http_response *resp)
{
    walq__web *w = arg;

    (void)req;
    /* A page being read holds the connections: the scrape keeps the last sample then. */
    if (pthread_mutex_trylock(&w->db_mu) == 0) {
        sample_retained(w);
        pthread_mutex_unlock(&w->db_mu);
    }
    resp->content_type = WALQ__HTTP_PROMETHEUS;
    return walq__metrics_write(w->m, &resp->body);
}

static int on_healthz(void *arg, const walq__http_request *req, walq__http_response *resp)
{
    (void)arg;
    (void)req;
    return walq__buf_puts(&resp->body, "ok\n");
}

static int on_readyz(void *arg, const walq__http_request *req, walq__http_response *resp)
{
    walq__web *w = arg;
    char why[256];

    (void)req;
    if (walq__metrics_ready(w->m, w->ready_within_us, why, sizeof(why)))
        return walq__buf_puts(&resp->body, "ready\n");
    resp->status = 503;
    return walq__buf_printf(&resp->body, "not ready: %s\n", why);
}

/* ------------------------------------------------------------------ */
/* The status page                                                     */

static const char page_css[] =
    "body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222;background:#fafafa}"
    "h1{font-size:1.4em;margin:0 0 .2em}h2{font-size:1.1em;margin:1.4em 0 .4em}"
    "table{border-collapse:collapse;background:#fff}"
    "td,th{border:1px solid #ddd;padding:.25em .6em;text-align:left;vertical-align:top}"
    "th{background:#f0f0f0}td.n{text-align:right;font-variant-numeric:tabular-nums}"
    ".ok{color:#176f2c}.bad{color:#b00020}.muted{color:#777}"
    "pre{margin:0;white-space:pre-wrap;max-width:60em;font-size:12px}";

typedef struct page {
    walq__buf *b;
    int rc;
} page;

/* Appends to the page; its first error stays in p->rc. */
#define out(p, ...) walq__buf_putf((p)->b, &(p)->rc, __VA_ARGS__)

/* Text from anywhere (a handler's error, a queue's name) as HTML text. */
static void text(page *p, const char *s)
{
    if (p->rc == 0)
        p->rc = walq__http_html(p->b, s);
}

static void ago(page *p, int64_t then_wall_us, int64_t now_wall_us)
{
    if (then_wall_us <= 0)
        out(p, "<span class=\"muted\">never</span>");
    else
        out(p, "%.1f s ago", (double)(now_wall_us - then_wall_us) / 1e6);
}

static void utc(char *buf, size_t len, int64_t wall_us)
{
    time_t t = (time_t)(wall_us / 1000000);
    struct tm tm;

    gmtime_r(&t, &tm);
    strftime(buf, len, "%Y-%m-%d %H:%M:%S UTC", &tm);
}

/* What the loop publishes, copied under its mutex, written out after. */
typedef struct view {
    walq__metrics m; /* the counters; queues points into qs */
    walq__metrics_queue qs[64];
    double lag_recv_s, lag_conf_s;
    uint64_t server_lsn;
    int ready;
    char why[256];
} view;

static void take_view(walq__web *w, view *v)
{
    int64_t now_mono = walq__mono_us(), now_wall = walq__wall_us();

    v->ready = walq__metrics_ready(w->m, w->ready_within_us, v->why, sizeof(v->why));
    walq__metrics_lock(w->m);
    memcpy(&v->m, w->m, sizeof(v->m));
    if (v->m.nqueues > WALQ__ARRAY_SIZE(v->qs))
        v->m.nqueues = WALQ__ARRAY_SIZE(v->qs);
    /* The names stay the metrics' own: they live as long as the process serves. */
    memcpy(v->qs, w->m->queues, v->m.nqueues * sizeof(v->qs[0]));
    v->m.queues = v->qs;
    v->lag_recv_s = walq__metrics_lag_received_seconds(w->m, now_wall);
    v->server_lsn = walq__metrics_server_lsn(w->m);
    v->lag_conf_s = walq__metrics_lag_confirmed_seconds(w->m, now_mono);
    walq__metrics_unlock(w->m);
}

static void section_process(page *p, const view *v, int64_t now)
{
    char lsn[WALQ__LSN_BUFSZ], when[64];

    utc(when, sizeof(when), v->m.started_wall_us);
    out(p, "<h2>Process</h2><table id=\"process\">");
    out(p, "<tr><th>slot</th><td id=\"slot\">");
    text(p, v->m.slot);
    out(p, "</td></tr><tr><th>ready</th><td id=\"ready\" class=\"%s\">%s", v->ready ? "ok" : "bad",
        v->ready ? "ready" : "not ready: ");
    if (!v->ready)
        text(p, v->why);
    out(p, "</td></tr><tr><th>streaming</th><td id=\"streaming\">%s</td></tr>",
        v->m.g.streaming ? "yes" : "no");
    out(p, "<tr><th>%s</th><td id=\"primary-up\">%s</td></tr>",
        strcmp(v->m.kind, "audit") == 0 ? "target reachable" : "primary connected",
        v->m.g.primary_up ? "yes" : "no");
    out(p, "<tr><th>started</th><td>%s</td></tr><tr><th>last ack</th><td id=\"last-ack\">", when);
    ago(p, v->m.last_ack_wall_us, now);
    out(p, "</td></tr><tr><th>received</th><td>%s</td></tr>",
        walq__lsn_format(v->m.g.received_lsn, lsn));
    out(p, "<tr><th>confirmed</th><td>%s</td></tr>", walq__lsn_format(v->m.g.confirmed_lsn, lsn));
    out(p, "<tr><th>reconnects</th><td class=\"n\">%llu</td></tr>",
        (unsigned long long)v->m.g.reconnects);
    out(p, "<tr><th>bytes streamed</th><td class=\"n\" id=\"bytes\">%llu</td></tr></table>",
        (unsigned long long)v->m.g.bytes);
}

static void section_lag(page *p, const view *v)
{
    const walq__gauges *g = &v->m.g;

    out(p, "<h2>Lag</h2><table id=\"lag\"><tr><th></th><th>bytes</th><th>seconds</th></tr>");
    out(p,
        "<tr><th>received behind the server</th><td class=\"n\" id=\"lag-received-bytes\">%llu"
        "</td><td class=\"n\">%.1f</td></tr>",
        (unsigned long long)(v->server_lsn > g->received_lsn ? v->server_lsn - g->received_lsn : 0),
        v->lag_recv_s);
    out(p,
        "<tr><th>confirmed behind received</th><td class=\"n\" id=\"lag-confirmed-bytes\">%llu"
        "</td><td class=\"n\">%.1f</td></tr>",
        (unsigned long long)(g->received_lsn > g->confirmed_lsn ? g->received_lsn - g->confirmed_lsn
                                                                : 0),
        v->lag_conf_s);
    if (v->m.wal_retained >= 0)
        out(p,
            "<tr><th>WAL the slot retains</th><td class=\"n\" id=\"retained\">%lld</td><td></td>"
            "</tr>",
            (long long)v->m.wal_retained);
    out(p, "</table>");
}

/* The ring of minutes, newest first, and each minute's rate. */
static void section_rates(page *p, const view *v, int64_t now)
{
    int64_t minute = now / 60000000;

    out(p, "<h2>Rates over the last minutes</h2><table id=\"rates\"><tr><th>minute (UTC)</th>"
           "<th>received</th><th>done</th><th>retried</th><th>dead</th><th>done/s</th></tr>");
    for (int64_t k = 0; k < WALQ__MINUTES - 1; k++) {
        const walq__minute *s = &v->m.minutes[(minute - k) % WALQ__MINUTES];
        int64_t secs = k == 0 ? (now / 1000000) % 60 + 1 : 60;
        time_t t = (time_t)((minute - k) * 60);
        struct tm tm;
        char when[16];
        walq__minute none = {0};

        if (s->minute != minute - k)
            s = &none;
        gmtime_r(&t, &tm);
        strftime(when, sizeof(when), "%H:%M", &tm);
        out(p,
            "<tr><td>%s%s</td><td class=\"n\">%llu</td><td class=\"n\">%llu</td>"
            "<td class=\"n\">%llu</td><td class=\"n\">%llu</td><td class=\"n\">%.2f</td></tr>",
            when, k == 0 ? " (now)" : "", (unsigned long long)s->received,
            (unsigned long long)s->done, (unsigned long long)s->retried,
            (unsigned long long)s->dead, (double)s->done / (double)secs);
    }
    out(p, "</table>");
}

static void section_queues(page *p, const view *v)
{
    out(p, "<h2>This process</h2><table id=\"queues\"><tr><th>queue</th><th>received</th>"
           "<th>done</th><th>retried</th><th>dead</th><th>cancelled</th><th>handler runs</th>"
           "<th>mean run (s)</th></tr>");
    for (size_t i = 0; i < v->m.nqueues; i++) {
        const walq__metrics_queue *q = &v->m.queues[i];

        out(p, "<tr><td>");
        text(p, q->name);
        out(p,
            "</td><td class=\"n\">%llu</td><td class=\"n\">%llu</td><td class=\"n\">%llu</td>"
            "<td class=\"n\">%llu</td><td class=\"n\">%llu</td><td class=\"n\">%llu</td>"
            "<td class=\"n\">%.3f</td></tr>",
            (unsigned long long)q->received, (unsigned long long)q->done,
            (unsigned long long)q->retried, (unsigned long long)q->dead,
            (unsigned long long)q->cancelled, (unsigned long long)q->run.count,
            q->run.count ? q->run.sum / (double)q->run.count : 0.0);
    }
    out(p, "</table>");
}

/*
 * One query of the page, on the primary, that returns rows rows (or any
 * number: -1): the result, or NULL once the page says that it could not
 * read what, and why.
 */
static PGresult *page_query(page *p, walq__web *w, const char *what, int rows, const char *sql,
                            int n, const char *const *params)
{
    char err[1024];
    PGconn **conn = db_conn(w, 0, err, sizeof(err));
    PGresult *res =
        conn ? walq__webdb_query(conn, QUERY_TIMEOUT_MS, sql, n, params, err, sizeof(err)) : NULL;

    if (res == NULL || (rows >= 0 && PQntuples(res) != rows)) {
        out(p, "<p class=\"bad\">could not read %s: ", what);
        text(p, res ? "no row" : err);
        out(p, "</p>");
        PQclear(res);
        return NULL;
    }
    return res;
}

/* The group's counts by status, its readers and its last dead jobs, from the primary. */
static void section_sql(page *p, walq__web *w, const view *v)
{
    static const char *const statuses[] = {"queued", "running", "scheduled",
                                           "done",   "dead",    "cancelled"};
    char part[16], parts[16];
    const char *params[3] = {v->m.group, part, parts};
    PGresult *res;

    snprintf(part, sizeof(part), "%d", v->m.partition);
    snprintf(parts, sizeof(parts), "%d", v->m.partitions);
    out(p, "<h2>Jobs by status%s</h2>", v->m.partitions > 1 ? " (this partition)" : "");
    res = page_query(p, w, "the counts", 1,
                     "SELECT queued, running, scheduled, done, dead, cancelled"
                     "  FROM walq.group_counts($1, $3::integer, $2::integer)",
                     3, params);
    if (res != NULL) {
        out(p, "<table id=\"counts\"><tr>");
        for (size_t i = 0; i < WALQ__ARRAY_SIZE(statuses); i++)
            out(p, "<th>%s</th>", statuses[i]);
        out(p, "</tr><tr>");
        for (size_t i = 0; i < WALQ__ARRAY_SIZE(statuses); i++)
            out(p, "<td class=\"n\" id=\"count-%s\">%s</td>", statuses[i],
                PQgetvalue(res, 0, (int)i));
        out(p, "</tr></table>");
        PQclear(res);
    }

    out(p, "<h2>Readers</h2>");
    res = page_query(p, w, "the readers", -1,
                     "SELECT partition || '/' || partitions, slot_name, cursor_lsn::text,"
                     "       coalesce(holder, ''), coalesce(held_since::text, ''),"
                     "       updated_at::text"
                     "  FROM walq.readers WHERE group_name = $1 ORDER BY partition",
                     1, params);
    if (res != NULL) {
        out(p, "<table id=\"readers\"><tr><th>partition</th><th>slot</th><th>cursor</th>"
               "<th>held by</th><th>since</th><th>updated</th></tr>");
        for (int r = 0; r < PQntuples(res); r++) {
            out(p, "<tr>");
            for (int f = 0; f < 6; f++) {
                out(p, "<td>");
                text(p, PQgetvalue(res, r, f));
                out(p, "</td>");
            }
            out(p, "</tr>");
        }
        out(p, "</table>");
        PQclear(res);
    }

    out(p, "<h2>Last dead jobs</h2>");
    res = page_query(p, w, "the dead jobs", -1,
                     "SELECT job_id, queue, attempts, died_at::text, coalesce(last_error, '')"
                     "  FROM walq.dead_jobs WHERE consumer_group = $1"
                     "   AND ($3::integer <= 1 OR walq.partition_of(job_id, $3::integer) ="
                     "        $2::integer)"
                     " ORDER BY died_at DESC, job_id DESC LIMIT " STR(DEAD_SHOWN),
                     3, params);
    if (res != NULL && PQntuples(res) == 0) {
        out(p, "<p class=\"muted\" id=\"no-dead\">none</p>");
    } else if (res != NULL) {
        out(p, "<table id=\"dead\"><tr><th>job</th><th>queue</th><th>attempts</th>"
               "<th>died</th><th>error</th></tr>");
        for (int r = 0; r < PQntuples(res); r++) {
            out(p, "<tr class=\"dead-job\" data-job=\"%s\"><td class=\"n\">%s</td><td>",
                PQgetvalue(res, r, 0), PQgetvalue(res, r, 0));
            text(p, PQgetvalue(res, r, 1));
            out(p, "</td><td class=\"n\">%s</td><td>", PQgetvalue(res, r, 2));
            text(p, PQgetvalue(res, r, 3));
            out(p, "</td><td><pre class=\"error\">");
            text(p, PQgetvalue(res, r, 4));
            out(p, "</pre></td></tr>");
        }
        out(p, "</table>");
    }
    PQclear(res);
}

static void section_audit(page *p, const view *v)
{
    out(p,
        "<h2>Trail</h2><table id=\"trail\"><tr><th>transactions written</th>"
        "<td class=\"n\" id=\"transactions\">%llu</td></tr><tr><th>changes written</th>"
        "<td class=\"n\" id=\"changes\">%llu</td></tr><tr><th>durable writes</th>"
        "<td class=\"n\">%llu</td></tr></table>",
        (unsigned long long)v->m.g.transactions, (unsigned long long)v->m.g.changes,
        (unsigned long long)v->m.g.flushes);
}

static int on_page(void *arg, const walq__http_request *req, walq__http_response *resp)
{
    walq__web *w = arg;
    view *v = malloc(sizeof(*v));
    page p = {&resp->body, 0};
    int64_t now = walq__wall_us();
    int audit;

    (void)req;
    if (v == NULL)
        return WALQ_ENOMEM;
    pthread_mutex_lock(&w->db_mu);
    sample_retained(w);
    take_view(w, v);
    audit = strcmp(v->m.kind, "audit") == 0;
    resp->content_type = WALQ__HTTP_HTML;
    out(&p,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta http-equiv=\"refresh\" content=\"5\">"
        "<meta name=\"viewport\" content=\"width=device-width\"><title>walq %s ",
        v->m.kind);
    text(&p, v->m.group);
    out(&p, "</title><style>%s</style></head><body><h1>walq %s: %s <span id=\"group\">", page_css,
        v->m.kind, audit ? "audit group" : "group");
    text(&p, v->m.group);
    out(&p, "</span>");
    if (v->m.partitions > 1)
        out(&p, " partition <span id=\"partition\">%d/%d</span>", v->m.partition, v->m.partitions);
    out(&p, "</h1><p class=\"muted\">Refreshes every 5 s. <a href=\"/metrics\">/metrics</a> "
            "<a href=\"/readyz\">/readyz</a></p>");
    section_process(&p, v, now);
    section_lag(&p, v);
    if (audit) {
        section_audit(&p, v);
    } else {
        section_rates(&p, v, now);
        section_queues(&p, v);
        section_sql(&p, w, v);
    }
    out(&p, "</body></html>\n");
    pthread_mutex_unlock(&w->db_mu);
    free(v);
    return p.rc;
}

/* ------------------------------------------------------------------ */

static const walq__http_route routes[] = {
    {"/metrics", on_metrics},
    {"/healthz", on_healthz},
    {"/readyz", on_readyz},
    {"/", on_page},
};

int walq__web_check_listen(const char *listen)
{
    char err[512];

    if (walq__http_check_addr(listen, err, sizeof(err)) == 0)
        return 0;
    walq__cli_message("ERROR", err);
    return -1;
}

int walq__web_start(walq__web **out, const walq__web_config *cfg, walq__metrics *m)
{
    walq__web *w = calloc(1, sizeof(*w));
    char err[512];

    *out = NULL;
    if (w == NULL) {
        walq__cli_message("ERROR", "out of memory");
        return -1;
    }
    w->m = m;
    w->ready_within_us =
        (cfg->ready_within_ms > 0 ? cfg->ready_within_ms : WALQ__WEB_READY_WITHIN_MS) * 1000;
    w->primary = walq__strdup(cfg->primary ? cfg->primary : "");
    w->source = walq__strdup(cfg->source ? cfg->source : "");
    pthread_mutex_init(&w->db_mu, NULL);
    if (w->primary == NULL || w->source == NULL) {
        walq__cli_message("ERROR", "out of memory");
        walq__web_stop(w);
        return -1;
    }
    w->same = strcmp(w->primary, w->source) == 0;
    if (walq__http_start(&w->http, cfg->listen, routes, WALQ__ARRAY_SIZE(routes), w, err,
                         sizeof(err)) != 0) {
        walq__cli_message("ERROR", err);
        walq__web_stop(w);
        return -1;
    }
    *out = w;
    return 0;
}

void walq__web_stop(walq__web *w)
{
    if (w == NULL)
        return;
    walq__http_stop(w->http);
    PQfinish(w->pconn);
    PQfinish(w->sconn);
    pthread_mutex_destroy(&w->db_mu);
    free(w->primary);
    free(w->source);
    free(w);
}
