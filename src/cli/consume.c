/*
 * `walq consume`: the command line in, a consumer of libwalq run until it
 * stops, a summary out.  Durations are seconds on the command line and
 * milliseconds in walq_options.
 */
#include <errno.h>
#include <getopt.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/consume.h"
#include "cli/service.h"
#include "cli/settings.h"
#include "walq.h"

#define EXIT_USAGE 2

#define progname walq__progname

#define usage_error(...) walq__cli_usage(NULL, NULL, __VA_ARGS__)

/* What parse_args() and check_args() return when the command goes on. */
#define GO_ON (-1)

/*
 * The settings of a run: the consumer's options and what they point to,
 * built by the table below from the defaults, the configuration file and
 * the command line.  The strings and lists are the pool's (or argv's).
 */
typedef struct consume_args {
    walq_options opts;
    walq__strv queues;       /* opts.queues */
    walq__strv program;      /* opts.argv: after "--", or the file's program */
    walq__strv pass_env;     /* opts.pass_env */
    const char *http;        /* --http ADDR:PORT, or NULL */
    int64_t ready_within_ms; /* --ready-within; 0: the default */
    const char *log_format;  /* --log-format */
    walq__set_pool pool;
} consume_args;

static void stop_consumer(void *c, int immediate)
{
    walq_consumer_stop(c, immediate);
}

static int set_partition(void *base, const char *value, walq__set_pool *pool)
{
    walq_options *o = &((consume_args *)base)->opts;
    char extra;

    (void)pool;
    return sscanf(value, "%d/%d%c", &o->partition, &o->partitions, &extra) == 2 &&
                   o->partitions >= 1 && o->partitions <= 1024 && o->partition >= 0 &&
                   o->partition < o->partitions
               ? 0
               : -1;
}

static void then_sql(void *base)
{
    ((consume_args *)base)->opts.handler = WALQ_HANDLER_SQL;
}

static void then_dbname(void *base)
{
    walq_options *o = &((consume_args *)base)->opts;

    o->primary = o->source;
}

/* The environment's choice of plugin, which the file and --plugin override. */
static int plugin_from_env(void *base, char *err, size_t errlen)
{
    const char *env = getenv("WALQ_PLUGIN");

    if (env == NULL || env[0] == '\0')
        return 0;
    if (strcmp(env, "pgoutput") != 0 && strcmp(env, "wal2json") != 0 && strcmp(env, "auto") != 0) {
        snprintf(err, errlen, "WALQ_PLUGIN takes pgoutput, wal2json or auto, not \"%s\"", env);
        return -1;
    }
    ((consume_args *)base)->opts.plugin = env;
    return 0;
}

static const walq__set_name handlers[] = {{"exec", WALQ_HANDLER_EXEC},
                                          {"coprocess", WALQ_HANDLER_COPROCESS},
                                          {"sql", WALQ_HANDLER_SQL},
                                          {"noop", WALQ_HANDLER_NOOP},
                                          {NULL, 0}};
static const walq__set_name plugins[] = {{"pgoutput", 0}, {"wal2json", 0}, {"auto", 0}, {NULL, 0}};

#define OFF(field) offsetof(consume_args, field)

/*
 * Every setting of walq consume: the command line's --NAME and the file's
 * NAME in [consume].  Defaults are the file's way of writing them; those
 * that reload are applied by SIGHUP to the running consumer
 * (walq_consumer_reconfigure() takes the same ones).
 */
