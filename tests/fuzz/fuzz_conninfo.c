/*
 * A user's connection string (src/db.c): the keyword/value arrays walq
 * builds from it, and the masked form its messages show.  The first byte
 * picks the kind of connection; the text runs to the first newline, and
 * lines after it are the environment ("PGCONNECT_TIMEOUT=5").
 */
#include <string.h>

#include <libpq-fe.h>

#include "db.h"
#include "fuzz.h"

static char *env_text;

static const char *lookup(const char *name)
{
    size_t n = strlen(name);

    for (char *line = env_text; line != NULL && *line;) {
        char *nl = strchr(line, '\n');

        if (strncmp(line, name, n) == 0 && line[n] == '=') {
            static char value[64];
            size_t len = nl ? (size_t)(nl - line) - n - 1 : strlen(line + n + 1);

            if (len >= sizeof(value))
                len = sizeof(value) - 1;
            memcpy(value, line + n + 1, len);
            value[len] = '\0';
            return value;
        }
        line = nl ? nl + 1 : NULL;
    }
    return NULL;
}

static size_t count(const char *hay, const char *needle)
{
    size_t n = 0;

    for (const char *p = hay; (p = strstr(p, needle)) != NULL; p++)
        n++;
    return n;
}

/* Every password libpq reads in conninfo is gone from the masked text. */
static void check_mask(const char *conninfo, const char *masked, const PQconninfoOption *opts)
{
    for (const PQconninfoOption *o = opts; o->keyword != NULL; o++) {
        size_t seen;

        if (o->val == NULL ||
            (strcmp(o->keyword, "password") != 0 && strcmp(o->keyword, "sslpassword") != 0))
            continue;
        /*
         * Too short, made of the mask itself, or a piece of the key the
         * masked text writes (a value "ord=" is in every "password="), to
         * tell.
         */
        if (strlen(o->val) < 4 || strchr(o->val, '*') != NULL ||
            strstr("sslpassword=", o->val) != NULL)
            continue;
        seen = count(conninfo, o->val);
        FUZZ_CHECK(seen == 0 || count(masked, o->val) < seen);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    walq__conn_params p;
    walq__conn_kind kind;
    char *text, *nl, masked[512];
    PQconninfoOption *opts;
    char *err = NULL;
    int rc;

    if (size < 1)
        return 0;
    kind = data[0] & 1 ? WALQ__CONN_REPLICATION : WALQ__CONN_SQL;
    text = fuzz_cstring(data + 1, size - 1);
    nl = strchr(text, '\n');
    env_text = NULL;
    if (nl != NULL) {
        *nl = '\0';
        env_text = nl + 1;
    }
    walq__conninfo_mask(text, masked, sizeof(masked));
    FUZZ_CHECK(strlen(masked) < sizeof(masked));
    rc = walq__conn_params_build(&p, text, kind, "walq fuzz", lookup);
    opts = PQconninfoParse(text, &err);
    PQfreemem(err);
    FUZZ_CHECK((rc == 0) == (opts != NULL));
    if (rc == 0) {
        FUZZ_CHECK(p.n > 0 && p.n < 16 && p.keys[p.n] == NULL && p.vals[p.n] == NULL);
        for (int i = 0; i < p.n; i++) {
            FUZZ_CHECK(p.keys[i] != NULL && p.vals[i] != NULL);
            /* Ours come once each, and only where the string does not set them. */
            for (int j = i + 1; j < p.n; j++)
                FUZZ_CHECK(strcmp(p.keys[i], p.keys[j]) != 0);
            for (const PQconninfoOption *o = opts; i > 0 && o->keyword != NULL; o++)
                if (strcmp(o->keyword, p.keys[i]) == 0 && strcmp(o->keyword, "options") != 0 &&
                    strcmp(o->keyword, "replication") != 0 &&
                    strcmp(o->keyword, "fallback_application_name") != 0)
                    FUZZ_CHECK(o->val == NULL);
        }
        if (strlen(text) < sizeof(masked))
            check_mask(text, masked, opts);
    }
    PQconninfoFree(opts);
    free(text);
    return 0;
}
