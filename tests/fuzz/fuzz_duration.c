/*
 * Durations as users and SHOW write them (walq__parse_duration_us in
 * src/error.c): "60s", "500ms", "1min", a bare number of milliseconds.
 */
#include "common.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = fuzz_cstring(data, size);
    int64_t us = walq__parse_duration_us(s);

    FUZZ_CHECK(us >= -1);
    free(s);
    return 0;
}
