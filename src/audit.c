/*
 * The audit trail: every insert, update and delete of walq.jobs and
 * walq.outcomes, in commit order, from a replication slot of its own.
 *
 * The server sends each committed transaction whole, in commit order.  Each
 * change becomes a JSON object as it arrives and is written one change late,
 * so that the last change of a transaction can say so ("last": true) when
 * the commit comes, without the transaction being kept in memory: memory is
 * bounded by the write buffer, whatever the size of a transaction.
 *
 * Exactly once: the sink is its own cursor.  In a file, the last line with
 * "last": true ends the last whole transaction; in a table, a cursor row is
 * written in the same transaction as the rows.  The slot is confirmed past a
 * transaction only once the file is fsync'd or the table's transaction has
 * committed.  On start, whatever follows the file's last whole transaction is
 * cut, streaming starts at the later of the slot's confirmed position and the
 * cursor, and transactions that end at or before it are passed over.
 */
#include "audit.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "audit_format.h"
#include "audit_sink.h"
#include "db.h"
#include "lsn.h"
#include "proto.h"
#include "stream.h"

#define SLOT_PREFIX "walqaudit_"
/* Stream messages handled before the loop looks at everything else again. */
#define READ_BURST 2000
/* How often an idle --drain asks the server how far it has read. */
#define PING_US 200000

struct walq__audit {
    walq__audit_options o;
    char *source, *target, *group, *output, *into;
    char slot[64];
    walq__log log;
    volatile sig_atomic_t stop_req; /* 1: finish the transaction and stop; 2: at once */
    int wake[2];
    walq__audit_stats stats;

    walq__audit_sink sink;

    /* The stream. */
    walq__stream st;
    walq__decoder *dec;
    uint64_t last_end;  /* end of the last whole transaction received, or a keepalive's */
    uint64_t recv_lsn;  /* furthest position the server told us about */
    uint64_t durable;   /* what may be confirmed */
    uint64_t confirmed; /* what the last status update said */
    int in_txn, skip_cur;
    walq__audit_txn cur;
    size_t cur_n;      /* changes of cur taken */
    size_t cur_seen;   /* changes of cur in this delivery of it */
    json_object *held; /* the last change taken, written when the next one or the commit comes */
    int64_t status_us, next_status, next_ping;
    int reply_now;
    uint64_t drain_target;
    int64_t stream_retry_at;
    int stream_failures;
};

static const char *const plugin_options[] = {"format-version",
                                             "2",
                                             "include-xids",
                                             "1",
                                             "include-timestamp",
                                             "1",
                                             "include-lsn",
                                             "1",
                                             "add-tables",
                                             "walq.jobs,walq.outcomes,walq.outcome_batches",
                                             "actions",
                                             "insert,update,delete",
                                             NULL};

/* ------------------------------------------------------------------ */
/* Life cycle                                                          */

int walq__audit_open(walq__audit **out, const walq__audit_options *opts)
{
    walq__audit *a;

    *out = NULL;
    if (!walq__audit_group_valid(opts->group))
        return walq__error(WALQ_EINVAL,
                           "Use 1 to 50 lower-case letters, digits and underscores; the slot is "
                           "\"walqaudit_\" followed by the name.",
                           "invalid audit group name \"%.64s\"", opts->group ? opts->group : "");
    if (opts->output != NULL && opts->into != NULL)
        return walq__error(WALQ_EINVAL,
                           "Give --output to write JSON lines, or --into to write rows of a "
                           "table, not both.",
                           "--output and --into cannot be used together");
    if (opts->into != NULL && !walq__audit_table_valid(opts->into))
        return walq__error(WALQ_EINVAL,
                           "Give a lower-case table name, optionally with its schema, such as "
                           "walq_audit or audit.walq_changes.",
                           "invalid table name \"%.130s\"", opts->into);
    if (opts->output != NULL && *opts->output == '\0')
        return walq__error(WALQ_EINVAL, "Give a file name, or - for standard output.",
                           "the output file name must not be empty");
    a = calloc(1, sizeof(*a));
    if (a == NULL)
        return walq__error(WALQ_ENOMEM, NULL, "out of memory");
    a->o = *opts;
    a->wake[0] = a->wake[1] = -1;
    if (a->o.status_interval <= 0)
        a->o.status_interval = 10.0;
    a->group = walq__strdup(opts->group);
    a->source = opts->source ? walq__strdup(opts->source) : NULL;
    a->target = opts->target ? walq__strdup(opts->target) : NULL;
    a->into = opts->into ? walq__strdup(opts->into) : NULL;
    a->output = walq__strdup(opts->into ? "" : opts->output ? opts->output : "-");
    /* Before anything can fail: walq__audit_free() closes the sink. */
    walq__audit_sink_init(&a->sink, &(walq__audit_sink_config){.output = a->into ? NULL : a->output,
                                                               .into = a->into,
                                                               .target = a->target,
                                                               .group = a->group,
                                                               .log = &a->log});
    if (a->group == NULL || a->output == NULL || (opts->source && a->source == NULL) ||
        (opts->target && a->target == NULL) || (opts->into && a->into == NULL) ||
        walq__decoder_new(&a->dec) != 0 || pipe2(a->wake, O_CLOEXEC | O_NONBLOCK) != 0) {
        walq__audit_free(a);
        return walq__error(WALQ_ENOMEM, NULL, "out of memory");
    }
    a->o.group = a->group;
    a->o.source = a->source;
    a->o.target = a->target;
    a->o.into = a->into;
    a->o.output = a->into ? NULL : a->output;
    snprintf(a->slot, sizeof(a->slot), SLOT_PREFIX "%s", a->group);
    a->log.fn = opts->log;
    a->log.arg = opts->log_arg;
    a->log.level = opts->log_level;
    snprintf(a->log.prefix, sizeof(a->log.prefix), "audit \"%s\": ", a->group);
    *out = a;
    return 0;
}