static const walq__setting consume_table[] = {
    {.name = "group",
     .kind = WALQ__SET_STR,
     .off = OFF(opts.group),
     .arg = "NAME",
     .help = "consumer group: lower-case letters, digits, _",
     .what = "a group name"},
    {.name = "queue",
     .kind = WALQ__SET_LIST,
     .off = OFF(queues),
     .arg = "NAME",
     .help = "a queue to read (repeatable; a line of the file may\nname several)",
     .what = "queue names"},
    {.name = "partition",
     .kind = WALQ__SET_FUNC,
     .off = OFF(opts.partition),
     .def = "0/1",
     .arg = "K/N",
     .help = "read partition K (0..N-1) of a group split over N\nreaders, with its own slot "
             "walq_G_KofN; job j is in\npartition walq.partition_of(j, N)",
     .what = "K/N, with N from 1 to 1024 and K from 0 to N-1",
     .fn = set_partition,
     .size = 2 * sizeof(int)},
    {.name = "concurrency",
     .kind = WALQ__SET_INT,
     .off = OFF(opts.concurrency),
     .def = "1",
     .flags = WALQ__SET_RELOAD,
     .arg = "N",
     .help = "handlers running at once (default 1)",
     .what = "a whole number from 1 to 4096",
     .lo = 1,
     .hi = 4096},
    {.name = "drain",
     .kind = WALQ__SET_BOOL,
     .off = OFF(opts.drain),
     .def = "no",
     .help = "exit once the jobs committed before the start are done",
     .what = "yes or no"},
    {.name = "keep-outcomes",
     .kind = WALQ__SET_BOOL,
     .off = OFF(opts.keep_outcomes),
     .def = "no",
     .help = "accepted for compatibility: every outcome is kept\nuntil the retention removes its "
             "job",
     .what = "yes or no"},
    {.name = "handler",
     .kind = WALQ__SET_ENUM,
     .off = OFF(opts.handler),
     .def = "exec",
     .arg = "KIND",
     .help = "exec (the default: PROGRAM per job), coprocess, sql\nor noop; the shorthands "
             "follow",
     .what = "exec, coprocess, sql or noop",
     .names = handlers},
    {.name = "noop",
     .kind = WALQ__SET_ENUM,
     .off = OFF(opts.handler),
     .flags = WALQ__SET_CLI_ONLY | WALQ__SET_NO_CMP,
     .help = "record every job done without running anything",
     .what = "",
     .names = handlers,
     .fixed = "noop"},
    {.name = "coprocess",
     .kind = WALQ__SET_ENUM,
     .off = OFF(opts.handler),
     .flags = WALQ__SET_CLI_ONLY | WALQ__SET_NO_CMP,
     .help = "run --concurrency long-lived PROGRAMs that take jobs\nas JSON lines on stdin and "
             "reply on stdout",
     .what = "",
     .names = handlers,
     .fixed = "coprocess"},
    {.name = "coprocess-inflight",
     .kind = WALQ__SET_INT,
     .off = OFF(opts.coprocess_inflight),
     .def = "16",
     .arg = "N",
     .help = "jobs in flight per coprocess worker (default 16)",
     .what = "a whole number from 1 to 100000",
     .lo = 1,
     .hi = 100000},
    {.name = "sql",
     .kind = WALQ__SET_STR,
     .off = OFF(opts.sql),
     .arg = "STATEMENT",
     .help = "run STATEMENT per job in the ack transaction, with\n$1 = payload (jsonb) and $2 = "
             "job id (bigint)",
     .what = "a statement",
     .then = then_sql},
    {.name = "program",
     .kind = WALQ__SET_WORDS,
     .off = OFF(program),
     .arg = "'PROG ARGS'",
     .help = "the handler program and its arguments in one string,\nsplit as a shell does (quotes, "
             "\\) but expanding nothing;\nwhat follows \"--\" wins over it",
     .what = "a program and its arguments"},
    {.name = "pass-env",
     .kind = WALQ__SET_LIST,
     .off = OFF(pass_env),
     .arg = "NAME",
     .help = "give handlers the variable NAME of walq's environment\nalthough it starts with PG "
             "(repeatable; NAME* for\nevery variable that begins with NAME)",
     .what = "variable names"},
    {.name = "timeout",
     .kind = WALQ__SET_SECONDS,
     .off = OFF(opts.timeout_ms),
     .def = "0",
     .flags = WALQ__SET_RELOAD,
     .arg = "SECONDS",
     .help = "kill a handler running longer (default 0: no limit)",
     .what = "seconds",
     .lo = 0,
     .hi = WALQ__SET_MAX_MS},
    {.name = "backoff-min",
     .kind = WALQ__SET_SECONDS,
     .off = OFF(opts.backoff_min_ms),
     .def = "1",
     .flags = WALQ__SET_RELOAD,
     .arg = "SECONDS",
     .help = "first retry delay (default 1)",
     .what = "seconds",
     .lo = 0,
     .hi = WALQ__SET_MAX_MS},
    {.name = "backoff-max",
     .kind = WALQ__SET_SECONDS,
     .off = OFF(opts.backoff_max_ms),
     .def = "600",
     .flags = WALQ__SET_RELOAD,
     .arg = "SECONDS",
     .help = "longest retry delay (default 600)",
     .what = "seconds",
     .lo = 0,
     .hi = WALQ__SET_MAX_MS},
    {.name = "batch-size",
     .kind = WALQ__SET_INT,
     .off = OFF(opts.batch_size),
     .def = "1000",
     .flags = WALQ__SET_RELOAD,
     .arg = "N",
     .help = "outcomes per ack transaction (default 1000)",
     .what = "a whole number from 1 to 100000",
     .lo = 1,
     .hi = 100000},
    {.name = "ack-delay-ms",
     .kind = WALQ__SET_INT64,
     .off = OFF(opts.ack_delay_ms),
     .def = "10",
     .flags = WALQ__SET_RELOAD,
     .arg = "MS",
     .help = "the longest an outcome waits for its ack transaction,\nin milliseconds (default 10)",
     .what = "milliseconds from 0 to 60000",
     .lo = 0,
     .hi = 60000},
    {.name = "max-in-flight",
     .kind = WALQ__SET_INT,
     .off = OFF(opts.max_in_flight),
     .def = "10000",
     .flags = WALQ__SET_RELOAD,
     .arg = "N",
     .help = "jobs in memory before reading pauses (default 10000)",
     .what = "a whole number from 1 to 10000000",
     .lo = 1,
     .hi = 10000000},
    {.name = "max-in-flight-bytes",
     .kind = WALQ__SET_INT64,
     .off = OFF(opts.max_in_flight_bytes),
     .def = "268435456",
     .flags = WALQ__SET_RELOAD,
     .arg = "N",
     .help = "payload bytes in memory before reading pauses\n(default 268435456, 256 MiB)",
     .what = "a positive whole number of bytes",
     .lo = 1,
     .hi = INT64_MAX},
    {.name = "primary-timeout",
     .kind = WALQ__SET_SECONDS,
     .off = OFF(opts.primary_timeout_ms),
     .def = "10",
     .flags = WALQ__SET_ZERO_OK,
     .arg = "SEC",
     .help = "longest wait for one answer of the primary before\nwalq reconnects (default 10; 0: "
             "no limit)",
     .what = "seconds, 0 for no limit or at least 0.1",
     .lo = 100,
     .hi = WALQ__SET_MAX_MS},
    {.name = "plugin",
     .kind = WALQ__SET_CHOICE,
     .off = OFF(opts.plugin),
     .arg = "NAME",
     .help = "output plugin of a new slot: pgoutput (the default,\nallowed on every server) or "
             "wal2json; a slot that\nexists keeps its own (default: $WALQ_PLUGIN, or auto)",
     .what = "pgoutput, wal2json or auto",
     .names = plugins},
    {.name = "failover-slot",
     .kind = WALQ__SET_BOOL,
     .off = OFF(opts.failover_slot),
     .def = "no",
     .help = "make the slot a failover slot (PostgreSQL 17+): a\nstandby with "
             "sync_replication_slots keeps it, and\nthe group reads on from it once it is promoted",
     .what = "yes or no"},
    {.name = "timer-horizon",
     .kind = WALQ__SET_SECONDS,
     .off = OFF(opts.timer_horizon_ms),
     .def = "60",
     .arg = "SEC",
     .help = "scheduled jobs due within this are kept in memory;\nlater ones are read from the "
             "table nearer their\ntime (default 60)",
     .what = "seconds, at least 0.1",
     .lo = 100,
     .hi = WALQ__SET_MAX_MS},
    {.name = "source",
     .kind = WALQ__SET_STR,
     .off = OFF(opts.source),
     .arg = "CONNINFO",
     .help = "server with the slot (default: libpq environment)",
     .what = "a connection string"},
    {.name = "primary",
     .kind = WALQ__SET_STR,
     .off = OFF(opts.primary),
     .arg = "CONNINFO",
     .help = "server taking the outcomes (default: libpq environment)",
     .what = "a connection string"},
    {.name = "dbname",
     .kind = WALQ__SET_STR,
     .off = OFF(opts.source),
     .flags = WALQ__SET_NO_CMP,
     .arg = "CONNINFO",
     .help = "both of the above",
     .what = "a connection string",
     .then = then_dbname},
    WALQ__SETTINGS_SERVICE(consume_args, opts.status_interval_ms, http, ready_within_ms, "9187",
                           "/readyz answers 200 while the consumer has streamed\nand acked "
                           "within SEC seconds (default 60)"),
    WALQ__SETTINGS_LOG(consume_args, opts.log_level, log_format),
};

