/*
 * The reader shared by the consumer and the audit: the stream's position,
 * its status updates, reconnects, transaction framing and the wait.
 */
#include "reader.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "db.h"
#include "lsn.h"
#include "metrics.h"

/* Stream messages handled before the owner's loop looks at everything else again. */
#define READ_BURST 2000
/* How often an idle --drain asks the server how far it has read. */
#define PING_US 200000
/* The longest one wait lasts, so that flags and clocks are looked at. */
#define WAIT_MAX_MS 1000

int walq__reader_init(walq__reader *r, const walq__reader_config *cfg)
{
    memset(r, 0, sizeof(*r));
    r->cfg = *cfg;
    r->wake[0] = r->wake[1] = -1;
    if (walq__decoder_new(&r->dec) != 0 || walq__pgoutput_new(&r->pgo) != 0) {
        walq__reader_free(r);
        return walq__error(WALQ_ENOMEM, NULL, "out of memory");
    }
    if (pipe2(r->wake, O_CLOEXEC | O_NONBLOCK) != 0) {
        int rc = walq__error(WALQ_ESYS, NULL, "could not create a pipe: %s", strerror(errno));

        walq__reader_free(r);
        return rc;
    }
    return 0;
}

void walq__reader_free(walq__reader *r)
{
    walq__stream_close(&r->st);
    walq__decoder_free(r->dec);
    r->dec = NULL;
    walq__pgoutput_free(r->pgo);
    r->pgo = NULL;
    for (int i = 0; i < 2; i++) {
        if (r->wake[i] >= 0)
            close(r->wake[i]);
        r->wake[i] = -1;
    }
}

void walq__reader_stop(walq__reader *r, int immediate)
{
    int saved = errno;
    char b = 1;

    r->stop_req = (immediate || r->stop_req) ? 2 : 1;
    if (write(r->wake[1], &b, 1) < 0) {
        /* A full pipe already wakes the loop. */
    }
    errno = saved;
}

static void empty_wake_pipe(walq__reader *r)
{
    char buf[64];

    while (read(r->wake[0], buf, sizeof(buf)) > 0) {
    }
}

int walq__reader_nap(walq__reader *r, int ms)
{
    struct pollfd p = {.fd = r->wake[0], .events = POLLIN};

    if (r->stop_req == 0 && poll(&p, 1, ms) > 0)
        empty_wake_pipe(r);
    return r->stop_req != 0;
}

/* ------------------------------------------------------------------ */
/* The source and the slot                                             */

/* The end of the source's WAL, as text. */
#define WAL_POSITION                                                                               \
    "(CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn()"                                 \
    "      ELSE pg_current_wal_insert_lsn() END)::text"

