/* The consumer's statements: registry, reader, skips, timers, backlog, generations, commands. */
#include "registry.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "db.h"
#include "lsn.h"

/* The text of a number, for a parameter. */
typedef struct num_text {
    char s[24];
} num_text;

static num_text num(long long v)
{
    num_text t;

    snprintf(t.s, sizeof(t.s), "%lld", v);
    return t;
}

static int queues_literal(const walq__registry *rg, walq__buf *b)
{
    int rc = walq__buf_puts(b, "{");

    for (size_t i = 0; rc == 0 && i < rg->nqueues; i++) {
        if (i)
            rc = walq__buf_puts(b, ",");
        if (rc == 0)
            rc = walq__buf_array_elem(b, rg->queues[i]);
    }
    rc = rc ? rc : walq__buf_puts(b, "}");
    return rc ? walq__error(WALQ_ENOMEM, NULL, "out of memory") : 0;
}

/* Runs sql and discards its rows. */
static int query_clear(PGconn *conn, const char *what, const char *sql, int nparams,
                       const char *const *params)
{
    PGresult *res;
    int rc = walq__query(conn, &res, what, sql, nparams, params);

    if (rc == 0)
        PQclear(res);
    return rc;
}

/*
 * The statement is prepared as the unnamed statement, with the extended
 * protocol's Parse: that takes exactly one statement and runs nothing, so
 * that a second statement after a ";" (--sql 'SELECT 1; DROP TABLE x') is
 * refused here instead of run.  The unnamed statement needs no DEALLOCATE
 * (the next Parse replaces it) and lives in one message and its Sync, which
 * one server session takes whole even through a pooler.
 */
int walq__reg_check_sql(PGconn *primary, const char *sql)
{
    /* jsonb and bigint, the types of $1 and $2. */
    static const Oid types[2] = {3802, 20};
    PGresult *res = NULL, *r;
    const char *state;
    char msg[1024];
    int rc;

    if (PQsendPrepare(primary, "", sql, 2, types)) {
        /* A wait that failed (the primary is slow or gone) says so itself. */
        if ((rc = walq__wait_result(primary, "check the sql handler's statement")) != 0)
            return rc;
        while ((r = PQgetResult(primary)) != NULL) {
            if (res == NULL || PQresultStatus(res) == PGRES_COMMAND_OK) {
                PQclear(res);
                res = r;
            } else {
                PQclear(r);
            }
        }
    }
    if (res != NULL && PQresultStatus(res) == PGRES_COMMAND_OK) {
        PQclear(res);
        return 0;
    }
    walq__pg_message(primary, res, msg, sizeof(msg));
    state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    if (state != NULL && strcmp(state, "42601") == 0 && strstr(msg, "multiple commands") != NULL) {
        PQclear(res);
        return walq__error(WALQ_EINVAL,
                           "--sql (the sql option) takes exactly one statement: put several "
                           "in a function and call it, or join them in one statement with "
                           "WITH.",
                           "invalid sql handler statement: it holds more than one statement");
    }
    PQclear(res);
    return walq__error(WALQ_EINVAL,
                       "The statement of --sql gets the payload as $1 (jsonb) and the job id as "
                       "$2 (bigint).",
                       "invalid sql handler statement: %s", msg);
}

/* ------------------------------------------------------------------ */
/* The reader                                                          */

/*
 * The fence is the reader's row (sql/010_roles.sql): a process holds the
 * reader by its live backend on the primary, or, through a pooler, where it
 * has no session of its own, by the lease of its epoch.  walq.lock_reader
 * makes this session the holder when no other live backend and no lease
 * of another epoch holds it; through a pooler it only says whether the
 * reader is free, and the takeover then takes the lease.
 */
