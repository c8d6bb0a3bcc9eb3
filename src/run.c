/* The exec handler: spawning, feeding, reaping and killing job processes. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common.h"
#include "run.h"
#include "text.h"

extern char **environ;

int walq__pidfd_open(pid_t pid)
{
    static int missing;
    int fd;

    if (missing) {
        errno = ENOSYS;
        return -1;
    }
    fd = (int)syscall(SYS_pidfd_open, pid, 0);
    if (fd < 0 && errno == ENOSYS)
        missing = 1;
    return fd;
}

/* The variables walq sets for a handler, which an outer walq may have set for it. */
static const char *const job_vars[] = {"WALQ_JOB_ID", "WALQ_QUEUE", "WALQ_GROUP", "WALQ_ATTEMPT",
                                       "WALQ_WORKER"};

/* Does the variable name (n bytes) match pattern: a name, or a prefix and "*"? */
static int name_matches(const char *name, size_t n, const char *pattern)
{
    size_t k = strlen(pattern);

    if (k > 0 && pattern[k - 1] == '*')
        return n >= k - 1 && strncmp(name, pattern, k - 1) == 0;
    return n == k && strncmp(name, pattern, n) == 0;
}

int walq__env_passes(const char *entry, const char *const *pass)
{
    size_t n = strcspn(entry, "=");

    for (size_t i = 0; i < WALQ__ARRAY_SIZE(job_vars); i++)
        if (name_matches(entry, n, job_vars[i]))
            return 0;
    /*
     * libpq reads passwords (PGPASSWORD), the files that hold them
     * (PGPASSFILE, PGSERVICEFILE, PGSSLKEY) and where and as whom to connect
     * from variables that start with PG, and a handler runs on what
     * producers wrote: it gets none of them unless asked.  Every PG name, so
     * that one a later libpq reads is kept back too.
     */
    if (n < 2 || strncmp(entry, "PG", 2) != 0)
        return 1;
    for (; pass != NULL && *pass != NULL; pass++)
        if (name_matches(entry, n, *pass))
            return 1;
    return 0;
}

char **walq__handler_environ(const char *const *pass, char *const *extra, size_t nextra)
{
    size_t n = 0, k = 0;
    char **envp;

    while (environ[n])
        n++;
    envp = malloc((n + nextra + 1) * sizeof(*envp));
    if (envp == NULL)
        return NULL;
    for (size_t i = 0; i < n; i++)
        if (walq__env_passes(environ[i], pass))
            envp[k++] = environ[i];
    for (size_t i = 0; i < nextra; i++)
        envp[k++] = extra[i];
    envp[k] = NULL;
    return envp;
}

/* The child's environment: the handlers' (above), plus the job's. */
static char **job_environ(const walq__job_env *env, char vars[4][160])
{
    char *extra[4];

    snprintf(vars[0], 160, "WALQ_JOB_ID=%lld", (long long)env->job_id);
    snprintf(vars[1], 160, "WALQ_QUEUE=%s", env->queue);
    snprintf(vars[2], 160, "WALQ_GROUP=%s", env->group);
    snprintf(vars[3], 160, "WALQ_ATTEMPT=%d", env->attempt);
    for (int i = 0; i < 4; i++)
        extra[i] = vars[i];
    return walq__handler_environ(env->pass_env, extra, 4);
}

int walq__spawn_group(pid_t *pid, char *const *argv, char *const *envp, int in_fd, int out_fd,
                      int err_fd)
{
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    sigset_t none, all;
    int rc;

    if (posix_spawn_file_actions_init(&fa) != 0)
        return ENOMEM;
    if (posix_spawnattr_init(&attr) != 0) {
        posix_spawn_file_actions_destroy(&fa);
        return ENOMEM;
    }
    rc = posix_spawn_file_actions_adddup2(&fa, in_fd, STDIN_FILENO);
    if (rc == 0 && out_fd >= 0)
        rc = posix_spawn_file_actions_adddup2(&fa, out_fd, STDOUT_FILENO);
    if (rc == 0 && err_fd >= 0)
        rc = posix_spawn_file_actions_adddup2(&fa, err_fd, STDERR_FILENO);
    /*
     * The child leads a process group of its own (a kill reaches everything
     * it started) and starts with default signal handling and nothing
     * blocked, whatever the consumer does with its signals.
     */
    sigemptyset(&none);
    sigfillset(&all);
    posix_spawnattr_setpgroup(&attr, 0);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setsigdefault(&attr, &all);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK |
                                        POSIX_SPAWN_SETSIGDEF);
    if (rc == 0)
        rc = posix_spawnp(pid, argv[0], &fa, &attr, argv, envp);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&attr);
    return rc;
}

