/* Error codes, the per-thread failure message, and the small shared helpers. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common.h"

static _Thread_local char last_error[2048];

const char *walq_strerror(int err)
{
    switch (err) {
    case WALQ_OK:
        return "success";
#define WALQ__ERRNO_CASE(name, value, text)                                                        \
    case WALQ_##name:                                                                              \
        return text;
        WALQ_ERRNO_MAP(WALQ__ERRNO_CASE)
#undef WALQ__ERRNO_CASE
    }
    return "unknown error";
}

const char *walq_last_error(void)
{
    return last_error;
}

int walq__error(int code, const char *hint, const char *fmt, ...)
{
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(last_error, sizeof(last_error), fmt, ap);
    va_end(ap);
    if (n < 0)
        n = 0;
    if (hint != NULL && (size_t)n < sizeof(last_error))
        snprintf(last_error + n, sizeof(last_error) - (size_t)n, "\nHINT:  %s", hint);
    return code;
}

int walq__buf_reserve(walq__buf *b, size_t extra)
{
    size_t need = b->len + extra + 1;
    size_t cap;
    char *p;

    if (need <= b->cap)
        return 0;
    cap = b->cap ? b->cap : 256;
    while (cap < need)
        cap *= 2;
    p = realloc(b->data, cap);
    if (p == NULL)
        return WALQ_ENOMEM;
    b->data = p;
    b->cap = cap;
    return 0;
}

int walq__buf_append(walq__buf *b, const char *s, size_t n)
{
    if (walq__buf_reserve(b, n) != 0)
        return WALQ_ENOMEM;
    memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = '\0';
    return 0;
}

int walq__buf_puts(walq__buf *b, const char *s)
{
    return walq__buf_append(b, s, strlen(s));
}

int walq__buf_vprintf(walq__buf *b, const char *fmt, va_list ap)
{
    va_list again;
    int n, rc = 0;

    va_copy(again, ap);
    n = vsnprintf(NULL, 0, fmt, ap);
    if (n < 0)
        rc = WALQ_EINVAL;
    else if (walq__buf_reserve(b, (size_t)n) != 0)
        rc = WALQ_ENOMEM;
    else {
        vsnprintf(b->data + b->len, (size_t)n + 1, fmt, again);
        b->len += (size_t)n;
    }
    va_end(again);
    return rc;
}

int walq__buf_printf(walq__buf *b, const char *fmt, ...)
{
    va_list ap;
    int rc;

    va_start(ap, fmt);
    rc = walq__buf_vprintf(b, fmt, ap);
    va_end(ap);
    return rc;
}

void walq__buf_putf(walq__buf *b, int *rc, const char *fmt, ...)
{
    va_list ap;

    if (*rc != 0)
        return;
    va_start(ap, fmt);
    *rc = walq__buf_vprintf(b, fmt, ap);
    va_end(ap);
}

void walq__buf_reset(walq__buf *b)
{
    b->len = 0;
    if (b->data != NULL)
        b->data[0] = '\0';
}

void walq__buf_free(walq__buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

int64_t walq__mono_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int64_t walq__wall_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int64_t walq__parse_duration_us(const char *text)
{
    static const struct {
        const char *unit;
        int64_t us;
    } units[] = {{"us", 1},
                 {"ms", 1000},
                 {"s", 1000000},
                 {"min", 60000000},
                 {"h", INT64_C(3600000000)},
                 {"d", INT64_C(86400000000)},
                 {"", 1000}};
    char *end;
    long long v;

    errno = 0;
    v = strtoll(text, &end, 10);
    if (end == text || v < 0 || errno == ERANGE)
        return -1;
    for (size_t i = 0; i < WALQ__ARRAY_SIZE(units); i++) {
        if (strcmp(end, units[i].unit) != 0)
            continue;
        /* Too long to count in microseconds: unreadable, not negative. */
        if (v > INT64_MAX / units[i].us)
            return -1;
        return (int64_t)v * units[i].us;
    }
    return -1;
}

char *walq__strndup(const char *s, size_t n)
{
    char *p = malloc(n + 1);

    if (p == NULL)
        return NULL;
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

char *walq__strdup(const char *s)
{
    return s ? walq__strndup(s, strlen(s)) : NULL;
}

void walq__logf(const walq__log *lg, walq_log_level level, const char *fmt, ...)
{
    char msg[4096];
    size_t n;
    va_list ap;

    n = (size_t)snprintf(msg, sizeof(msg), "%s", lg->prefix);
    if (n >= sizeof(msg))
        n = sizeof(msg) - 1;
    va_start(ap, fmt);
    vsnprintf(msg + n, sizeof(msg) - n, fmt, ap);
    va_end(ap);
    if (lg->fn_v1 != NULL)
        lg->fn_v1(lg->arg, level, msg);
    else
        lg->fn(level, msg, lg->arg);
}

int walq__name_valid(const char *name, size_t max)
{
    size_t n = 0;

    if (name == NULL || *name == '\0')
        return 0;
    for (const char *p = name; *p; p++, n++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_'))
            return 0;
    return n <= max;
}

int walq_group_name_valid(const char *group)
{
    /* Slot names hold 63 bytes, and the slot is "walq_" followed by the group. */
    return walq__name_valid(group, 58);
}

int64_t walq__reconnect_delay_us(int failures)
{
    return (int64_t)100000 << (failures < 5 ? failures : 5);
}

void walq__warn_retry(const walq__log *lg, int64_t delay_us)
{
    const char *msg = walq_last_error();
    const char *hint = strstr(msg, "\nHINT:  ");

    walq__warn(lg, "%.*s; reconnecting in %.1f s", hint ? (int)(hint - msg) : (int)strlen(msg), msg,
               (double)delay_us / 1e6);
}

int64_t walq__min_deadline(int64_t a, int64_t b)
{
    return (a == 0 || (b != 0 && b < a)) ? b : a;
}

void walq__watcher_set(walq__watcher *wt, walq_watch_fn fn, void *payload, int64_t interval_ms)
{
    wt->fn = fn;
    wt->payload = payload;
    wt->interval_us = (interval_ms > 0 ? interval_ms : 1000) * 1000;
    wt->next_at = 0;
    wt->state = -1;
}

void walq__watcher_call(walq__watcher *wt, const walq_watch *w, int64_t now)
{
    if (wt->fn == NULL || (now < wt->next_at && (int)w->state == wt->state))
        return;
    wt->state = (int)w->state;
    wt->next_at = now + wt->interval_us;
    wt->fn(w, wt->payload);
}

int64_t walq__watcher_due(const walq__watcher *wt)
{
    return wt->fn != NULL ? wt->next_at : 0;
}
