/* Partitions of a group: PostgreSQL's integer hash, reproduced. */
#include "route.h"

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
