/*
 * walq status, walq group list and walq group drop: what the consumer groups
 * of a database are doing, how far behind they are, the WAL their slots
 * hold, and removing a group that is abandoned.  The readers' rows come from
 * the primary; their slots from the source, which may be another server.
 */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/group.h"
#include "db.h"
#include "reader.h"
#include "text.h"
#include "walq.h"

#define EXIT_USAGE 2

#define progname walq__progname

/* A slot as the source has it; text fields are "-" when unknown. */
typedef struct slot_info {
    int exists, error;
    char active[32];     /* walsender pid, "no", or "missing" */
    char lag[32];        /* bytes behind the server's WAL, or "lost" */
    char sent_lag[32];   /* the server's WAL past what its walsender sent, or "-" */
    char retained[32];   /* bytes of WAL the slot keeps */
    char wal_status[16]; /* reserved, extended, unreserved, lost */
    char safe[32];       /* safe_wal_size, "" when the server sets no limit */
    char plugin[64];
    int64_t retained_bytes; /* -1 when unknown */
} slot_info;

static int reader_held(PGconn *conn, const char *slot);

/* ------------------------------------------------------------------ */
/* The readers and their slots                                          */

static const char readers_sql[] =
    "SELECT r.group_name, r.slot_name, array_to_string(r.queues, ','), r.cursor_lsn::text,"
    "       s.queued, s.running, s.scheduled, s.done, s.dead, s.cancelled,"
    "       CASE WHEN r.partitions = 1 THEN '-' ELSE r.partition || '/' || r.partitions END,"
    "       CASE WHEN NOT walq.reader_held(r.slot_name) THEN '-'"
    "            ELSE coalesce(r.holder, '?') END,"
    "       coalesce(round(extract(epoch FROM now() - s.oldest_queued), 1)::text, '0'),"
    "       r.partition, r.source_id"
    "  FROM walq.readers r,"
    "       LATERAL walq.group_summary(r.group_name, r.partitions, r.partition) s"
    " WHERE $1::text IS NULL OR r.group_name = $1"
    " ORDER BY r.group_name, r.partition";

/*
 * The slot on the source: who streams from it, how far its confirmed
 * position is behind the server's WAL, and how much WAL it keeps (from its
 * restart_lsn, which is what the server cannot recycle).  On a standby the
 * server's position is where replay is.
 */
static const char slot_sql[] =
    "WITH w AS (SELECT CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn()"
    "                       ELSE pg_current_wal_lsn() END AS lsn)"
    "SELECT coalesce(s.active_pid::text, 'no'),"
    "       coalesce(pg_wal_lsn_diff(w.lsn, s.confirmed_flush_lsn)::bigint::text, 'lost'),"
    "       coalesce(pg_wal_lsn_diff(w.lsn, s.restart_lsn)::bigint::text, '-'),"
    "       coalesce(s.wal_status, '-'), coalesce(s.safe_wal_size::text, ''),"
    "       coalesce(s.plugin, '-'),"
    "       coalesce((SELECT pg_wal_lsn_diff(w.lsn, r.sent_lsn)::bigint::text"
    "                   FROM pg_stat_replication r WHERE r.pid = s.active_pid), '-')"
    "  FROM pg_replication_slots s, w WHERE s.slot_name = $1";