int walq__source_check(PGconn *conn, walq__source_info *out)
{
    PGresult *res;
    char name[128], level[32], feedback[16];
    int rc;

    memset(out, 0, sizeof(*out));
    rc = walq__query(conn, &res, "read the source's settings",
                     "SELECT current_setting('wal_level'), pg_is_in_recovery(),"
                     "       current_setting('server_version_num')::int,"
                     "       current_setting('hot_standby_feedback'), current_database(),"
                     "       " WAL_POSITION,
                     0, NULL);
    if (rc != 0)
        return rc;
    snprintf(level, sizeof(level), "%s", PQgetvalue(res, 0, 0));
    out->standby = strcmp(PQgetvalue(res, 0, 1), "t") == 0;
    out->version = atoi(PQgetvalue(res, 0, 2));
    snprintf(feedback, sizeof(feedback), "%s", PQgetvalue(res, 0, 3));
    snprintf(out->database, sizeof(out->database), "%s", PQgetvalue(res, 0, 4));
    if (walq__lsn_parse(PQgetvalue(res, 0, 5), &out->wal_lsn) != 0)
        out->wal_lsn = 0;
    PQclear(res);
    walq__conn_name(conn, name, sizeof(name));
    if (strcmp(level, "logical") != 0)
        return walq__error(WALQ_ESERVER,
                           "Set wal_level = logical in postgresql.conf and restart the server.",
                           "logical decoding requires wal_level = logical, but \"%s\" has "
                           "wal_level = %s",
                           name, level);
    if (!out->standby)
        return 0;
    /*
     * A hot standby: PostgreSQL 16 decodes there, as long as the primary
     * keeps the catalog rows the slot needs, which hot_standby_feedback
     * tells it.
     */
    if (out->version < 160000)
        return walq__error(WALQ_ESERVER,
                           "Read from the primary, from a standby running PostgreSQL 16 or later, "
                           "or from a logical subscriber (walq replica setup).",
                           "\"%s\" is a standby running PostgreSQL %d.%d, which cannot decode: "
                           "logical decoding on a standby needs PostgreSQL 16",
                           name, out->version / 10000, out->version % 10000);
    if (strcmp(feedback, "on") != 0)
        return walq__error(WALQ_ESERVER,
                           "Set hot_standby_feedback = on on the standby (and give it a physical "
                           "slot on the primary with primary_slot_name), then reload it.",
                           "the standby \"%s\" has hot_standby_feedback = off, so the primary may "
                           "remove rows its logical slots still need",
                           name);
    return 0;
}

int walq__source_system_id(PGconn *conn, char *buf, size_t len)
{
    PGresult *res;
    int rc = walq__query(conn, &res, "identify the source",
                         "SELECT system_identifier::text FROM pg_control_system()", 0, NULL);

    if (rc != 0)
        return rc;
    snprintf(buf, len, "%s", PQgetvalue(res, 0, 0));
    PQclear(res);
    return 0;
}

int walq__source_wal_lsn(PGconn *conn, uint64_t *out)
{
    PGresult *res;
    int rc =
        walq__query(conn, &res, "read the server's WAL position", "SELECT " WAL_POSITION, 0, NULL);

    if (rc != 0)
        return rc;
    if (walq__lsn_parse(PQgetvalue(res, 0, 0), out) != 0)
        *out = 0;
    PQclear(res);
    return 0;
}

int walq__reader_slot(const walq__reader *r, PGconn *conn, walq__slot_info *si)
{
    const char *params[1] = {r->cfg.slot};
    PGresult *res;
    int rc;

    memset(si, 0, sizeof(*si));
    rc = walq__query(conn, &res, "look up the replication slot",
                     "SELECT coalesce(confirmed_flush_lsn::text, ''), coalesce(wal_status, ''),"
                     "       coalesce(active_pid::text, ''), coalesce(plugin, ''),"
                     "       coalesce(database, ''),"
                     /* Columns of PostgreSQL 17, read the same way on every version. */
                     "       coalesce((to_jsonb(s) ->> 'failover')::boolean, false),"
                     "       coalesce((to_jsonb(s) ->> 'synced')::boolean, false)"
                     "  FROM pg_replication_slots s WHERE slot_name = $1",
                     1, params);
    if (rc != 0)
        return rc;
    if (PQntuples(res) == 1) {
        si->exists = 1;
        if (walq__lsn_parse(PQgetvalue(res, 0, 0), &si->confirmed) != 0)
            si->confirmed = 0;
        si->lost = strcmp(PQgetvalue(res, 0, 1), "lost") == 0 || *PQgetvalue(res, 0, 0) == '\0';
        snprintf(si->active_pid, sizeof(si->active_pid), "%s", PQgetvalue(res, 0, 2));
        si->active = si->active_pid[0] != '\0';
        snprintf(si->plugin, sizeof(si->plugin), "%s", PQgetvalue(res, 0, 3));
        snprintf(si->database, sizeof(si->database), "%s", PQgetvalue(res, 0, 4));
        si->failover = strcmp(PQgetvalue(res, 0, 5), "t") == 0;
        si->synced = strcmp(PQgetvalue(res, 0, 6), "t") == 0;
    }
    PQclear(res);
    return 0;
}

