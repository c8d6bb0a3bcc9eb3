/* The publication of a reader on pgoutput: its filters, making it, checking it. */
#include "publication.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "db.h"

/* What the comment of a publication made by walq starts with. */
#define COMMENT_TAG "walq consume keeps this publication: "

/*
 * What the publication is, as one line (walq.publication_fingerprint: its
 * tables with their filters as the server prints them, and what it
 * publishes); then its owner, the session's role, whether that role may act
 * as the owner or the owner is walq's (whose functions keep it, as
 * walq.define_publication), and the comment.
 */
static const char fingerprint_sql[] =
    "SELECT walq.publication_fingerprint(p.pubname),"
    "  pg_get_userbyid(p.pubowner), current_user,"
    "  pg_has_role(current_user, p.pubowner, 'USAGE')"
    "  OR p.pubowner = (SELECT c.relowner FROM pg_class c WHERE c.oid = 'walq.jobs'::regclass),"
    "  coalesce(obj_description(p.oid, 'pg_publication'), ''),"
    "  pg_get_userbyid((SELECT c.relowner FROM pg_class c WHERE c.oid = 'walq.jobs'::regclass))"
    "  FROM pg_publication p WHERE p.pubname = $1";

/* The publication as the server has it now. */
typedef struct pub_row {
    int exists;
    char *fingerprint, *owner, *role, *comment, *walq_owner; /* owned */
    int owned; /* the role is, or is a member of, its owner */
} pub_row;

static void pub_row_free(pub_row *p)
{
    free(p->fingerprint);
    free(p->owner);
    free(p->role);
    free(p->comment);
    free(p->walq_owner);
    memset(p, 0, sizeof(*p));
}

static int read_pub(PGconn *conn, const char *name, pub_row *out)
{
    const char *params[1] = {name};
    PGresult *res;
    int rc;

    memset(out, 0, sizeof(*out));
    rc = walq__query(conn, &res, "read the reader's publication", fingerprint_sql, 1, params);
    if (rc != 0)
        return rc;
    if (PQntuples(res) == 1) {
        out->exists = 1;
        out->fingerprint = strdup(PQgetvalue(res, 0, 0));
        out->owner = strdup(PQgetvalue(res, 0, 1));
        out->role = strdup(PQgetvalue(res, 0, 2));
        out->owned = strcmp(PQgetvalue(res, 0, 3), "t") == 0;
        out->comment = strdup(PQgetvalue(res, 0, 4));
        out->walq_owner = strdup(PQgetvalue(res, 0, 5));
        if (!out->fingerprint || !out->owner || !out->role || !out->comment || !out->walq_owner) {
            PQclear(res);
            pub_row_free(out);
            return walq__error(WALQ_ENOMEM, NULL, "out of memory");
        }
    }
    PQclear(res);
    return 0;
}

static int not_owned(const walq__pub_spec *spec, const pub_row *p)
{
    char hint[512];

    snprintf(hint, sizeof(hint),
             "walq consume keeps the publication of each slot it reads with pgoutput, as the "
             "owner of walq.jobs. Give it to that role (ALTER PUBLICATION %s OWNER TO %s), or "
             "drop it (DROP PUBLICATION %s): the next walq consume makes it anew and reads the "
             "group's unfinished jobs from walq.jobs.",
             spec->name, p->walq_owner, spec->name);
    return walq__error(WALQ_ESERVER, hint,
                       "publication \"%s\" is owned by role \"%s\", not by \"%s\", which owns "
                       "walq.jobs, nor by \"%s\", which walq consume connects as",
                       spec->name, p->owner, p->walq_owner, p->role);
}

static int define_failed(const walq__pub_spec *spec, int rc)
{
    char msg[1024];

    if (rc != WALQ_EQUERY || (strstr(walq_last_error(), "permission denied") == NULL &&
                              strstr(walq_last_error(), "must be owner") == NULL))
        return rc;
    snprintf(msg, sizeof(msg), "%s", walq_last_error());
    return walq__error(WALQ_EPERM,
                       "A consumer on pgoutput makes the publication of its slot through "
                       "walq.define_publication(), which walq_consumer may call: GRANT "
                       "walq_consumer to the consumer's role, and run walq init again as the "
                       "role that owns the walq schema if the function is missing.",
                       "could not make publication \"%s\": %s", spec->name, msg);
}

