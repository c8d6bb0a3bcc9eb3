/*
 * Microbenchmark of the wal2json decoder (src/decode.c): decodes typical
 * format-version 2 messages of a job insert a million times each and prints
 * the CPU time per message.  It is built with cc against the build tree, like
 * the other bench programs, and is not part of walq:
 *
 *   cc -O2 -g -Wall -Wextra -std=c11 -D_GNU_SOURCE -Iinclude -Isrc \
 *       bench/decode_bench.c build/libwalq.a \
 *       $(pkg-config --cflags --libs libpq json-c yajl) -lm -o decode-bench
 *   ./decode-bench [ITERATIONS [WORKLOAD]]
 *
 * WORKLOAD, a name as printed ("insert", "begin", ...), runs that one alone.
 * CPU time of the process is the figure printed, since it is the steadier one
 * on a shared machine; wall-clock time is printed beside it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "decode.h"
#include "walq.h"

#define TS "\"2026-11-25 01:02:03.123456+00\""

/* A job insert as wal2json prints it with include-types (the default). */
static const char insert_typed[] =
    "{\"action\":\"I\",\"xid\":1234,\"lsn\":\"0/1A2B3C4\",\"timestamp\":" TS ",\"schema\":"
    "\"walq\",\"table\":\"jobs\",\"columns\":["
    "{\"name\":\"id\",\"type\":\"bigint\",\"value\":123456},"
    "{\"name\":\"queue\",\"type\":\"text\",\"value\":\"bench\"},"
    "{\"name\":\"payload\",\"type\":\"jsonb\",\"value\":\"{\\\"n\\\": 1, \\\"k\\\": "
    "\\\"abc\\\"}\"},"
    "{\"name\":\"priority\",\"type\":\"integer\",\"value\":0},"
    "{\"name\":\"run_at\",\"type\":\"timestamp with time zone\",\"value\":" TS "},"
    "{\"name\":\"max_attempts\",\"type\":\"integer\",\"value\":25},"
    "{\"name\":\"dedup_key\",\"type\":\"text\",\"value\":null},"
    "{\"name\":\"created_at\",\"type\":\"timestamp with time zone\",\"value\":" TS "}]}";

/* The same insert from a slot started with include-types=0. */
static const char insert_untyped[] =
    "{\"action\":\"I\",\"xid\":1234,\"lsn\":\"0/1A2B3C4\",\"timestamp\":" TS ",\"schema\":"
    "\"walq\",\"table\":\"jobs\",\"columns\":["
    "{\"name\":\"id\",\"value\":123456},"
    "{\"name\":\"queue\",\"value\":\"bench\"},"
    "{\"name\":\"payload\",\"value\":\"{\\\"n\\\": 1, \\\"k\\\": \\\"abc\\\"}\"},"
    "{\"name\":\"priority\",\"value\":0},"
    "{\"name\":\"run_at\",\"value\":" TS "},"
    "{\"name\":\"max_attempts\",\"value\":25},"
    "{\"name\":\"dedup_key\",\"value\":null},"
    "{\"name\":\"created_at\",\"value\":" TS "}]}";

static const char begin[] = "{\"action\":\"B\",\"xid\":1234,\"lsn\":\"0/1A2B3C4\",\"nextlsn\":"
                            "\"0/1A2B400\",\"timestamp\":" TS "}";

static const char commit[] = "{\"action\":\"C\",\"xid\":1234,\"lsn\":\"0/1A2B3C4\",\"nextlsn\":"
                             "\"0/1A2B400\",\"timestamp\":" TS "}";

typedef struct msg {
    const char *text;
    size_t ncolumns; /* what a correct decode yields */
} msg;

typedef struct workload {
    const char *name;
    msg msgs[3];
    size_t n;
} workload;

static double seconds_between(const struct timespec *a, const struct timespec *b)
{
    return (double)(b->tv_sec - a->tv_sec) + (double)(b->tv_nsec - a->tv_nsec) / 1e9;
}

/* Decodes the messages of w in turn, iterations times in all, and reports if asked. */
static int run(walq__decoder *d, const workload *w, long iterations, int report)
{
    struct timespec w0, w1, c0, c1;
    size_t len[3];
    size_t bytes = 0;

    for (size_t j = 0; j < w->n; j++) {
        len[j] = strlen(w->msgs[j].text);
        bytes += len[j];
    }
    clock_gettime(CLOCK_MONOTONIC, &w0);
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &c0);
    for (long i = 0; i < iterations; i++) {
        size_t j = (size_t)i % w->n;
        walq__change c;

        if (walq__decode(d, w->msgs[j].text, len[j], &c) != 0 ||
            c.ncolumns != w->msgs[j].ncolumns) {
            fprintf(stderr, "decode-bench: %s: message %zu: %s\n", w->name, j,
                    walq__decoder_error(d));
            return -1;
        }
    }
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &c1);
    clock_gettime(CLOCK_MONOTONIC, &w1);
    if (report)
        printf("%-22s %4zu bytes/msg  %7.1f ns/msg CPU  %7.1f ns/msg wall\n", w->name, bytes / w->n,
               seconds_between(&c0, &c1) * 1e9 / (double)iterations,
               seconds_between(&w0, &w1) * 1e9 / (double)iterations);
    return 0;
}

int main(int argc, char **argv)
{
    const workload workloads[] = {
        {"insert", {{insert_typed, 8}}, 1},
        {"insert, no types", {{insert_untyped, 8}}, 1},
        {"begin", {{begin, 0}}, 1},
        {"commit", {{commit, 0}}, 1},
        {"transaction (B, I, C)", {{begin, 0}, {insert_typed, 8}, {commit, 0}}, 3},
    };
    long iterations = argc > 1 ? atol(argv[1]) : 1000000;
    const char *only = argc > 2 ? argv[2] : NULL;
    walq__decoder *d;
    int rc = EXIT_SUCCESS;

    if (iterations <= 0) {
        fprintf(stderr, "usage: decode-bench [ITERATIONS [WORKLOAD]]\n");
        return EXIT_FAILURE;
    }
    if (walq__decoder_new(&d) != 0) {
        fprintf(stderr, "decode-bench: out of memory\n");
        return EXIT_FAILURE;
    }
    printf("%ld iterations each\n", iterations);
    for (size_t i = 0; i < sizeof(workloads) / sizeof(workloads[0]); i++) {
        if (only != NULL && strcmp(workloads[i].name, only) != 0)
            continue;
        /* A first round warms the decoder's storage and the caches. */
        if (run(d, &workloads[i], 1000, 0) != 0 || run(d, &workloads[i], iterations, 1) != 0)
            rc = EXIT_FAILURE;
    }
    walq__decoder_free(d);
    return rc;
}
