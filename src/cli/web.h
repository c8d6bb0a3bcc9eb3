/*
 * --http of `walq consume` and `walq audit`: /metrics, /healthz, /readyz and
 * a status page for the process, over src/http.c.  What the loop counts
 * comes from its walq__metrics (src/metrics.h); what the page reads from
 * the database it reads on the HTTP thread, over connections of its own
 * with every wait bounded, never through the loop's.
 */
#ifndef WALQ_CLI_WEB_H
#define WALQ_CLI_WEB_H

#include <stdint.h>

#include "metrics.h"

typedef struct walq__web walq__web;

typedef struct walq__web_config {
    const char *listen;      /* ADDR:PORT */
    int64_t ready_within_ms; /* /readyz: streaming and acking within this */
    const char *primary;     /* conninfo of walq's tables; NULL or "": the libpq environment */
    const char *source;      /* conninfo of the slot's server; the same forms */
} walq__web_config;

/* The default of --ready-within, in milliseconds. */
#define WALQ__WEB_READY_WITHIN_MS 60000

/*
 * Starts serving m (borrowed: it must outlive the server).  0, or -1 after
 * printing the error (a bad address, a port in use).
 */
int walq__web_start(walq__web **out, const walq__web_config *cfg, walq__metrics *m);

/* Stops serving and frees w; NULL is fine. */
void walq__web_stop(walq__web *w);

/* Checks --http's value: 0, or -1 after printing the usage error. */
int walq__web_check_listen(const char *listen);

#endif
