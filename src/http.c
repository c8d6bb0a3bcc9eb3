/*
 * The HTTP server of walq's endpoints (see http.h): the listening socket is
 * walq's own, bound at start so that its errors come at once and name the
 * address; libmicrohttpd answers on its own threads.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <microhttpd.h>

#include "http.h"

struct walq__http {
    struct MHD_Daemon *d;
    const walq__http_route *routes;
    size_t nroutes;
    void *arg;
    int port;
};

/* An address to bind: what "ADDR:PORT" says. */
typedef struct http_addr {
    struct sockaddr_storage ss;
    socklen_t len;
} http_addr;

static int parse_addr(const char *s, http_addr *a, char *err, size_t errlen)
{
    char host[64];
    const char *colon, *port_text;
    char *end;
    long port;
    size_t hlen;

    memset(a, 0, sizeof(*a));
    if (s == NULL || *s == '\0')
        goto bad;
    if (s[0] == '[') {
        const char *close = strchr(s, ']');

        if (close == NULL || close[1] != ':')
            goto bad;
        hlen = (size_t)(close - s - 1);
        if (hlen >= sizeof(host))
            goto bad;
        memcpy(host, s + 1, hlen);
        host[hlen] = '\0';
        port_text = close + 2;
    } else {
        colon = strrchr(s, ':');
        if (colon == NULL)
            goto bad;
        hlen = (size_t)(colon - s);
        if (hlen == 0 || hlen >= sizeof(host))
            goto bad;
        memcpy(host, s, hlen);
        host[hlen] = '\0';
        port_text = colon + 1;
    }
    errno = 0;
    port = strtol(port_text, &end, 10);
    if (errno != 0 || end == port_text || *end != '\0' || port < 0 || port > 65535)
        goto bad;
    if (s[0] == '[') {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&a->ss;

        if (inet_pton(AF_INET6, host, &in6->sin6_addr) != 1)
            goto bad;
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons((uint16_t)port);
        a->len = sizeof(*in6);
    } else {
        struct sockaddr_in *in4 = (struct sockaddr_in *)&a->ss;

        if (inet_pton(AF_INET, host, &in4->sin_addr) != 1)
            goto bad;
        in4->sin_family = AF_INET;
        in4->sin_port = htons((uint16_t)port);
        a->len = sizeof(*in4);
    }
    return 0;
bad:
    snprintf(err, errlen,
             "invalid --http address \"%.128s\"\nHINT:  Give ADDR:PORT with a numeric address, "
             "such as 127.0.0.1:9187, 0.0.0.0:9187 or [::1]:9187.",
             s ? s : "");
    return -1;
}

int walq__http_check_addr(const char *addr_port, char *err, size_t errlen)
{
    http_addr a;

    return parse_addr(addr_port, &a, err, errlen);
}

/* A socket bound and listening on a, close-on-exec so that handlers do not inherit it. */
static int listen_on(const char *text, const http_addr *a, char *err, size_t errlen)
{
    int one = 1, e;
    int fd = socket(a->ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);

    if (fd < 0) {
        snprintf(err, errlen, "could not create a socket for --http \"%.128s\": %s", text,
                 strerror(errno));
        return -1;
    }
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, (const struct sockaddr *)&a->ss, a->len) != 0) {
        e = errno;
        close(fd);
        snprintf(err, errlen, "could not listen on --http \"%.128s\": %s%s", text, strerror(e),
                 e == EADDRINUSE ? "\nHINT:  Another process serves that port; choose another "
                                   "one, or stop that process."
                 : e == EADDRNOTAVAIL
                     ? "\nHINT:  This host has no such address; use 127.0.0.1 or 0.0.0.0."
                     : "");
        return -1;
    }
    if (listen(fd, 64) != 0) {
        e = errno;
        close(fd);
        snprintf(err, errlen, "could not listen on --http \"%.128s\": %s", text, strerror(e));
        return -1;
    }
    return fd;
}

static enum MHD_Result send_text(struct MHD_Connection *conn, unsigned status, const char *text)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(strlen(text), (void *)(uintptr_t)text,
                                                             MHD_RESPMEM_PERSISTENT);
    enum MHD_Result rc;

    if (r == NULL)
        return MHD_NO;
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, WALQ__HTTP_TEXT);
    if (status == MHD_HTTP_METHOD_NOT_ALLOWED)
        MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
    rc = MHD_queue_response(conn, status, r);
    MHD_destroy_response(r);
    return rc;
}

