/*
 * Unit tests of the coprocess handler, without a server: small /bin/sh
 * workers, and a loop that polls and processes the way the consumer does.
 */
#include <check.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sys/wait.h>

#include "handler.h"
#include "text.h"

#define MAXJOBS 256

/* What the handler reported, per job id. */
typedef struct report {
    int ended[MAXJOBS];
    int abandoned[MAXJOBS];
    walq__verdict verdict[MAXJOBS];
    char err[MAXJOBS][600];
    int nended;
    int warnings;
    char firstwarn[1024];
    char lastwarn[1024];
} report;

static report rep;
static walq__job *jobs[MAXJOBS];

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

static void on_log(walq_log_level level, const char *msg, void *payload)
{
    (void)payload;
    if (level == WALQ_LOG_WARNING) {
        if (rep.warnings++ == 0)
            snprintf(rep.firstwarn, sizeof(rep.firstwarn), "%s", msg);
        snprintf(rep.lastwarn, sizeof(rep.lastwarn), "%s", msg);
    }
}

static walq__log test_log = {.fn = on_log, .level = WALQ_LOG_WARNING};

static walq__handler *open_handler(const char *script, int workers, int inflight, double timeout)
{
    static char *argv[4];
    walq__handler *h;

    argv[0] = "/bin/sh";
    argv[1] = "-c";
    argv[2] = (char *)script;
    argv[3] = NULL;
    memset(&rep, 0, sizeof(rep));
    ck_assert_int_eq(walq__handler_coproc_new(&h, argv, workers, inflight, timeout), 0);
    h->done = on_done;
    h->abandon = on_abandon;
    h->log = &test_log;
    h->group = "g";
    return h;
}

static walq__job *job(int64_t id, const char *payload)
{
    walq__job *j = calloc(1, sizeof(*j));

    ck_assert_ptr_nonnull(j);
    j->id = id;
    j->queue = "q";
    j->payload = (char *)payload;
    j->payload_len = strlen(payload);
    j->attempts = 1;
    j->pending_idx = -1;
    jobs[id] = j;
    return j;
}

static void free_jobs(void)
{
    for (int i = 0; i < MAXJOBS; i++) {
        free(jobs[i]);
        jobs[i] = NULL;
    }
}

static void start(walq__handler *h, int64_t id, const char *payload)
{
    /* As the consumer does: no job without room. */
    ck_assert(h->ops->has_room(h));
    ck_assert_int_eq(h->ops->start(h, job(id, payload), walq__mono_us()), 0);
}

/* Runs the handler's part of the consumer's loop until n jobs ended or secs passed. */
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

/* Replies to each request by its id; the payload says how. */
static const char *const worker = "while IFS= read -r l; do\n"
                                  "  id=${l#*\\\"id\\\":}; id=${id%%,*}\n"
                                  "  case $l in\n"
                                  "  *'\"crash\"'*) exit 3 ;;\n"
                                  "  *'\"sleep\"'*) sleep 30 ;;\n"
                                  "  *'\"hold\"'*) ;;\n"
                                  "  *'\"garbage\"'*) echo 'not json' ;;\n"
                                  "  *'\"stranger\"'*) echo '{\"id\": 99999, \"ok\": true}' ;;\n"
                                  "  *'\"binary\"'*) printf '\\377\\000\\033x\\n' ;;\n"
                                  "  *'\"cr\"'*) printf '\\n  \\r\\n{\"id\":%s,\"ok\":true}\\r\\n' \"$id\" ;;\n"
                                  "  *'\"badtext\"'*) printf '{\"id\":%s,\"ok\":false,"
                                  "\"error\":\"a\\\\u0000b \\377 \\303\"}\\n' \"$id\" ;;\n"
                                  "  *'\"fail\"'*) printf '{\"id\":%s,\"ok\":false,\"error\":"
                                  "\"boom \\\\\"%s\\\\\"\"}\\n' \"$id\" \"$id\" ;;\n"
                                  "  *'\"retry\"'*) printf '{\"id\":%s,\"ok\":false,"
                                  "\"retry\":true}\\n' \"$id\" ;;\n"
                                  "  *'\"dead\"'*) printf '{\"id\":%s,\"ok\":false,"
                                  "\"dead\":true,\"error\":\"no such user\"}\\n' \"$id\" ;;\n"
                                  "  *'\"giveup\"'*) printf '{\"id\":%s,\"ok\":false,"
                                  "\"retry\":true,\"dead\":true}\\n' \"$id\" ;;\n"
                                  "  *'\"alive\"'*) printf '{\"id\":%s,\"ok\":false,"
                                  "\"dead\":false}\\n' \"$id\" ;;\n"
                                  "  *) printf '{\"id\":%s,\"ok\":true}\\n' \"$id\" ;;\n"
                                  "  esac\n"
                                  "done\n";