int walq__reg_try_lock(const walq__registry *rg, PGconn *primary, int pooled, int64_t mine,
                       walq__reg_lock *out)
{
    char mine_text[24];
    const char *params[3] = {rg->slot, mine_text, pooled ? "t" : "f"};
    PGresult *res;
    int rc;

    snprintf(mine_text, sizeof(mine_text), "%lld", (long long)mine);
    rc = walq__query(primary, &res, "take the reader's lock",
                     "WITH r AS MATERIALIZED ("
                     "  SELECT epoch, coalesce(holder, '') AS holder,"
                     "         coalesce(lease_until > now(), false) AS leased,"
                     "         ceil(extract(epoch FROM lease_until - now()))::bigint AS left_s"
                     "    FROM walq.readers WHERE slot_name = $1)"
                     " SELECT walq.lock_reader($1, $2::bigint, $3::boolean),"
                     "        coalesce(walq.reader_lock_pid($1)::text, ''),"
                     "        (SELECT holder FROM r), (SELECT epoch FROM r),"
                     "        coalesce((SELECT leased FROM r), false), (SELECT left_s FROM r)",
                     3, params);
    if (rc != 0)
        return rc;
    out->got = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
    out->epoch = PQgetisnull(res, 0, 3) ? -1 : strtoll(PQgetvalue(res, 0, 3), NULL, 10);
    out->leased = strcmp(PQgetvalue(res, 0, 4), "t") == 0;
    snprintf(out->holder, sizeof(out->holder), "%s", PQgetvalue(res, 0, 2));
    if (out->leased)
        snprintf(out->who, sizeof(out->who), "%s, through a pooler (its lease runs %s s more)",
                 out->holder, PQgetvalue(res, 0, 5));
    else
        snprintf(out->who, sizeof(out->who), "%s%sbackend pid %s", out->holder,
                 *out->holder ? ", " : "", PQgetvalue(res, 0, 1));
    PQclear(res);
    return 0;
}

int walq__reg_unlock(const walq__registry *rg, PGconn *primary)
{
    const char *params[1] = {rg->slot};

    return query_clear(primary, "let the reader's lock go", "SELECT walq.unlock_reader($1)", 1,
                       params);
}

int walq__reg_lease(const walq__registry *rg, PGconn *primary, int64_t epoch, const char *lease,
                    int *held)
{
    char epoch_text[24];
    const char *params[3] = {rg->slot, epoch_text, lease};
    PGresult *res;
    int rc;

    snprintf(epoch_text, sizeof(epoch_text), "%lld", (long long)epoch);
    rc =
        walq__query(primary, &res, lease ? "renew the reader's lease" : "let the reader's lease go",
                    "UPDATE walq.readers SET lease_until = now() + $3::interval"
                    " WHERE slot_name = $1 AND epoch = $2::bigint",
                    3, params);
    if (rc != 0)
        return rc;
    *held = strcmp(PQcmdTuples(res), "0") != 0;
    PQclear(res);
    return 0;
}

/*
 * Drops the publication named like a slot, if walq made it, on a server
 * that takes writes: as walq's owner (walq.drop_publication), since a
 * consumer need not own the tables.
 */
static int drop_publication(PGconn *conn, const char *name)
{
    const char *params[1] = {name};

    return query_clear(conn, "drop the publication of a slot of the previous partitions",
                       "SELECT walq.drop_publication($1)", 1, params);
}

/*
 * Readers of the group set up for another number of partitions: their slots
 * are dropped and their rows deleted, unless one of them is still running.
 * Runs inside the transaction that registers this reader.
 */
static int retire_other_readers(const walq__registry *rg, PGconn *primary, PGconn *source,
                                const char *np)
{
    const char *params[2] = {rg->group, np};
    PGresult *res;
    int rc;

    rc = walq__query(primary, &res, "read the group's other readers",
                     "SELECT slot_name, partition, partitions, walq.reader_held(slot_name)"
                     "  FROM walq.readers WHERE group_name = $1 AND partitions <> $2::int"
                     "   FOR UPDATE",
                     2, params);
    if (rc != 0)
        return rc;
    for (int i = 0; i < PQntuples(res); i++) {
        if (strcmp(PQgetvalue(res, i, 3), "t") == 0) {
            rc = walq__error(WALQ_EBUSY,
                             "Stop every reader of the group before starting it with another "
                             "number of partitions.",
                             "consumer group \"%s\" is still read as partition %s of %s (slot "
                             "\"%s\")",
                             rg->group, PQgetvalue(res, i, 1), PQgetvalue(res, i, 2),
                             PQgetvalue(res, i, 0));
            break;
        }
    }
    for (int i = 0; rc == 0 && i < PQntuples(res); i++) {
        const char *slot[1] = {PQgetvalue(res, i, 0)};

        rc = query_clear(source, "drop a slot of the previous partitions",
                         "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots"
                         " WHERE slot_name = $1",
                         1, slot);
        /*
         * Its publication, if it read with pgoutput, is where publications
         * are made: on the source, or on the primary of a standby source.
         */
        if (rc == 0)
            rc = drop_publication(rg->standby ? primary : source, slot[0]);
        if (rc == 0)
            rc = query_clear(primary, "forget a reader of the previous partitions",
                             "DELETE FROM walq.readers WHERE slot_name = $1", 1, slot);
        if (rc == 0)
            walq__info(rg->log, "dropped slot \"%s\" of the group's previous partitioning",
                       slot[0]);
    }
    PQclear(res);
    return rc;
}

