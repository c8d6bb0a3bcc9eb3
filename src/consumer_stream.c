/*
 * What the reader hands the consumer (consumer_int.h): each transaction's
 * begin and commit, its rows of walq.jobs (routed, then taken in), and its
 * rows of walq.commands, in commit order with the jobs: cancel and retry of
 * a job, the seal of a generation and the horizon (read by the ack).
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "consumer_int.h"
#include "db.h"
#include "lsn.h"
#include "publication.h"

/*
 * A command is checked against what the primary records: the ack in flight
 * settles first, so that the check sees it.  0, or an error (WALQ_ECONN
 * without a primary).
 */
static int primary_settled(walq_consumer *c)
{
    int rc = walq__consumer_settle_acks(c);

    if (rc == 0 && c->pconn == NULL)
        rc = WALQ_ECONN;
    return rc;
}

/*
 * `walq job cancel`: the job, if it is still waiting here, never runs.  The
 * outcome is recorded already; the job only goes through the ack batch to let
 * its transaction go.
 */
static int cancel_job(walq_consumer *c, int64_t id)
{
    walq__job *job = walq__sched_find_waiting(&c->sched, id);
    int rc, cancelled = 1;

    if (job == NULL) {
        walq__info(&c->log, "job %lld cancelled (not waiting here)", (long long)id);
        return 0;
    }
    /*
     * Only a job whose outcome walq.cancel_job recorded is dropped: a
     * replayed command may be stale (a retry can have come after it), and
     * a command is not trusted without its outcome.
     */
    rc = primary_settled(c);
    if (rc != 0)
        return rc;
    rc = walq__reg_cancelled(&c->rg, c->pconn, id, &cancelled);
    if (rc != 0)
        return rc;
    if (!cancelled) {
        walq__info(&c->log,
                   "cancel command for job %lld ignored: its outcome in the group is not "
                   "cancelled (a retry came after it, or walq.cancel_job did not send it)",
                   (long long)id);
        return 0;
    }
    walq__sched_withdraw(&c->sched, job);
    walq__info(&c->log, "job %lld cancelled", (long long)id);
    walq__metrics_job(c->m, job->queue, WALQ__EV_CANCELLED);
    return walq__consumer_record(c, job, WALQ__ST_CANCELLED, NULL);
}

/*
 * `walq job retry`: a dead or cancelled job runs again.  It belongs to the
 * command's transaction, so the cursor does not pass the command before the
 * job's new outcome is recorded.
 */
static int retry_job(walq_consumer *c, const walq__reader_txn *t, int64_t id)
{
    walq__job_row row;
    PGresult *res;
    int rc;

    /* Another reader's, or here already and not finished: it runs once. */
    if (!walq__route_mine(&c->route, id) || walq__sched_has(&c->sched, id))
        return 0;
    rc = primary_settled(c);
    if (rc != 0)
        return rc;
    rc = walq__reg_retried(&c->rg, c->pconn, id, &res);
    if (rc != 0)
        return rc;
    /* Nothing to do if its new outcome is recorded already (a replay). */
    if (PQntuples(res) == 1) {
        walq__reg_job_row(res, 0, &row);
        row.run_at = 0;
        walq__info(&c->log, "job %lld queued again by walq job retry", (long long)id);
        rc = walq__consumer_take(c, &row, c->cur, t->end_lsn, 1);
    } else {
        walq__info(&c->log,
                   "retry command for job %lld ignored: the job is not queued again in the "
                   "group (it ran since, or walq.retry_job did not send the command)",
                   (long long)id);
    }
    PQclear(res);
    return rc;
}

/*
 * A seal: every job of its generation came before it.  A seal of a
 * generation that walq has not closed would let the generation go with
 * jobs unrecorded, so it is checked against the primary's generations
 * first, and one that fails is logged and never acted on.
 */
