/*
 * The publication a reader on pgoutput is sent its rows through.
 *
 * pgoutput sends the changes of the tables a publication names, and on
 * PostgreSQL 15 and later only the rows its filters pass.  walq makes one
 * per slot, named like the slot: the inserts into walq.jobs of the reader's
 * queues (and partition), and into walq.commands of its group.  The server
 * then sends a reader only its own jobs.  The consumer still checks every
 * row it is sent, so a publication without filters (PostgreSQL 14) only
 * costs bandwidth.
 *
 * The publication is the reader's to keep: it is made or redefined before
 * every new slot, and checked before a slot is read again.  Its comment
 * records the filters as the server printed them when walq set them, so a
 * change made by hand is seen.
 */
#ifndef WALQ_PUBLICATION_H
#define WALQ_PUBLICATION_H

#include <stddef.h>
#include <libpq-fe.h>

typedef struct walq__pub_spec {
    const char *name;  /* the slot's name */
    const char *group; /* the consumer group */
    const char *const *queues;
    size_t nqueues;
    int partition, partitions; /* this reader's part of the group; 0 of 1: all */
} walq__pub_spec;

/*
 * Makes the publication, or redefines the one there, on a server that takes
 * writes (the source, or the primary of a standby source).  Errors name the
 * fix: a publication owned by another role, a role that may not make one.
 */
int walq__pub_define(PGconn *conn, const walq__pub_spec *spec);

/* What walq__pub_check found. */
typedef enum walq__pub_state {
    WALQ__PUB_OK = 0,
    WALQ__PUB_MISSING /* not there: the slot cannot be read, the group is read again */
} walq__pub_state;

/*
 * Checks the publication on the source before its slot is read again.
 * WALQ__PUB_OK or WALQ__PUB_MISSING in *state; an error (WALQ_ESERVER) for
 * one changed by hand or owned by another role, saying what differs and
 * how to put it right.
 */
int walq__pub_check(PGconn *conn, const walq__pub_spec *spec, walq__pub_state *state);

/*
 * Whether the publication is there, cheaply, for a reader that streams:
 * PostgreSQL 18 skips a publication that went away instead of ending the
 * stream, so a reader checks now and then.
 */
int walq__pub_exists(PGconn *conn, const char *name, int *exists);

#endif
