/*
 * Decoder of the binary messages of PostgreSQL's built-in pgoutput plugin
 * (the logical replication protocol, proto_version 1), into the same
 * walq__change that the wal2json decoder (decode.h) fills, so that the reader
 * can take either.
 *
 * pgoutput describes each table once per session with a Relation message and
 * then refers to it by OID, so the decoder keeps those descriptions.  What it
 * reports is what the protocol says; in particular a Begin carries the commit
 * record's start (lsn) but not its end (next_lsn is 0), and no change but a
 * Begin carries a transaction ID.
 */
#ifndef WALQ_PGOUTPUT_H
#define WALQ_PGOUTPUT_H

#include <stddef.h>

#include "decode.h"

typedef struct walq__pgoutput walq__pgoutput;

/* The caller owns *out and frees it with walq__pgoutput_free(). */
int walq__pgoutput_new(walq__pgoutput **out);
void walq__pgoutput_free(walq__pgoutput *d);

/*
 * Decodes one message of len bytes (the XLogData payload).  Returns 0,
 * WALQ_ENOMEM, or WALQ_EDECODE with walq__pgoutput_error() saying what is
 * wrong and at which byte offset.  Borrowed pointers in *out stay valid until
 * the next call.
 */
int walq__pgoutput_decode(walq__pgoutput *d, const char *buf, size_t len, walq__change *out);

const char *walq__pgoutput_error(const walq__pgoutput *d);

/* Forgets the relation and type cache (a new replication session sends them again). */
void walq__pgoutput_reset(walq__pgoutput *d);

#endif
