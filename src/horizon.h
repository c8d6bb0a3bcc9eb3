/*
 * The outcome horizon (sql/005_outcome_horizon.sql): how far below which
 * every job of the reader has an outcome, learnt from horizon commands that
 * come through the stream after every job up to theirs, and the making of
 * the next command.  Once acked, the group's compaction deletes what is
 * below it.
 */
#ifndef WALQ_HORIZON_H
#define WALQ_HORIZON_H

#include <stddef.h>
#include <stdint.h>
#include <libpq-fe.h>

#include "registry.h"

typedef struct walq__horizon {
    int enabled; /* off with keep_outcomes: no commands, nothing compacted */
    /* Horizon commands seen in the stream and not yet passed by the cursor. */
    struct {
        uint64_t lsn;    /* end of the command's transaction */
        int64_t last_id; /* every job up to it is in the stream before */
    } marks[16];
    size_t nmarks;
    int64_t done_below;         /* every job of the reader below it has an outcome */
    int64_t done_below_written; /* as far as the acks committed so far say */
    int compact_due;            /* done_below_written moved: compact the outcomes */
    /* The next command: walq.horizon_begin() answered, horizon_mark() to come. */
    int mark_pending;
    char mark_last_id[32];
    char *mark_lockers;
    uint64_t mark_activity; /* outcomes recorded when the last command was made */
    int64_t next_mark;
} walq__horizon;

void walq__horizon_free(walq__horizon *hz);

/* A new slot: the horizon starts afresh, for the queues read now. */
void walq__horizon_reset(walq__horizon *hz);

/* Gives up the command being made (a drain that cannot wait for it). */
void walq__horizon_drop_command(walq__horizon *hz);

/* Forgets the marks and the command being made (memory starts over). */
void walq__horizon_forget(walq__horizon *hz);

/* A horizon command for last_id arrived in the transaction ending at lsn. */
void walq__horizon_note(walq__horizon *hz, uint64_t lsn, int64_t last_id);

/*
 * The cursor reached safe_lsn: the commands it passed move done_below, for
 * the next ack to write.
 */
void walq__horizon_pass(walq__horizon *hz, uint64_t safe_lsn);

/* Does done_below need writing? */
int walq__horizon_unwritten(const walq__horizon *hz);

/* An ack that wrote done_below committed. */
void walq__horizon_written(walq__horizon *hz, int64_t done_below);

/*
 * Is a tick due at now, given how many outcomes have been recorded in all
 * (activity)?  About once a second while outcomes are recorded.
 */
int walq__horizon_due(walq__horizon *hz, int64_t now, uint64_t activity);

/*
 * The tick, on an idle primary connection: the compaction of what the last
 * horizon passed, and a step towards the next command.
 */
int walq__horizon_tick(walq__horizon *hz, const walq__registry *rg, PGconn *primary, int64_t now,
                       uint64_t activity);

/*
 * One step towards the next command: step 1 reads the last job id and the
 * transactions that may still hold ids up to it, step 2 (once they ended)
 * inserts the command.  mark_pending stays set until it is inserted.
 */
int walq__horizon_step(walq__horizon *hz, const walq__registry *rg, PGconn *primary);

/* Compacts what the acks let go, if anything. */
int walq__horizon_compact(walq__horizon *hz, const walq__registry *rg, PGconn *primary);

#endif
