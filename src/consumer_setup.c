/*
 * The consumer's set-up (consumer_int.h): the primary's session and the
 * source's, the reader's row (taken, or waited for behind another
 * process), the slot and its plugin, the publication, and then either the
 * stream resumed from the cursor or the group resynchronized from
 * walq.jobs.
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

/* A standby creating a slot waits for the primary to log its running transactions. */
static void log_standby_snapshot(void *arg)
{
    walq_consumer *c = arg;

    walq__consumer_watch_again(c);
    if (c->pconn != NULL)
        walq__reg_standby_snapshot(c->pconn, &c->log);
}

/* The primary's session and the source's, both checked; *source_id names the source. */
static int connect_both(walq_consumer *c, char *source_id, size_t len)
{
    walq__source_info src;
    int rc, pooled = 0;

    rc = walq__consumer_connect_primary_session(c);
    if (rc == 0)
        rc = walq__schema_check(c->pconn);
    if (rc == 0 && c->sql != NULL)
        rc = walq__reg_check_sql(c->pconn, c->sql);
    if (rc == 0)
        rc = walq__consumer_connect_session(c, &c->sconn, c->source, &pooled);
    if (rc == 0 && pooled) {
        char name[128];

        rc = walq__error(WALQ_EINVAL,
                         "Replication does not go through a connection pooler: give --source the "
                         "server's own address.  --primary may go through one.",
                         "the source \"%s\" is reached through a connection pooler",
                         walq__conn_name(c->sconn, name, sizeof(name)));
    }
    if (rc == 0)
        rc = walq__source_check(c->sconn, &src);
    if (rc == 0)
        rc = walq__source_system_id(c->sconn, source_id, len);
    if (rc == 0) {
        char primary_id[32];

        rc = walq__source_system_id(c->pconn, primary_id, sizeof(primary_id));
        c->pub_seen = rc == 0 && strcmp(primary_id, source_id) == 0;
    }
    if (rc == 0) {
        c->reached = 1;
        /* As found now: a standby promoted since the last set-up is not one. */
        c->standby = c->rg.standby = src.standby;
    }
    if (rc == 0 && src.standby) {
        char name[128];

        walq__info(&c->log, "the source \"%s\" is a hot standby; acks go to the primary",
                   walq__conn_name(c->sconn, name, sizeof(name)));
    }
    return rc;
}

/*
 * A lease held by a process of this host that is gone (killed, say) need
 * not run out: its slot, once no walsender serves it, says that nothing
 * reads for it any more.
 */
static int holder_gone(walq_consumer *c, const walq__reg_lock *lk)
{
    char host[128] = "";
    const char *pid = strrchr(lk->holder, ' ');
    size_t hostlen = strlen(lk->holder) - (pid ? strlen(pid) : 0);
    walq__slot_info si;

    gethostname(host, sizeof(host) - 1);
    if (pid == NULL || hostlen < 4 || strncmp(lk->holder + hostlen - 4, " pid", 4) != 0 ||
        strlen(host) != hostlen - 4 || strncmp(lk->holder, host, hostlen - 4) != 0)
        return 0;
    if (kill((pid_t)strtol(pid + 1, NULL, 10), 0) == 0 || errno != ESRCH)
        return 0;
    return walq__reader_slot(&c->rd, c->sconn, &si) == 0 && !si.active;
}

/*
 * Waits until this process holds the reader: while another consumer of the
 * same group and partition runs, this one stands by and takes over when
 * that one's session ends, or its lease runs out.  Returns 0 with a stop
 * asked if asked to stop while waiting.
 */
