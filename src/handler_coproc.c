/*
 * The coprocess handler: a fixed number of long-lived workers, all running the
 * same program, each with several jobs in flight, speaking newline-delimited
 * JSON on their stdin and stdout.  docs/coprocess.md is the protocol.
 *
 * Everything here is non-blocking: requests wait in a per-worker output
 * buffer until the pipe takes them, replies are assembled from whatever the
 * pipe holds, and a worker's death is noticed through its pidfd (or by
 * looking every 10 ms where pidfds are missing).
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "coproc_reply.h"
#include "handler.h"

#define CP_MAX_LINE WALQ__COPROC_MAX_LINE
/* What one process() call reads from one worker, so that none starves the loop. */
#define CP_READ_BUDGET    ((size_t)4 << 20)
#define CP_BACKOFF_MIN_US 100000
#define CP_BACKOFF_MAX_US 5000000
/* A worker that dies sooner than this after its start "dies at once". */
#define CP_HEALTHY_US 1000000
/* How long a worker that closed one of its pipes has to exit on its own. */
#define CP_GRACE_US 2000000
/* How long free() waits for workers to exit once their stdin is closed. */
#define CP_STOP_US 2000000
/* What free() reads from one worker per turn while it waits. */
#define CP_STOP_READ ((size_t)64 << 10)
/* A buffer larger than this is released once empty. */
#define CP_KEEP_BUF ((size_t)1 << 20)

typedef enum cp_state {
    CP_DOWN,  /* no process; a new one starts at restart_at */
    CP_UP,    /* takes jobs */
    CP_BROKEN /* takes no more jobs; its exit is awaited */
} cp_state;

typedef struct cp_flight {
    walq__job *job;
    int64_t deadline; /* monotonic microseconds, 0: none */
    int timed_out;
} cp_flight;

typedef struct cp_worker {
    int num; /* 1-based, as messages and WALQ_WORKER show it */
    cp_state state;
    pid_t pid;      /* -1 when there is no process to reap */
    int pidfd;      /* -1 where pidfds are missing */
    int in_fd;      /* the worker's stdin */
    int out_fd;     /* the worker's stdout */
    walq__buf wbuf; /* requests not yet taken by the pipe, from woff on */
    size_t woff;
    walq__buf rbuf; /* reply bytes not yet ending in a newline */
    size_t rscan;   /* how far rbuf is known to hold no newline */
    cp_flight *flights;
    size_t nflights, flightcap;
    int64_t started_at;
    int64_t restart_at;
    int64_t backoff_us;
    int64_t kill_at;   /* BROKEN and not killed: when its grace ends */
    const char *broke; /* what made it BROKEN, a static string */
    int killed;        /* walq sent SIGKILL; why says why */
    char why[256];
    char spawn_err[512]; /* the last start failed with this */
    int gone;            /* free(): exited */
} cp_worker;

typedef struct coproc_handler {
    walq__handler base;
    char *const *argv; /* borrowed from the consumer */
    int nworkers;
    int inflight;
    double timeout;
    int64_t timeout_us;
    size_t nrunning;
    cp_worker *w;
} coproc_handler;

/* ------------------------------------------------------------------ */
/* Processes                                                           */

/* The workers' environment: the handlers' (src/run.c), plus the group and the worker's number. */
static char **worker_environ(const coproc_handler *c, int num, char vars[2][96])
{
    char *extra[2] = {vars[0], vars[1]};

    snprintf(vars[0], 96, "WALQ_GROUP=%s", c->base.group ? c->base.group : "");
    snprintf(vars[1], 96, "WALQ_WORKER=%d", num);
    return walq__handler_environ(c->base.pass_env, extra, 2);
}

static void next_backoff(cp_worker *w, int64_t now)
{
    w->backoff_us = w->backoff_us ? w->backoff_us * 2 : CP_BACKOFF_MIN_US;
    if (w->backoff_us > CP_BACKOFF_MAX_US)
        w->backoff_us = CP_BACKOFF_MAX_US;
    w->restart_at = now + w->backoff_us;
}

/*
 * Starts the worker's process.  A failure is the worker's, not the
 * consumer's: it is kept in spawn_err for the jobs that find no worker, and
 * the next attempt waits for the backoff.
 */
