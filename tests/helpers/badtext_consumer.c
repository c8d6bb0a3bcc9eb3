/*
 * A consumer against the public C API whose callback handler writes text
 * that is not valid UTF-8 (Latin-1 "caf\xe9") into its error and asks for a
 * retry.  tests/integration/handler_text.sh runs it: the text must fail the job
 * alone, never the ack that records it.
 *
 *   walq-badtext-consumer GROUP QUEUE [--drain]
 *
 * Jobs whose payload has a member "bad" fail that way; the others are done.
 * The server comes from the libpq environment.  The id of each job run is
 * printed on a line of stdout.
 */
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include <walq.h>

static walq_consumer *consumer;

static void on_signal(int sig)
{
    (void)sig;
    walq_consumer_stop(consumer, 0);
}

static void on_log(walq_log_level level, const char *msg, void *payload)
{
    static const char *names[] = {"ERROR", "WARNING", "LOG", "DEBUG"};

    (void)payload;
    fprintf(stderr, "%s:  %s\n", names[level <= WALQ_LOG_DEBUG ? level : WALQ_LOG_DEBUG], msg);
}

static walq_verdict bad_text(char *err, size_t errlen, const walq_job *job, void *payload)
{
    const char *p = walq_job_payload(job, NULL);

    (void)payload;
    printf("%lld\n", (long long)walq_job_id(job));
    fflush(stdout);
    if (strstr(p, "\"bad\":") != NULL) {
        /* Latin-1 e-acute: a lone 0xE9 byte, invalid in UTF-8. */
        snprintf(err, errlen, "caf\xe9");
        return WALQ_JOB_RETRY;
    }
    return WALQ_JOB_DONE;
}

int main(int argc, char **argv)
{
    walq_options opts;
    const char *queues[1];
    int rc;

    if (argc < 3) {
        fprintf(stderr, "usage: %s GROUP QUEUE [--drain]\n", argv[0]);
        return 2;
    }
    if (walq_options_init(&opts, WALQ_OPTIONS_VERSION) != 0) {
        fprintf(stderr, "ERROR:  %s\n", walq_last_error());
        return 1;
    }
    queues[0] = argv[2];
    opts.group = argv[1];
    opts.queues = queues;
    opts.nqueues = 1;
    opts.handler = WALQ_HANDLER_CALLBACK;
    opts.callback = bad_text;
    opts.drain = argc > 3 && strcmp(argv[3], "--drain") == 0;
    opts.backoff_min_ms = 10;
    opts.backoff_max_ms = 100;
    opts.log = on_log;
    opts.log_level = WALQ_LOG_INFO;

    if (walq_consumer_open(&consumer, &opts) != 0) {
        fprintf(stderr, "ERROR:  %s\n", walq_last_error());
        return 1;
    }
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);
    rc = walq_consumer_run(consumer);
    if (rc != 0)
        fprintf(stderr, "ERROR:  %s (%s)\n", walq_consumer_errmsg(consumer), walq_strerror(rc));
    walq_consumer_free(consumer);
    return rc == 0 ? 0 : 1;
}