START_TEST(jobs_spread_over_workers_and_finish)
{
    walq__handler *h = open_handler(worker, 2, 4, 0);

    for (int i = 1; i <= 8; i++) {
        ck_assert(h->ops->has_room(h));
        start(h, i, "{\"n\": 1}");
    }
    /* 2 workers with 4 each: full until replies come. */
    ck_assert(!h->ops->has_room(h));
    ck_assert_uint_eq(h->ops->running(h), 8);
    run_until(h, 8, 10);
    for (int i = 9; i <= 100; i++) {
        while (!h->ops->has_room(h))
            run_until(h, rep.nended + 1, 10);
        start(h, i, "{\"n\": 1}");
    }
    run_until(h, 100, 10);
    ck_assert_int_eq(rep.nended, 100);
    for (int i = 1; i <= 100; i++) {
        ck_assert_int_eq(rep.ended[i], 1);
        ck_assert_int_eq(rep.verdict[i], WALQ__VERDICT_DONE);
    }
    ck_assert_uint_eq(h->ops->running(h), 0);
    ck_assert_int_eq(rep.warnings, 0);
    h->ops->kill_all(h); /* idle workers survive it */
    h->ops->free(h);
    free_jobs();
}
END_TEST

START_TEST(failures_and_retries_map_to_verdicts)
{
    walq__handler *h = open_handler(worker, 1, 8, 0);

    start(h, 1, "{\"fail\": true}");
    start(h, 2, "{\"retry\": true}");
    /* Blank lines and a trailing "\r" are no protocol error. */
    start(h, 3, "{\"cr\": true}");
    start(h, 4, "{\"badtext\": true}");
    run_until(h, 4, 10);
    ck_assert_int_eq(rep.verdict[1], WALQ__VERDICT_FAIL);
    ck_assert_str_eq(rep.err[1], "boom \"1\"");
    ck_assert_int_eq(rep.verdict[2], WALQ__VERDICT_RETRY);
    ck_assert_str_eq(rep.err[2], "the coprocess worker asked for a retry");
    ck_assert_int_eq(rep.verdict[3], WALQ__VERDICT_DONE);
    /* The worker's text is made valid UTF-8: NUL and bad bytes become U+FFFD. */
    ck_assert_int_eq(rep.verdict[4], WALQ__VERDICT_FAIL);
    ck_assert_str_eq(rep.err[4], "a\xEF\xBF\xBD" "b \xEF\xBF\xBD \xEF\xBF\xBD");
    ck_assert_int_eq(rep.warnings, 0);
    h->ops->free(h);
    free_jobs();
}
END_TEST

/*
 * A line that is not a reply breaks the protocol: without a timeout the
 * job would otherwise stay in flight for ever.  The worker is killed, its
 * jobs fail (and are retried), and it comes back.
 */
static void check_protocol_error(const char *payload, const char *why, const char *quoted)
{
    walq__handler *h = open_handler(worker, 1, 8, 0);
    char expect[256];

    start(h, 1, "{\"hold\": 1}"); /* read, never answered */
    start(h, 2, payload);
    run_until(h, 2, 10);
    ck_assert_int_eq(rep.nended, 2);
    snprintf(expect, sizeof(expect), ") was killed because it %s while running the job", why);
    for (int i = 1; i <= 2; i++) {
        ck_assert_int_eq(rep.verdict[i], WALQ__VERDICT_FAIL);
        ck_assert_msg(strstr(rep.err[i], "coprocess worker 1 (pid ") == rep.err[i] &&
                          strstr(rep.err[i], expect) != NULL,
                      "%s", rep.err[i]);
    }
    /* The first warning is the protocol error, quoting the line; then the restart. */
    ck_assert_int_eq(rep.warnings, 2);
    snprintf(expect, sizeof(expect), ") %s: \"%s\"; killing it", why, quoted);
    ck_assert_msg(strstr(rep.firstwarn, expect) != NULL, "%s", rep.firstwarn);
    ck_assert(walq__utf8_valid(rep.firstwarn, strlen(rep.firstwarn)));
    while (!h->ops->has_room(h))
        run_until(h, 3, 0.05);
    start(h, 3, "{}");
    run_until(h, 3, 10);
    ck_assert_int_eq(rep.verdict[3], WALQ__VERDICT_DONE);
    h->ops->free(h);
    free_jobs();
}

