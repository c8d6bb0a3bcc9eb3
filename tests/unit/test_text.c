/*
 * Unit tests of src/text.c: which bytes are valid UTF-8 (as PostgreSQL's
 * text takes it, so without NUL), and the cleaning of any bytes into it.
 */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "text.h"

#define REPL "\xEF\xBF\xBD"

/* walq__utf8_seq at the start of s (n bytes). */
static size_t seq(const char *s, size_t n)
{
    return walq__utf8_seq((const unsigned char *)s, n);
}

START_TEST(sequences)
{
    static const struct {
        const char *s;
        size_t n, want;
    } cases[] = {
        /* ASCII, and the edges of each length. */
        {"a", 1, 1},
        {"\x7F", 1, 1},
        {"\xC2\x80", 2, 2},         /* U+0080 */
        {"\xDF\xBF", 2, 2},         /* U+07FF */
        {"\xE0\xA0\x80", 3, 3},     /* U+0800 */
        {"\xE2\x82\xAC", 3, 3},     /* U+20AC euro sign */
        {"\xEF\xBF\xBF", 3, 3},     /* U+FFFF */
        {"\xF0\x90\x80\x80", 4, 4}, /* U+10000 */
        {"\xF0\x9F\x98\x80", 4, 4}, /* U+1F600 */
        {"\xF4\x8F\xBF\xBF", 4, 4}, /* U+10FFFF */
        /* Overlong forms. */
        {"\xC0\x80", 2, 0},
        {"\xC1\xBF", 2, 0},
        {"\xE0\x80\xAF", 3, 0},
        {"\xE0\x9F\xBF", 3, 0},
        {"\xF0\x80\x80\xAF", 4, 0},
        {"\xF0\x8F\xBF\xBF", 4, 0},
        /* Surrogates, U+D800 to U+DFFF. */
        {"\xED\xA0\x80", 3, 0},
        {"\xED\xBF\xBF", 3, 0},
        {"\xED\x9F\xBF", 3, 3}, /* U+D7FF, just below */
        /* Above U+10FFFF, and bytes that never start anything. */
        {"\xF4\x90\x80\x80", 4, 0},
        {"\xF5\x80\x80\x80", 4, 0},
        {"\xFF", 1, 0},
        {"\xFE", 1, 0},
        /* Stray continuation bytes. */
        {"\x80", 1, 0},
        {"\xBF", 1, 0},
        /* Cut short: by the length, or by a byte that is not a continuation. */
        {"\xC3", 1, 0},
        {"\xE2\x82", 2, 0},
        {"\xF0\x9F\x98", 3, 0},
        {"\xE2\x82\xAC", 2, 0},
        {"\xC3"
         "a",
         2, 0},
        {"\xE2\x82"
         "a",
         3, 0},
        /* NUL, which text cannot hold. */
        {"\0", 1, 0},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        ck_assert_msg(seq(cases[i].s, cases[i].n) == cases[i].want, "case %zu: %zu, not %zu", i,
                      seq(cases[i].s, cases[i].n), cases[i].want);
}
END_TEST

START_TEST(valid)
{
    ck_assert(walq__utf8_valid("", 0));
    ck_assert(walq__utf8_valid("plain ASCII", 11));
    ck_assert(walq__utf8_valid("caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80", 14));
    ck_assert(!walq__utf8_valid("caf\xC3", 4));
    ck_assert(!walq__utf8_valid("a\0b", 3));
    ck_assert(!walq__utf8_valid("\xED\xA0\x80", 3));
    /* The length counts, not a NUL: the cut decides. */
    ck_assert(walq__utf8_valid("ab\xC3\xA9", 2));
}
END_TEST

/* walq__utf8_clean of n bytes of s, compared with want, and freed. */
static void check_clean(const char *s, size_t n, size_t max, const char *want)
{
    char *out = walq__utf8_clean(s, n, max);

    ck_assert_ptr_nonnull(out);
    ck_assert_str_eq(out, want);
    ck_assert(walq__utf8_valid(out, strlen(out)));
    ck_assert(max == 0 || strlen(out) < max);
    free(out);
}

START_TEST(clean_replaces_each_bad_byte)
{
    check_clean("plain", 5, 0, "plain");
    check_clean("caf\xC3\xA9", 5, 0, "caf\xC3\xA9");
    check_clean("a\xFF"
                "b",
                3, 0, "a" REPL "b");
    check_clean("\xC0\xAF", 2, 0, REPL REPL);
    check_clean("\xED\xA0\x80", 3, 0, REPL REPL REPL);
    check_clean("\xF4\x90\x80\x80", 4, 0, REPL REPL REPL REPL);
    check_clean("\x80x", 2, 0, REPL "x");
    check_clean("end \xE2\x82", 6, 0, "end " REPL REPL);
    check_clean("a\0b", 3, 0, "a" REPL "b");
    check_clean("", 0, 0, "");
    /* A bad lead byte does not swallow the valid character after it. */
    check_clean("\xC3\xE2\x82\xAC", 4, 0, REPL "\xE2\x82\xAC");
}
END_TEST

START_TEST(clean_cuts_on_a_character_boundary)
{
    /* max counts the NUL: the text is at most max - 1 bytes. */
    check_clean("abcdef", 6, 4, "abc");
    check_clean("abc", 3, 4, "abc");
    check_clean("abc", 3, 1, "");
    /* A character that would cross the limit is left out whole. */
    check_clean("a\xE2\x82\xAC", 4, 4, "a");
    check_clean("a\xE2\x82\xAC", 4, 5, "a\xE2\x82\xAC");
    check_clean("\xF0\x9F\x98\x80\xF0\x9F\x98\x80", 8, 8, "\xF0\x9F\x98\x80");
    check_clean("ab\xFF", 3, 5, "ab");
    check_clean("ab\xFF", 3, 6, "ab" REPL);
}
END_TEST

/* What the CLI prints of text producers and handlers wrote: no control reaches the terminal. */
START_TEST(escape_controls_keeps_text)
{
    static const struct {
        const char *in, *out;
    } cases[] = {
        {"", ""},
        {"plain text", "plain text"},
        {"caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80 \xE6\x97\xA5\xE6\x9C\xAC",
         "caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80 \xE6\x97\xA5\xE6\x9C\xAC"},
        {"\033]0;pwned\007", "\\e]0;pwned\\x07"},
        {"\033[2J\033[H", "\\e[2J\\e[H"},
        {"a\nb\tc\rd", "a\\nb\\tc\\rd"},
        {"\x01\x1F\x7F", "\\x01\\x1f\\x7f"},
        /* C1 controls, CSI among them, as UTF-8 and as bare bytes. */
        {"\xC2\x9B"
         "31m \xC2\x80 \xC2\xA0",
         "\\u009b31m \\u0080 \xC2\xA0"},
        {"\x9B"
         "31m \xFF \xC3",
         "\\x9b31m \\xff \\xc3"},
        /* Bidirectional overrides and isolates. */
        {"abc\xE2\x80\xAE"
         "fed",
         "abc\\u202efed"},
        {"\xE2\x81\xA6x\xE2\x81\xA9 \xD8\x9C", "\\u2066x\\u2069 \\u061c"},
        /* Backslashes stay: the escapes are for reading, not for parsing back. */
        {"C:\\dir \"q\"", "C:\\dir \"q\""},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *e = walq__text_escape(cases[i].in);
        size_t w = 0;

        ck_assert_ptr_nonnull(e);
        ck_assert_msg(strcmp(e, cases[i].out) == 0, "case %zu: \"%s\"", i, e);
        for (const char *p = e; *p; p++)
            w += ((unsigned char)*p & 0xC0) != 0x80;
        ck_assert_uint_eq(walq__text_escaped_width(cases[i].in), w);
        for (const unsigned char *p = (const unsigned char *)e; *p; p++)
            ck_assert_msg(*p >= 0x20 && *p != 0x7F, "case %zu: control 0x%02x left", i, *p);
        ck_assert(walq__utf8_valid(e, strlen(e)));
        free(e);
    }
}
END_TEST

static Suite *text_suite(void)
{
    Suite *s = suite_create("text");
    TCase *tc = tcase_create("core");

    tcase_add_test(tc, sequences);
    tcase_add_test(tc, valid);
    tcase_add_test(tc, clean_replaces_each_bad_byte);
    tcase_add_test(tc, clean_cuts_on_a_character_boundary);
    tcase_add_test(tc, escape_controls_keeps_text);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(text_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
