/* Connections, migrations and schema checks. */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db.h"

const char *walq__pg_message(PGconn *conn, const PGresult *res, char *buf, size_t len)
{
    const char *m = res ? PQresultErrorMessage(res) : NULL;
    size_t n;

    if (m == NULL || *m == '\0')
        m = conn ? PQerrorMessage(conn) : "";
    /* libpq prefixes "ERROR:  " and ends with a newline; keep only the text. */
    if (strncmp(m, "ERROR:  ", 8) == 0)
        m += 8;
    else if (strncmp(m, "FATAL:  ", 8) == 0)
        m += 8;
    snprintf(buf, len, "%s", m);
    n = strcspn(buf, "\n");
    buf[n] = '\0';
    return buf;
}

const char *walq__conn_name(PGconn *conn, char *buf, size_t len)
{
    const char *host = PQhost(conn);
    const char *port = PQport(conn);

    snprintf(buf, len, "%s:%s", host && *host ? host : "localhost", port && *port ? port : "5432");
    return buf;
}

/* ------------------------------------------------------------------ */
/* Connection strings shown in messages                                 */

static int is_secret_key(const char *key)
{
    return strcmp(key, "password") == 0 || strcmp(key, "sslpassword") == 0;
}

/* Appends s to out (outlen bytes in all, *k used), as far as it fits. */
static void put(char *out, size_t outlen, size_t *k, const char *s)
{
    size_t n = strlen(s);

    if (*k + 1 >= outlen)
        return;
    if (n > outlen - 1 - *k)
        n = outlen - 1 - *k;
    memcpy(out + *k, s, n);
    *k += n;
    out[*k] = '\0';
}

/* A value as a conninfo value: bare when it can be, else quoted with '...'. */
static void put_value(char *out, size_t outlen, size_t *k, const char *v)
{
    int bare = *v != '\0';

    for (const char *c = v; *c && bare; c++)
        bare = !(*c == ' ' || *c == '\t' || *c == '\n' || *c == '\r' || *c == '\f' || *c == '\v' ||
                 *c == '\'' || *c == '\\');
    if (bare) {
        put(out, outlen, k, v);
        return;
    }
    put(out, outlen, k, "'");
    for (const char *c = v; *c; c++) {
        char one[3] = {'\\', *c, '\0'};

        put(out, outlen, k, *c == '\'' || *c == '\\' ? one : one + 1);
    }
    put(out, outlen, k, "'");
}

#define MASK "********"

static void mask_depth(const char *conninfo, char *out, size_t outlen, int depth);

/* Does libpq take this dbname for a connection string of its own? */
static int is_conninfo_text(const char *v)
{
    return strncmp(v, "postgresql://", 13) == 0 || strncmp(v, "postgres://", 11) == 0 ||
           strchr(v, '=') != NULL;
}

/* The keys shown first, in this order; the rest follow in libpq's. */
static const char *const shown_first[] = {"host", "hostaddr", "port", "user", "password", "dbname"};

static void put_option(char *out, size_t outlen, size_t *k, const PQconninfoOption *o, int depth)
{
    if (*k > 0)
        put(out, outlen, k, " ");
    put(out, outlen, k, o->keyword);
    put(out, outlen, k, "=");
    if (is_secret_key(o->keyword)) {
        put(out, outlen, k, MASK);
    } else if (strcmp(o->keyword, "dbname") == 0 && depth == 0 && is_conninfo_text(o->val)) {
        /* A string inside the string (a user's mistake, or expand_dbname): masked too. */
        char inner[512];

        mask_depth(o->val, inner, sizeof(inner), 1);
        put_value(out, outlen, k, inner);
    } else {
        put_value(out, outlen, k, o->val);
    }
}

/*
 * Whether a string libpq cannot read may hold a secret, so that neither it
 * nor the pieces libpq's reason quotes are shown: one that names a password
 * in any spelling ("password", "PASSWORD=", "passwd", "pwd"), a secret, a
 * token or a key, or could hide one in a URI's user information or in
 * percent-encoding.
 */
static int may_hold_secret(const char *s)
{
    static const char *const words[] = {"pass", "pwd", "secret", "token", "key"};

    if (strchr(s, '%') != NULL || strchr(s, '@') != NULL)
        return 1;
    for (size_t i = 0; i < WALQ__ARRAY_SIZE(words); i++)
        if (strcasestr(s, words[i]) != NULL)
            return 1;
    return 0;
}

