/*
 * Latency from commit to handler start: a producer that publishes single-row
 * jobs at a fixed rate and notes when each commit was acknowledged, and three
 * consumers that note when each job's handler starts: walq (the C API with a
 * callback handler, so no process is spawned per job), a LISTEN/NOTIFY worker
 * and a worker polling with SELECT ... FOR UPDATE SKIP LOCKED.  bench/run.sh
 * joins the files on the job id.
 *
 *   walq-bench-latency produce --table T --queue Q --rate R --count N --out FILE
 *                              [--conns K] [--sync on|off]
 *   walq-bench-latency walq    --group G --queue Q --count N --out FILE
 *   walq-bench-latency notify  --table T --queue Q --channel C --count N --out FILE
 *   walq-bench-latency poll    --table T --queue Q --interval-ms M --count N --out FILE
 *
 * Every mode also takes --timeout SECONDS (default 120).  The server comes
 * from the libpq environment.  The producer writes "id t_sent t_committed",
 * the consumers "id t_started", times in microseconds since the epoch (one
 * machine, one clock).  A consumer stops after --count jobs, at the timeout,
 * or on SIGTERM, and writes what it saw.
 *
 * The baselines start their "handler" as soon as the claiming DELETE returns
 * its rows inside an open transaction, before that transaction commits: the
 * classic claim-process-commit worker, and the reading most favourable to
 * them, since their claim's own commit (and its WAL flush) is not counted.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libpq-fe.h>
#include <walq.h>

typedef struct rec {
    int64_t id;
    int64_t t1;
    int64_t t2;
} rec;

static struct {
    const char *mode, *table, *queue, *group, *channel, *out, *sync;
    double rate, timeout;
    long count;
    int conns, interval_ms;
} arg = {.rate = 500, .timeout = 120, .count = 1000, .conns = 8, .interval_ms = 100};

static rec *recs;
static long nrecs;
static volatile sig_atomic_t stop_flag;
static walq_consumer *consumer;

static int64_t now_us(clockid_t clk)
{
    struct timespec ts;

    clock_gettime(clk, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void die(const char *what, PGconn *conn)
{
    fprintf(stderr, "walq-bench-latency %s: %s: %s", arg.mode, what,
            conn ? PQerrorMessage(conn) : "\n");
    exit(1);
}

static void on_signal(int sig)
{
    (void)sig;
    stop_flag = 1;
    if (consumer != NULL)
        walq_consumer_stop(consumer, 0);
}

static void record(int64_t id, int64_t t1, int64_t t2)
{
    if (nrecs < arg.count * 2) {
        recs[nrecs].id = id;
        recs[nrecs].t1 = t1;
        recs[nrecs].t2 = t2;
        nrecs++;
    }
}

static void write_out(int pairs)
{
    FILE *f = fopen(arg.out, "w");

    if (f == NULL) {
        perror(arg.out);
        exit(1);
    }
    for (long i = 0; i < nrecs; i++) {
        if (pairs)
            fprintf(f, "%" PRId64 " %" PRId64 " %" PRId64 "\n", recs[i].id, recs[i].t1, recs[i].t2);
        else
            fprintf(f, "%" PRId64 " %" PRId64 "\n", recs[i].id, recs[i].t1);
    }
    fclose(f);
}

static PGconn *connect_db(void)
{
    PGconn *conn = PQconnectdb("fallback_application_name=walq-bench-latency");

    if (PQstatus(conn) != CONNECTION_OK)
        die("could not connect", conn);
    return conn;
}

static void exec_ok(PGconn *conn, const char *sql)
{
    PGresult *res = PQexec(conn, sql);

    if (PQresultStatus(res) != PGRES_COMMAND_OK && PQresultStatus(res) != PGRES_TUPLES_OK) {
        PQclear(res);
        die(sql, conn);
    }
    PQclear(res);
}

/* ---- producer ---------------------------------------------------------- */