static enum MHD_Result answer(void *cls, struct MHD_Connection *conn, const char *url,
                              const char *method, const char *version, const char *upload_data,
                              size_t *upload_data_size, void **con_cls)
{
    walq__http *h = cls;
    walq__http_request req = {method, url, conn};
    walq__http_response resp = {200, WALQ__HTTP_TEXT, {NULL, 0, 0}};
    const walq__http_route *route = NULL;
    struct MHD_Response *r;
    enum MHD_Result rc;

    (void)version;
    (void)upload_data;
    (void)upload_data_size;
    /* The first call is for the headers alone; answer on the second. */
    if (*con_cls == NULL) {
        *con_cls = h;
        return MHD_YES;
    }
    if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 && strcmp(method, MHD_HTTP_METHOD_HEAD) != 0)
        return send_text(conn, MHD_HTTP_METHOD_NOT_ALLOWED, "only GET and HEAD are served\n");
    for (size_t i = 0; i < h->nroutes; i++)
        if (strcmp(h->routes[i].path, url) == 0)
            route = &h->routes[i];
    if (route == NULL)
        return send_text(conn, MHD_HTTP_NOT_FOUND, "not found\n");
    if (route->fn(h->arg, &req, &resp) != 0) {
        walq__buf_free(&resp.body);
        return send_text(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory\n");
    }
    /* An empty body is still a buffer libmicrohttpd may free. */
    if (resp.body.data == NULL && walq__buf_reserve(&resp.body, 1) != 0)
        return send_text(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory\n");
    r = MHD_create_response_from_buffer(resp.body.len, resp.body.data, MHD_RESPMEM_MUST_FREE);
    if (r == NULL) {
        walq__buf_free(&resp.body);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, resp.content_type);
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
    rc = MHD_queue_response(conn, (unsigned)resp.status, r);
    MHD_destroy_response(r);
    return rc;
}

int walq__http_start(walq__http **out, const char *addr_port, const walq__http_route *routes,
                     size_t nroutes, void *arg, char *err, size_t errlen)
{
    http_addr a;
    walq__http *h;
    sigset_t all, old;
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION | MHD_USE_ITC;
    int fd;

    *out = NULL;
    if (parse_addr(addr_port, &a, err, errlen) != 0)
        return -1;
    h = calloc(1, sizeof(*h));
    if (h == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    fd = listen_on(addr_port, &a, err, errlen);
    if (fd < 0) {
        free(h);
        return -1;
    }
    if (a.ss.ss_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    h->routes = routes;
    h->nroutes = nroutes;
    h->arg = arg;
    {
        struct sockaddr_storage bound;
        socklen_t blen = sizeof(bound);

        if (getsockname(fd, (struct sockaddr *)&bound, &blen) == 0)
            h->port = ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
                                                        : ((struct sockaddr_in *)&bound)->sin_port);
    }
    /*
     * Signals are the main thread's: its loop acts on them.  libmicrohttpd's
     * threads, made now and later by its polling thread, inherit this mask.
     */
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    h->d = MHD_start_daemon(flags, 0, NULL, NULL, answer, h, MHD_OPTION_LISTEN_SOCKET, fd,
                            MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)10,
                            MHD_OPTION_CONNECTION_LIMIT, (unsigned)32, MHD_OPTION_END);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (h->d == NULL) {
        close(fd);
        free(h);
        snprintf(err, errlen, "could not start the HTTP server on --http \"%.128s\"", addr_port);
        return -1;
    }
    *out = h;
    return 0;
}

int walq__http_port(const walq__http *h)
{
    return h->port;
}

const char *walq__http_arg(const walq__http_request *req, const char *name)
{
    return MHD_lookup_connection_value(req->conn, MHD_GET_ARGUMENT_KIND, name);
}

void walq__http_stop(walq__http *h)
{
    MHD_socket fd;

    if (h == NULL)
        return;
    /* The listening socket is walq's: closed once no thread of the server can use it. */
    fd = MHD_quiesce_daemon(h->d);
    MHD_stop_daemon(h->d);
    if (fd != MHD_INVALID_SOCKET)
        close(fd);
    free(h);
}

int walq__http_html(walq__buf *b, const char *s)
{
    const char *run = s;
    int rc = 0;

    if (s == NULL)
        return 0;
    for (; *s && rc == 0; s++) {
        const char *ent = NULL;

        switch (*s) {
        case '&':
            ent = "&amp;";
            break;
        case '<':
            ent = "&lt;";
            break;
        case '>':
            ent = "&gt;";
            break;
        case '"':
            ent = "&quot;";
            break;
        case '\'':
            ent = "&#39;";
            break;
        default:
            continue;
        }
        rc = walq__buf_append(b, run, (size_t)(s - run));
        if (rc == 0)
            rc = walq__buf_puts(b, ent);
        run = s + 1;
    }
    return rc ? rc : walq__buf_append(b, run, strlen(run));
}

int walq__http_label(walq__buf *b, const char *s)
{
    const char *run = s;
    int rc = 0;

    if (s == NULL)
        return 0;
    for (; *s && rc == 0; s++) {
        const char *esc = *s == '\\' ? "\\\\" : *s == '"' ? "\\\"" : *s == '\n' ? "\\n" : NULL;

        if (esc == NULL)
            continue;
        rc = walq__buf_append(b, run, (size_t)(s - run));
        if (rc == 0)
            rc = walq__buf_puts(b, esc);
        run = s + 1;
    }
    return rc ? rc : walq__buf_append(b, run, strlen(run));
}
