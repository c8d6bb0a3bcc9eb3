/*
 * walq: the command-line program, a thin layer over libwalq.  This file has
 * main() and the small commands (init, publish, status); consume, job, audit
 * and replica have files of their own.
 */
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <json-c/json.h>

#include "cli/audit.h"
#include "cli/cli.h"
#include "cli/consume.h"
#include "cli/group.h"
#include "cli/job.h"
#include "cli/replica.h"
#include "cli/serve.h"
#include "db.h"
#include "lsn.h"
#include "walq.h"

#define EXIT_USAGE 2

#define progname walq__progname

#define usage_error(...) walq__cli_usage(NULL, NULL, __VA_ARGS__)

/* ------------------------------------------------------------------ */

static int cmd_init(int argc, char **argv)
{
    static const struct option longopts[] = {{"dbname", required_argument, NULL, 'd'},
                                             {"help", no_argument, NULL, 'h'},
                                             {NULL, 0, NULL, 0}};
    const char *dbname = NULL;
    int opt, applied = 0, rc;

    while ((opt = getopt_long(argc, argv, "d:h", longopts, NULL)) != -1) {
        switch (opt) {
        case 'd':
            dbname = optarg;
            break;
        case 'h':
            printf("Usage: %s init [--dbname CONNINFO]\n\n"
                   "Creates the walq schema, or upgrades it to this version of walq.\n"
                   "Running it again is harmless.  Without --dbname the libpq environment\n"
                   "(PGHOST, PGPORT, PGDATABASE, PGUSER, ...) names the server.\n",
                   progname);
            return 0;
        default:
            usage_error("%s", "invalid option for \"init\"");
            return EXIT_USAGE;
        }
    }
    if (optind < argc) {
        usage_error("unexpected argument \"%s\"", argv[optind]);
        return EXIT_USAGE;
    }
    rc = walq_schema_init(dbname, &applied);
    if (rc != 0) {
        walq__cli_fail(rc);
        return 1;
    }
    if (applied)
        walq__cli_note("applied %d migration%s; schema \"walq\" is up to date", applied,
                       applied == 1 ? "" : "s");
    else
        walq__cli_note("%s", "schema \"walq\" is already up to date");
    return 0;
}

/* ------------------------------------------------------------------ */

typedef struct publish_opts {
    const char *dbname;
    const char *queue;
    const char *priority;
    const char *run_at;
    const char *max_attempts;
    const char *dedup_key;
    int batch;
} publish_opts;

static int publish_one(PGconn *conn, const publish_opts *po, const char *json)
{
    const char *params[6] = {po->queue,        json,         po->run_at, po->priority,
                             po->max_attempts, po->dedup_key};
    PGresult *res;
    int rc;

    rc = walq__query(conn, &res, "publish the job",
                     "SELECT walq.publish($1, $2::jsonb, coalesce($3::timestamptz, now()),"
                     " coalesce($4::int, 0), coalesce($5::int, 25), $6)",
                     6, params);
    if (rc != 0) {
        walq__cli_fail(rc);
        return 1;
    }
    printf("%s\n", PQgetvalue(res, 0, 0));
    PQclear(res);
    return 0;
}

/* Is line exactly one JSON document?  json-c in strict mode says. */
static int valid_json(json_tokener *tok, const char *line, size_t len, char *err, size_t errlen)
{
    json_object *obj;
    enum json_tokener_error jerr;
    size_t end;

    json_tokener_reset(tok);
    obj = json_tokener_parse_ex(tok, line, (int)len);
    jerr = json_tokener_get_error(tok);
    if (obj == NULL) {
        snprintf(err, errlen, "%s",
                 jerr == json_tokener_continue ? "unexpected end of input"
                                               : json_tokener_error_desc(jerr));
        return 0;
    }
    json_object_put(obj);
    end = json_tokener_get_parse_end(tok);
    while (end < len && (line[end] == ' ' || line[end] == '\t' || line[end] == '\r'))
        end++;
    if (end < len) {
        snprintf(err, errlen, "unexpected text after the document at byte %zu", end + 1);
        return 0;
    }
    return 1;
}