/* Reads the slot named slot over a plain SQL connection to the source. */
static void slot_read(PGconn *conn, const char *slot, slot_info *out)
{
    const char *params[1] = {slot};
    PGresult *res = NULL;

    memset(out, 0, sizeof(*out));
    snprintf(out->active, sizeof(out->active), "-");
    snprintf(out->lag, sizeof(out->lag), "-");
    snprintf(out->sent_lag, sizeof(out->sent_lag), "-");
    snprintf(out->retained, sizeof(out->retained), "-");
    snprintf(out->wal_status, sizeof(out->wal_status), "-");
    snprintf(out->plugin, sizeof(out->plugin), "-");
    out->retained_bytes = -1;
    if (walq__query(conn, &res, "read the slot", slot_sql, 1, params) != 0) {
        out->error = 1;
        return;
    }
    if (PQntuples(res) == 1) {
        out->exists = 1;
        snprintf(out->active, sizeof(out->active), "%s", PQgetvalue(res, 0, 0));
        snprintf(out->lag, sizeof(out->lag), "%s", PQgetvalue(res, 0, 1));
        snprintf(out->retained, sizeof(out->retained), "%s", PQgetvalue(res, 0, 2));
        snprintf(out->wal_status, sizeof(out->wal_status), "%s", PQgetvalue(res, 0, 3));
        snprintf(out->safe, sizeof(out->safe), "%s", PQgetvalue(res, 0, 4));
        snprintf(out->plugin, sizeof(out->plugin), "%s", PQgetvalue(res, 0, 5));
        snprintf(out->sent_lag, sizeof(out->sent_lag), "%s", PQgetvalue(res, 0, 6));
        if (strcmp(out->retained, "-") != 0)
            out->retained_bytes = strtoll(out->retained, NULL, 10);
    } else {
        snprintf(out->active, sizeof(out->active), "missing");
    }
    PQclear(res);
}

/*
 * s as walq__text_escape() shows it (control characters and bytes that are
 * not UTF-8 as escapes) in buf, cut short on a character boundary to fit;
 * returns buf.
 */
static const char *escape_text(char *buf, size_t len, const char *s)
{
    char *e;
    size_t n;

    if (len == 0)
        return "";
    e = walq__text_escape(s);
    if (e == NULL) {
        snprintf(buf, len, "?");
        return buf;
    }
    n = strlen(e);
    if (n >= len) {
        /* Cut short on a character boundary. */
        n = len - 1;
        while (n > 0 && ((unsigned char)e[n] & 0xC0) == 0x80)
            n--;
    }
    memcpy(buf, e, n);
    buf[n] = '\0';
    free(e);
    return buf;
}

/* "1GB", "512kB", "1048576": bytes, in 1024s; -1 for anything else. */
static int parse_bytes(const char *text, int64_t *out)
{
    static const struct {
        const char *unit;
        int64_t mult;
    } units[] = {{"", 1},
                 {"B", 1},
                 {"kB", 1024},
                 {"KB", 1024},
                 {"MB", 1024 * 1024},
                 {"GB", INT64_C(1024) * 1024 * 1024},
                 {"TB", INT64_C(1024) * 1024 * 1024 * 1024}};
    char *end;
    long long v;

    if (text[0] < '0' || text[0] > '9')
        return -1;
    v = strtoll(text, &end, 10);
    while (*end == ' ')
        end++;
    for (size_t i = 0; i < WALQ__ARRAY_SIZE(units); i++) {
        if (strcmp(end, units[i].unit) == 0) {
            if (v < 0 || v > INT64_MAX / units[i].mult)
                return -1;
            *out = (int64_t)v * units[i].mult;
            return 0;
        }
    }
    return -1;
}

/* A size for people: 1536 -> "1.5 kB", as PostgreSQL's pg_size_pretty does, in 1024s. */
static const char *pretty_bytes(char *buf, size_t len, int64_t b)
{
    static const char *const unit[] = {"bytes", "kB", "MB", "GB", "TB"};
    double v = (double)b;
    size_t u = 0;

    while (v >= 1024 && u + 1 < WALQ__ARRAY_SIZE(unit)) {
        v /= 1024;
        u++;
    }
    if (u == 0)
        snprintf(buf, len, "%" PRId64 " bytes", b);
    else
        snprintf(buf, len, "%.1f %s", v, unit[u]);
    return buf;
}

static void finish_pair(PGconn *conn, PGconn *sconn)
{
    if (sconn)
        PQfinish(sconn);
    if (conn)
        PQfinish(conn);
}

