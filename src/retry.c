/* Reconnecting with backoff. */
#include "retry.h"

#include <string.h>

void walq__retry_failed(walq__retry *r, const walq__log *lg)
{
    int64_t delay = walq__reconnect_delay_us(r->failures);

    walq__warn_retry(lg, delay);
    r->failures++;
    r->at = walq__mono_us() + delay;
}

void walq__retry_ok(walq__retry *r)
{
    r->failures = 0;
}

int walq__retry_due(const walq__retry *r, int64_t now)
{
    return now >= r->at;
}

void walq__retry_lost(walq__retry *r, const walq__log *lg, const char *what)
{
    int64_t delay = walq__reconnect_delay_us(r->failures);
    const char *msg = walq_last_error(), *hint = strstr(msg, "\nHINT:  ");

    walq__warn(lg, "lost %s: %.*s; reconnecting in %.1f s", what,
               hint ? (int)(hint - msg) : (int)strlen(msg), msg, (double)delay / 1e6);
    r->failures++;
    r->at = walq__mono_us() + delay;
}
