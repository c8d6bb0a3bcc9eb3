/*
 * The consumer's options: defaults, the versions accepted, conversion of
 * version 1 to the current struct, and the checks of every value.  The
 * consumer only builds itself from options that passed here.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common.h"
#include "options.h"

#define INIT_HINT "Initialise the options with WALQ_OPTIONS_INIT or walq_options_init()."
#define NEWER_HINT                                                                                 \
    "The program was built with a newer walq.h than this library: run it with the libwalq it "     \
    "was built with, or rebuild it."

int walq_options_init(walq_options *opts, unsigned int version)
{
    static const walq_options defaults = WALQ_OPTIONS_INIT;

    if (opts == NULL)
        return walq__error(WALQ_EINVAL, NULL, "walq_options_init() needs options to fill");
    if (version != WALQ_OPTIONS_VERSION)
        return walq__error(WALQ_EINVAL,
                           version > WALQ_OPTIONS_VERSION
                               ? NEWER_HINT
                               : "Pass WALQ_OPTIONS_VERSION, the version of the walq.h the "
                                 "program is compiled with.",
                           "walq_options_init() does not know options version %u; this library "
                           "fills version %d",
                           version, WALQ_OPTIONS_VERSION);
    *opts = defaults;
    return 0;
}

int walq__options_load(walq__options *out, const walq_options *opts)
{
    unsigned int version;
    int rc;

    memset(out, 0, sizeof(*out));
    if (opts == NULL)
        return walq__error(WALQ_EINVAL, INIT_HINT, "no options given");
    /* Every version starts with it; the rest of the layout depends on it. */
    memcpy(&version, opts, sizeof(version));
    if (version == 1) {
        rc = walq__options_from_v1(out, (const walq__options_v1 *)(const void *)opts);
        if (rc != 0)
            return rc;
    } else if (version == WALQ_OPTIONS_VERSION) {
        out->o = *opts;
        out->version = version;
    } else if (version == 0) {
        return walq__error(WALQ_EINVAL, INIT_HINT, "options have version 0, which is not one");
    } else {
        return walq__error(WALQ_EINVAL, NEWER_HINT,
                           "options have version %u, but this library knows versions 1 to %d",
                           version, WALQ_OPTIONS_VERSION);
    }
    return walq__options_check(out);
}

/*
 * A version-1 duration, seconds in a double, as milliseconds.  A positive
 * duration stays positive, so that a short timeout does not become "none".
 */
static int seconds_to_ms(int64_t *out, double seconds, const char *field)
{
    if (!(seconds >= 0 && seconds <= (double)(WALQ__OPTIONS_MAX_MS / 1000)))
        return walq__error(WALQ_EINVAL, NULL, "%s must be between 0 and %lld seconds, not %g",
                           field, (long long)(WALQ__OPTIONS_MAX_MS / 1000), seconds);
    *out = (int64_t)(seconds * 1000.0 + 0.5);
    if (*out == 0 && seconds > 0)
        *out = 1;
    return 0;
}

int walq__options_from_v1(walq__options *out, const walq__options_v1 *v1)
{
    static const walq_options defaults = WALQ_OPTIONS_INIT;
    walq_options *o = &out->o;
    int rc;

    memset(out, 0, sizeof(*out));
    out->version = 1;
    o->version = WALQ_OPTIONS_VERSION;
    o->source = v1->source;
    o->primary = v1->primary;
    o->group = v1->group;
    o->queues = v1->queues;
    o->nqueues = v1->nqueues;
    o->handler = v1->handler;
    o->argv = v1->argv;
    o->concurrency = v1->concurrency;
    o->drain = v1->drain;
    o->sql = v1->sql;
    out->callback_v1 = v1->callback;
    o->callback_payload = v1->callback_arg;
    o->coprocess_inflight = v1->coprocess_inflight;
    o->batch_size = v1->batch_size;
    o->ack_delay_ms = v1->ack_delay_ms;
    o->max_in_flight = v1->max_in_flight;
    out->log_v1 = v1->log;
    o->log_payload = v1->log_arg;
    o->log_level = v1->log_level;
    o->partition = v1->partition;
    o->partitions = v1->partitions;
    o->keep_outcomes = v1->keep_outcomes;
    /* Version 1 had none of these: the defaults. */
    o->primary_timeout_ms = defaults.primary_timeout_ms;
    o->max_in_flight_bytes = defaults.max_in_flight_bytes;
    o->plugin = defaults.plugin;
    o->failover_slot = defaults.failover_slot;
    o->pass_env = defaults.pass_env;
    if ((rc = seconds_to_ms(&o->timeout_ms, v1->timeout, "timeout")) != 0 ||
        (rc = seconds_to_ms(&o->backoff_min_ms, v1->backoff_min, "backoff_min")) != 0 ||
        (rc = seconds_to_ms(&o->backoff_max_ms, v1->backoff_max, "backoff_max")) != 0 ||
        (rc = seconds_to_ms(&o->status_interval_ms, v1->status_interval, "status_interval")) != 0 ||
        (rc = seconds_to_ms(&o->timer_horizon_ms, v1->timer_horizon, "timer_horizon")) != 0)
        return rc;
    return 0;
}

