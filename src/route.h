/*
 * The route stage: which jobs belong to a reader.  A group may be split over
 * several readers, each taking the jobs whose id hashes to its partition.
 */
#ifndef WALQ_ROUTE_H
#define WALQ_ROUTE_H

#include <stdint.h>

/*
 * The hash PostgreSQL's hashint8() gives id, as an unsigned number, so that
 * a SQL query (walq.partition_of) and the consumer agree on every job.
 */
uint32_t walq__hash_int8(int64_t id);

/* The partition, 0 .. partitions - 1, that job id belongs to. */
int walq__partition_of(int64_t id, int partitions);

#endif
