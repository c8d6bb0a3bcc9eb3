/*
 * What the fuzz targets (tests/fuzz, docs/fuzzing.md) found, one test per
 * crash, for the parsers that have no test file of their own here.  Each
 * input is also in the target's corpus.
 */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

/* fuzz_duration: a count too large for microseconds overflowed into a negative duration. */
START_TEST(duration_overflow_is_unreadable)
{
    ck_assert_int_eq(walq__parse_duration_us("9223372036854775807"), -1);
    ck_assert_int_eq(walq__parse_duration_us("9223372036855s"), -1);
    ck_assert_int_eq(walq__parse_duration_us("106751992d"), -1);
    ck_assert_int_eq(walq__parse_duration_us("99999999999999999999us"), -1);
    /* The largest that fit still parse. */
    ck_assert_int_eq(walq__parse_duration_us("9223372036854775807us"), INT64_MAX);
    ck_assert_int_eq(walq__parse_duration_us("9223372036854s"), INT64_C(9223372036854000000));
    ck_assert_int_eq(walq__parse_duration_us("106751991d"), INT64_C(106751991) * INT64_C(86400000000));
    ck_assert_int_eq(walq__parse_duration_us("60s"), 60000000);
    ck_assert_int_eq(walq__parse_duration_us("500"), 500000);
}
END_TEST

static Suite *found_suite(void)
{
    Suite *s = suite_create("fuzz_found");
    TCase *tc = tcase_create("core");

    tcase_add_test(tc, duration_overflow_is_unreadable);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(found_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