START_TEST(invalid_reply_kills_the_worker)
{
    check_protocol_error("{\"garbage\": true}", "sent an invalid reply (invalid JSON)",
                         "not json");
}
END_TEST

START_TEST(reply_for_a_job_not_in_flight_kills_the_worker)
{
    check_protocol_error("{\"stranger\": true}",
                         "replied for job 99999, which it was not running",
                         "{\"id\": 99999, \"ok\": true}");
}
END_TEST

START_TEST(binary_reply_is_quoted_sanitised)
{
    check_protocol_error("{\"binary\": true}", "sent an invalid reply (invalid JSON)", "???x");
}
END_TEST

START_TEST(dead_reply_gives_up_at_once)
{
    walq__handler *h = open_handler(worker, 1, 8, 0);

    start(h, 1, "{\"dead\": true}");
    start(h, 2, "{\"giveup\": true}");
    start(h, 3, "{\"alive\": true}");
    run_until(h, 3, 10);
    ck_assert_int_eq(rep.verdict[1], WALQ__VERDICT_DEAD);
    ck_assert_str_eq(rep.err[1], "no such user");
    /* "dead" wins over "retry"; without an error, walq writes one. */
    ck_assert_int_eq(rep.verdict[2], WALQ__VERDICT_DEAD);
    ck_assert_str_eq(rep.err[2], "the coprocess worker gave up on the job");
    /* "dead": false is an ordinary failure. */
    ck_assert_int_eq(rep.verdict[3], WALQ__VERDICT_FAIL);
    ck_assert_int_eq(rep.warnings, 0);
    h->ops->free(h);
    free_jobs();
}
END_TEST

START_TEST(request_is_one_line_of_json)
{
    char script[512], path[] = "/tmp/walq-test-coproc.XXXXXX", line[512] = "";
    int fd = mkstemp(path);
    walq__handler *h;
    FILE *f;

    ck_assert_int_ge(fd, 0);
    close(fd);
    snprintf(script, sizeof(script),
             "while IFS= read -r l; do printf '%%s\\n' \"$l\" >>%s;"
             " printf '{\"id\":5,\"ok\":true}\\n'; done",
             path);
    h = open_handler(script, 1, 1, 0);
    h->group = "g\\1";
    jobs[5] = job(5, "{\"a\": [1, 2.50], \"s\": \"x\\ny\"}");
    jobs[5]->queue = "q\"\n";
    jobs[5]->attempts = 3;
    ck_assert_int_eq(h->ops->start(h, jobs[5], walq__mono_us()), 0);
    run_until(h, 1, 10);
    h->ops->free(h);
    f = fopen(path, "r");
    ck_assert_ptr_nonnull(f);
    ck_assert_ptr_nonnull(fgets(line, sizeof(line), f));
    fclose(f);
    unlink(path);
    ck_assert_str_eq(line,
                     "{\"id\":5,\"queue\":\"q\\\"\\u000a\",\"attempt\":3,\"group\":\"g\\\\1\","
                     "\"payload\":{\"a\": [1, 2.50], \"s\": \"x\\ny\"}}\n");
    free_jobs();
}
END_TEST

START_TEST(crash_fails_jobs_in_flight_and_restarts)
{
    walq__handler *h = open_handler(worker, 1, 8, 0);

    start(h, 1, "{\"hold\": 1}"); /* read, never answered */
    start(h, 2, "{\"crash\": true}");
    run_until(h, 2, 10);
    ck_assert_int_eq(rep.verdict[1], WALQ__VERDICT_FAIL);
    ck_assert_int_eq(rep.verdict[2], WALQ__VERDICT_FAIL);
    ck_assert_msg(strstr(rep.err[2], "coprocess worker 1 (pid ") == rep.err[2] &&
                      strstr(rep.err[2], ") exited with exit status 3 while running the job"),
                  "%s", rep.err[2]);
    /* The worker comes back (after a pause: it died young) and works. */
    while (!h->ops->has_room(h))
        run_until(h, 3, 0.05);
    start(h, 3, "{}");
    run_until(h, 3, 10);
    ck_assert_int_eq(rep.verdict[3], WALQ__VERDICT_DONE);
    h->ops->free(h);
    free_jobs();
}
END_TEST

