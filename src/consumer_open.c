/*
 * The consumer's public functions (walq.h) other than walq_consumer_run():
 * opening and freeing, reconfiguring while it runs, its stats, errors and
 * watch (consumer_int.h).
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "consumer_int.h"
#include "db.h"
#include "lsn.h"
#include "publication.h"

/*
 * What a reload may change while the consumer runs, with the names its log
 * gives them (docs/c-api.md lists them).  The other fields of the options
 * are fixed when the consumer is opened.
 */
#define RELOADED(XX)                                                                               \
    XX(concurrency, "concurrency", int)                                                            \
    XX(timeout_ms, "timeout_ms", int64_t)                                                          \
    XX(backoff_min_ms, "backoff_min_ms", int64_t)                                                  \
    XX(backoff_max_ms, "backoff_max_ms", int64_t)                                                  \
    XX(batch_size, "batch_size", int)                                                              \
    XX(ack_delay_ms, "ack_delay_ms", int64_t)                                                      \
    XX(max_in_flight, "max_in_flight", int)                                                        \
    XX(max_in_flight_bytes, "max_in_flight_bytes", int64_t)                                        \
    XX(log_level, "log_level", int)

void walq_consumer_stop(walq_consumer *c, int immediate)
{
    walq__reader_stop(&c->rd, immediate);
}

const char *walq_consumer_errmsg(const walq_consumer *c)
{
    return c->errmsg;
}

void walq_consumer_stats(walq_stats *out, const walq_consumer *c)
{
    /* A version-1 program calls it as (c, out); its out is writable. */
    if (walq__v1_consumer_is(out)) {
        const walq_consumer *v1_c = (const walq_consumer *)(const void *)out;

        out = (walq_stats *)(uintptr_t)c;
        c = v1_c;
    }
    *out = c->stats;
    out->reconnects = c->rd.reconnects;
    out->confirmed_lsn = c->rd.confirmed;
}

void walq_consumer_watch(walq_consumer *c, walq_watch_fn fn, void *payload, int64_t interval_ms)
{
    walq__watcher_set(&c->watcher, fn, payload, interval_ms);
}

walq__metrics *walq__consumer_metrics(walq_consumer *c)
{
    return c->m;
}

int walq_consumer_reconfigure(walq_consumer *c, const walq_options *opts)
{
    walq__options conf;
    int rc = walq__options_load(&conf, opts);
    char b = 'r';

    if (rc != 0)
        return rc;
    pthread_mutex_lock(&c->reconf_lock);
    c->reconf = conf.o;
    c->reconf_pending = 1;
    pthread_mutex_unlock(&c->reconf_lock);
    if (c->rd.wake[1] >= 0 && write(c->rd.wake[1], &b, 1) < 0) {
        /* The loop's wake pipe, as walq_consumer_stop() uses it: a full one wakes it too. */
    }
    return 0;
}

/*
 * Applies the options of walq_consumer_reconfigure(), if any came: what
 * runs keeps its limits (a handler its deadline), what starts from now on
 * has the new ones.  The wait grows with the handlers' slots.
 */
int walq__consumer_phase_settings(walq_consumer *c, walq__wait *w)
{
    walq__handler_limits lim;
    walq_options n;
    size_t fds;
    int pending, rc = 0;

    pthread_mutex_lock(&c->reconf_lock);
    pending = c->reconf_pending;
    n = c->reconf;
    c->reconf_pending = 0;
    pthread_mutex_unlock(&c->reconf_lock);
    if (!pending)
        return 0;
    lim = (walq__handler_limits){n.concurrency, n.timeout_ms * 1000, n.batch_size,
                                 n.ack_delay_ms * 1000};
    if (c->h->ops->set_limits != NULL && (rc = c->h->ops->set_limits(c->h, &lim)) < 0)
        return rc;
    if (rc == 1 && n.concurrency != c->o.concurrency) {
        walq__warn(&c->log,
                   "a coprocess handler stops no worker while it runs: concurrency %d takes a "
                   "restart; keeping %d workers",
                   n.concurrency, c->o.concurrency);
        n.concurrency = c->o.concurrency;
    }
#define WALQ__RELOAD_LOG(field, name, type)                                                        \
    if (n.field != c->o.field)                                                                     \
        walq__info(&c->log, "%s changed from %lld to %lld", name, (long long)c->o.field,           \
                   (long long)n.field);                                                            \
    c->o.field = n.field;
    RELOADED(WALQ__RELOAD_LOG)
#undef WALQ__RELOAD_LOG
    c->log.level = c->o.log_level;
    c->ack_delay_us = c->o.ack_delay_ms * 1000;
    c->sched.cfg.backoff_min_us = c->o.backoff_min_ms * 1000;
    c->sched.cfg.backoff_max_us = c->o.backoff_max_ms * 1000;
    c->sched.cfg.max_in_flight = (size_t)c->o.max_in_flight;
    c->sched.cfg.max_bytes = (size_t)c->o.max_in_flight_bytes;
    fds = 1 + c->h->ops->max_fds(c->h);
    if (w->cap < 2 + fds) {
        walq__wait bigger;

        if (walq__wait_init(&bigger, fds) != 0)
            return walq__error(WALQ_ENOMEM, NULL, "out of memory");
        walq__wait_free(w);
        *w = bigger;
    }
    return 0;
}