/* Inside the registering transaction: the group's row and this reader's. */
static int register_rows(const walq__registry *rg, PGconn *primary, PGconn *source,
                         const char *queues)
{
    num_text k = num(rg->partition), n = num(rg->partitions);
    const char *group[3] = {rg->group, queues, n.s};
    const char *reader[5] = {rg->group, k.s, n.s, rg->slot, queues};
    int rc;

    rc = query_clear(primary, "register the consumer group",
                     "INSERT INTO walq.groups (name, queues, partitions)"
                     " VALUES ($1, $2::text[], $3::int) ON CONFLICT (name) DO UPDATE"
                     "   SET queues = excluded.queues, partitions = excluded.partitions,"
                     "       updated_at = now()",
                     3, group);
    if (rc == 0)
        rc = retire_other_readers(rg, primary, source, n.s);
    if (rc == 0)
        rc = query_clear(primary, "register the reader",
                         "INSERT INTO walq.readers (group_name, partition, partitions, slot_name,"
                         "                          queues)"
                         " VALUES ($1, $2::int, $3::int, $4, $5::text[])"
                         " ON CONFLICT (group_name, partition) DO NOTHING",
                         5, reader);
    return rc;
}

/*
 * A cursor is a position in the source's WAL.  Another source (a subscriber
 * instead of the primary, say) has other positions: the reader starts from
 * nothing there, and resynchronizes.
 */
static int take_row(const walq__registry *rg, PGconn *primary, const char *queues,
                    const char *source_id, int64_t seen, const char *lease, walq__reg_reader *out)
{
    char holder[160], host[128] = "";
    num_text epoch = num(seen < 0 ? 0 : seen);
    const char *params[6] = {rg->slot, holder, queues, source_id, epoch.s, lease};
    PGresult *res;
    int rc;

    gethostname(host, sizeof(host) - 1);
    snprintf(holder, sizeof(holder), "%s pid %ld", *host ? host : "localhost", (long)getpid());
    rc = walq__query(primary, &res, "take the reader over",
                     "WITH old AS (SELECT source_id FROM walq.readers WHERE slot_name = $1)"
                     " UPDATE walq.readers r SET epoch = epoch + 1, holder = $2,"
                     "       held_since = now(), updated_at = now(), source_id = $4,"
                     "       cursor_lsn = CASE WHEN old.source_id <> $4 THEN '0/0'"
                     "                         ELSE cursor_lsn END,"
                     "       sync_lsn = CASE WHEN old.source_id <> $4 THEN NULL"
                     "                       ELSE sync_lsn END,"
                     "       lease_until = now() + $6::interval,"
                     "       holder_pid = CASE WHEN $6 IS NULL THEN pg_backend_pid() END,"
                     "       holder_started = CASE WHEN $6 IS NULL THEN walq.backend_started() END"
                     "  FROM old WHERE r.slot_name = $1 AND r.epoch = $5::bigint"
                     " RETURNING epoch, cursor_lsn::text, coalesce(sync_lsn::text, ''),"
                     "           NOT (queues @> $3::text[] AND queues <@ $3::text[]),"
                     "           coalesce(old.source_id <> $4, false)",
                     6, params);
    if (rc != 0)
        return rc;
    /* The row was made in this transaction if it was missing: another took it first. */
    if (PQntuples(res) != 1) {
        PQclear(res);
        out->lost = 1;
        return 0;
    }
    out->epoch = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    walq__lsn_parse(PQgetvalue(res, 0, 1), &out->cursor);
    if (walq__lsn_parse(PQgetvalue(res, 0, 2), &out->sync_lsn) != 0)
        out->sync_lsn = UINT64_MAX;
    out->queues_changed = strcmp(PQgetvalue(res, 0, 3), "t") == 0;
    out->source_changed = strcmp(PQgetvalue(res, 0, 4), "t") == 0;
    PQclear(res);
    return 0;
}