static void worker_spawn(coproc_handler *c, cp_worker *w, int64_t now)
{
    int in[2] = {-1, -1}, out[2] = {-1, -1};
    char vars[2][96];
    char **envp = NULL;
    int rc;
    pid_t pid;

    if (pipe2(in, O_CLOEXEC) != 0 || pipe2(out, O_CLOEXEC) != 0) {
        snprintf(w->spawn_err, sizeof(w->spawn_err),
                 "could not start coprocess worker %d: could not create a pipe: %s", w->num,
                 strerror(errno));
        goto fail;
    }
    envp = worker_environ(c, w->num, vars);
    if (envp == NULL) {
        snprintf(w->spawn_err, sizeof(w->spawn_err),
                 "could not start coprocess worker %d: out of memory", w->num);
        goto fail;
    }
    /* The pipes are close-on-exec, so no worker holds another's pipes open. */
    rc = walq__spawn_group(&pid, c->argv, envp, in[0], out[1], -1);
    if (rc != 0) {
        snprintf(w->spawn_err, sizeof(w->spawn_err),
                 "could not start coprocess worker %d: could not run \"%s\": %s", w->num,
                 c->argv[0], strerror(rc));
        goto fail;
    }
    close(in[0]);
    close(out[1]);
    w->pid = pid;
    w->pidfd = walq__pidfd_open(pid);
    w->in_fd = in[1];
    w->out_fd = out[0];
    fcntl(w->in_fd, F_SETFL, O_NONBLOCK);
    fcntl(w->out_fd, F_SETFL, O_NONBLOCK);
    w->state = CP_UP;
    w->started_at = now;
    w->spawn_err[0] = '\0';
    free(envp);
    walq__debug(c->base.log, "started coprocess worker %d (pid %d)", w->num, (int)pid);
    return;

fail:
    for (int i = 0; i < 2; i++) {
        if (in[i] >= 0)
            close(in[i]);
        if (out[i] >= 0)
            close(out[i]);
    }
    free(envp);
    next_backoff(w, now);
    walq__warn(c->base.log, "%s; trying again in %.1f s", w->spawn_err,
               (double)w->backoff_us / 1e6);
}

static void restart_due(coproc_handler *c, int64_t now)
{
    for (int i = 0; i < c->nworkers; i++)
        if (c->w[i].state == CP_DOWN && c->w[i].restart_at <= now)
            worker_spawn(c, &c->w[i], now);
}

static void close_fd(int *fd)
{
    if (*fd >= 0)
        close(*fd);
    *fd = -1;
}

/* Has the worker exited?  It stays a zombie, so its group id stays its own. */
static int worker_exited(cp_worker *w)
{
    siginfo_t si;

    memset(&si, 0, sizeof(si));
    if (waitid(P_PID, (id_t)w->pid, &si, WEXITED | WNOHANG | WNOWAIT) != 0)
        return errno != EINTR;
    return si.si_pid != 0;
}

/* Kills the worker's whole process group and stops listening to it. */
static void worker_kill(cp_worker *w, const char *fmt, ...) WALQ__PRINTF(2, 3);

static void worker_kill(cp_worker *w, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(w->why, sizeof(w->why), fmt, ap);
    va_end(ap);
    w->killed = 1;
    w->state = CP_BROKEN;
    if (w->pid > 0)
        kill(-w->pid, SIGKILL);
    /* Its jobs fail now whatever it wrote last: no half-trusted replies. */
    close_fd(&w->in_fd);
    close_fd(&w->out_fd);
}

/*
 * A worker that closed one of its pipes takes no more jobs; it gets a grace
 * period to exit (closing its stdin asks it to) before it is killed.
 */
static void worker_broke(coproc_handler *c, cp_worker *w, int64_t now, const char *what)
{
    if (w->state != CP_UP)
        return;
    w->state = CP_BROKEN;
    w->broke = what;
    w->kill_at = now + CP_GRACE_US;
    close_fd(&w->in_fd);
    /* Usually the pipe closed because the worker exited, which reaping reports. */
    if (!worker_exited(w))
        walq__debug(c->base.log, "coprocess worker %d (pid %d) %s; waiting for it to exit", w->num,
                    (int)w->pid, what);
}

/* ------------------------------------------------------------------ */
/* Requests                                                            */