START_TEST(timeout_kills_the_worker_and_fails_its_jobs)
{
    walq__handler *h = open_handler("while IFS= read -r l; do sleep 30; done", 1, 8, 0.3);
    int64_t t0 = walq__mono_us();

    start(h, 1, "{}");
    start(h, 2, "{}");
    run_until(h, 2, 10);
    ck_assert_int_lt(walq__mono_us() - t0, 3000000);
    ck_assert_int_eq(rep.verdict[1], WALQ__VERDICT_FAIL);
    ck_assert_msg(strstr(rep.err[1], "timed out after 0.3 s; coprocess worker 1 (pid ") ==
                      rep.err[1],
                  "%s", rep.err[1]);
    ck_assert_int_eq(rep.verdict[2], WALQ__VERDICT_FAIL);
    ck_assert_msg(strstr(rep.err[2], "timed out") != NULL, "%s", rep.err[2]);
    h->ops->free(h);
    free_jobs();
}
END_TEST

START_TEST(timeout_names_the_job_that_caused_it)
{
    walq__handler *h = open_handler("while IFS= read -r l; do sleep 30; done", 1, 8, 1.0);

    start(h, 1, "{}");
    /* Job 2 starts later, so only job 1 is past its time at the kill. */
    run_until(h, 1, 0.4);
    start(h, 2, "{}");
    run_until(h, 2, 10);
    ck_assert_msg(strstr(rep.err[1], "timed out after 1 s") == rep.err[1], "%s", rep.err[1]);
    ck_assert_msg(strstr(rep.err[2], "was killed because job 1 on it timed out after 1 s "
                                     "while running the job") != NULL,
                  "%s", rep.err[2]);
    h->ops->free(h);
    free_jobs();
}
END_TEST

START_TEST(overlong_line_breaks_the_worker)
{
    walq__handler *h =
        open_handler("read -r l; head -c 17000000 /dev/zero | tr '\\000' x; sleep 30", 1, 1, 0);

    start(h, 1, "{}");
    run_until(h, 1, 20);
    ck_assert_int_eq(rep.verdict[1], WALQ__VERDICT_FAIL);
    ck_assert_msg(strstr(rep.err[1], "was killed because it sent a line longer than 16 MiB") !=
                      NULL,
                  "%s", rep.err[1]);
    h->ops->free(h);
    free_jobs();
}
END_TEST

START_TEST(kill_all_abandons_jobs_in_flight)
{
    walq__handler *h = open_handler(worker, 2, 4, 0);

    for (int i = 1; i <= 6; i++)
        start(h, i, "{\"sleep\": 1}");
    run_until(h, 1, 0.2);
    h->ops->kill_all(h);
    ck_assert_uint_eq(h->ops->running(h), 0);
    ck_assert_int_eq(rep.nended, 0);
    for (int i = 1; i <= 6; i++)
        ck_assert_int_eq(rep.abandoned[i], 1);
    /* The workers come back for the next run. */
    run_until(h, 1, 0.2);
    start(h, 7, "{}");
    run_until(h, 1, 10);
    ck_assert_int_eq(rep.verdict[7], WALQ__VERDICT_DONE);
    h->ops->free(h);
    free_jobs();
}
END_TEST

START_TEST(program_that_cannot_start_fails_jobs)
{
    static char *argv[] = {"/nonexistent/walq-worker", NULL};
    walq__handler *h;

    memset(&rep, 0, sizeof(rep));
    ck_assert_int_eq(walq__handler_coproc_new(&h, argv, 2, 4, 0), 0);
    h->done = on_done;
    h->abandon = on_abandon;
    h->log = &test_log;
    ck_assert(h->ops->has_room(h));
    ck_assert_int_eq(h->ops->start(h, job(1, "{}"), walq__mono_us()), 0);
    ck_assert_int_eq(rep.verdict[1], WALQ__VERDICT_FAIL);
    ck_assert_msg(strstr(rep.err[1], "could not start coprocess worker ") == rep.err[1] &&
                      strstr(rep.err[1], "could not run \"/nonexistent/walq-worker\"") != NULL,
                  "%s", rep.err[1]);
    /*
     * While no worker runs, jobs keep failing rather than waiting forever.
     * (Under valgrind this test fails: its exec cannot report a failure.)
     */
    ck_assert(h->ops->has_room(h));
    h->ops->free(h);
    free_jobs();
}
END_TEST

