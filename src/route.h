/*
 * The route stage: which jobs belong to a reader.  A group may be split over
 * several readers, each taking the jobs whose id hashes to its partition.
 */
#ifndef WALQ_ROUTE_H
#define WALQ_ROUTE_H

#include <stddef.h>
#include <stdint.h>

#include "decode.h"
#include "schedule.h"

/*
 * The hash PostgreSQL's hashint8() gives id, as an unsigned number, so that
 * a SQL query (walq.partition_of) and the consumer agree on every job.
 */
uint32_t walq__hash_int8(int64_t id);

/* The partition, 0 .. partitions - 1, that job id belongs to. */
int walq__partition_of(int64_t id, int partitions);

/*
 * Which jobs a reader takes: those of its group's queues, in its partition,
 * that are not recorded already beyond its cursor (the skip list, sorted).
 */
typedef struct walq__route {
    const char *const *queues; /* borrowed */
    size_t nqueues;
    int partition, partitions;
    int64_t *skip; /* owned */
    size_t nskip;
} walq__route;

/* Is job id of this reader's partition? */
int walq__route_mine(const walq__route *rt, int64_t id);

/* Does the group read this queue? */
int walq__route_wants(const walq__route *rt, const char *queue);

/* Was the job recorded already, beyond the cursor? */
int walq__route_skipped(const walq__route *rt, int64_t id);

/* All three: does this reader take the job? */
int walq__route_takes(const walq__route *rt, int64_t id, const char *queue);

/* The jobs recorded beyond the cursor; takes ids (sorted, malloc'ed) over. */
void walq__route_set_skip(walq__route *rt, int64_t *ids, size_t n);

void walq__route_free(walq__route *rt);

/* The run_at walq schedules, in Unix microseconds: from 0001-01-01 to before 10000-01-01 UTC. */
#define WALQ__RUN_AT_MIN INT64_C(-62135596800000000)
#define WALQ__RUN_AT_END INT64_C(253402300800000000)

/*
 * The job an insert into walq.jobs brings, its strings borrowed from ch.
 * WALQ_EDECODE when the row has no usable id or queue; an unreadable run_at
 * is left in out->bad_run_at for the caller to judge.
 */
int walq__route_job_row(const walq__change *ch, walq__job_row *out);

#endif