/*
 * Sends the rows of one batch with COPY, in one transaction.  On failure says
 * which input line the server complained about, using the line numbers of
 * the batch's rows.
 */
static int copy_batch(PGconn *conn, const walq__buf *rows, const long *lines, size_t nrows,
                      long *inserted)
{
    PGresult *res;
    char msg[1024];

    res = PQexec(conn, "COPY walq.jobs (queue, payload, priority, run_at, max_attempts, "
                       "dedup_key) FROM STDIN");
    if (PQresultStatus(res) != PGRES_COPY_IN) {
        int rc = walq__error(WALQ_EQUERY, NULL, "could not start publishing: %s",
                             walq__pg_message(conn, res, msg, sizeof(msg)));

        PQclear(res);
        return rc;
    }
    PQclear(res);
    if (PQputCopyData(conn, rows->data, (int)rows->len) != 1 || PQputCopyEnd(conn, NULL) != 1)
        return walq__error(WALQ_ECONN, NULL, "could not send jobs: %s",
                           walq__pg_message(conn, NULL, msg, sizeof(msg)));
    res = PQgetResult(conn);
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        const char *ctx = PQresultErrorField(res, PG_DIAG_CONTEXT);
        const char *at = ctx ? strstr(ctx, ", line ") : NULL;
        long row = at ? strtol(at + 7, NULL, 10) : 0;
        int rc;

        walq__pg_message(conn, res, msg, sizeof(msg));
        if (row >= 1 && (size_t)row <= nrows)
            rc = walq__error(WALQ_EQUERY, NULL, "line %ld: %s", lines[row - 1], msg);
        else
            rc = walq__error(WALQ_EQUERY, NULL, "could not publish lines %ld to %ld: %s", lines[0],
                             lines[nrows - 1], msg);
        PQclear(res);
        while ((res = PQgetResult(conn)) != NULL)
            PQclear(res);
        return rc;
    }
    /* Duplicates of a dedup key are skipped, so count what the server took. */
    *inserted = strtol(PQcmdTuples(res), NULL, 10);
    PQclear(res);
    while ((res = PQgetResult(conn)) != NULL)
        PQclear(res);
    return 0;
}

static int copy_field(walq__buf *b, const char *value, int last)
{
    int rc = value ? walq__buf_copy_text(b, value, strlen(value)) : walq__buf_puts(b, "\\N");

    return rc ? rc : walq__buf_puts(b, last ? "\n" : "\t");
}

