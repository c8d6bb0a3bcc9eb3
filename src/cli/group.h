/*
 * walq status, walq group list and walq group drop, and what walq serve
 * reads the same way: the readers of the consumer groups and their slots.
 */
#ifndef WALQ_CLI_GROUP_H
#define WALQ_CLI_GROUP_H

#include <stddef.h>
#include <stdint.h>

#include <libpq-fe.h>

/* The exit status of walq status and walq group list when they warned. */
#define WALQ__CLI_EXIT_WARNED 3

int walq__cli_status(int argc, char **argv);
int walq__cli_group(int argc, char **argv);

/*
 * Every reader ($1: one group's, or NULL for all), on the primary:
 * group, slot, queues, cursor, the six counts, partition ("k/n" or "-"),
 * holder ("-" when no process holds it), lag in seconds, partition number,
 * source system identifier.
 */
extern const char walq__cli_readers_sql[];

/* A slot as the source has it; text fields are "-" when unknown. */
typedef struct walq__cli_slot {
    int exists, error;
    char active[32];     /* walsender pid, "no", or "missing" */
    char lag[32];        /* bytes behind the server's WAL, or "lost" */
    char sent_lag[32];   /* the server's WAL past what its walsender sent, or "-" */
    char retained[32];   /* bytes of WAL the slot keeps */
    char wal_status[16]; /* reserved, extended, unreserved, lost */
    char safe[32];       /* safe_wal_size, "" when the server sets no limit */
    char plugin[64];
    int64_t retained_bytes; /* -1 when unknown */
} walq__cli_slot;

/* Reads the slot named slot over a plain SQL connection to the source. */
void walq__cli_slot_read(PGconn *conn, const char *slot, walq__cli_slot *out);

/* Whether a process holds the reader with this slot (walq.reader_held). */
int walq__cli_reader_held(PGconn *conn, const char *slot);

/*
 * s as walq__text_escape() shows it (control characters and bytes that are
 * not UTF-8 as escapes) in buf, cut short on a character boundary to fit;
 * returns buf.
 */
const char *walq__cli_escape(char *buf, size_t len, const char *s);

/* "1GB", "512kB", "1048576": bytes, in 1024s; -1 for anything else. */
int walq__cli_parse_bytes(const char *text, int64_t *out);

#endif
