/* Unit tests of the LSN text functions. */
#include <check.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "lsn.h"
#include "walq.h"

START_TEST(parse_valid)
{
    static const struct {
        const char *text;
        uint64_t lsn;
    } cases[] = {
        {"0/0", 0},
        {"0/1529E48", UINT64_C(0x1529E48)},
        {"16/B374D848", UINT64_C(0x16B374D848)},
        {"FFFFFFFF/FFFFFFFF", UINT64_MAX},
        {"abcdef12/3456789a", UINT64_C(0xABCDEF123456789A)},
        {"00000000/00000001", 1},
        {"1/0", UINT64_C(0x100000000)},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        uint64_t lsn = 42;

        ck_assert_int_eq(walq__lsn_parse(cases[i].text, &lsn), 0);
        ck_assert_msg(lsn == cases[i].lsn, "\"%s\" parsed as %llX", cases[i].text,
                      (unsigned long long)lsn);
    }
}
END_TEST

START_TEST(parse_invalid)
{
    static const char *const cases[] = {
        "",      "/",     "0/",          "/0",          "0",           "0/0/0", " 0/0",  "0/0 ",
        "0 /0",  "0/ 0",  "123456789/0", "0/123456789", "g/0",         "0/x",   "-1/0",  "+1/0",
        "0x1/0", "0/0\n", "0\\0",        "0:0",         "FFFFFFFFF/0", "0/1G",  "\t0/0", "0//0",
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        uint64_t lsn = 42;

        ck_assert_msg(walq__lsn_parse(cases[i], &lsn) == WALQ_EINVAL, "\"%s\" was accepted",
                      cases[i]);
        ck_assert_msg(lsn == 42, "\"%s\" changed the output on failure", cases[i]);
    }
}
END_TEST

START_TEST(parse_null_arguments)
{
    uint64_t lsn;

    ck_assert_int_eq(walq__lsn_parse(NULL, &lsn), WALQ_EINVAL);
    ck_assert_int_eq(walq__lsn_parse("0/0", NULL), WALQ_EINVAL);
    ck_assert_int_eq(walq__lsn_parse_n(NULL, 0, &lsn), WALQ_EINVAL);
    ck_assert_int_eq(walq__lsn_parse_n("0/0", 3, NULL), WALQ_EINVAL);
}
END_TEST

START_TEST(parse_n_unterminated)
{
    /* The bytes after len must not be read, so they are made invalid. */
    char buf[8] = {'0', '/', '1', '6', 'Z', 'Z', 'Z', 'Z'};
    char *heap;
    uint64_t lsn = 0;

    ck_assert_int_eq(walq__lsn_parse_n(buf, 4, &lsn), 0);
    ck_assert_uint_eq(lsn, 0x16);
    ck_assert_int_eq(walq__lsn_parse_n(buf, 5, &lsn), WALQ_EINVAL);
    ck_assert_int_eq(walq__lsn_parse_n(buf, 0, &lsn), WALQ_EINVAL);
    ck_assert_int_eq(walq__lsn_parse_n(buf, 2, &lsn), WALQ_EINVAL);
    ck_assert_int_eq(walq__lsn_parse_n("0/1\0", 4, &lsn), WALQ_EINVAL);

    /* An exact-size heap copy lets AddressSanitizer catch an overread. */
    heap = malloc(17);
    ck_assert_ptr_nonnull(heap);
    memcpy(heap, "FFFFFFFF/FFFFFFFF", 17);
    ck_assert_int_eq(walq__lsn_parse_n(heap, 17, &lsn), 0);
    ck_assert(lsn == UINT64_MAX);
    free(heap);
}
END_TEST

START_TEST(format_values)
{
    char buf[WALQ__LSN_BUFSZ];

    ck_assert_str_eq(walq__lsn_format(0, buf), "0/0");
    ck_assert_str_eq(walq__lsn_format(UINT64_C(0x1529E48), buf), "0/1529E48");
    ck_assert_str_eq(walq__lsn_format(UINT64_C(0x16B374D848), buf), "16/B374D848");
    ck_assert_str_eq(walq__lsn_format(UINT64_MAX, buf), "FFFFFFFF/FFFFFFFF");
    ck_assert_str_eq(walq__lsn_format(UINT64_C(0x100000000), buf), "1/0");
    ck_assert_ptr_eq(walq__lsn_format(1, buf), buf);
}
END_TEST

START_TEST(format_parse_round_trip)
{
    uint64_t x = UINT64_C(0x9E3779B97F4A7C15);

    /* A simple generator covers many digit counts on both sides of the slash. */
    for (int i = 0; i < 10000; i++) {
        char buf[WALQ__LSN_BUFSZ];
        uint64_t v = x >> (i % 64), back = 0;

        x = x * UINT64_C(6364136223846793005) + UINT64_C(1442695040888963407);
        walq__lsn_format(v, buf);
        ck_assert_int_eq(walq__lsn_parse(buf, &back), 0);
        ck_assert_msg(back == v, "%s read back as %llX", buf, (unsigned long long)back);
    }
}
END_TEST

static Suite *lsn_suite(void)
{
    Suite *s = suite_create("lsn");
    TCase *tc = tcase_create("lsn");

    tcase_add_test(tc, parse_valid);
    tcase_add_test(tc, parse_invalid);
    tcase_add_test(tc, parse_null_arguments);
    tcase_add_test(tc, parse_n_unterminated);
    tcase_add_test(tc, format_values);
    tcase_add_test(tc, format_parse_round_trip);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(lsn_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
