/*
 * Unit tests of the exec handler and its processes (src/run.c,
 * src/handler_exec.c), without a server: small /bin/sh handlers, and a loop
 * that polls and processes the way the consumer does.
 */
#include <check.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <fcntl.h>
#include <unistd.h>

#include "handler.h"
#include "text.h"

#define MAXJOBS 16

typedef struct report {
    int ended[MAXJOBS];
    int abandoned[MAXJOBS];
    walq__verdict verdict[MAXJOBS];
    char err[MAXJOBS][1100];
    int nended;
} report;

static report rep;
static walq__job jobs[MAXJOBS];

static int on_done(void *arg, walq__job *job, walq__verdict v, const char *err)
{
    (void)arg;
    ck_assert_int_lt(job->id, MAXJOBS);
    rep.ended[job->id]++;
    rep.nended++;
    rep.verdict[job->id] = v;
    snprintf(rep.err[job->id], sizeof(rep.err[0]), "%s", err ? err : "");
    return 0;
}

static void on_abandon(void *arg, walq__job *job)
{
    (void)arg;
    rep.abandoned[job->id]++;
}

static char *sh_argv[4] = {"/bin/sh", "-c", NULL, NULL};

static walq__handler *open_exec(const char *script, int concurrency, double timeout)
{
    walq__handler *h;

    sh_argv[2] = (char *)script;
    memset(&rep, 0, sizeof(rep));
    ck_assert_int_eq(walq__handler_exec_new(&h, sh_argv, concurrency, timeout), 0);
    h->done = on_done;
    h->abandon = on_abandon;
    h->group = "g";
    return h;
}

static void start(walq__handler *h, int64_t id)
{
    walq__job *j = &jobs[id];

    memset(j, 0, sizeof(*j));
    j->id = id;
    j->queue = "q";
    j->payload = "{}";
    j->payload_len = 2;
    j->attempts = 1;
    j->pending_idx = -1;
    ck_assert(h->ops->has_room(h));
    ck_assert_int_eq(h->ops->start(h, j, walq__mono_us()), 0);
}

/* The consumer's loop, for the handler alone, until n jobs ended or secs passed. */
static void run_until(walq__handler *h, int n, double secs)
{
    struct pollfd pfd[64];
    int64_t end = walq__mono_us() + (int64_t)(secs * 1e6);

    ck_assert_uint_le(h->ops->max_fds(h), 64);
    while (rep.nended < n && walq__mono_us() < end) {
        int64_t now = walq__mono_us(), wake_at = 0;
        size_t k = h->ops->fds(h, pfd, 64, now, &wake_at);
        int ms = 100;

        if (wake_at)
            ms = wake_at <= now ? 0 : (int)((wake_at - now + 999) / 1000);
        poll(pfd, k, ms > 100 ? 100 : ms);
        ck_assert_int_eq(h->ops->process(h, walq__mono_us()), 0);
    }
}

/* Runs script as one job to its end; its error text in rep.err[1]. */
static void run_one(const char *script)
{
    walq__handler *h = open_exec(script, 1, 0);

    start(h, 1);
    run_until(h, 1, 10);
    ck_assert_int_eq(rep.nended, 1);
    h->ops->free(h);
}

/* Handlers get no PG variable unless asked, nor the WALQ_ job variables of an outer walq. */
START_TEST(handler_environment_keeps_pg_variables_back)
{
    static const char *const none[] = {NULL};
    static const char *const pass[] = {"PGPASSWORD", "PGSSL*", NULL};

    ck_assert(walq__env_passes("HOME=/root", NULL));
    ck_assert(walq__env_passes("PATH=/bin", none));
    ck_assert(walq__env_passes("P=1", NULL));
    ck_assert(walq__env_passes("PG", pass) == 0);
    ck_assert(walq__env_passes("WALQ_PLUGIN=pgoutput", NULL));
    ck_assert(!walq__env_passes("PGPASSWORD=SuperSecret42", NULL));
    ck_assert(!walq__env_passes("PGPASSWORD=SuperSecret42", none));
    ck_assert(!walq__env_passes("PGPASSFILE=/root/.pgpass", NULL));
    ck_assert(!walq__env_passes("PGSERVICEFILE=/etc/pg_service.conf", NULL));
    ck_assert(!walq__env_passes("PGHOST=db", NULL));
    ck_assert(!walq__env_passes("PGSOMETHINGNEW=1", NULL));
    ck_assert(!walq__env_passes("PGPASSWORD", NULL));
    ck_assert(walq__env_passes("PGPASSWORD=SuperSecret42", pass));
    ck_assert(walq__env_passes("PGSSLKEY=/k", pass));
    ck_assert(walq__env_passes("PGSSL=x", pass));
    /* A name is the whole name: PGPASSWORD does not pass PGPASSWORDX, nor a prefix of it. */
    ck_assert(!walq__env_passes("PGPASSWORDX=1", pass));
    ck_assert(!walq__env_passes("PGPASS=1", pass));
    ck_assert(!walq__env_passes("PGHOST=db", pass));
    ck_assert(!walq__env_passes("WALQ_JOB_ID=7", pass));
    ck_assert(!walq__env_passes("WALQ_WORKER=2", NULL));
    ck_assert(walq__env_passes("WALQ_JOB_IDS=7", NULL));
}
END_TEST

