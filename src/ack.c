/* Batched outcome writes. */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ack.h"
#include "db.h"
#include "lsn.h"

/*
 * One statement, hence one transaction.  Jobs done at their first attempt go
 * into walq.outcome_batches, one row per generation among them ($10, their
 * ids, with $13, each one's generation; $11, the greatest end LSN of their
 * transactions).  A row an administrator made for one of them before this
 * consumer saw it (cancelled, then retried: queued) is set done; rows are
 * few, so the range scan of the primary key between the batch's first and
 * last id finds them cheaply.  Every other outcome is upserted into
 * walq.outcomes ($14, the generations), but a final outcome already recorded
 * (by an earlier life of this consumer that ran the job too) is never
 * overwritten, so each job's final outcome is recorded once.  Jobs cancelled
 * by an administrator are in the batch only to let their transactions go:
 * their outcome is in the table already.  The dedup keys of jobs now
 * finished in every group reading their queue are released; the CTEs share
 * one snapshot, so this group's new outcomes come from RETURNING and only the
 * other groups are looked up.  The cursor and the generations the reader has
 * passed the seal of ($12) only move forward.
 *
 * An ack whose answer was lost (the primary went silent, the connection
 * broke) may still have committed, by the time the consumer has its
 * reader's lock again: the same jobs are then sent again.  A final outcome
 * row is never written twice; a batch's jobs are left out when a batch of
 * the group written since the cursor the consumer knows ($15) has them.
 * Whether any such batch overlaps the ids' range ($18 to $19) is asked once
 * per statement; only then is each id looked for (a replay is rare, and the
 * look per id cost the primary more than the rest of the batch).
 *
 * Everything is written only while the reader is at this process's epoch
 * ($16): f updates the reader's row at that epoch, or finds none (another
 * process took the reader over), and every other write reads f; the
 * statement returns how many rows f updated.  A takeover waits for f's row
 * lock, or f for the takeover, which it then sees.  The lease of a holder
 * through a pooler moves on ($17; NULL for a holder by lock).
 */
#define ACK_OUTCOMES                                                                               \
    "WITH f AS ("                                                                                  \
    "  UPDATE walq.readers r SET cursor_lsn = greatest(r.cursor_lsn, $8::pg_lsn),"                 \
    "         sealed_through = greatest(r.sealed_through, $12::int), updated_at = now(),"          \
    "         lease_until = now() + $17::interval"                                                 \
    "   WHERE r.slot_name = $9 AND r.epoch = $16::bigint"                                          \
    "  RETURNING r.slot_name"                                                                      \
    "), o AS ("                                                                                    \
    "  SELECT * FROM unnest($2::bigint[], $3::text[], $4::int[], $5::text[], $6::bigint[],"        \
    "                       $7::pg_lsn[], $14::int[])"                                             \
    "           AS o(job_id, status, attempts, last_error, run_at, lsn, generation)"               \
    "   WHERE status <> 'cancelled' AND EXISTS (SELECT FROM f)"                                    \
    "), d AS (SELECT * FROM unnest($10::bigint[], $13::int[]) AS d(id, generation)"                \
    "   WHERE EXISTS (SELECT FROM f)"                                                              \
    "     AND (NOT EXISTS (SELECT FROM walq.outcome_batches b"                                     \
    "                       WHERE b.group_name = $1 AND b.lsn > $15::pg_lsn"                       \
    "                         AND b.last_id >= $18::bigint AND b.first_id <= $19::bigint)"         \
    "          OR NOT EXISTS (SELECT 1 FROM walq.outcome_batches b"                                \
    "                          WHERE b.group_name = $1 AND b.lsn > $15::pg_lsn"                    \
    "                            AND b.generation = d.generation AND b.last_id >= d.id"            \
    "                            AND b.first_id <= d.id AND d.id = ANY (b.job_ids)))"              \
    "), batch AS ("                                                                                \
    "  INSERT INTO walq.outcome_batches (group_name, first_id, last_id, job_ids, lsn, generation)" \
    "  SELECT $1, min(id), max(id), array_agg(id ORDER BY id), $11::pg_lsn, generation"            \
    "    FROM d GROUP BY generation"                                                               \
    "), fix AS ("                                                                                  \
    "  UPDATE walq.outcomes t SET status = 'done', attempts = 1, last_error = NULL,"               \
    "         run_at = NULL, updated_at = now()"                                                   \
    "   WHERE t.group_name = $1 AND t.job_id BETWEEN $18::bigint AND $19::bigint"                  \
    "     AND t.status IN ('queued', 'scheduled') AND t.job_id IN (SELECT id FROM d)"              \
    "), up AS ("                                                                                   \
    "  INSERT INTO walq.outcomes AS t (group_name, job_id, status, attempts, last_error, run_at,"  \
    "                                  lsn, generation)"                                           \
    "  SELECT $1, o.job_id, o.status, o.attempts, o.last_error,"                                   \
    "         timestamptz 'epoch' + o.run_at * interval '1 microsecond', o.lsn, o.generation"      \
    "    FROM o"                                                                                   \
    "  ON CONFLICT (group_name, job_id, generation) DO UPDATE"                                     \
    "     SET status = excluded.status, attempts = excluded.attempts,"                             \
    "         last_error = excluded.last_error, run_at = excluded.run_at, updated_at = now()"      \
    "   WHERE t.status NOT IN ('done', 'dead', 'cancelled')"