static void mask_depth(const char *conninfo, char *out, size_t outlen, int depth)
{
    PQconninfoOption *opts;
    char *err = NULL;
    size_t k = 0;

    if (outlen == 0)
        return;
    out[0] = '\0';
    if (conninfo == NULL)
        return;
    /* Read by libpq itself: what is shown is what libpq would use, bar the secrets. */
    opts = PQconninfoParse(conninfo, &err);
    PQfreemem(err);
    if (opts == NULL) {
        put(out, outlen, &k, may_hold_secret(conninfo) ? MASK : conninfo);
        return;
    }
    for (size_t i = 0; i < WALQ__ARRAY_SIZE(shown_first); i++)
        for (const PQconninfoOption *o = opts; o->keyword != NULL; o++)
            if (o->val != NULL && strcmp(o->keyword, shown_first[i]) == 0)
                put_option(out, outlen, &k, o, depth);
    for (const PQconninfoOption *o = opts; o->keyword != NULL; o++) {
        int first = 0;

        for (size_t i = 0; i < WALQ__ARRAY_SIZE(shown_first); i++)
            first |= strcmp(o->keyword, shown_first[i]) == 0;
        if (o->val != NULL && !first)
            put_option(out, outlen, &k, o, depth);
    }
    PQconninfoFree(opts);
}

void walq__conninfo_mask(const char *conninfo, char *out, size_t outlen)
{
    mask_depth(conninfo, out, outlen, 0);
}

/* ------------------------------------------------------------------ */
/* Connecting                                                           */

/*
 * What every connection gets unless the user set it: a connect that gives
 * up, and keepalives and a TCP timeout so that a server that vanished
 * (a pulled cable, a dropped route) is noticed in about half a minute
 * rather than the kernel's two hours.
 */
static const struct {
    const char *key;
    const char *val;
} conn_defaults[] = {
    {"connect_timeout", WALQ__CONNECT_TIMEOUT_S},
    {"keepalives", "1"},
    {"keepalives_idle", "10"},
    {"keepalives_interval", "5"},
    {"keepalives_count", "3"},
    {"tcp_user_timeout", "30000"},
};

static const PQconninfoOption *find_option(const PQconninfoOption *opts, const char *key)
{
    for (; opts != NULL && opts->keyword != NULL; opts++)
        if (strcmp(opts->keyword, key) == 0)
            return opts;
    return NULL;
}

static const char *process_env(const char *name)
{
    return getenv(name);
}

/*
 * libpq's reason, with the pieces of the string it quotes ("...") left out
 * when they may be pieces of a password.
 */
static void reason_without_pieces(const char *why, int hide, char *buf, size_t len)
{
    size_t k = 0;
    int inside = 0;

    buf[0] = '\0';
    for (const char *c = why; *c && *c != '\n' && k + 1 < len; c++) {
        if (hide && *c == '"') {
            inside = !inside;
            if (inside && k + 5 < len) {
                memcpy(buf + k, "\"...", 4);
                k += 4;
            } else if (!inside) {
                buf[k++] = '"';
            }
            continue;
        }
        if (!inside || !hide)
            buf[k++] = *c;
    }
    buf[k] = '\0';
}

static int invalid_conninfo(const char *conninfo, const char *errmsg)
{
    char masked[512], buf[512];

    walq__conninfo_mask(conninfo, masked, sizeof(masked));
    reason_without_pieces(errmsg ? errmsg : "out of memory", may_hold_secret(conninfo), buf,
                          sizeof(buf));
    return walq__error(WALQ_EINVAL,
                       "Use key=value pairs (host=... dbname=...) or a postgresql:// URI.",
                       "invalid connection string \"%s\": %s", masked, buf);
}