void walq__audit_stop(walq__audit *a, int immediate)
{
    char c = 1;
    ssize_t n;

    if (a == NULL)
        return;
    a->stop_req = immediate ? 2 : (a->stop_req ? a->stop_req : 1);
    n = write(a->wake[1], &c, 1);
    (void)n;
}

void walq__audit_stats_get(const walq__audit *a, walq__audit_stats *out)
{
    walq__audit_sink_counts durable;

    walq__audit_sink_counts_get(&a->sink, &durable);
    *out = a->stats;
    out->transactions = durable.transactions;
    out->changes = durable.changes;
    out->flushes = durable.flushes;
}

static void close_all(walq__audit *a)
{
    walq__stream_close(&a->st);
    walq__audit_sink_close(&a->sink);
    json_object_put(a->held);
    a->held = NULL;
}

void walq__audit_free(walq__audit *a)
{
    if (a == NULL)
        return;
    close_all(a);
    walq__decoder_free(a->dec);
    if (a->wake[0] >= 0)
        close(a->wake[0]);
    if (a->wake[1] >= 0)
        close(a->wake[1]);
    free(a->source);
    free(a->target);
    free(a->group);
    free(a->output);
    free(a->into);
    free(a);
}

/* ------------------------------------------------------------------ */
/* The source and its slot                                             */

typedef struct slot_info {
    int exists, lost, active;
    char active_pid[32];
    char plugin[64];
    char database[128];
    uint64_t confirmed;
} slot_info;

static int check_source(walq__audit *a, PGconn *conn, slot_info *si, char *dbname, size_t dblen)
{
    const char *params[1] = {a->slot};
    PGresult *res;
    char name[128];
    int rc;

    rc = walq__query(conn, &res, "check the source server",
                     "SELECT current_setting('wal_level'),"
                     "       to_regclass('walq.jobs') IS NOT NULL"
                     "         AND to_regclass('walq.outcomes') IS NOT NULL,"
                     "       (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn()"
                     "             ELSE pg_current_wal_insert_lsn() END)::text,"
                     "       current_database()",
                     0, NULL);
    if (rc != 0)
        return rc;
    walq__conn_name(conn, name, sizeof(name));
    if (strcmp(PQgetvalue(res, 0, 0), "logical") != 0) {
        char level[32];

        snprintf(level, sizeof(level), "%s", PQgetvalue(res, 0, 0));
        PQclear(res);
        return walq__error(WALQ_ESERVER,
                           "Set wal_level = logical in postgresql.conf and restart the server.",
                           "logical decoding requires wal_level = logical, but \"%s\" has "
                           "wal_level = %s",
                           name, level);
    }
    if (strcmp(PQgetvalue(res, 0, 1), "t") != 0) {
        PQclear(res);
        return walq__error(WALQ_ESCHEMA,
                           "Run \"walq init\" first, or point --source at the database with "
                           "walq's tables.",
                           "tables walq.jobs and walq.outcomes do not exist in the source "
                           "database on \"%s\"",
                           name);
    }
    walq__lsn_parse(PQgetvalue(res, 0, 2), &a->drain_target);
    snprintf(dbname, dblen, "%s", PQgetvalue(res, 0, 3));
    PQclear(res);

    memset(si, 0, sizeof(*si));
    rc = walq__query(conn, &res, "look up the replication slot",
                     "SELECT coalesce(confirmed_flush_lsn::text, ''), coalesce(wal_status, ''),"
                     "       coalesce(active_pid::text, ''), coalesce(plugin, ''),"
                     "       coalesce(database, '')"
                     "  FROM pg_replication_slots WHERE slot_name = $1",
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
    }
    PQclear(res);
    return 0;
}

