/*
 * LSN text, "X/X" (src/lsn.c): what a user, the server or a file says.  A
 * parsed LSN prints and parses back to itself.
 */
#include <string.h>

#include "fuzz.h"
#include "lsn.h"
#include "walq.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char buf[WALQ__LSN_BUFSZ];
    uint64_t lsn = 0, again = 1;
    int rc = walq__lsn_parse_n((const char *)data, size, &lsn);
    char *s;

    FUZZ_CHECK(rc == 0 || rc == WALQ_EINVAL);
    /* The C-string form agrees wherever the input holds no NUL. */
    if (memchr(data, '\0', size) == NULL) {
        uint64_t c = 0;

        s = fuzz_cstring(data, size);
        FUZZ_CHECK(walq__lsn_parse(s, &c) == rc);
        FUZZ_CHECK(rc != 0 || c == lsn);
        free(s);
    }
    if (rc != 0)
        return 0;
    walq__lsn_format(lsn, buf);
    FUZZ_CHECK(strlen(buf) < sizeof(buf));
    FUZZ_CHECK(walq__lsn_parse(buf, &again) == 0 && again == lsn);
    return 0;
}
