/* The outcome horizon: marks from the stream, and the next command. */
#include "horizon.h"

#include <stdlib.h>
#include <string.h>

/* How often a reader makes a horizon command while jobs flow. */
#define MARK_INTERVAL_US 1000000
/* How soon it looks again while a producer's transaction holds the command back. */
#define MARK_RETRY_US 50000

void walq__horizon_drop_command(walq__horizon *hz)
{
    free(hz->mark_lockers);
    hz->mark_lockers = NULL;
    hz->mark_pending = 0;
}

void walq__horizon_forget(walq__horizon *hz)
{
    walq__horizon_drop_command(hz);
    hz->nmarks = 0;
}

void walq__horizon_free(walq__horizon *hz)
{
    walq__horizon_forget(hz);
}

void walq__horizon_reset(walq__horizon *hz)
{
    hz->done_below = hz->done_below_written = 0;
    hz->nmarks = 0;
}

void walq__horizon_note(walq__horizon *hz, uint64_t lsn, int64_t last_id)
{
    /* Full: the newest takes the last place, which only delays that one. */
    if (hz->nmarks == WALQ__ARRAY_SIZE(hz->marks))
        hz->nmarks--;
    hz->marks[hz->nmarks].lsn = lsn;
    hz->marks[hz->nmarks].last_id = last_id;
    hz->nmarks++;
}

/*
 * Commands the cursor has passed: every job up to theirs came before them in
 * the stream, and has an outcome in this ack or an earlier one.
 */
void walq__horizon_pass(walq__horizon *hz, uint64_t safe_lsn)
{
    size_t k = 0;

    while (k < hz->nmarks && hz->marks[k].lsn <= safe_lsn) {
        if (hz->marks[k].last_id >= hz->done_below)
            hz->done_below = hz->marks[k].last_id + 1;
        k++;
    }
    if (k > 0) {
        memmove(hz->marks, hz->marks + k, (hz->nmarks - k) * sizeof(hz->marks[0]));
        hz->nmarks -= k;
    }
}

int walq__horizon_unwritten(const walq__horizon *hz)
{
    return hz->done_below > hz->done_below_written;
}

void walq__horizon_written(walq__horizon *hz, int64_t done_below)
{
    if (done_below > hz->done_below_written) {
        hz->done_below_written = done_below;
        hz->compact_due = 1;
    }
}

int walq__horizon_due(walq__horizon *hz, int64_t now, uint64_t activity)
{
    if (!hz->enabled || now < hz->next_mark)
        return 0;
    hz->next_mark = now + MARK_INTERVAL_US;
    return hz->compact_due || hz->mark_pending || activity != hz->mark_activity;
}

int walq__horizon_step(walq__horizon *hz, const walq__registry *rg, PGconn *primary)
{
    int rc, made = 0;

    if (!hz->mark_pending) {
        rc = walq__reg_horizon_begin(primary, hz->mark_last_id, &hz->mark_lockers);
        if (rc != 0 || hz->mark_last_id[0] == '\0')
            return rc; /* no job was ever published */
        hz->mark_pending = 1;
    }
    rc = walq__reg_horizon_mark(rg, primary, hz->mark_last_id, hz->mark_lockers, &made);
    if (rc == 0 && made)
        walq__horizon_drop_command(hz);
    return rc;
}

int walq__horizon_compact(walq__horizon *hz, const walq__registry *rg, PGconn *primary)
{
    int rc;

    if (!hz->compact_due)
        return 0;
    rc = walq__reg_compact(rg, primary);
    if (rc == 0)
        hz->compact_due = 0;
    return rc;
}

int walq__horizon_tick(walq__horizon *hz, const walq__registry *rg, PGconn *primary, int64_t now,
                       uint64_t activity)
{
    int rc = walq__horizon_compact(hz, rg, primary);

    if (rc != 0)
        return rc;
    if (hz->mark_pending || activity != hz->mark_activity) {
        hz->mark_activity = activity;
        rc = walq__horizon_step(hz, rg, primary);
        /* A producer's transaction still runs: look again soon. */
        if (rc == 0 && hz->mark_pending)
            hz->next_mark = now + MARK_RETRY_US;
    }
    return rc;
}