/* The primary, schema checked, and the source when it is another server. */
static int connect_pair(PGconn **conn, PGconn **sconn, const char *dbname, const char *source,
                        const char *app)
{
    int rc;

    *conn = *sconn = NULL;
    rc = walq__connect(conn, dbname, WALQ__CONN_SQL, app);
    if (rc == 0)
        rc = walq__schema_check(*conn);
    if (rc == 0 && source != NULL)
        rc = walq__connect(sconn, source, WALQ__CONN_SQL, app);
    if (rc != 0) {
        walq__cli_fail(rc);
        finish_pair(*conn, *sconn);
        *conn = *sconn = NULL;
        return 1;
    }
    return 0;
}

/* What the parse of the options says when the command goes on. */
#define GO_ON (-1)

/* The options of walq status and walq group list. */
typedef struct list_opts {
    const char *dbname, *source, *group;
    int64_t threshold; /* --warn-retained */
} list_opts;

/*
 * Reads the options of "walq CMD [SUB]" (longopts, of those in the switch
 * below) into o.  GO_ON, or the exit status: 0 after printing help(), 2
 * after a usage error, which it has printed.
 */
static int list_options(list_opts *o, int argc, char **argv, const struct option *longopts,
                        const char *cmd, const char *sub, void (*help)(void))
{
    int opt;

    *o = (list_opts){.threshold = INT64_C(1024) * 1024 * 1024};
    while ((opt = getopt_long(argc, argv, "d:h", longopts, NULL)) != -1) {
        switch (opt) {
        case 'd':
            o->dbname = optarg;
            break;
        case 's':
            o->source = optarg;
            break;
        case 'g':
            o->group = optarg;
            break;
        case 'w':
            if (parse_bytes(optarg, &o->threshold) != 0) {
                walq__cli_usage(cmd, sub,
                                "invalid --warn-retained \"%s\": give bytes, or a number with "
                                "kB, MB, GB or TB",
                                optarg);
                return EXIT_USAGE;
            }
            break;
        case 'h':
            help();
            return 0;
        default:
            walq__cli_usage(cmd, sub, "invalid option for \"%s%s%s\"", cmd, sub ? " " : "",
                            sub ? sub : "");
            return EXIT_USAGE;
        }
    }
    if (optind < argc) {
        walq__cli_usage(cmd, sub, "unexpected argument \"%s\"", argv[optind]);
        return EXIT_USAGE;
    }
    return GO_ON;
}

/*
 * The warning for a slot no reader holds that keeps more WAL than the
 * threshold, or that the server invalidated.  Says whether it warned.
 */
static int warn_slot(const char *group, const char *slot, const slot_info *s, int64_t threshold)
{
    char msg[1024], size[32], safe[64] = "";

    if (!s->exists)
        return 0;
    if (strcmp(s->wal_status, "lost") == 0) {
        snprintf(msg, sizeof(msg),
                 "slot \"%s\" of consumer group \"%s\" was invalidated by the server "
                 "(wal_status lost) and no reader holds it"
                 "\nHINT:  Start \"%s consume --group %s\" to recreate it and resync the group "
                 "from the table, or remove the group with \"%s group drop %s --yes\".",
                 slot, group, progname, group, progname, group);
        walq__cli_message("WARNING", msg);
        return 1;
    }
    if (s->retained_bytes < 0 || s->retained_bytes <= threshold)
        return 0;
    if (*s->safe) {
        char pretty[32];

        snprintf(safe, sizeof(safe), "; the server invalidates it in %s more",
                 pretty_bytes(pretty, sizeof(pretty), strtoll(s->safe, NULL, 10)));
    }
    snprintf(msg, sizeof(msg),
             "slot \"%s\" of consumer group \"%s\" retains %" PRId64
             " bytes of WAL (%s) and no reader holds it (wal_status %s%s)"
             "\nHINT:  The server keeps that WAL until the slot moves on: start \"%s consume "
             "--group %s\", or remove the group with \"%s group drop %s --yes\" if it is "
             "abandoned.",
             slot, group, s->retained_bytes, pretty_bytes(size, sizeof(size), s->retained_bytes),
             s->wal_status, safe, progname, group, progname, group);
    walq__cli_message("WARNING", msg);
    return 1;
}

/* ------------------------------------------------------------------ */
/* walq status                                                          */