#define ACK_CURSOR ") SELECT count(*) FROM f"

static const char ack_sql[] = ACK_OUTCOMES ACK_CURSOR;

/* The same, for a batch with jobs that hold dedup keys; it costs more. */
static const char ack_dedup_sql[] = ACK_OUTCOMES
    "  RETURNING t.job_id, t.status"
    "), released AS ("
    "  DELETE FROM walq.dedup_keys d USING up"
    "   WHERE d.job_id = up.job_id AND up.status IN ('done', 'dead')"
    "     AND NOT EXISTS (SELECT 1 FROM walq.jobs j"
    "                       JOIN walq.groups g ON j.queue = ANY (g.queues) AND g.name <> $1"
    "                      WHERE j.id = up.job_id"
    "                        AND walq.status_in(g.name, j.id) NOT IN ('done', 'dead', "
    "'cancelled'))" ACK_CURSOR;

int walq__ack_add(walq__ack *a, walq__job *job)
{
    if (job->pending_idx >= 0)
        return 0;
    if (a->n == a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 256;
        walq__job **jobs = realloc(a->jobs, cap * sizeof(*jobs));

        if (jobs == NULL)
            return walq__error(WALQ_ENOMEM, NULL, "out of memory");
        a->jobs = jobs;
        a->cap = cap;
    }
    if (a->n == 0)
        a->oldest = walq__mono_us();
    job->pending_idx = (int)a->n;
    a->jobs[a->n++] = job;
    return 0;
}

static const char *status_name(walq__status st)
{
    switch (st) {
    case WALQ__ST_SCHEDULED:
        return "scheduled";
    case WALQ__ST_DONE:
        return "done";
    case WALQ__ST_DEAD:
        return "dead";
    case WALQ__ST_CANCELLED:
        return "cancelled";
    case WALQ__ST_NONE:
        break;
    }
    return "queued";
}

/* Appends v in decimal: the batch formats thousands of ids. */
static int put_i64(walq__buf *b, const char *sep, int64_t v)
{
    char tmp[24], *p = tmp + sizeof(tmp);
    uint64_t u = v < 0 ? 0 - (uint64_t)v : (uint64_t)v;
    size_t seplen = *sep ? 1 : 0;

    do {
        *--p = (char)('0' + u % 10);
        u /= 10;
    } while (u != 0);
    if (v < 0)
        *--p = '-';
    if (walq__buf_reserve(b, seplen + (size_t)(tmp + sizeof(tmp) - p)) != 0)
        return -1;
    if (seplen)
        b->data[b->len++] = *sep;
    memcpy(b->data + b->len, p, (size_t)(tmp + sizeof(tmp) - p));
    b->len += (size_t)(tmp + sizeof(tmp) - p);
    b->data[b->len] = '\0';
    return 0;
}

/* Batch ids by generation, then id: each generation's row is one run. */
static int cmp_done(const void *x, const void *y)
{
    const walq__ack_done *a = x, *b = y;

    if (a->generation != b->generation)
        return (a->generation > b->generation) - (a->generation < b->generation);
    return (a->id > b->id) - (a->id < b->id);
}

/*
 * Whether a job's outcome goes into the batch row: done at the first try
 * (a row keeps the attempts of one that retried, even when its retry's
 * record was overtaken by the success before it was written), with no row
 * in walq.outcomes that it must overwrite and no dedup key to release.
 */
static int batched(const walq__job *j)
{
    return j->pending == WALQ__ST_DONE && j->pending_attempts == 1 && !j->has_row && !j->has_dedup;
}

