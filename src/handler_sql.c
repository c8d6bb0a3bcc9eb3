/*
 * The sql handler: a statement per job, run inside the consumer's ack
 * transaction, each job in a subtransaction of walq.run_sql() so that one
 * job's error fails that job alone.  Its effects commit with the job's
 * outcome, so they happen exactly once.
 */
#include <stdlib.h>
#include <string.h>

#include "db.h"
#include "handler.h"

typedef struct sql_handler {
    walq__handler base;
    const char *group; /* borrowed from the consumer */
    const char *sql;
    size_t batch_size;
    int64_t delay_us;
    walq__job **jobs; /* waiting for the next ack transaction */
    size_t n, cap;
    int64_t oldest; /* when the first of them came */
} sql_handler;

static int sql_has_room(walq__handler *h)
{
    sql_handler *s = (sql_handler *)h;

    return s->n < s->batch_size;
}

static int sql_start(walq__handler *h, walq__job *job, int64_t now)
{
    sql_handler *s = (sql_handler *)h;

    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 64;
        walq__job **q = realloc(s->jobs, cap * sizeof(*q));

        if (q == NULL)
            return walq__error(WALQ_ENOMEM, NULL, "out of memory");
        s->jobs = q;
        s->cap = cap;
    }
    if (s->n == 0)
        s->oldest = now;
    s->jobs[s->n++] = job;
    return 0;
}

static size_t sql_fds(walq__handler *h, struct pollfd *pfd, size_t room, int64_t now,
                      int64_t *wake_at)
{
    sql_handler *s = (sql_handler *)h;

    (void)pfd;
    (void)room;
    (void)now;
    if (s->n > 0)
        *wake_at = walq__min_deadline(*wake_at, s->oldest + s->delay_us);
    return 0;
}

static size_t sql_max_fds(walq__handler *h)
{
    (void)h;
    return 0;
}

static int sql_process(walq__handler *h, int64_t now)
{
    (void)h;
    (void)now;
    return 0;
}

static void sql_kill_all(walq__handler *h)
{
    sql_handler *s = (sql_handler *)h;
    size_t n = s->n;

    s->n = 0;
    for (size_t i = 0; i < n; i++)
        h->abandon(h->arg, s->jobs[i]);
}

static size_t sql_running(walq__handler *h)
{
    return ((sql_handler *)h)->n;
}

static void sql_free(walq__handler *h)
{
    sql_handler *s = (sql_handler *)h;

    if (s == NULL)
        return;
    free(s->jobs);
    free(s);
}

/* A reload: the size of the batches and how long a job waits for one. */
static int sql_set_limits(walq__handler *h, const walq__handler_limits *lim)
{
    sql_handler *s = (sql_handler *)h;

    s->batch_size = (size_t)lim->batch_size;
    s->delay_us = lim->delay_us;
    return 0;
}

static const walq__handler_ops sql_ops = {
    .has_room = sql_has_room,
    .start = sql_start,
    .fds = sql_fds,
    .max_fds = sql_max_fds,
    .process = sql_process,
    .kill_all = sql_kill_all,
    .running = sql_running,
    .free = sql_free,
    .set_limits = sql_set_limits,
};

/* ------------------------------------------------------------------ */
/* In the ack transaction                                              */

static size_t sql_waiting(walq__handler *h)
{
    return ((sql_handler *)h)->n;
}

static int sql_due(walq__handler *h, int64_t now)
{
    sql_handler *s = (sql_handler *)h;

    return s->n > 0 && (s->n >= s->batch_size || now - s->oldest >= s->delay_us);
}

/* The jobs' ids and payloads as two array literals, in the queue's order. */
static int arrays(const sql_handler *s, walq__buf *ids, walq__buf *payloads)
{
    int rc = walq__buf_puts(ids, "{");

    rc |= walq__buf_puts(payloads, "{");
    for (size_t i = 0; i < s->n && rc == 0; i++) {
        rc |= walq__buf_printf(ids, "%s%lld", i ? "," : "", (long long)s->jobs[i]->id);
        rc |= walq__buf_puts(payloads, i ? "," : "");
        rc |= walq__buf_array_elem(payloads, s->jobs[i]->payload);
    }
    rc |= walq__buf_puts(ids, "}");
    rc |= walq__buf_puts(payloads, "}");
    return rc ? walq__error(WALQ_ENOMEM, NULL, "out of memory") : 0;
}

/* What walq.run_sql found recorded for the job instead of running it, if anything. */
static walq__status recorded_status(const PGresult *r, int row)
{
    const char *v;

    if (PQnfields(r) < 3 || PQgetisnull(r, row, 2))
        return WALQ__ST_NONE;
    v = PQgetvalue(r, row, 2);
    if (strcmp(v, "done") == 0)
        return WALQ__ST_DONE;
    if (strcmp(v, "dead") == 0)
        return WALQ__ST_DEAD;
    return WALQ__ST_CANCELLED;
}

static int sql_run(walq__handler *h, PGconn *conn)
{
    sql_handler *s = (sql_handler *)h;
    walq__buf ids = {0}, payloads = {0};
    PGresult *r = NULL;
    int rc = arrays(s, &ids, &payloads);

    if (rc == 0) {
        const char *params[4] = {s->group, s->sql, ids.data, payloads.data};

        rc = walq__query(conn, &r, "run the sql handler",
                         "SELECT job_id, error, recorded FROM walq.run_sql($1, $2, $3::bigint[],"
                         " $4::jsonb[])",
                         4, params);
    }
    if (rc == 0 && (size_t)PQntuples(r) != s->n)
        rc = walq__error(WALQ_EQUERY, NULL, "walq.run_sql returned %d rows for %zu jobs",
                         PQntuples(r), s->n);
    for (size_t i = 0; rc == 0 && i < s->n; i++) {
        int failed = !PQgetisnull(r, (int)i, 1);
        walq__status known = recorded_status(r, (int)i);

        if (strtoll(PQgetvalue(r, (int)i, 0), NULL, 10) != s->jobs[i]->id)
            rc = walq__error(WALQ_EQUERY, NULL, "walq.run_sql returned job %s in place of job %lld",
                             PQgetvalue(r, (int)i, 0), (long long)s->jobs[i]->id);
        else if (known != WALQ__ST_NONE)
            rc = h->recorded(h->arg, s->jobs[i], known);
        else
            rc = h->decided(h->arg, s->jobs[i], failed ? WALQ__VERDICT_FAIL : WALQ__VERDICT_DONE,
                            failed ? PQgetvalue(r, (int)i, 1) : NULL);
    }
    PQclear(r);
    walq__buf_free(&ids);
    walq__buf_free(&payloads);
    return rc;
}

/* Committed: their outcomes stand.  Failed: they run again in the next try. */
static void sql_end(walq__handler *h, int committed)
{
    if (committed)
        ((sql_handler *)h)->n = 0;
}

static const walq__ack_hook sql_hook = {sql_waiting, sql_due, sql_run, sql_end};

int walq__handler_sql_new(walq__handler **out, const char *group, const char *sql, int batch_size,
                          int64_t delay_us)
{
    sql_handler *s = calloc(1, sizeof(*s));

    *out = NULL;
    if (s == NULL)
        return walq__error(WALQ_ENOMEM, NULL, "out of memory");
    s->base.ops = &sql_ops;
    s->base.in_ack = &sql_hook;
    s->group = group;
    s->sql = sql;
    s->batch_size = (size_t)batch_size;
    s->delay_us = delay_us;
    *out = &s->base;
    return 0;
}
