/*
 * The replication messages in CopyData (walq__proto_parse in src/proto.c):
 * whatever the server, or something posing as it, sends.
 */
#include <string.h>

#include "fuzz.h"
#include "proto.h"
#include "walq.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    walq__msg m;
    char err[256];
    int rc;

    memset(&m, 0, sizeof(m));
    rc = walq__proto_parse((const char *)data, size, &m, err, sizeof(err));
    FUZZ_CHECK(memchr(err, '\0', sizeof(err)) != NULL);
    if (rc != 0) {
        FUZZ_CHECK(rc == WALQ_EPROTO);
        FUZZ_CHECK(err[0] != '\0');
        return 0;
    }
    if (m.kind == WALQ__MSG_XLOGDATA) {
        /* The data lies inside the input, just after the 25-byte header. */
        FUZZ_CHECK(size >= 25 && m.data == (const char *)data + 25 && m.len == size - 25);
        FUZZ_CHECK(m.wal_start == walq__get_u64(data + 1));
    } else {
        FUZZ_CHECK(m.kind == WALQ__MSG_KEEPALIVE && size == 18 && m.data == NULL && m.len == 0);
        FUZZ_CHECK(m.reply_requested == (data[17] != 0));
    }
    /* Parsing the same bytes again gives the same message. */
    {
        walq__msg again;

        FUZZ_CHECK(walq__proto_parse((const char *)data, size, &again, NULL, 0) == 0);
        FUZZ_CHECK(again.wal_end == m.wal_end && again.send_time == m.send_time);
    }
    return 0;
}
