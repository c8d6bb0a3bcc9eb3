/* Replication connection, slot commands and the streaming exchange. */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "db.h"
#include "lsn.h"
#include "stream.h"

int walq__stream_connect(walq__stream *s, const char *conninfo, const char *appname)
{
    PGresult *res;
    int rc;

    memset(s, 0, sizeof(*s));
    s->appname = appname;
    rc = walq__connect(&s->conn, conninfo, WALQ__CONN_REPLICATION, appname);
    if (rc != 0)
        return rc;
    walq__conn_name(s->conn, s->server, sizeof(s->server));
    /* IDENTIFY_SYSTEM proves the connection speaks the replication protocol. */
    res = PQexec(s->conn, "IDENTIFY_SYSTEM");
    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1 || PQnfields(res) < 4) {
        char msg[512];

        walq__pg_message(s->conn, res, msg, sizeof(msg));
        PQclear(res);
        rc = walq__error(WALQ_EPROTO, NULL, "could not identify the system on \"%s\": %s",
                         s->server, msg);
        walq__stream_close(s);
        return rc;
    }
    if (PQgetisnull(res, 0, 3)) {
        PQclear(res);
        walq__stream_close(s);
        return walq__error(
            WALQ_EINVAL, "Add dbname=... to the source connection string (or set PGDATABASE).",
            "replication connection to \"%s\" is not bound to a database", s->server);
    }
    PQclear(res);
    return 0;
}

static int explain_slot_failure(walq__stream *s, PGresult *res, const char *action,
                                const char *slot)
{
    char msg[1024];
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    int audit = s->appname != NULL && strcmp(s->appname, "walq audit") == 0;

    walq__pg_message(s->conn, res, msg, sizeof(msg));
    if (walq__conn_failed(s->conn, res))
        return walq__error(WALQ_ECONN, NULL, "could not %s replication slot \"%s\": %s", action,
                           slot, msg);
    if (strstr(msg, "wal_level") != NULL)
        return walq__error(
            WALQ_ESERVER, "Set wal_level = logical in postgresql.conf and restart the server.",
            "could not %s replication slot \"%s\" on \"%s\": %s", action, slot, s->server, msg);
    if (strstr(msg, "may not be used as an output plugin") != NULL) {
        /* Installed, but current minor releases allow only the plugins listed. */
        char hint[512];

        snprintf(hint, sizeof(hint),
                 "A superuser allows wal2json on the source server with ALTER SYSTEM SET "
                 "output_plugin_libraries = 'pgoutput', 'test_decoding', 'wal2json' (a list "
                 "of names: one quoted string would be one name) and SELECT "
                 "pg_reload_conf()%s",
                 audit ? ": walq audit reads with wal2json, since it records each change with "
                         "the end of its commit, which pgoutput sends only after the changes."
                 : strcmp(action, "create") == 0
                     ? ", or run walq consume with --plugin pgoutput, which every server allows."
                     : ", or move the group to pgoutput, which every server allows: drop the "
                       "slot, and the next walq consume makes a pgoutput one and reads the "
                       "group's unfinished jobs from walq.jobs.");
        return walq__error(WALQ_ESERVER, hint, "could not %s replication slot \"%s\" on \"%s\": %s",
                           action, slot, s->server, msg);
    }
    if (strstr(msg, "wal2json") != NULL || (state && strcmp(state, "58P01") == 0)) {
        char hint[256];
        int major = PQserverVersion(s->conn) / 10000;

        snprintf(hint, sizeof(hint),
                 "Install the wal2json output plugin on the source server (on Debian: apt-get "
                 "install postgresql-%d-wal2json)%s",
                 major > 0 ? major : 15,
                 audit ? "."
                       : ", or run walq consume with --plugin pgoutput, which PostgreSQL "
                         "has built in.");
        return walq__error(WALQ_ESERVER, hint, "could not %s replication slot \"%s\" on \"%s\": %s",
                           action, slot, s->server, msg);
    }
    if (strstr(msg, "publication") != NULL && strstr(msg, "does not exist") != NULL)
        return walq__error(WALQ_ESLOT, NULL, "could not %s replication slot \"%s\": %s", action,
                           slot, msg);
    if (strstr(msg, "is active for PID") != NULL || (state && strcmp(state, "55006") == 0)) {
        char hint[160];

        snprintf(hint, sizeof(hint),
                 "Another %s of this group is running; stop it, or wait for it to exit.",
                 s->appname ? s->appname : "walq");
        return walq__error(WALQ_EBUSY, hint, "could not %s replication slot \"%s\": %s", action,
                           slot, msg);
    }
    if (strstr(msg, "does not exist") != NULL || (state && strcmp(state, "42704") == 0))
        return walq__error(WALQ_ESLOT, NULL, "could not %s replication slot \"%s\": %s", action,
                           slot, msg);
    if (strstr(msg, "no longer get changes") != NULL || strstr(msg, "invalidated") != NULL)
        return walq__error(WALQ_ESLOT, NULL, "could not %s replication slot \"%s\": %s", action,
                           slot, msg);
    if (strstr(msg, "all replication slots are in use") != NULL)
        return walq__error(WALQ_ESERVER,
                           "Raise max_replication_slots on the source server, or drop unused "
                           "slots.",
                           "could not %s replication slot \"%s\": %s", action, slot, msg);
    if (state && strcmp(state, "42501") == 0)
        return walq__error(WALQ_EPERM, "Grant the role the REPLICATION attribute.",
                           "could not %s replication slot \"%s\": %s", action, slot, msg);
    return walq__error(WALQ_EQUERY, NULL, "could not %s replication slot \"%s\": %s", action, slot,
                       msg);
}

