/*
 * Handlers that finish a job before start() returns: noop, and the C API's
 * callback.  Also the accessors of walq_job, which handlers see.
 */
#include <stdlib.h>

#include "handler.h"

int64_t walq_job_id(const walq_job *job)
{
    return job->id;
}

const char *walq_job_queue(const walq_job *job)
{
    return job->queue;
}

const char *walq_job_payload(const walq_job *job, size_t *len)
{
    if (len != NULL)
        *len = job->payload_len;
    return job->payload;
}

int walq_job_attempt(const walq_job *job)
{
    return job->attempts;
}

int walq_job_priority(const walq_job *job)
{
    return job->priority;
}

typedef struct inline_handler {
    walq__handler base;
    walq_handler_fn fn; /* NULL: noop */
    void *fn_arg;
} inline_handler;

static int inline_has_room(walq__handler *h)
{
    (void)h;
    return 1;
}

static int inline_start(walq__handler *h, walq__job *job, int64_t now)
{
    inline_handler *ih = (inline_handler *)h;
    char err[1024] = "";
    walq_verdict v;

    (void)now;
    if (ih->fn == NULL)
        return h->done(h->arg, job, WALQ__VERDICT_DONE, NULL);
    v = ih->fn(ih->fn_arg, job, err, sizeof(err));
    err[sizeof(err) - 1] = '\0';
    switch (v) {
    case WALQ_JOB_DONE:
        return h->done(h->arg, job, WALQ__VERDICT_DONE, NULL);
    case WALQ_JOB_RETRY:
        return h->done(h->arg, job, WALQ__VERDICT_RETRY, *err ? err : "handler asked for a retry");
    case WALQ_JOB_FAIL:
        break;
    }
    return h->done(h->arg, job, WALQ__VERDICT_FAIL, *err ? err : "handler failed");
}

static size_t inline_fds(walq__handler *h, struct pollfd *pfd, size_t room, int64_t now,
                         int64_t *wake_at)
{
    (void)h;
    (void)pfd;
    (void)room;
    (void)now;
    (void)wake_at;
    return 0;
}

static size_t inline_max_fds(walq__handler *h)
{
    (void)h;
    return 0;
}

static int inline_process(walq__handler *h, int64_t now)
{
    (void)h;
    (void)now;
    return 0;
}

static void inline_kill_all(walq__handler *h)
{
    (void)h;
}

static size_t inline_running(walq__handler *h)
{
    (void)h;
    return 0;
}

static void inline_free(walq__handler *h)
{
    free(h);
}

static const walq__handler_ops inline_ops = {inline_has_room, inline_start,   inline_fds,
                                             inline_max_fds,  inline_process, inline_kill_all,
                                             inline_running,  inline_free};

int walq__handler_callback_new(walq__handler **out, walq_handler_fn fn, void *arg)
{
    inline_handler *ih = calloc(1, sizeof(*ih));

    *out = NULL;
    if (ih == NULL)
        return walq__error(WALQ_ENOMEM, NULL, "out of memory");
    ih->base.ops = &inline_ops;
    ih->fn = fn;
    ih->fn_arg = arg;
    *out = &ih->base;
    return 0;
}

int walq__handler_noop_new(walq__handler **out)
{
    return walq__handler_callback_new(out, NULL, NULL);
}
