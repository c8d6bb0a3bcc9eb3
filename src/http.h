/*
 * A small HTTP server for walq's read-only endpoints, over libmicrohttpd.
 *
 * It is the program's, not the library's: src/http.c is compiled into the
 * walq executable only, so that libwalq does not depend on libmicrohttpd.
 * Requests are answered on libmicrohttpd's threads (a thread per
 * connection, under its own polling thread), never on the caller's loop, so
 * a slow client or a slow query of a handler stalls nothing else.  Handlers
 * run concurrently: whatever they share with the loop or with each other
 * they must guard themselves (see src/metrics.h for the consumer's).
 *
 * How to use it:
 *
 *     static int metrics(void *arg, const walq__http_request *req,
 *                        walq__http_response *resp)
 *     {
 *         resp->content_type = WALQ__HTTP_PROMETHEUS;
 *         return walq__buf_puts(&resp->body, "walq_up 1\n");
 *     }
 *
 *     static const walq__http_route routes[] = {
 *         {"/metrics", metrics},
 *         {"/", page},
 *     };
 *
 *     walq__http *h;
 *     char err[256];
 *     if (walq__http_start(&h, "127.0.0.1:9187", routes, WALQ__ARRAY_SIZE(routes),
 *                          my_state, err, sizeof(err)) != 0)
 *         ... print err: it names the address and the fix ...
 *     ... run ...
 *     walq__http_stop(h);   (waits for requests being answered; frees h)
 *
 * A route's path matches the request's path exactly (the query string is
 * apart: walq__http_arg() reads its arguments).  Only GET and HEAD are answered; anything else gets
 * 405, an unknown path 404.  A handler sets resp->status (200 by default)
 * and resp->content_type (text/plain by default) and appends the body; a
 * handler that returns non-zero (out of memory) makes the answer a 500.
 */
#ifndef WALQ_HTTP_H
#define WALQ_HTTP_H

#include <stddef.h>

#include "common.h"

#define WALQ__HTTP_TEXT       "text/plain; charset=utf-8"
#define WALQ__HTTP_HTML       "text/html; charset=utf-8"
#define WALQ__HTTP_PROMETHEUS "text/plain; version=0.0.4; charset=utf-8"

typedef struct walq__http walq__http;

typedef struct walq__http_request {
    const char *method; /* "GET" or "HEAD" */
    const char *path;   /* without the query string */
    void *conn;         /* libmicrohttpd's connection, for walq__http_arg() */
} walq__http_request;

typedef struct walq__http_response {
    int status;               /* 200 unless the handler says otherwise */
    const char *content_type; /* static string; WALQ__HTTP_TEXT unless set */
    walq__buf body;
} walq__http_response;

typedef int (*walq__http_fn)(void *arg, const walq__http_request *req, walq__http_response *resp);

typedef struct walq__http_route {
    const char *path;
    walq__http_fn fn;
} walq__http_route;

/*
 * Parses "ADDR:PORT" (a numeric IPv4 address, or [IPv6]:PORT) and starts
 * serving it.  routes and arg are borrowed and must outlive the server.
 * The listening socket is bound here, so an address in use or one the host
 * does not have fails now, with err saying so.  Returns 0, or -1 with the
 * reason in err.
 */
int walq__http_start(walq__http **out, const char *addr_port, const walq__http_route *routes,
                     size_t nroutes, void *arg, char *err, size_t errlen);

/* Checks "ADDR:PORT" without binding it: 0, or -1 with the reason in err. */
int walq__http_check_addr(const char *addr_port, char *err, size_t errlen);

/* The query string's argument name, decoded, or NULL.  Borrowed for the request. */
const char *walq__http_arg(const walq__http_request *req, const char *name);

/* The port bound (useful with port 0). */
int walq__http_port(const walq__http *h);

/* Stops accepting, waits for the requests being answered, frees h.  NULL is fine. */
void walq__http_stop(walq__http *h);

/* Appends s with &, <, >, " and ' as entities: text for HTML content or attributes. */
int walq__http_html(walq__buf *b, const char *s);

/*
 * Appends s as the inside of a Prometheus label value: backslash, double
 * quote and newline escaped as the text exposition format says.
 */
int walq__http_label(walq__buf *b, const char *s);

#endif