static int slot_lost_error(walq__audit *a)
{
    char hint[512];

    snprintf(hint, sizeof(hint),
             "An audit trail cannot go on past lost WAL.  Drop the slot (SELECT "
             "pg_drop_replication_slot('%s')) and start walq audit again: it creates a new slot "
             "and warns of the gap.  Raise max_slot_wal_keep_size to keep this from happening.",
             a->slot);
    return walq__error(WALQ_ESLOT, hint, "replication slot \"%s\" was invalidated", a->slot);
}

static int setup(walq__audit *a)
{
    PGconn *conn = NULL;
    slot_info si;
    uint64_t cursor = 0, start;
    char lsn[WALQ__LSN_BUFSZ], lsn2[WALQ__LSN_BUFSZ], dbname[128];
    int rc;

    rc = walq__audit_sink_open(&a->sink, &cursor);
    if (rc != 0)
        return rc;

    rc = walq__connect(&conn, a->source, WALQ__CONN_SQL, "walq audit");
    if (rc == 0)
        rc = check_source(a, conn, &si, dbname, sizeof(dbname));
    if (conn != NULL)
        PQfinish(conn);
    if (rc != 0)
        return rc;
    if (si.exists && si.active)
        return walq__error(WALQ_EBUSY,
                           "Another walq audit of this group is running; stop it, or wait for it "
                           "to exit.",
                           "replication slot \"%s\" is in use by process %s", a->slot,
                           si.active_pid);
    if (si.exists && strcmp(si.plugin, "wal2json") != 0)
        return walq__error(WALQ_ESLOT, "Drop the slot, or choose another audit group name.",
                           "replication slot \"%s\" exists but uses plugin \"%s\", not wal2json",
                           a->slot, si.plugin);
    if (si.exists && strcmp(si.database, dbname) != 0)
        return walq__error(WALQ_ESLOT,
                           "Point --source at the database of the slot, or choose another audit "
                           "group name.",
                           "replication slot \"%s\" belongs to database \"%s\", not \"%s\"",
                           a->slot, si.database, dbname);
    if (si.exists && si.lost)
        return slot_lost_error(a);
    if (cursor > a->drain_target)
        return walq__audit_sink_from_elsewhere(&a->sink, cursor, a->drain_target);

    rc = walq__stream_connect(&a->st, a->source, "walq audit");
    if (rc != 0)
        return rc;
    if (!si.exists) {
        char snapshot[128];
        uint64_t consistent;

        rc = walq__stream_create_slot(&a->st, a->slot, &consistent, snapshot, sizeof(snapshot));
        if (rc != 0)
            return rc;
        si.confirmed = consistent;
        if (cursor != 0)
            walq__warn(&a->log,
                       "replication slot \"%s\" was missing and is created anew at %s: changes "
                       "committed between %s and %s are not in the audit trail",
                       a->slot, walq__lsn_format(consistent, lsn), walq__lsn_format(cursor, lsn2),
                       lsn);
        else
            walq__info(&a->log, "created replication slot \"%s\" at %s", a->slot,
                       walq__lsn_format(consistent, lsn));
    }
    start = cursor > si.confirmed ? cursor : si.confirmed;
    a->last_end = a->recv_lsn = a->durable = start;
    a->confirmed = 0;
    if (a->o.drain)
        walq__debug(&a->log, "draining up to %s", walq__lsn_format(a->drain_target, lsn));
    return 0;
}

/* ------------------------------------------------------------------ */
/* The stream                                                          */