int walq__proc_start(walq__proc *p, char *const *argv, const walq__job_env *env,
                     const char *payload, size_t len, int64_t deadline)
{
    int in[2] = {-1, -1}, errp[2] = {-1, -1};
    char vars[4][160];
    char **envp = NULL;
    int rc;

    memset(p, 0, sizeof(*p));
    p->pid = -1;
    p->pidfd = p->in_fd = p->err_fd = -1;
    p->payload = payload;
    p->payload_len = len;
    p->deadline = deadline;

    if (pipe2(in, O_CLOEXEC) != 0 || pipe2(errp, O_CLOEXEC) != 0) {
        rc = walq__error(WALQ_EHANDLER, NULL, "could not create a pipe for the handler: %s",
                         strerror(errno));
        goto fail;
    }
    envp = job_environ(env, vars);
    if (envp == NULL) {
        rc = walq__error(WALQ_ENOMEM, NULL, "out of memory");
        goto fail;
    }
    rc = walq__spawn_group(&p->pid, argv, envp, in[0], -1, errp[1]);
    if (rc != 0) {
        p->pid = -1;
        rc = walq__error(WALQ_EHANDLER, "Check that the program exists and is executable.",
                         "could not run handler \"%s\": %s", argv[0], strerror(rc));
        goto fail;
    }
    p->pidfd = walq__pidfd_open(p->pid);
    /*
     * Without pidfds (old kernels, valgrind) the consumer polls for the exit
     * with a short timeout instead.
     */
    if (p->pidfd < 0 && errno != ENOSYS) {
        rc = walq__error(WALQ_EHANDLER, NULL, "could not watch handler process %d: %s", (int)p->pid,
                         strerror(errno));
        kill(-p->pid, SIGKILL);
        waitpid(p->pid, NULL, 0);
        p->pid = -1;
        goto fail;
    }
    close(in[0]);
    close(errp[1]);
    p->in_fd = in[1];
    p->err_fd = errp[0];
    fcntl(p->in_fd, F_SETFL, O_NONBLOCK);
    fcntl(p->err_fd, F_SETFL, O_NONBLOCK);
    free(envp);
    walq__proc_feed(p);
    return 0;

fail:
    for (int i = 0; i < 2; i++) {
        if (in[i] >= 0)
            close(in[i]);
        if (errp[i] >= 0)
            close(errp[i]);
    }
    free(envp);
    return rc;
}

