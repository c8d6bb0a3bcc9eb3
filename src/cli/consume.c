/*
 * `walq consume`: the command line in, a consumer of libwalq run until it
 * stops, a summary out.  Durations are seconds on the command line and
 * milliseconds in walq_options.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/consume.h"
#include "cli/web.h"
#include "cli/notify.h"
#include "walq.h"

#define EXIT_USAGE 2

#define progname walq__progname

#define usage_error(...) walq__cli_usage(NULL, NULL, __VA_ARGS__)

/* What parse_args() and check_args() return when the command goes on. */
#define GO_ON (-1)

/* The command line: the consumer's options, and the queues they point to. */
typedef struct consume_args {
    walq_options opts;
    const char **queues; /* owned; opts.queues once they are checked */
    size_t nqueues;
    char **program; /* after "--": the handler program and its arguments */
    int nprogram;
    const char *http;        /* --http ADDR:PORT, or NULL */
    int64_t ready_within_ms; /* --ready-within; 0: the default */
    const char **pass_env; /* owned: the --pass-env names, NULL-terminated */
    size_t npass_env;
} consume_args;

static void stop_consumer(void *c, int immediate)
{
    walq_consumer_stop(c, immediate);
}

/* Seconds, as the command line takes them, into the milliseconds of the options. */
static int parse_seconds(const char *s, double min, int min_ok, int64_t *ms)
{
    char *end;
    double v;

    errno = 0;
    v = strtod(s, &end);
    /* Written so that "nan" is refused too. */
    if (errno != 0 || end == s || *end != '\0' || !(v >= min && v <= 1e7) || (!min_ok && v == min))
        return -1;
    *ms = (int64_t)(v * 1000.0 + 0.5);
    /* A positive duration stays positive: a short --timeout is not "no limit". */
    if (*ms == 0 && v > 0)
        *ms = 1;
    return 0;
}

static int parse_int(const char *s, int lo, int hi, int *out)
{
    char *end;
    long v;

    errno = 0;
    v = strtol(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < lo || v > hi)
        return -1;
    *out = (int)v;
    return 0;
}