/* What walq__handler_environ() builds: the filtered environment, then the extras, in order. */
START_TEST(handler_environ_filters_then_appends)
{
    static const char *const pass[] = {"PGAPPNAME", NULL};
    char a[] = "WALQ_JOB_ID=1", b[] = "WALQ_QUEUE=q";
    char *extra[] = {a, b};
    char **envp;
    size_t n = 0, pg = 0, app = 0;

    setenv("PGPASSWORD", "SuperSecret42", 1);
    setenv("PGAPPNAME", "tests", 1);
    setenv("WALQ_JOB_ID", "99", 1);
    envp = walq__handler_environ(pass, extra, 2);
    ck_assert_ptr_nonnull(envp);
    for (; envp[n] != NULL; n++) {
        pg += strncmp(envp[n], "PGPASSWORD=", 11) == 0;
        app += strcmp(envp[n], "PGAPPNAME=tests") == 0;
        ck_assert_str_ne(envp[n], "WALQ_JOB_ID=99");
    }
    ck_assert_int_eq(pg, 0);
    ck_assert_int_eq(app, 1);
    ck_assert_int_ge(n, 3);
    ck_assert_ptr_eq(envp[n - 2], a);
    ck_assert_ptr_eq(envp[n - 1], b);
    free(envp);
    unsetenv("PGPASSWORD");
    unsetenv("PGAPPNAME");
    unsetenv("WALQ_JOB_ID");
}
END_TEST

START_TEST(drain_reads_a_budget_per_call)
{
    static char *argv[] = {"/bin/sh", "-c", "head -c 1000000 /dev/zero >&2; sleep 30", NULL};
    walq__job_env env = {"g", "q", 1, 1, NULL};
    walq__proc p;
    int queued = 0, size;
    int64_t deadline;

    ck_assert_int_eq(walq__proc_start(&p, argv, &env, "", 0, 0), 0);
    /* A pipe large enough for all of it, so that the writer never waits for the reader. */
    size = fcntl(p.err_fd, F_SETPIPE_SZ, 1 << 20);
    if (size < 1000000) {
        fprintf(stderr, "SKIP: drain_reads_a_budget_per_call: no 1 MiB pipe (%d)\n", size);
        walq__proc_kill(&p, SIGKILL);
        waitpid(p.pid, NULL, 0);
        walq__proc_close(&p);
        return;
    }
    deadline = walq__mono_us() + 10000000;
    while (queued < 1000000 && walq__mono_us() < deadline) {
        poll(NULL, 0, 10);
        ck_assert_int_eq(ioctl(p.err_fd, FIONREAD, &queued), 0);
    }
    ck_assert_int_eq(queued, 1000000);
    walq__proc_drain_stderr(&p);
    ck_assert_int_eq(ioctl(p.err_fd, FIONREAD, &queued), 0);
    ck_assert_int_eq(queued, 1000000 - (int)WALQ__STDERR_BUDGET);
    ck_assert_uint_eq(p.errlen, WALQ__ERRTAIL);
    walq__proc_kill(&p, SIGKILL);
    waitpid(p.pid, NULL, 0);
    walq__proc_close(&p);
}
END_TEST

START_TEST(tail_cut_inside_a_character_is_valid_utf8)
{
    /* 300 two-byte characters and an "x": the last 512 bytes start inside one. */
    run_one("i=0; while [ $i -lt 300 ]; do printf '\\303\\251'; i=$((i+1)); done >&2;"
            " printf x >&2; exit 1");
    ck_assert_int_eq(rep.verdict[1], WALQ__VERDICT_FAIL);
    ck_assert_msg(walq__utf8_valid(rep.err[1], strlen(rep.err[1])), "%s", rep.err[1]);
    ck_assert_msg(strncmp(rep.err[1], "handler exited with exit status 1: \xC3\xA9", 37) == 0, "%s",
                  rep.err[1]);
    ck_assert_uint_eq(strlen(rep.err[1]), 35 + 255 * 2 + 1);
}
END_TEST

START_TEST(tail_with_bad_bytes_and_nul_is_valid_utf8)
{
    run_one("printf 'first line\\nbad \\377 and \\000 nul\\n' >&2; exit 2");
    ck_assert_str_eq(rep.err[1], "handler exited with exit status 2: first line bad \xEF\xBF\xBD "
                                 "and \xEF\xBF\xBD nul");
}
END_TEST

