/*
 * Messages of the streaming replication protocol, as described in
 * PostgreSQL's "Streaming Replication Protocol" chapter.  The layouts are
 * fixed, so every length is checked against them before anything is read.
 */
#include "proto.h"

#include <stdarg.h>
#include <stdio.h>
#include <time.h>

#include "walq.h"

/* Kind byte, dataStart, walEnd and sendTime. */
#define XLOGDATA_HEADER_LEN 25
/* Kind byte, walEnd, sendTime and the reply-requested byte. */
#define KEEPALIVE_LEN 18

uint64_t walq__get_u64(const unsigned char *p)
{
    uint64_t v = 0;

    for (int i = 0; i < 8; i++)
        v = (v << 8) | p[i];
    return v;
}

void walq__put_u64(unsigned char *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--) {
        p[i] = (unsigned char)(v & 0xff);
        v >>= 8;
    }
}

static void set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;

    if (err == NULL || errlen == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

int walq__proto_parse(const char *buf, size_t len, walq__msg *out, char *err, size_t errlen)
{
    const unsigned char *p = (const unsigned char *)buf;

    if (err != NULL && errlen > 0)
        err[0] = '\0';
    if (out == NULL || (buf == NULL && len > 0)) {
        set_err(err, errlen, "invalid argument");
        return WALQ_EINVAL;
    }
    if (len == 0) {
        set_err(err, errlen, "empty replication message");
        return WALQ_EPROTO;
    }

    switch (p[0]) {
    case WALQ__MSG_XLOGDATA:
        if (len < XLOGDATA_HEADER_LEN) {
            set_err(err, errlen, "XLogData message of %zu bytes is shorter than its %d-byte header",
                    len, XLOGDATA_HEADER_LEN);
            return WALQ_EPROTO;
        }
        out->kind = WALQ__MSG_XLOGDATA;
        out->wal_start = walq__get_u64(p + 1);
        out->wal_end = walq__get_u64(p + 9);
        out->send_time = (int64_t)walq__get_u64(p + 17);
        out->reply_requested = 0;
        out->data = buf + XLOGDATA_HEADER_LEN;
        out->len = len - XLOGDATA_HEADER_LEN;
        return 0;

    case WALQ__MSG_KEEPALIVE:
        if (len != KEEPALIVE_LEN) {
            set_err(err, errlen, "keepalive message has %zu bytes, expected %d", len,
                    KEEPALIVE_LEN);
            return WALQ_EPROTO;
        }
        out->kind = WALQ__MSG_KEEPALIVE;
        out->wal_start = 0;
        out->wal_end = walq__get_u64(p + 1);
        out->send_time = (int64_t)walq__get_u64(p + 9);
        out->reply_requested = p[17] != 0;
        out->data = NULL;
        out->len = 0;
        return 0;

    default:
        /* A control byte would garble the message, so those are shown in hex. */
        if (p[0] >= 0x20 && p[0] < 0x7f)
            set_err(err, errlen, "unexpected replication message type \"%c\"", p[0]);
        else
            set_err(err, errlen, "unexpected replication message type 0x%02x", p[0]);
        return WALQ_EPROTO;
    }
}

size_t walq__proto_status_update(char out[WALQ__STATUS_UPDATE_LEN], uint64_t write_lsn,
                                 uint64_t flush_lsn, uint64_t apply_lsn, int64_t now,
                                 int reply_requested)
{
    unsigned char *p = (unsigned char *)out;

    p[0] = 'r';
    walq__put_u64(p + 1, write_lsn);
    walq__put_u64(p + 9, flush_lsn);
    walq__put_u64(p + 17, apply_lsn);
    walq__put_u64(p + 25, (uint64_t)now);
    p[33] = reply_requested ? 1 : 0;
    return WALQ__STATUS_UPDATE_LEN;
}

int64_t walq__pg_now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000 - WALQ__PG_EPOCH_OFFSET_US;
}
