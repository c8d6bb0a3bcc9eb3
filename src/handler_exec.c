/* The exec handler: one process per job, at most `concurrency` at once. */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "handler.h"

/*
 * How long kill_all waits for a killed process to exit.  SIGKILL cannot be
 * caught; only a process stuck in the kernel (a dead NFS server) takes
 * longer, and the stop must not wait for it.
 */
#define EXEC_KILL_WAIT_US 5000000

typedef struct exec_slot {
    walq__proc proc;
    walq__job *job;
} exec_slot;

typedef struct exec_handler {
    walq__handler base;
    char *const *argv; /* borrowed from the consumer */
    int concurrency;   /* the limit; a reload may lower it below nslots */
    int nslots;        /* slots allocated: the most concurrency ever was */
    int64_t timeout_us;
    size_t nrunning;
    exec_slot *slots;
} exec_handler;

static int exec_has_room(walq__handler *h)
{
    exec_handler *e = (exec_handler *)h;

    return e->nrunning < (size_t)e->concurrency;
}

static int exec_start(walq__handler *h, walq__job *job, int64_t now)
{
    exec_handler *e = (exec_handler *)h;
    walq__job_env env = {h->group, job->queue, job->id, job->attempts, h->pass_env};
    exec_slot *slot = NULL;
    int rc;

    for (int i = 0; i < e->nslots; i++) {
        if (e->slots[i].job == NULL) {
            slot = &e->slots[i];
            break;
        }
    }
    if (slot == NULL)
        return walq__error(WALQ_ESYS, NULL, "no free handler slot (internal error)");
    rc = walq__proc_start(&slot->proc, e->argv, &env, job->payload, job->payload_len,
                          e->timeout_us ? now + e->timeout_us : 0);
    if (rc == WALQ_ENOMEM)
        return rc;
    if (rc != 0)
        return h->done(h->arg, job, WALQ__VERDICT_FAIL, walq_last_error());
    slot->job = job;
    e->nrunning++;
    return 0;
}

static size_t exec_fds(walq__handler *h, struct pollfd *pfd, size_t room, int64_t now,
                       int64_t *wake_at)
{
    exec_handler *e = (exec_handler *)h;
    size_t n = 0;

    for (int i = 0; i < e->nslots; i++) {
        exec_slot *s = &e->slots[i];
        int64_t due = 0;

        if (s->job == NULL)
            continue;
        if (s->proc.pidfd >= 0 && n < room) {
            pfd[n].fd = s->proc.pidfd;
            pfd[n++].events = POLLIN;
        } else {
            /* Without a pidfd the exit is noticed by looking every 10 ms. */
            due = now + 10000;
        }
        if (s->proc.in_fd >= 0 && n < room) {
            pfd[n].fd = s->proc.in_fd;
            pfd[n++].events = POLLOUT;
        }
        if (s->proc.err_fd >= 0 && n < room) {
            pfd[n].fd = s->proc.err_fd;
            pfd[n++].events = POLLIN;
        }
        if (s->proc.deadline && !s->proc.timed_out && (due == 0 || s->proc.deadline < due))
            due = s->proc.deadline;
        if (due && (*wake_at == 0 || due < *wake_at))
            *wake_at = due;
    }
    return n;
}

static size_t exec_max_fds(walq__handler *h)
{
    return 3 * (size_t)((exec_handler *)h)->nslots;
}

/* Kills the process of each job past its timeout; process() reports it once reaped. */
static void exec_kill_overdue(walq__handler *h, int64_t now)
{
    exec_handler *e = (exec_handler *)h;

    for (int i = 0; i < e->nslots; i++) {
        exec_slot *s = &e->slots[i];

        /* One that exited meanwhile (the consumer was waiting on a server) is reaped as it ended.
         */
        if (s->job != NULL && s->proc.deadline && now >= s->proc.deadline && !s->proc.timed_out &&
            !walq__proc_exited(&s->proc)) {
            s->proc.timed_out = 1;
            walq__proc_kill(&s->proc, SIGKILL);
        }
    }
}

static int exec_process(walq__handler *h, int64_t now)
{
    exec_handler *e = (exec_handler *)h;

    exec_kill_overdue(h, now);
    for (int i = 0; i < e->nslots; i++) {
        exec_slot *s = &e->slots[i];
        walq__verdict v;
        char err[1024];
        walq__job *job;
        int rc;

        if (s->job == NULL)
            continue;
        if (s->proc.in_fd >= 0)
            walq__proc_feed(&s->proc);
        if (s->proc.err_fd >= 0)
            walq__proc_drain_stderr(&s->proc);
        if (!walq__proc_reap(&s->proc, &v, err, sizeof(err)))
            continue;
        walq__proc_close(&s->proc);
        job = s->job;
        s->job = NULL;
        e->nrunning--;
        rc = h->done(h->arg, job, v, err);
        if (rc != 0)
            return rc;
    }
    return 0;
}