int walq__conn_params_build(walq__conn_params *out, const char *conninfo, walq__conn_kind kind,
                            const char *appname, const char *(*env)(const char *name))
{
    PQconninfoOption *opts;
    char *errmsg = NULL;
    int n = 0;

    memset(out, 0, sizeof(*out));
    if (env == NULL)
        env = process_env;
    /* Parse first so that a malformed string gets its own message. */
    opts = PQconninfoParse(conninfo != NULL ? conninfo : "", &errmsg);
    if (opts == NULL) {
        int rc = invalid_conninfo(conninfo != NULL ? conninfo : "", errmsg);

        PQfreemem(errmsg);
        return rc;
    }
    if (conninfo != NULL && *conninfo != '\0') {
        /* Expanded by libpq (expand_dbname): the user's settings come first. */
        out->keys[n] = "dbname";
        out->vals[n++] = conninfo;
    }
    out->keys[n] = "fallback_application_name";
    out->vals[n++] = appname ? appname : "walq";
    for (size_t i = 0; i < WALQ__ARRAY_SIZE(conn_defaults); i++) {
        const PQconninfoOption *o = find_option(opts, conn_defaults[i].key);
        const char *set;

        /* An older libpq without the setting: it has no say in it. */
        if (o == NULL)
            continue;
        /* Later settings win over the string's, and any win over the environment's. */
        if (o->val != NULL)
            continue;
        set = o->envvar != NULL ? env(o->envvar) : NULL;
        if (set != NULL && *set != '\0')
            continue;
        out->keys[n] = conn_defaults[i].key;
        out->vals[n++] = conn_defaults[i].val;
    }
    PQconninfoFree(opts);
    if (kind == WALQ__CONN_REPLICATION) {
        out->keys[n] = "replication";
        out->vals[n++] = "database";
        out->keys[n] = "options";
        out->vals[n++] = "-c datestyle=ISO -c timezone=UTC -c extra_float_digits=3";
    }
    out->keys[n] = NULL;
    out->vals[n] = NULL;
    out->n = n;
    return 0;
}

/*
 * The fix of a failed TLS connection, from libpq's message, or NULL: which
 * certificate check failed and which setting changes it.
 */
static const char *tls_hint(const char *msg)
{
    if (strstr(msg, "certificate verify failed") != NULL)
        return "TLS: the server's certificate is not signed by a CA in sslrootcert (by default "
               "~/.postgresql/root.crt).  Give sslrootcert the file of the CA that signed the "
               "server's certificate.";
    if (strstr(msg, "does not match host name") != NULL ||
        strstr(msg, "could not get server's host name from server certificate") != NULL)
        return "TLS: with sslmode=verify-full the server's certificate must name the host "
               "connected to.  Give host the name the certificate has (hostaddr may give its "
               "address), use a certificate made for this name, or sslmode=verify-ca to check "
               "the CA alone.";
    if (strstr(msg, "root certificate file") != NULL)
        return "TLS: sslmode verify-ca and verify-full need the CA's certificate.  Give its file "
               "with sslrootcert (or PGSSLROOTCERT).";
    if (strstr(msg, "server does not support SSL") != NULL)
        return "TLS: the server does not take TLS connections.  Set ssl = on (with ssl_cert_file "
               "and ssl_key_file) in its postgresql.conf, or give a server that does.";
    if (strstr(msg, "SSL error") != NULL || strstr(msg, "SSL SYSCALL error") != NULL)
        return "TLS: the encrypted connection failed.  Check the sslmode, sslrootcert, sslcert "
               "and sslkey settings against the server's certificate and its ssl settings.";
    return NULL;
}

static int explain_connect_failure(PGconn *conn, const char *conninfo, walq__conn_kind kind)
{
    char msg[1024];
    char to[600] = "";
    const char *tls;

    /* With no connection string the server's own message names the socket. */
    if (conninfo && *conninfo) {
        char masked[512];

        walq__conninfo_mask(conninfo, masked, sizeof(masked));
        snprintf(to, sizeof(to), " to \"%s\"", masked);
    }
    walq__pg_message(conn, NULL, msg, sizeof(msg));
    if (strstr(msg, "replication role") != NULL || strstr(msg, "REPLICATION attribute") ||
        (kind == WALQ__CONN_REPLICATION && strstr(msg, "permission denied") != NULL)) {
        char hint[256];
        const char *user = PQuser(conn);

        snprintf(hint, sizeof(hint),
                 "Grant the role the REPLICATION attribute (ALTER ROLE %s REPLICATION) or "
                 "connect as a role that has it.",
                 user && *user ? user : "name");
        return walq__error(WALQ_EPERM, hint, "could not start a replication connection%s: %s", to,
                           msg);
    }
    if (strstr(msg, "pg_hba.conf") != NULL && kind == WALQ__CONN_REPLICATION)
        return walq__error(WALQ_EPERM,
                           "Allow replication connections for this role and database in "
                           "pg_hba.conf.",
                           "could not start a replication connection%s: %s", to, msg);
    if (strstr(msg, "number of requested standby connections exceeds max_wal_senders") ||
        strstr(msg, "max_wal_senders"))
        return walq__error(WALQ_ESERVER, "Raise max_wal_senders on the server and restart it.",
                           "could not start a replication connection%s: %s", to, msg);
    if ((tls = tls_hint(msg)) != NULL)
        return walq__error(WALQ_ECONN, tls, "could not connect%s: %s", to, msg);
    if (strstr(msg, "timeout expired") != NULL)
        return walq__error(WALQ_ECONN,
                           "Check that the server is running and reachable from here: a host "
                           "or firewall that drops packets looks like this.  connect_timeout "
                           "in the connection string (or PGCONNECT_TIMEOUT) sets the wait, "
                           "10 s by default.",
                           "could not connect%s: %s", to, msg);
    return walq__error(WALQ_ECONN,
                       "Check the connection string and that the server is running; walq "
                       "reads PGHOST, PGPORT, PGUSER and PGDATABASE when none is given.",
                       "could not connect%s: %s", to, msg);
}

