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
 * What the publication is, as one line: its tables with their filters as
 * the server prints them, and what it publishes; then its owner, the
 * session's role, whether that role may act as the owner, and the comment.
 * Filters, and schemas in a publication, are PostgreSQL 15's.
 */
#define FINGERPRINT_TAIL                                                                           \
    "    || format(' (all tables %s, insert %s, update %s, delete %s, truncate %s,"                \
    " via root %s)', p.puballtables, p.pubinsert, p.pubupdate, p.pubdelete, p.pubtruncate,"        \
    "              p.pubviaroot),"                                                                 \
    "  pg_get_userbyid(p.pubowner), current_user,"                                                 \
    "  pg_has_role(current_user, p.pubowner, 'USAGE'),"                                            \
    "  coalesce(obj_description(p.oid, 'pg_publication'), '')"                                     \
    "  FROM pg_publication p WHERE p.pubname = $1"

static const char fingerprint_15[] =
    "SELECT coalesce((SELECT string_agg(r.prrelid::regclass::text"
    "         || coalesce(' WHERE ' || pg_get_expr(r.prqual, r.prrelid), ''), '; '"
    "         ORDER BY r.prrelid::regclass::text)"
    "         FROM pg_publication_rel r WHERE r.prpubid = p.oid), '')"
    "    || coalesce((SELECT '; schemas ' || string_agg(n.pnnspid::regnamespace::text, ', ')"
    "         FROM pg_publication_namespace n WHERE n.pnpubid = p.oid), '')" FINGERPRINT_TAIL;

static const char fingerprint_14[] =
    "SELECT coalesce((SELECT string_agg(r.prrelid::regclass::text, '; '"
    "         ORDER BY r.prrelid::regclass::text)"
    "         FROM pg_publication_rel r WHERE r.prpubid = p.oid), '')" FINGERPRINT_TAIL;

/* The publication as the server has it now. */
typedef struct pub_row {
    int exists;
    char *fingerprint, *owner, *role, *comment; /* owned */
    int owned;                                  /* the role is, or is a member of, its owner */
} pub_row;

static void pub_row_free(pub_row *p)
{
    free(p->fingerprint);
    free(p->owner);
    free(p->role);
    free(p->comment);
    memset(p, 0, sizeof(*p));
}

