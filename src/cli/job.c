/*
 * walq job: show, list, retry and cancel single jobs.
 *
 * Retry and cancel are the SQL functions walq.retry_job() and
 * walq.cancel_job(), so that psql users have the same operations with the
 * same checks; this file only calls them and prints what they say.
 */
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "db.h"
#include "job.h"
#include "text.h"

#define EXIT_USAGE 2

#define progname walq__progname

static const char *const job_statuses[] = {"queued", "running", "scheduled",
                                           "done",   "dead",    "cancelled"};

#define usage_error(sub, ...) walq__cli_usage("job", sub, __VA_ARGS__)

/*
 * Prints the error of a failed statement.  An error raised on purpose by
 * the walq functions (a job that does not exist, a status that does not
 * allow the change) is meant for the user as it is, with its detail and
 * hint; anything else says what could not be done.
 */
static void print_pg_error(PGconn *conn, const PGresult *res, const char *what)
{
    const char *primary = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    const char *detail = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_DETAIL) : NULL;
    const char *hint = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_HINT) : NULL;
    const char *ctx = res ? PQresultErrorField(res, PG_DIAG_CONTEXT) : NULL;
    size_t line = ctx ? strcspn(ctx, "\n") : 0;
    char msg[1024];

    if (primary != NULL && ctx != NULL && strncmp(ctx, "PL/pgSQL function walq.", 23) == 0 &&
        line >= 9 && strncmp(ctx + line - 9, " at RAISE", 9) == 0) {
        fprintf(stderr, "%s: ERROR:  %s\n", progname, primary);
    } else {
        fprintf(stderr, "%s: ERROR:  could not %s: %s\n", progname, what,
                walq__pg_message(conn, res, msg, sizeof(msg)));
    }
    if (detail != NULL)
        fprintf(stderr, "%s: DETAIL:  %s\n", progname, detail);
    if (hint != NULL)
        fprintf(stderr, "%s: HINT:  %s\n", progname, hint);
}

/* A job id: a positive decimal number that fits a bigint, normalized into out. */
static int parse_job_id(const char *s, char *out, size_t len)
{
    char *end;
    long long v;

    if (*s < '0' || *s > '9')
        return -1;
    errno = 0;
    v = strtoll(s, &end, 10);
    if (errno != 0 || *end != '\0' || v < 1)
        return -1;
    snprintf(out, len, "%lld", v);
    return 0;
}