int walq__stream_create_slot(walq__stream *s, const char *slot, const char *plugin,
                             uint64_t *consistent, char *snapshot, size_t snaplen)
{
    return walq__stream_create_slot_waiting(s, slot, plugin, 0, consistent, snapshot, snaplen,
                                            NULL, NULL);
}

/* Failover slots are PostgreSQL 17's, and a primary's. */
static int failover_possible(walq__stream *s, const char *slot)
{
    int v = PQserverVersion(s->conn);

    if (v < 170000)
        return walq__error(WALQ_ESERVER,
                           "Run without --failover-slot, or read from PostgreSQL 17 or later.",
                           "replication slot \"%s\" cannot be a failover slot: \"%s\" runs "
                           "PostgreSQL %d.%d, and failover slots came with PostgreSQL 17",
                           slot, s->server, v / 10000, v % 10000);
    return 0;
}

/* The command's last result, with tick called every second while it runs. */
static PGresult *exec_ticking(PGconn *conn, const char *sql, void (*tick)(void *), void *arg)
{
    PGresult *res, *last = NULL;

    if (tick == NULL || !PQsendQuery(conn, sql))
        return tick == NULL ? PQexec(conn, sql) : NULL;
    while (PQisBusy(conn)) {
        struct pollfd p = {.fd = PQsocket(conn), .events = POLLIN};
        int n = poll(&p, 1, 1000);

        if (n < 0 && errno != EINTR)
            break;
        if (n == 0)
            tick(arg);
        else if (n > 0 && !PQconsumeInput(conn))
            break;
    }
    while ((res = PQgetResult(conn)) != NULL) {
        PQclear(last);
        last = res;
    }
    return last;
}