static int start_stream(walq__audit *a)
{
    char lsn[WALQ__LSN_BUFSZ];
    /*
     * Status updates keep the walsender from timing us out: send them at
     * least twice per wal_sender_timeout.
     */
    int rc =
        walq__stream_open(&a->st, a->source, "walq audit", a->slot, a->last_end, plugin_options,
                          (int64_t)(a->o.status_interval * 1e6), &a->status_us);

    if (rc != 0)
        return rc;
    walq__info(&a->log, "streaming slot \"%s\" from %s", a->slot,
               walq__lsn_format(a->last_end, lsn));
    a->stream_failures = 0;
    a->next_status = 0;
    return 0;
}

static void stream_lost(walq__audit *a)
{
    int64_t delay = walq__reconnect_delay_us(a->stream_failures);

    walq__warn_retry(&a->log, delay);
    walq__stream_close(&a->st);
    a->stats.reconnects++;
    a->stream_failures++;
    a->stream_retry_at = walq__mono_us() + delay;
    a->reply_now = 0;
    /*
     * The transaction being received comes again from its start; the
     * changes already taken from it are passed over then (cur_seen).
     */
}

/* The table's server was lost: everything not committed comes again. */
static void start_over(walq__audit *a)
{
    walq__stream_close(&a->st);
    json_object_put(a->held);
    a->held = NULL;
    a->in_txn = a->skip_cur = 0;
    a->cur_n = a->cur_seen = 0;
    a->last_end = a->recv_lsn = a->durable;
    a->stream_retry_at = walq__audit_sink_start_over(&a->sink);
    a->reply_now = 0;
    a->stats.reconnects++;
}

static int on_change(walq__audit *a, const walq__change *ch, uint64_t wal_start)
{
    char lsn[WALQ__LSN_BUFSZ];
    json_object *o;
    int rc;

    switch (ch->action) {
    case WALQ__ACT_BEGIN:
        if (ch->next_lsn <= a->last_end) {
            a->skip_cur = 1; /* in the sink already */
            return 0;
        }
        a->skip_cur = 0;
        if (a->in_txn) {
            /* The one cut off by a lost connection, coming again from its start. */
            if (ch->next_lsn == a->cur.end_lsn) {
                a->cur_seen = 0;
                return 0;
            }
            return walq__error(WALQ_EPROTO, NULL, "transaction began at %s inside another one",
                               walq__lsn_format(wal_start, lsn));
        }
        a->in_txn = 1;
        a->cur.xid = ch->xid;
        a->cur.commit_lsn = ch->lsn;
        a->cur.end_lsn = ch->next_lsn;
        a->cur.commit_time_us = ch->timestamp_us;
        a->cur_n = a->cur_seen = 0;
        return 0;
    case WALQ__ACT_INSERT:
    case WALQ__ACT_UPDATE:
    case WALQ__ACT_DELETE:
        if (a->skip_cur)
            return 0;
        if (!a->in_txn)
            return walq__error(WALQ_EPROTO, NULL, "change at %s outside a transaction",
                               walq__lsn_format(wal_start, lsn));
        if (a->cur_seen++ < a->cur_n)
            return 0;
        rc = walq__audit_change_json(&o, &a->cur, ch, a->cur_n + 1);
        if (rc != 0)
            return rc;
        a->cur_n++;
        if (a->held != NULL) {
            rc = walq__audit_sink_emit(&a->sink, a->held, 0);
            json_object_put(a->held);
        }
        a->held = o;
        return rc;
    case WALQ__ACT_COMMIT:
        if (a->skip_cur) {
            a->skip_cur = 0;
            return 0;
        }
        if (!a->in_txn)
            return walq__error(WALQ_EPROTO, NULL, "commit at %s without a transaction",
                               walq__lsn_format(wal_start, lsn));
        if (a->held != NULL) {
            rc = walq__audit_sink_emit(&a->sink, a->held, 1);
            json_object_put(a->held);
            a->held = NULL;
            if (rc != 0 || walq__audit_sink_lost(&a->sink))
                return rc;
        }
        walq__audit_sink_end_txn(&a->sink, a->cur.end_lsn, a->cur_n);
        a->in_txn = 0;
        a->last_end = ch->next_lsn;
        if (ch->next_lsn > a->recv_lsn)
            a->recv_lsn = ch->next_lsn;
        return 0;
    default:
        /* Other actions are filtered out by the plugin options. */
        return 0;
    }
}