START_TEST(tail_fits_a_small_buffer_whole_characters)
{
    walq__proc p;
    walq__verdict v;
    char err[41];
    static char *argv[] = {"/bin/sh", "-c",
                           "printf '\\342\\202\\254%.0s' 1 2 3 4 5 6 7 8 >&2; exit 3", NULL};
    walq__job_env env = {"g", "q", 1, 1, NULL};

    ck_assert_int_eq(walq__proc_start(&p, argv, &env, "", 0, 0), 0);
    while (!walq__proc_reap(&p, &v, err, sizeof(err)))
        poll(NULL, 0, 10);
    walq__proc_close(&p);
    /* As many whole euro signs as fit in what is left of 41 bytes: one. */
    ck_assert_msg(walq__utf8_valid(err, strlen(err)), "%s", err);
    ck_assert_str_eq(err, "handler exited with exit status 3: \xE2\x82\xAC");
}
END_TEST

static pid_t read_pid(const char *path)
{
    int64_t deadline = walq__mono_us() + 5000000;
    long pid = 0;

    while (pid == 0 && walq__mono_us() < deadline) {
        FILE *f = fopen(path, "r");

        if (f != NULL) {
            if (fscanf(f, "%ld", &pid) != 1)
                pid = 0;
            fclose(f);
        }
        if (pid == 0)
            poll(NULL, 0, 10);
    }
    ck_assert_int_gt(pid, 0);
    return (pid_t)pid;
}

/* Has pid (a child of this process) exited by deadline?  It is not reaped. */
static int exited_by(pid_t pid, int64_t deadline)
{
    do {
        siginfo_t si;

        memset(&si, 0, sizeof(si));
        if (waitid(P_PID, (id_t)pid, &si, WEXITED | WNOHANG | WNOWAIT) == 0 && si.si_pid == pid)
            return 1;
        poll(NULL, 0, 10);
    } while (walq__mono_us() < deadline);
    return 0;
}

START_TEST(kill_overdue_kills_and_process_reports)
{
    char script[256], path[] = "/tmp/walq-test-run.XXXXXX";
    int fd = mkstemp(path);
    walq__handler *h;
    pid_t pid;

    ck_assert_int_ge(fd, 0);
    close(fd);
    unlink(path);
    snprintf(script, sizeof(script), "echo $$ >%s.tmp; mv %s.tmp %s; exec sleep 30", path, path,
             path);
    h = open_exec(script, 2, 0.3);
    ck_assert_ptr_nonnull(h->ops->kill_overdue);
    start(h, 1);
    pid = read_pid(path);
    unlink(path);
    /* Not yet due: nothing happens. */
    h->ops->kill_overdue(h, walq__mono_us());
    ck_assert(!exited_by(pid, walq__mono_us() + 100000));
    /* The consumer waits on a server: no process(), only kill_overdue. */
    poll(NULL, 0, 300);
    h->ops->kill_overdue(h, walq__mono_us());
    ck_assert_int_eq(rep.nended, 0);
    ck_assert(exited_by(pid, walq__mono_us() + 2000000));
    run_until(h, 1, 5);
    ck_assert_int_eq(rep.verdict[1], WALQ__VERDICT_FAIL);
    ck_assert_str_eq(rep.err[1], "handler timed out and was killed");
    h->ops->free(h);
}
END_TEST

START_TEST(kill_all_abandons_every_job_at_once)
{
    walq__handler *h = open_exec("sleep 30 & sleep 30", 4, 0);
    int64_t t0;

    for (int i = 1; i <= 4; i++)
        start(h, i);
    run_until(h, 1, 0.2);
    t0 = walq__mono_us();
    h->ops->kill_all(h);
    ck_assert_int_lt(walq__mono_us() - t0, 1000000);
    ck_assert_uint_eq(h->ops->running(h), 0);
    ck_assert_int_eq(rep.nended, 0);
    for (int i = 1; i <= 4; i++)
        ck_assert_int_eq(rep.abandoned[i], 1);
    /* Every child was reaped: none is left to wait for. */
    ck_assert_int_eq(waitpid(-1, NULL, WNOHANG), -1);
    /* The slots are free again. */
    start(h, 5);
    run_until(h, 1, 0.1);
    h->ops->kill_all(h);
    ck_assert_int_eq(rep.abandoned[5], 1);
    h->ops->free(h);
}
END_TEST

static Suite *run_suite(void)
{
    Suite *s = suite_create("run");
    TCase *tc = tcase_create("core");

    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, handler_environment_keeps_pg_variables_back);
    tcase_add_test(tc, handler_environ_filters_then_appends);
    tcase_add_test(tc, drain_reads_a_budget_per_call);
    tcase_add_test(tc, tail_cut_inside_a_character_is_valid_utf8);
    tcase_add_test(tc, tail_with_bad_bytes_and_nul_is_valid_utf8);
    tcase_add_test(tc, tail_fits_a_small_buffer_whole_characters);
    tcase_add_test(tc, kill_overdue_kills_and_process_reports);
    tcase_add_test(tc, kill_all_abandons_every_job_at_once);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(run_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