void walq__reader_use_plugin(walq__reader *r, const char *plugin)
{
    r->pgoutput = strcmp(plugin, "pgoutput") == 0;
    /* Protocol 1: whole transactions, after their commit, as wal2json sends them. */
    r->pgo_options[0] = "proto_version";
    r->pgo_options[1] = "1";
    r->pgo_options[2] = "publication_names";
    r->pgo_options[3] = r->cfg.publication;
    r->pgo_options[4] = NULL;
}

const char *walq__reader_plugin(const walq__reader *r)
{
    return r->pgoutput ? "pgoutput" : "wal2json";
}

int walq__reader_connect(walq__reader *r)
{
    if (r->st.conn != NULL)
        return 0;
    return walq__stream_connect(&r->st, r->cfg.conninfo, r->cfg.appname);
}

int walq__reader_create_slot(walq__reader *r, uint64_t *consistent, char *snapshot, size_t len,
                             void (*tick)(void *), void *arg)
{
    int rc = walq__reader_connect(r);

    return rc ? rc
              : walq__stream_create_slot_waiting(&r->st, r->cfg.slot, walq__reader_plugin(r),
                                                 r->cfg.failover, consistent, snapshot, len, tick,
                                                 arg);
}

int walq__reader_drop_slot(walq__reader *r)
{
    int rc = walq__reader_connect(r);

    return rc ? rc : walq__stream_drop_slot(&r->st, r->cfg.slot);
}

int walq__reader_set_failover(walq__reader *r)
{
    int rc = walq__reader_connect(r);

    return rc ? rc : walq__stream_set_failover(&r->st, r->cfg.slot);
}

/* ------------------------------------------------------------------ */
/* Starting and losing the stream                                      */

void walq__reader_skip_to(walq__reader *r, uint64_t lsn)
{
    r->last_end = r->recv_lsn = lsn;
    r->in_txn = r->skip_txn = 0;
    r->seen = 0;
    r->reply_now = 0;
}

void walq__reader_resume_at(walq__reader *r, uint64_t lsn)
{
    walq__reader_skip_to(r, lsn);
    r->durable = r->confirmed = lsn;
}

int walq__reader_start(walq__reader *r)
{
    char lsn[WALQ__LSN_BUFSZ];
    /*
     * Status updates are what keeps the walsender from timing us out, also
     * while a full owner reads nothing: the interval is at most half the
     * server's wal_sender_timeout.
     */
    int rc = walq__stream_open(&r->st, r->cfg.conninfo, r->cfg.appname, r->cfg.slot, r->last_end,
                               r->pgoutput ? r->pgo_options : r->cfg.plugin_options,
                               r->cfg.status_us, &r->status_us);

    if (rc != 0)
        return rc;
    /* A new session describes its relations again. */
    walq__pgoutput_reset(r->pgo);
    walq__info(r->cfg.log, "streaming slot \"%s\" from %s", r->cfg.slot,
               walq__lsn_format(r->last_end, lsn));
    walq__retry_ok(&r->retry);
    r->next_status = 0;
    return 0;
}

int walq__reader_start_due(const walq__reader *r, int64_t now)
{
    return !r->st.streaming && walq__retry_due(&r->retry, now);
}

void walq__reader_lost(walq__reader *r)
{
    walq__retry_failed(&r->retry, r->cfg.log);
    walq__stream_close(&r->st);
    r->reconnects++;
    r->reply_now = 0;
    /* The transaction being received comes again from its start. */
    r->seen = 0;
    r->skip_txn = 0;
}

void walq__reader_close(walq__reader *r)
{
    walq__stream_close(&r->st);
}

void walq__reader_restart_at(walq__reader *r, uint64_t lsn, int64_t when)
{
    walq__stream_close(&r->st);
    walq__reader_skip_to(r, lsn);
    r->retry.at = when;
    r->reconnects++;
}

