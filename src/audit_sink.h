/*
 * Where the audit's changes go: a regular file of JSON lines, which is its
 * own cursor; standard output or a pipe, at least once across restarts; or
 * an append-only table, with a cursor row in the same transaction as the
 * rows.  The audit's loop emits each change, ends each transaction, and
 * confirms the slot only past what a flush made durable.
 */
#ifndef WALQ_AUDIT_SINK_H
#define WALQ_AUDIT_SINK_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <json-c/json.h>
#include <libpq-fe.h>

#include "common.h"

typedef enum walq__audit_sink_kind {
    WALQ__AUDIT_SINK_FILE,   /* a regular file: its own cursor */
    WALQ__AUDIT_SINK_STREAM, /* standard output or a pipe: at least once across restarts */
    WALQ__AUDIT_SINK_TABLE   /* rows in a table, with a cursor row in the same transaction */
} walq__audit_sink_kind;

/* What a sink is opened on.  The strings are borrowed: they outlive the sink. */
typedef struct walq__audit_sink_config {
    const char *output;   /* file, or "-" (or NULL) for standard output; NULL with into */
    const char *into;     /* table, [schema.]name (walq__audit_table_valid); NULL with output */
    const char *target;   /* conninfo of the server of into; NULL: libpq environment */
    const char *group;    /* the audit group: the key of the table's cursor row */
    const walq__log *log; /* NULL: no messages */
    int file_mode;        /* permissions of an output file the sink creates; 0: 0600 */
} walq__audit_sink_config;

/* What flushes made durable, for the stats. */
typedef struct walq__audit_sink_counts {
    uint64_t transactions; /* transactions with changes */
    uint64_t changes;      /* their changes */
    uint64_t flushes;      /* fsyncs of the file, or commits into the table */
} walq__audit_sink_counts;

/* The fields are the sink's own; the loop uses the functions below. */
typedef struct walq__audit_sink {
    walq__audit_sink_kind kind;
    const char *output, *into, *target, *group;
    int file_mode; /* what a new output file gets, whatever the umask */
    const walq__log *log;
    int fd;
    walq__buf out;                      /* lines or COPY rows not yet handed over */
    off_t written;                      /* bytes handed to the kernel */
    off_t boundary;                     /* where the last whole transaction ends, out included */
    int dirty;                          /* whole transactions handed over but not yet durable */
    uint64_t dirty_txns, dirty_changes; /* their count, for the stats once durable */
    int64_t dirty_since;                /* when the first of them was */
    uint64_t written_end;               /* end LSN of the last transaction in the sink */
    walq__audit_sink_counts durable;
    PGconn *tconn;
    char *table_q;   /* "schema"."table" */
    char *cursor_q;  /* "schema".walq_audit_cursor */
    char *table_key; /* schema.table, the cursor row's key */
    int in_copy;     /* a transaction with a COPY is open on tconn */
    size_t batch_rows;
    size_t cur_rows; /* rows of the transaction being received, in the COPY */
    int64_t target_retry_at;
    int target_failures;
    int lost; /* the table's server was lost: start over from what is durable */
} walq__audit_sink;

/* Sets the sink up from c; nothing is opened and nothing can fail yet. */
void walq__audit_sink_init(walq__audit_sink *s, const walq__audit_sink_config *c);

/*
 * Opens the file (locking it and cutting what follows its last whole
 * transaction), standard output, or the table (creating it if missing).
 * *cursor receives the end LSN of the last transaction in the sink; 0: none
 * or not known.  On failure, walq__audit_sink_close() still cleans up.
 */
int walq__audit_sink_open(walq__audit_sink *s, uint64_t *cursor);

/*
 * The error for a sink whose cursor is beyond the source's WAL position
 * wal_lsn: it was written from another server.
 */
int walq__audit_sink_from_elsewhere(const walq__audit_sink *s, uint64_t cursor, uint64_t wal_lsn);

/*
 * Writes one change (walq__audit_change_json's object; its "last" is set
 * here), last saying whether it ends its transaction.  The table's server
 * may be lost meanwhile: see walq__audit_sink_lost().
 */
int walq__audit_sink_emit(walq__audit_sink *s, json_object *change, int last);

/* The transaction that ends at end_lsn, with nchanges changes, is written whole. */
void walq__audit_sink_end_txn(walq__audit_sink *s, uint64_t end_lsn, size_t nchanges);

/* Are there whole transactions written but not yet durable? */
int walq__audit_sink_pending(const walq__audit_sink *s);

/* Can they be made durable now?  A table commits whole transactions only. */
int walq__audit_sink_can_flush(const walq__audit_sink *s);

/* Have they waited long enough, or grown big enough, to flush without more ado? */
int walq__audit_sink_flush_due(const walq__audit_sink *s, int64_t now);

/*
 * Makes every whole transaction written durable: fsync, or commit.  Nothing
 * to do for a table whose server is not connected.
 */
int walq__audit_sink_flush(walq__audit_sink *s);

/*
 * Drops what was written of a transaction that will not be finished now: cut
 * from the file, not written to standard output (unless it went already),
 * rolled back in the table (with the whole transactions before it, which
 * come again).
 */
int walq__audit_sink_cut(walq__audit_sink *s);

/* Can changes be written?  Not while the table's server is being waited for. */
int walq__audit_sink_ready(const walq__audit_sink *s);

/*
 * Reconnects to the table's server once its retry time has come; *cursor
 * receives the table's cursor then, 0 otherwise.  A lost connection is
 * retried later, any other failure is returned.
 */
int walq__audit_sink_reconnect(walq__audit_sink *s, int64_t now, uint64_t *cursor);

/* The next time the sink wants to be called back (a flush, a reconnect); 0: none. */
int64_t walq__audit_sink_deadline(const walq__audit_sink *s);

/*
 * Was the table's server lost?  Then nothing that was not flushed is in
 * the table: the loop starts over from what is durable.
 */
int walq__audit_sink_lost(const walq__audit_sink *s);

/* Forgets everything not durable; returns when the table's server is tried again. */
int64_t walq__audit_sink_start_over(walq__audit_sink *s);

void walq__audit_sink_counts_get(const walq__audit_sink *s, walq__audit_sink_counts *out);

/* Closes the file or the connection and frees what the sink holds; the counts stay. */
void walq__audit_sink_close(walq__audit_sink *s);

/* Where the whole transactions of an audit file end. */
typedef struct walq__audit_tail {
    off_t keep;           /* bytes of whole transactions; the rest is cut */
    uint64_t end_lsn;     /* end LSN of the last whole transaction; 0: none */
    size_t dropped_lines; /* complete lines of an unfinished transaction past keep */
    off_t size;           /* the file's size as found */
} walq__audit_tail;

/*
 * Reads the end of an audit file (open for reading, path for messages) and
 * finds the end of its last whole transaction.  Reads only the last lines.
 * WALQ_EINVAL when the file does not end like an audit trail.
 */
int walq__audit_read_tail(int fd, const char *path, walq__audit_tail *out);

#endif