static int put_json_string(walq__buf *b, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    int rc = walq__buf_append(b, "\"", 1);

    for (; rc == 0 && s != NULL && *s; s++) {
        unsigned char ch = (unsigned char)*s;
        char esc[7] = {'\\', 'u', '0', '0', hex[ch >> 4], hex[ch & 15], '\0'};

        if (ch == '"' || ch == '\\') {
            esc[1] = (char)ch;
            rc = walq__buf_append(b, esc, 2);
        } else if (ch < 0x20) {
            rc = walq__buf_append(b, esc, 6);
        } else {
            rc = walq__buf_append(b, s, 1);
        }
    }
    return rc ? rc : walq__buf_append(b, "\"", 1);
}

static int put_request(coproc_handler *c, walq__buf *b, const walq__job *job)
{
    size_t start = b->len, from;
    int rc;

    rc = walq__buf_printf(b, "{\"id\":%lld,\"queue\":", (long long)job->id);
    rc = rc ? rc : put_json_string(b, job->queue);
    rc = rc ? rc : walq__buf_printf(b, ",\"attempt\":%d,\"group\":", (int)job->attempts);
    rc = rc ? rc : put_json_string(b, c->base.group);
    rc = rc ? rc : walq__buf_puts(b, ",\"payload\":");
    from = b->len;
    if (rc == 0 && job->payload_len > 0)
        rc = walq__buf_append(b, job->payload, job->payload_len);
    else if (rc == 0)
        rc = walq__buf_puts(b, "null");
    if (rc == 0)
        rc = walq__buf_puts(b, "}\n");
    if (rc != 0) {
        /* Half a request would be garbage to the worker. */
        b->len = start;
        if (b->data != NULL)
            b->data[start] = '\0';
        return rc;
    }
    /*
     * jsonb's text form has no raw line break, but a request must stay one
     * line whatever the payload's origin; outside strings a line break is
     * plain white space, and inside one it would not be JSON anyway.
     */
    for (size_t i = from; i < b->len - 2; i++)
        if (b->data[i] == '\n' || b->data[i] == '\r')
            b->data[i] = ' ';
    return 0;
}

static void release_if_big(walq__buf *b)
{
    if (b->len == 0 && b->cap > CP_KEEP_BUF)
        walq__buf_free(b);
}

