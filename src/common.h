/* Internal helpers shared by every module: errors, buffers, clocks, logging. */
#ifndef WALQ_COMMON_H
#define WALQ_COMMON_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include "walq.h"

#if defined(__GNUC__)
#define WALQ__PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define WALQ__PRINTF(f, a)
#endif

#define WALQ__ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/*
 * Records the detail of a failure for walq_last_error() on this thread and
 * returns code, so that callers can write `return walq__error(...)`.  hint,
 * when not NULL, is a full sentence shown on its own line.
 */
int walq__error(int code, const char *hint, const char *fmt, ...) WALQ__PRINTF(3, 4);

/* Growable byte buffer, always NUL-terminated once anything was added. */
typedef struct walq__buf {
    char *data;
    size_t len;
    size_t cap;
} walq__buf;

int walq__buf_reserve(walq__buf *b, size_t extra);
int walq__buf_append(walq__buf *b, const char *s, size_t n);
int walq__buf_puts(walq__buf *b, const char *s);
int walq__buf_printf(walq__buf *b, const char *fmt, ...) WALQ__PRINTF(2, 3);
int walq__buf_vprintf(walq__buf *b, const char *fmt, va_list ap) WALQ__PRINTF(2, 0);
/*
 * walq__buf_printf() unless *rc holds an error already, and its result into
 * *rc: what writes a page or an exposition as many appends checks once.
 */
void walq__buf_putf(walq__buf *b, int *rc, const char *fmt, ...) WALQ__PRINTF(3, 4);
void walq__buf_reset(walq__buf *b);
void walq__buf_free(walq__buf *b);

/* Monotonic clock and wall clock, both in microseconds. */
int64_t walq__mono_us(void);
int64_t walq__wall_us(void);

/*
 * Parses a duration as SHOW prints it ("60s", "500ms", "1min", "0", "2h",
 * "1d"; a bare number is milliseconds) into microseconds; -1 if unreadable.
 */
int64_t walq__parse_duration_us(const char *text);

/*
 * A name that can be part of a replication slot's: 1 to max of a-z, 0-9
 * and _.
 */
int walq__name_valid(const char *name, size_t max);

char *walq__strdup(const char *s);
char *walq__strndup(const char *s, size_t n);

/*
 * Logger: a callback with a level threshold and a context prefix.  A caller
 * of version 1 of the options gave a callback that takes arg first: fn_v1,
 * with fn NULL.
 */
typedef struct walq__log {
    walq_log_fn fn;
    void *arg;
    walq_log_level level;
    char prefix[96];
    void (*fn_v1)(void *arg, walq_log_level level, const char *msg);
} walq__log;

/* The cheap check that comes before formatting a message. */
#define walq__log_on(lg, lvl) (((lg)->fn != NULL || (lg)->fn_v1 != NULL) && (lvl) <= (lg)->level)

void walq__logf(const walq__log *lg, walq_log_level level, const char *fmt, ...) WALQ__PRINTF(3, 4);

#define WALQ__LOG(lg, lvl, ...)                                                                    \
    do {                                                                                           \
        if (walq__log_on((lg), (lvl)))                                                             \
            walq__logf((lg), (lvl), __VA_ARGS__);                                                  \
    } while (0)

#define walq__debug(lg, ...) WALQ__LOG(lg, WALQ_LOG_DEBUG, __VA_ARGS__)
#define walq__info(lg, ...)  WALQ__LOG(lg, WALQ_LOG_INFO, __VA_ARGS__)
#define walq__warn(lg, ...)  WALQ__LOG(lg, WALQ_LOG_WARNING, __VA_ARGS__)
#define walq__err(lg, ...)   WALQ__LOG(lg, WALQ_LOG_ERROR, __VA_ARGS__)

/* Delay before reconnecting after `failures` failures: 0.1 s doubling up to 3.2 s. */
int64_t walq__reconnect_delay_us(int failures);

/*
 * Warns that the last error (walq_last_error(), without its hint, which is
 * for people, not for retries) is retried in delay_us.
 */
void walq__warn_retry(const walq__log *lg, int64_t delay_us);

/* The earlier of two deadlines, where 0 means none. */
int64_t walq__min_deadline(int64_t a, int64_t b);

/*
 * A watch callback (walq_consumer_watch()) and when it is due: at every
 * change of state, and every interval_us.
 */
typedef struct walq__watcher {
    walq_watch_fn fn;
    void *payload;
    int64_t interval_us;
    int64_t next_at; /* monotonic; 0 before the first call */
    int state;       /* of the last call; -1 before it */
} walq__watcher;

void walq__watcher_set(walq__watcher *wt, walq_watch_fn fn, void *payload, int64_t interval_ms);

/* Calls the callback with *w when it is due at monotonic time now. */
void walq__watcher_call(walq__watcher *wt, const walq_watch *w, int64_t now);

/* When the callback is due next (0: never), for the loop's wait. */
int64_t walq__watcher_due(const walq__watcher *wt);

#endif