/* Connects and checks the schema; prints the error and returns 1 on failure. */
static int open_db(PGconn **conn, const char *dbname, const char *appname)
{
    int rc = walq__connect(conn, dbname, WALQ__CONN_SQL, appname);

    if (rc == 0)
        rc = walq__schema_check(*conn);
    if (rc != 0) {
        walq__cli_fail(rc);
        if (*conn != NULL)
            PQfinish(*conn);
        *conn = NULL;
        return 1;
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* Tables */

/*
 * Values are printed on one line each, and what producers and handlers
 * wrote (payloads, queue names, last_error) can hold anything: every
 * control character is shown as its escape ("\n", "\e", "\x07"), so that
 * none reaches the terminal (src/text.c, walq__text_escape).
 */
static size_t text_width(const char *s)
{
    return walq__text_escaped_width(s);
}

static void put_text(const char *s)
{
    char *e = walq__text_escape(s);

    fputs(e ? e : "(out of memory)", stdout);
    free(e);
}

/* Prints res under headers, columns padded to their widest value. */
static void print_table(const PGresult *res, const char *const *headers, int ncols)
{
    size_t width[16] = {0};
    int nrows = PQntuples(res);

    if (ncols > (int)WALQ__ARRAY_SIZE(width))
        ncols = (int)WALQ__ARRAY_SIZE(width);
    for (int c = 0; c < ncols; c++) {
        width[c] = text_width(headers[c]);
        for (int r = 0; r < nrows; r++) {
            size_t w = text_width(PQgetvalue(res, r, c));

            if (w > width[c])
                width[c] = w;
        }
    }
    for (int r = -1; r < nrows; r++) {
        int last = ncols - 1;

        /* No padding after the last value: empty columns at the end are left out. */
        while (r >= 0 && last > 0 && *PQgetvalue(res, r, last) == '\0')
            last--;
        for (int c = 0; c <= last; c++) {
            const char *v = r < 0 ? headers[c] : PQgetvalue(res, r, c);

            put_text(v);
            if (c < last)
                printf("%*s", (int)(width[c] - text_width(v) + 2), "");
        }
        putchar('\n');
    }
}

/* ------------------------------------------------------------------ */
/* walq job show */

/*
 * Timestamps are shown to the millisecond, with the offset of the session's
 * time zone.
 * A key still in dedup_keys whose job finished is as good as free: the next
 * claim of it takes it over (see walq.claim_dedup_key).
 */
static const char show_job_sql[] =
    "SELECT j.id, j.queue, j.priority, to_char(j.run_at, 'YYYY-MM-DD HH24:MI:SS.MSOF'),"
    "       j.max_attempts,"
    "       CASE WHEN j.dedup_key IS NULL THEN '(none)'"
    "            WHEN EXISTS (SELECT 1 FROM walq.dedup_keys d"
    "                          WHERE d.queue = j.queue AND d.dedup_key = j.dedup_key"
    "                            AND d.job_id = j.id)"
    "                 AND NOT walq.job_finished(j.id)"
    "            THEN j.dedup_key || ' (held)'"
    "            ELSE j.dedup_key || ' (released)' END,"
    "       to_char(j.created_at, 'YYYY-MM-DD HH24:MI:SS.MSOF'), j.payload::text"
    "  FROM walq.jobs j WHERE j.id = $1::bigint";

static const char show_groups_sql[] =
    "SELECT s.consumer_group, s.status, s.attempts,"
    "       to_char(s.updated_at, 'YYYY-MM-DD HH24:MI:SS.MSOF'),"
    "       coalesce(to_char(o.run_at, 'YYYY-MM-DD HH24:MI:SS.MSOF'), ''),"
    "       coalesce(s.last_error, '')"
    "  FROM walq.job_status s"
    "  LEFT JOIN walq.outcomes o"
    "    ON o.group_name = s.consumer_group AND o.job_id = s.job_id AND o.status = 'scheduled'"
    " WHERE s.job_id = $1::bigint ORDER BY s.consumer_group";

static int job_show(int argc, char **argv)
{
    static const struct option longopts[] = {{"dbname", required_argument, NULL, 'd'},
                                             {"help", no_argument, NULL, 'h'},
                                             {NULL, 0, NULL, 0}};
    static const char *const fields[] = {"id",           "queue",     "priority",   "run_at",
                                         "max_attempts", "dedup_key", "created_at", "payload"};
    static const char *const headers[] = {"group",      "status",   "attempts",
                                          "updated_at", "next_run", "last_error"};
    const char *dbname = NULL;
    const char *params[1];
    char id[32];
    PGconn *conn = NULL;
    PGresult *job = NULL, *groups = NULL;
    int opt, rc, status = 1;

    while ((opt = getopt_long(argc, argv, "d:h", longopts, NULL)) != -1) {
        switch (opt) {
        case 'd':
            dbname = optarg;
            break;
        case 'h':
            printf("Usage: %s job show ID [--dbname CONNINFO]\n\n"
                   "Shows job ID as it was published, and its status in every consumer group\n"
                   "that reads its queue: attempts made, when it last changed, when a scheduled\n"
                   "job runs next, and why its last attempt failed.\n",
                   progname);
            return 0;
        default:
            usage_error("show", "%s", "invalid option for \"job show\"");
            return EXIT_USAGE;
        }
    }
    if (argc - optind != 1) {
        usage_error("show", "%s", "job show takes one job ID");
        return EXIT_USAGE;
    }
    if (parse_job_id(argv[optind], id, sizeof(id)) != 0) {
        usage_error("show", "invalid job ID \"%s\": give a positive whole number", argv[optind]);
        return EXIT_USAGE;
    }
    if (open_db(&conn, dbname, "walq job") != 0)
        return 1;
    params[0] = id;
    rc = walq__query(conn, &job, "read the job", show_job_sql, 1, params);
    if (rc == 0 && PQntuples(job) == 0)
        rc = walq__error(WALQ_EINVAL, "\"walq job list\" shows the jobs.", "job %s does not exist",
                         id);
    if (rc == 0)
        rc = walq__query(conn, &groups, "read the job's status", show_groups_sql, 1, params);
    if (rc != 0) {
        walq__cli_fail(rc);
        goto done;
    }
    for (int i = 0; i < (int)WALQ__ARRAY_SIZE(fields); i++) {
        printf("%-13s ", fields[i]);
        put_text(PQgetvalue(job, 0, i));
        putchar('\n');
    }
    putchar('\n');
    if (PQntuples(groups) == 0) {
        printf("(no consumer group reads queue \"");
        put_text(PQgetvalue(job, 0, 1));
        printf("\" yet)\n");
    } else {
        print_table(groups, headers, (int)WALQ__ARRAY_SIZE(headers));
    }
    status = 0;

done:
    PQclear(groups);
    PQclear(job);
    PQfinish(conn);
    return status;
}

/* ------------------------------------------------------------------ */
/* walq job list */

static int valid_status(const char *s)
{
    for (size_t i = 0; i < WALQ__ARRAY_SIZE(job_statuses); i++)
        if (strcmp(s, job_statuses[i]) == 0)
            return 1;
    return 0;
}

/*
 * Jobs dead, cancelled or scheduled come from walq.outcomes, so that they
 * are found through its index rather than by looking at every job; queued
 * jobs include those with no outcome, and done ones are mostly in batch
 * rows, which only the view reads.  Both queries give what walq.job_status
 * gives.
 */
static const char list_outcomes_sql[] =
    "SELECT o.job_id, j.queue, o.group_name, o.status, o.attempts,"
    "       to_char(o.updated_at, 'YYYY-MM-DD HH24:MI:SS.MSOF'),"
    "       coalesce(left(regexp_replace(o.last_error, '\\s+', ' ', 'g'), 80), '')"
    "  FROM walq.outcomes o"
    "  JOIN walq.jobs j ON j.id = o.job_id"
    "  JOIN walq.groups g ON g.name = o.group_name AND j.queue = ANY (g.queues)"
    " WHERE o.status = $1"
    "   AND ($2::text IS NULL OR j.queue = $2)"
    "   AND ($3::text IS NULL OR o.group_name = $3)"
    " ORDER BY o.updated_at DESC, o.job_id LIMIT $4::bigint";

static const char list_view_sql[] =
    "SELECT s.job_id, s.queue, s.consumer_group, s.status, s.attempts,"
    "       to_char(s.updated_at, 'YYYY-MM-DD HH24:MI:SS.MSOF'),"
    "       coalesce(left(regexp_replace(s.last_error, '\\s+', ' ', 'g'), 80), '')"
    "  FROM walq.job_status s"
    " WHERE ($1::text IS NULL OR s.status = $1)"
    "   AND ($2::text IS NULL OR s.queue = $2)"
    "   AND ($3::text IS NULL OR s.consumer_group = $3)"
    " ORDER BY s.updated_at DESC NULLS LAST, s.job_id LIMIT $4::bigint";

static int job_list(int argc, char **argv)
{
    enum { O_STATUS = 256, O_QUEUE, O_GROUP, O_LIMIT };
    static const struct option longopts[] = {{"dbname", required_argument, NULL, 'd'},
                                             {"status", required_argument, NULL, O_STATUS},
                                             {"queue", required_argument, NULL, O_QUEUE},
                                             {"group", required_argument, NULL, O_GROUP},
                                             {"limit", required_argument, NULL, O_LIMIT},
                                             {"help", no_argument, NULL, 'h'},
                                             {NULL, 0, NULL, 0}};
    static const char *const headers[] = {"job_id",   "queue",      "group",     "status",
                                          "attempts", "updated_at", "last_error"};
    const char *dbname = NULL, *status = NULL, *queue = NULL, *group = NULL;
    const char *params[4];
    char limit[32] = "100";
    PGconn *conn = NULL;
    PGresult *res = NULL;
    int opt, rc, exit_status = 1;

    while ((opt = getopt_long(argc, argv, "d:h", longopts, NULL)) != -1) {
        switch (opt) {
        case 'd':
            dbname = optarg;
            break;
        case O_STATUS:
            if (!valid_status(optarg)) {
                usage_error("list",
                            "invalid --status \"%s\": give queued, running, scheduled, done, "
                            "dead or cancelled",
                            optarg);
                return EXIT_USAGE;
            }
            status = optarg;
            break;
        case O_QUEUE:
            queue = optarg;
            break;
        case O_GROUP:
            group = optarg;
            break;
        case O_LIMIT: {
            char *end;
            long long v;

            errno = 0;
            v = strtoll(optarg, &end, 10);
            if (errno != 0 || end == optarg || *end != '\0' || v < 1) {
                usage_error("list", "invalid --limit \"%s\": give a positive whole number", optarg);
                return EXIT_USAGE;
            }
            snprintf(limit, sizeof(limit), "%lld", v);
            break;
        }
        case 'h':
            printf("Usage: %s job list [--status S] [--queue Q] [--group G] [--limit N] "
                   "[--dbname CONNINFO]\n\n"
                   "Lists jobs with their status in each consumer group that reads their queue,\n"
                   "the most recently changed first.  One line per job and group.\n\n"
                   "Options:\n"
                   "  --status S          queued, running, scheduled, done, dead or cancelled\n"
                   "  --queue Q           only jobs of queue Q\n"
                   "  --group G           only their status in consumer group G\n"
                   "  --limit N           at most N lines (default 100)\n"
                   "  --dbname CONNINFO   server to ask (default: libpq environment)\n",
                   progname);
            return 0;
        default:
            usage_error("list", "%s", "invalid option for \"job list\"");
            return EXIT_USAGE;
        }
    }
    if (optind < argc) {
        usage_error("list", "unexpected argument \"%s\"", argv[optind]);
        return EXIT_USAGE;
    }
    if (open_db(&conn, dbname, "walq job") != 0)
        return 1;
    if (group != NULL) {
        /* An empty list for a misspelt group would look like good news. */
        params[0] = group;
        rc = walq__query(conn, &res, "read the consumer groups",
                         "SELECT 1 FROM walq.groups WHERE name = $1", 1, params);
        if (rc == 0 && PQntuples(res) == 0)
            rc = walq__error(WALQ_EINVAL, "\"walq status\" lists the consumer groups.",
                             "consumer group \"%s\" does not exist", group);
        PQclear(res);
        res = NULL;
        if (rc != 0) {
            walq__cli_fail(rc);
            goto done;
        }
    }
    params[0] = status;
    params[1] = queue;
    params[2] = group;
    params[3] = limit;
    rc = walq__query(conn, &res, "list the jobs",
                     status != NULL && strcmp(status, "queued") != 0 && strcmp(status, "done") != 0
                         ? list_outcomes_sql
                         : list_view_sql,
                     4, params);
    if (rc != 0) {
        walq__cli_fail(rc);
        goto done;
    }
    if (PQntuples(res) == 0)
        printf("(no matching jobs)\n");
    else
        print_table(res, headers, (int)WALQ__ARRAY_SIZE(headers));
    exit_status = 0;

done:
    PQclear(res);
    PQfinish(conn);
    return exit_status;
}

/* ------------------------------------------------------------------ */
/* walq job retry, walq job cancel */

static int job_change(int argc, char **argv, int cancel)
{
    static const struct option longopts[] = {{"dbname", required_argument, NULL, 'd'},
                                             {"group", required_argument, NULL, 'g'},
                                             {"help", no_argument, NULL, 'h'},
                                             {NULL, 0, NULL, 0}};
    const char *cmd = cancel ? "cancel" : "retry";
    const char *dbname = NULL, *group = NULL;
    const char *params[2];
    char id[32], what[64];
    PGconn *conn = NULL;
    PGresult *res;
    int opt, n, status = 1;

    while ((opt = getopt_long(argc, argv, "d:g:h", longopts, NULL)) != -1) {
        switch (opt) {
        case 'd':
            dbname = optarg;
            break;
        case 'g':
            group = optarg;
            break;
        case 'h':
            if (cancel)
                printf("Usage: %s job cancel ID [--group G] [--dbname CONNINFO]\n\n"
                       "Cancels job ID in consumer group G, or in every group that reads its\n"
                       "queue, where it is queued or scheduled: it will not run there, even\n"
                       "after a restart of the consumer.  A running consumer drops it at once.\n"
                       "A job that is done, dead or already cancelled cannot be cancelled.\n"
                       "Once the job is finished in every group, its dedup key is free again.\n",
                       progname);
            else
                printf("Usage: %s job retry ID [--group G] [--dbname CONNINFO]\n\n"
                       "Puts job ID back in the queue of consumer group G, or of every group\n"
                       "that reads its queue, where it is dead or cancelled.  Its attempts start\n"
                       "from zero and its last error is cleared.  A running consumer of the\n"
                       "group runs it again at once; a stopped one when it starts.  A job whose\n"
                       "dedup key another unfinished job holds now cannot be retried.\n",
                       progname);
            return 0;
        default:
            usage_error(cmd, "invalid option for \"job %s\"", cmd);
            return EXIT_USAGE;
        }
    }
    if (argc - optind != 1) {
        usage_error(cmd, "job %s takes one job ID", cmd);
        return EXIT_USAGE;
    }
    if (parse_job_id(argv[optind], id, sizeof(id)) != 0) {
        usage_error(cmd, "invalid job ID \"%s\": give a positive whole number", argv[optind]);
        return EXIT_USAGE;
    }
    if (open_db(&conn, dbname, "walq job") != 0)
        return 1;
    params[0] = id;
    params[1] = group;
    /* One statement: the function's changes commit together or not at all. */
    res = PQexecParams(conn,
                       cancel ? "SELECT walq.cancel_job($1::bigint, $2::text)"
                              : "SELECT walq.retry_job($1::bigint, $2::text)",
                       2, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
        snprintf(what, sizeof(what), "%s job %s", cmd, id);
        print_pg_error(conn, res, what);
        goto done;
    }
    n = atoi(PQgetvalue(res, 0, 0));
    if (group != NULL)
        fprintf(stderr, "%s: job %s %s in group \"%s\"\n", progname, id,
                cancel ? "cancelled" : "queued again", group);
    else
        fprintf(stderr, "%s: job %s %s in %d group%s\n", progname, id,
                cancel ? "cancelled" : "queued again", n, n == 1 ? "" : "s");
    status = 0;

done:
    PQclear(res);
    PQfinish(conn);
    return status;
}

/* ------------------------------------------------------------------ */

static void job_help(void)
{
    printf("Usage: %s job COMMAND [OPTIONS]\n\n"
           "Looks at single jobs and changes their course.\n\n"
           "Commands:\n"
           "  show ID                the job and its status in every consumer group\n"
           "  list [OPTIONS]         jobs by status, queue and group, latest change first\n"
           "  retry ID [--group G]   put a dead or cancelled job back in the queue\n"
           "  cancel ID [--group G]  make sure a queued or scheduled job never runs\n\n"
           "\"%s job COMMAND --help\" describes each command.  Connections come from the\n"
           "libpq environment (PGHOST, PGPORT, PGDATABASE, PGUSER, ...) unless --dbname\n"
           "is given.\n",
           progname, progname);
}

int walq__cli_job(int argc, char **argv)
{
    const char *sub;

    if (argc < 2) {
        usage_error(NULL, "%s", "job needs a command: show, list, retry or cancel");
        return EXIT_USAGE;
    }
    sub = argv[1];
    if (strcmp(sub, "--help") == 0 || strcmp(sub, "-h") == 0 || strcmp(sub, "help") == 0) {
        job_help();
        return 0;
    }
    /* Each subcommand parses its own options, starting after its name. */
    argc--;
    argv++;
    if (strcmp(sub, "show") == 0)
        return job_show(argc, argv);
    if (strcmp(sub, "list") == 0)
        return job_list(argc, argv);
    if (strcmp(sub, "retry") == 0)
        return job_change(argc, argv, 0);
    if (strcmp(sub, "cancel") == 0)
        return job_change(argc, argv, 1);
    usage_error(NULL, "unknown job command \"%s\"", sub);
    return EXIT_USAGE;
}