START_TEST(free_closes_stdin_then_kills)
{
    walq__handler *h =
        open_handler("trap '' TERM; while IFS= read -r l; do :; done; sleep 30", 1, 1, 0);
    int64_t t0;

    run_until(h, 1, 0.2); /* starts the worker */
    t0 = walq__mono_us();
    h->ops->free(h);
    /* Stopped within the 2 s grace and a little more, not the 30 s sleep. */
    ck_assert_int_lt(walq__mono_us() - t0, 3500000);
    ck_assert_int_ge(walq__mono_us() - t0, 1900000);
    ck_assert_int_eq(rep.warnings, 1);
}
END_TEST

START_TEST(free_stops_a_worker_that_writes_without_end)
{
    /*
     * At the end of its stdin the worker writes for ever, into a pipe made
     * as large as it goes, faster than anyone reads 4 KiB at a time.
     */
    walq__handler *h = open_handler(
        "while IFS= read -r l; do :; done; exec python3 -c '\n"
        "import fcntl, os\n"
        "try:\n"
        "    fcntl.fcntl(1, 1031, 1 << 20)\n" /* F_SETPIPE_SZ */
        "except OSError:\n"
        "    pass\n"
        "b = bytes(1 << 20)\n"
        "while True:\n"
        "    os.write(1, b)\n"
        "'",
        1, 1, 0);
    int64_t t0;

    run_until(h, 1, 0.2);
    t0 = walq__mono_us();
    h->ops->free(h);
    ck_assert_int_lt(walq__mono_us() - t0, 3500000);
    ck_assert_int_eq(rep.warnings, 1);
    ck_assert_msg(strstr(rep.lastwarn, "did not exit within 2 s of its standard input closing"),
                  "%s", rep.lastwarn);
}
END_TEST

/* Has process pid (a child of this one) exited, by deadline? */
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

START_TEST(kill_overdue_kills_and_process_reports)
{
    char script[256], path[] = "/tmp/walq-test-coproc.XXXXXX";
    int fd = mkstemp(path);
    walq__handler *h;
    pid_t pid;

    ck_assert_int_ge(fd, 0);
    close(fd);
    unlink(path);
    snprintf(script, sizeof(script),
             "echo $$ >%s.tmp; mv %s.tmp %s; while IFS= read -r l; do sleep 30; done", path, path,
             path);
    h = open_handler(script, 1, 4, 0.3);
    ck_assert_ptr_nonnull(h->ops->kill_overdue);
    start(h, 1, "{}");
    pid = read_pid(path);
    unlink(path);
    /* The consumer waits on a server: no process(), only kill_overdue. */
    poll(NULL, 0, 400);
    h->ops->kill_overdue(h, walq__mono_us());
    ck_assert_int_eq(rep.nended, 0);
    ck_assert(exited_by(pid, walq__mono_us() + 2000000));
    run_until(h, 1, 5);
    ck_assert_int_eq(rep.verdict[1], WALQ__VERDICT_FAIL);
    ck_assert_msg(strstr(rep.err[1], "timed out after 0.3 s; coprocess worker 1 (pid ") ==
                      rep.err[1],
                  "%s", rep.err[1]);
    h->ops->free(h);
    free_jobs();
}
END_TEST

static Suite *coproc_suite(void)
{
    Suite *s = suite_create("coproc");
    TCase *tc = tcase_create("core");

    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, jobs_spread_over_workers_and_finish);
    tcase_add_test(tc, failures_and_retries_map_to_verdicts);
    tcase_add_test(tc, dead_reply_gives_up_at_once);
    tcase_add_test(tc, invalid_reply_kills_the_worker);
    tcase_add_test(tc, reply_for_a_job_not_in_flight_kills_the_worker);
    tcase_add_test(tc, binary_reply_is_quoted_sanitised);
    tcase_add_test(tc, request_is_one_line_of_json);
    tcase_add_test(tc, crash_fails_jobs_in_flight_and_restarts);
    tcase_add_test(tc, timeout_kills_the_worker_and_fails_its_jobs);
    tcase_add_test(tc, timeout_names_the_job_that_caused_it);
    tcase_add_test(tc, overlong_line_breaks_the_worker);
    tcase_add_test(tc, kill_all_abandons_jobs_in_flight);
    tcase_add_test(tc, program_that_cannot_start_fails_jobs);
    tcase_add_test(tc, free_closes_stdin_then_kills);
    tcase_add_test(tc, free_stops_a_worker_that_writes_without_end);
    tcase_add_test(tc, kill_overdue_kills_and_process_reports);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(coproc_suite());
    int failed;

    /*
     * SIGPIPE kills, as in a program that leaves it alone: a worker that
     * stops reading must not take the handler's process with it.
     */
    signal(SIGPIPE, SIG_DFL);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