/*
 * The two statements are prepared once per session: planning the CTEs
 * costs the primary as much as running one with a small batch.  A new
 * session (another PGconn, or the same address reused after a reconnect:
 * the backend pid tells) prepares them again.  Through a pooler a prepared
 * statement would stay with a server session that other clients get next
 * (and this one may not): each ack is parsed and planned anew there.
 */
static const char *const ack_names[2] = {"walq_ack", "walq_ack_dedup"};
static const char *const ack_sqls[2] = {ack_sql, ack_dedup_sql};

/*
 * Through a pooler, what the session settings give a direct connection is
 * set for the ack's transaction alone, by a statement in the same pipeline
 * (one implicit transaction, one round trip): the server ends the ack first
 * when it runs or waits for a lock longer than the consumer waits for its
 * answer, so that an ack given up for lost does not commit later, beside
 * the one sent again.  Its commit waits for the WAL to be flushed.
 */
static const char ack_settings_sql[] =
    "SELECT set_config('statement_timeout', $1, true), set_config('lock_timeout', $1, true),"
    " set_config('synchronous_commit', 'on', true)";

static int prepare(walq__ack *a, PGconn *primary)
{
    const char *const *sqls = ack_sqls;

    if (a->pooled)
        return 0;
    if (a->prepared_conn == primary && a->prepared_pid == PQbackendPID(primary))
        return 0;
    for (int i = 0; i < 2; i++) {
        PGresult *res = NULL;
        int rc = PQsendPrepare(primary, ack_names[i], sqls[i], WALQ__ACK_PARAMS, NULL)
                     ? walq__finish_query(primary, &res, "prepare the ack statement")
                     : walq__query_result(primary, NULL, &res, "prepare the ack statement");

        if (rc != 0)
            return rc;
        PQclear(res);
    }
    a->prepared_conn = primary;
    a->prepared_pid = PQbackendPID(primary);
    return 0;
}

/* Builds the batch's parameters; *which is the statement to run them with. */
static int build(walq__ack *a, const char *group, const char *slot, uint64_t cursor, uint64_t known,
                 int32_t sealed_through, const char *params[WALQ__ACK_PARAMS], int *which)
{
    walq__buf *arrays[] = {&a->ids,  &a->statuses, &a->attempts,  &a->errors, &a->run_ats,
                           &a->lsns, &a->done_ids, &a->done_gens, &a->gens};
    char lsn[WALQ__LSN_BUFSZ];
    uint64_t done_lsn = 0;
    size_t ndone = 0, nrows = 0;
    int rc = 0, dedup = 0;

    if (a->n > a->done_cap) {
        walq__ack_done *ids = realloc(a->done, a->n * sizeof(*ids));

        if (ids == NULL)
            return walq__error(WALQ_ENOMEM, NULL, "out of memory");
        a->done = ids;
        a->done_cap = a->n;
    }
    for (size_t i = 0; i < WALQ__ARRAY_SIZE(arrays); i++) {
        walq__buf_reset(arrays[i]);
        rc |= walq__buf_puts(arrays[i], "{");
    }
    for (size_t i = 0; i < a->n && rc == 0; i++) {
        walq__job *j = a->jobs[i];
        const char *sep = nrows ? "," : "";

        if (batched(j)) {
            a->done[ndone].id = j->id;
            a->done[ndone++].generation = j->generation;
            if (j->lsn > done_lsn)
                done_lsn = j->lsn;
            continue;
        }
        /* From now on the job has a row, which later outcomes update. */
        j->has_row = 1;
        nrows++;
        dedup |= j->has_dedup && (j->pending == WALQ__ST_DONE || j->pending == WALQ__ST_DEAD);
        rc |= put_i64(&a->ids, sep, j->id);
        rc |= walq__buf_printf(&a->statuses, "%s%s", sep, status_name(j->pending));
        /* Those of the outcome: the job may be running its next attempt by now. */
        rc |= put_i64(&a->attempts, sep, j->pending_attempts);
        rc |= walq__buf_puts(&a->errors, sep);
        rc |= walq__buf_array_elem(&a->errors, j->last_error);
        if (j->pending == WALQ__ST_SCHEDULED)
            rc |= put_i64(&a->run_ats, sep, j->run_at);
        else
            rc |= walq__buf_printf(&a->run_ats, "%sNULL", sep);
        rc |= walq__buf_printf(&a->lsns, "%s%s", sep, walq__lsn_format(j->lsn, lsn));
        rc |= put_i64(&a->gens, sep, j->generation);
    }
    if (ndone > 1)
        qsort(a->done, ndone, sizeof(*a->done), cmp_done);
    for (size_t i = 0; i < ndone && rc == 0; i++) {
        rc |= put_i64(&a->done_ids, i ? "," : "", a->done[i].id);
        rc |= put_i64(&a->done_gens, i ? "," : "", a->done[i].generation);
    }
    for (size_t i = 0; i < WALQ__ARRAY_SIZE(arrays); i++)
        rc |= walq__buf_puts(arrays[i], "}");
    if (rc != 0)
        return walq__error(WALQ_ENOMEM, NULL, "out of memory");

    params[0] = group;
    for (size_t i = 0; i < 6; i++)
        params[i + 1] = arrays[i]->data;
    params[7] = walq__lsn_format(cursor, a->cursor_text);
    params[8] = slot;
    params[9] = a->done_ids.data;
    params[10] = walq__lsn_format(done_lsn, a->done_lsn_text);
    snprintf(a->sealed_text, sizeof(a->sealed_text), "%ld", (long)sealed_through);
    params[11] = a->sealed_text;
    params[12] = a->done_gens.data;
    params[13] = a->gens.data;
    params[14] = walq__lsn_format(known, a->known_text);
    snprintf(a->epoch_text, sizeof(a->epoch_text), "%lld", (long long)a->epoch);
    params[15] = a->epoch_text;
    params[16] = a->lease;
    snprintf(a->lo_text, sizeof(a->lo_text), "%lld", ndone ? (long long)a->done[0].id : 0LL);
    params[17] = a->lo_text;
    snprintf(a->hi_text, sizeof(a->hi_text), "%lld",
             ndone ? (long long)a->done[ndone - 1].id : -1LL);
    params[18] = a->hi_text;
    *which = dedup;
    return 0;
}

