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

static const char *const plugin_options[] = {
    "format-version", "2", "include-xids", "1", "include-timestamp", "1", "include-lsn", "1",
    /* Jobs are read by column name and JSON kind. */
    "include-types", "0", "add-tables", "walq.jobs,walq_jobs.*,walq.commands", "actions", "insert",
    NULL};

/* The stages, configured from the options (in the current version's terms). */
static int make_stages(walq_consumer *c, const walq__options *conf)
{
    const walq_options *o = &c->o;
    walq__reader_config rcfg = {c->source,
                                "walq consume",
                                c->slot,
                                plugin_options,
                                o->status_interval_ms * 1000,
                                o->drain,
                                &walq__consumer_reader_ops,
                                c,
                                &c->log,
                                c->slot,
                                o->failover_slot};
    walq__sched_config sc = {(size_t)o->max_in_flight,   (size_t)o->max_in_flight_bytes,
                             o->timer_horizon_ms * 1000, o->backoff_min_ms * 1000,
                             o->backoff_max_ms * 1000,   &c->log};
    int rc;

    /* A little longer than the server's own statement and lock timeouts. */
    c->waiter.timeout_us = o->primary_timeout_ms ? o->primary_timeout_ms * 1000 + 2000000 : 0;
    /*
     * A lease through a pooler outlasts two waits for the primary, so that
     * one slow answer does not lose the reader; 30 s at least.
     */
    c->lease_us = 2 * c->waiter.timeout_us > 30000000 ? 2 * c->waiter.timeout_us : 30000000;
    snprintf(c->lease_text, sizeof(c->lease_text), "%lld milliseconds",
             (long long)(c->lease_us / 1000));
    c->waiter.tick = walq__consumer_wait_tick;
    c->waiter.arg = c;
    c->rg = (walq__registry){c->group,
                             c->slot,
                             c->route.partition,
                             c->route.partitions,
                             (const char *const *)c->queues,
                             o->nqueues,
                             &c->log,
                             o->primary_timeout_ms,
                             0};
    walq__sched_init(&c->sched, &sc, (uint64_t)walq__wall_us() ^ ((uint64_t)getpid() << 32));
    rc = walq__reader_init(&c->rd, &rcfg);
    if (rc != 0)
        return rc;
    switch (o->handler) {
    case WALQ_HANDLER_EXEC:
        rc = walq__handler_exec_new(&c->h, c->argv, o->concurrency, (double)o->timeout_ms / 1e3);
        break;
    case WALQ_HANDLER_COPROCESS:
        rc = walq__handler_coproc_new(&c->h, c->argv, o->concurrency, o->coprocess_inflight,
                                      (double)o->timeout_ms / 1e3);
        break;
    case WALQ_HANDLER_CALLBACK:
        rc = walq__handler_callback_new(&c->h, o->callback, conf->callback_v1, o->callback_payload);
        break;
    case WALQ_HANDLER_SQL:
        rc = walq__handler_sql_new(&c->h, c->group, c->sql, o->batch_size, c->ack_delay_us);
        break;
    default:
        rc = walq__handler_noop_new(&c->h);
        break;
    }
    if (rc != 0)
        return rc;
    c->h->done = walq__consumer_on_done;
    c->h->decided = walq__consumer_on_decided;
    c->h->recorded = walq__consumer_on_recorded;
    c->h->abandon = walq__consumer_on_abandon;
    c->h->arg = c;
    c->h->log = &c->log;
    c->h->group = c->group;
    c->h->pass_env = (const char *const *)c->pass_env;
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
        rc = make_stages(c, &conf);
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

/* ------------------------------------------------------------------ */
/* Running                                                             */

static void set_errmsg(walq_consumer *c)
{
    snprintf(c->errmsg, sizeof(c->errmsg), "%s", walq_last_error());
}

/*
 * A lease is let go at the end, so that a consumer standing by takes the
 * reader over at once (unless another took it meanwhile: then the epoch is
 * not this process's, and nothing changes).
 */
static void release_lease(walq_consumer *c)
{
    int held;

    if (c->pooled && c->epoch > 0 && c->pconn != NULL && PQstatus(c->pconn) == CONNECTION_OK &&
        !c->ack.inflight && walq__reg_lease(&c->rg, c->pconn, c->epoch, NULL, &held) != 0)
        walq__debug(&c->log, "%s", walq_last_error());
}

/*
 * Set-up failed after both servers were reached (the primary read-only, a
 * lock timeout, a connection lost meanwhile): tried again with backoff, as
 * in the loop.  A failure to connect in the first place is the caller's to
 * see.  Returns whether to try again.
 */
static int setup_again(walq_consumer *c, int rc, walq__retry *again)
{
    if (rc != WALQ_ECONN || !c->reached || c->rd.stop_req)
        return 0;
    walq__retry_failed(again, &c->log);
    while (!walq__retry_due(again, walq__mono_us())) {
        walq__consumer_watch_state(c, WALQ_STATE_RECONNECTING);
        if (walq__reader_nap(&c->rd, 100))
            return 0;
    }
    return 1;
}

int walq_consumer_run(walq_consumer *c)
{
    const walq__waiter *old = walq__waiter_set(&c->waiter);
    walq__retry again = {0};
    int rc;

    c->errmsg[0] = '\0';
    c->reached = 0;
    for (;;) {
        rc = walq__consumer_setup(c);
        if (rc == 0)
            rc = walq__consumer_loop(c);
        if (!((rc == WALQ_ESLOT && c->slot_gone) || c->fenced || setup_again(c, rc, &again)) ||
            c->rd.stop_req)
            break;
        /* Everything recorded is safe in the table; the rest comes back. */
        walq__consumer_reset_memory(c);
        walq__consumer_close_all(c);
    }
    if (rc != 0)
        set_errmsg(c);
    walq__consumer_reset_memory(c);
    release_lease(c);
    walq__consumer_close_all(c);
    walq__waiter_set(old);
    return rc;
}
