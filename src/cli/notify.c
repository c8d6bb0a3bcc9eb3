/* systemd notifications of walq consume and walq audit: see notify.h. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef WALQ_HAVE_SYSTEMD
#include <systemd/sd-daemon.h>
#endif

#include "cli/notify.h"
#include "common.h"

static void notify_send(const walq__notify *n, const char *text)
{
#ifdef WALQ_HAVE_SYSTEMD
    if (n->on)
        sd_notify(0, text);
#else
    (void)n;
    (void)text;
#endif
}

void walq__notify_init(walq__notify *n, void (*describe)(char *buf, size_t len, void *arg),
                       void *arg)
{
    memset(n, 0, sizeof(*n));
    n->describe = describe;
    n->arg = arg;
#ifdef WALQ_HAVE_SYSTEMD
    {
        const char *sock = getenv("NOTIFY_SOCKET");
        uint64_t usec = 0;

        n->on = sock != NULL && *sock != '\0';
        /* WATCHDOG_PID, when set, says whether the watchdog is this process's. */
        if (n->on && sd_watchdog_enabled(0, &usec) > 0)
            n->watchdog_us = usec;
    }
#endif
}

int64_t walq__notify_interval_ms(const walq__notify *n)
{
    int64_t ms = n->watchdog_us > 0 ? (int64_t)(n->watchdog_us / 4000) : 1000;

    return ms < 10 ? 10 : ms > 1000 ? 1000 : ms;
}

static const char *state_name(walq_state st)
{
    switch (st) {
    case WALQ_STATE_STANDBY:
        return "standing by";
    case WALQ_STATE_BACKFILL:
        return "reading the backlog";
    case WALQ_STATE_STREAMING:
        return "streaming";
    case WALQ_STATE_RECONNECTING:
        return "reconnecting";
    case WALQ_STATE_STOPPING:
        return "stopping";
    case WALQ_STATE_STARTING:
        break;
    }
    return "starting";
}

void walq__notify_watch(const walq_watch *w, void *payload)
{
    walq__notify *n = payload;
    char msg[512], done[160] = "";
    int64_t now = walq__mono_us();
    /* Nothing confirmed yet (a new slot, a backlog being read): no lag to tell. */
    uint64_t lag = w->confirmed_lsn > 0 && w->received_lsn > w->confirmed_lsn
                       ? w->received_lsn - w->confirmed_lsn
                       : 0;
    size_t len = 0;

    if (!n->on)
        return;
    if (n->describe != NULL && n->arg != NULL)
        n->describe(done, sizeof(done), n->arg);
    snprintf(n->status, sizeof(n->status), "%s%s%s, lag %llu B", state_name(w->state),
             *done ? ", " : "", done, (unsigned long long)lag);
    len += (size_t)snprintf(msg + len, sizeof(msg) - len, "STATUS=%s", n->status);
    if (!n->ready && (w->state == WALQ_STATE_STREAMING || w->state == WALQ_STATE_BACKFILL ||
                      w->state == WALQ_STATE_STANDBY)) {
        n->ready = 1;
        len += (size_t)snprintf(msg + len, sizeof(msg) - len, "\nREADY=1");
    }
    if (w->state == WALQ_STATE_STOPPING && len < sizeof(msg))
        len += (size_t)snprintf(msg + len, sizeof(msg) - len, "\nSTOPPING=1");
    if (n->watchdog_us > 0 && now >= n->next_ping && len < sizeof(msg)) {
        n->next_ping = now + (int64_t)(n->watchdog_us / 4);
        snprintf(msg + len, sizeof(msg) - len, "\nWATCHDOG=1");
    }
    notify_send(n, msg);
}

void walq__notify_stopping(walq__notify *n)
{
    notify_send(n, "STOPPING=1\nSTATUS=stopped");
}