int walq__reg_take_over(const walq__registry *rg, PGconn *primary, PGconn *source,
                        const char *source_id, int64_t seen, const char *lease,
                        walq__reg_reader *out)
{
    walq__buf queues = {0};
    int rc;

    memset(out, 0, sizeof(*out));
    rc = queues_literal(rg, &queues);
    if (rc == 0)
        rc = walq__reg_begin(rg, primary, "begin registering the reader");
    if (rc == 0)
        rc = register_rows(rg, primary, source, queues.data);
    if (rc == 0)
        rc = take_row(rg, primary, queues.data, source_id, seen, lease, out);
    if (rc == 0)
        rc = walq__exec(primary, out->lost ? "roll back" : "commit the reader",
                        out->lost ? "ROLLBACK" : "COMMIT");
    walq__buf_free(&queues);
    if (rc != 0 && PQstatus(primary) == CONNECTION_OK && rc != WALQ_ECONN)
        walq__exec(primary, "roll back", "ROLLBACK");
    return rc;
}

int walq__reg_resync_begins(const walq__registry *rg, PGconn *primary)
{
    const char *params[1] = {rg->slot};

    return query_clear(primary, "record that the reader resynchronizes",
                       "UPDATE walq.readers SET sync_lsn = NULL, sealed_through = 0,"
                       " updated_at = now() WHERE slot_name = $1",
                       1, params);
}

int walq__reg_new_slot(const walq__registry *rg, PGconn *primary, uint64_t consistent)
{
    char lsn[WALQ__LSN_BUFSZ];
    walq__buf queues = {0};
    int rc = queues_literal(rg, &queues);

    if (rc == 0) {
        const char *params[3] = {rg->slot, walq__lsn_format(consistent, lsn), queues.data};

        rc = query_clear(primary, "record the reader's new slot",
                         "UPDATE walq.readers SET sync_lsn = $2::pg_lsn, queues = $3::text[],"
                         " sealed_through = 0, updated_at = now() WHERE slot_name = $1",
                         3, params);
    }
    walq__buf_free(&queues);
    return rc;
}

int walq__reg_skips(const walq__registry *rg, PGconn *primary, uint64_t cursor, int64_t **ids,
                    size_t *n)
{
    char lsn[WALQ__LSN_BUFSZ];
    num_text k = num(rg->partition), np = num(rg->partitions);
    const char *params[4] = {rg->group, walq__lsn_format(cursor, lsn), k.s, np.s};
    PGresult *res;
    int rc;

    *ids = NULL;
    *n = 0;
    rc = walq__query(primary, &res, "read recorded outcomes",
                     "SELECT job_id FROM ("
                     "  SELECT job_id FROM walq.outcomes WHERE group_name = $1"
                     "     AND (lsn > $2::pg_lsn OR (status = 'cancelled' AND lsn IS NULL))"
                     "  UNION"
                     "  SELECT unnest(job_ids) FROM walq.outcome_batches"
                     "   WHERE group_name = $1 AND lsn > $2::pg_lsn) x (job_id)"
                     " WHERE $4::int = 1 OR walq.partition_of(job_id, $4::int) = $3::int"
                     " ORDER BY job_id",
                     4, params);
    if (rc != 0)
        return rc;
    *n = (size_t)PQntuples(res);
    *ids = malloc((*n ? *n : 1) * sizeof(**ids));
    if (*ids == NULL) {
        PQclear(res);
        *n = 0;
        return walq__error(WALQ_ENOMEM, NULL, "out of memory");
    }
    for (size_t i = 0; i < *n; i++)
        (*ids)[i] = strtoll(PQgetvalue(res, (int)i, 0), NULL, 10);
    PQclear(res);
    return 0;
}

/* ------------------------------------------------------------------ */
/* Jobs from the tables                                                */

/*
 * The columns every query of jobs gives, then: run_at as Unix microseconds,
 * NULL when walq cannot use it (its text follows, for the reason); the
 * job's generation; and, where there is one, its attempts so far.
 */
#define JOB_COLUMNS                                                                                \
    "j.id, j.queue, j.payload, j.priority, j.max_attempts, j.dedup_key IS NOT NULL AS has_dedup,"  \
    " j.generation"
