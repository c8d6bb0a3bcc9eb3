/*
 * The end of an audit file (walq__audit_read_tail in src/audit_sink.c):
 * what walq audit finds in its output file when it starts, which anyone
 * could have written.  The input is the whole file, in memory.
 */
#include <sys/mman.h>
#include <unistd.h>

#include "audit_sink.h"
#include "fuzz.h"
#include "walq.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    walq__audit_tail t;
    size_t off = 0;
    int fd = memfd_create("walq-fuzz-audit", MFD_CLOEXEC), rc;

    if (fd < 0)
        abort();
    while (off < size) {
        ssize_t n = write(fd, data + off, size - off);

        if (n <= 0)
            abort();
        off += (size_t)n;
    }
    rc = walq__audit_read_tail(fd, "fuzz.jsonl", &t);
    close(fd);
    if (rc != 0) {
        FUZZ_CHECK(rc == WALQ_EINVAL || rc == WALQ_ENOMEM);
        return 0;
    }
    FUZZ_CHECK(t.size == (off_t)size);
    FUZZ_CHECK(t.keep >= 0 && t.keep <= t.size);
    /* What is kept ends with a whole line. */
    FUZZ_CHECK(t.keep == 0 || data[t.keep - 1] == '\n');
    FUZZ_CHECK(t.keep > 0 || t.end_lsn == 0);
    return 0;
}