/* A handler that cannot be found fails every job: say so before starting. */
static int check_program(const char *prog)
{
    const char *path;
    char buf[4096];

    if (strchr(prog, '/') != NULL) {
        if (access(prog, X_OK) == 0)
            return 0;
        return walq__error(WALQ_EINVAL, "Give the path of an executable program after \"--\".",
                           "handler program \"%s\" is not executable: %s", prog, strerror(errno));
    }
    path = getenv("PATH");
    if (path == NULL)
        path = "/usr/local/bin:/usr/bin:/bin";
    while (*path) {
        size_t n = strcspn(path, ":");
        struct stat sb;

        snprintf(buf, sizeof(buf), "%.*s/%s", (int)n, n ? path : ".", prog);
        if (stat(buf, &sb) == 0 && S_ISREG(sb.st_mode) && access(buf, X_OK) == 0)
            return 0;
        path += n;
        if (*path == ':')
            path++;
    }
    return walq__error(WALQ_EINVAL, "Give the path of the program, or add its directory to PATH.",
                       "handler program \"%s\" was not found in PATH", prog);
}

static int check_handler(const walq__options *opts)
{
    const walq_options *o = &opts->o;

    switch (o->handler) {
    case WALQ_HANDLER_EXEC:
    case WALQ_HANDLER_COPROCESS:
        if (o->argv == NULL || o->argv[0] == NULL)
            return walq__error(WALQ_EINVAL, "Give the handler program after \"--\", or use --noop.",
                               "no handler program given");
        if (o->handler == WALQ_HANDLER_COPROCESS &&
            (o->coprocess_inflight < 1 || o->coprocess_inflight > 100000))
            return walq__error(WALQ_EINVAL, NULL,
                               "coprocess_inflight must be between 1 and 100000, not %d",
                               o->coprocess_inflight);
        return check_program(o->argv[0]);
    case WALQ_HANDLER_SQL:
        if (o->sql == NULL || o->sql[0] == '\0')
            return walq__error(WALQ_EINVAL, "Give the statement with --sql.",
                               "the sql handler needs a statement");
        return 0;
    case WALQ_HANDLER_CALLBACK:
        if (o->callback == NULL && opts->callback_v1 == NULL)
            return walq__error(WALQ_EINVAL, "Set the callback field of the options.",
                               "the callback handler needs a function");
        return 0;
    case WALQ_HANDLER_NOOP:
        return 0;
    }
    return walq__error(WALQ_EINVAL, NULL, "unknown handler kind %d", (int)o->handler);
}

static int check_duration(int64_t ms, int64_t min, const char *field)
{
    if (ms < min || ms > WALQ__OPTIONS_MAX_MS)
        return walq__error(WALQ_EINVAL, NULL, "%s must be between %lld and %lld, not %lld", field,
                           (long long)min, (long long)WALQ__OPTIONS_MAX_MS, (long long)ms);
    return 0;
}

static int check_positive(int value, const char *field)
{
    if (value < 1)
        return walq__error(WALQ_EINVAL, NULL, "%s must be at least 1, not %d", field, value);
    return 0;
}