static int read_pub(PGconn *conn, const char *name, pub_row *out)
{
    const char *params[1] = {name};
    PGresult *res;
    int rc;

    memset(out, 0, sizeof(*out));
    rc = walq__query(conn, &res, "read the reader's publication",
                     PQserverVersion(conn) >= 150000 ? fingerprint_15 : fingerprint_14, 1, params);
    if (rc != 0)
        return rc;
    if (PQntuples(res) == 1) {
        out->exists = 1;
        out->fingerprint = strdup(PQgetvalue(res, 0, 0));
        out->owner = strdup(PQgetvalue(res, 0, 1));
        out->role = strdup(PQgetvalue(res, 0, 2));
        out->owned = strcmp(PQgetvalue(res, 0, 3), "t") == 0;
        out->comment = strdup(PQgetvalue(res, 0, 4));
        if (!out->fingerprint || !out->owner || !out->role || !out->comment) {
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
             "walq consume keeps the publication of each slot it reads with pgoutput. Give it "
             "to the consumer's role (ALTER PUBLICATION %s OWNER TO %s), or drop it (DROP "
             "PUBLICATION %s): the next walq consume makes it anew and reads the group's "
             "unfinished jobs from walq.jobs.",
             spec->name, p->role, spec->name);
    return walq__error(WALQ_ESERVER, hint,
                       "publication \"%s\" is owned by role \"%s\", not by \"%s\", which walq "
                       "consume connects as",
                       spec->name, p->owner, p->role);
}

/* The SQL literal of s, appended to b. */
static int put_literal(walq__buf *b, PGconn *conn, const char *s)
{
    char *lit = PQescapeLiteral(conn, s, strlen(s));
    int rc;

    if (lit == NULL)
        return walq__error(WALQ_ENOMEM, NULL, "could not quote \"%s\": %s", s,
                           PQerrorMessage(conn));
    rc = walq__buf_puts(b, lit);
    PQfreemem(lit);
    return rc ? walq__error(WALQ_ENOMEM, NULL, "out of memory") : 0;
}

/*
 * The tables and their filters, as CREATE PUBLICATION ... FOR TABLE and
 * ALTER PUBLICATION ... SET TABLE take them.  A filter may call only
 * built-in immutable functions: the partition is hashint8(id) taken as
 * unsigned, which is what walq.partition_of computes.
 */
static int put_tables(walq__buf *b, PGconn *conn, const walq__pub_spec *spec)
{
    int filters = PQserverVersion(conn) >= 150000;
    int rc = walq__buf_puts(b, "TABLE walq.jobs");

    if (rc == 0 && filters) {
        rc = walq__buf_puts(b, " WHERE (queue IN (");
        for (size_t i = 0; rc == 0 && i < spec->nqueues; i++) {
            if (i > 0)
                rc = walq__buf_puts(b, ", ");
            if (rc == 0)
                rc = put_literal(b, conn, spec->queues[i]);
        }
        if (rc == 0)
            rc = walq__buf_puts(b, ")");
        if (rc == 0 && spec->partitions > 1)
            rc = walq__buf_printf(b, " AND (hashint8(id)::bigint & 4294967295) %% %d = %d",
                                  spec->partitions, spec->partition);
        if (rc == 0)
            rc = walq__buf_puts(b, ")");
    }
    if (rc == 0)
        rc = walq__buf_puts(b, ", walq.commands");
    if (rc == 0 && filters) {
        rc = walq__buf_puts(b, " WHERE (group_name = ");
        if (rc == 0)
            rc = put_literal(b, conn, spec->group);
        if (rc == 0)
            rc = walq__buf_puts(b, ")");
    }
    return rc ? walq__error(WALQ_ENOMEM, NULL, "out of memory") : 0;
}

static int define_failed(const walq__pub_spec *spec, int rc)
{
    char msg[1024];

    if (rc != WALQ_EQUERY || (strstr(walq_last_error(), "permission denied") == NULL &&
                              strstr(walq_last_error(), "must be owner") == NULL))
        return rc;
    snprintf(msg, sizeof(msg), "%s", walq_last_error());
    return walq__error(WALQ_EPERM,
                       "A consumer on pgoutput makes the publication of its slot: its role needs "
                       "CREATE on the database and ownership of walq.jobs and walq.commands. Run "
                       "it as the role that ran walq init, or let a superuser make the "
                       "publication for it and give it to that role.",
                       "could not make publication \"%s\": %s", spec->name, msg);
}

int walq__pub_define(PGconn *conn, const walq__pub_spec *spec)
{
    walq__buf sql = {0}, text = {0};
    pub_row now, after;
    char *name = NULL;
    int rc;

    rc = walq__exec(conn, "begin the publication's transaction", "BEGIN");
    if (rc != 0)
        return rc;
    rc = read_pub(conn, spec->name, &now);
    if (rc == 0 && now.exists && !now.owned)
        rc = not_owned(spec, &now);
    name = rc == 0 ? PQescapeIdentifier(conn, spec->name, strlen(spec->name)) : NULL;
    if (rc == 0 && name == NULL)
        rc = walq__error(WALQ_ENOMEM, NULL, "out of memory");
    /*
     * The options first: a partitioned table takes a filter only when its
     * changes are published as the root's.
     */
    if (rc == 0 && now.exists)
        rc = walq__buf_printf(&sql,
                              "ALTER PUBLICATION %s SET (publish = 'insert',"
                              " publish_via_partition_root = true);"
                              " ALTER PUBLICATION %s SET ",
                              name, name) != 0
                 ? walq__error(WALQ_ENOMEM, NULL, "out of memory")
                 : 0;
    else if (rc == 0)
        rc = walq__buf_printf(&sql, "CREATE PUBLICATION %s FOR ", name) != 0
                 ? walq__error(WALQ_ENOMEM, NULL, "out of memory")
                 : 0;
    if (rc == 0)
        rc = put_tables(&sql, conn, spec);
    if (rc == 0 && !now.exists &&
        walq__buf_puts(&sql, " WITH (publish = 'insert', publish_via_partition_root = true)") != 0)
        rc = walq__error(WALQ_ENOMEM, NULL, "out of memory");
    if (rc == 0)
        rc = define_failed(spec, walq__exec(conn, "define the publication", sql.data));
    pub_row_free(&now);
    memset(&after, 0, sizeof(after));
    /* The comment records what the server made of it, to tell a change by hand. */
    if (rc == 0)
        rc = read_pub(conn, spec->name, &after);
    if (rc == 0) {
        walq__buf_free(&sql);
        sql = (walq__buf){0};
        if (walq__buf_printf(&sql, "COMMENT ON PUBLICATION %s IS ", name) != 0 ||
            walq__buf_printf(&text, "%s%s", COMMENT_TAG, after.fingerprint) != 0)
            rc = walq__error(WALQ_ENOMEM, NULL, "out of memory");
    }
    if (rc == 0)
        rc = put_literal(&sql, conn, text.data);
    if (rc == 0)
        rc = walq__exec(conn, "comment on the publication", sql.data);
    if (rc == 0)
        rc = walq__exec(conn, "commit the publication", "COMMIT");
    else if (PQstatus(conn) == CONNECTION_OK)
        PQclear(PQexec(conn, "ROLLBACK"));
    pub_row_free(&after);
    walq__buf_free(&sql);
    walq__buf_free(&text);
    PQfreemem(name);
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
