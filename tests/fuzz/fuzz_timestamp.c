/*
 * Commit times as wal2json prints them (walq__parse_timestamp in
 * src/decode.c): any bytes, not NUL-terminated.
 */
#include "decode.h"
#include "fuzz.h"
#include "walq.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int64_t us = 12345;
    int rc = walq__parse_timestamp((const char *)data, size, &us);

    FUZZ_CHECK(rc == 0 || rc == WALQ_EINVAL);
    return 0;
}
