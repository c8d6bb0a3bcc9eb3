/* Unit tests of the partition hash: it must agree with PostgreSQL's. */
#include <check.h>
#include <stdint.h>
#include <stdlib.h>

#include "route.h"

/* SELECT x, hashint8(x) on PostgreSQL 15. */
static const struct {
    int64_t id;
    int32_t hash;
} server_hashes[] = {
    {INT64_MIN, -96758253},
    {-2, -1242090879},
    {-1, 385747274},
    {0, -272711505},
    {1, -1905060026},
    {2, 1134484726},
    {3, -28094569},
    {7, -978793473},
    {42, 1509752520},
    {1000, -840720108},
    {65535, 800703781},
    {INT64_C(4294967295), 385747274},
    {INT64_C(4294967296), -1905060026},
    {INT64_C(123456789012), 1645134813},
    {INT64_MAX, -1524351049},
};

START_TEST(matches_hashint8)
{
    for (size_t i = 0; i < sizeof(server_hashes) / sizeof(server_hashes[0]); i++) {
        uint32_t want = (uint32_t)server_hashes[i].hash;

        ck_assert_msg(walq__hash_int8(server_hashes[i].id) == want,
                      "hash of %lld: got %lu, PostgreSQL says %lu", (long long)server_hashes[i].id,
                      (unsigned long)walq__hash_int8(server_hashes[i].id), (unsigned long)want);
    }
}
END_TEST

START_TEST(partition_is_hash_mod_n)
{
    /* walq.partition_of(42, 5) = 1509752520 % 5 = 0; (1, 3): 2389907270 % 3. */
    ck_assert_int_eq(walq__partition_of(42, 5), (int)(1509752520u % 5u));
    ck_assert_int_eq(walq__partition_of(1, 3), (int)((uint32_t)-1905060026 % 3u));
    ck_assert_int_eq(walq__partition_of(1, 1), 0);
    ck_assert_int_eq(walq__partition_of(12345, 0), 0);
}
END_TEST

/* Consecutive ids, as a sequence hands them out, spread evenly. */
START_TEST(sequential_ids_spread_evenly)
{
    enum { N = 7, IDS = 70000 };
    int count[N] = {0};

    for (int64_t id = 1; id <= IDS; id++) {
        int p = walq__partition_of(id, N);

        ck_assert(p >= 0 && p < N);
        count[p]++;
    }
    for (int p = 0; p < N; p++)
        ck_assert_msg(count[p] > IDS / N * 95 / 100 && count[p] < IDS / N * 105 / 100,
                      "partition %d has %d of %d ids", p, count[p], IDS);
}
END_TEST

static Suite *route_suite(void)
{
    Suite *s = suite_create("route");
    TCase *tc = tcase_create("route");

    tcase_add_test(tc, matches_hashint8);
    tcase_add_test(tc, partition_is_hash_mod_n);
    tcase_add_test(tc, sequential_ids_spread_evenly);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(route_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