/* Writes what the pipe takes of the worker's pending requests. */
static void worker_flush(coproc_handler *c, cp_worker *w, int64_t now)
{
    sigset_t pipe_set, old, pend;
    int pending_before, broken = 0;

    if (w->in_fd < 0 || w->woff >= w->wbuf.len)
        return;
    /*
     * A worker that exits without reading must not kill the consumer with
     * SIGPIPE; the library may not change the process's signal handling, so
     * it blocks the signal around the write and swallows it (as run.c does).
     */
    sigemptyset(&pipe_set);
    sigaddset(&pipe_set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe_set, &old);
    sigpending(&pend);
    pending_before = sigismember(&pend, SIGPIPE);
    while (w->woff < w->wbuf.len) {
        ssize_t n = write(w->in_fd, w->wbuf.data + w->woff, w->wbuf.len - w->woff);

        if (n > 0) {
            w->woff += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        if (n < 0 && errno == EPIPE && !pending_before) {
            struct timespec zero = {0, 0};

            sigtimedwait(&pipe_set, NULL, &zero);
        }
        broken = 1;
        break;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (broken) {
        walq__buf_reset(&w->wbuf);
        w->woff = 0;
        worker_broke(c, w, now, "closed its standard input");
    } else if (w->woff == w->wbuf.len) {
        walq__buf_reset(&w->wbuf);
        w->woff = 0;
        release_if_big(&w->wbuf);
    } else if (w->woff > CP_KEEP_BUF / 16 && w->woff > w->wbuf.len / 2) {
        memmove(w->wbuf.data, w->wbuf.data + w->woff, w->wbuf.len - w->woff);
        w->wbuf.len -= w->woff;
        w->woff = 0;
    }
}

/* ------------------------------------------------------------------ */
/* Replies                                                             */

static void remove_flight(coproc_handler *c, cp_worker *w, size_t i)
{
    w->flights[i] = w->flights[--w->nflights];
    c->nrunning--;
}

/*
 * A line that is not a reply to a job in flight breaks the protocol: the
 * worker is killed, and the jobs it was running fail and are retried, as
 * after a crash.  Waiting for the reply that the worker meant to send could
 * take forever.
 */
static void protocol_error(coproc_handler *c, cp_worker *w, const char *line, size_t len,
                           const char *fmt, ...) WALQ__PRINTF(5, 6);

static void protocol_error(coproc_handler *c, cp_worker *w, const char *line, size_t len,
                           const char *fmt, ...)
{
    char what[160], ex[WALQ__COPROC_EXCERPT + 4];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    walq__coproc_excerpt(ex, sizeof(ex), line, len);
    walq__warn(c->base.log, "coprocess worker %d (pid %d) %s: \"%s\"; killing it", w->num,
               (int)w->pid, what, ex);
    worker_kill(w, "was killed because it %s", what);
}

static int take_reply(coproc_handler *c, cp_worker *w, const char *line, size_t len)
{
    walq__coproc_reply r;
    const char *why;
    walq__job *job = NULL;
    int rc = walq__coproc_parse_reply(line, len, &r, &why);

    if (rc == WALQ__COPROC_BLANK)
        return 0;
    if (rc == WALQ_ENOMEM)
        return walq__error(WALQ_ENOMEM, NULL, "out of memory");
    if (rc != 0) {
        protocol_error(c, w, line, len, "sent an invalid reply (%s)", why);
        return 0;
    }
    for (size_t i = 0; i < w->nflights; i++) {
        if (w->flights[i].job->id == r.id) {
            job = w->flights[i].job;
            remove_flight(c, w, i);
            break;
        }
    }
    if (job == NULL) {
        protocol_error(c, w, line, len, "replied for job %lld, which it was not running",
                       (long long)r.id);
        return 0;
    }
    return c->base.done(c->base.arg, job, r.verdict,
                        r.verdict == WALQ__VERDICT_DONE ? NULL : r.error);
}

/* Takes the complete lines in rbuf; keeps the unfinished one. */
static int take_lines(coproc_handler *c, cp_worker *w)
{
    walq__buf *b = &w->rbuf;
    size_t start = 0;
    int rc = 0;

    while (rc == 0 && !w->killed) {
        char *nl = memchr(b->data + w->rscan, '\n', b->len - w->rscan);
        size_t len;

        if (nl == NULL) {
            w->rscan = b->len;
            break;
        }
        len = (size_t)(nl - (b->data + start));
        w->rscan = (size_t)(nl - b->data) + 1;
        if (len > CP_MAX_LINE) {
            protocol_error(c, w, b->data + start, len, "sent a line longer than %zu MiB",
                           CP_MAX_LINE >> 20);
            break;
        }
        rc = take_reply(c, w, b->data + start, len);
        start = w->rscan;
    }
    if (w->killed) {
        walq__buf_reset(b);
        w->rscan = 0;
        return rc;
    }
    if (start > 0) {
        memmove(b->data, b->data + start, b->len - start);
        b->len -= start;
        b->data[b->len] = '\0';
        w->rscan -= start;
    }
    if (b->len > CP_MAX_LINE)
        protocol_error(c, w, b->data, b->len, "sent a line longer than %zu MiB", CP_MAX_LINE >> 20);
    return rc;
}

/* Reads what the worker wrote and acts on its replies. */
static int worker_read(coproc_handler *c, cp_worker *w, int64_t now)
{
    size_t budget = CP_READ_BUDGET;
    int rc = 0;

    while (rc == 0 && w->out_fd >= 0 && budget > 0) {
        ssize_t n;

        if (walq__buf_reserve(&w->rbuf, 65536) != 0)
            return walq__error(WALQ_ENOMEM, NULL, "out of memory");
        n = read(w->out_fd, w->rbuf.data + w->rbuf.len, w->rbuf.cap - w->rbuf.len - 1);
        if (n > 0) {
            w->rbuf.len += (size_t)n;
            budget -= (size_t)n < budget ? (size_t)n : budget;
            rc = take_lines(c, w);
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        close_fd(&w->out_fd);
        worker_broke(c, w, now, "closed its standard output");
    }
    if (w->rbuf.len == 0)
        release_if_big(&w->rbuf);
    return rc;
}

/* ------------------------------------------------------------------ */
/* Deaths                                                              */

static void describe_status(const cp_worker *w, int known, int status, char *out, size_t len)
{
    if (w->killed)
        snprintf(out, len, "%s", w->why);
    else if (!known)
        snprintf(out, len, "exited (its exit status could not be read)");
    else if (WIFEXITED(status))
        snprintf(out, len, "exited with exit status %d", WEXITSTATUS(status));
    else if (WIFSIGNALED(status))
        snprintf(out, len, "was terminated by signal %d (%s)", WTERMSIG(status),
                 strsignal(WTERMSIG(status)));
    else
        snprintf(out, len, "ended with unrecognized status %d", status);
}

/* Releases the worker's process and descriptors; its flights stay. */
static int worker_wait(cp_worker *w, int *status)
{
    pid_t r;
    int known;

    /* Whatever it left behind in its group goes with it. */
    kill(-w->pid, SIGKILL);
    do {
        r = waitpid(w->pid, status, 0);
    } while (r < 0 && errno == EINTR);
    known = r > 0;
    close_fd(&w->in_fd);
    close_fd(&w->out_fd);
    close_fd(&w->pidfd);
    walq__buf_reset(&w->wbuf);
    walq__buf_reset(&w->rbuf);
    release_if_big(&w->wbuf);
    release_if_big(&w->rbuf);
    w->woff = w->rscan = 0;
    w->pid = -1;
    w->state = CP_DOWN;
    return known;
}

/* The worker exited: restart it, fail what it was running. */
static int worker_reap(coproc_handler *c, cp_worker *w, int64_t now)
{
    char what[300], err[600], again[64];
    int status = 0, known, rc = 0;
    int64_t lived = now - w->started_at;
    pid_t pid = w->pid;

    /* Replies it wrote before it exited still count. */
    if (!w->killed && w->out_fd >= 0) {
        rc = worker_read(c, w, now);
        if (rc != 0)
            return rc;
    }
    known = worker_wait(w, &status);
    describe_status(w, known, status, what, sizeof(what));
    if (lived >= CP_HEALTHY_US) {
        w->backoff_us = 0;
        w->restart_at = now;
        snprintf(again, sizeof(again), "restarting it");
    } else {
        /* Dying at once again and again: a broken program must not spin. */
        next_backoff(w, now);
        snprintf(again, sizeof(again), "restarting it in %.1f s", (double)w->backoff_us / 1e6);
    }
    if (w->nflights > 0 || w->killed || !known || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
        walq__warn(c->base.log, "coprocess worker %d (pid %d) %s with %zu job%s in flight; %s",
                   w->num, (int)pid, what, w->nflights, w->nflights == 1 ? "" : "s", again);
    else
        walq__info(c->base.log, "coprocess worker %d (pid %d) %s; %s", w->num, (int)pid, what,
                   again);
    w->killed = 0;
    w->broke = NULL;
    w->kill_at = 0;
    w->why[0] = '\0';
    while (rc == 0 && w->nflights > 0) {
        cp_flight f = w->flights[w->nflights - 1];

        remove_flight(c, w, w->nflights - 1);
        if (f.timed_out)
            snprintf(err, sizeof(err),
                     "timed out after %g s; coprocess worker %d (pid %d) was killed", c->timeout,
                     w->num, (int)pid);
        else
            snprintf(err, sizeof(err), "coprocess worker %d (pid %d) %s while running the job",
                     w->num, (int)pid, what);
        rc = c->base.done(c->base.arg, f.job, WALQ__VERDICT_FAIL, err);
    }
    return rc;
}

static void check_timeouts(coproc_handler *c, cp_worker *w, int64_t now)
{
    long long first = 0;
    size_t n = 0;

    if (c->timeout_us == 0 || w->killed || w->state == CP_DOWN)
        return;
    for (size_t i = 0; i < w->nflights; i++) {
        if (w->flights[i].deadline <= now) {
            w->flights[i].timed_out = 1;
            if (n++ == 0)
                first = (long long)w->flights[i].job->id;
        }
    }
    if (n == 0)
        return;
    walq__warn(c->base.log, "job %lld timed out after %g s; killing coprocess worker %d (pid %d)",
               first, c->timeout, w->num, (int)w->pid);
    worker_kill(w, "was killed because job %lld on it timed out after %g s", first, c->timeout);
}

/* Kills the worker if a job on it is past its timeout, or its grace after breaking ended. */
static void worker_overdue(coproc_handler *c, cp_worker *w, int64_t now)
{
    check_timeouts(c, w, now);
    if (w->state == CP_BROKEN && !w->killed && now >= w->kill_at)
        worker_kill(w, "was killed because it %s but did not exit within %d s", w->broke,
                    CP_GRACE_US / 1000000);
}

static int worker_process(coproc_handler *c, cp_worker *w, int64_t now)
{
    int rc;

    if (w->state == CP_DOWN)
        return 0;
    worker_flush(c, w, now);
    rc = worker_read(c, w, now);
    if (rc != 0)
        return rc;
    worker_overdue(c, w, now);
    if (!worker_exited(w))
        return 0;
    return worker_reap(c, w, now);
}

/* ------------------------------------------------------------------ */
/* The handler's operations                                            */

/*
 * No worker runs, and one could not be started: jobs fail with its error
 * rather than wait for a program that may never start.
 */
static const char *cannot_start(const coproc_handler *c)
{
    const char *err = NULL;

    for (int i = 0; i < c->nworkers; i++) {
        if (c->w[i].state != CP_DOWN)
            return NULL;
        if (c->w[i].spawn_err[0] && err == NULL)
            err = c->w[i].spawn_err;
    }
    return err;
}

static int coproc_has_room(walq__handler *h)
{
    coproc_handler *c = (coproc_handler *)h;
    int64_t now = walq__mono_us();

    for (int i = 0; i < c->nworkers; i++) {
        const cp_worker *w = &c->w[i];

        if (w->state == CP_UP && w->nflights < (size_t)c->inflight)
            return 1;
        if (w->state == CP_DOWN && w->restart_at <= now)
            return 1;
    }
    return cannot_start(c) != NULL;
}

static int coproc_start(walq__handler *h, walq__job *job, int64_t now)
{
    coproc_handler *c = (coproc_handler *)h;
    cp_worker *best = NULL;
    cp_flight *f;

    /* has_room() reads the clock afresh, and now may be older: agree with it. */
    restart_due(c, walq__mono_us());
    for (int i = 0; i < c->nworkers; i++) {
        cp_worker *w = &c->w[i];

        if (w->state == CP_UP && w->nflights < (size_t)c->inflight &&
            (best == NULL || w->nflights < best->nflights))
            best = w;
    }
    if (best == NULL) {
        /*
         * has_room() saw a worker due to start, and it did not: this job
         * fails with the reason; the next ones wait for room or the backoff.
         */
        for (int i = 0; i < c->nworkers; i++)
            if (c->w[i].state == CP_DOWN && c->w[i].spawn_err[0])
                return h->done(h->arg, job, WALQ__VERDICT_FAIL, c->w[i].spawn_err);
        return walq__error(WALQ_ESYS, NULL, "no coprocess worker has room (internal error)");
    }
    if (best->nflights == best->flightcap) {
        size_t cap = best->flightcap ? best->flightcap * 2 : 16;

        f = realloc(best->flights, cap * sizeof(*f));
        if (f == NULL)
            return walq__error(WALQ_ENOMEM, NULL, "out of memory");
        best->flights = f;
        best->flightcap = cap;
    }
    if (put_request(c, &best->wbuf, job) != 0)
        return walq__error(WALQ_ENOMEM, NULL, "out of memory");
    f = &best->flights[best->nflights++];
    f->job = job;
    f->deadline = c->timeout_us ? now + c->timeout_us : 0;
    f->timed_out = 0;
    c->nrunning++;
    worker_flush(c, best, now);
    return 0;
}

static size_t coproc_fds(walq__handler *h, struct pollfd *pfd, size_t room, int64_t now,
                         int64_t *wake_at)
{
    coproc_handler *c = (coproc_handler *)h;
    size_t n = 0;

    for (int i = 0; i < c->nworkers; i++) {
        const cp_worker *w = &c->w[i];
        int64_t due = 0;

        if (w->state == CP_DOWN) {
            due = w->restart_at > now ? w->restart_at : now;
        } else {
            if (w->pidfd >= 0 && n < room) {
                pfd[n].fd = w->pidfd;
                pfd[n++].events = POLLIN;
            } else {
                /* Without a pidfd the exit is noticed by looking every 10 ms. */
                due = now + 10000;
            }
            if (w->out_fd >= 0 && n < room) {
                pfd[n].fd = w->out_fd;
                pfd[n++].events = POLLIN;
            }
            if (w->in_fd >= 0 && w->woff < w->wbuf.len && n < room) {
                pfd[n].fd = w->in_fd;
                pfd[n++].events = POLLOUT;
            }
            if (w->state == CP_BROKEN && !w->killed && (due == 0 || w->kill_at < due))
                due = w->kill_at;
            for (size_t k = 0; c->timeout_us && !w->killed && k < w->nflights; k++)
                if (due == 0 || w->flights[k].deadline < due)
                    due = w->flights[k].deadline;
        }
        if (due && (*wake_at == 0 || due < *wake_at))
            *wake_at = due;
    }
    return n;
}

static size_t coproc_max_fds(walq__handler *h)
{
    return 3 * (size_t)((coproc_handler *)h)->nworkers;
}

static int coproc_process(walq__handler *h, int64_t now)
{
    coproc_handler *c = (coproc_handler *)h;

    for (int i = 0; i < c->nworkers; i++) {
        int rc = worker_process(c, &c->w[i], now);

        if (rc != 0)
            return rc;
    }
    /* Workers start before the first job needs them, and come back after a death. */
    restart_due(c, now);
    return 0;
}

/*
 * Kills the workers that are running jobs and gives the jobs back.  Idle
 * workers are left alone: the consumer calls this at the end of every run,
 * and free() stops them gently.
 */
static void coproc_kill_all(walq__handler *h)
{
    coproc_handler *c = (coproc_handler *)h;
    int64_t now = walq__mono_us();

    for (int i = 0; i < c->nworkers; i++) {
        cp_worker *w = &c->w[i];
        int status;

        if (w->state == CP_DOWN || (w->state == CP_UP && w->nflights == 0))
            continue;
        worker_kill(w, "was killed");
        worker_wait(w, &status);
        w->killed = 0;
        w->broke = NULL;
        w->why[0] = '\0';
        w->restart_at = now;
        while (w->nflights > 0) {
            walq__job *job = w->flights[w->nflights - 1].job;

            remove_flight(c, w, w->nflights - 1);
            h->abandon(h->arg, job);
        }
    }
}

static size_t coproc_running(walq__handler *h)
{
    return ((coproc_handler *)h)->nrunning;
}

/*
 * Kills what is past its time (jobs past the timeout, broken workers past
 * their grace) and reports nothing: the consumer calls this while it waits
 * on a server, and process() reports the deaths once it runs again.
 */
static void coproc_kill_overdue(walq__handler *h, int64_t now)
{
    coproc_handler *c = (coproc_handler *)h;

    for (int i = 0; i < c->nworkers; i++) {
        cp_worker *w = &c->w[i];
        struct pollfd pfd = {.fd = w->out_fd, .events = POLLIN};

        /*
         * A worker with output waiting may have answered in time, while the
         * consumer was busy: process() reads it before it judges the
         * deadlines.
         */
        if (w->out_fd >= 0 && poll(&pfd, 1, 0) > 0)
            continue;
        if (w->state != CP_DOWN)
            worker_overdue(c, w, now);
    }
}

/*
 * What a stopping worker writes is thrown away, so that it never blocks on a
 * full pipe; at most CP_STOP_READ a turn, so that a worker that writes
 * without end cannot hold the stop past its deadline.
 */
static void discard_output(cp_worker *w)
{
    char sink[4096];
    size_t budget = CP_STOP_READ;

    while (w->out_fd >= 0 && budget > 0) {
        ssize_t n = read(w->out_fd, sink, sizeof(sink));

        if (n > 0) {
            budget -= (size_t)n < budget ? (size_t)n : budget;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        close_fd(&w->out_fd);
    }
}

/*
 * Waits until every worker has exited or the deadline has come, on the
 * workers' pidfds and stdout; every 10 ms where pidfds are missing.
 */
static void await_exits(coproc_handler *c, int64_t deadline)
{
    struct pollfd *pfd = calloc(2 * (size_t)c->nworkers, sizeof(*pfd));

    for (;;) {
        int64_t now;
        size_t n = 0;
        int waiting = 0, tick = pfd == NULL, ms;

        for (int i = 0; i < c->nworkers; i++) {
            cp_worker *w = &c->w[i];

            if (w->pid <= 0 || w->gone)
                continue;
            discard_output(w);
            w->gone = worker_exited(w);
            if (w->gone)
                continue;
            waiting++;
            if (pfd != NULL && w->pidfd >= 0) {
                pfd[n].fd = w->pidfd;
                pfd[n++].events = POLLIN;
            } else {
                tick = 1;
            }
            if (pfd != NULL && w->out_fd >= 0) {
                pfd[n].fd = w->out_fd;
                pfd[n++].events = POLLIN;
            }
        }
        now = walq__mono_us();
        if (waiting == 0 || now >= deadline)
            break;
        ms = (int)((deadline - now + 999) / 1000);
        if (tick && ms > 10)
            ms = 10;
        poll(pfd, pfd ? n : 0, ms);
    }
    free(pfd);
}

/*
 * Stops the workers the way the protocol says: their stdin closes, and they
 * have CP_STOP_US to exit before they are killed.
 */
static void coproc_free(walq__handler *h)
{
    coproc_handler *c = (coproc_handler *)h;

    if (c == NULL)
        return;
    for (int i = 0; i < c->nworkers; i++)
        close_fd(&c->w[i].in_fd);
    await_exits(c, walq__mono_us() + CP_STOP_US);
    for (int i = 0; i < c->nworkers; i++) {
        cp_worker *w = &c->w[i];
        int status;

        if (w->pid > 0) {
            if (!w->gone)
                walq__warn(h->log,
                           "coprocess worker %d (pid %d) did not exit within %d s of its standard "
                           "input closing; killing it",
                           w->num, (int)w->pid, CP_STOP_US / 1000000);
            worker_wait(w, &status);
        }
        walq__buf_free(&w->wbuf);
        walq__buf_free(&w->rbuf);
        free(w->flights);
    }
    free(c->w);
    free(c);
}

/* A worker with no process yet: the next has_room() or start() starts it. */
static void worker_init(cp_worker *w, int num)
{
    memset(w, 0, sizeof(*w));
    w->num = num;
    w->state = CP_DOWN;
    w->pid = -1;
    w->pidfd = w->in_fd = w->out_fd = -1;
}

/*
 * A reload: the timeout of jobs sent from now on, and more workers when
 * the concurrency grows (started as the first ones were, when jobs come).
 * Fewer would mean stopping workers with jobs in flight: that waits for a
 * restart, and 1 says so.
 */
static int coproc_set_limits(walq__handler *h, const walq__handler_limits *lim)
{
    coproc_handler *c = (coproc_handler *)h;

    c->timeout_us = lim->timeout_us;
    c->timeout = (double)lim->timeout_us / 1e6;
    if (lim->concurrency > c->nworkers) {
        cp_worker *w = realloc(c->w, (size_t)lim->concurrency * sizeof(*w));

        if (w == NULL)
            return walq__error(WALQ_ENOMEM, NULL, "out of memory");
        for (int i = c->nworkers; i < lim->concurrency; i++)
            worker_init(&w[i], i + 1);
        c->w = w;
        c->nworkers = lim->concurrency;
    }
    return lim->concurrency < c->nworkers;
}

static const walq__handler_ops coproc_ops = {
    .has_room = coproc_has_room,
    .start = coproc_start,
    .fds = coproc_fds,
    .max_fds = coproc_max_fds,
    .process = coproc_process,
    .kill_all = coproc_kill_all,
    .running = coproc_running,
    .free = coproc_free,
    .kill_overdue = coproc_kill_overdue,
    .set_limits = coproc_set_limits,
};

int walq__handler_coproc_new(walq__handler **out, char *const *argv, int workers, int inflight,
                             double timeout)
{
    static const walq__log no_log;
    coproc_handler *c;

    *out = NULL;
    if (argv == NULL || argv[0] == NULL || workers < 1 || inflight < 1 || timeout < 0)
        return walq__error(WALQ_EINVAL, NULL,
                           "the coprocess handler needs a program, at least one worker and at "
                           "least one job in flight per worker");
    c = calloc(1, sizeof(*c));
    if (c == NULL || (c->w = calloc((size_t)workers, sizeof(*c->w))) == NULL) {
        free(c);
        return walq__error(WALQ_ENOMEM, NULL, "out of memory");
    }
    c->base.ops = &coproc_ops;
    c->base.log = &no_log; /* until the consumer gives its own */
    c->argv = argv;
    c->nworkers = workers;
    c->inflight = inflight;
    c->timeout = timeout;
    c->timeout_us = (int64_t)(timeout * 1e6);
    for (int i = 0; i < workers; i++)
        worker_init(&c->w[i], i + 1);
    *out = &c->base;
    return 0;
}
