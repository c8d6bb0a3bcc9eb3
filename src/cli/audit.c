/*
 * walq audit: every insert, update and delete of walq.jobs and walq.outcomes,
 * in commit order, as JSON lines in a file (or on standard output) or as rows
 * of an append-only table.  The work is src/audit.c (the loop, over the
 * shared reader), src/audit_format.c and src/audit_sink.c; this file reads
 * the options, handles signals and prints what happened.
 */
#include <errno.h>
#include <getopt.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* src/audit.h, the module; "audit.h" alone would be this directory's. */
#include "../audit.h"
#include "cli/audit.h"
#include "cli/cli.h"
#include "cli/service.h"
#include "cli/settings.h"

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

/*
 * The settings of a run, built by the table below from the defaults, the
 * configuration file and the command line.  The strings are the pool's.
 */
typedef struct audit_args {
    walq__audit_options o;
    const char *dbname;      /* --dbname: the table's server, and the source's by default */
    const char *http;        /* --http ADDR:PORT, or NULL */
    int64_t ready_within_ms; /* --ready-within; 0: the default */
    int64_t status_ms;       /* o.status_interval, in milliseconds */
    const char *log_format;
    walq__set_pool pool;
} audit_args;

static int set_file_mode(void *base, const char *value, walq__set_pool *pool)
{
    char *end;
    long mode;

    (void)pool;
    errno = 0;
    mode = strtol(value, &end, 8);
    if (errno != 0 || end == value || *end != '\0' || mode < 0 || mode > 0777)
        return -1;
    ((audit_args *)base)->o.file_mode = (int)mode;
    return 0;
}

#define OFF(field) offsetof(audit_args, field)

/*
 * Every setting of walq audit: --NAME on the command line, NAME in the
 * file's [audit] section.  SIGHUP applies log-level to the running audit.
 */
static const walq__setting audit_table[] = {
    {.name = "output",
     .kind = WALQ__SET_STR,
     .off = OFF(o.output),
     .arg = "FILE|-",
     .help = "JSON lines to FILE, or to standard output (default)",
     .what = "a file name or -"},
    {.name = "into",
     .kind = WALQ__SET_STR,
     .off = OFF(o.into),
     .arg = "TABLE",
     .help = "rows into TABLE ([schema.]name) instead",
     .what = "a table name"},
    {.name = "group",
     .kind = WALQ__SET_STR,
     .off = OFF(o.group),
     .def = "audit",
     .arg = "NAME",
     .help = "audit group: lower-case letters, digits, _ (default\n\"audit\"); each group is an "
             "independent trail",
     .what = "a group name"},
    {.name = "source",
     .kind = WALQ__SET_STR,
     .off = OFF(o.source),
     .arg = "CONNINFO",
     .help = "server with walq's tables and the slot (default:\n--dbname, or the libpq "
             "environment)",
     .what = "a connection string"},
    {.name = "dbname",
     .kind = WALQ__SET_STR,
     .off = OFF(dbname),
     .arg = "CONNINFO",
     .help = "server of --into's table, and the source unless\n--source is given (default: libpq "
             "environment)",
     .what = "a connection string"},
    {.name = "file-mode",
     .kind = WALQ__SET_FUNC,
     .off = OFF(o.file_mode),
     .arg = "MODE",
     .help = "permissions of an output file the audit creates, in\noctal (default 0600, whatever "
             "the umask)",
     .what = "permissions in octal, such as 0640",
     .fn = set_file_mode,
     .size = sizeof(int)},
    {.name = "drain",
     .kind = WALQ__SET_BOOL,
     .off = OFF(o.drain),
     .def = "no",
     .help = "exit once every change committed before the start\nis written",
     .what = "yes or no"},
    WALQ__SETTINGS_SERVICE(audit_args, status_ms, http, ready_within_ms, "9188",
                           "/readyz answers 200 while the audit has streamed\nwithin SEC seconds "
                           "(default 60)"),
    WALQ__SETTINGS_LOG(audit_args, o.log_level, log_format),
};

/* A file may hold the consumer's settings too, in [consume]. */
static const char *const other_sections[] = {"consume", NULL};

static const walq__settings audit_settings = {"audit", audit_table, WALQ__ARRAY_SIZE(audit_table),
                                              other_sections, NULL};

static void help(void)
{
    printf("Usage: %s audit [--output FILE|-] [--into TABLE] [--group NAME] [OPTIONS]\n"
           "       %s audit --config FILE [OPTIONS]\n\n"
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
           "Options:\n",
           progname, progname);
    walq__settings_help(&audit_settings, stdout);
    printf("\nSIGTERM or SIGINT finishes the transaction being received, writes and confirms\n"
           "what is whole and exits 0; a second signal exits at once.\n");
}

