/*
 * A coprocess worker's reply line (walq__coproc_parse_reply in
 * src/coproc_reply.c) and the excerpt of it that a log message quotes.
 */
#include <string.h>

#include "coproc_reply.h"
#include "fuzz.h"
#include "text.h"
#include "walq.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *line = (const char *)data;
    walq__coproc_reply r;
    const char *why = NULL;
    char ex[WALQ__COPROC_EXCERPT + 4];
    size_t n;
    int rc = walq__coproc_parse_reply(line, size, &r, &why);

    if (rc == 0) {
        n = strlen(r.error);
        FUZZ_CHECK(n <= WALQ__COPROC_MAX_ERROR);
        FUZZ_CHECK(walq__utf8_valid(r.error, n));
        FUZZ_CHECK(r.verdict == WALQ__VERDICT_DONE || r.verdict == WALQ__VERDICT_FAIL ||
                   r.verdict == WALQ__VERDICT_RETRY || r.verdict == WALQ__VERDICT_DEAD);
        /* A failure always says something; a success says nothing. */
        FUZZ_CHECK((r.verdict == WALQ__VERDICT_DONE) == (n == 0));
    } else if (rc == WALQ_EPROTO) {
        FUZZ_CHECK(why != NULL && why[0] != '\0');
    } else {
        FUZZ_CHECK(rc == WALQ__COPROC_BLANK || rc == WALQ_ENOMEM);
    }
    walq__coproc_excerpt(ex, sizeof(ex), line, size);
    n = strlen(ex);
    FUZZ_CHECK(n <= WALQ__COPROC_EXCERPT + 3);
    FUZZ_CHECK(walq__utf8_valid(ex, n));
    for (size_t i = 0; i < n; i++)
        FUZZ_CHECK((unsigned char)ex[i] >= 0x20 && ex[i] != 0x7f);
    return 0;
}
