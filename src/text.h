/*
 * Text from outside (a handler's stderr, a worker's reply, a callback's
 * message) on its way to SQL: made valid UTF-8, so that one handler's bytes
 * can never make the statement that records them fail.
 */
#ifndef WALQ_TEXT_H
#define WALQ_TEXT_H

#include <stddef.h>

/*
 * Length of the valid UTF-8 sequence at s (at most len bytes), or 0 if the
 * bytes there are not one: a stray continuation byte, a sequence cut short,
 * an overlong form, a surrogate, or a code point above U+10FFFF.  NUL is
 * not valid either (PostgreSQL's text cannot hold it).
 */
size_t walq__utf8_seq(const unsigned char *s, size_t len);

/* Is s (len bytes) valid UTF-8 throughout? */
int walq__utf8_valid(const char *s, size_t len);

/*
 * A copy of s (len bytes) that is valid UTF-8: each byte that does not
 * belong to a valid sequence becomes U+FFFD, and the copy ends before max
 * bytes (0: no limit) on a character boundary.  NUL-terminated; the caller
 * frees it.  NULL when out of memory.
 */
char *walq__utf8_clean(const char *s, size_t len, size_t max);

/*
 * A copy of the NUL-terminated s that is safe to print on a terminal: each
 * control character becomes a readable escape (\n, \r, \t, \e for ESC, \xNN
 * for the other C0 controls and DEL, \u0080 to \u009f for the C1 controls,
 * and \u202e and the like for the bidirectional overrides), each byte that
 * is not part of valid UTF-8 becomes \xNN, and every other character, UTF-8
 * text included, stays as it is.  The caller frees it; NULL when out of
 * memory.
 */
char *walq__text_escape(const char *s);

/* How many characters walq__text_escape(s) prints: the width of its column. */
size_t walq__text_escaped_width(const char *s);

#endif
