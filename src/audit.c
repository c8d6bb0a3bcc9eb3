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

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "audit_format.h"
#include "audit_sink.h"
#include "db.h"
#include "lsn.h"
#include "metrics.h"
#include "reader.h"

#define SLOT_PREFIX "walqaudit_"

struct walq__audit {
    walq__audit_options o;
    const char *source, *target, *group, *output, *into; /* in strings */
    char *strings; /* one block: the options' strings, copied */
    char slot[64];
    walq__log log;
    walq__watcher watcher;
    walq__audit_sink sink;
    walq__reader rd;
    json_object *held; /* the last change taken, written when the next one or the commit comes */
    walq__metrics *m;  /* what --http serves: the loop writes, HTTP threads read */
    uint64_t flushes_seen;
    atomic_int reconf_level; /* a reload's log level (walq__audit_reconfigure), or -1 */
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
                                             "walq_jobs.*,walq_outcomes.*,walq_batches.*,"
                                             "walq.jobs,walq.outcomes,walq.outcome_batches",
                                             "actions",
                                             "insert,update,delete",
                                             NULL};

/* ------------------------------------------------------------------ */
/* What the reader hands over                                          */

static walq__audit_txn audit_txn(const walq__reader_txn *t)
{
    walq__audit_txn at = {t->xid, t->commit_lsn, t->end_lsn, t->commit_time_us};

    return at;
}

/*
 * The table a change is of, as users know it: the partitions of a
 * generation (walq_jobs.g3, say) are walq.jobs.
 */
static walq__change as_parent(const walq__change *ch)
{
    static const char *const parents[][2] = {
        {"walq_jobs", "jobs"}, {"walq_outcomes", "outcomes"}, {"walq_batches", "outcome_batches"}};
    walq__change out = *ch;

    for (size_t i = 0; ch->schema != NULL && i < WALQ__ARRAY_SIZE(parents); i++) {
        if (strcmp(ch->schema, parents[i][0]) == 0) {
            out.schema = "walq";
            out.table = parents[i][1];
        }
    }
    return out;
}

/* Each change is written when the next one comes, so that the last can say so. */
static int on_row(void *arg, const walq__reader_txn *t, const walq__change *ch, uint64_t wal_start)
{
    walq__audit *a = arg;
    walq__audit_txn at = audit_txn(t);
    walq__change named = as_parent(ch);
    json_object *o;
    int rc;

    (void)wal_start;
    rc = walq__audit_change_json(&o, &at, &named, t->rows + 1);
    if (rc != 0)
        return rc;
    if (a->held != NULL) {
        rc = walq__audit_sink_emit(&a->sink, a->held, 0);
        json_object_put(a->held);
    }
    a->held = o;
    return rc;
}

static int on_commit(void *arg, const walq__reader_txn *t)
{
    walq__audit *a = arg;
    int rc;

    if (a->held != NULL) {
        rc = walq__audit_sink_emit(&a->sink, a->held, 1);
        json_object_put(a->held);
        a->held = NULL;
        if (rc != 0 || walq__audit_sink_lost(&a->sink))
            return rc;
    }
    walq__audit_sink_end_txn(&a->sink, t->end_lsn, t->rows);
    return 0;
}

/* Stopping or caught up: not past the end of the transaction; nor while the table is away. */
static int on_paused(void *arg, int in_txn)
{
    walq__audit *a = arg;

    return (!in_txn && (a->rd.stop_req || (a->o.drain && walq__reader_caught_up(&a->rd)))) ||
           walq__audit_sink_lost(&a->sink);
}

static const walq__reader_ops reader_ops = {NULL, on_row, on_commit, NULL, on_paused};

/* ------------------------------------------------------------------ */
/* Life cycle                                                          */

static int check_options(const walq__audit_options *opts)
{
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
    if (opts->file_mode < 0 || opts->file_mode > 0777)
        return walq__error(WALQ_EINVAL, "Give the permissions in octal, such as 0600 or 0640.",
                           "invalid output file mode %o", (unsigned)opts->file_mode);
    return 0;
}

