/*
 * The stream stage: a replication connection to the source, the group's
 * slot, and the CopyBoth exchange of XLogData, keepalives and status updates.
 */
#ifndef WALQ_STREAM_H
#define WALQ_STREAM_H

#include <stddef.h>
#include <stdint.h>
#include <libpq-fe.h>

#include "proto.h"

typedef struct walq__stream {
    PGconn *conn;
    int streaming;       /* START_REPLICATION succeeded */
    char *buf;           /* last CopyData from libpq, freed on the next read */
    char server[128];    /* "host:port", for messages */
    const char *appname; /* "walq consume", "walq audit": the program, for hints (borrowed) */
} walq__stream;

int walq__stream_connect(walq__stream *s, const char *conninfo, const char *appname);

/*
 * Creates a logical slot for the output plugin ("pgoutput", "wal2json") and
 * exports a snapshot of the moment the slot became consistent.  The snapshot
 * lives until the next command on this connection.
 */
int walq__stream_create_slot(walq__stream *s, const char *slot, const char *plugin,
                             uint64_t *consistent, char *snapshot, size_t snaplen);

/*
 * The same, calling tick(arg) every second while the server works on it: a
 * standby waits for the primary to log its running transactions, which
 * tick can ask for.  failover: a failover slot (PostgreSQL 17).
 */
int walq__stream_create_slot_waiting(walq__stream *s, const char *slot, const char *plugin,
                                     int failover, uint64_t *consistent, char *snapshot,
                                     size_t snaplen, void (*tick)(void *), void *arg);

/*
 * Makes an existing slot a failover slot (ALTER_REPLICATION_SLOT, PostgreSQL
 * 17); the slot must not be in use.  Failover is refused with the reason on
 * an older server.
 */
int walq__stream_set_failover(walq__stream *s, const char *slot);

int walq__stream_drop_slot(walq__stream *s, const char *slot);

/*
 * Starts streaming the slot from lsn with the plugin options (pairs of
 * name, value, NULL-terminated).  A slot held by another process is
 * WALQ_EBUSY; a missing or invalidated slot WALQ_ESLOT.
 */
int walq__stream_start(walq__stream *s, const char *slot, uint64_t lsn, const char *const *options);

/*
 * Reads one message without blocking.  Returns 1 with *msg filled (data
 * borrowed until the next call), 0 when nothing complete has arrived, or a
 * negative code when the stream ended or broke.
 */
int walq__stream_read(walq__stream *s, walq__msg *msg);

/* Sends a standby status update and flushes what the socket takes. */
int walq__stream_status(walq__stream *s, uint64_t write_lsn, uint64_t flush_lsn,
                        int reply_requested);

int walq__stream_socket(const walq__stream *s);

/*
 * The interval between status updates: wanted_us, or half the server's
 * wal_sender_timeout if that is shorter, so that a client that reads
 * nothing for a while (a full consumer) is not timed out.
 */
int64_t walq__stream_status_interval(walq__stream *s, int64_t wanted_us);

/*
 * What a reader does to (re)start its stream: connects unless connected,
 * sets *status_us (walq__stream_status_interval of wanted_us) and starts
 * the slot from lsn.  On failure the connection is closed.
 */
int walq__stream_open(walq__stream *s, const char *conninfo, const char *appname, const char *slot,
                      uint64_t lsn, const char *const *options, int64_t wanted_us,
                      int64_t *status_us);

void walq__stream_close(walq__stream *s);

#endif