static void ignore_notice(void *arg, const char *message)
{
    (void)arg;
    (void)message;
}

int walq__connect(PGconn **out, const char *conninfo, walq__conn_kind kind, const char *appname)
{
    walq__conn_params params;
    PGconn *conn;
    int rc;

    *out = NULL;
    rc = walq__conn_params_build(&params, conninfo, kind, appname, NULL);
    if (rc != 0)
        return rc;
    conn = PQconnectdbParams(params.keys, params.vals, 1);
    if (conn == NULL)
        return walq__error(WALQ_ENOMEM, NULL, "out of memory while connecting");
    if (PQstatus(conn) != CONNECTION_OK) {
        rc = explain_connect_failure(conn, conninfo, kind);
        PQfinish(conn);
        return rc;
    }
    /* The library never prints: server notices are not for standard error. */
    PQsetNoticeProcessor(conn, ignore_notice, NULL);
    *out = conn;
    return 0;
}

int walq__conn_failed(PGconn *conn, const PGresult *res)
{
    /*
     * Besides a lost connection: the server takes no writes now (25006: a
     * standby, or default_transaction_read_only), a lock or statement waited
     * past its timeout (55P03, 57014), a serialization failure or deadlock
     * (40001, 40P01), too many connections or another shortage (class 53).
     * All pass; what failed is tried again, with backoff.
     */
    static const char *const transient[] = {"08",    "57P0",  "25006", "55P03",
                                            "57014", "40001", "40P01", "53"};
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;

    if (PQstatus(conn) == CONNECTION_BAD || res == NULL)
        return 1;
    if (state != NULL) {
        for (size_t i = 0; i < WALQ__ARRAY_SIZE(transient); i++)
            if (strncmp(state, transient[i], strlen(transient[i])) == 0)
                return 1;
        return 0;
    }
    /* Errors made by libpq itself carry no SQLSTATE. */
    return PQresultStatus(res) == PGRES_FATAL_ERROR;
}

/* ------------------------------------------------------------------ */
/* Waiting for a server, within bounds                                 */

/* The calling thread's: set while a consumer runs. */
static _Thread_local const walq__waiter *current_waiter;

const walq__waiter *walq__waiter_set(const walq__waiter *w)
{
    const walq__waiter *old = current_waiter;

    current_waiter = w;
    return old;
}

/* Waits so long, then the connection is given up for lost. */
static int gave_up(PGconn *conn, const char *what, int64_t timeout_us)
{
    char name[128];

    return walq__error(WALQ_ECONN, NULL, "could not %s: \"%s\" did not answer within %.1f s", what,
                       walq__conn_name(conn, name, sizeof(name)), (double)timeout_us / 1e6);
}