static void consume_help(void)
{
    printf("Usage: %s consume --group G --queue Q [--queue Q2 ...] [OPTIONS] -- PROGRAM [ARGS]\n"
           "       %s consume --group G --queue Q --coprocess [OPTIONS] -- PROGRAM [ARGS]\n"
           "       %s consume --group G --queue Q --sql STATEMENT [OPTIONS]\n"
           "       %s consume --group G --queue Q --noop [OPTIONS]\n\n"
           "Runs PROGRAM for every job of the queues, reading the jobs from the group's\n"
           "replication slot (walq_G).  The payload is on the program's standard input;\n"
           "WALQ_JOB_ID, WALQ_QUEUE, WALQ_GROUP and WALQ_ATTEMPT are in its environment,\n"
           "which is walq's without the variables whose names start with PG (libpq's\n"
           "passwords, password files and connection settings) unless --pass-env names them.\n"
           "Exit 0 marks the job done, exit 75 asks for a retry; any other exit or a\n"
           "signal is a failure, retried until the job's max_attempts, then the job is dead.\n\n"
           "Options:\n"
           "  --group NAME            consumer group: lower-case letters, digits, _\n"
           "  --queue NAME            a queue to read (repeatable)\n"
           "  --partition K/N         read partition K (0..N-1) of a group split over N\n"
           "                          readers, with its own slot walq_G_KofN; job j is in\n"
           "                          partition walq.partition_of(j, N)\n"
           "  --concurrency N         handlers running at once (default 1)\n"
           "  --drain                 exit once the jobs committed before the start are done\n"
           "  --keep-outcomes         accepted for compatibility: every outcome is kept\n"
           "                          until the retention removes its job\n"
           "  --noop                  record every job done without running anything\n"
           "  --coprocess             run --concurrency long-lived PROGRAMs that take jobs\n"
           "                          as JSON lines on stdin and reply on stdout\n"
           "  --coprocess-inflight N  jobs in flight per coprocess worker (default 16)\n"
           "  --sql STATEMENT         run STATEMENT per job in the ack transaction, with\n"
           "                          $1 = payload (jsonb) and $2 = job id (bigint)\n"
           "  --pass-env NAME         give handlers the variable NAME of walq's environment\n"
           "                          although it starts with PG (repeatable; NAME* for\n"
           "                          every variable that begins with NAME)\n"
           "  --timeout SECONDS       kill a handler running longer (default: no limit)\n"
           "  --backoff-min SECONDS   first retry delay (default 1)\n"
           "  --backoff-max SECONDS   longest retry delay (default 600)\n"
           "  --batch-size N          outcomes per ack transaction (default 1000)\n"
           "  --max-in-flight N       jobs in memory before reading pauses (default 10000)\n"
           "  --max-in-flight-bytes N payload bytes in memory before reading pauses\n"
           "                          (default 268435456, 256 MiB)\n"
           "  --primary-timeout SEC   longest wait for one answer of the primary before\n"
           "                          walq reconnects (default 10; 0: no limit)\n"
           "  --status-interval SEC   seconds between status updates (default 10)\n"
           "  --plugin NAME           output plugin of a new slot: pgoutput (the default,\n"
           "                          allowed on every server) or wal2json; a slot that\n"
           "                          exists keeps its own (default: $WALQ_PLUGIN, or auto)\n"
           "  --failover-slot         make the slot a failover slot (PostgreSQL 17+): a\n"
           "                          standby with sync_replication_slots keeps it, and\n"
           "                          the group reads on from it once it is promoted\n"
           "  --timer-horizon SEC     scheduled jobs due within this are kept in memory;\n"
           "                          later ones are read from the table nearer their\n"
           "                          time (default 60)\n"
           "  --source CONNINFO       server with the slot (default: libpq environment)\n"
           "  --primary CONNINFO      server taking the outcomes (default: libpq environment)\n"
           "  --dbname CONNINFO       both of the above\n"
           "  --http ADDR:PORT        serve /metrics, /healthz, /readyz and a status page\n"
           "                          at / (e.g. 127.0.0.1:9187; default: off)\n"
           "  --ready-within SEC      /readyz answers 200 while the consumer has streamed\n"
           "                          and acked within SEC seconds (default 60)\n"
           "  --verbose, --quiet      more or less logging\n"
           "  --log-format FORMAT     text (the default) or json: one JSON object per line\n"
           "                          on standard error, for log collectors\n\n"
           "A second consume of the same group (and partition) stands by while the first\n"
           "runs and takes over when it stops.  SIGTERM or SIGINT finishes the running\n"
           "jobs, records them and exits 0; a second signal exits at once.\n",
           progname, progname, progname, progname);
}