/* The options' strings, kept in one block that the audit owns. */
static int copy_strings(walq__audit *a, const walq__audit_options *opts)
{
    const char *from[] = {opts->group, opts->source, opts->target, opts->into,
                          opts->into     ? ""
                          : opts->output ? opts->output
                                         : "-"};
    const char **to[] = {&a->group, &a->source, &a->target, &a->into, &a->output};
    size_t len = 0;
    char *p;

    for (size_t i = 0; i < WALQ__ARRAY_SIZE(from); i++)
        len += from[i] ? strlen(from[i]) + 1 : 0;
    a->strings = p = malloc(len);
    if (p == NULL)
        return walq__error(WALQ_ENOMEM, NULL, "out of memory");
    for (size_t i = 0; i < WALQ__ARRAY_SIZE(from); i++) {
        size_t n = from[i] ? strlen(from[i]) + 1 : 0;

        *to[i] = from[i] ? memcpy(p, from[i], n) : NULL;
        p += n;
    }
    return 0;
}

int walq__audit_open(walq__audit **out, const walq__audit_options *opts)
{
    walq__audit *a;
    walq__reader_config rcfg;
    int rc = check_options(opts);

    *out = NULL;
    if (rc != 0)
        return rc;
    a = calloc(1, sizeof(*a));
    if (a == NULL)
        return walq__error(WALQ_ENOMEM, NULL, "out of memory");
    atomic_init(&a->reconf_level, -1);
    a->o = *opts;
    a->rd.wake[0] = a->rd.wake[1] = -1;
    if (a->o.status_interval <= 0)
        a->o.status_interval = 10.0;
    rc = copy_strings(a, opts);
    /* Before anything can fail: walq__audit_free() closes the sink. */
    walq__audit_sink_init(&a->sink, &(walq__audit_sink_config){.output = a->into ? NULL : a->output,
                                                               .into = a->into,
                                                               .target = a->target,
                                                               .group = a->group,
                                                               .log = &a->log,
                                                               .file_mode = opts->file_mode});
    if (rc != 0) {
        walq__audit_free(a);
        return rc;
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
    walq__watcher_set(&a->watcher, opts->watch, opts->watch_arg, opts->watch_interval_ms);
    snprintf(a->log.prefix, sizeof(a->log.prefix), "audit \"%s\": ", a->group);
    rcfg = (walq__reader_config){
        a->source,  "walq audit", a->slot, plugin_options, (int64_t)(a->o.status_interval * 1e6),
        a->o.drain, &reader_ops,  a,       &a->log,        NULL,
        0};
    rc = walq__reader_init(&a->rd, &rcfg);
    if (rc == 0 && (a->m = walq__metrics_new("audit", a->group, a->slot, 0, 1, NULL, 0)) == NULL)
        rc = walq__error(WALQ_ENOMEM, NULL, "out of memory");
    if (rc != 0) {
        walq__audit_free(a);
        return rc;
    }
    *out = a;
    return 0;
}

void walq__audit_stop(walq__audit *a, int immediate)
{
    if (a != NULL)
        walq__reader_stop(&a->rd, immediate);
}

void walq__audit_stats_get(const walq__audit *a, walq__audit_stats *out)
{
    walq__audit_sink_counts durable;

    walq__audit_sink_counts_get(&a->sink, &durable);
    memset(out, 0, sizeof(*out));
    out->transactions = durable.transactions;
    out->changes = durable.changes;
    out->flushes = durable.flushes;
    out->reconnects = a->rd.reconnects;
    out->confirmed_lsn = a->rd.confirmed;
}

static void close_all(walq__audit *a)
{
    walq__reader_close(&a->rd);
    walq__audit_sink_close(&a->sink);
    json_object_put(a->held);
    a->held = NULL;
}

void walq__audit_free(walq__audit *a)
{
    if (a == NULL)
        return;
    close_all(a);
    walq__reader_free(&a->rd);
    walq__metrics_free(a->m);
    free(a->strings);
    free(a);
}

/* ------------------------------------------------------------------ */
/* Set-up: the sink, the source and the slot                           */

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

/* The source as a reader needs it, with walq's tables, and the audit's slot there. */
static int read_source(walq__audit *a, walq__source_info *src, walq__slot_info *si)
{
    PGconn *conn = NULL;
    PGresult *res = NULL;
    char name[128];
    int rc;

    rc = walq__connect(&conn, a->source, WALQ__CONN_SQL, "walq audit");
    if (rc == 0)
        rc = walq__source_check(conn, src);
    if (rc == 0)
        rc = walq__query(conn, &res, "check the source server",
                         "SELECT to_regclass('walq.jobs') IS NOT NULL"
                         "   AND to_regclass('walq.outcomes') IS NOT NULL",
                         0, NULL);
    if (rc == 0 && strcmp(PQgetvalue(res, 0, 0), "t") != 0)
        rc = walq__error(WALQ_ESCHEMA,
                         "Run \"walq init\" first, or point --source at the database with "
                         "walq's tables.",
                         "tables walq.jobs and walq.outcomes do not exist in the source database "
                         "on \"%s\"",
                         walq__conn_name(conn, name, sizeof(name)));
    if (rc == 0)
        rc = walq__reader_slot(&a->rd, conn, si);
    PQclear(res);
    if (conn != NULL)
        PQfinish(conn);
    return rc;
}

/* A slot the audit can read, or why not. */
static int check_slot(walq__audit *a, const walq__slot_info *si, const walq__source_info *src)
{
    if (!si->exists)
        return 0;
    if (si->active)
        return walq__error(WALQ_EBUSY,
                           "Another walq audit of this group is running; stop it, or wait for it "
                           "to exit.",
                           "replication slot \"%s\" is in use by process %s", a->slot,
                           si->active_pid);
    if (strcmp(si->plugin, "wal2json") != 0)
        return walq__error(WALQ_ESLOT, "Drop the slot, or choose another audit group name.",
                           "replication slot \"%s\" exists but uses plugin \"%s\", not wal2json",
                           a->slot, si->plugin);
    if (strcmp(si->database, src->database) != 0)
        return walq__error(WALQ_ESLOT,
                           "Point --source at the database of the slot, or choose another audit "
                           "group name.",
                           "replication slot \"%s\" belongs to database \"%s\", not \"%s\"",
                           a->slot, si->database, src->database);
    return si->lost ? slot_lost_error(a) : 0;
}

/* A missing slot is made; a trail that had one before says what it missed. */
static void watch(walq__audit *a, int64_t now);

/* The watch callback goes on while the server makes the slot. */
static void create_tick(void *arg)
{
    watch(arg, walq__mono_us());
}

static int create_slot(walq__audit *a, walq__slot_info *si, uint64_t cursor)
{
    char snapshot[128], lsn[WALQ__LSN_BUFSZ], lsn2[WALQ__LSN_BUFSZ];
    uint64_t consistent;
    int rc = walq__reader_create_slot(&a->rd, &consistent, snapshot, sizeof(snapshot),
                                      a->watcher.fn ? create_tick : NULL, a);

    if (rc != 0)
        return rc;
    si->confirmed = consistent;
    if (cursor != 0)
        walq__warn(&a->log,
                   "replication slot \"%s\" was missing and is created anew at %s: changes "
                   "committed between %s and %s are not in the audit trail",
                   a->slot, walq__lsn_format(consistent, lsn), walq__lsn_format(cursor, lsn2), lsn);
    else
        walq__info(&a->log, "created replication slot \"%s\" at %s", a->slot,
                   walq__lsn_format(consistent, lsn));
    return 0;
}

static int setup(walq__audit *a)
{
    walq__source_info src;
    walq__slot_info si;
    uint64_t cursor = 0;
    char lsn[WALQ__LSN_BUFSZ];
    int rc;

    rc = walq__audit_sink_open(&a->sink, &cursor);
    if (rc == 0)
        rc = read_source(a, &src, &si);
    if (rc == 0)
        rc = check_slot(a, &si, &src);
    if (rc != 0)
        return rc;
    a->rd.drain_target = src.wal_lsn;
    if (cursor > a->rd.drain_target)
        return walq__audit_sink_from_elsewhere(&a->sink, cursor, a->rd.drain_target);
    rc = walq__reader_connect(&a->rd);
    if (rc == 0 && !si.exists)
        rc = create_slot(a, &si, cursor);
    if (rc != 0)
        return rc;
    walq__reader_resume_at(&a->rd, cursor > si.confirmed ? cursor : si.confirmed);
    if (a->o.drain)
        walq__debug(&a->log, "draining up to %s", walq__lsn_format(a->rd.drain_target, lsn));
    return 0;
}

/* ------------------------------------------------------------------ */
/* The loop, phase by phase                                            */

/* The table's server, when it was lost and is due again. */
static int phase_reconnect(walq__audit *a, int64_t now)
{
    uint64_t cursor;
    int rc;

    /* A COMMIT whose answer was lost may have happened: the cursor says. */
    rc = walq__audit_sink_reconnect(&a->sink, now, &cursor);
    if (rc == 0 && cursor > a->rd.last_end)
        walq__reader_skip_to(&a->rd, cursor);
    return rc;
}

static int phase_start(walq__audit *a, int64_t now)
{
    int rc;

    if (!walq__audit_sink_ready(&a->sink) || !walq__reader_start_due(&a->rd, now))
        return 0;
    rc = walq__reader_start(&a->rd);
    /* Busy after a reconnect: the server has not noticed the old walsender's end yet. */
    if (rc == WALQ_ECONN || (rc == WALQ_EBUSY && a->rd.reconnects > 0)) {
        walq__reader_lost(&a->rd);
        rc = 0;
    }
    return rc;
}

/* The table's server was lost: everything not committed comes again. */
static void start_over(walq__audit *a)
{
    json_object_put(a->held);
    a->held = NULL;
    walq__reader_restart_at(&a->rd, a->rd.durable, walq__audit_sink_start_over(&a->sink));
}

/* Makes what is whole durable, when that is due; 1 when the table's server was lost. */
static int phase_flush(walq__audit *a, int64_t now, int stopping, int more)
{
    int caught_up = a->o.drain && walq__reader_caught_up(&a->rd), rc;

    if (!walq__audit_sink_pending(&a->sink) || !walq__audit_sink_can_flush(&a->sink) ||
        !(!more || stopping || caught_up || walq__audit_sink_flush_due(&a->sink, now)))
        return 0;
    rc = walq__audit_sink_flush(&a->sink);
    return rc ? rc : walq__audit_sink_lost(&a->sink);
}

/* Everything whole is durable: what the server sent up to last_end may be confirmed. */
static void settle(walq__audit *a)
{
    if (!walq__audit_sink_pending(&a->sink) && a->rd.last_end > a->rd.durable)
        a->rd.durable = a->rd.last_end;
}

static int phase_tick(walq__audit *a, int64_t now)
{
    int rc;

    settle(a);
    rc = walq__reader_tick(&a->rd, now, 1);
    return rc ? rc : walq__reader_ping(&a->rd, now);
}

/* A clean stop: what is whole is written and confirmed, the rest comes again. */
static int finish(walq__audit *a)
{
    int rc = 0;

    if (a->rd.in_txn) {
        json_object_put(a->held);
        a->held = NULL;
        rc = walq__audit_sink_cut(&a->sink);
        walq__reader_skip_to(&a->rd, a->rd.last_end);
    }
    if (rc == 0)
        rc = walq__audit_sink_flush(&a->sink);
    if (rc == 0 && !walq__audit_sink_lost(&a->sink)) {
        settle(a);
        walq__reader_final_status(&a->rd);
    }
    return rc;
}

/* 1 when the loop is done: stopped between transactions, or drained. */
static int phase_finish(walq__audit *a, int stopping)
{
    int rc;

    if (stopping && (!a->rd.in_txn || !a->rd.st.streaming)) {
        rc = finish(a);
        return rc ? rc : 1;
    }
    if (a->o.drain && walq__reader_caught_up(&a->rd) && a->rd.st.streaming &&
        !walq__audit_sink_pending(&a->sink)) {
        walq__reader_final_status(&a->rd);
        walq__info(&a->log, "drained: every change committed before the start is written");
        return 1;
    }
    return 0;
}

static int phase_wait(walq__audit *a, walq__wait *w, int64_t now, int more)
{
    walq__reader_wait_begin(
        &a->rd, w, now, WALQ__WAIT_STREAM | WALQ__WAIT_INPUT | WALQ__WAIT_START | WALQ__WAIT_PING);
    walq__wait_until(w, walq__audit_sink_deadline(&a->sink));
    walq__wait_until(w, walq__watcher_due(&a->watcher));
    w->at_once = more;
    return walq__reader_wait(&a->rd, w);
}

/* Tells the watch callback, when it is due, what the audit is doing. */
static void watch(walq__audit *a, int64_t now)
{
    walq_watch w = {WALQ_STATE_STARTING, 0, 0, 0};

    if (a->watcher.fn == NULL)
        return;
    if (a->rd.stop_req)
        w.state = WALQ_STATE_STOPPING;
    else if (a->rd.st.streaming && !walq__audit_sink_lost(&a->sink))
        w.state = WALQ_STATE_STREAMING;
    else if (a->rd.retry.failures > 0 || a->rd.reconnects > 0)
        w.state = WALQ_STATE_RECONNECTING;
    w.received_lsn = a->rd.recv_lsn > a->rd.last_end ? a->rd.recv_lsn : a->rd.last_end;
    w.confirmed_lsn = a->rd.confirmed;
    walq__watcher_call(&a->watcher, &w, now);
}

walq__metrics *walq__audit_metrics(walq__audit *a)
{
    return a->m;
}

/* The gauges of --http, once a turn; a durable write counts as the audit's ack. */
static void publish(walq__audit *a)
{
    walq__audit_sink_counts d;
    walq__gauges g = {0};

    walq__audit_sink_counts_get(&a->sink, &d);
    walq__reader_gauges(&a->rd, &g);
    g.primary_up = !walq__audit_sink_lost(&a->sink);
    g.transactions = d.transactions;
    g.changes = d.changes;
    g.flushes = d.flushes;
    if (d.flushes > a->flushes_seen) {
        a->flushes_seen = d.flushes;
        walq__metrics_acked(a->m, walq__mono_us());
    } else if (g.streaming && g.primary_up) {
        walq__metrics_primary_ok(a->m);
    }
    walq__metrics_publish(a->m, &g);
}

/* One turn of the loop: 0 to go on, 1 when done, or an error. */
void walq__audit_reconfigure(walq__audit *a, walq_log_level log_level)
{
    char b = 'r';

    atomic_store(&a->reconf_level, (int)log_level);
    if (a->rd.wake[1] >= 0 && write(a->rd.wake[1], &b, 1) < 0) {
        /* The loop's wake pipe, as walq__audit_stop() uses it: a full one wakes it too. */
    }
}

/* A reload's log level, if one came since the last turn. */
static void phase_settings(walq__audit *a)
{
    int level = atomic_exchange(&a->reconf_level, -1);

    if (level < 0 || level == (int)a->log.level)
        return;
    walq__info(&a->log, "log_level changed from %d to %d", (int)a->log.level, level);
    a->log.level = (walq_log_level)level;
}

static int turn(walq__audit *a, walq__wait *w)
{
    int64_t now = walq__mono_us();
    int stopping = a->rd.stop_req != 0, more = 0, rc = 0;

    if (a->rd.stop_req == 2)
        return walq__error(WALQ_ECANCELED, NULL,
                           "stopped at once; what was not yet written comes again at the next "
                           "start");
    watch(a, now);
    publish(a);
    phase_settings(a);
    if (!stopping)
        rc = phase_reconnect(a, now);
    if (rc == 0 && !stopping)
        rc = phase_start(a, now);
    if (rc == 0)
        rc = walq__reader_read(&a->rd, &more);
    if (rc == 0 && walq__audit_sink_lost(&a->sink)) {
        start_over(a);
        return 0;
    }
    if (rc == 0)
        rc = phase_flush(a, now, stopping, more);
    if (rc == 1) {
        start_over(a);
        return 0;
    }
    if (rc == 0)
        rc = phase_tick(a, now);
    if (rc == 0)
        rc = phase_finish(a, stopping);
    if (rc == 0)
        rc = phase_wait(a, w, now, more);
    return rc;
}

/* The one place errors of a turn are handled: the trail cannot go on past a lost slot. */
static int recover(walq__audit *a, int rc)
{
    return rc == WALQ_ESLOT ? slot_lost_error(a) : rc;
}

static int loop(walq__audit *a)
{
    walq__wait w;
    int rc = walq__wait_init(&w, 0);

    while (rc == 0)
        rc = recover(a, turn(a, &w));
    walq__wait_free(&w);
    return rc > 0 ? 0 : rc;
}

int walq__audit_run(walq__audit *a)
{
    int rc = setup(a);

    if (rc == 0)
        rc = loop(a);
    close_all(a);
    return rc;
}