static void status_help(void)
{
    printf("Usage: %s status [--dbname CONNINFO] [--source CONNINFO] [--group NAME]\n"
           "                   [--warn-retained BYTES]\n\n"
           "Shows every reader of every consumer group (one per partition): its slot,\n"
           "the walq process holding it (host and pid) and the walsender serving it on\n"
           "the source, how far what that walsender sent (recv_lag) and the slot's\n"
           "confirmed position (lag_bytes) are behind the server's WAL, in bytes, how\n"
           "long the oldest queued job has waited (lag_s, seconds), the\n"
           "WAL the slot keeps on the server (retained, bytes) and its wal_status, the\n"
           "cursor, and the reader's jobs by status.  --source names the server with\n"
           "the slots when it is not the primary.\n\n"
           "A slot that no reader holds and that retains more than --warn-retained\n"
           "(default 1GB; units kB, MB, GB, TB), or that the server invalidated, gets a\n"
           "WARNING on stderr, and the exit status is then 3.  Errors exit 1.\n",
           progname);
}

int walq__cli_status(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"dbname", required_argument, NULL, 'd'}, {"source", required_argument, NULL, 's'},
        {"group", required_argument, NULL, 'g'},  {"warn-retained", required_argument, NULL, 'w'},
        {"help", no_argument, NULL, 'h'},         {NULL, 0, NULL, 0}};
    list_opts o;
    PGconn *conn = NULL, *sconn = NULL;
    PGresult *res = NULL;
    int rc, warned = 0;

    rc = list_options(&o, argc, argv, longopts, "status", NULL, status_help);
    if (rc != GO_ON)
        return rc;
    if (connect_pair(&conn, &sconn, o.dbname, o.source, "walq status") != 0)
        return 1;
    {
        const char *params[1] = {o.group};

        rc = walq__query(conn, &res, "read the consumer groups", readers_sql, 1, params);
    }
    if (rc != 0) {
        walq__cli_fail(rc);
        finish_pair(conn, sconn);
        return 1;
    }
    printf("%-20s %-9s %-26s %-24s %-9s %12s %14s %8s %14s %-10s %-14s %8s %8s %9s %9s %7s %9s  "
           "%s\n",
           "group", "partition", "slot", "held_by", "walsender", "recv_lag", "lag_bytes", "lag_s",
           "retained", "wal_status", "cursor", "queued", "running", "scheduled", "done", "dead",
           "cancelled", "queues");
    for (int i = 0; i < PQntuples(res); i++) {
        slot_info s;
        char g[128], holder[128], queues[512];

        slot_read(sconn ? sconn : conn, PQgetvalue(res, i, 1), &s);
        printf("%-20s %-9s %-26s %-24s %-9s %12s %14s %8s %14s %-10s %-14s %8s %8s %9s %9s %7s "
               "%9s  %s\n",
               escape_text(g, sizeof(g), PQgetvalue(res, i, 0)), PQgetvalue(res, i, 10),
               PQgetvalue(res, i, 1), escape_text(holder, sizeof(holder), PQgetvalue(res, i, 11)),
               s.active, s.sent_lag, s.lag, PQgetvalue(res, i, 12), s.retained, s.wal_status,
               PQgetvalue(res, i, 3), PQgetvalue(res, i, 4), PQgetvalue(res, i, 5),
               PQgetvalue(res, i, 6), PQgetvalue(res, i, 7), PQgetvalue(res, i, 8),
               PQgetvalue(res, i, 9), escape_text(queues, sizeof(queues), PQgetvalue(res, i, 2)));
        if (strcmp(PQgetvalue(res, i, 11), "-") == 0)
            warned |= warn_slot(g, PQgetvalue(res, i, 1), &s, o.threshold);
    }
    if (PQntuples(res) == 0 && o.group != NULL)
        printf("(no consumer group \"%s\": \"%s group list\" lists them)\n", o.group, progname);
    else if (PQntuples(res) == 0)
        printf("(no consumer groups yet: start one with \"%s consume\")\n", progname);
    PQclear(res);
    finish_pair(conn, sconn);
    return warned ? WALQ__CLI_EXIT_WARNED : 0;
}

