/*
 * What a long-running command (walq consume, walq audit) keeps beside its
 * loop, set up and taken down the same way for both: systemd's
 * notifications, the --http server, the stop handler of SIGTERM and SIGINT,
 * and SIGHUP's reloads.
 *
 *   walq__service_init()   before the command's object opens (the audit
 *                          hands the watch to its options)
 *   walq__service_start()  once it is open
 *   walq__service_stop()   once its loop returned, before it is freed
 */
#ifndef WALQ_CLI_SERVICE_H
#define WALQ_CLI_SERVICE_H

#include <stddef.h>

#include "metrics.h"
#include "notify.h"
#include "settings.h"
#include "web.h"

typedef struct walq__service {
    walq__notify notify;
    walq__web *web;
    int stop_on, reload_on;
} walq__service;

/* describe(buf, len, obj) is systemd's STATUS= text, once the object is open. */
void walq__service_init(walq__service *s, void (*describe)(char *buf, size_t len, void *obj));

/*
 * Starts what runs beside obj's loop: --http when web->listen is not NULL
 * (serving m), stop(obj, immediate) at SIGTERM and SIGINT, and r's reloads
 * at SIGHUP (r->arg becomes obj).  0, or -1 after printing why the web
 * server could not start, with nothing left running.
 */
int walq__service_start(walq__service *s, void *obj, const walq__web_config *web, walq__metrics *m,
                        void (*stop)(void *obj, int immediate), walq__reload *r);

/* The loop returned: no more reloads, STOPPING=1, the default signal handling, no web server. */
void walq__service_stop(walq__service *s);

#endif