static int publish_stream(PGconn *conn, const publish_opts *po)
{
    json_tokener *tok = json_tokener_new_ex(JSON_TOKENER_DEFAULT_DEPTH);
    walq__buf rows = {0};
    long *lines = calloc((size_t)po->batch, sizeof(*lines));
    char *line = NULL, err[256];
    size_t cap = 0, nrows = 0;
    long lineno = 0, published = 0, skipped = 0;
    ssize_t len;
    int rc = 0, bad = 0;

    if (tok == NULL || lines == NULL) {
        walq__cli_message("ERROR", "out of memory");
        rc = 1;
        goto done;
    }
    json_tokener_set_flags(tok, JSON_TOKENER_STRICT);
    for (;;) {
        len = getline(&line, &cap, stdin);
        if (len >= 0) {
            lineno++;
            while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
                line[--len] = '\0';
            if (strspn(line, " \t") == (size_t)len)
                continue; /* blank lines separate nothing */
            if (!valid_json(tok, line, (size_t)len, err, sizeof(err))) {
                bad = 1;
            } else {
                rc = walq__buf_copy_text(&rows, po->queue, strlen(po->queue));
                rc = rc ? rc : walq__buf_puts(&rows, "\t");
                rc = rc ? rc : walq__buf_copy_text(&rows, line, (size_t)len);
                rc = rc ? rc : walq__buf_puts(&rows, "\t");
                rc = rc ? rc : copy_field(&rows, po->priority ? po->priority : "0", 0);
                rc = rc ? rc : copy_field(&rows, po->run_at ? po->run_at : "now", 0);
                rc = rc ? rc : copy_field(&rows, po->max_attempts ? po->max_attempts : "25", 0);
                rc = rc ? rc : copy_field(&rows, po->dedup_key, 1);
                if (rc != 0) {
                    walq__cli_message("ERROR", "out of memory");
                    rc = 1;
                    goto done;
                }
                lines[nrows++] = lineno;
            }
        }
        /* A batch goes when full, at the end, or before reporting a bad line. */
        if (nrows > 0 && (len < 0 || bad || nrows == (size_t)po->batch)) {
            long inserted = 0;
            int crc = copy_batch(conn, &rows, lines, nrows, &inserted);

            if (crc != 0) {
                walq__cli_fail(crc);
                walq__cli_note("published %ld jobs from the lines before line %ld; nothing from "
                               "line %ld on was published",
                               published, lines[0], lines[0]);
                rc = 1;
                goto done;
            }
            published += inserted;
            skipped += (long)nrows - inserted;
            nrows = 0;
            walq__buf_reset(&rows);
        }
        if (bad) {
            char msg[512];

            snprintf(msg, sizeof(msg), "line %ld: invalid JSON: %s", lineno, err);
            walq__cli_message("ERROR", msg);
            walq__cli_note("published %ld jobs from the lines before line %ld; nothing from line "
                           "%ld on was published",
                           published, lineno, lineno);
            rc = 1;
            goto done;
        }
        if (len < 0)
            break;
    }
    if (ferror(stdin)) {
        char msg[512];

        snprintf(msg, sizeof(msg), "could not read standard input: %s", strerror(errno));
        walq__cli_message("ERROR", msg);
        rc = 1;
        goto done;
    }
    if (skipped > 0)
        walq__cli_note("published %ld jobs to queue \"%s\"; %ld lines skipped: their dedup key is "
                       "held by an unfinished job",
                       published, po->queue, skipped);
    else
        walq__cli_note("published %ld jobs to queue \"%s\"", published, po->queue);

done:
    free(line);
    free(lines);
    walq__buf_free(&rows);
    if (tok)
        json_tokener_free(tok);
    return rc;
}

static int cmd_publish(int argc, char **argv)
{
    static const struct option longopts[] = {{"dbname", required_argument, NULL, 'd'},
                                             {"priority", required_argument, NULL, 'p'},
                                             {"run-at", required_argument, NULL, 'r'},
                                             {"max-attempts", required_argument, NULL, 'm'},
                                             {"dedup-key", required_argument, NULL, 'k'},
                                             {"batch-size", required_argument, NULL, 'b'},
                                             {"help", no_argument, NULL, 'h'},
                                             {NULL, 0, NULL, 0}};
    publish_opts po = {0};
    PGconn *conn;
    int opt, rc;

    po.batch = 1000;
    while ((opt = getopt_long(argc, argv, "d:h", longopts, NULL)) != -1) {
        switch (opt) {
        case 'd':
            po.dbname = optarg;
            break;
        case 'p':
            po.priority = optarg;
            break;
        case 'r':
            po.run_at = optarg;
            break;
        case 'm':
            po.max_attempts = optarg;
            break;
        case 'k':
            po.dedup_key = optarg;
            break;
        case 'b':
            po.batch = atoi(optarg);
            if (po.batch < 1 || po.batch > 1000000) {
                usage_error("invalid --batch-size \"%s\": give 1 to 1000000", optarg);
                return EXIT_USAGE;
            }
            break;
        case 'h':
            printf("Usage: %s publish [OPTIONS] QUEUE [JSON]\n\n"
                   "Publishes a job to QUEUE and prints its id.  Without JSON, reads one JSON\n"
                   "document per line from standard input and publishes them in batched\n"
                   "transactions; a bad line stops it, and the lines before it stay published.\n\n"
                   "Options:\n"
                   "  --dbname CONNINFO     server to publish to (default: libpq environment)\n"
                   "  --priority N          lower runs first (default 0)\n"
                   "  --run-at TIMESTAMP    do not run before this time\n"
                   "  --max-attempts N      attempts before the job is dead (default 25)\n"
                   "  --dedup-key KEY       at most one unfinished job per queue with this key;\n"
                   "                        a duplicate prints the id of the job holding it\n"
                   "  --batch-size N        lines per transaction when reading stdin (1000)\n",
                   progname);
            return 0;
        default:
            usage_error("%s", "invalid option for \"publish\"");
            return EXIT_USAGE;
        }
    }
    if (optind >= argc || argc - optind > 2) {
        usage_error("%s", "publish takes a QUEUE and an optional JSON document");
        return EXIT_USAGE;
    }
    po.queue = argv[optind];
    if (*po.queue == '\0') {
        usage_error("%s", "the queue name must not be empty");
        return EXIT_USAGE;
    }
    rc = walq__connect(&conn, po.dbname, WALQ__CONN_SQL, "walq publish");
    if (rc == 0)
        rc = walq__schema_check(conn);
    if (rc != 0) {
        walq__cli_fail(rc);
        if (conn)
            PQfinish(conn);
        return 1;
    }
    if (optind + 1 < argc)
        rc = publish_one(conn, &po, argv[optind + 1]);
    else
        rc = publish_stream(conn, &po);
    PQfinish(conn);
    return rc;
}

