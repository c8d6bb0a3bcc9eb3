/*
 * The run stage's exec handler: one child process per job, argv run without
 * a shell, the payload on its stdin, the job in its environment, in its own
 * process group so that a timeout kills everything it started.
 */
#ifndef WALQ_RUN_H
#define WALQ_RUN_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Exit status with which a handler asks for a retry (EX_TEMPFAIL). */
#define WALQ__EXIT_RETRY 75

#define WALQ__ERRTAIL 512

/*
 * What one walq__proc_drain_stderr() call reads at most, so that a handler
 * that writes without end cannot starve the consumer's loop.
 */
#define WALQ__STDERR_BUDGET ((size_t)64 << 10)

/*
 * What a handler reports of an attempt.  RETRY and FAIL both run the job
 * again after the backoff until max_attempts; DEAD gives up at once.
 */
typedef enum walq__verdict {
    WALQ__VERDICT_DONE = 0,
    WALQ__VERDICT_RETRY, /* the handler asked for it */
    WALQ__VERDICT_FAIL,  /* any other exit, a signal or a timeout */
    WALQ__VERDICT_DEAD   /* the handler gave up on the job (C API, coprocess reply) */
} walq__verdict;

typedef struct walq__proc {
    pid_t pid;
    int pidfd;  /* readable once the child exits; -1 where pidfds are missing */
    int in_fd;  /* payload still to write, or -1 */
    int err_fd; /* the child's stderr, or -1 */
    const char *payload;
    size_t payload_len;
    size_t written;
    char errtail[WALQ__ERRTAIL]; /* the last bytes the child wrote to stderr */
    size_t errlen;
    int errcut;       /* it wrote more than errtail holds: errtail starts anywhere */
    int64_t deadline; /* monotonic microseconds, 0: none */
    int timed_out;
} walq__proc;

typedef struct walq__job_env {
    const char *group;
    const char *queue;
    int64_t job_id;
    int attempt;
    const char *const *pass_env; /* walq_options.pass_env: NULL-terminated, or NULL */
} walq__job_env;

/*
 * Whether the entry ("NAME=value") of the consumer's environment goes to a
 * handler: not the variables walq sets for the job (an outer walq's), and
 * no variable whose name starts with PG unless a pattern of pass (a name,
 * or a prefix ending in "*"; NULL-terminated, or NULL) names it.
 */
int walq__env_passes(const char *entry, const char *const *pass);

/*
 * A handler's environment: the entries of environ that walq__env_passes()
 * lets through, then the nextra entries of extra.  The array is the
 * caller's to free; the strings stay borrowed.  NULL when out of memory.
 */
char **walq__handler_environ(const char *const *pass, char *const *extra, size_t nextra);

/*
 * Starts argv (searched in PATH) in a process group of its own, with default
 * signal handling, stdin from in_fd and, unless -1, stdout from out_fd and
 * stderr from err_fd.  Returns 0 or an errno value.
 */
int walq__spawn_group(pid_t *pid, char *const *argv, char *const *envp, int in_fd, int out_fd,
                      int err_fd);

/* A pidfd for pid, or -1 (errno ENOSYS where the kernel or valgrind lacks them). */
int walq__pidfd_open(pid_t pid);

/*
 * Starts argv with the payload (borrowed until the process is finished) on
 * stdin.  Returns 0, or WALQ_EHANDLER with walq_last_error() set.
 */
int walq__proc_start(walq__proc *p, char *const *argv, const walq__job_env *env,
                     const char *payload, size_t len, int64_t deadline);

/* Writes what the pipe takes of the payload; closes stdin when done. */
void walq__proc_feed(walq__proc *p);

/*
 * Reads what the child wrote to stderr, at most WALQ__STDERR_BUDGET bytes a
 * call, keeping the tail.
 */
void walq__proc_drain_stderr(walq__proc *p);

/* Kills the child's process group. */
void walq__proc_kill(walq__proc *p, int sig);

/*
 * Whether the child has exited (it is not reaped: walq__proc_reap still
 * reports how).  One past its deadline that exited by itself, while the
 * caller was busy elsewhere, did not time out.
 */
int walq__proc_exited(const walq__proc *p);

/*
 * Reaps the child if it has exited.  Returns 1 with the verdict and a
 * description of a failure in err (valid UTF-8, with the end of its stderr),
 * or 0 if it is still running.
 */
int walq__proc_reap(walq__proc *p, walq__verdict *verdict, char *err, size_t errlen);

/* Releases the descriptors (after reaping). */
void walq__proc_close(walq__proc *p);

#endif