#define RUN_AT_US(col)                                                                             \
    "CASE WHEN " col " >= '0001-01-01 00:00:00+00' AND " col " < '10000-01-01 00:00:00+00'"        \
    " THEN (extract(epoch FROM " col ") * 1000000)::int8 END AS run_at, " col                      \
    "::text AS run_at_text"

void walq__reg_job_row(const PGresult *res, int row, walq__job_row *out)
{
    int attempts = PQfnumber(res, "attempts"), run_at = PQfnumber(res, "run_at");

    memset(out, 0, sizeof(*out));
    out->id = strtoll(PQgetvalue(res, row, 0), NULL, 10);
    out->queue = PQgetvalue(res, row, 1);
    out->payload = PQgetvalue(res, row, 2);
    out->payload_len = (size_t)PQgetlength(res, row, 2);
    out->priority = (int32_t)strtol(PQgetvalue(res, row, 3), NULL, 10);
    out->max_attempts = (int32_t)strtol(PQgetvalue(res, row, 4), NULL, 10);
    out->has_dedup = *PQgetvalue(res, row, 5) == 't';
    out->generation = (int32_t)strtol(PQgetvalue(res, row, 6), NULL, 10);
    if (PQgetisnull(res, row, run_at))
        out->bad_run_at = PQgetvalue(res, row, PQfnumber(res, "run_at_text"));
    else
        out->run_at = strtoll(PQgetvalue(res, row, run_at), NULL, 10);
    if (attempts >= 0)
        out->attempts = (int32_t)strtol(PQgetvalue(res, row, attempts), NULL, 10);
}

int walq__reg_timers(const walq__registry *rg, PGconn *primary, int64_t after, int64_t until,
                     size_t limit, PGresult **res)
{
    num_text a = num(after), u = num(until), k = num(rg->partition), n = num(rg->partitions),
             l = num((long long)limit);
    const char *params[6] = {rg->group, a.s, u.s, k.s, n.s, l.s};

    return walq__query(
        primary, res, "read scheduled jobs",
        "SELECT " JOB_COLUMNS ", " RUN_AT_US(
            "coalesce(o.run_at, j.run_at)") ","
                                            "       o.attempts AS attempts"
                                            "  FROM walq.outcomes o"
                                            "  JOIN walq.jobs j ON j.id = o.job_id AND "
                                            "j.generation = o.generation"
                                            " WHERE o.group_name = $1 AND o.status = 'scheduled'"
                                            "   AND o.run_at > timestamptz 'epoch' + $2::int8 * "
                                            "interval '1 microsecond'"
                                            "   AND o.run_at <= timestamptz 'epoch' + $3::int8 * "
                                            "interval '1 microsecond'"
                                            "   AND ($5::int = 1 OR walq.partition_of(o.job_id, "
                                            "$5::int) = $4::int)"
                                            " ORDER BY o.run_at LIMIT $6::int8",
        6, params);
}

int walq__reg_later_timers(const walq__registry *rg, PGconn *primary, int64_t until, int *later)
{
    num_text u = num(until), k = num(rg->partition), n = num(rg->partitions);
    const char *params[4] = {rg->group, u.s, k.s, n.s};
    PGresult *res;
    int rc;

    rc = walq__query(primary, &res, "look for later scheduled jobs",
                     "SELECT EXISTS (SELECT 1 FROM walq.outcomes WHERE group_name = $1"
                     "   AND status = 'scheduled'"
                     "   AND run_at > timestamptz 'epoch' + $2::int8 * interval '1 microsecond'"
                     "   AND ($4::int = 1 OR walq.partition_of(job_id, $4::int) = $3::int))",
                     4, params);
    if (rc != 0)
        return rc;
    *later = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
    PQclear(res);
    return 0;
}