int walq__options_check(const walq__options *opts)
{
    const walq_options *o = &opts->o;
    int rc;

    if (!walq_group_name_valid(o->group))
        return walq__error(WALQ_EINVAL,
                           "Use lower-case letters, digits and underscores, at most 58 of them.",
                           "invalid consumer group name \"%s\"", o->group ? o->group : "");
    if (o->nqueues == 0 || o->queues == NULL)
        return walq__error(WALQ_EINVAL, "Name at least one queue with --queue.",
                           "consumer group \"%s\" has no queues", o->group);
    for (size_t i = 0; i < o->nqueues; i++)
        if (o->queues[i] == NULL || o->queues[i][0] == '\0')
            return walq__error(WALQ_EINVAL, NULL, "queue names must not be empty");
    if ((rc = check_handler(opts)) != 0)
        return rc;
    if (o->partitions < 0 || o->partitions > 1024 || o->partition < 0 ||
        o->partition >= (o->partitions > 0 ? o->partitions : 1))
        return walq__error(WALQ_EINVAL,
                           "Give the partition as K/N with N from 1 to 1024 and K from 0 to N-1.",
                           "invalid partition %d of %d", o->partition, o->partitions);
    if (o->concurrency < 1 || o->concurrency > 4096)
        return walq__error(WALQ_EINVAL, NULL, "concurrency must be between 1 and 4096, not %d",
                           o->concurrency);
    if ((rc = check_positive(o->batch_size, "batch_size")) != 0 ||
        (rc = check_positive(o->max_in_flight, "max_in_flight")) != 0 ||
        (rc = check_duration(o->timeout_ms, 0, "timeout_ms")) != 0 ||
        (rc = check_duration(o->backoff_min_ms, 0, "backoff_min_ms")) != 0 ||
        (rc = check_duration(o->backoff_max_ms, 0, "backoff_max_ms")) != 0 ||
        (rc = check_duration(o->ack_delay_ms, 0, "ack_delay_ms")) != 0 ||
        (rc = check_duration(o->status_interval_ms, 1, "status_interval_ms")) != 0 ||
        (rc = check_duration(o->timer_horizon_ms, 100, "timer_horizon_ms")) != 0 ||
        (rc = check_duration(o->primary_timeout_ms, 0, "primary_timeout_ms")) != 0)
        return rc;
    if (o->primary_timeout_ms != 0 && o->primary_timeout_ms < 100)
        return walq__error(WALQ_EINVAL, "Give 0 for no limit, or at least 100 milliseconds.",
                           "primary_timeout_ms must not be %lld", (long long)o->primary_timeout_ms);
    if (o->plugin != NULL && o->plugin[0] != '\0' && strcmp(o->plugin, "auto") != 0 &&
        strcmp(o->plugin, "pgoutput") != 0 && strcmp(o->plugin, "wal2json") != 0)
        return walq__error(WALQ_EINVAL, "Give pgoutput, wal2json or auto.",
                           "unknown output plugin \"%s\"", o->plugin);
    for (const char *const *p = o->pass_env; p != NULL && *p != NULL; p++) {
        const char *name = *p;
        size_t n = strspn(name, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_");

        if (n == 0 || (name[0] >= '0' && name[0] <= '9') ||
            (name[n] != '\0' && strcmp(name + n, "*") != 0))
            return walq__error(WALQ_EINVAL,
                               "Give the name of an environment variable (letters, digits and "
                               "underscores), or a prefix of names followed by \"*\".",
                               "invalid pass_env name \"%s\"", name);
    }
    if (o->max_in_flight_bytes < 1)
        return walq__error(WALQ_EINVAL, NULL, "max_in_flight_bytes must be positive, not %lld",
                           (long long)o->max_in_flight_bytes);
    if (o->backoff_max_ms < o->backoff_min_ms)
        return walq__error(WALQ_EINVAL, NULL,
                           "backoff_max_ms (%lld) must not be less than backoff_min_ms (%lld)",
                           (long long)o->backoff_max_ms, (long long)o->backoff_min_ms);
    return 0;
}

/* A few at most: a lock and an array do. */
static pthread_mutex_t v1_lock = PTHREAD_MUTEX_INITIALIZER;
static const walq_consumer **v1_consumers;
static size_t n_v1, cap_v1;

int walq__v1_consumer_add(const walq_consumer *c)
{
    int rc = 0;

    pthread_mutex_lock(&v1_lock);
    if (n_v1 == cap_v1) {
        size_t cap = cap_v1 ? cap_v1 * 2 : 8;
        const walq_consumer **p = realloc(v1_consumers, cap * sizeof(*p));

        if (p == NULL) {
            rc = walq__error(WALQ_ENOMEM, NULL, "out of memory");
            goto done;
        }
        v1_consumers = p;
        cap_v1 = cap;
    }
    v1_consumers[n_v1++] = c;
done:
    pthread_mutex_unlock(&v1_lock);
    return rc;
}

void walq__v1_consumer_del(const walq_consumer *c)
{
    pthread_mutex_lock(&v1_lock);
    for (size_t i = 0; i < n_v1; i++) {
        if (v1_consumers[i] == c) {
            v1_consumers[i] = v1_consumers[--n_v1];
            break;
        }
    }
    if (n_v1 == 0) {
        free(v1_consumers);
        v1_consumers = NULL;
        cap_v1 = 0;
    }
    pthread_mutex_unlock(&v1_lock);
}

int walq__v1_consumer_is(const void *p)
{
    int found = 0;

    pthread_mutex_lock(&v1_lock);
    for (size_t i = 0; i < n_v1 && !found; i++)
        found = (const void *)v1_consumers[i] == p;
    pthread_mutex_unlock(&v1_lock);
    return found;
}
