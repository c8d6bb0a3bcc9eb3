/*
 * A consumer written against the C API: it counts the words of each job's
 * payload and prints one line per job.  Jobs whose payload holds
 * "fail": true fail, to show retries; "poison": true gives up at once.
 *
 *   walq-example-consumer GROUP QUEUE [--drain]
 *
 * The server comes from the libpq environment (PGHOST, PGDATABASE, ...).
 */
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include <walq.h>

static walq_consumer *consumer;

static void on_signal(int sig)
{
    (void)sig;
    /* Safe in a signal handler: it only sets a flag and wakes the loop. */
    walq_consumer_stop(consumer, 0);
}

static void on_log(walq_log_level level, const char *msg, void *payload)
{
    (void)payload;
    fprintf(stderr, "%s: %s\n", level == WALQ_LOG_ERROR ? "error" : "log", msg);
}

static walq_verdict count_words(char *err, size_t errlen, const walq_job *job, void *payload)
{
    size_t len, words = 0;
    const char *p = walq_job_payload(job, &len);
    int in_word = 0;

    (void)payload;
    if (strstr(p, "\"fail\": true") != NULL) {
        snprintf(err, errlen, "payload asks to fail (attempt %d)", walq_job_attempt(job));
        return WALQ_JOB_RETRY;
    }
    if (strstr(p, "\"poison\": true") != NULL) {
        snprintf(err, errlen, "payload is poison: no attempt can succeed");
        return WALQ_JOB_DEAD;
    }
    for (size_t i = 0; i < len; i++) {
        int space = p[i] == ' ' || p[i] == '\n' || p[i] == '\t';

        words += !space && !in_word;
        in_word = !space;
    }
    printf("job %lld on %s: %zu words\n", (long long)walq_job_id(job), walq_job_queue(job), words);
    fflush(stdout);
    return WALQ_JOB_DONE;
}

int main(int argc, char **argv)
{
    walq_options opts = WALQ_OPTIONS_INIT;
    const char *queues[1];
    int rc;

    if (argc < 3) {
        fprintf(stderr, "usage: %s GROUP QUEUE [--drain]\n", argv[0]);
        return 2;
    }
    queues[0] = argv[2];
    opts.group = argv[1];
    opts.queues = queues;
    opts.nqueues = 1;
    opts.handler = WALQ_HANDLER_CALLBACK;
    opts.callback = count_words;
    opts.drain = argc > 3 && strcmp(argv[3], "--drain") == 0;
    opts.backoff_min_ms = 10;
    opts.backoff_max_ms = 100;
    opts.log = on_log;
    opts.log_level = WALQ_LOG_WARNING;

    if (walq_consumer_open(&consumer, &opts) != 0) {
        fprintf(stderr, "error: %s\n", walq_last_error());
        return 1;
    }
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);
    rc = walq_consumer_run(consumer);
    if (rc != 0)
        fprintf(stderr, "error: %s (%s)\n", walq_consumer_errmsg(consumer), walq_strerror(rc));
    walq_consumer_free(consumer);
    return rc == 0 ? 0 : 1;
}
