/*
 * The ack stage: outcomes gathered into one transaction on the primary that
 * also moves the group's cursor, so that acking costs one round trip per
 * batch, never one per job.
 */
#ifndef WALQ_ACK_H
#define WALQ_ACK_H

#include <stddef.h>
#include <stdint.h>
#include <libpq-fe.h>

#include "common.h"
#include "schedule.h"

typedef struct walq__ack {
    walq__job **jobs;
    size_t n;
    size_t cap;
    int64_t oldest; /* monotonic time the first outcome of the batch arrived */
    walq__buf ids, statuses, attempts, errors, run_ats, lsns;
} walq__ack;

/*
 * Puts job's current outcome (job->pending and friends) in the batch; a job
 * already there keeps its place and the newest outcome wins.
 */
int walq__ack_add(walq__ack *a, walq__job *job);

/*
 * Writes the batch and the cursor in one statement.  The batch is left as it
 * was: on success the caller walks a->jobs and empties it; on failure it can
 * try again later with more added.
 */
int walq__ack_flush(walq__ack *a, PGconn *primary, const char *group, const char *slot,
                    uint64_t cursor);

void walq__ack_free(walq__ack *a);

#endif