/* A file may hold the audit's settings too, in [audit]. */
static const char *const other_sections[] = {"audit", NULL};

static const walq__settings consume_settings = {
    "consume", consume_table, WALQ__ARRAY_SIZE(consume_table), other_sections, plugin_from_env};

static void consume_help(void)
{
    printf("Usage: %s consume --group G --queue Q [--queue Q2 ...] [OPTIONS] -- PROGRAM [ARGS]\n"
           "       %s consume --group G --queue Q --coprocess [OPTIONS] -- PROGRAM [ARGS]\n"
           "       %s consume --group G --queue Q --sql STATEMENT [OPTIONS]\n"
           "       %s consume --group G --queue Q --noop [OPTIONS]\n"
           "       %s consume --config FILE [OPTIONS] [-- PROGRAM [ARGS]]\n\n"
           "Runs PROGRAM for every job of the queues, reading the jobs from the group's\n"
           "replication slot (walq_G).  The payload is on the program's standard input;\n"
           "WALQ_JOB_ID, WALQ_QUEUE, WALQ_GROUP and WALQ_ATTEMPT are in its environment,\n"
           "which is walq's without the variables whose names start with PG (libpq's\n"
           "passwords, password files and connection settings) unless --pass-env names them.\n"
           "Exit 0 marks the job done, exit 75 asks for a retry; any other exit or a\n"
           "signal is a failure, retried until the job's max_attempts, then the job is dead.\n\n"
           "Options:\n",
           progname, progname, progname, progname, progname);
    walq__settings_help(&consume_settings, stdout);
    printf("\nA second consume of the same group (and partition) stands by while the first\n"
           "runs and takes over when it stops.  SIGTERM or SIGINT finishes the running\n"
           "jobs, records them and exits 0; a second signal exits at once.\n");
}