int walq__wait_result(PGconn *conn, const char *what)
{
    const walq__waiter *w = current_waiter;
    int64_t start = walq__mono_us(), deadline = 0;

    if (w != NULL && w->timeout_us > 0)
        deadline = start + w->timeout_us;
    for (;;) {
        int flushed = PQflush(conn), ms = 100, n;
        struct pollfd p = {.fd = PQsocket(conn), .events = POLLIN};
        int64_t now;

        /* A failure to send shows in the results. */
        if (flushed < 0 || (flushed == 0 && !PQisBusy(conn)))
            return 0;
        now = walq__mono_us();
        if (deadline != 0 && now >= deadline)
            return gave_up(conn, what, w->timeout_us);
        if (deadline != 0 && (deadline - now) / 1000 < ms)
            ms = (int)((deadline - now + 999) / 1000);
        if (flushed == 1)
            p.events |= POLLOUT;
        n = poll(&p, 1, ms);
        if (n < 0 && errno != EINTR)
            return walq__error(WALQ_ESYS, NULL, "poll failed: %s", strerror(errno));
        if (n > 0 && (p.revents & (POLLIN | POLLERR | POLLHUP)) && !PQconsumeInput(conn))
            return 0;
        if (w != NULL && w->tick != NULL && w->tick(w->arg) != 0) {
            PGcancel *cancel = PQgetCancel(conn);
            char buf[256];

            /* Stopped at once: the server may stop its statement too. */
            if (cancel != NULL) {
                PQcancel(cancel, buf, sizeof(buf));
                PQfreeCancel(cancel);
            }
            return walq__error(WALQ_ECANCELED, NULL, "could not %s: stopped at once", what);
        }
    }
}

/* The results of what was sent: the first that failed, or else the last. */
static PGresult *collect(PGconn *conn)
{
    PGresult *r, *keep = NULL;
    int keep_failed = 0;

    while ((r = PQgetResult(conn)) != NULL) {
        ExecStatusType st = PQresultStatus(r);
        int failed = st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK && st != PGRES_EMPTY_QUERY;

        if (keep == NULL || !keep_failed) {
            PQclear(keep);
            keep = r;
            keep_failed = failed;
        } else {
            PQclear(r);
        }
        if (PQstatus(conn) == CONNECTION_BAD)
            break;
    }
    return keep;
}

int walq__finish_query(PGconn *conn, PGresult **res, const char *what)
{
    int rc = walq__wait_result(conn, what);

    *res = NULL;
    return rc ? rc : walq__query_result(conn, collect(conn), res, what);
}

int walq__query(PGconn *conn, PGresult **res, const char *what, const char *sql, int nparams,
                const char *const *params)
{
    *res = NULL;
    if (!PQsendQueryParams(conn, sql, nparams, NULL, params, NULL, NULL, 0))
        return walq__query_result(conn, NULL, res, what);
    return walq__finish_query(conn, res, what);
}

int walq__query_result(PGconn *conn, PGresult *r, PGresult **res, const char *what)
{
    ExecStatusType st = PQresultStatus(r);
    char msg[1024];

    *res = NULL;

    if (st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK) {
        *res = r;
        return 0;
    }
    walq__pg_message(conn, r, msg, sizeof(msg));
    {
        const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
        int code = walq__conn_failed(conn, r) ? WALQ_ECONN : WALQ_EQUERY;

        /* 3F000: schema does not exist; 42P01: relation; 42883: function. */
        if (state != NULL &&
            (strcmp(state, "3F000") == 0 || strcmp(state, "42P01") == 0 ||
             strcmp(state, "42883") == 0) &&
            strstr(msg, "walq") != NULL) {
            PQclear(r);
            return walq__error(WALQ_ESCHEMA, "Run \"walq init\" against this database first.",
                               "could not %s: %s", what, msg);
        }
        PQclear(r);
        return walq__error(code, NULL, "could not %s: %s", what, msg);
    }
}

int walq__exec(PGconn *conn, const char *what, const char *sql)
{
    PGresult *res = NULL;
    ExecStatusType st;
    char msg[1024], hint_buf[512];
    const char *hint;
    int code;

    if (PQsendQuery(conn, sql)) {
        code = walq__wait_result(conn, what);
        if (code != 0)
            return code;
        res = collect(conn);
    }
    st = PQresultStatus(res);

    /*
     * The simple protocol, unlike walq__query, takes several statements.  A
     * migration that is only comments is an empty query.
     */
    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK || st == PGRES_EMPTY_QUERY) {
        PQclear(res);
        return 0;
    }
    walq__pg_message(conn, res, msg, sizeof(msg));
    code = walq__conn_failed(conn, res) ? WALQ_ECONN : WALQ_EQUERY;
    /* The server's hint, such as the fix walq init's files name, is kept. */
    hint = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_HINT) : NULL;
    snprintf(hint_buf, sizeof(hint_buf), "%s", hint ? hint : "");
    PQclear(res);
    return walq__error(code, *hint_buf ? hint_buf : NULL, "could not %s: %s", what, msg);
}