int walq__reg_backlog_open(const walq__registry *rg, PGconn *source, const char *snapshot)
{
    char sql[256];
    walq__buf queues = {0};
    num_text k = num(rg->partition), n = num(rg->partitions);
    int rc;

    rc = walq__exec(source, "begin reading the backlog",
                    "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY");
    if (rc == 0) {
        snprintf(sql, sizeof(sql), "SET TRANSACTION SNAPSHOT '%s'", snapshot);
        rc = walq__exec(source, "import the slot's snapshot", sql);
    }
    if (rc == 0)
        rc = queues_literal(rg, &queues);
    if (rc == 0) {
        const char *params[3] = {queues.data, k.s, n.s};

        /*
         * The source may be a subscriber with nothing of walq's but the
         * tables, so the partition is computed inline, as
         * walq.partition_of() does.
         */
        rc = query_clear(
            source, "open the backlog",
            "DECLARE walq_backfill NO SCROLL CURSOR FOR"
            " SELECT " JOB_COLUMNS ", " RUN_AT_US(
                "j.run_at") "   FROM walq.jobs j WHERE j.queue = ANY ($1::text[])"
                            "    AND ($3::int = 1"
                            "         OR (hashint8(j.id)::int8 & 4294967295) % $3::int = $2::int)"
                            "  ORDER BY j.id",
            3, params);
    }
    walq__buf_free(&queues);
    return rc;
}

int walq__reg_backlog_page(PGconn *source, PGresult **page)
{
    return walq__query(source, page, "read the backlog",
                       "FETCH " /* constant page size */ "1000 FROM walq_backfill", 0, NULL);
}

int walq__reg_backlog_close(PGconn *source)
{
    return walq__exec(source, "finish reading the backlog", "COMMIT");
}

int walq__reg_backlog_known(const walq__registry *rg, PGconn *primary, const PGresult *page,
                            PGresult **known)
{
    walq__buf ids = {0}, gens = {0};
    int n = PQntuples(page), rc = 0;

    /*
     * The outcomes live on the primary, which may be another server: the
     * page's status there, one row per job in the page's (id) order.  Done
     * is a row or a batch.
     */
    *known = NULL;
    rc |= walq__buf_puts(&ids, "{");
    rc |= walq__buf_puts(&gens, "{");
    for (int i = 0; rc == 0 && i < n; i++) {
        rc |= walq__buf_printf(&ids, "%s%s", i ? "," : "", PQgetvalue(page, i, 0));
        rc |= walq__buf_printf(&gens, "%s%s", i ? "," : "", PQgetvalue(page, i, 6));
    }
    rc |= walq__buf_puts(&ids, "}");
    rc |= walq__buf_puts(&gens, "}");
    if (rc != 0)
        rc = walq__error(WALQ_ENOMEM, NULL, "out of memory");
    if (rc == 0) {
        const char *params[3] = {rg->group, ids.data, gens.data};

        rc =
            walq__query(primary, known, "check the backlog against recorded outcomes",
                        "SELECT coalesce(o.status,"
                        "                CASE WHEN walq.done_in_batch($1, p.id) THEN 'done' END)"
                        "  FROM unnest($2::bigint[], $3::int[]) WITH ORDINALITY p (id, gen, n)"
                        "  LEFT JOIN walq.outcomes o"
                        "         ON o.group_name = $1 AND o.job_id = p.id AND o.generation = p.gen"
                        " ORDER BY p.n",
                        3, params);
    }
    walq__buf_free(&ids);
    walq__buf_free(&gens);
    if (rc == 0 && PQntuples(*known) != n) {
        rc = walq__error(WALQ_EQUERY, NULL, "the check of %d backlog jobs returned %d rows", n,
                         PQntuples(*known));
        PQclear(*known);
        *known = NULL;
    }
    return rc;
}

walq__reg_known walq__reg_known_at(const PGresult *known, int row)
{
    if (PQgetisnull(known, row, 0))
        return WALQ__KNOWN_NONE;
    /* Recorded already, unless a retry queued it again. */
    return strcmp(PQgetvalue(known, row, 0), "queued") == 0 ? WALQ__KNOWN_QUEUED
                                                            : WALQ__KNOWN_RECORDED;
}

/* ------------------------------------------------------------------ */
/* Generations                                                         */

int walq__reg_maintain(PGconn *primary, int64_t *next_us)
{
    PGresult *res;
    int rc =
        walq__query(primary, &res, "look after the generations", "SELECT walq.maintain()", 0, NULL);

    if (rc != 0)
        return rc;
    *next_us = (int64_t)(strtod(PQgetvalue(res, 0, 0), NULL) * 1e6);
    PQclear(res);
    return 0;
}