/*
 * The settings (a consume_args) from the table, the file and the command
 * line, as at the start and at every reload: 0, or 1 (the file) or 2 (the
 * command line) with err saying what is wrong.
 */
static int build(void *base, const walq__cmdline *cl, char *err, size_t errlen)
{
    consume_args *a = base;
    int rc, runs_program;

    memset(a, 0, sizeof(*a));
    a->opts = (walq_options)WALQ_OPTIONS_INIT;
    a->opts.log = walq__cli_log;
    rc = walq__settings_build(&consume_settings, cl, a, &a->pool, err, errlen);
    if (rc != 0)
        return rc;
    /* What follows "--" wins over the file's program. */
    if (cl->nrest > 0)
        a->program = (walq__strv){(const char **)cl->rest, (size_t)cl->nrest};
    runs_program =
        a->opts.handler == WALQ_HANDLER_EXEC || a->opts.handler == WALQ_HANDLER_COPROCESS;
    /* The file's program is for a handler that runs one: the command line chose another. */
    if (!runs_program && cl->nrest == 0)
        a->program = (walq__strv){NULL, 0};
    a->opts.queues = a->queues.v;
    a->opts.nqueues = a->queues.n;
    a->opts.argv = a->program.v;
    a->opts.pass_env = a->pass_env.n ? a->pass_env.v : NULL;
    return 0;
}

