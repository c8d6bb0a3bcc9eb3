/* LSN text in PostgreSQL's "X/X" notation. */
#include "lsn.h"

#include <stdio.h>
#include <string.h>

#include "walq.h"

/* The value of one hex digit, or -1. */
static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/*
 * Reads 1 to 8 hex digits from *p up to end.  Stopping at eight digits rather
 * than checking for overflow afterwards keeps each half within 32 bits.
 */
static int parse_half(const char **p, const char *end, uint32_t *out)
{
    uint32_t v = 0;
    int ndigits = 0;

    while (*p < end && ndigits < 9) {
        int h = hexval(**p);

        if (h < 0)
            break;
        v = (v << 4) | (uint32_t)h;
        ndigits++;
        (*p)++;
    }
    if (ndigits == 0 || ndigits > 8)
        return WALQ_EINVAL;
    *out = v;
    return 0;
}

int walq__lsn_parse_n(const char *text, size_t len, uint64_t *out)
{
    const char *p = text;
    const char *end;
    uint32_t hi, lo;

    if (text == NULL || out == NULL)
        return WALQ_EINVAL;
    end = text + len;
    if (parse_half(&p, end, &hi) != 0)
        return WALQ_EINVAL;
    if (p == end || *p != '/')
        return WALQ_EINVAL;
    p++;
    if (parse_half(&p, end, &lo) != 0 || p != end)
        return WALQ_EINVAL;
    *out = ((uint64_t)hi << 32) | lo;
    return 0;
}

int walq__lsn_parse(const char *text, uint64_t *out)
{
    if (text == NULL)
        return WALQ_EINVAL;
    return walq__lsn_parse_n(text, strlen(text), out);
}

char *walq__lsn_format(uint64_t lsn, char buf[WALQ__LSN_BUFSZ])
{
    snprintf(buf, WALQ__LSN_BUFSZ, "%X/%X", (unsigned int)(lsn >> 32), (unsigned int)lsn);
    return buf;
}
