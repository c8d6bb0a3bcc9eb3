/* Text made valid UTF-8 before it reaches SQL. */
#include "text.h"

#include <stdlib.h>
#include <string.h>

size_t walq__utf8_seq(const unsigned char *s, size_t len)
{
    unsigned c;
    size_t n;
    unsigned cp, min;

    if (len == 0 || s[0] == 0)
        return 0;
    c = s[0];
    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF) {
        n = 2;
        cp = c & 0x1F;
        min = 0x80;
    } else if (c >= 0xE0 && c <= 0xEF) {
        n = 3;
        cp = c & 0x0F;
        min = 0x800;
    } else if (c >= 0xF0 && c <= 0xF4) {
        n = 4;
        cp = c & 0x07;
        min = 0x10000;
    } else {
        return 0; /* a continuation byte, C0/C1 (overlong), or F5..FF */
    }
    if (len < n)
        return 0;
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
        return 0;
    return n;
}

int walq__utf8_valid(const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s;

    while (len > 0) {
        size_t n = walq__utf8_seq(p, len);

        if (n == 0)
            return 0;
        p += n;
        len -= n;
    }
    return 1;
}

char *walq__utf8_clean(const char *s, size_t len, size_t max)
{
    static const char replacement[] = "\xEF\xBF\xBD";
    const unsigned char *p = (const unsigned char *)s;
    /* Each byte becomes at most three. */
    char *out = malloc(len * 3 + 1), *o = out;

    if (out == NULL)
        return NULL;
    while (len > 0) {
        size_t n = walq__utf8_seq(p, len);
        const char *from = n ? (const char *)p : replacement;
        size_t w = n ? n : 3;

        if (max != 0 && (size_t)(o - out) + w >= max)
            break;
        memcpy(o, from, w);
        o += w;
        n = n ? n : 1;
        p += n;
        len -= n;
    }
    *o = '\0';
    return out;
}