/* ------------------------------------------------------------------ */

static void help(void)
{
    printf("walq %s: a PostgreSQL job queue that reads its jobs from the WAL\n\n"
           "Usage: %s COMMAND [OPTIONS]\n\n"
           "Commands:\n"
           "  init       create or upgrade the walq schema\n"
           "  publish    publish jobs to a queue\n"
           "  consume    run a handler for every job of some queues\n"
           "  status     show consumer groups, their lag and job counts\n"
           "  group      list consumer groups, or drop an abandoned one\n"
           "  serve      serve /metrics and a status page for the whole database\n"
           "  job        show, list, retry or cancel jobs\n"
           "  audit      write every change of the job tables as JSON lines or rows\n"
           "  replica    set up or tear down a subscriber to read the jobs from\n\n"
           "\"%s COMMAND --help\" describes each command.  Connections come from the libpq\n"
           "environment (PGHOST, PGPORT, PGDATABASE, PGUSER, ...) unless --dbname is given.\n"
           "\"%s --log-format json COMMAND\" writes the messages as JSON lines, and\n"
           "\"%s --version\" prints the version.\n",
           WALQ_VERSION_STRING, progname, progname, progname, progname);
}

int main(int argc, char **argv)
{
    const char *cmd;

    /* --log-format before the command is for every command's messages. */
    while (argc >= 3 && strcmp(argv[1], "--log-format") == 0) {
        if (walq__cli_log_format_fixed(argv[2]) != 0) {
            usage_error("--log-format takes text or json, not \"%s\"", argv[2]);
            return EXIT_USAGE;
        }
        argc -= 2;
        argv += 2;
    }
    if (argc < 2) {
        help();
        return EXIT_USAGE;
    }
    cmd = argv[1];
    if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0) {
        help();
        return 0;
    }
    if (strcmp(cmd, "--version") == 0) {
        printf("walq %s\n", WALQ_VERSION_STRING);
        return 0;
    }
    /* Each command parses its own options, starting after its name. */
    argc--;
    argv++;
    if (strcmp(cmd, "init") == 0)
        return cmd_init(argc, argv);
    if (strcmp(cmd, "publish") == 0)
        return cmd_publish(argc, argv);
    if (strcmp(cmd, "consume") == 0)
        return walq__cli_consume(argc, argv);
    if (strcmp(cmd, "status") == 0)
        return walq__cli_status(argc, argv);
    if (strcmp(cmd, "group") == 0)
        return walq__cli_group(argc, argv);
    if (strcmp(cmd, "serve") == 0)
        return walq__cli_serve(argc, argv);
    if (strcmp(cmd, "job") == 0)
        return walq__cli_job(argc, argv);
    if (strcmp(cmd, "audit") == 0)
        return walq__cli_audit(argc, argv);
    if (strcmp(cmd, "replica") == 0)
        return walq__cli_replica(argc, argv);
    usage_error("unknown command \"%s\"", cmd);
    return EXIT_USAGE;
}
