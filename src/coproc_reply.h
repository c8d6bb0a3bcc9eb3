/*
 * One reply line of a coprocess worker (docs/coprocess.md), parsed: the
 * only place a worker's stdout bytes are read.  Pure functions, no I/O,
 * fuzzed by tests/fuzz/fuzz_coproc_reply.c.
 */
#ifndef WALQ_COPROC_REPLY_H
#define WALQ_COPROC_REPLY_H

#include <stddef.h>
#include <stdint.h>

#include "run.h"

/* A reply longer than this is not a reply: the worker is broken. */
#define WALQ__COPROC_MAX_LINE ((size_t)16 << 20)
/* The longest error text taken from a reply, in bytes. */
#define WALQ__COPROC_MAX_ERROR 1000
/* The longest excerpt of a line in a log message, in bytes (before "..."). */
#define WALQ__COPROC_EXCERPT 200

typedef struct walq__coproc_reply {
    int64_t id;
    walq__verdict verdict; /* DONE, FAIL, RETRY or DEAD */
    /*
     * Why the attempt failed: valid UTF-8 without NUL, at most
     * WALQ__COPROC_MAX_ERROR bytes, NUL-terminated; "" when done.
     */
    char error[WALQ__COPROC_MAX_ERROR + 1];
} walq__coproc_reply;

/* Returned for a line that is empty but for white space: not a reply, not an error. */
#define WALQ__COPROC_BLANK 1

/*
 * Parses one line (len bytes, without its newline; a trailing "\r" and
 * white space are allowed).  Returns 0 with *out filled,
 * WALQ__COPROC_BLANK, WALQ_ENOMEM, or WALQ_EPROTO with *why set to a short
 * static description ("invalid JSON", "no integer \"id\"", ...).
 */
int walq__coproc_parse_reply(const char *line, size_t len, walq__coproc_reply *out,
                             const char **why);

/*
 * A bounded excerpt of line for a log message: at most
 * WALQ__COPROC_EXCERPT bytes of it, made valid UTF-8, control characters
 * shown as "?", and "..." when it was cut.  out needs outlen >=
 * WALQ__COPROC_EXCERPT + 4; it is always NUL-terminated.
 */
void walq__coproc_excerpt(char *out, size_t outlen, const char *line, size_t len);

#endif