/* ------------------------------------------------------------------ */
/* walq group list                                                      */

static void list_help(void)
{
    printf("Usage: %s group list [--dbname CONNINFO] [--source CONNINFO]\n"
           "                       [--warn-retained BYTES]\n\n"
           "One line per consumer group: its slots and their output plugin, how many of\n"
           "its readers a process holds (live/readers), the largest lag of its readers\n"
           "in bytes and seconds, the WAL its slots retain together, and its jobs by\n"
           "status.  Warns as \"walq status\" does (exit status 3) about slots no\n"
           "reader holds that retain more than --warn-retained (default 1GB).\n",
           progname);
}

static int group_list(int argc, char **argv)
{
    static const struct option longopts[] = {{"dbname", required_argument, NULL, 'd'},
                                             {"source", required_argument, NULL, 's'},
                                             {"warn-retained", required_argument, NULL, 'w'},
                                             {"help", no_argument, NULL, 'h'},
                                             {NULL, 0, NULL, 0}};
    list_opts o;
    PGconn *conn = NULL, *sconn = NULL;
    PGresult *res = NULL;
    int rc, warned = 0;

    rc = list_options(&o, argc, argv, longopts, "group", "list", list_help);
    if (rc != GO_ON)
        return rc;
    if (connect_pair(&conn, &sconn, o.dbname, o.source, "walq group list") != 0)
        return 1;
    rc = walq__query(
        conn, &res, "read the consumer groups",
        "SELECT g.name, g.partitions, array_to_string(g.queues, ','),"
        "       (SELECT array_to_string(array_agg(r.slot_name ORDER BY r.partition), ',')"
        "          FROM walq.readers r WHERE r.group_name = g.name),"
        "       (SELECT count(*) FILTER (WHERE walq.reader_held(r.slot_name)) || '/' || count(*)"
        "          FROM walq.readers r WHERE r.group_name = g.name),"
        "       s.queued, s.running, s.scheduled, s.done, s.dead, s.cancelled,"
        "       coalesce(round(extract(epoch FROM now() - s.oldest_queued), 1)::text, '0')"
        "  FROM walq.groups g, LATERAL walq.group_summary(g.name) s ORDER BY g.name",
        0, NULL);
    if (rc != 0) {
        walq__cli_fail(rc);
        finish_pair(conn, sconn);
        return 1;
    }
    printf("%-20s %-28s %-8s %-7s %14s %8s %14s %8s %8s %9s %9s %7s %9s  %s\n", "group", "slots",
           "plugin", "live", "lag_bytes", "lag_s", "retained", "queued", "running", "scheduled",
           "done", "dead", "cancelled", "queues");
    for (int i = 0; i < PQntuples(res); i++) {
        char *slots = walq__strdup(PQgetvalue(res, i, 3)), *save = NULL;
        char plugin[64] = "-", lag[32] = "-", retained[32] = "-", queues[512], g[128];
        int64_t lag_max = -1, kept = 0;
        int any = 0;

        escape_text(g, sizeof(g), PQgetvalue(res, i, 0));
        for (char *slot = slots ? strtok_r(slots, ",", &save) : NULL; slot;
             slot = strtok_r(NULL, ",", &save)) {
            slot_info s;

            slot_read(sconn ? sconn : conn, slot, &s);
            if (!s.exists)
                continue;
            snprintf(plugin, sizeof(plugin), "%s", s.plugin);
            if (strcmp(s.lag, "lost") != 0 && strtoll(s.lag, NULL, 10) > lag_max)
                lag_max = strtoll(s.lag, NULL, 10);
            if (s.retained_bytes >= 0) {
                kept += s.retained_bytes;
                any = 1;
            }
            if (!reader_held(conn, slot))
                warned |= warn_slot(g, slot, &s, o.threshold);
        }
        free(slots);
        if (lag_max >= 0)
            snprintf(lag, sizeof(lag), "%" PRId64, lag_max);
        if (any)
            snprintf(retained, sizeof(retained), "%" PRId64, kept);
        printf("%-20s %-28s %-8s %-7s %14s %8s %14s %8s %8s %9s %9s %7s %9s  %s\n", g,
               PQgetvalue(res, i, 3), plugin, PQgetvalue(res, i, 4), lag, PQgetvalue(res, i, 11),
               retained, PQgetvalue(res, i, 5), PQgetvalue(res, i, 6), PQgetvalue(res, i, 7),
               PQgetvalue(res, i, 8), PQgetvalue(res, i, 9), PQgetvalue(res, i, 10),
               escape_text(queues, sizeof(queues), PQgetvalue(res, i, 2)));
    }
    if (PQntuples(res) == 0)
        printf("(no consumer groups yet: start one with \"%s consume\")\n", progname);
    PQclear(res);
    finish_pair(conn, sconn);
    return warned ? WALQ__CLI_EXIT_WARNED : 0;
}

