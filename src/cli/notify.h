/*
 * systemd: readiness, status and the watchdog of the long-running commands,
 * through sd_notify(3).  Everything here is a no-op outside a unit of
 * Type=notify (no NOTIFY_SOCKET), and in a build without libsystemd.
 *
 * The library knows nothing of it: the command hands walq__notify_watch to
 * walq_consumer_watch() (or the audit's options), so that the pings come
 * from the loop's own thread and stop when the loop does.
 */
#ifndef WALQ_CLI_NOTIFY_H
#define WALQ_CLI_NOTIFY_H

#include <stddef.h>
#include <stdint.h>

#include "walq.h"

typedef struct walq__notify {
    int on;               /* NOTIFY_SOCKET is set */
    uint64_t watchdog_us; /* WATCHDOG_USEC for this process; 0: no watchdog */
    int ready;            /* READY=1 was sent */
    int64_t next_ping;    /* monotonic microseconds */
    char status[256];     /* the last STATUS= sent */
    /* What the command has done so far, e.g. "12 jobs done, 1 dead". */
    void (*describe)(char *buf, size_t len, void *arg);
    void *arg;
} walq__notify;

void walq__notify_init(walq__notify *n, void (*describe)(char *buf, size_t len, void *arg),
                       void *arg);

/* How often the loop is to call walq__notify_watch: a quarter of the watchdog, 1 s at most. */
int64_t walq__notify_interval_ms(const walq__notify *n);

/*
 * The watch callback (payload: the walq__notify): READY=1 once the command
 * streams, backfills or stands by behind another reader; STATUS= with the
 * state, the describe() text and the lag; WATCHDOG=1 while the watchdog is
 * on; STOPPING=1 once it stops.
 */
void walq__notify_watch(const walq_watch *w, void *payload);

/* The command is about to exit. */
void walq__notify_stopping(walq__notify *n);

#endif
