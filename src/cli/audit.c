/*
 * walq audit: every insert, update and delete of walq.jobs and walq.outcomes,
 * in commit order, as JSON lines in a file (or on standard output) or as rows
 * of an append-only table.  The work is src/audit.c (the loop, over the
 * shared reader), src/audit_format.c and src/audit_sink.c; this file reads
 * the options, handles signals and prints what happened.
 */
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* src/audit.h, the module; "audit.h" alone would be this directory's. */
#include "../audit.h"
#include "cli/audit.h"
#include "cli/cli.h"
#include "cli/web.h"
#include "cli/notify.h"

#define EXIT_USAGE 2

#define progname walq__progname

#define usage_error(...) walq__cli_usage("audit", NULL, __VA_ARGS__)

static void stop_audit(void *a, int immediate)
{
    walq__audit_stop(a, immediate);
}

/* systemd's STATUS= line: what the audit has written so far. */
static void describe(char *buf, size_t len, void *a)
{
    walq__audit_stats st;

    walq__audit_stats_get(a, &st);
    snprintf(buf, len, "%llu changes written", (unsigned long long)st.changes);
}

static void help(void)
{
    printf("Usage: %s audit [--output FILE|-] [--into TABLE] [--group NAME] [OPTIONS]\n\n"
           "Writes every insert, update and delete of walq.jobs and walq.outcomes, in commit\n"
           "order, one JSON object per change: lsn, xid, commit_time, commit_lsn, end_lsn,\n"
           "index and last (its place in its transaction), table, action, new (the new row)\n"
           "and old_key.  The changes come from a replication slot of the audit's own,\n"
           "walqaudit_NAME, created at the first start.\n\n"
           "With --output FILE the file is its own cursor: after a crash or kill -9, walq\n"
           "audit cuts the unfinished transaction at its end and carries on, with no change\n"
           "missing and none twice.  Standard output (-, the default) is at least once\n"
           "across restarts.  With --into, rows go to TABLE (created if missing, append-only)\n"
           "on the --dbname server, in the same transaction as the audit's cursor.\n\n"
           "Options:\n"
           "  --output FILE|-         JSON lines to FILE, or to standard output (default)\n"
           "  --into TABLE            rows into TABLE ([schema.]name) instead\n"
           "  --group NAME            audit group: lower-case letters, digits, _ (default\n"
           "                          \"audit\"); each group is an independent trail\n"
           "  --source CONNINFO       server with walq's tables and the slot (default:\n"
           "                          --dbname, or the libpq environment)\n"
           "  --dbname CONNINFO       server of --into's table, and the source unless\n"
           "                          --source is given (default: libpq environment)\n"
           "  --file-mode MODE        permissions of an output file the audit creates, in\n"
           "                          octal (default 0600, whatever the umask)\n"
           "  --drain                 exit once every change committed before the start\n"
           "                          is written\n"
           "  --status-interval SEC   seconds between status updates (default 10)\n"
           "  --http ADDR:PORT        serve /metrics, /healthz, /readyz and a status page\n"
           "                          at / (e.g. 127.0.0.1:9188; default: off)\n"
           "  --ready-within SEC      /readyz answers 200 while the audit has streamed\n"
           "                          within SEC seconds (default 60)\n"
           "  --verbose, --quiet      more or less logging\n"
           "  --log-format FORMAT     text (the default) or json: one JSON object per line\n"
           "                          on standard error, for log collectors\n\n"
           "SIGTERM or SIGINT finishes the transaction being received, writes and confirms\n"
           "what is whole and exits 0; a second signal exits at once.\n",
           progname);
}

