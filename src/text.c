/* Text made valid UTF-8 before it reaches SQL, and safe before it reaches a terminal. */
#include "text.h"

#include <stdio.h>
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

/*
 * The escape of the character of n bytes at p into out (at least 7 bytes),
 * or 0 when it prints as it is.  A terminal acts on C0 and C1 controls (ESC
 * starts the sequences that retitle a window or rewrite the screen; 0x9B is
 * CSI to some terminals), and the bidirectional overrides and isolates make
 * text read otherwise than it is.
 */
static size_t escape_one(const unsigned char *p, size_t n, char *out)
{
    unsigned cp;

    if (n == 0)
        return (size_t)snprintf(out, 7, "\\x%02x", p[0]);
    if (n == 1) {
        switch (p[0]) {
        case '\n':
            return (size_t)snprintf(out, 7, "\\n");
        case '\r':
            return (size_t)snprintf(out, 7, "\\r");
        case '\t':
            return (size_t)snprintf(out, 7, "\\t");
        case 0x1B:
            return (size_t)snprintf(out, 7, "\\e");
        default:
            if (p[0] < 0x20 || p[0] == 0x7F)
                return (size_t)snprintf(out, 7, "\\x%02x", p[0]);
            return 0;
        }
    }
    if (n == 2) {
        cp = ((unsigned)(p[0] & 0x1F) << 6) | (p[1] & 0x3F);
        return cp <= 0x9F || cp == 0x061C ? (size_t)snprintf(out, 7, "\\u%04x", cp) : 0;
    }
    if (n == 3) {
        cp = ((unsigned)(p[0] & 0x0F) << 12) | ((unsigned)(p[1] & 0x3F) << 6) | (p[2] & 0x3F);
        if ((cp >= 0x202A && cp <= 0x202E) || (cp >= 0x2066 && cp <= 0x2069) || cp == 0x2028 ||
            cp == 0x2029 || cp == 0x200E || cp == 0x200F)
            return (size_t)snprintf(out, 7, "\\u%04x", cp);
    }
    return 0;
}

char *walq__text_escape(const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t len = strlen(s);
    /* Each byte becomes at most four ("\xNN"); a 2- or 3-byte character at most six. */
    char *out = malloc(len * 4 + 1), *o = out;

    if (out == NULL)
        return NULL;
    while (len > 0) {
        size_t n = walq__utf8_seq(p, len), w = escape_one(p, n, o);

        if (w == 0) {
            memcpy(o, p, n);
            w = n;
        }
        o += w;
        n = n ? n : 1;
        p += n;
        len -= n;
    }
    *o = '\0';
    return out;
}

size_t walq__text_escaped_width(const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t len = strlen(s), width = 0;
    char esc[8];

    while (len > 0) {
        size_t n = walq__utf8_seq(p, len), w = escape_one(p, n, esc);

        width += w ? w : 1;
        n = n ? n : 1;
        p += n;
        len -= n;
    }
    return width;
}
