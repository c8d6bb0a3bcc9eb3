/* Seals passed by the reader's cursor. */
#include "seal.h"

#include <string.h>

#include "common.h"

void walq__seals_reset(walq__seals *s)
{
    s->through = s->written = 0;
    s->nmarks = 0;
}

void walq__seals_forget(walq__seals *s)
{
    s->nmarks = 0;
}

void walq__seals_note(walq__seals *s, uint64_t lsn, int32_t generation)
{
    /* Full: the newest takes the last place, which only delays that one. */
    if (s->nmarks == WALQ__ARRAY_SIZE(s->marks))
        s->nmarks--;
    s->marks[s->nmarks].lsn = lsn;
    s->marks[s->nmarks].generation = generation;
    s->nmarks++;
}

void walq__seals_pass(walq__seals *s, uint64_t safe_lsn)
{
    size_t k = 0;

    while (k < s->nmarks && s->marks[k].lsn <= safe_lsn) {
        if (s->marks[k].generation > s->through)
            s->through = s->marks[k].generation;
        k++;
    }
    if (k > 0) {
        memmove(s->marks, s->marks + k, (s->nmarks - k) * sizeof(s->marks[0]));
        s->nmarks -= k;
    }
}

int walq__seals_unwritten(const walq__seals *s)
{
    return s->through > s->written;
}

void walq__seals_written(walq__seals *s, int32_t generation)
{
    if (generation > s->written)
        s->written = generation;
}