/* Whether a process holds the reader with this slot (walq.reader_held). */
static int reader_held(PGconn *conn, const char *slot)
{
    const char *params[1] = {slot};
    PGresult *res = NULL;
    int held = 0;

    if (walq__query(conn, &res, "read the reader", "SELECT walq.reader_held($1)", 1, params) == 0) {
        held = PQntuples(res) == 1 && strcmp(PQgetvalue(res, 0, 0), "t") == 0;
        PQclear(res);
    }
    return held;
}

/* ------------------------------------------------------------------ */
/* walq group drop                                                      */

static int sqlstate_is(const PGresult *res, const char *code)
{
    const char *st = PQresultErrorField(res, PG_DIAG_SQLSTATE);

    return st != NULL && strcmp(st, code) == 0;
}

/* Prints a server error with its detail and hint, which walq__query leaves out. */
static void fail_result(PGconn *conn, const PGresult *res, const char *what)
{
    const char *detail = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_DETAIL) : NULL;
    const char *hint = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_HINT) : NULL;
    char msg[1024], text[2048];

    walq__pg_message(conn, res, msg, sizeof(msg));
    snprintf(text, sizeof(text), "could not %s: %s%s%s%s", what, msg, detail ? " (" : "",
             detail ? detail : "", detail ? ")" : "");
    if (hint == NULL && res && sqlstate_is(res, "42501"))
        hint = "Drop the group as a role that is a member of walq_admin on the primary and has "
               "the REPLICATION attribute on the source (docs/security.md).";
    if (hint)
        snprintf(text + strlen(text), sizeof(text) - strlen(text), "\nHINT:  %s", hint);
    walq__cli_message("ERROR", text);
}

/* Runs sql with params; on failure prints why and returns NULL. */
static PGresult *run(PGconn *conn, const char *what, const char *sql, int n, const char **params,
                     ExecStatusType want)
{
    PGresult *res = PQexecParams(conn, sql, n, NULL, params, NULL, NULL, 0);

    if (PQresultStatus(res) != want) {
        fail_result(conn, res, what);
        PQclear(res);
        return NULL;
    }
    return res;
}

static int is_standby(PGconn *conn, int *standby)
{
    PGresult *res = run(conn, "ask whether the source is a standby", "SELECT pg_is_in_recovery()",
                        0, NULL, PGRES_TUPLES_OK);

    if (res == NULL)
        return 1;
    *standby = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
    PQclear(res);
    return 0;
}

/*
 * Drops one reader's slot on the source.  A slot a walsender still streams
 * from is not dropped: the group is in use after all.
 */
static int drop_slot(PGconn *sconn, const char *slot, int *dropped)
{
    const char *params[1] = {slot};
    PGresult *res;

    *dropped = 0;
    res = run(sconn, "read the slot",
              "SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1", 1, params,
              PGRES_TUPLES_OK);
    if (res == NULL)
        return 1;
    if (PQntuples(res) == 0) {
        PQclear(res);
        return 0;
    }
    if (!PQgetisnull(res, 0, 0)) {
        char msg[512];

        snprintf(msg, sizeof(msg),
                 "slot \"%s\" is in use by the walsender with pid %s on the source"
                 "\nHINT:  Stop the process reading it (pg_stat_replication shows it), then "
                 "drop the group.",
                 slot, PQgetvalue(res, 0, 0));
        walq__cli_message("ERROR", msg);
        PQclear(res);
        return 1;
    }
    PQclear(res);
    res = run(sconn, "drop the slot", "SELECT pg_drop_replication_slot($1)", 1, params,
              PGRES_TUPLES_OK);
    if (res == NULL)
        return 1;
    PQclear(res);
    *dropped = 1;
    return 0;
}