/*
 * Reads the command line (and the file it names) into a.  GO_ON, or the
 * exit status: 0 after --help, 2 after a usage error, which it has printed.
 */
static int parse_args(consume_args *a, walq__cmdline *cl, int argc, char **argv)
{
    char err[2048];
    int rc;

    memset(a, 0, sizeof(*a));
    rc = walq__settings_cmdline(&consume_settings, cl, argc, argv);
    if (rc == 1) {
        consume_help();
        return 0;
    }
    if (rc != 0) {
        usage_error("%s", "invalid option for \"consume\"");
        return EXIT_USAGE;
    }
    rc = build(a, cl, err, sizeof(err));
    if (rc == 1) {
        walq__cli_message("ERROR", err);
        return EXIT_USAGE;
    }
    if (rc != 0) {
        usage_error("%s", err);
        return EXIT_USAGE;
    }
    walq__cli_log_format(a->log_format);
    return GO_ON;
}

/*
 * What the settings must say before the library is asked: a group, a
 * queue, and a handler program exactly when the handler runs one.  GO_ON,
 * or the exit status 2 after printing the usage error.
 */
static int check_args(const consume_args *a, const walq__cmdline *cl)
{
    const walq_options *o = &a->opts;
    int runs_program = o->handler == WALQ_HANDLER_EXEC || o->handler == WALQ_HANDLER_COPROCESS;

    if (o->group == NULL) {
        usage_error("%s", "consume needs --group NAME (or group = NAME in the file)");
        return EXIT_USAGE;
    }
    if (!walq_group_name_valid(o->group)) {
        char msg[256];

        snprintf(msg, sizeof(msg),
                 "invalid consumer group name \"%.64s\"\nHINT:  Use lower-case letters, digits "
                 "and underscores, at most 58 of them, as replication slot names allow.",
                 o->group);
        walq__cli_message("ERROR", msg);
        return EXIT_USAGE;
    }
    if (a->queues.n == 0) {
        usage_error("%s", "consume needs at least one --queue NAME (or queue = NAME in the file)");
        return EXIT_USAGE;
    }
    if (runs_program && a->program.n == 0) {
        usage_error("%s", "give the handler after \"--\" (consume ... -- PROGRAM [ARGS]), "
                          "--sql STATEMENT or --noop");
        return EXIT_USAGE;
    }
    if (!runs_program && cl->nrest > 0) {
        usage_error("%s", "--noop and --sql take no handler program");
        return EXIT_USAGE;
    }
    if (a->http != NULL && walq__web_check_listen(a->http) != 0)
        return EXIT_USAGE;
    return GO_ON;
}

/* SIGHUP's settings to the consumer, which applies them at its next turn. */
static int apply_reload(void *c, const void *next, char *err, size_t errlen)
{
    int rc = walq_consumer_reconfigure(c, &((const consume_args *)next)->opts);
    const char *why;

    if (rc == 0)
        return 0;
    why = walq_last_error();
    snprintf(err, errlen, "%s", *why ? why : walq_strerror(rc));
    return -1;
}