void walq__proc_feed(walq__proc *p)
{
    sigset_t pipe_set, old;
    int pending_before;

    if (p->in_fd < 0)
        return;
    /*
     * A handler that exits without reading its stdin must not kill the
     * consumer with SIGPIPE; the library may not change the process's signal
     * handling, so it blocks the signal around the write and swallows it.
     */
    sigemptyset(&pipe_set);
    sigaddset(&pipe_set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe_set, &old);
    {
        sigset_t pend;

        sigpending(&pend);
        pending_before = sigismember(&pend, SIGPIPE);
    }
    while (p->written < p->payload_len) {
        ssize_t n = write(p->in_fd, p->payload + p->written, p->payload_len - p->written);

        if (n > 0) {
            p->written += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        /* EPIPE or worse: the handler does not want the rest. */
        p->written = p->payload_len;
        if (n < 0 && errno == EPIPE && !pending_before) {
            struct timespec zero = {0, 0};

            sigtimedwait(&pipe_set, NULL, &zero);
        }
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (p->written >= p->payload_len) {
        close(p->in_fd);
        p->in_fd = -1;
    }
}

/* Reads at most budget bytes of the child's stderr, keeping the tail. */
static void drain(walq__proc *p, size_t budget)
{
    char buf[4096];

    while (p->err_fd >= 0 && budget > 0) {
        ssize_t n = read(p->err_fd, buf, sizeof(buf) < budget ? sizeof(buf) : budget);

        if (n > 0) {
            size_t k = (size_t)n;

            budget -= k;

            /* Keep only the last WALQ__ERRTAIL bytes: the end says what failed. */
            if (k >= WALQ__ERRTAIL) {
                p->errcut |= k > WALQ__ERRTAIL || p->errlen > 0;
                memcpy(p->errtail, buf + k - WALQ__ERRTAIL, WALQ__ERRTAIL);
                p->errlen = WALQ__ERRTAIL;
            } else {
                size_t keep = p->errlen + k > WALQ__ERRTAIL ? WALQ__ERRTAIL - k : p->errlen;

                p->errcut |= keep < p->errlen;
                memmove(p->errtail, p->errtail + p->errlen - keep, keep);
                memcpy(p->errtail + keep, buf, k);
                p->errlen = keep + k;
            }
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        close(p->err_fd);
        p->err_fd = -1;
    }
}

void walq__proc_drain_stderr(walq__proc *p)
{
    drain(p, WALQ__STDERR_BUDGET);
}

void walq__proc_kill(walq__proc *p, int sig)
{
    if (p->pid > 0)
        kill(-p->pid, sig);
}

int walq__proc_exited(const walq__proc *p)
{
    siginfo_t info;
    int r;

    if (p->pid <= 0)
        return 1;
    memset(&info, 0, sizeof(info));
    do {
        r = waitid(P_PID, (id_t)p->pid, &info, WEXITED | WNOHANG | WNOWAIT);
    } while (r < 0 && errno == EINTR);
    return r == 0 && info.si_pid == p->pid;
}

/*
 * ": " and the end of what the child wrote to stderr, in at most len bytes
 * (with the NUL), or "" when it wrote nothing.  The text is valid UTF-8
 * whatever the child wrote, even when the tail starts inside a character.
 */
static void describe_tail(const walq__proc *p, char *out, size_t len)
{
    size_t start = 0, end = p->errlen;
    char line[WALQ__ERRTAIL];
    char *clean;
    size_t k = 0;

    if (len > 0)
        out[0] = '\0';
    while (end > 0 && (p->errtail[end - 1] == '\n' || p->errtail[end - 1] == '\r'))
        end--;
    /* The last two lines are usually the message that matters. */
    for (size_t i = end, nl = 0; i > 0; i--) {
        if (p->errtail[i - 1] == '\n' && ++nl == 2) {
            start = i;
            break;
        }
    }
    /* A tail cut from a longer output may begin with the end of a character. */
    if (start == 0 && p->errcut)
        while (start < end && start < 3 && ((unsigned char)p->errtail[start] & 0xC0) == 0x80)
            start++;
    for (size_t i = start; i < end; i++) {
        unsigned char c = (unsigned char)p->errtail[i];

        line[k++] = (c == '\n' || c == '\r' || c == '\t') ? ' ' : (char)c;
    }
    if (k == 0 || len <= 3)
        return;
    clean = walq__utf8_clean(line, k, len - 2);
    if (clean == NULL)
        return;
    if (clean[0] != '\0')
        snprintf(out, len, ": %s", clean);
    free(clean);
}

int walq__proc_reap(walq__proc *p, walq__verdict *verdict, char *err, size_t errlen)
{
    int status;
    pid_t r;
    size_t n;

    do {
        r = waitpid(p->pid, &status, WNOHANG);
    } while (r < 0 && errno == EINTR);
    if (r == 0)
        return 0;
    if (r < 0) {
        *verdict = WALQ__VERDICT_FAIL;
        snprintf(err, errlen, "could not wait for handler process %d: %s", (int)p->pid,
                 strerror(errno));
        p->pid = -1;
        return 1;
    }
    p->pid = -1;
    /*
     * The end of its stderr is still in the pipe, which holds at most 1 MiB
     * (pipe-max-size); the bound holds against whatever it left running.
     */
    drain(p, 16 * WALQ__STDERR_BUDGET);
    err[0] = '\0';
    *verdict = WALQ__VERDICT_FAIL;
    if (p->timed_out) {
        snprintf(err, errlen, "handler timed out and was killed");
    } else if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
        *verdict = WALQ__VERDICT_DONE;
        return 1;
    } else if (WIFEXITED(status) && WEXITSTATUS(status) == WALQ__EXIT_RETRY) {
        *verdict = WALQ__VERDICT_RETRY;
        snprintf(err, errlen, "handler asked for a retry (exit status %d)", WALQ__EXIT_RETRY);
    } else if (WIFEXITED(status)) {
        snprintf(err, errlen, "handler exited with exit status %d", WEXITSTATUS(status));
    } else if (WIFSIGNALED(status)) {
        snprintf(err, errlen, "handler was terminated by signal %d (%s)", WTERMSIG(status),
                 strsignal(WTERMSIG(status)));
    } else {
        snprintf(err, errlen, "handler ended with unrecognized status %d", status);
        return 1;
    }
    /* The tail goes in the room that is left, so that no cut splits a character. */
    n = strlen(err);
    if (n + 1 < errlen)
        describe_tail(p, err + n, errlen - n);
    return 1;
}

void walq__proc_close(walq__proc *p)
{
    if (p->in_fd >= 0)
        close(p->in_fd);
    if (p->err_fd >= 0)
        close(p->err_fd);
    if (p->pidfd >= 0)
        close(p->pidfd);
    p->in_fd = p->err_fd = p->pidfd = -1;
}