int walq__reg_snapshot_seal(PGconn *source, int32_t *generation)
{
    PGresult *res;
    int rc = walq__query(source, &res, "read the last seal of the backlog",
                         "SELECT coalesce(max(c.job_id), 0) FROM walq.commands c"
                         " WHERE c.action = 'seal' AND EXISTS (SELECT 1 FROM walq.generations g"
                         "   WHERE g.generation = c.job_id AND g.sealed_at IS NOT NULL)",
                         0, NULL);

    if (rc != 0)
        return rc;
    *generation = (int32_t)strtol(PQgetvalue(res, 0, 0), NULL, 10);
    PQclear(res);
    return 0;
}

/* ------------------------------------------------------------------ */
/* Commands                                                            */

int walq__reg_seal_valid(PGconn *primary, int64_t generation, int *valid, int64_t *opened)
{
    num_text g = num(generation);
    const char *params[1] = {g.s};
    PGresult *res;
    int rc = walq__query(primary, &res, "check a seal command",
                         "SELECT $1::int8 BETWEEN 1 AND v - 1, v"
                         "  FROM pg_sequence_last_value('walq.generation_seq') AS v",
                         1, params);

    if (rc != 0)
        return rc;
    *valid = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
    *opened = strtoll(PQgetvalue(res, 0, 1), NULL, 10);
    PQclear(res);
    return 0;
}

int walq__reg_cancelled(const walq__registry *rg, PGconn *primary, int64_t id, int *yes)
{
    num_text idtext = num(id);
    const char *params[2] = {rg->group, idtext.s};
    PGresult *res;
    int rc;

    rc = walq__query(primary, &res, "read a cancelled job's outcome",
                     "SELECT 1 FROM walq.outcomes WHERE group_name = $1 AND job_id = $2"
                     "   AND status = 'cancelled'",
                     2, params);
    if (rc != 0)
        return rc;
    *yes = PQntuples(res) == 1;
    PQclear(res);
    return 0;
}

int walq__reg_retried(const walq__registry *rg, PGconn *primary, int64_t id, PGresult **res)
{
    num_text idtext = num(id);
    const char *params[2] = {rg->group, idtext.s};

    return walq__query(
        primary, res, "read a retried job",
        "SELECT " JOB_COLUMNS ", " RUN_AT_US(
            "j.run_at") "  FROM walq.jobs j"
                        "  JOIN walq.outcomes o ON o.job_id = j.id AND o.generation = j.generation"
                        " WHERE o.group_name = $1 AND j.id = $2 AND o.status = 'queued'",
        2, params);
}

void walq__reg_standby_snapshot(PGconn *primary, const walq__log *log)
{
    PGresult *res;

    if (walq__query(primary, &res, "log a standby snapshot on the primary",
                    "SELECT walq.log_standby_snapshot()", 0, NULL) != 0)
        walq__debug(log, "%s", walq_last_error());
    else
        PQclear(res);
}

int walq__reg_session(PGconn *conn, int64_t timeout_ms, int *pooled)
{
    char sql[256];
    PGresult *res;
    int rc = walq__query(conn, &res, "set up the session", "SELECT pg_backend_pid()", 0, NULL);

    if (rc != 0)
        return rc;
    *pooled = strtol(PQgetvalue(res, 0, 0), NULL, 10) != PQbackendPID(conn);
    PQclear(res);
    /*
     * Through a pooler a SET would stay with a server session that other
     * clients get next: what walq's writes need is set for each of their
     * transactions instead (walq__reg_begin, and the ack's).
     */
    if (*pooled)
        return 0;
    /*
     * A statement or lock wait of walq's that lasts longer than the consumer
     * waits for an answer is ended by the server, with a reason.
     */
    snprintf(sql, sizeof(sql),
             "SET synchronous_commit = on; SET application_name = 'walq consume';"
             " SET statement_timeout = %lld; SET lock_timeout = %lld",
             (long long)timeout_ms, (long long)timeout_ms);
    return walq__exec(conn, "set up the session", sql);
}

int walq__reg_begin(const walq__registry *rg, PGconn *primary, const char *what)
{
    char sql[256];

    snprintf(sql, sizeof(sql),
             "BEGIN; SET LOCAL synchronous_commit = on; SET LOCAL statement_timeout = %lld;"
             " SET LOCAL lock_timeout = %lld",
             (long long)rg->timeout_ms, (long long)rg->timeout_ms);
    return walq__exec(primary, what, sql);
}