static int produce(void)
{
    PGconn **conns = calloc(arg.conns, sizeof(*conns));
    int64_t *sent = calloc(arg.conns, sizeof(*sent));
    int *busy = calloc(arg.conns, sizeof(*busy));
    struct pollfd *pfd = calloc(arg.conns, sizeof(*pfd));
    char sql[512], setsync[64], seq[32];
    const char *params[2];
    long next = 0, done = 0, late = 0;
    int64_t period = (int64_t)(1e6 / arg.rate), t0;

    snprintf(sql, sizeof(sql),
             "INSERT INTO %s (queue, payload) VALUES ($1, jsonb_build_object('seq', $2::int))"
             " RETURNING id",
             arg.table);
    snprintf(setsync, sizeof(setsync), "SET synchronous_commit = %s", arg.sync ? arg.sync : "on");
    for (int i = 0; i < arg.conns; i++) {
        PGresult *res;

        conns[i] = connect_db();
        exec_ok(conns[i], setsync);
        res = PQprepare(conns[i], "ins", sql, 0, NULL);
        if (PQresultStatus(res) != PGRES_COMMAND_OK)
            die("could not prepare the insert", conns[i]);
        PQclear(res);
    }
    params[0] = arg.queue;
    params[1] = seq;
    t0 = now_us(CLOCK_MONOTONIC) + 50000;
    while (done < arg.count && !stop_flag) {
        int64_t now = now_us(CLOCK_MONOTONIC);
        struct timespec ts, *tsp = NULL;
        int n;

        while (next < arg.count && now >= t0 + next * period) {
            int i;

            for (i = 0; i < arg.conns && busy[i]; i++)
                ;
            if (i == arg.conns)
                break;
            if (now - (t0 + next * period) > 1000)
                late++;
            snprintf(seq, sizeof(seq), "%ld", next);
            sent[i] = now_us(CLOCK_REALTIME);
            if (!PQsendQueryPrepared(conns[i], "ins", 2, params, NULL, NULL, 0))
                die("could not send the insert", conns[i]);
            busy[i] = 1;
            next++;
            now = now_us(CLOCK_MONOTONIC);
        }
        /* Sleep until the next send is due (when a connection is free for it)
         * or a result arrives. */
        if (next < arg.count) {
            int idle = 0;

            for (int i = 0; i < arg.conns; i++)
                idle |= !busy[i];
            if (idle) {
                int64_t wait = t0 + next * period - now_us(CLOCK_MONOTONIC);

                if (wait < 0)
                    wait = 0;
                ts.tv_sec = wait / 1000000;
                ts.tv_nsec = (wait % 1000000) * 1000;
                tsp = &ts;
            }
        }
        for (int i = 0; i < arg.conns; i++) {
            pfd[i].fd = busy[i] ? PQsocket(conns[i]) : -1;
            pfd[i].events = POLLIN;
            pfd[i].revents = 0;
        }
        n = ppoll(pfd, arg.conns, tsp, NULL);
        if (n < 0 && errno != EINTR)
            die("poll", NULL);
        for (int i = 0; i < arg.conns; i++) {
            PGresult *res;

            if (!busy[i] || !(pfd[i].revents & (POLLIN | POLLERR | POLLHUP)))
                continue;
            if (!PQconsumeInput(conns[i]))
                die("lost the connection", conns[i]);
            while (!PQisBusy(conns[i])) {
                res = PQgetResult(conns[i]);
                if (res == NULL) {
                    busy[i] = 0;
                    break;
                }
                if (PQresultStatus(res) != PGRES_TUPLES_OK)
                    die("insert failed", conns[i]);
                record(strtoll(PQgetvalue(res, 0, 0), NULL, 10), sent[i], now_us(CLOCK_REALTIME));
                done++;
                PQclear(res);
            }
        }
    }
    write_out(1);
    if (late > 0)
        fprintf(stderr, "walq-bench-latency produce: %ld of %ld jobs sent more than 1 ms late\n",
                late, arg.count);
    for (int i = 0; i < arg.conns; i++)
        PQfinish(conns[i]);
    free(conns);
    free(sent);
    free(busy);
    free(pfd);
    return 0;
}

/* ---- walq, C API callback ------------------------------------------------ */

static walq_verdict on_job(char *err, size_t errlen, const walq_job *job, void *payload)
{
    (void)err;
    (void)errlen;
    (void)payload;
    record(walq_job_id(job), now_us(CLOCK_REALTIME), 0);
    if (nrecs >= arg.count)
        walq_consumer_stop(consumer, 0);
    return WALQ_JOB_DONE;
}

static void on_log(walq_log_level level, const char *msg, void *payload)
{
    (void)payload;
    fprintf(stderr, "walq-bench-latency walq: %s: %s\n",
            level == WALQ_LOG_ERROR     ? "ERROR"
            : level == WALQ_LOG_WARNING ? "WARNING"
                                        : "LOG",
            msg);
}

static int consume_walq(void)
{
    walq_options o = WALQ_OPTIONS_INIT;
    const char *queues[1] = {arg.queue};
    int rc;

    o.group = arg.group;
    o.queues = queues;
    o.nqueues = 1;
    o.handler = WALQ_HANDLER_CALLBACK;
    o.callback = on_job;
    o.log = on_log;
    o.log_level = WALQ_LOG_WARNING;
    if (walq_consumer_open(&consumer, &o) != 0) {
        fprintf(stderr, "walq-bench-latency walq: %s\n", walq_last_error());
        return 1;
    }
    rc = walq_consumer_run(consumer);
    if (rc != 0)
        fprintf(stderr, "walq-bench-latency walq: %s (%s)\n", walq_consumer_errmsg(consumer),
                walq_strerror(rc));
    walq_consumer_free(consumer);
    consumer = NULL;
    write_out(0);
    return rc == 0 ? 0 : 1;
}

/* ---- the baselines: claim with SKIP LOCKED ------------------------------- */

/* Claims until a claim comes back short; the handler of each row starts when
 * its claim returns. */