int walq__stream_create_slot_waiting(walq__stream *s, const char *slot, const char *plugin,
                                     int failover, uint64_t *consistent, char *snapshot,
                                     size_t snaplen, void (*tick)(void *), void *arg)
{
    char sql[192];
    PGresult *res;
    int rc;

    if (failover && (rc = failover_possible(s, slot)) != 0)
        return rc;
    /* The option list came with PostgreSQL 15; the old keyword works everywhere. */
    if (failover)
        snprintf(sql, sizeof(sql),
                 "CREATE_REPLICATION_SLOT \"%s\" LOGICAL \"%s\" (SNAPSHOT 'export', FAILOVER true)",
                 slot, plugin);
    else
        snprintf(sql, sizeof(sql),
                 "CREATE_REPLICATION_SLOT \"%s\" LOGICAL \"%s\" EXPORT_SNAPSHOT", slot, plugin);
    res = exec_ticking(s->conn, sql, tick, arg);
    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1 || PQnfields(res) < 4) {

        rc = explain_slot_failure(s, res, "create", slot);
        PQclear(res);
        return rc;
    }
    if (walq__lsn_parse(PQgetvalue(res, 0, 1), consistent) != 0) {
        rc = walq__error(WALQ_EPROTO, NULL, "server returned an invalid consistent point \"%s\"",
                         PQgetvalue(res, 0, 1));
        PQclear(res);
        return rc;
    }
    snprintf(snapshot, snaplen, "%s", PQgetvalue(res, 0, 2));
    PQclear(res);
    return 0;
}

int walq__stream_set_failover(walq__stream *s, const char *slot)
{
    char sql[128];
    PGresult *res;
    int rc;

    if ((rc = failover_possible(s, slot)) != 0)
        return rc;
    snprintf(sql, sizeof(sql), "ALTER_REPLICATION_SLOT \"%s\" (FAILOVER true)", slot);
    res = PQexec(s->conn, sql);
    rc = PQresultStatus(res) == PGRES_COMMAND_OK || PQresultStatus(res) == PGRES_TUPLES_OK
             ? 0
             : explain_slot_failure(s, res, "make a failover slot of", slot);
    PQclear(res);
    return rc;
}

int walq__stream_drop_slot(walq__stream *s, const char *slot)
{
    char sql[128];
    PGresult *res;
    int rc = 0;

    snprintf(sql, sizeof(sql), "DROP_REPLICATION_SLOT \"%s\"", slot);
    res = PQexec(s->conn, sql);
    if (PQresultStatus(res) != PGRES_COMMAND_OK && PQresultStatus(res) != PGRES_TUPLES_OK) {
        rc = explain_slot_failure(s, res, "drop", slot);
        /* Gone already is what we wanted. */
        if (rc == WALQ_ESLOT)
            rc = 0;
    }
    PQclear(res);
    return rc;
}

static int append_literal(walq__buf *b, const char *s)
{
    int rc = walq__buf_puts(b, "'");

    for (; rc == 0 && *s; s++)
        rc = *s == '\'' ? walq__buf_puts(b, "''") : walq__buf_append(b, s, 1);
    return rc ? rc : walq__buf_puts(b, "'");
}

int walq__stream_start(walq__stream *s, const char *slot, uint64_t lsn, const char *const *options)
{
    walq__buf sql = {0};
    char lsnbuf[WALQ__LSN_BUFSZ];
    PGresult *res;
    int rc;

    rc = walq__buf_printf(&sql, "START_REPLICATION SLOT \"%s\" LOGICAL %s", slot,
                          walq__lsn_format(lsn, lsnbuf));
    for (int i = 0; rc == 0 && options && options[i]; i += 2) {
        rc = walq__buf_printf(&sql, "%s\"%s\" ", i == 0 ? " (" : ", ", options[i]);
        if (rc == 0)
            rc = append_literal(&sql, options[i + 1]);
        if (rc == 0 && options[i + 2] == NULL)
            rc = walq__buf_puts(&sql, ")");
    }
    if (rc != 0) {
        walq__buf_free(&sql);
        return walq__error(WALQ_ENOMEM, NULL, "out of memory");
    }
    res = PQexec(s->conn, sql.data);
    walq__buf_free(&sql);
    if (PQresultStatus(res) != PGRES_COPY_BOTH) {
        rc = explain_slot_failure(s, res, "start streaming from", slot);
        PQclear(res);
        return rc;
    }
    PQclear(res);
    if (PQsetnonblocking(s->conn, 1) != 0)
        return walq__error(WALQ_ECONN, NULL,
                           "could not make the replication connection "
                           "non-blocking");
    s->streaming = 1;
    return 0;
}