/* The newest migration this program has. */
static const char *newest_migration(void)
{
    const walq__migration *last = walq__migrations;

    while (last[1].name != NULL)
        last++;
    return last->name;
}

/*
 * Whether the database records a numbered migration after this program's
 * newest ($1): a newer walq migrated it, and its definitions are newer than
 * this program's.
 */
#define NEWER_MIGRATION_SQL                                                                        \
    "EXISTS (SELECT 1 FROM walq.migrations WHERE name ~ '^[0-9]+_' AND name COLLATE \"C\" > $1)"

/*
 * The repeatable files are applied on every run, after the migrations: each
 * replaces the functions, views and triggers it defines with their current
 * definition, so an old body never outlives the program that changed it.
 * A database that a newer walq migrated keeps that walq's definitions,
 * which this program's could undo.
 */
static int apply_repeatables(PGconn *conn)
{
    const char *newest[1] = {newest_migration()};
    const char *checksum[1] = {walq__repeatables_checksum};
    PGresult *res;
    int rc, newer;

    rc = walq__query(conn, &res, "read applied migrations", "SELECT " NEWER_MIGRATION_SQL, 1,
                     newest);
    if (rc != 0)
        return rc;
    newer = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
    PQclear(res);
    if (newer)
        return 0;
    for (const walq__migration *r = walq__repeatables; r->name != NULL; r++) {
        char what[160];

        snprintf(what, sizeof(what), "apply repeatable file \"%s\"", r->name);
        rc = walq__exec(conn, what, r->sql);
        if (rc != 0)
            return rc;
    }
    rc = walq__query(conn, &res, "record the repeatable files",
                     "INSERT INTO walq.repeatables (checksum) VALUES ($1) ON CONFLICT DO NOTHING",
                     1, checksum);
    PQclear(res);
    return rc;
}

int walq__server_version_check(int version)
{
    if (version >= WALQ__MIN_SERVER_VERSION)
        return 0;
    if (version <= 0)
        return walq__error(WALQ_ECONN, NULL, "could not tell the server's version");
    /* From 10 on, major * 10000 + minor; before, major * 10000 + point * 100 + minor. */
    if (version >= 100000)
        return walq__error(WALQ_ESERVER,
                           "Upgrade the server to PostgreSQL 14 or newer (pg_upgrade), or run "
                           "walq init against one that is.",
                           "the server runs PostgreSQL %d.%d, and walq needs 14 or newer",
                           version / 10000, version % 10000);
    return walq__error(WALQ_ESERVER,
                       "Upgrade the server to PostgreSQL 14 or newer (pg_upgrade), or run walq "
                       "init against one that is.",
                       "the server runs PostgreSQL %d.%d.%d, and walq needs 14 or newer",
                       version / 10000, version / 100 % 100, version % 100);
}

int walq__schema_init(PGconn *conn, int *applied)
{
    PGresult *res = NULL;
    int rc, count = 0;

    if (applied)
        *applied = 0;
    rc = walq__server_version_check(PQserverVersion(conn));
    if (rc != 0)
        return rc;
    rc = walq__exec(conn, "begin the schema transaction", "BEGIN");
    if (rc != 0)
        return rc;
    /* Two concurrent inits would race on CREATE; the lock makes them queue. */
    rc = walq__exec(conn, "lock the walq schema", "SELECT pg_advisory_xact_lock(2037741433)");
    if (rc != 0)
        goto fail;
    rc = walq__exec(conn, "create schema \"walq\"",
                    "SET LOCAL client_min_messages = warning;"
                    "CREATE SCHEMA IF NOT EXISTS walq;"
                    "CREATE TABLE IF NOT EXISTS walq.migrations ("
                    " name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())");
    if (rc != 0)
        goto fail;
    for (const walq__migration *m = walq__migrations; m->name != NULL; m++) {
        const char *params[1] = {m->name};
        char what[160];

        rc = walq__query(conn, &res, "read applied migrations",
                         "SELECT 1 FROM walq.migrations WHERE name = $1", 1, params);
        if (rc != 0)
            goto fail;
        if (PQntuples(res) > 0) {
            PQclear(res);
            res = NULL;
            continue;
        }
        PQclear(res);
        res = NULL;
        snprintf(what, sizeof(what), "apply migration \"%s\"", m->name);
        rc = walq__exec(conn, what, m->sql);
        if (rc != 0)
            goto fail;
        rc = walq__query(conn, &res, "record a migration",
                         "INSERT INTO walq.migrations (name) VALUES ($1)", 1, params);
        if (rc != 0)
            goto fail;
        PQclear(res);
        res = NULL;
        count++;
    }
    rc = apply_repeatables(conn);
    if (rc != 0)
        goto fail;
    rc = walq__exec(conn, "commit the schema", "COMMIT");
    if (rc != 0)
        return rc;
    if (applied)
        *applied = count;
    return 0;

fail:
    PQclear(res);
    /* Keep the first error's message: the rollback is only cleanup. */
    PQclear(PQexec(conn, "ROLLBACK"));
    return rc;
}