/* ------------------------------------------------------------------ */
/* Transaction framing                                                 */

static int on_begin(walq__reader *r, const walq__change *ch, uint64_t wal_start)
{
    char lsn[WALQ__LSN_BUFSZ];
    int rc;

    if (ch->next_lsn <= r->last_end) {
        r->skip_txn = 1; /* had it whole already, before a reconnect */
        return 0;
    }
    r->skip_txn = 0;
    r->seen = 0;
    if (r->in_txn) {
        /* The one cut off by a lost connection, coming again from its start. */
        if (ch->next_lsn == r->txn.end_lsn)
            return 0;
        return walq__error(WALQ_EPROTO, NULL, "transaction began at %s inside another one",
                           walq__lsn_format(wal_start, lsn));
    }
    r->txn.xid = ch->xid;
    r->txn.commit_lsn = ch->lsn;
    r->txn.end_lsn = ch->next_lsn;
    r->txn.commit_time_us = ch->timestamp_us;
    r->txn.rows = 0;
    rc = r->cfg.ops->begin ? r->cfg.ops->begin(r->cfg.owner, &r->txn) : 0;
    if (rc == 0)
        r->in_txn = 1;
    return rc;
}

static int on_row(walq__reader *r, const walq__change *ch, uint64_t wal_start)
{
    char lsn[WALQ__LSN_BUFSZ];
    int rc;

    if (r->skip_txn)
        return 0;
    if (!r->in_txn)
        return walq__error(WALQ_EPROTO, NULL, "change at %s outside a transaction",
                           walq__lsn_format(wal_start, lsn));
    /* Taken before the connection was lost. */
    if (r->seen++ < r->txn.rows)
        return 0;
    rc = r->cfg.ops->row(r->cfg.owner, &r->txn, ch, wal_start);
    if (rc != 0) {
        r->seen--;
        return rc;
    }
    r->txn.rows++;
    return 0;
}

static int on_commit(walq__reader *r, const walq__change *ch, uint64_t wal_start)
{
    char lsn[WALQ__LSN_BUFSZ];
    int rc;

    if (r->skip_txn) {
        r->skip_txn = 0;
        return 0;
    }
    if (!r->in_txn)
        return walq__error(WALQ_EPROTO, NULL, "commit at %s without a transaction",
                           walq__lsn_format(wal_start, lsn));
    rc = r->cfg.ops->commit ? r->cfg.ops->commit(r->cfg.owner, &r->txn) : 0;
    if (rc != 0)
        return rc;
    r->in_txn = 0;
    r->last_end = ch->next_lsn;
    if (ch->next_lsn > r->recv_lsn)
        r->recv_lsn = ch->next_lsn;
    return 0;
}

static int on_change(walq__reader *r, const walq__change *ch, uint64_t wal_start)
{
    switch (ch->action) {
    case WALQ__ACT_BEGIN:
        return on_begin(r, ch, wal_start);
    case WALQ__ACT_INSERT:
    case WALQ__ACT_UPDATE:
    case WALQ__ACT_DELETE:
        return on_row(r, ch, wal_start);
    case WALQ__ACT_COMMIT:
        return on_commit(r, ch, wal_start);
    default:
        /* Other actions are filtered out by the plugin options. */
        return 0;
    }
}

static void on_keepalive(walq__reader *r, const walq__msg *msg)
{
    if (msg->wal_end > r->recv_lsn)
        r->recv_lsn = msg->wal_end;
    /* Between transactions, everything before the server's position is here. */
    if (!r->in_txn) {
        int may = r->cfg.ops->idle == NULL || r->cfg.ops->idle(r->cfg.owner, msg->wal_end);

        if (may && msg->wal_end > r->last_end)
            r->last_end = msg->wal_end;
    }
    if (msg->reply_requested)
        r->reply_now = 1;
}

