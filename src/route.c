/* Partitions of a group: PostgreSQL's integer hash, reproduced. */
#include "route.h"

#include <stdlib.h>
#include <string.h>

static uint32_t rotl(uint32_t x, int k)
{
    return (x << k) | (x >> (32 - k));
}

/*
 * Bob Jenkins' lookup3 hash of one 32-bit word (public domain), which is
 * what PostgreSQL uses for integers: the initial state for a 4-byte key, the
 * word added to a, then the final mix.
 */
static uint32_t hash_word(uint32_t k)
{
    uint32_t a, b, c;

    a = b = c = 0x9e3779b9u + (uint32_t)sizeof(uint32_t) + 3923095u;
    a += k;
    c ^= b;
    c -= rotl(b, 14);
    a ^= c;
    a -= rotl(c, 11);
    b ^= a;
    b -= rotl(a, 25);
    c ^= b;
    c -= rotl(b, 16);
    a ^= c;
    a -= rotl(c, 4);
    b ^= a;
    b -= rotl(a, 14);
    c ^= b;
    c -= rotl(b, 24);
    return c;
}

uint32_t walq__hash_int8(int64_t id)
{
    /*
     * The high half is folded into the low one (inverted for negative
     * numbers) so that a bigint hashes like the same value as an integer.
     */
    uint32_t lo = (uint32_t)((uint64_t)id & 0xffffffffu);
    uint32_t hi = (uint32_t)((uint64_t)id >> 32);

    lo ^= id >= 0 ? hi : ~hi;
    return hash_word(lo);
}

int walq__partition_of(int64_t id, int partitions)
{
    if (partitions <= 1)
        return 0;
    return (int)(walq__hash_int8(id) % (uint32_t)partitions);
}

int walq__route_mine(const walq__route *rt, int64_t id)
{
    return rt->partitions <= 1 || walq__partition_of(id, rt->partitions) == rt->partition;
}

int walq__route_wants(const walq__route *rt, const char *queue)
{
    for (size_t i = 0; i < rt->nqueues; i++)
        if (strcmp(rt->queues[i], queue) == 0)
            return 1;
    return 0;
}

int walq__route_skipped(const walq__route *rt, int64_t id)
{
    size_t lo = 0, hi = rt->nskip;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;

        if (rt->skip[mid] == id)
            return 1;
        if (rt->skip[mid] < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return 0;
}

int walq__route_takes(const walq__route *rt, int64_t id, const char *queue)
{
    return walq__route_mine(rt, id) && walq__route_wants(rt, queue) && !walq__route_skipped(rt, id);
}

void walq__route_set_skip(walq__route *rt, int64_t *ids, size_t n)
{
    free(rt->skip);
    rt->skip = ids;
    rt->nskip = n;
}

void walq__route_free(walq__route *rt)
{
    walq__route_set_skip(rt, NULL, 0);
}

int walq__route_job_row(const walq__change *ch, walq__job_row *out)
{
    const walq__value *id = walq__change_column(ch, "id");
    const walq__value *queue = walq__change_column(ch, "queue");
    const walq__value *payload = walq__change_column(ch, "payload");
    const walq__value *prio = walq__change_column(ch, "priority");
    const walq__value *run_at = walq__change_column(ch, "run_at");
    const walq__value *maxa = walq__change_column(ch, "max_attempts");
    const walq__value *dedup = walq__change_column(ch, "dedup_key");
    const walq__value *gen = walq__change_column(ch, "generation");

    memset(out, 0, sizeof(*out));
    if (id == NULL || id->kind != WALQ__V_INT || queue == NULL || queue->kind != WALQ__V_STR)
        return walq__error(WALQ_EDECODE, "Check that walq.jobs has the columns walq init made.",
                           "job row from the stream has no usable \"id\" or \"queue\"");
    out->id = id->i;
    out->queue = queue->str;
    if (payload != NULL && payload->kind == WALQ__V_STR) {
        out->payload = payload->str;
        out->payload_len = payload->len;
    } else {
        out->payload = "null";
        out->payload_len = 4;
    }
    out->max_attempts = 25;
    if (prio != NULL && prio->kind == WALQ__V_INT)
        out->priority = (int32_t)prio->i;
    if (maxa != NULL && maxa->kind == WALQ__V_INT)
        out->max_attempts = (int32_t)maxa->i;
    out->has_dedup = dedup != NULL && dedup->kind == WALQ__V_STR;
    /* A row of the tables before generations is of the first one. */
    out->generation = gen != NULL && gen->kind == WALQ__V_INT ? (int32_t)gen->i : 1;
    /*
     * What walq schedules: the years 1 to 9999, as the CHECK jobs_run_at_range
     * on walq.jobs allows (infinity parses, and is refused here).
     */
    if (run_at != NULL && run_at->kind == WALQ__V_STR &&
        (walq__parse_timestamp(run_at->str, run_at->len, &out->run_at) != 0 ||
         out->run_at < WALQ__RUN_AT_MIN || out->run_at >= WALQ__RUN_AT_END))
        out->bad_run_at = run_at->str;
    return 0;
}
