/*
 * Messages of the streaming replication protocol carried in CopyData:
 * XLogData ('w') and primary keepalive ('k') from the server, standby status
 * update ('r') from the client.  Pure functions: no I/O, testable alone.
 */
#ifndef WALQ_PROTO_H
#define WALQ_PROTO_H

#include <stddef.h>
#include <stdint.h>

/* Microseconds between the Unix epoch and PostgreSQL's, 2000-01-01 UTC. */
#define WALQ__PG_EPOCH_OFFSET_US INT64_C(946684800000000)

/* Length of a standby status update message. */
#define WALQ__STATUS_UPDATE_LEN 34

typedef enum walq__msg_kind { WALQ__MSG_XLOGDATA = 'w', WALQ__MSG_KEEPALIVE = 'k' } walq__msg_kind;

typedef struct walq__msg {
    walq__msg_kind kind;
    uint64_t wal_start;  /* 'w': where data starts */
    uint64_t wal_end;    /* 'w' and 'k': server's WAL end */
    int64_t send_time;   /* microseconds since 2000-01-01 */
    int reply_requested; /* 'k': the server wants a status update now */
    const char *data;    /* 'w': the plugin's output, borrowed from the input */
    size_t len;
} walq__msg;

/*
 * Decodes one CopyData payload.  Every length is checked: a message that is
 * shorter than its header, a keepalive of the wrong size, or an unknown kind
 * is WALQ_EPROTO, with a description written to err (errlen bytes).
 */
int walq__proto_parse(const char *buf, size_t len, walq__msg *out, char *err, size_t errlen);

/*
 * Encodes a standby status update into out and returns its length
 * (WALQ__STATUS_UPDATE_LEN).  now is microseconds since 2000-01-01.
 */
size_t walq__proto_status_update(char out[WALQ__STATUS_UPDATE_LEN], uint64_t write_lsn,
                                 uint64_t flush_lsn, uint64_t apply_lsn, int64_t now,
                                 int reply_requested);

/* Current time in microseconds since 2000-01-01 UTC. */
int64_t walq__pg_now(void);

/* Big-endian helpers, exposed for the tests. */
uint64_t walq__get_u64(const unsigned char *p);
void walq__put_u64(unsigned char *p, uint64_t v);

#endif