/* The message as a change, framed the same whatever the plugin. */
static int decode(walq__reader *r, const walq__msg *msg, walq__change *ch)
{
    int rc;

    if (!r->pgoutput) {
        rc = walq__decode(r->dec, msg->data, msg->len, ch);
        if (rc != 0)
            return walq__error(rc, NULL, "could not decode the change at %X/%X: %s",
                               (unsigned)(msg->wal_start >> 32), (unsigned)msg->wal_start,
                               walq__decoder_error(r->dec));
        return 0;
    }
    rc = walq__pgoutput_decode(r->pgo, msg->data, msg->len, ch);
    if (rc != 0)
        return walq__error(rc, NULL, "could not decode the pgoutput message at %X/%X: %s",
                           (unsigned)(msg->wal_start >> 32), (unsigned)msg->wal_start,
                           walq__pgoutput_error(r->pgo));
    /* Known by the commit record's start plus one (walq__reader_use_plugin). */
    if (ch->action == WALQ__ACT_BEGIN || ch->action == WALQ__ACT_COMMIT)
        ch->next_lsn = ch->lsn + 1;
    return 0;
}

int walq__reader_read(walq__reader *r, int *more)
{
    if (more != NULL)
        *more = 0;
    for (int i = 0; i < READ_BURST; i++) {
        walq__msg msg;
        walq__change ch;
        int rc;

        if (!r->st.streaming ||
            (r->cfg.ops->paused != NULL && r->cfg.ops->paused(r->cfg.owner, r->in_txn)))
            return 0;
        rc = walq__stream_read(&r->st, &msg);
        if (rc == WALQ_ECONN) {
            walq__reader_lost(r);
            return 0;
        }
        if (rc <= 0)
            return rc;
        /* The CopyData message whole: its header (25 bytes, a keepalive's 18) and data. */
        r->bytes += msg.len + (msg.kind == WALQ__MSG_KEEPALIVE ? 18 : 25);
        if (msg.kind == WALQ__MSG_KEEPALIVE) {
            on_keepalive(r, &msg);
            continue;
        }
        rc = decode(r, &msg, &ch);
        if (rc != 0)
            return rc;
        rc = on_change(r, &ch, msg.wal_start);
        if (rc != 0)
            return rc;
    }
    if (more != NULL)
        *more = 1;
    return 0;
}

/* ------------------------------------------------------------------ */
/* Status updates                                                      */

static int send_status(walq__reader *r, int64_t now, int reply)
{
    char lsn[WALQ__LSN_BUFSZ];
    int rc = walq__stream_status(&r->st, r->recv_lsn > r->durable ? r->recv_lsn : r->durable,
                                 r->durable, reply);

    if (rc == WALQ_ECONN) {
        walq__reader_lost(r);
        return 0;
    }
    if (rc != 0)
        return rc;
    if (r->durable != r->confirmed)
        walq__debug(r->cfg.log, "confirmed %s", walq__lsn_format(r->durable, lsn));
    r->confirmed = r->durable;
    r->reply_now = 0;
    r->next_status = now + r->status_us;
    return 0;
}

int walq__reader_tick(walq__reader *r, int64_t now, int eager)
{
    if (!r->st.streaming)
        return 0;
    if (now >= r->next_status || r->reply_now ||
        (eager && r->durable > r->confirmed && now >= r->next_status - r->status_us * 9 / 10))
        return send_status(r, now, 0);
    return 0;
}

int walq__reader_ping(walq__reader *r, int64_t now)
{
    int rc = 0;

    if (!r->cfg.drain || !r->st.streaming || r->in_txn || now < r->next_ping)
        return 0;
    rc = send_status(r, now, 1);
    r->next_ping = now + PING_US;
    return rc;
}

void walq__reader_final_status(walq__reader *r)
{
    if (r->st.streaming && r->st.conn != NULL && send_status(r, walq__mono_us(), 0) == 0 &&
        r->st.conn != NULL) {
        PQsetnonblocking(r->st.conn, 0);
        PQflush(r->st.conn);
    }
}