int walq__schema_check(PGconn *conn)
{
    PGresult *res;
    const char *params[2] = {newest_migration(), walq__repeatables_checksum};
    int rc;

    /*
     * Checked in two steps: the second query fails if a table is missing.
     * The functions are this program's, or newer: its repeatable set was
     * applied once, or a newer walq has migrated the database since.
     */
    res = PQexec(conn, "SELECT to_regclass('walq.migrations') IS NOT NULL"
                       " AND to_regclass('walq.repeatables') IS NOT NULL");
    if (PQresultStatus(res) == PGRES_TUPLES_OK && strcmp(PQgetvalue(res, 0, 0), "t") == 0) {
        PQclear(res);
        res = PQexecParams(conn,
                           "SELECT EXISTS (SELECT 1 FROM walq.migrations WHERE name = $1)"
                           " AND (EXISTS (SELECT 1 FROM walq.repeatables WHERE checksum = $2)"
                           "      OR " NEWER_MIGRATION_SQL ")",
                           2, NULL, params, NULL, NULL, 0);
    }
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        char msg[512];

        walq__pg_message(conn, res, msg, sizeof(msg));
        PQclear(res);
        /* A missing schema can make this fail with a permission error. */
        return walq__error(WALQ_ESCHEMA, "Run \"walq init\" against this database first.",
                           "could not check the walq schema: %s", msg);
    }
    rc = strcmp(PQgetvalue(res, 0, 0), "t") == 0 ? 0 : WALQ_ESCHEMA;
    PQclear(res);
    if (rc != 0) {
        char name[128];

        return walq__error(WALQ_ESCHEMA, "Run \"walq init\" against this database first.",
                           "the walq schema is missing or older than this program on \"%s\"",
                           walq__conn_name(conn, name, sizeof(name)));
    }
    return 0;
}

int walq_schema_init(const char *conninfo, int *applied)
{
    PGconn *conn;
    int rc = walq__connect(&conn, conninfo, WALQ__CONN_SQL, "walq init");

    if (rc != 0)
        return rc;
    rc = walq__schema_init(conn, applied);
    PQfinish(conn);
    return rc;
}

int walq__buf_array_elem(walq__buf *b, const char *s)
{
    int rc;

    if (s == NULL)
        return walq__buf_puts(b, "NULL");
    rc = walq__buf_reserve(b, strlen(s) * 2 + 2);
    if (rc != 0)
        return rc;
    b->data[b->len++] = '"';
    for (; *s; s++) {
        if (*s == '"' || *s == '\\')
            b->data[b->len++] = '\\';
        b->data[b->len++] = *s;
    }
    b->data[b->len++] = '"';
    b->data[b->len] = '\0';
    return 0;
}

int walq__buf_copy_text(walq__buf *b, const char *s, size_t n)
{
    int rc = walq__buf_reserve(b, n * 2);

    if (rc != 0)
        return rc;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        char esc = 0;

        switch (c) {
        case '\\':
            esc = '\\';
            break;
        case '\n':
            esc = 'n';
            break;
        case '\r':
            esc = 'r';
            break;
        case '\t':
            esc = 't';
            break;
        }
        if (esc) {
            b->data[b->len++] = '\\';
            b->data[b->len++] = esc;
        } else {
            b->data[b->len++] = c;
        }
    }
    b->data[b->len] = '\0';
    return 0;
}
