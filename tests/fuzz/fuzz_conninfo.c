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

static const char *value_of(const PQconninfoOption *opts, const char *key)
{
    for (const PQconninfoOption *o = opts; o->keyword != NULL; o++)
        if (strcmp(o->keyword, key) == 0)
            return o->val;
    return NULL;
}

/*
 * The masked text is what libpq reads in conninfo, bar the secrets: read
 * again, it holds every setting with the same value, and "********" for
 * each password.
 */
static void check_mask(const char *masked, const PQconninfoOption *opts)
{
    PQconninfoOption *again;
    char *err = NULL;

    again = PQconninfoParse(masked, &err);
    PQfreemem(err);
    FUZZ_CHECK(again != NULL);
    for (const PQconninfoOption *o = opts; o->keyword != NULL; o++) {
        const char *v = value_of(again, o->keyword);

        if (o->val == NULL) {
            FUZZ_CHECK(v == NULL);
        } else if (strcmp(o->keyword, "password") == 0 || strcmp(o->keyword, "sslpassword") == 0) {
            FUZZ_CHECK(v != NULL && strcmp(v, "********") == 0);
        } else if (strcmp(o->keyword, "dbname") == 0 &&
                   (strchr(o->val, '=') != NULL || strstr(o->val, "://") != NULL)) {
            /* A connection string of its own, masked in turn. */
            FUZZ_CHECK(v != NULL);
        } else {
            FUZZ_CHECK(v != NULL && strcmp(v, o->val) == 0);
        }
    }
    PQconninfoFree(again);
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
        if (strlen(masked) + 1 < sizeof(masked))
            check_mask(masked, opts);
    } else {
        /* What libpq cannot read is shown whole only when it names no secret. */
        FUZZ_CHECK(strcmp(masked, "********") == 0 ||
                   (strncmp(masked, text, sizeof(masked) - 1) == 0 &&
                    strcasestr(text, "pass") == NULL && strchr(text, '%') == NULL &&
                    strchr(text, '@') == NULL));
    }
    PQconninfoFree(opts);
    free(text);
    return 0;
}