static int take_reader(walq_consumer *c, const char *source_id, walq__reg_reader *rs)
{
    walq__reg_lock lk;
    int rc, waited = 0;

    for (;;) {
        rc = walq__reg_try_lock(&c->rg, c->pconn, c->pooled, c->epoch, &lk);
        if (rc == 0 && !lk.got && lk.leased && holder_gone(c, &lk)) {
            walq__info(&c->log, "the reader's holder, %s, is gone", lk.who);
            lk.got = 1;
        }
        if (rc == 0 && lk.got)
            rc = walq__reg_take_over(&c->rg, c->pconn, c->sconn, source_id, lk.epoch,
                                     c->pooled ? c->lease_text : NULL, rs);
        /* Another process took it first; a lock taken meanwhile holds nothing. */
        if (rc == 0 && lk.got && rs->lost && !c->pooled)
            rc = walq__reg_unlock(&c->rg, c->pconn);
        if (rc != 0 || (lk.got && !rs->lost))
            break;
        if (!waited && !lk.got)
            walq__info(&c->log, "the reader is held by %s; standing by to take over", lk.who);
        waited |= !lk.got;
        walq__consumer_watch_state(c, lk.got ? WALQ_STATE_STARTING : WALQ_STATE_STANDBY);
        if (walq__reader_nap(&c->rd, walq__consumer_nap_ms(c, 500)))
            return 0;
    }
    if (rc == 0) {
        c->epoch = rs->epoch;
        c->ack.epoch = rs->epoch;
        walq__consumer_lease_renewed(c, walq__mono_us());
    }
    if (rc == 0 && waited)
        walq__info(&c->log, "took the reader over");
    return rc;
}

/*
 * The slot may still be held a moment by the walsender of a consumer that
 * just died (or held by something else altogether): wait for it.
 */
static int wait_for_slot(walq_consumer *c, walq__slot_info *si)
{
    int rc, warned = 0;

    for (;;) {
        rc = walq__reader_slot(&c->rd, c->sconn, si);
        if (rc != 0 || !si->active)
            return rc;
        if (!warned)
            walq__warn(&c->log, "replication slot \"%s\" is still in use by process %s; waiting",
                       c->slot, si->active_pid);
        warned = 1;
        walq__consumer_watch_state(c, WALQ_STATE_STARTING);
        if (walq__reader_nap(&c->rd, walq__consumer_nap_ms(c, 500)))
            return 0;
    }
}

/* The publication of a reader on pgoutput. */
static walq__pub_spec pub_spec(const walq_consumer *c)
{
    return (walq__pub_spec){c->slot,      c->group,           (const char *const *)c->queues,
                            c->o.nqueues, c->route.partition, c->route.partitions};
}

/*
 * The publication is made (or redefined) before the slot: pgoutput reads it
 * as the catalog was when each transaction committed.  A standby cannot
 * take it, so the primary does, and the slot waits until the standby has
 * replayed it.
 */
static int define_publication(walq_consumer *c)
{
    walq__pub_spec spec = pub_spec(c);
    PGconn *conn = c->standby ? c->pconn : c->sconn;
    char lsn[WALQ__LSN_BUFSZ];
    uint64_t made = 0, replayed = 0;
    int rc = walq__pub_define(conn, &spec);

    if (rc != 0 || !c->standby)
        return rc;
    rc = walq__source_wal_lsn(c->pconn, &made);
    for (int i = 0; rc == 0; i++) {
        rc = walq__source_wal_lsn(c->sconn, &replayed);
        if (rc != 0 || replayed >= made)
            break;
        if (i == 20)
            walq__warn(&c->log, "waiting for the standby to replay publication \"%s\" (at %s)",
                       c->slot, walq__lsn_format(made, lsn));
        if (walq__reader_nap(&c->rd, 100))
            return walq__error(WALQ_ECONN, NULL, "stopped while waiting for the standby");
    }
    return rc;
}

/*
 * Creates the slot afresh and reads, from the snapshot of its consistent
 * point, every job of the group's queues that has no outcome: the table
 * covers what came before the slot and the stream what comes after, without
 * a gap or an overlap.
 */
