/*
 * Watches a benchmark from one database session, so that watching costs the
 * server one idle backend and a cheap query now and then, not a new
 * connection per look.
 *
 *   walq-bench-watch [--until SQL] [--sample SQL] [--interval-ms N] [--sample-ms N]
 *                    [--timeout S] [--samples FILE]
 *
 * --until: runs SQL every --interval-ms (default 20) until it returns "t",
 * then prints the time it did, in seconds since the epoch, and exits 0.
 * --sample: runs SQL every --sample-ms (default 250) and appends
 * "SECONDS VALUE" to FILE (a failed query gives "-").  Without --until it
 * samples until SIGTERM.  Exits 3 at --timeout (default 300 s).  The server
 * comes from the libpq environment.
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>

static volatile sig_atomic_t stop_flag;

static void on_signal(int sig)
{
    (void)sig;
    stop_flag = 1;
}

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* The first value of the query's result, or NULL. */
static char *value(PGconn *conn, const char *sql, char *buf, size_t len)
{
    PGresult *res = PQexec(conn, sql);
    char *v = NULL;

    if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) > 0 && PQnfields(res) > 0 &&
        !PQgetisnull(res, 0, 0)) {
        snprintf(buf, len, "%s", PQgetvalue(res, 0, 0));
        v = buf;
    }
    PQclear(res);
    return v;
}

int main(int argc, char **argv)
{
    const char *until = NULL, *sample = NULL, *samples = NULL;
    int interval_ms = 20, sample_ms = 250;
    double timeout = 300, start, next_sample;
    FILE *sf = NULL;
    PGconn *conn;
    struct sigaction sa;
    char buf[256];

    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--until") == 0)
            until = argv[i + 1];
        else if (strcmp(argv[i], "--sample") == 0)
            sample = argv[i + 1];
        else if (strcmp(argv[i], "--samples") == 0)
            samples = argv[i + 1];
        else if (strcmp(argv[i], "--interval-ms") == 0)
            interval_ms = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--sample-ms") == 0)
            sample_ms = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--timeout") == 0)
            timeout = atof(argv[i + 1]);
        else {
            fprintf(stderr, "walq-bench-watch: unknown option \"%s\"\n", argv[i]);
            return 2;
        }
    }
    if ((until == NULL && sample == NULL) || (sample != NULL && samples == NULL)) {
        fprintf(stderr, "usage: walq-bench-watch [--until SQL] [--sample SQL --samples FILE]\n"
                        "       [--interval-ms N] [--sample-ms N] [--timeout S]\n");
        return 2;
    }
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    conn = PQconnectdb("fallback_application_name=walq-bench-watch");
    if (PQstatus(conn) != CONNECTION_OK) {
        fprintf(stderr, "walq-bench-watch: %s", PQerrorMessage(conn));
        return 1;
    }
    if (sample != NULL && (sf = fopen(samples, "a")) == NULL) {
        perror(samples);
        return 1;
    }
    start = next_sample = now_s();
    while (!stop_flag) {
        double t = now_s();

        if (sample != NULL && t >= next_sample) {
            char *v = value(conn, sample, buf, sizeof(buf));

            fprintf(sf, "%.6f %s\n", t, v ? v : "-");
            fflush(sf);
            next_sample += sample_ms / 1000.0;
        }
        if (until != NULL) {
            char *v = value(conn, until, buf, sizeof(buf));

            if (v != NULL && strcmp(v, "t") == 0) {
                printf("%.6f\n", now_s());
                break;
            }
        }
        if (t - start > timeout) {
            fprintf(stderr, "walq-bench-watch: timed out after %.0f s\n", timeout);
            PQfinish(conn);
            return 3;
        }
        usleep((until != NULL ? interval_ms : sample_ms) * 1000);
    }
    if (sf != NULL)
        fclose(sf);
    PQfinish(conn);
    return 0;
}