/* Handles what has arrived; *more when it stopped before the end of it. */
static int read_stream(walq__audit *a, int *more)
{
    *more = 0;
    for (int i = 0; i < READ_BURST; i++) {
        walq__msg msg;
        walq__change ch;
        int rc;

        /* Stopping or caught up: not past the end of the transaction. */
        if (!a->in_txn && (a->stop_req || (a->o.drain && a->last_end >= a->drain_target)))
            return 0;
        if (walq__audit_sink_lost(&a->sink))
            return 0;
        rc = walq__stream_read(&a->st, &msg);
        if (rc <= 0)
            return rc;
        if (msg.kind == WALQ__MSG_KEEPALIVE) {
            if (msg.wal_end > a->recv_lsn)
                a->recv_lsn = msg.wal_end;
            /* Between transactions, everything before the server's position is here. */
            if (!a->in_txn && msg.wal_end > a->last_end)
                a->last_end = msg.wal_end;
            if (msg.reply_requested)
                a->reply_now = 1;
            continue;
        }
        rc = walq__decode(a->dec, msg.data, msg.len, &ch);
        if (rc != 0)
            return walq__error(rc, NULL, "could not decode the change at %X/%X: %s",
                               (unsigned)(msg.wal_start >> 32), (unsigned)msg.wal_start,
                               walq__decoder_error(a->dec));
        rc = on_change(a, &ch, msg.wal_start);
        if (rc != 0)
            return rc;
    }
    *more = 1;
    return 0;
}

static int send_status(walq__audit *a, int64_t now, int reply)
{
    char lsn[WALQ__LSN_BUFSZ];
    int rc;

    rc = walq__stream_status(&a->st, a->recv_lsn > a->durable ? a->recv_lsn : a->durable,
                             a->durable, reply);
    if (rc != 0)
        return rc;
    if (a->durable != a->confirmed)
        walq__debug(&a->log, "confirmed %s", walq__lsn_format(a->durable, lsn));
    a->confirmed = a->durable;
    a->stats.confirmed_lsn = a->durable;
    a->reply_now = 0;
    a->next_status = now + a->status_us;
    return 0;
}

/* Everything whole is durable: what the server sent up to last_end may be confirmed. */
static void settle(walq__audit *a)
{
    if (!walq__audit_sink_pending(&a->sink) && a->last_end > a->durable)
        a->durable = a->last_end;
}

static void final_status(walq__audit *a)
{
    if (a->st.streaming && a->st.conn != NULL && send_status(a, walq__mono_us(), 0) == 0) {
        PQsetnonblocking(a->st.conn, 0);
        PQflush(a->st.conn);
    }
}

/* A clean stop: what is whole is written and confirmed, the rest comes again. */
static int finish(walq__audit *a)
{
    int rc = 0;

    if (a->in_txn) {
        json_object_put(a->held);
        a->held = NULL;
        rc = walq__audit_sink_cut(&a->sink);
        a->in_txn = 0;
    }
    if (rc == 0)
        rc = walq__audit_sink_flush(&a->sink);
    if (rc == 0 && !walq__audit_sink_lost(&a->sink)) {
        settle(a);
        final_status(a);
    }
    return rc;
}