static void claim_all(PGconn *conn)
{
    const char *params[1] = {arg.queue};

    for (;;) {
        PGresult *res;
        int64_t t;
        int n;

        exec_ok(conn, "BEGIN");
        res = PQexecPrepared(conn, "claim", 1, params, NULL, NULL, 0);
        t = now_us(CLOCK_REALTIME);
        if (PQresultStatus(res) != PGRES_TUPLES_OK)
            die("claim failed", conn);
        n = PQntuples(res);
        for (int i = 0; i < n; i++)
            record(strtoll(PQgetvalue(res, i, 0), NULL, 10), t, 0);
        PQclear(res);
        exec_ok(conn, "COMMIT");
        if (n < 100)
            break;
    }
}

static PGconn *claimer(void)
{
    PGconn *conn = connect_db();
    char sql[512];
    PGresult *res;

    snprintf(sql, sizeof(sql),
             "DELETE FROM %s WHERE id = ANY (ARRAY(SELECT id FROM %s WHERE queue = $1"
             " AND run_at <= now() ORDER BY priority, id LIMIT 100 FOR UPDATE SKIP LOCKED))"
             " RETURNING id, payload",
             arg.table, arg.table);
    res = PQprepare(conn, "claim", sql, 0, NULL);
    if (PQresultStatus(res) != PGRES_COMMAND_OK)
        die("could not prepare the claim", conn);
    PQclear(res);
    return conn;
}

static int consume_notify(void)
{
    PGconn *conn = claimer();
    char sql[256];

    snprintf(sql, sizeof(sql), "LISTEN %s", arg.channel);
    exec_ok(conn, sql);
    claim_all(conn);
    while (!stop_flag && nrecs < arg.count) {
        struct pollfd pfd = {.fd = PQsocket(conn), .events = POLLIN};
        PGnotify *n;
        int got = 0;

        if (poll(&pfd, 1, 100) < 0 && errno != EINTR)
            die("poll", NULL);
        if (!PQconsumeInput(conn))
            die("lost the connection", conn);
        while ((n = PQnotifies(conn)) != NULL) {
            got = 1;
            PQfreemem(n);
        }
        if (got)
            claim_all(conn);
    }
    PQfinish(conn);
    write_out(0);
    return 0;
}

static int consume_poll(void)
{
    PGconn *conn = claimer();
    struct timespec next;

    clock_gettime(CLOCK_MONOTONIC, &next);
    while (!stop_flag && nrecs < arg.count) {
        claim_all(conn);
        next.tv_nsec += (long)arg.interval_ms * 1000000;
        while (next.tv_nsec >= 1000000000) {
            next.tv_nsec -= 1000000000;
            next.tv_sec++;
        }
        while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, NULL) == EINTR && !stop_flag)
            ;
    }
    PQfinish(conn);
    write_out(0);
    return 0;
}

/* ---- main ---------------------------------------------------------------- */

static void usage(void)
{
    fprintf(stderr, "usage: walq-bench-latency produce|walq|notify|poll [--table T] [--queue Q]\n"
                    "       [--group G] [--channel C] [--rate R] [--conns K] [--sync on|off]\n"
                    "       [--interval-ms M] [--count N] [--timeout S] --out FILE\n");
    exit(2);
}

int main(int argc, char **argv)
{
    struct sigaction sa;

    if (argc < 2)
        usage();
    arg.mode = argv[1];
    for (int i = 2; i < argc; i++) {
        const char *k = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;

        if (v == NULL)
            usage();
        i++;
        if (strcmp(k, "--table") == 0)
            arg.table = v;
        else if (strcmp(k, "--queue") == 0)
            arg.queue = v;
        else if (strcmp(k, "--group") == 0)
            arg.group = v;
        else if (strcmp(k, "--channel") == 0)
            arg.channel = v;
        else if (strcmp(k, "--out") == 0)
            arg.out = v;
        else if (strcmp(k, "--sync") == 0)
            arg.sync = v;
        else if (strcmp(k, "--rate") == 0)
            arg.rate = atof(v);
        else if (strcmp(k, "--timeout") == 0)
            arg.timeout = atof(v);
        else if (strcmp(k, "--count") == 0)
            arg.count = atol(v);
        else if (strcmp(k, "--conns") == 0)
            arg.conns = atoi(v);
        else if (strcmp(k, "--interval-ms") == 0)
            arg.interval_ms = atoi(v);
        else
            usage();
    }
    if (arg.out == NULL || arg.queue == NULL || arg.count <= 0 || arg.rate <= 0 || arg.conns <= 0)
        usage();
    recs = calloc(arg.count * 2, sizeof(*recs));
    if (recs == NULL)
        die("out of memory", NULL);

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGALRM, &sa, NULL);
    alarm((unsigned)(arg.timeout + 0.999));

    if (strcmp(arg.mode, "produce") == 0 && arg.table)
        return produce();
    if (strcmp(arg.mode, "walq") == 0 && arg.group)
        return consume_walq();
    if (strcmp(arg.mode, "notify") == 0 && arg.table && arg.channel)
        return consume_notify();
    if (strcmp(arg.mode, "poll") == 0 && arg.table && arg.interval_ms > 0)
        return consume_poll();
    usage();
    return 2;
}