enum {
    O_GROUP = 256,
    O_HTTP_ADDR,
    O_READY_WITHIN,
    O_LOG_FORMAT,
    O_SQL,
    O_HORIZON,
    O_QUEUE,
    O_CONC,
    O_DRAIN,
    O_NOOP,
    O_TIMEOUT,
    O_BMIN,
    O_BMAX,
    O_BATCH,
    O_INFLIGHT,
    O_INFLIGHT_BYTES,
    O_PRIMARY_TIMEOUT,
    O_STATUS,
    O_SOURCE,
    O_PRIMARY,
    O_DBNAME,
    O_VERBOSE,
    O_QUIET,
    O_ACKDELAY,
    O_COPROC,
    O_COPROC_INFLIGHT,
    O_PARTITION,
    O_KEEP,
    O_PLUGIN,
    O_FAILOVER,
    O_PASS_ENV
};
static const struct option consume_longopts[] = {
    {"group", required_argument, NULL, O_GROUP},
    {"queue", required_argument, NULL, O_QUEUE},
    {"partition", required_argument, NULL, O_PARTITION},
    {"concurrency", required_argument, NULL, O_CONC},
    {"drain", no_argument, NULL, O_DRAIN},
    {"keep-outcomes", no_argument, NULL, O_KEEP},
    {"noop", no_argument, NULL, O_NOOP},
    {"coprocess", no_argument, NULL, O_COPROC},
    {"coprocess-inflight", required_argument, NULL, O_COPROC_INFLIGHT},
    {"sql", required_argument, NULL, O_SQL},
    {"timer-horizon", required_argument, NULL, O_HORIZON},
    {"timeout", required_argument, NULL, O_TIMEOUT},
    {"backoff-min", required_argument, NULL, O_BMIN},
    {"backoff-max", required_argument, NULL, O_BMAX},
    {"batch-size", required_argument, NULL, O_BATCH},
    {"ack-delay-ms", required_argument, NULL, O_ACKDELAY},
    {"max-in-flight", required_argument, NULL, O_INFLIGHT},
    {"max-in-flight-bytes", required_argument, NULL, O_INFLIGHT_BYTES},
    {"primary-timeout", required_argument, NULL, O_PRIMARY_TIMEOUT},
    {"status-interval", required_argument, NULL, O_STATUS},
    {"plugin", required_argument, NULL, O_PLUGIN},
    {"failover-slot", no_argument, NULL, O_FAILOVER},
    {"pass-env", required_argument, NULL, O_PASS_ENV},
    {"source", required_argument, NULL, O_SOURCE},
    {"primary", required_argument, NULL, O_PRIMARY},
    {"dbname", required_argument, NULL, O_DBNAME},
    {"verbose", no_argument, NULL, O_VERBOSE},
    {"quiet", no_argument, NULL, O_QUIET},
    {"log-format", required_argument, NULL, O_LOG_FORMAT},
    {"http", required_argument, NULL, O_HTTP_ADDR},
    {"ready-within", required_argument, NULL, O_READY_WITHIN},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0}};

/*
 * Reads the options into a.  GO_ON, or the exit status: 0 after --help, 2
 * after a usage error, which it has printed.
 */