/*
 * Drops the publication named like a reader's slot, if it is there.  Where
 * walq's schema has walq.drop_publication() (which drops, with the rights of
 * walq's owner, only a publication walq made), through it; else directly.
 */
static int drop_pub(PGconn *conn, const char *slot, int *dropped)
{
    const char *params[1] = {slot};
    PGresult *res;
    int has_fn;

    *dropped = 0;
    res = run(conn, "read the publication",
              "SELECT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $1),"
              "       to_regprocedure('walq.drop_publication(text)') IS NOT NULL",
              1, params, PGRES_TUPLES_OK);
    if (res == NULL)
        return 1;
    if (strcmp(PQgetvalue(res, 0, 0), "t") != 0) {
        PQclear(res);
        return 0;
    }
    has_fn = strcmp(PQgetvalue(res, 0, 1), "t") == 0;
    PQclear(res);
    if (has_fn) {
        res = run(conn, "drop the publication", "SELECT walq.drop_publication($1)", 1, params,
                  PGRES_TUPLES_OK);
        if (res == NULL)
            return 1;
        *dropped = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
    } else {
        char sql[256], *ident = PQescapeIdentifier(conn, slot, strlen(slot));

        if (ident == NULL)
            return 1;
        snprintf(sql, sizeof(sql), "DROP PUBLICATION IF EXISTS %s", ident);
        PQfreemem(ident);
        res = run(conn, "drop the publication", sql, 0, NULL, PGRES_COMMAND_OK);
        if (res == NULL)
            return 1;
        *dropped = 1;
    }
    PQclear(res);
    return 0;
}

