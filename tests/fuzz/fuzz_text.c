/*
 * Text made valid UTF-8 (src/text.c).  The first two bytes of an input are
 * the limit given to walq__utf8_clean (0: none), the rest is the text.  The
 * output is checked with a validator written apart from walq's, from the
 * table of well-formed byte sequences in the Unicode standard (3.9, table
 * 3-7), minus NUL, which PostgreSQL's text cannot hold.
 */
#include <string.h>

#include "fuzz.h"
#include "text.h"

/* The length of the well-formed sequence at s, or 0. */
static size_t wellformed(const unsigned char *s, size_t len)
{
    static const struct {
        unsigned char lead_lo, lead_hi, b2_lo, b2_hi;
        size_t n;
    } rows[] = {
        {0x01, 0x7F, 0, 0, 1},       {0xC2, 0xDF, 0x80, 0xBF, 2}, {0xE0, 0xE0, 0xA0, 0xBF, 3},
        {0xE1, 0xEC, 0x80, 0xBF, 3}, {0xED, 0xED, 0x80, 0x9F, 3}, {0xEE, 0xEF, 0x80, 0xBF, 3},
        {0xF0, 0xF0, 0x90, 0xBF, 4}, {0xF1, 0xF3, 0x80, 0xBF, 4}, {0xF4, 0xF4, 0x80, 0x8F, 4},
    };

    for (size_t r = 0; r < sizeof(rows) / sizeof(rows[0]); r++) {
        if (s[0] < rows[r].lead_lo || s[0] > rows[r].lead_hi)
            continue;
        if (len < rows[r].n)
            return 0;
        if (rows[r].n >= 2 && (s[1] < rows[r].b2_lo || s[1] > rows[r].b2_hi))
            return 0;
        for (size_t i = 2; i < rows[r].n; i++)
            if (s[i] < 0x80 || s[i] > 0xBF)
                return 0;
        return rows[r].n;
    }
    return 0;
}

static int valid(const unsigned char *s, size_t len)
{
    while (len > 0) {
        size_t n = wellformed(s, len);

        if (n == 0)
            return 0;
        s += n;
        len -= n;
    }
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t max, len, outlen;
    const char *s;
    char *out;
    int ok;

    if (size < 2)
        return 0;
    max = (size_t)data[0] | (size_t)data[1] << 8;
    /* Small limits are the interesting ones. */
    if (max > 64 && (data[0] & 1))
        max &= 63;
    s = (const char *)data + 2;
    len = size - 2;
    ok = valid((const unsigned char *)s, len);
    FUZZ_CHECK(walq__utf8_valid(s, len) == ok);
    for (size_t i = 0; i < len; i++) {
        size_t n = walq__utf8_seq((const unsigned char *)s + i, len - i);

        FUZZ_CHECK(n == wellformed((const unsigned char *)s + i, len - i));
    }
    out = walq__utf8_clean(s, len, max);
    if (out == NULL)
        return 0;
    outlen = strlen(out);
    FUZZ_CHECK(valid((const unsigned char *)out, outlen));
    /* Never as long as the limit: it counts the NUL. */
    FUZZ_CHECK(max == 0 || outlen < max);
    /* Valid text is kept as it is, or cut on a character boundary. */
    if (ok) {
        FUZZ_CHECK(outlen <= len && memcmp(out, s, outlen) == 0);
        FUZZ_CHECK(max != 0 || outlen == len);
        FUZZ_CHECK(outlen == len || wellformed((const unsigned char *)s + outlen, len - outlen));
    } else {
        FUZZ_CHECK(max != 0 || outlen >= len);
    }
    free(out);
    return 0;
}