static int resync(walq_consumer *c, const walq__slot_info *si, uint64_t cursor)
{
    char snapshot[128], lsn[WALQ__LSN_BUFSZ];
    uint64_t consistent;
    int32_t sealed = 0;
    int rc = 0;

    rc = walq__reg_resync_begins(&c->rg, c->pconn);
    if (rc == 0 && si->exists)
        rc = walq__reader_drop_slot(&c->rd);
    if (rc == 0 && c->rd.pgoutput)
        rc = define_publication(c);
    if (rc == 0)
        rc = walq__reader_create_slot(&c->rd, &consistent, snapshot, sizeof(snapshot),
                                      c->standby ? log_standby_snapshot : NULL, c);
    if (rc == 0)
        rc = walq__reg_backlog_open(&c->rg, c->sconn, snapshot);
    if (rc == 0)
        rc = walq__reg_snapshot_seal(c->sconn, &sealed);
    if (rc == 0)
        rc = walq__reg_new_slot(&c->rg, c->pconn, consistent);
    if (rc != 0)
        return rc;
    /*
     * The generations sealed before the snapshot are in the backlog whole:
     * they are passed once the backlog is recorded.
     */
    walq__seals_reset(&c->seals);
    walq__seals_note(&c->seals, consistent, sealed);
    c->bf_txn = walq__txnq_open(&c->txq, consistent);
    if (c->bf_txn == NULL)
        return walq__error(WALQ_ENOMEM, NULL, "out of memory");
    c->backfilling = 1;
    c->sync_end = consistent;
    c->txq.safe_lsn = cursor < consistent ? cursor : consistent;
    walq__reader_skip_to(&c->rd, consistent);
    walq__info(&c->log, "created slot \"%s\" at %s; reading the backlog from walq.jobs", c->slot,
               walq__lsn_format(consistent, lsn));
    return 0;
}

/* The slot is whole and the cursor synced: stream from where it stopped. */
static int resume(walq_consumer *c, const walq__slot_info *si, uint64_t cursor)
{
    char lsn[WALQ__LSN_BUFSZ];
    uint64_t from = cursor > si->confirmed ? cursor : si->confirmed;
    int64_t *ids;
    size_t n;
    int rc;

    walq__reader_resume_at(&c->rd, from);
    c->txq.safe_lsn = from;
    rc = walq__reg_skips(&c->rg, c->pconn, cursor, &ids, &n);
    if (rc != 0)
        return rc;
    walq__route_set_skip(&c->route, ids, n);
    walq__debug(&c->log, "cursor %s, %zu jobs already recorded beyond it",
                walq__lsn_format(cursor, lsn), n);
    return 0;
}

/*
 * A slot that exists keeps its plugin, and naming another is an error; a
 * new one is made with the plugin asked for, pgoutput when none is.
 */
static int choose_plugin(walq_consumer *c, const walq__slot_info *si)
{
    int asked = c->plugin[0] != '\0' && strcmp(c->plugin, "auto") != 0;

    if (!si->exists) {
        walq__reader_use_plugin(&c->rd, asked ? c->plugin : "pgoutput");
        return 0;
    }
    if (strcmp(si->plugin, "wal2json") != 0 && strcmp(si->plugin, "pgoutput") != 0)
        return walq__error(WALQ_ESLOT, "Drop the slot, or choose another group name.",
                           "replication slot \"%s\" exists but uses plugin \"%s\"; walq reads "
                           "pgoutput and wal2json",
                           c->slot, si->plugin);
    if (asked && strcmp(si->plugin, c->plugin) != 0) {
        char hint[512];

        snprintf(hint, sizeof(hint),
                 "Run without --plugin (or with --plugin %s) to go on reading it. To move the "
                 "group to %s, stop its consumers and drop the slot (SELECT "
                 "pg_drop_replication_slot('%s')): the next walq consume makes it with %s and "
                 "reads the group's unfinished jobs from walq.jobs.",
                 si->plugin, c->plugin, c->slot, c->plugin);
        return walq__error(WALQ_EINVAL, hint,
                           "replication slot \"%s\" was made with plugin %s, not %s", c->slot,
                           si->plugin, c->plugin);
    }
    walq__reader_use_plugin(&c->rd, si->plugin);
    return 0;
}

