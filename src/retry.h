/*
 * Reconnecting with backoff: one connection's failures in a row and when to
 * try again.  The stream, the primary and the audit table's server each have
 * one.
 */
#ifndef WALQ_RETRY_H
#define WALQ_RETRY_H

#include <stdint.h>

#include "common.h"

typedef struct walq__retry {
    int failures; /* in a row, since the last success */
    int64_t at;   /* monotonic microseconds of the next try; 0: now */
} walq__retry;

/*
 * A try failed with walq_last_error(): warns that it is retried, and when
 * (walq__reconnect_delay_us of the failures so far).
 */
void walq__retry_failed(walq__retry *r, const walq__log *lg);

/* The same, saying what was lost first ("lost the primary: ..."). */
void walq__retry_lost(walq__retry *r, const walq__log *lg, const char *what);

/* A try succeeded: the next failure waits the shortest delay again. */
void walq__retry_ok(walq__retry *r);

/* Is a try due at monotonic time now? */
int walq__retry_due(const walq__retry *r, int64_t now);

#endif