static int parse_args(consume_args *a, int argc, char **argv)
{
    walq_options *o = &a->opts;
    int opt;

    while ((opt = getopt_long(argc, argv, "+h", consume_longopts, NULL)) != -1) {
        const char *bad = NULL;
        int n;

        switch (opt) {
        case O_GROUP:
            o->group = optarg;
            break;
        case O_QUEUE:
            a->queues[a->nqueues++] = optarg;
            break;
        case O_PARTITION: {
            char extra;

            if (sscanf(optarg, "%d/%d%c", &o->partition, &o->partitions, &extra) != 2 ||
                o->partitions < 1 || o->partitions > 1024 || o->partition < 0 ||
                o->partition >= o->partitions)
                bad = "--partition takes K/N, with N from 1 to 1024 and K from 0 to N-1";
            break;
        }

        case O_CONC:
            if (parse_int(optarg, 1, 4096, &o->concurrency))
                bad = "--concurrency takes a whole number from 1 to 4096";
            break;
        case O_KEEP:
            o->keep_outcomes = 1;
            break;
        case O_DRAIN:
            o->drain = 1;
            break;
        case O_NOOP:
            o->handler = WALQ_HANDLER_NOOP;
            break;
        case O_COPROC:
            o->handler = WALQ_HANDLER_COPROCESS;
            break;
        case O_COPROC_INFLIGHT:
            if (parse_int(optarg, 1, 100000, &o->coprocess_inflight))
                bad = "--coprocess-inflight takes a whole number from 1 to 100000";
            break;
        case O_SQL:
            o->handler = WALQ_HANDLER_SQL;
            o->sql = optarg;
            break;
        case O_HORIZON:
            if (parse_seconds(optarg, 0.1, 1, &o->timer_horizon_ms))
                bad = "--timer-horizon takes seconds, at least 0.1";
            break;
        case O_TIMEOUT:
            if (parse_seconds(optarg, 0, 1, &o->timeout_ms))
                bad = "--timeout takes seconds";
            break;
        case O_BMIN:
            if (parse_seconds(optarg, 0, 1, &o->backoff_min_ms))
                bad = "--backoff-min takes seconds";
            break;
        case O_BMAX:
            if (parse_seconds(optarg, 0, 1, &o->backoff_max_ms))
                bad = "--backoff-max takes seconds";
            break;
        case O_BATCH:
            if (parse_int(optarg, 1, 100000, &o->batch_size))
                bad = "--batch-size takes a whole number from 1 to 100000";
            break;
        case O_ACKDELAY:
            if (parse_int(optarg, 0, 60000, &n))
                bad = "--ack-delay-ms takes milliseconds from 0 to 60000";
            else
                o->ack_delay_ms = n;
            break;
        case O_INFLIGHT_BYTES: {
            char *end;
            long long v;

            errno = 0;
            v = strtoll(optarg, &end, 10);
            if (errno != 0 || end == optarg || *end != '\0' || v < 1)
                bad = "--max-in-flight-bytes takes a positive whole number of bytes";
            else
                o->max_in_flight_bytes = v;
            break;
        }
        case O_PRIMARY_TIMEOUT:
            if (parse_seconds(optarg, 0, 1, &o->primary_timeout_ms) ||
                (o->primary_timeout_ms != 0 && o->primary_timeout_ms < 100))
                bad = "--primary-timeout takes seconds, 0 for no limit or at least 0.1";
            break;
        case O_INFLIGHT:
            if (parse_int(optarg, 1, 10000000, &o->max_in_flight))
                bad = "--max-in-flight takes a whole number from 1 to 10000000";
            break;
        case O_STATUS:
            if (parse_seconds(optarg, 0, 0, &o->status_interval_ms))
                bad = "--status-interval takes seconds above 0";
            break;
        case O_PLUGIN:
            if (strcmp(optarg, "pgoutput") != 0 && strcmp(optarg, "wal2json") != 0 &&
                strcmp(optarg, "auto") != 0)
                bad = "--plugin takes pgoutput, wal2json or auto";
            else
                o->plugin = optarg;
            break;
        case O_FAILOVER:
            o->failover_slot = 1;
            break;
        case O_PASS_ENV:
            a->pass_env[a->npass_env++] = optarg;
            o->pass_env = a->pass_env;
            break;
        case O_SOURCE:
            o->source = optarg;
            break;
        case O_PRIMARY:
            o->primary = optarg;
            break;
        case O_DBNAME:
            o->source = o->primary = optarg;
            break;
        case O_VERBOSE:
            o->log_level = WALQ_LOG_DEBUG;
            break;
        case O_QUIET:
            o->log_level = WALQ_LOG_WARNING;
            break;
        case O_LOG_FORMAT:
            if (walq__cli_log_format(optarg) != 0)
                bad = "--log-format takes text or json";
            break;
        case O_HTTP_ADDR:
            if (walq__web_check_listen(optarg) != 0)
                return EXIT_USAGE;
            a->http = optarg;
            break;
        case O_READY_WITHIN:
            if (parse_seconds(optarg, 0, 0, &a->ready_within_ms))
                bad = "--ready-within takes seconds above 0";
            break;
        case 'h':
            consume_help();
            return 0;
        default:
            usage_error("%s", "invalid option for \"consume\"");
            return EXIT_USAGE;
        }
        if (bad != NULL) {
            usage_error("%s, not \"%s\"", bad, optarg);
            return EXIT_USAGE;
        }
    }
    a->program = argv + optind;
    a->nprogram = argc - optind;
    return GO_ON;
}