static int loop(walq__audit *a)
{
    struct pollfd pfd[2];
    int rc = 0;

    for (;;) {
        int64_t now = walq__mono_us(), wake_at = 0;
        int stopping = a->stop_req != 0, more = 0, n = 0, stream_pfd = -1, timeout_ms;
        int caught_up = a->o.drain && !a->in_txn && a->last_end >= a->drain_target;

        if (a->stop_req == 2) {
            rc = walq__error(WALQ_ECANCELED, NULL,
                             "stopped at once; what was not yet written comes again at the next "
                             "start");
            break;
        }
        if (!stopping) {
            uint64_t cursor;

            /* A COMMIT whose answer was lost may have happened: the cursor says. */
            rc = walq__audit_sink_reconnect(&a->sink, now, &cursor);
            if (rc != 0)
                break;
            if (cursor > a->last_end)
                a->last_end = a->recv_lsn = cursor;
        }
        if (!a->st.streaming && !stopping && walq__audit_sink_ready(&a->sink) &&
            now >= a->stream_retry_at) {
            rc = start_stream(a);
            if (rc == WALQ_ECONN || (rc == WALQ_EBUSY && a->stats.reconnects > 0)) {
                stream_lost(a);
                rc = 0;
            } else if (rc == WALQ_ESLOT) {
                rc = slot_lost_error(a);
                break;
            } else if (rc == WALQ_EBUSY) {
                rc = walq__error(WALQ_EBUSY,
                                 "Another walq audit of this group is running; stop it, or wait "
                                 "for it to exit.",
                                 "replication slot \"%s\" is in use by another process", a->slot);
                break;
            } else if (rc != 0) {
                break;
            }
        }
        if (a->st.streaming && (!stopping || a->in_txn)) {
            rc = read_stream(a, &more);
            if (rc == WALQ_ECONN) {
                stream_lost(a);
                rc = 0;
            } else if (rc == WALQ_ESLOT) {
                rc = slot_lost_error(a);
                break;
            } else if (rc != 0) {
                break;
            }
            caught_up = a->o.drain && !a->in_txn && a->last_end >= a->drain_target;
        }
        if (walq__audit_sink_lost(&a->sink)) {
            start_over(a);
            continue;
        }
        if (walq__audit_sink_pending(&a->sink) && walq__audit_sink_can_flush(&a->sink) &&
            (!more || stopping || caught_up || walq__audit_sink_flush_due(&a->sink, now))) {
            rc = walq__audit_sink_flush(&a->sink);
            if (rc != 0)
                break;
            if (walq__audit_sink_lost(&a->sink)) {
                start_over(a);
                continue;
            }
        }
        settle(a);
        if (a->st.streaming &&
            (now >= a->next_status || a->reply_now ||
             (a->durable > a->confirmed && now >= a->next_status - a->status_us * 9 / 10))) {
            rc = send_status(a, now, 0);
            if (rc == WALQ_ECONN) {
                stream_lost(a);
                rc = 0;
            } else if (rc != 0) {
                break;
            }
        }
        if (stopping && (!a->in_txn || !a->st.streaming)) {
            rc = finish(a);
            break;
        }
        if (caught_up && a->st.streaming && !walq__audit_sink_pending(&a->sink)) {
            final_status(a);
            walq__info(&a->log, "drained: every change committed before the start is written");
            break;
        }
        /* Idle and draining: ask the server how far it has read. */
        if (a->o.drain && a->st.streaming && !a->in_txn && now >= a->next_ping) {
            rc = send_status(a, now, 1);
            if (rc == WALQ_ECONN) {
                stream_lost(a);
                rc = 0;
            } else if (rc != 0) {
                break;
            }
            a->next_ping = now + PING_US;
        }

        pfd[n].fd = a->wake[0];
        pfd[n++].events = POLLIN;
        if (a->st.streaming) {
            stream_pfd = n;
            pfd[n].fd = walq__stream_socket(&a->st);
            pfd[n].events = POLLIN;
            if (PQflush(a->st.conn) == 1)
                pfd[n].events |= POLLOUT;
            n++;
            wake_at = walq__min_deadline(wake_at, a->next_status);
            if (a->o.drain)
                wake_at = walq__min_deadline(wake_at, a->next_ping);
        } else {
            wake_at = walq__min_deadline(wake_at, a->stream_retry_at);
        }
        wake_at = walq__min_deadline(wake_at, walq__audit_sink_deadline(&a->sink));
        if (more)
            timeout_ms = 0;
        else if (wake_at == 0)
            timeout_ms = 1000;
        else
            timeout_ms = wake_at <= now ? 0 : (int)((wake_at - now + 999) / 1000);
        if (timeout_ms > 1000)
            timeout_ms = 1000;
        if (poll(pfd, (nfds_t)n, timeout_ms) < 0 && errno != EINTR) {
            rc = walq__error(WALQ_ESYS, NULL, "poll failed: %s", strerror(errno));
            break;
        }
        if (pfd[0].revents & POLLIN) {
            char buf[64];

            while (read(a->wake[0], buf, sizeof(buf)) > 0) {
            }
        }
        /* A socket that hung up is noticed even when nothing can be read from it. */
        if (stream_pfd >= 0 && (pfd[stream_pfd].revents & (POLLHUP | POLLERR)) &&
            PQconsumeInput(a->st.conn) == 0) {
            char msg[512];

            walq__error(WALQ_ECONN, NULL, "lost the replication connection to \"%s\": %s",
                        a->st.server, walq__pg_message(a->st.conn, NULL, msg, sizeof(msg)));
            stream_lost(a);
        }
    }
    return rc;
}

int walq__audit_run(walq__audit *a)
{
    int rc = setup(a);

    if (rc == 0)
        rc = loop(a);
    close_all(a);
    return rc;
}