static int seal_noted(walq_consumer *c, const walq__reader_txn *t, int64_t generation)
{
    int64_t opened = 0;
    int rc, valid = 0;

    /* An ack may be in flight on the primary's connection. */
    rc = primary_settled(c);
    if (rc != 0)
        return rc;
    rc = walq__reg_seal_valid(c->pconn, generation, &valid, &opened);
    if (rc != 0)
        return rc;
    if (!valid) {
        walq__warn(&c->log,
                   "seal command for generation %lld ignored: the current generation is %lld, "
                   "and only closed ones are sealed",
                   (long long)generation, (long long)opened);
        return 0;
    }
    walq__seals_note(&c->seals, t->end_lsn, (int32_t)generation);
    return 0;
}

static int on_command(walq_consumer *c, const walq__reader_txn *t, const walq__change *ch)
{
    const walq__value *group = walq__change_column(ch, "group_name");
    const walq__value *id = walq__change_column(ch, "job_id");
    const walq__value *action = walq__change_column(ch, "action");

    if (group == NULL || group->kind != WALQ__V_STR || strcmp(group->str, c->group) != 0)
        return 0;
    if (id == NULL || id->kind != WALQ__V_INT || action == NULL || action->kind != WALQ__V_STR)
        return walq__error(WALQ_EDECODE, NULL, "unreadable row in walq.commands");
    if (strcmp(action->str, "cancel") == 0)
        return cancel_job(c, id->i);
    if (strcmp(action->str, "retry") == 0)
        return retry_job(c, t, id->i);
    if (strcmp(action->str, "seal") == 0)
        return seal_noted(c, t, id->i);
    /* The outcome horizon's commands, from before generations. */
    if (strcmp(action->str, "horizon") == 0)
        return 0;
    walq__warn(&c->log, "unknown command \"%s\" for job %lld ignored", action->str,
               (long long)id->i);
    return 0;
}

/* ------------------------------------------------------------------ */
/* What the reader hands over                                          */

static int on_begin(void *arg, const walq__reader_txn *t)
{
    walq_consumer *c = arg;

    c->cur = walq__txnq_open(&c->txq, t->end_lsn);
    return c->cur ? 0 : walq__error(WALQ_ENOMEM, NULL, "out of memory");
}

static int on_row(void *arg, const walq__reader_txn *t, const walq__change *ch, uint64_t wal_start)
{
    walq_consumer *c = arg;
    walq__job_row row;
    int rc;

    (void)wal_start;
    if (ch->action != WALQ__ACT_INSERT || ch->schema == NULL || ch->table == NULL)
        return 0;
    if (strcmp(ch->schema, "walq") == 0 && strcmp(ch->table, "commands") == 0)
        return on_command(c, t, ch);
    /*
     * The stream names the partition of walq.jobs a job went to (the table
     * itself before generations, in WAL written before the upgrade).
     */
    if (strcmp(ch->schema, "walq_jobs") != 0 &&
        !(strcmp(ch->schema, "walq") == 0 && strcmp(ch->table, "jobs") == 0))
        return 0;
    rc = walq__route_job_row(ch, &row);
    /* A job already in memory (a replay after a retry command, say) stays one. */
    if (rc != 0 || !walq__route_takes(&c->route, row.id, row.queue) ||
        walq__sched_has(&c->sched, row.id))
        return rc;
    return walq__consumer_take(c, &row, c->cur, t->end_lsn, 0);
}

static int on_commit(void *arg, const walq__reader_txn *t)
{
    walq_consumer *c = arg;

    (void)t;
    walq__txnq_close(&c->txq, c->cur);
    c->cur = NULL;
    return 0;
}

/* Between transactions: a keepalive may move the cursor when nothing is in flight. */
static int on_idle(void *arg, uint64_t lsn)
{
    walq_consumer *c = arg;

    walq__txnq_idle(&c->txq, lsn);
    return c->txq.head == NULL;
}

/* Too much in memory: the stream waits. */
static int on_paused(void *arg, int in_txn)
{
    walq_consumer *c = arg;

    (void)in_txn;
    return walq__sched_full(&c->sched);
}

const walq__reader_ops walq__consumer_reader_ops = {on_begin, on_row, on_commit, on_idle,
                                                    on_paused};