/*
 * Waits for a killed process to exit and reaps it: on its pidfd until the
 * deadline, or where there is none in waitpid, which the SIGKILL of its
 * group cannot keep long.  Returns 0 if it is still there at the deadline.
 */
static int await_killed(walq__proc *p, int64_t deadline)
{
    for (;;) {
        walq__verdict v;
        char err[64];
        int64_t now;
        struct pollfd pfd;

        if (walq__proc_reap(p, &v, err, sizeof(err)))
            return 1;
        if (p->pidfd < 0) {
            int status;

            while (waitpid(p->pid, &status, 0) < 0 && errno == EINTR) {
            }
            p->pid = -1;
            return 1;
        }
        now = walq__mono_us();
        if (now >= deadline)
            return 0;
        pfd.fd = p->pidfd;
        pfd.events = POLLIN;
        poll(&pfd, 1, (int)((deadline - now + 999) / 1000));
    }
}

/* Kills every process at once, then waits for them all, at most EXEC_KILL_WAIT_US. */
static void exec_kill_all(walq__handler *h)
{
    exec_handler *e = (exec_handler *)h;
    int64_t deadline = walq__mono_us() + EXEC_KILL_WAIT_US;

    for (int i = 0; i < e->nslots; i++)
        if (e->slots[i].job != NULL)
            walq__proc_kill(&e->slots[i].proc, SIGKILL);
    for (int i = 0; i < e->nslots; i++) {
        exec_slot *s = &e->slots[i];
        walq__job *job = s->job;

        if (job == NULL)
            continue;
        if (!await_killed(&s->proc, deadline))
            walq__warn(h->log,
                       "handler process %d did not exit within %d s of SIGKILL; leaving it "
                       "behind",
                       (int)s->proc.pid, EXEC_KILL_WAIT_US / 1000000);
        walq__proc_close(&s->proc);
        s->job = NULL;
        e->nrunning--;
        h->abandon(h->arg, job);
    }
}

static size_t exec_running(walq__handler *h)
{
    return ((exec_handler *)h)->nrunning;
}

static void exec_free(walq__handler *h)
{
    exec_handler *e = (exec_handler *)h;

    if (e == NULL)
        return;
    free(e->slots);
    free(e);
}

/*
 * A reload: more slots when the concurrency grows; when it shrinks, the
 * processes running finish and no new one starts until fewer run.
 */
static int exec_set_limits(walq__handler *h, const walq__handler_limits *lim)
{
    exec_handler *e = (exec_handler *)h;

    if (lim->concurrency > e->nslots) {
        exec_slot *slots = realloc(e->slots, (size_t)lim->concurrency * sizeof(*slots));

        if (slots == NULL)
            return walq__error(WALQ_ENOMEM, NULL, "out of memory");
        memset(slots + e->nslots, 0, (size_t)(lim->concurrency - e->nslots) * sizeof(*slots));
        e->slots = slots;
        e->nslots = lim->concurrency;
    }
    e->concurrency = lim->concurrency;
    e->timeout_us = lim->timeout_us;
    return 0;
}

static const walq__handler_ops exec_ops = {
    .has_room = exec_has_room,
    .start = exec_start,
    .fds = exec_fds,
    .max_fds = exec_max_fds,
    .process = exec_process,
    .kill_all = exec_kill_all,
    .running = exec_running,
    .free = exec_free,
    .kill_overdue = exec_kill_overdue,
    .set_limits = exec_set_limits,
};

int walq__handler_exec_new(walq__handler **out, char *const *argv, int concurrency, double timeout)
{
    static const walq__log no_log;
    exec_handler *e = calloc(1, sizeof(*e));

    *out = NULL;
    if (e == NULL || (e->slots = calloc((size_t)concurrency, sizeof(*e->slots))) == NULL) {
        free(e);
        return walq__error(WALQ_ENOMEM, NULL, "out of memory");
    }
    e->base.ops = &exec_ops;
    e->base.log = &no_log; /* until the consumer gives its own */
    e->argv = argv;
    e->concurrency = e->nslots = concurrency;
    e->timeout_us = (int64_t)(timeout * 1e6);
    *out = &e->base;
    return 0;
}