int walq__reader_caught_up(const walq__reader *r)
{
    return !r->in_txn && r->last_end >= r->drain_target;
}

void walq__reader_gauges(const walq__reader *r, walq__gauges *g)
{
    g->streaming = r->st.streaming;
    g->server_lsn = r->recv_lsn;
    g->received_lsn = r->last_end;
    g->confirmed_lsn = r->confirmed;
    g->commit_time_us = r->txn.commit_time_us;
    g->bytes = r->bytes;
    g->reconnects = r->reconnects;
}

/* ------------------------------------------------------------------ */
/* The wait                                                            */

int walq__wait_init(walq__wait *w, size_t owner_fds)
{
    memset(w, 0, sizeof(*w));
    w->cap = 2 + owner_fds;
    w->pfd = calloc(w->cap, sizeof(*w->pfd));
    return w->pfd ? 0 : walq__error(WALQ_ENOMEM, NULL, "out of memory");
}

void walq__wait_free(walq__wait *w)
{
    free(w->pfd);
    w->pfd = NULL;
}

int walq__wait_add(walq__wait *w, int fd, short events)
{
    if (w->n == w->cap)
        return -1;
    w->pfd[w->n].fd = fd;
    w->pfd[w->n].events = events;
    w->pfd[w->n].revents = 0;
    return (int)w->n++;
}

void walq__wait_until(walq__wait *w, int64_t deadline)
{
    w->wake_at = walq__min_deadline(w->wake_at, deadline);
}

void walq__reader_wait_begin(walq__reader *r, walq__wait *w, int64_t now, unsigned flags)
{
    w->n = 0;
    w->now = now;
    w->wake_at = 0;
    w->at_once = 0;
    w->stream_idx = -1;
    walq__wait_add(w, r->wake[0], POLLIN);
    if (r->st.streaming && (flags & WALQ__WAIT_STREAM)) {
        short events = (flags & WALQ__WAIT_INPUT) ? POLLIN : 0;

        if (PQflush(r->st.conn) == 1)
            events |= POLLOUT;
        w->stream_idx = walq__wait_add(w, walq__stream_socket(&r->st), events);
    }
    if (r->st.streaming) {
        walq__wait_until(w, r->next_status);
        if (r->cfg.drain && !r->in_txn && (flags & WALQ__WAIT_PING))
            walq__wait_until(w, r->next_ping);
    } else if (flags & WALQ__WAIT_START) {
        walq__wait_until(w, r->retry.at > now ? r->retry.at : now);
    }
}

int walq__reader_wait(walq__reader *r, walq__wait *w)
{
    int timeout_ms;

    if (w->at_once)
        timeout_ms = 0;
    else if (w->wake_at == 0)
        timeout_ms = WAIT_MAX_MS;
    else
        timeout_ms = w->wake_at <= w->now ? 0 : (int)((w->wake_at - w->now + 999) / 1000);
    if (timeout_ms > WAIT_MAX_MS)
        timeout_ms = WAIT_MAX_MS;
    if (poll(w->pfd, (nfds_t)w->n, timeout_ms) < 0 && errno != EINTR)
        return walq__error(WALQ_ESYS, NULL, "poll failed: %s", strerror(errno));
    if (w->pfd[0].revents & POLLIN)
        empty_wake_pipe(r);
    /* A socket that hung up is noticed even when nothing is read from it. */
    if (w->stream_idx >= 0 && (w->pfd[w->stream_idx].revents & (POLLHUP | POLLERR)) &&
        r->st.conn != NULL && PQconsumeInput(r->st.conn) == 0) {
        char msg[512];

        walq__error(WALQ_ECONN, NULL, "lost the replication connection to \"%s\": %s", r->st.server,
                    walq__pg_message(r->st.conn, NULL, msg, sizeof(msg)));
        walq__reader_lost(r);
    }
    return 0;
}