/*
 * The publication is made or redefined by walq.define_publication, with
 * the rights of walq's owner: CREATE PUBLICATION ... FOR TABLE takes
 * ownership of the tables, which a consumer need not have.  The function
 * quotes every name and value, and records what the server made of it in
 * the comment.
 */
int walq__pub_define(PGconn *conn, const walq__pub_spec *spec)
{
    walq__buf queues = {0};
    char k[16], n[16];
    const char *params[5] = {spec->name, spec->group, NULL, n, k};
    pub_row now;
    PGresult *res;
    int rc;

    snprintf(k, sizeof(k), "%d", spec->partition);
    snprintf(n, sizeof(n), "%d", spec->partitions > 0 ? spec->partitions : 1);
    rc = read_pub(conn, spec->name, &now);
    if (rc == 0 && now.exists && !now.owned)
        rc = not_owned(spec, &now);
    pub_row_free(&now);
    if (rc == 0 && walq__buf_puts(&queues, "{") != 0)
        rc = walq__error(WALQ_ENOMEM, NULL, "out of memory");
    for (size_t i = 0; rc == 0 && i < spec->nqueues; i++)
        if ((i && walq__buf_puts(&queues, ",") != 0) ||
            walq__buf_array_elem(&queues, spec->queues[i]) != 0)
            rc = walq__error(WALQ_ENOMEM, NULL, "out of memory");
    if (rc == 0 && walq__buf_puts(&queues, "}") != 0)
        rc = walq__error(WALQ_ENOMEM, NULL, "out of memory");
    params[2] = queues.data;
    if (rc == 0)
        rc = define_failed(spec, walq__query(conn, &res, "define the publication",
                                             "SELECT walq.define_publication($1, $2, $3::text[],"
                                             " $4::int, $5::int)",
                                             5, params));
    if (rc == 0)
        PQclear(res);
    walq__buf_free(&queues);
    return rc;
}

int walq__pub_check(PGconn *conn, const walq__pub_spec *spec, walq__pub_state *state)
{
    pub_row p;
    size_t tag = strlen(COMMENT_TAG);
    int rc = read_pub(conn, spec->name, &p);

    *state = WALQ__PUB_OK;
    if (rc != 0)
        return rc;
    if (!p.exists) {
        *state = WALQ__PUB_MISSING;
    } else if (!p.owned) {
        rc = not_owned(spec, &p);
    } else if (strncmp(p.comment, COMMENT_TAG, tag) != 0 ||
               strcmp(p.comment + tag, p.fingerprint) != 0) {
        char hint[512];

        snprintf(hint, sizeof(hint),
                 "walq consume keeps this publication, and changing it loses or adds jobs "
                 "unseen. Drop it (DROP PUBLICATION %s): the next walq consume makes it anew "
                 "and reads the group's unfinished jobs from walq.jobs.",
                 spec->name);
        rc = walq__error(WALQ_ESERVER, hint,
                         "publication \"%s\" was changed by hand: it is now \"%s\", but walq "
                         "left it \"%s\"",
                         spec->name, p.fingerprint,
                         strncmp(p.comment, COMMENT_TAG, tag) == 0 ? p.comment + tag
                                                                   : "(no record of walq's)");
    }
    pub_row_free(&p);
    return rc;
}

int walq__pub_exists(PGconn *conn, const char *name, int *exists)
{
    const char *params[1] = {name};
    PGresult *res;
    int rc = walq__query(conn, &res, "look up the reader's publication",
                         "SELECT 1 FROM pg_publication WHERE pubname = $1", 1, params);

    if (rc != 0)
        return rc;
    *exists = PQntuples(res) == 1;
    PQclear(res);
    return 0;
}
