/* LSN text: PostgreSQL's "X/X" notation of a 64-bit WAL position. */
#ifndef WALQ_LSN_H
#define WALQ_LSN_H

#include <stddef.h>
#include <stdint.h>

/* Enough for "FFFFFFFF/FFFFFFFF" and the terminating NUL. */
#define WALQ__LSN_BUFSZ 18

/*
 * Parses "hi/lo" (each 1 to 8 hex digits, either case, nothing before or
 * after) into *out.  Returns 0 or WALQ_EINVAL.
 */
int walq__lsn_parse(const char *text, uint64_t *out);

/* Same, for text that is not NUL-terminated. */
int walq__lsn_parse_n(const char *text, size_t len, uint64_t *out);

/* Writes the upper-case "X/X" form into buf and returns buf. */
char *walq__lsn_format(uint64_t lsn, char buf[WALQ__LSN_BUFSZ]);

#endif