int walq__stream_read(walq__stream *s, walq__msg *msg)
{
    char err[256];
    int n;

    if (s->buf != NULL) {
        PQfreemem(s->buf);
        s->buf = NULL;
    }
    n = PQgetCopyData(s->conn, &s->buf, 1);
    if (n == 0) {
        if (PQconsumeInput(s->conn) == 0) {
            char msgbuf[512];

            return walq__error(WALQ_ECONN, NULL, "lost the replication connection to \"%s\": %s",
                               s->server, walq__pg_message(s->conn, NULL, msgbuf, sizeof(msgbuf)));
        }
        n = PQgetCopyData(s->conn, &s->buf, 1);
        if (n == 0)
            return 0;
    }
    if (n == -1) {
        /* The server ended the copy: a shutdown, or the slot went away. */
        PGresult *res = PQgetResult(s->conn);
        char msgbuf[512];
        int rc;

        walq__pg_message(s->conn, res, msgbuf, sizeof(msgbuf));
        /*
         * A slot that can no longer be read, or a publication dropped under
         * it: both are read again from the table.
         */
        if (strstr(msgbuf, "no longer get changes") || strstr(msgbuf, "invalidated") ||
            (strstr(msgbuf, "publication") && strstr(msgbuf, "does not exist")))
            rc = WALQ_ESLOT;
        else
            rc = WALQ_ECONN;
        PQclear(res);
        return walq__error(rc, NULL, "replication stream from \"%s\" ended: %s", s->server,
                           *msgbuf ? msgbuf : "the server closed it");
    }
    if (n < 0) {
        char msgbuf[512];

        return walq__error(WALQ_ECONN, NULL,
                           "could not read from the replication stream of "
                           "\"%s\": %s",
                           s->server, walq__pg_message(s->conn, NULL, msgbuf, sizeof(msgbuf)));
    }
    if (walq__proto_parse(s->buf, (size_t)n, msg, err, sizeof(err)) != 0)
        return walq__error(WALQ_EPROTO, NULL, "invalid message from \"%s\": %s", s->server, err);
    return 1;
}

int walq__stream_status(walq__stream *s, uint64_t write_lsn, uint64_t flush_lsn,
                        int reply_requested)
{
    char msg[WALQ__STATUS_UPDATE_LEN];
    size_t len = walq__proto_status_update(msg, write_lsn, flush_lsn, flush_lsn, walq__pg_now(),
                                           reply_requested);

    if (PQputCopyData(s->conn, msg, (int)len) <= 0 || PQflush(s->conn) < 0) {
        char msgbuf[512];

        return walq__error(WALQ_ECONN, NULL, "could not send a status update to \"%s\": %s",
                           s->server, walq__pg_message(s->conn, NULL, msgbuf, sizeof(msgbuf)));
    }
    return 0;
}

int walq__stream_socket(const walq__stream *s)
{
    return s->conn ? PQsocket(s->conn) : -1;
}

void walq__stream_close(walq__stream *s)
{
    if (s->buf != NULL)
        PQfreemem(s->buf);
    s->buf = NULL;
    if (s->conn != NULL)
        PQfinish(s->conn);
    s->conn = NULL;
    s->streaming = 0;
}

int64_t walq__stream_status_interval(walq__stream *s, int64_t wanted_us)
{
    PGresult *res = PQexec(s->conn, "SHOW wal_sender_timeout");
    int64_t timeout_us = 0;

    if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1)
        timeout_us = walq__parse_duration_us(PQgetvalue(res, 0, 0));
    PQclear(res);
    return timeout_us > 0 && timeout_us / 2 < wanted_us ? timeout_us / 2 : wanted_us;
}

int walq__stream_open(walq__stream *s, const char *conninfo, const char *appname, const char *slot,
                      uint64_t lsn, const char *const *options, int64_t wanted_us,
                      int64_t *status_us)
{
    int rc;

    if (s->conn == NULL) {
        rc = walq__stream_connect(s, conninfo, appname);
        if (rc != 0)
            return rc;
    }
    *status_us = walq__stream_status_interval(s, wanted_us);
    rc = walq__stream_start(s, slot, lsn, options);
    if (rc != 0)
        walq__stream_close(s);
    return rc;
}
