/*
 * Handlers that finish a job before start() returns: noop, and the C API's
 * callback.  Also the accessors of walq_job, which handlers see.
 */
#include <stdio.h>
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
    walq_handler_fn fn;        /* NULL: noop, or a version-1 function */
    walq__handler_fn_v1 fn_v1; /* a version-1 caller's */
    void *payload;
} inline_handler;

static int inline_has_room(walq__handler *h)
{
    (void)h;
    return 1;
}

/* A version-1 verdict: 2 was WALQ_JOB_FAIL, a failed attempt like any unknown value. */
static walq__verdict verdict_v1(int v, char *err, size_t errlen)
{
    if (v == WALQ__JOB_DONE_V1)
        return WALQ__VERDICT_DONE;
    if (v == WALQ__JOB_RETRY_V1) {
        if (*err == '\0')
            snprintf(err, errlen, "handler asked for a retry");
        return WALQ__VERDICT_RETRY;
    }
    if (*err == '\0')
        snprintf(err, errlen, "handler failed");
    return WALQ__VERDICT_FAIL;
}

static walq__verdict verdict_v2(walq_verdict v, char *err, size_t errlen)
{
    switch (v) {
    case WALQ_JOB_DONE:
        return WALQ__VERDICT_DONE;
    case WALQ_JOB_RETRY:
        if (*err == '\0')
            snprintf(err, errlen, "handler asked for a retry");
        return WALQ__VERDICT_RETRY;
    case WALQ_JOB_DEAD:
        if (*err == '\0')
            snprintf(err, errlen, "handler gave up on the job");
        return WALQ__VERDICT_DEAD;
    }
    /* A value from no version of walq.h: a failed attempt, as before. */
    if (*err == '\0')
        snprintf(err, errlen, "handler returned unknown verdict %d", (int)v);
    return WALQ__VERDICT_FAIL;
}

static int inline_start(walq__handler *h, walq__job *job, int64_t now)
{
    inline_handler *ih = (inline_handler *)h;
    char err[1024] = "";
    walq__verdict v;

    (void)now;
    if (ih->fn == NULL && ih->fn_v1 == NULL)
        return h->done(h->arg, job, WALQ__VERDICT_DONE, NULL);
    if (ih->fn_v1 != NULL) {
        int r = ih->fn_v1(ih->payload, job, err, sizeof(err));

        err[sizeof(err) - 1] = '\0';
        v = verdict_v1(r, err, sizeof(err));
    } else {
        walq_verdict r = ih->fn(err, sizeof(err), job, ih->payload);

        err[sizeof(err) - 1] = '\0';
        v = verdict_v2(r, err, sizeof(err));
    }
    return h->done(h->arg, job, v, v == WALQ__VERDICT_DONE ? NULL : err);
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

static const walq__handler_ops inline_ops = {
    .has_room = inline_has_room,
    .start = inline_start,
    .fds = inline_fds,
    .max_fds = inline_max_fds,
    .process = inline_process,
    .kill_all = inline_kill_all,
    .running = inline_running,
    .free = inline_free,
};

int walq__handler_callback_new(walq__handler **out, walq_handler_fn fn, walq__handler_fn_v1 fn_v1,
                               void *payload)
{
    inline_handler *ih = calloc(1, sizeof(*ih));

    *out = NULL;
    if (ih == NULL)
        return walq__error(WALQ_ENOMEM, NULL, "out of memory");
    ih->base.ops = &inline_ops;
    ih->fn = fn;
    ih->fn_v1 = fn != NULL ? NULL : fn_v1;
    ih->payload = payload;
    *out = &ih->base;
    return 0;
}

int walq__handler_noop_new(walq__handler **out)
{
    return walq__handler_callback_new(out, NULL, NULL, NULL);
}