static int group_drop(int argc, char **argv)
{
    static const struct option longopts[] = {{"dbname", required_argument, NULL, 'd'},
                                             {"source", required_argument, NULL, 's'},
                                             {"yes", no_argument, NULL, 'y'},
                                             {"help", no_argument, NULL, 'h'},
                                             {NULL, 0, NULL, 0}};
    const char *dbname = NULL, *source = NULL, *name;
    PGconn *conn = NULL, *sconn = NULL, *slots_on, *pubs_on;
    PGresult *res = NULL, *rows = NULL;
    char source_id[32] = "";
    int opt, yes = 0, standby = 0, rc = 1, nslots = 0, npubs = 0;

    while ((opt = getopt_long(argc, argv, "d:h", longopts, NULL)) != -1) {
        switch (opt) {
        case 'd':
            dbname = optarg;
            break;
        case 's':
            source = optarg;
            break;
        case 'y':
            yes = 1;
            break;
        case 'h':
            printf("Usage: %s group drop NAME --yes [--dbname CONNINFO] [--source CONNINFO]\n\n"
                   "Removes the consumer group NAME: the slot of each of its readers on the\n"
                   "source and the publication named like it, and every record of the group\n"
                   "(its readers, outcomes, batches and commands) on the primary, in one\n"
                   "transaction that commits once the slots are gone.  Other groups are not\n"
                   "touched; dedup keys held only for this group are freed.  It refuses while\n"
                   "a process holds a reader of the group.  Dropping a group that does not\n"
                   "exist does nothing.  --source names the server with the slots when it is\n"
                   "not the primary (as for \"walq consume --source\").  --yes is required.\n",
                   progname);
            return 0;
        default:
            walq__cli_usage("group", "drop", "%s", "invalid option for \"group drop\"");
            return EXIT_USAGE;
        }
    }
    if (argc - optind != 1) {
        walq__cli_usage("group", "drop", "%s", "group drop takes the name of one group");
        return EXIT_USAGE;
    }
    name = argv[optind];
    if (!yes) {
        char msg[512];

        snprintf(msg, sizeof(msg),
                 "dropping consumer group \"%s\" removes its slots and all its records"
                 "\nHINT:  Add --yes to drop it; \"%s group list\" shows what it holds.",
                 name, progname);
        walq__cli_message("ERROR", msg);
        return EXIT_USAGE;
    }
    if (connect_pair(&conn, &sconn, dbname, source, "walq group drop") != 0)
        return 1;
    slots_on = sconn ? sconn : conn;
    if (is_standby(slots_on, &standby) != 0)
        goto done;
    /* The publications are made where writes go: on the primary of a standby source. */
    pubs_on = standby ? conn : slots_on;
    if (walq__source_system_id(slots_on, source_id, sizeof(source_id)) != 0) {
        walq__cli_fail(WALQ_EQUERY);
        goto done;
    }
    res = run(conn, "begin", "BEGIN", 0, NULL, PGRES_COMMAND_OK);
    if (res == NULL)
        goto done;
    PQclear(res);
    {
        const char *params[1] = {name};

        rows = run(conn, "drop the group's records", "SELECT * FROM walq.drop_group($1)", 1, params,
                   PGRES_TUPLES_OK);
    }
    if (rows == NULL)
        goto rollback;
    for (int i = 0; i < PQntuples(rows); i++) {
        const char *slot = PQgetvalue(rows, i, 0);
        const char *sid = PQgetvalue(rows, i, 1);
        char msg[512];
        int dropped;

        if (!PQgetisnull(rows, i, 1) && strcmp(sid, source_id) != 0) {
            snprintf(msg, sizeof(msg),
                     "slot \"%s\" of consumer group \"%s\" is on the server with system "
                     "identifier %s, not on %s (%s)"
                     "\nHINT:  Give --source the server that \"walq consume --source\" reads the "
                     "group from.",
                     slot, name, sid, sconn ? "the --source server" : "the primary", source_id);
            walq__cli_message("ERROR", msg);
            goto rollback;
        }
        if (drop_slot(slots_on, slot, &dropped) != 0)
            goto rollback;
        nslots += dropped;
        if (drop_pub(pubs_on, slot, &dropped) != 0)
            goto rollback;
        npubs += dropped;
    }
    res = run(conn, "commit the drop", "COMMIT", 0, NULL, PGRES_COMMAND_OK);
    if (res == NULL)
        goto done;
    PQclear(res);
    if (PQntuples(rows) == 0)
        fprintf(stderr, "%s: consumer group \"%s\" does not exist; nothing to drop\n", progname,
                name);
    else
        fprintf(stderr,
                "%s: dropped consumer group \"%s\": %d slot%s and %d publication%s removed with "
                "its records\n",
                progname, name, nslots, nslots == 1 ? "" : "s", npubs, npubs == 1 ? "" : "s");
    rc = 0;
    goto done;

rollback:
    PQclear(PQexec(conn, "ROLLBACK"));
done:
    PQclear(rows);
    finish_pair(conn, sconn);
    return rc;
}

int walq__cli_group(int argc, char **argv)
{
    const char *sub = argc > 1 ? argv[1] : NULL;

    if (sub == NULL || strcmp(sub, "--help") == 0 || strcmp(sub, "-h") == 0) {
        printf("Usage: %s group list|drop [OPTIONS]\n\n"
               "  list         every consumer group: slots, readers, lag, WAL retained, counts\n"
               "  drop NAME    remove an abandoned group: its slots and its records\n\n"
               "\"%s group SUBCOMMAND --help\" describes each.\n",
               progname, progname);
        return sub == NULL ? EXIT_USAGE : 0;
    }
    if (strcmp(sub, "list") == 0)
        return group_list(argc - 1, argv + 1);
    if (strcmp(sub, "drop") == 0)
        return group_drop(argc - 1, argv + 1);
    walq__cli_usage("group", NULL, "unknown subcommand \"%s\"", sub);
    return EXIT_USAGE;
}