/*
 * Sends the statement: prepared on a direct connection; through a pooler,
 * with its settings, in a pipeline.  A pipeline sent in part leaves the
 * connection in no state to go on with: that is a lost connection.
 */
static int send_ack(walq__ack *a, PGconn *primary, int which,
                    const char *const params[WALQ__ACK_PARAMS])
{
    const char *settings[1] = {a->timeout_text};
    char msg[512];

    a->fenced = 0;
    if (!a->pooled) {
        a->piped = 0;
        if (PQsendQueryPrepared(primary, ack_names[which], WALQ__ACK_PARAMS, params, NULL, NULL, 0))
            return 0;
        return walq__error(walq__conn_failed(primary, NULL) ? WALQ_ECONN : WALQ_EQUERY, NULL,
                           "could not send outcomes: %s",
                           walq__pg_message(primary, NULL, msg, sizeof(msg)));
    }
    a->piped = 1;
    if (PQenterPipelineMode(primary) &&
        PQsendQueryParams(primary, ack_settings_sql, 1, NULL, settings, NULL, NULL, 0) &&
        PQsendQueryParams(primary, ack_sqls[which], WALQ__ACK_PARAMS, NULL, params, NULL, NULL,
                          0) &&
        PQpipelineSync(primary))
        return 0;
    return walq__error(WALQ_ECONN, NULL, "could not send outcomes: %s",
                       walq__pg_message(primary, NULL, msg, sizeof(msg)));
}

/* Keeps the statement's first failed result, else its last. */
static void keep(walq__ack *a, PGresult *r)
{
    ExecStatusType st = PQresultStatus(a->kept);

    if (a->kept != NULL && st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
        PQclear(r);
        return;
    }
    PQclear(a->kept);
    a->kept = r;
}

/*
 * Takes the statement's results that are in without waiting: 1 once the
 * last is (the pipeline's end, through a pooler).
 */
static int take_results(walq__ack *a, PGconn *primary)
{
    while (!PQisBusy(primary)) {
        PGresult *r = PQgetResult(primary);

        if (r == NULL) {
            /* In a pipeline, the end of one statement's results. */
            if (!a->piped || PQstatus(primary) == CONNECTION_BAD)
                return 1;
            continue;
        }
        if (PQresultStatus(r) == PGRES_PIPELINE_SYNC) {
            PQclear(r);
            return 1;
        }
        keep(a, r);
        if (PQstatus(primary) == CONNECTION_BAD)
            return 1;
    }
    return 0;
}