/*
 * What the command line must say before the library is asked: a group, a
 * queue, and a handler program exactly when the handler runs one.  GO_ON,
 * or the exit status 2 after printing the usage error.
 */
static int check_args(consume_args *a)
{
    walq_options *o = &a->opts;
    int runs_program = o->handler == WALQ_HANDLER_EXEC || o->handler == WALQ_HANDLER_COPROCESS;

    if (o->group == NULL) {
        usage_error("%s", "consume needs --group NAME");
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
    if (a->nqueues == 0) {
        usage_error("%s", "consume needs at least one --queue NAME");
        return EXIT_USAGE;
    }
    if (runs_program && a->nprogram == 0) {
        usage_error("%s", "give the handler after \"--\" (consume ... -- PROGRAM [ARGS]), "
                          "--sql STATEMENT or --noop");
        return EXIT_USAGE;
    }
    if (!runs_program && a->nprogram > 0) {
        usage_error("%s", "--noop and --sql take no handler program");
        return EXIT_USAGE;
    }
    o->queues = a->queues;
    o->nqueues = a->nqueues;
    o->argv = (const char *const *)a->program;
    return GO_ON;
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
/* --http: the consumer's metrics and status page, answered on threads of their own. */
static int start_web(const consume_args *a, walq_consumer *c, walq__web **web)
{
    walq__web_config cfg = {a->http, a->ready_within_ms, a->opts.primary, a->opts.source};

    return walq__web_start(web, &cfg, walq__consumer_metrics(c));
}

static int run(const consume_args *a)
{
    walq_consumer *c = NULL;
    walq__web *web = NULL;
    walq__notify notify;
    int64_t t0;
    int rc;

    log_context(&a->opts);
    rc = walq_consumer_open(&c, &a->opts);
    if (rc != 0)
        return walq__cli_open_failed(rc);
    if (a->http != NULL && start_web(a, c, &web) != 0) {
        walq_consumer_free(c);
        return 1;
    }
    walq__cli_on_stop(stop_consumer, c);
    walq__notify_init(&notify, describe, c);
    if (notify.on)
        walq_consumer_watch(c, walq__notify_watch, &notify, walq__notify_interval_ms(&notify));
    t0 = walq__mono_us();
    rc = walq_consumer_run(c);
    walq__notify_stopping(&notify);
    report(a, c, rc, walq__mono_us() - t0);
    walq__cli_on_stop(NULL, NULL);
    walq__web_stop(web);
    walq_consumer_free(c);
    return rc == 0 ? 0 : 1;
}

int walq__cli_consume(int argc, char **argv)
{
    consume_args a = {.opts = WALQ_OPTIONS_INIT};
    int status;

    /* At most one queue, and one --pass-env name, per argument. */
    a.queues = calloc((size_t)argc + 1, sizeof(*a.queues));
    a.pass_env = calloc((size_t)argc + 1, sizeof(*a.pass_env));
    if (a.queues == NULL || a.pass_env == NULL) {
        free(a.queues);
        free(a.pass_env);
        return 1;
    }
    a.opts.log = walq__cli_log;
    /* The environment's choice, which --plugin overrides. */
    a.opts.plugin = getenv("WALQ_PLUGIN");
    if (a.opts.plugin != NULL && a.opts.plugin[0] != '\0' &&
        strcmp(a.opts.plugin, "pgoutput") != 0 && strcmp(a.opts.plugin, "wal2json") != 0 &&
        strcmp(a.opts.plugin, "auto") != 0) {
        usage_error("WALQ_PLUGIN takes pgoutput, wal2json or auto, not \"%s\"", a.opts.plugin);
        free(a.queues);
        free(a.pass_env);
        return EXIT_USAGE;
    }
    status = parse_args(&a, argc, argv);
    if (status == GO_ON)
        status = check_args(&a);
    if (status == GO_ON)
        status = run(&a);
    free(a.queues);
    free(a.pass_env);
    return status;
}