static char **copy_strv(const char *const *v, size_t n)
{
    char **out = calloc(n + 1, sizeof(*out));

    if (out == NULL)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        out[i] = walq__strdup(v[i]);
        if (out[i] == NULL) {
            for (size_t k = 0; k < i; k++)
                free(out[k]);
            free(out);
            return NULL;
        }
    }
    return out;
}

static void free_strv(char **v)
{
    if (v == NULL)
        return;
    for (char **p = v; *p; p++)
        free(*p);
    free(v);
}

/* The slot's name and the log's prefix: the group, and the partition if split. */
static int name_reader(walq_consumer *c)
{
    int k = c->o.partition, n = c->o.partitions > 0 ? c->o.partitions : 1, len;

    if (n == 1) {
        snprintf(c->slot, sizeof(c->slot), "walq_%s", c->group);
        snprintf(c->log.prefix, sizeof(c->log.prefix), "group \"%s\": ", c->group);
        return 0;
    }
    len = snprintf(c->slot, sizeof(c->slot), "walq_%s_%dof%d", c->group, k, n);
    if (len < 0 || (size_t)len >= sizeof(c->slot))
        return walq__error(WALQ_EINVAL,
                           "Slot names have at most 63 characters; choose a shorter group name.",
                           "consumer group name \"%s\" is too long for %d partitions", c->group, n);
    snprintf(c->log.prefix, sizeof(c->log.prefix), "group \"%s\" partition %d/%d: ", c->group, k,
             n);
    return 0;
}

int walq_consumer_open(walq_consumer **out, const walq_options *opts)
{
    walq_consumer *c;
    walq__options conf;
    size_t argc = 0, npass = 0;
    int rc, runs_program;

    *out = NULL;
    rc = walq__options_load(&conf, opts);
    if (rc != 0)
        return rc;
    /* From here on, the options in the current version's terms. */
    opts = &conf.o;
    runs_program = opts->handler == WALQ_HANDLER_EXEC || opts->handler == WALQ_HANDLER_COPROCESS;
    if (runs_program)
        while (opts->argv[argc])
            argc++;
    c = calloc(1, sizeof(*c));
    if (c == NULL)
        return walq__error(WALQ_ENOMEM, NULL, "out of memory");
    c->rd.wake[0] = c->rd.wake[1] = -1;
    pthread_mutex_init(&c->reconf_lock, NULL);
    c->o = *opts;
    c->source = walq__strdup(opts->source ? opts->source : "");
    c->primary = walq__strdup(opts->primary ? opts->primary : "");
    c->group = walq__strdup(opts->group);
    c->queues = copy_strv(opts->queues, opts->nqueues);
    c->argv = runs_program ? copy_strv(opts->argv, argc) : NULL;
    c->sql = walq__strdup(opts->sql);
    while (opts->pass_env != NULL && opts->pass_env[npass] != NULL)
        npass++;
    c->pass_env = npass ? copy_strv(opts->pass_env, npass) : NULL;
    c->o.pass_env = NULL; /* borrowed from the caller: c->pass_env is the copy */
    c->log.fn = opts->log;
    c->log.fn_v1 = conf.log_v1;
    c->log.arg = opts->log_payload;
    c->log.level = opts->log_level;
    c->route.queues = (const char *const *)c->queues;
    c->route.nqueues = opts->nqueues;
    c->route.partition = opts->partition;
    c->route.partitions = opts->partitions > 0 ? opts->partitions : 1;
    c->ack_delay_us = opts->ack_delay_ms * 1000;
    snprintf(c->plugin, sizeof(c->plugin), "%s", opts->plugin ? opts->plugin : "");
    c->o.plugin = NULL; /* borrowed from the caller: c->plugin is the copy */
    if (!c->source || !c->primary || !c->group || !c->queues || (runs_program && !c->argv) ||
        (opts->sql && !c->sql) || (npass && !c->pass_env))
        rc = walq__error(WALQ_ENOMEM, NULL, "out of memory");
    if (rc == 0)
        rc = name_reader(c);
    if (rc == 0 && (c->m = walq__metrics_new("consume", c->group, c->slot, c->route.partition,
                                             c->route.partitions, (const char *const *)c->queues,
                                             opts->nqueues)) == NULL)
        rc = walq__error(WALQ_ENOMEM, NULL, "out of memory");
    if (rc == 0)
        rc = walq__consumer_make_stages(c, &conf);
    if (rc == 0 && conf.version == 1)
        rc = walq__v1_consumer_add(c);
    if (rc != 0) {
        walq_consumer_free(c);
        return rc;
    }
    *out = c;
    return 0;
}

void walq_consumer_free(walq_consumer *c)
{
    if (c == NULL)
        return;
    walq__v1_consumer_del(c);
    if (c->h != NULL) {
        walq__consumer_reset_memory(c);
        c->h->ops->free(c->h);
    }
    walq__consumer_close_all(c);
    walq__sched_free(&c->sched);
    walq__route_free(&c->route);
    walq__ack_free(&c->ack);
    walq__reader_free(&c->rd);
    walq__metrics_free(c->m);
    free(c->tent);
    free(c->sql);
    free(c->source);
    free(c->primary);
    free(c->group);
    free_strv(c->queues);
    free_strv(c->argv);
    free_strv(c->pass_env);
    pthread_mutex_destroy(&c->reconf_lock);
    free(c);
}
