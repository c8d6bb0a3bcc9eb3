/*
 * Seals (sql/007_generations.sql): how far the reader's cursor has passed
 * the seal commands of closed generations, each of which comes through the
 * stream after every job of its generation.  The acks write it
 * (walq.readers.sealed_through); a generation goes only once every reader
 * concerned has passed its seal.
 */
#ifndef WALQ_SEAL_H
#define WALQ_SEAL_H

#include <stddef.h>
#include <stdint.h>

typedef struct walq__seals {
    /* Seals seen in the stream (or at a resync) and not yet passed by the cursor. */
    struct {
        uint64_t lsn; /* the end of their transaction, or the consistent point */
        int32_t generation;
    } marks[16];
    size_t nmarks;
    int32_t through; /* the cursor passed the seals up to this generation */
    int32_t written; /* as far as the acks committed so far say */
} walq__seals;

/* A new slot: nothing is passed, until its backlog is recorded. */
void walq__seals_reset(walq__seals *s);

/* Forgets the seals not yet passed (memory starts over). */
void walq__seals_forget(walq__seals *s);

/* A seal of generation arrived; the cursor passes it at lsn. */
void walq__seals_note(walq__seals *s, uint64_t lsn, int32_t generation);

/* The cursor reached safe_lsn: the seals it passed move through. */
void walq__seals_pass(walq__seals *s, uint64_t safe_lsn);

/* Does through need writing? */
int walq__seals_unwritten(const walq__seals *s);

/* An ack that wrote through = generation committed. */
void walq__seals_written(walq__seals *s, int32_t generation);

#endif