/* The summary of a run, or why it failed. */
static void report(const consume_args *a, const walq_consumer *c, int rc, int64_t elapsed_us)
{
    double secs = (double)elapsed_us / 1e6;
    walq_stats st;

    if (rc != 0) {
        const char *msg = walq_consumer_errmsg(c);

        walq__cli_message("ERROR", *msg ? msg : walq_strerror(rc));
        return;
    }
    if (a->opts.log_level < WALQ_LOG_INFO)
        return;
    walq_consumer_stats(&st, c);
    walq__cli_note("group \"%s\": %llu received, %llu done, %llu retried, %llu dead in "
                   "%.2f s (%.0f jobs/s)",
                   a->opts.group, (unsigned long long)st.received, (unsigned long long)st.done,
                   (unsigned long long)st.retried, (unsigned long long)st.dead, secs,
                   secs > 0 ? (double)(st.done + st.dead) / secs : 0.0);
}

/* systemd's STATUS= line: what the consumer has done so far. */
static void describe(char *buf, size_t len, void *c)
{
    walq_stats st;

    walq_consumer_stats(&st, c);
    snprintf(buf, len, "%llu jobs done, %llu retried, %llu dead", (unsigned long long)st.done,
             (unsigned long long)st.retried, (unsigned long long)st.dead);
}

/*
 * What the JSON log lines name: the group, the partition and the slot, as
 * the library names them in its messages' prefix.
 */
static void log_context(const walq_options *o)
{
    static char partition[32], slot[96], prefix[160];

    if (o->partitions > 1) {
        snprintf(partition, sizeof(partition), "%d/%d", o->partition, o->partitions);
        snprintf(slot, sizeof(slot), "walq_%s_%dof%d", o->group, o->partition, o->partitions);
        snprintf(prefix, sizeof(prefix), "group \"%s\" partition %d/%d: ", o->group, o->partition,
                 o->partitions);
    } else {
        snprintf(slot, sizeof(slot), "walq_%s", o->group);
        snprintf(prefix, sizeof(prefix), "group \"%s\": ", o->group);
    }
    walq__cli_log_context("consume", o->group, o->partitions > 1 ? partition : NULL, slot, prefix);
}

/* Opens the consumer and runs it until it stops: on a signal, or drained. */
static int run(consume_args *a, const walq__cmdline *cl)
{
    walq_consumer *c = NULL;
    walq__service svc;
    walq__web_config web = {a->http, a->ready_within_ms, a->opts.primary, a->opts.source};
    walq__reload r = {.t = &consume_settings,
                      .cl = cl,
                      .cur = a,
                      .size = sizeof(*a),
                      .pool_off = offsetof(consume_args, pool),
                      .level_off = offsetof(consume_args, opts.log_level),
                      .build = build,
                      .apply = apply_reload,
                      .log = walq__cli_log};
    int64_t t0;
    int rc;

    log_context(&a->opts);
    walq__service_init(&svc, describe);
    rc = walq_consumer_open(&c, &a->opts);
    if (rc != 0)
        return walq__cli_open_failed(rc);
    if (walq__service_start(&svc, c, &web, walq__consumer_metrics(c), stop_consumer, &r) != 0) {
        walq_consumer_free(c);
        return 1;
    }
    if (svc.notify.on)
        walq_consumer_watch(c, walq__notify_watch, &svc.notify,
                            walq__notify_interval_ms(&svc.notify));
    t0 = walq__mono_us();
    rc = walq_consumer_run(c);
    walq__service_stop(&svc);
    report(a, c, rc, walq__mono_us() - t0);
    walq_consumer_free(c);
    return rc == 0 ? 0 : 1;
}

int walq__cli_consume(int argc, char **argv)
{
    consume_args a;
    walq__cmdline cl;
    int status = parse_args(&a, &cl, argc, argv);

    if (status == GO_ON)
        status = check_args(&a, &cl);
    if (status == GO_ON)
        status = run(&a, &cl);
    walq__set_pool_free(&a.pool);
    walq__cmdline_free(&cl);
    return status;
}