/* Resumes the slot, or resynchronizes from the table when it cannot. */
static int start_reading(walq_consumer *c, const walq__slot_info *si, const walq__reg_reader *rs)
{
    int synced = rs->cursor >= rs->sync_lsn;
    walq__pub_state pub = WALQ__PUB_OK;
    int rc = choose_plugin(c, si);

    if (rc != 0)
        return rc;
    if (c->standby && si->exists && si->synced)
        return walq__error(WALQ_ESLOT,
                           "Read the group from the primary (--source) until it fails over; once "
                           "this standby is promoted, the group reads on from the copy here.",
                           "replication slot \"%s\" on the standby is the copy of the "
                           "primary's failover slot, which PostgreSQL lets nobody read before "
                           "the standby is promoted",
                           c->slot);
    if (c->standby && c->o.failover_slot)
        return walq__error(WALQ_EINVAL,
                           "Give --failover-slot to a group read from the primary; a group read "
                           "from a standby resynchronizes after a failover.",
                           "replication slot \"%s\" cannot be a failover slot: its source is a "
                           "standby, and failover slots live on the primary",
                           c->slot);
    if (c->o.failover_slot && si->exists && !si->lost && !si->failover) {
        rc = walq__reader_set_failover(&c->rd);
        if (rc != 0)
            return rc;
        walq__info(&c->log, "replication slot \"%s\" is a failover slot now", c->slot);
    }
    walq__debug(&c->log, "reading with %s", walq__reader_plugin(&c->rd));
    if (c->rd.pgoutput && si->exists && !si->lost && synced && !rs->queues_changed) {
        walq__pub_spec spec = pub_spec(c);

        rc = walq__pub_check(c->sconn, &spec, &pub);
        if (rc != 0)
            return rc;
        if (pub == WALQ__PUB_MISSING)
            walq__warn(&c->log,
                       "publication \"%s\" of replication slot \"%s\" is missing; making it "
                       "anew and resynchronizing the group from walq.jobs",
                       c->slot, c->slot);
    }
    if (si->exists && !si->lost && synced && !rs->queues_changed && pub == WALQ__PUB_OK)
        return resume(c, si, rs->cursor);
    if (synced && !si->exists)
        walq__warn(&c->log,
                   "replication slot \"%s\" is missing; recreating it and resynchronizing the "
                   "group from walq.jobs",
                   c->slot);
    else if (synced && si->lost)
        walq__warn(&c->log,
                   "replication slot \"%s\" was invalidated; recreating it and resynchronizing "
                   "the group from walq.jobs",
                   c->slot);
    else if (synced && rs->queues_changed)
        walq__info(&c->log, "queues changed; resynchronizing the group from walq.jobs");
    else if (rs->source_changed)
        walq__warn(&c->log,
                   "the reader was last read from another source server; resynchronizing the "
                   "group from walq.jobs (a slot \"%s\" left on the old source holds WAL there "
                   "until it is dropped)",
                   c->slot);
    return resync(c, si, rs->cursor);
}

/* --drain: the end of what is drained is where the source's WAL is now. */
static int prepare_drain(walq_consumer *c)
{
    char lsn[WALQ__LSN_BUFSZ];
    int rc = walq__source_wal_lsn(c->sconn, &c->rd.drain_target);

    if (rc == 0)
        walq__debug(&c->log, "draining up to %s", walq__lsn_format(c->rd.drain_target, lsn));
    return rc;
}

int walq__consumer_setup(walq_consumer *c)
{
    char source_id[32] = "";
    walq__slot_info si;
    walq__reg_reader rs = {0};
    int rc;

    walq__consumer_watch_state(c, WALQ_STATE_STARTING);
    rc = connect_both(c, source_id, sizeof(source_id));
    if (rc == 0)
        rc = take_reader(c, source_id, &rs);
    if (rc == 0 && !c->rd.stop_req)
        rc = wait_for_slot(c, &si);
    if (rc != 0 || c->rd.stop_req)
        return rc;
    rc = walq__reader_connect(&c->rd);
    if (rc == 0)
        rc = start_reading(c, &si, &rs);
    if (rc == 0)
        rc = walq__consumer_load_timers(c, 0, walq__wall_us() + c->sched.cfg.timer_horizon_us);
    if (rc == 0 && c->o.drain)
        rc = prepare_drain(c);
    if (rc == 0 && !c->backfilling) {
        PQfinish(c->sconn);
        c->sconn = NULL;
    }
    return rc;
}