/* The statement is over: what it did. */
static int finish_ack(walq__ack *a, PGconn *primary)
{
    PGresult *res, *r = a->kept;
    int rc;

    a->kept = NULL;
    /* A pipeline that cannot end (its results not all in) leaves the connection unusable. */
    if (a->piped && PQstatus(primary) == CONNECTION_OK && !PQexitPipelineMode(primary)) {
        PQclear(r);
        r = NULL;
    }
    a->piped = 0;
    rc = walq__query_result(primary, r, &res, "record outcomes");
    if (rc == 0 && PQntuples(res) == 1 && strcmp(PQgetvalue(res, 0, 0), "0") == 0) {
        a->fenced = 1;
        rc = walq__error(WALQ_EBUSY, NULL,
                         "could not record outcomes: another process took the reader over");
    }
    PQclear(res);
    return rc;
}

/* Waits for the rest of the statement's results, within the thread's waiter's bounds. */
static int wait_ack(walq__ack *a, PGconn *primary)
{
    for (;;) {
        int rc = walq__wait_result(primary, "record outcomes");

        if (rc != 0) {
            PQclear(a->kept);
            a->kept = NULL;
            a->piped = 0;
            return rc;
        }
        if (take_results(a, primary))
            return finish_ack(a, primary);
    }
}

int walq__ack_flush(walq__ack *a, PGconn *primary, const char *group, const char *slot,
                    uint64_t cursor, uint64_t known, int32_t sealed_through)
{
    const char *params[WALQ__ACK_PARAMS];
    int which, rc = prepare(a, primary);

    if (rc == 0)
        rc = build(a, group, slot, cursor, known, sealed_through, params, &which);
    if (rc == 0)
        rc = send_ack(a, primary, which, params);
    return rc ? rc : wait_ack(a, primary);
}

int walq__ack_send(walq__ack *a, PGconn *primary, const char *group, const char *slot,
                   uint64_t cursor, uint64_t known, int32_t sealed_through)
{
    const char *params[WALQ__ACK_PARAMS];
    walq__job **jobs;
    size_t cap;
    int which, rc = prepare(a, primary);

    if (rc == 0)
        rc = build(a, group, slot, cursor, known, sealed_through, params, &which);
    if (rc == 0)
        rc = send_ack(a, primary, which, params);
    if (rc != 0)
        return rc;
    /* The batch is on its way; the next one gathers in the other array. */
    for (size_t i = 0; i < a->n; i++)
        a->jobs[i]->pending_idx = -1;
    jobs = a->sent;
    cap = a->sentcap;
    a->sent = a->jobs;
    a->sentcap = a->cap;
    a->nsent = a->n;
    a->jobs = jobs;
    a->cap = cap;
    a->n = 0;
    a->sent_cursor = cursor;
    a->sent_sealed_through = sealed_through;
    a->sent_at = walq__mono_us();
    a->inflight = 1;
    return 0;
}

int walq__ack_poll(walq__ack *a, PGconn *primary, int *finished)
{
    *finished = 0;
    if (!a->inflight)
        return 0;
    /* A connection that does not block may hold part of the statement still. */
    if (PQflush(primary) < 0 || !PQconsumeInput(primary) || take_results(a, primary)) {
        *finished = 1;
        a->inflight = 0;
        return finish_ack(a, primary);
    }
    return 0;
}

int walq__ack_wait(walq__ack *a, PGconn *primary)
{
    if (!a->inflight)
        return 0;
    a->inflight = 0;
    return wait_ack(a, primary);
}

void walq__ack_requeue(walq__ack *a)
{
    for (size_t i = 0; i < a->nsent; i++) {
        /* A newer outcome of the job, gathered meanwhile, wins. */
        if (walq__ack_add(a, a->sent[i]) != 0)
            break;
    }
    a->nsent = 0;
}

void walq__ack_free(walq__ack *a)
{
    walq__buf *arrays[] = {&a->ids,  &a->statuses, &a->attempts,  &a->errors, &a->run_ats,
                           &a->lsns, &a->done_ids, &a->done_gens, &a->gens};

    free(a->done);
    a->done = NULL;
    a->done_cap = 0;
    free(a->jobs);
    free(a->sent);
    a->jobs = a->sent = NULL;
    a->n = a->cap = a->nsent = a->sentcap = 0;
    a->inflight = 0;
    PQclear(a->kept);
    a->kept = NULL;
    for (size_t i = 0; i < WALQ__ARRAY_SIZE(arrays); i++)
        walq__buf_free(arrays[i]);
}