/*
 * The settings (an audit_args) as at the start and at every reload: 0, or
 * 1 (the file) or 2 with err.
 */
static int build(void *base, const walq__cmdline *cl, char *err, size_t errlen)
{
    audit_args *a = base;
    int rc;

    memset(a, 0, sizeof(*a));
    a->o.log = walq__cli_log;
    rc = walq__settings_build(&audit_settings, cl, a, &a->pool, err, errlen);
    if (rc != 0)
        return rc;
    if (cl->nrest > 0) {
        snprintf(err, errlen, "unexpected argument \"%s\"", cl->rest[0]);
        return 2;
    }
    a->o.status_interval = (double)a->status_ms / 1000.0;
    a->o.target = a->dbname;
    if (a->o.source == NULL)
        a->o.source = a->dbname;
    return 0;
}

/* SIGHUP's log level (the one setting that reloads) to the audit's loop. */
static int apply_reload(void *a, const void *next, char *err, size_t errlen)
{
    (void)err;
    (void)errlen;
    walq__audit_reconfigure(a, ((const audit_args *)next)->o.log_level);
    return 0;
}

int walq__cli_audit(int argc, char **argv)
{
    audit_args args;
    walq__audit_options *o = &args.o;
    walq__cmdline cl;
    walq__web_config web;
    walq__service svc;
    walq__audit *a = NULL;
    walq__audit_stats st;
    walq__reload r = {.t = &audit_settings,
                      .cl = &cl,
                      .cur = &args,
                      .size = sizeof(args),
                      .pool_off = offsetof(audit_args, pool),
                      .level_off = offsetof(audit_args, o.log_level),
                      .build = build,
                      .apply = apply_reload,
                      .log = walq__cli_log};
    static char slot[96], prefix[96];
    char err[2048];
    int rc;
    int64_t t0;

    memset(&args, 0, sizeof(args));
    rc = walq__settings_cmdline(&audit_settings, &cl, argc, argv);
    if (rc == 1) {
        help();
        walq__cmdline_free(&cl);
        return 0;
    }
    if (rc != 0) {
        usage_error("%s", "invalid option for \"audit\"");
        walq__cmdline_free(&cl);
        return EXIT_USAGE;
    }
    rc = build(&args, &cl, err, sizeof(err));
    if (rc == 1)
        walq__cli_message("ERROR", err);
    else if (rc != 0)
        usage_error("%s", err);
    if (rc == 0 && args.http != NULL && walq__web_check_listen(args.http) != 0)
        rc = 2;
    if (rc != 0) {
        walq__set_pool_free(&args.pool);
        walq__cmdline_free(&cl);
        return EXIT_USAGE;
    }
    walq__cli_log_format(args.log_format);

    snprintf(slot, sizeof(slot), "walqaudit_%s", o->group);
    snprintf(prefix, sizeof(prefix), "audit \"%s\": ", o->group);
    walq__cli_log_context("audit", o->group, NULL, slot, prefix);
    /* The audit takes the watch in its options, before it opens. */
    walq__service_init(&svc, describe);
    if (svc.notify.on) {
        o->watch = walq__notify_watch;
        o->watch_arg = &svc.notify;
        o->watch_interval_ms = walq__notify_interval_ms(&svc.notify);
    }
    rc = walq__audit_open(&a, o);
    if (rc != 0) {
        walq__set_pool_free(&args.pool);
        walq__cmdline_free(&cl);
        return walq__cli_open_failed(rc);
    }
    web = (walq__web_config){args.http, args.ready_within_ms, o->target, o->source};
    if (walq__service_start(&svc, a, &web, walq__audit_metrics(a), stop_audit, &r) != 0) {
        walq__audit_free(a);
        walq__set_pool_free(&args.pool);
        walq__cmdline_free(&cl);
        return 1;
    }

    t0 = walq__mono_us();
    rc = walq__audit_run(a);
    walq__service_stop(&svc);
    walq__audit_stats_get(a, &st);
    walq__audit_free(a);
    if (rc != 0)
        walq__cli_fail(rc);
    else if (o->log_level >= WALQ_LOG_INFO) {
        double secs = (double)(walq__mono_us() - t0) / 1e6;

        walq__cli_note("audit \"%s\": %llu changes in %llu transactions written in %.2f s "
                       "(%.0f changes/s), %llu %s",
                       o->group, (unsigned long long)st.changes,
                       (unsigned long long)st.transactions, secs,
                       secs > 0 ? (double)st.changes / secs : 0.0, (unsigned long long)st.flushes,
                       o->into ? "commits" : "flushes");
    }
    walq__set_pool_free(&args.pool);
    walq__cmdline_free(&cl);
    return rc != 0 ? 1 : 0;
}