int walq__cli_audit(int argc, char **argv)
{
    enum {
        O_OUTPUT = 256,
        O_HTTP_ADDR,
        O_READY_WITHIN,
        O_LOG_FORMAT,
        O_INTO,
        O_GROUP,
        O_SOURCE,
        O_DBNAME,
        O_DRAIN,
        O_STATUS,
        O_VERBOSE,
        O_QUIET,
        O_FILE_MODE
    };
    static const struct option longopts[] = {{"output", required_argument, NULL, O_OUTPUT},
                                             {"into", required_argument, NULL, O_INTO},
                                             {"group", required_argument, NULL, O_GROUP},
                                             {"source", required_argument, NULL, O_SOURCE},
                                             {"dbname", required_argument, NULL, O_DBNAME},
                                             {"drain", no_argument, NULL, O_DRAIN},
                                             {"status-interval", required_argument, NULL, O_STATUS},
                                             {"verbose", no_argument, NULL, O_VERBOSE},
                                             {"quiet", no_argument, NULL, O_QUIET},
                                             {"file-mode", required_argument, NULL, O_FILE_MODE},
                                             {"log-format", required_argument, NULL, O_LOG_FORMAT},
                                             {"http", required_argument, NULL, O_HTTP_ADDR},
                                             {"ready-within", required_argument, NULL, O_READY_WITHIN},
                                             {"help", no_argument, NULL, 'h'},
                                             {NULL, 0, NULL, 0}};
    walq__audit_options o;
    const char *dbname = NULL;
    const char *http = NULL; /* --http ADDR:PORT */
    double ready_within = 0; /* --ready-within, seconds; 0: the default */
    walq__web *web = NULL;
    walq__audit *a = NULL;
    walq__audit_stats st;
    walq__notify notify;
    static char slot[96], prefix[96];
    int opt, rc;
    int64_t t0;

    memset(&o, 0, sizeof(o));
    o.group = "audit";
    o.status_interval = 10.0;
    o.log = walq__cli_log;
    o.log_level = WALQ_LOG_INFO;
    while ((opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (opt) {
        case O_OUTPUT:
            o.output = optarg;
            break;
        case O_INTO:
            o.into = optarg;
            break;
        case O_GROUP:
            o.group = optarg;
            break;
        case O_SOURCE:
            o.source = optarg;
            break;
        case O_DBNAME:
            dbname = optarg;
            break;
        case O_DRAIN:
            o.drain = 1;
            break;
        case O_FILE_MODE: {
            char *end;
            long mode;

            errno = 0;
            mode = strtol(optarg, &end, 8);
            if (errno != 0 || end == optarg || *end != '\0' || mode < 0 || mode > 0777) {
                usage_error("--file-mode takes permissions in octal, such as 0640, not \"%s\"",
                            optarg);
                return EXIT_USAGE;
            }
            o.file_mode = mode == 0 ? 0 : (int)mode;
            break;
        }
        case O_STATUS: {
            char *end;

            errno = 0;
            o.status_interval = strtod(optarg, &end);
            if (errno != 0 || end == optarg || *end != '\0' || !(o.status_interval > 0) ||
                o.status_interval > 1e6) {
                usage_error("--status-interval takes seconds above 0, not \"%s\"", optarg);
                return EXIT_USAGE;
            }
            break;
        }
        case O_VERBOSE:
            o.log_level = WALQ_LOG_DEBUG;
            break;
        case O_QUIET:
            o.log_level = WALQ_LOG_WARNING;
            break;
        case O_LOG_FORMAT:
            if (walq__cli_log_format(optarg) != 0) {
                usage_error("--log-format takes text or json, not \"%s\"", optarg);
                return EXIT_USAGE;
            }
            break;
        case O_HTTP_ADDR:
            if (walq__web_check_listen(optarg) != 0)
                return EXIT_USAGE;
            http = optarg;
            break;
        case O_READY_WITHIN: {
            char *end;

            errno = 0;
            ready_within = strtod(optarg, &end);
            if (errno != 0 || end == optarg || *end != '\0' || !(ready_within > 0) ||
                ready_within > 1e7) {
                usage_error("--ready-within takes seconds above 0, not \"%s\"", optarg);
                return EXIT_USAGE;
            }
            break;
        }
        case 'h':
            help();
            return 0;
        default:
            usage_error("%s", "invalid option for \"audit\"");
            return EXIT_USAGE;
        }
    }
    if (optind < argc) {
        usage_error("unexpected argument \"%s\"", argv[optind]);
        return EXIT_USAGE;
    }
    o.target = dbname;
    if (o.source == NULL)
        o.source = dbname;

    snprintf(slot, sizeof(slot), "walqaudit_%s", o.group);
    snprintf(prefix, sizeof(prefix), "audit \"%s\": ", o.group);
    walq__cli_log_context("audit", o.group, NULL, slot, prefix);
    /* The audit exists once opened: its address goes to the watch at once. */
    walq__notify_init(&notify, describe, NULL);
    if (notify.on) {
        o.watch = walq__notify_watch;
        o.watch_arg = &notify;
        o.watch_interval_ms = walq__notify_interval_ms(&notify);
    }
    rc = walq__audit_open(&a, &o);
    if (rc != 0)
        return walq__cli_open_failed(rc);
    if (http != NULL) {
        walq__web_config cfg = {http, (int64_t)(ready_within * 1000), o.target, o.source};

        if (walq__web_start(&web, &cfg, walq__audit_metrics(a)) != 0) {
            walq__audit_free(a);
            return 1;
        }
    }
    notify.arg = a;
    walq__cli_on_stop(stop_audit, a);

    t0 = walq__mono_us();
    rc = walq__audit_run(a);
    walq__notify_stopping(&notify);
    walq__audit_stats_get(a, &st);
    walq__cli_on_stop(NULL, NULL);
    walq__web_stop(web);
    walq__audit_free(a);
    if (rc != 0) {
        walq__cli_fail(rc);
        return 1;
    }
    if (o.log_level >= WALQ_LOG_INFO) {
        double secs = (double)(walq__mono_us() - t0) / 1e6;

        walq__cli_note("audit \"%s\": %llu changes in %llu transactions written in %.2f s "
                       "(%.0f changes/s), %llu %s",
                       o.group, (unsigned long long)st.changes, (unsigned long long)st.transactions,
                       secs, secs > 0 ? (double)st.changes / secs : 0.0,
                       (unsigned long long)st.flushes, o.into ? "commits" : "flushes");
    }
    return 0;
}
