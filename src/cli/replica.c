/*
 * walq replica: set up and tear down the subscriber topology.
 *
 * walq.jobs and walq.commands are copied from the primary to a second server,
 * the source, by PostgreSQL's built-in logical replication: a publication on
 * the primary and a subscription on the source.  Every consumer group's slot
 * then lives on the source, and the primary serves one walsender, the
 * subscription's, however many groups there are.
 *
 * The publication, the subscription and the subscription's slot on the
 * primary all take one name, "walqrepl_<name>".  Group slots are
 * "walq_<group>" and audit slots "walqaudit_<name>", so neither can take it.
 */
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/replica.h"
#include "db.h"

#define EXIT_USAGE 2

#define progname walq__progname

/* "walqrepl_" and the name must fit a replication slot name (63 bytes). */
#define OBJECT_PREFIX  "walqrepl_"
#define NAME_MAX_LEN   54
#define DEFAULT_NAME   "main"
#define DEFAULT_WAIT_S 300.0

typedef struct replica_opts {
    const char *primary;
    const char *source;
    const char *sub_conninfo; /* how the source server reaches the primary, as given */
    const char *name;
    double timeout;
    int allow_insecure; /* --allow-insecure-subscription */
    char *sub_text;     /* the subscription's connection string (subscription_conninfo) */
    char object[64];    /* OBJECT_PREFIX name: publication, subscription, slot */
} replica_opts;

typedef enum parse_result { PARSE_OK, PARSE_HELP, PARSE_BAD } parse_result;

#define usage_error(sub, ...) walq__cli_usage("replica", sub, __VA_ARGS__)

static void say(const char *fmt, ...) WALQ__PRINTF(1, 2);

/* What was done, one line each, on standard error as `walq init` does. */
static void say(const char *fmt, ...)
{
    va_list ap;

    fprintf(stderr, "%s: ", progname);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

static int name_valid(const char *name)
{
    size_t n = strlen(name);

    if (n < 1 || n > NAME_MAX_LEN)
        return 0;
    return strspn(name, "abcdefghijklmnopqrstuvwxyz0123456789_") == n;
}

static void setup_help(void)
{
    printf("Usage: %s replica setup --primary CONNINFO --source CONNINFO [OPTIONS]\n\n"
           "Sets up the subscriber topology: walq.jobs and walq.commands are copied from\n"
           "the primary to the source by PostgreSQL's logical replication, and consumers\n"
           "read them there (walq consume --source ... --primary ...), so that the\n"
           "primary serves one walsender however many consumer groups there are.\n\n"
           "Creates or upgrades the walq schema on the source and on the primary, a\n"
           "publication on the primary, a subscription on the source, and waits until\n"
           "the subscription has copied the tables.  The publication, the subscription\n"
           "and its replication slot on the primary are all named \"%sNAME\".\n"
           "Running it again is harmless: it creates what is missing, and upgrades\n"
           "the schema on both servers after a new version of walq.\n\n"
           "Options:\n"
           "  --primary CONNINFO    the server that takes the writes (required)\n"
           "  --source CONNINFO     the server that will hold the group slots (required)\n"
           "  --subscription-conninfo CONNINFO\n"
           "                        how the source server itself connects to the primary\n"
           "                        (default: the --primary string); the role needs the\n"
           "                        REPLICATION attribute\n"
           "  --name NAME           tells several set-ups on one primary apart\n"
           "                        (default \"%s\")\n"
           "  --allow-insecure-subscription\n"
           "                        make the subscription without sslmode=verify-ca or\n"
           "                        verify-full (a unix socket, a network you trust)\n"
           "  --timeout SECONDS     how long to wait for the initial copy (default %.0f)\n\n"
           "The subscription gets the settings of --subscription-conninfo as written,\n"
           "and the TLS settings of this environment (PGSSLMODE, PGSSLROOTCERT, ...) that\n"
           "it does not give; never a password from PGPASSWORD or a password file.\n\n"
           "Both servers need wal_level = logical; the role on the source must be a\n"
           "superuser, the one on the primary a superuser or the owner of the walq tables.\n",
           progname, OBJECT_PREFIX, DEFAULT_NAME, DEFAULT_WAIT_S);
}

static void teardown_help(void)
{
    printf("Usage: %s replica teardown --primary CONNINFO --source CONNINFO [--name NAME]\n\n"
           "Undoes \"%s replica setup\": drops the subscription on the source (and with it\n"
           "its replication slot on the primary) and the publication on the primary.\n"
           "The walq schema and its rows stay on both servers.  The group slots on the\n"
           "source stay too, and keep WAL there until they are dropped; the command\n"
           "lists them and says how.  Running it again is harmless.\n",
           progname, progname);
}

static parse_result parse_opts(int argc, char **argv, int setup, replica_opts *ro)
{
    enum { O_PRIMARY = 256, O_SOURCE, O_SUBCONN, O_NAME, O_TIMEOUT, O_INSECURE };
    static const struct option longopts[] = {
        {"primary", required_argument, NULL, O_PRIMARY},
        {"source", required_argument, NULL, O_SOURCE},
        {"subscription-conninfo", required_argument, NULL, O_SUBCONN},
        {"name", required_argument, NULL, O_NAME},
        {"timeout", required_argument, NULL, O_TIMEOUT},
        {"allow-insecure-subscription", no_argument, NULL, O_INSECURE},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0}};
    const char *cmd = setup ? "setup" : "teardown";
    int opt;

    memset(ro, 0, sizeof(*ro));
    ro->name = DEFAULT_NAME;
    ro->timeout = DEFAULT_WAIT_S;
    while ((opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (opt) {
        case O_PRIMARY:
            ro->primary = optarg;
            break;
        case O_SOURCE:
            ro->source = optarg;
            break;
        case O_SUBCONN:
        case O_TIMEOUT:
        case O_INSECURE:
            if (!setup) {
                usage_error(cmd, "%s", "invalid option for \"replica teardown\"");
                return PARSE_BAD;
            }
            if (opt == O_SUBCONN) {
                ro->sub_conninfo = optarg;
            } else if (opt == O_INSECURE) {
                ro->allow_insecure = 1;
            } else {
                char *end;

                errno = 0;
                ro->timeout = strtod(optarg, &end);
                if (errno != 0 || end == optarg || *end != '\0' || ro->timeout <= 0 ||
                    ro->timeout > 1e6) {
                    usage_error(cmd, "--timeout takes seconds above 0, not \"%s\"", optarg);
                    return PARSE_BAD;
                }
            }
            break;
        case O_NAME:
            ro->name = optarg;
            break;
        case 'h':
            if (setup)
                setup_help();
            else
                teardown_help();
            return PARSE_HELP;
        default:
            usage_error(cmd, "invalid option for \"replica %s\"", cmd);
            return PARSE_BAD;
        }
    }
    if (optind < argc) {
        usage_error(cmd, "unexpected argument \"%s\"", argv[optind]);
        return PARSE_BAD;
    }
    if (ro->primary == NULL || *ro->primary == '\0' || ro->source == NULL || *ro->source == '\0') {
        usage_error(cmd, "replica %s needs --primary CONNINFO and --source CONNINFO", cmd);
        return PARSE_BAD;
    }
    if (!name_valid(ro->name)) {
        usage_error(cmd,
                    "invalid --name \"%.64s\": use lower-case letters, digits and underscores, "
                    "at most %d of them",
                    ro->name, NAME_MAX_LEN);
        return PARSE_BAD;
    }
    if (ro->sub_conninfo == NULL)
        ro->sub_conninfo = ro->primary;
    snprintf(ro->object, sizeof(ro->object), "%s%s", OBJECT_PREFIX, ro->name);
    return PARSE_OK;
}

/* ------------------------------------------------------------------ */
/* Small queries */

/* One row of a query with up to two text parameters. */
static int query_row(PGconn *conn, PGresult **res, const char *what, const char *sql,
                     const char *p1, const char *p2)
{
    const char *params[2] = {p1, p2};
    int rc = walq__query(conn, res, what, sql, p2 ? 2 : (p1 ? 1 : 0), params);

    if (rc == 0 && PQntuples(*res) < 1) {
        PQclear(*res);
        *res = NULL;
        return walq__error(WALQ_EQUERY, NULL, "could not %s: no row returned", what);
    }
    return rc;
}

static int is_true(const PGresult *res, int col)
{
    return strcmp(PQgetvalue(res, 0, col), "t") == 0;
}

static int connect_server(PGconn **conn, const char *conninfo)
{
    return walq__connect(conn, conninfo, WALQ__CONN_SQL, "walq replica");
}

/* ------------------------------------------------------------------ */
/* Checks, made before anything is changed */

/*
 * The two connection strings must name two servers: a subscription to its
 * own cluster would wait forever for its slot, and a physical standby of
 * the primary (same system identifier) is read-only.
 */
static int check_distinct(PGconn *pconn, PGconn *sconn)
{
    PGresult *p = NULL, *s = NULL;
    char pname[128], sname[128];
    const char *sql = "SELECT system_identifier::text FROM pg_control_system()";
    int rc;

    rc = query_row(pconn, &p, "read the primary's system identifier", sql, NULL, NULL);
    if (rc == 0)
        rc = query_row(sconn, &s, "read the source's system identifier", sql, NULL, NULL);
    if (rc == 0 && strcmp(PQgetvalue(p, 0, 0), PQgetvalue(s, 0, 0)) == 0)
        rc = walq__error(WALQ_EINVAL,
                         "Give --source another PostgreSQL server, one that accepts writes; a hot "
                         "standby of the primary (PostgreSQL 16 and later) needs no set-up and "
                         "is given to walq consume --source as it is.",
                         "the primary \"%s\" and the source \"%s\" belong to the same cluster "
                         "(system identifier %s)",
                         walq__conn_name(pconn, pname, sizeof(pname)),
                         walq__conn_name(sconn, sname, sizeof(sname)), PQgetvalue(p, 0, 0));
    PQclear(p);
    PQclear(s);
    return rc;
}

/* Settings both servers need: writable, wal_level = logical. */
static int check_server(PGconn *conn, const char *role)
{
    PGresult *res = NULL;
    char name[128];
    int rc;

    rc = query_row(conn, &res, "read the server's settings",
                   "SELECT pg_is_in_recovery(), current_setting('wal_level')", NULL, NULL);
    if (rc != 0)
        return rc;
    walq__conn_name(conn, name, sizeof(name));
    if (is_true(res, 0)) {
        rc = walq__error(WALQ_ESERVER,
                         strcmp(role, "primary") == 0
                             ? "Give --primary the server that takes the writes."
                             : "The subscriber topology needs a source that accepts writes; a "
                               "hot standby (PostgreSQL 16 and later) needs no set-up and is "
                               "given to walq consume --source as it is.",
                         "the %s \"%s\" is a hot standby", role, name);
    } else if (strcmp(PQgetvalue(res, 0, 1), "logical") != 0) {
        char hint[256];

        snprintf(hint, sizeof(hint),
                 "Set wal_level = logical in the %s's postgresql.conf and restart it.", role);
        rc = walq__error(WALQ_ESERVER, hint,
                         "%s requires wal_level = logical, but the %s \"%s\" "
                         "has wal_level = %s",
                         strcmp(role, "primary") == 0 ? "logical replication" : "logical decoding",
                         role, name, PQgetvalue(res, 0, 1));
    }
    PQclear(res);
    return rc;
}

/* Creating a subscription takes a superuser up to PostgreSQL 15. */
static int check_source_role(PGconn *sconn)
{
    PGresult *res = NULL;
    char name[128];
    int v16 = PQserverVersion(sconn) >= 160000;
    int rc;

    rc = query_row(sconn, &res, "read the role's attributes",
                   v16 ? "SELECT rolsuper OR pg_has_role('pg_create_subscription', 'MEMBER'),"
                         " current_user FROM pg_roles WHERE rolname = current_user"
                       : "SELECT rolsuper, current_user FROM pg_roles WHERE rolname = current_user",
                   NULL, NULL);
    if (rc != 0)
        return rc;
    if (!is_true(res, 0))
        rc = walq__error(WALQ_EPERM,
                         v16 ? "Connect to the source as a superuser, or as a member of "
                               "pg_create_subscription that has CREATE on the database."
                             : "Connect to the source as a superuser.",
                         "permission denied to create a subscription on the source \"%s\" as "
                         "role \"%s\"",
                         walq__conn_name(sconn, name, sizeof(name)), PQgetvalue(res, 0, 1));
    PQclear(res);
    return rc;
}

/*
 * A publication of a table takes its owner and CREATE on the database; the
 * tables are created by the schema set-up when they do not exist yet.
 */
static int check_primary_role(PGconn *pconn)
{
    PGresult *res = NULL;
    char name[128];
    int rc;

    rc = query_row(pconn, &res, "read the role's privileges",
                   "SELECT r.rolsuper OR (has_database_privilege(current_database(), 'CREATE')"
                   "       AND coalesce(pg_has_role(c.relowner, 'USAGE'), true)), current_user"
                   "  FROM pg_roles r"
                   "  LEFT JOIN (pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace)"
                   "    ON n.nspname = 'walq' AND c.relname = 'jobs'"
                   " WHERE r.rolname = current_user",
                   NULL, NULL);
    if (rc != 0)
        return rc;
    if (!is_true(res, 0))
        rc = walq__error(WALQ_EPERM,
                         "Connect to the primary as a superuser, or as the owner of the walq "
                         "tables with CREATE on the database.",
                         "permission denied to publish the walq tables on the primary \"%s\" as "
                         "role \"%s\"",
                         walq__conn_name(pconn, name, sizeof(name)), PQgetvalue(res, 0, 1));
    PQclear(res);
    return rc;
}

/* Our subscription on the source, and any other walq set-up there. */
typedef struct sub_state {
    int exists;
    int enabled;
    char conninfo[1024];
    char other[64]; /* another walq subscription in the database, if any */
} sub_state;

static int read_subscription(PGconn *sconn, const replica_opts *ro, sub_state *st)
{
    PGresult *res = NULL;
    int rc;

    memset(st, 0, sizeof(*st));
    rc = walq__query(sconn, &res, "look up the subscription",
                     "SELECT s.subname, s.subenabled, s.subconninfo"
                     "  FROM pg_subscription s JOIN pg_database d ON d.oid = s.subdbid"
                     " WHERE d.datname = current_database()"
                     "   AND (s.subname = $1 OR s.subname LIKE 'walqrepl\\_%')",
                     1, (const char *const[]){ro->object});
    if (rc != 0)
        return rc;
    for (int i = 0; i < PQntuples(res); i++) {
        if (strcmp(PQgetvalue(res, i, 0), ro->object) == 0) {
            st->exists = 1;
            st->enabled = strcmp(PQgetvalue(res, i, 1), "t") == 0;
            snprintf(st->conninfo, sizeof(st->conninfo), "%s", PQgetvalue(res, i, 2));
        } else {
            snprintf(st->other, sizeof(st->other), "%s", PQgetvalue(res, i, 0));
        }
    }
    PQclear(res);
    return 0;
}

/* Two subscriptions would copy the same rows twice. */
static int check_other_subscription(PGconn *sconn, const sub_state *st)
{
    const char *other = st->other + strlen(OBJECT_PREFIX);
    char hint[256], name[128];

    if (st->other[0] == '\0')
        return 0;
    snprintf(hint, sizeof(hint),
             "Use --name %s for that set-up, or tear it down first (walq replica teardown "
             "--name %s ...).",
             other, other);
    return walq__error(WALQ_EINVAL, hint,
                       "the source \"%s\" already has the walq subscription \"%s\"",
                       walq__conn_name(sconn, name, sizeof(name)), st->other);
}

/*
 * A new subscription copies every row of the primary's tables: rows the
 * source has already would collide with them, and the copy would fail over
 * and over.
 */
static int check_source_empty(PGconn *sconn)
{
    PGresult *res = NULL;
    char name[128];
    int rc;

    /* In two steps: a query naming a missing table fails as it is parsed. */
    rc = query_row(sconn, &res, "look for walq.jobs on the source",
                   "SELECT to_regclass('walq.jobs') IS NOT NULL"
                   "   AND to_regclass('walq.commands') IS NOT NULL",
                   NULL, NULL);
    if (rc != 0 || !is_true(res, 0)) {
        PQclear(res);
        return rc;
    }
    PQclear(res);
    rc =
        query_row(sconn, &res, "look at the source's copy of walq.jobs",
                  "SELECT EXISTS (SELECT 1 FROM walq.jobs) OR EXISTS (SELECT 1 FROM walq.commands)",
                  NULL, NULL);
    if (rc != 0)
        return rc;
    if (is_true(res, 0))
        rc = walq__error(
            WALQ_EINVAL,
            "A new subscription copies every job from the primary.  If these rows are an old "
            "copy, empty the tables on the source (SET walq.allow_write = on; TRUNCATE "
            "walq.jobs, walq.commands) and drop its group slots, or set up a fresh database.",
            "the source \"%s\" has rows in walq.jobs or walq.commands already, and no "
            "subscription that fills them",
            walq__conn_name(sconn, name, sizeof(name)));
    PQclear(res);
    return rc;
}

/*
 * The subscription keeps one slot and one walsender on the primary, and
 * takes one more of each while it copies a table.
 */
static int check_primary_room(PGconn *pconn, int own_slot)
{
    PGresult *res = NULL;
    char name[128];
    int rc, max_slots, slots, max_senders, senders;

    rc = query_row(pconn, &res, "read the primary's replication settings",
                   "SELECT current_setting('max_replication_slots')::int,"
                   "       (SELECT count(*) FROM pg_replication_slots)::int,"
                   "       current_setting('max_wal_senders')::int,"
                   "       (SELECT count(*) FROM pg_stat_activity"
                   "         WHERE backend_type = 'walsender')::int",
                   NULL, NULL);
    if (rc != 0)
        return rc;
    max_slots = atoi(PQgetvalue(res, 0, 0));
    slots = atoi(PQgetvalue(res, 0, 1)) - own_slot;
    max_senders = atoi(PQgetvalue(res, 0, 2));
    senders = atoi(PQgetvalue(res, 0, 3));
    PQclear(res);
    walq__conn_name(pconn, name, sizeof(name));
    if (max_slots - slots < 2)
        return walq__error(WALQ_ESERVER,
                           "Raise max_replication_slots on the primary and restart it: the "
                           "subscription keeps one slot there and uses another while it copies "
                           "the tables.",
                           "the primary \"%s\" has too few free replication slots for the "
                           "subscription: max_replication_slots = %d, %d in use",
                           name, max_slots, slots);
    if (max_senders - senders < 2)
        return walq__error(WALQ_ESERVER,
                           "Raise max_wal_senders on the primary and restart it: the "
                           "subscription keeps one walsender busy there and uses another while "
                           "it copies the tables.",
                           "the primary \"%s\" has too few free walsenders for the subscription: "
                           "max_wal_senders = %d, %d in use",
                           name, max_senders, senders);
    return 0;
}

/*
 * A slot of our name on the primary with no subscription on the source is
 * left from an earlier attempt; CREATE SUBSCRIPTION would fail on it.
 * *own_slot says whether there is one, to be dropped.
 */
static int find_stale_slot(PGconn *pconn, const replica_opts *ro, int *own_slot)
{
    PGresult *res = NULL;
    char name[128];
    int rc;

    *own_slot = 0;
    rc = walq__query(pconn, &res, "look up the subscription's slot",
                     "SELECT active_pid::text FROM pg_replication_slots WHERE slot_name = $1", 1,
                     (const char *const[]){ro->object});
    if (rc != 0 || PQntuples(res) == 0) {
        PQclear(res);
        return rc;
    }
    *own_slot = 1;
    if (!PQgetisnull(res, 0, 0)) {
        rc = walq__error(WALQ_EBUSY,
                         "Another subscription uses it: find it with SELECT * FROM "
                         "pg_stat_replication on the primary, or choose another --name.",
                         "replication slot \"%s\" on the primary \"%s\" is in use by process %s",
                         ro->object, walq__conn_name(pconn, name, sizeof(name)),
                         PQgetvalue(res, 0, 0));
        PQclear(res);
        return rc;
    }
    PQclear(res);
    return 0;
}

/* ------------------------------------------------------------------ */
/* Set-up steps */

static int init_schema(PGconn *conn, const char *role)
{
    char name[128];
    int applied = 0;
    int rc = walq__schema_init(conn, &applied);

    if (rc != 0)
        return rc;
    walq__conn_name(conn, name, sizeof(name));
    if (applied)
        say("%s \"%s\": applied %d migration%s; schema \"walq\" is up to date", role, name, applied,
            applied == 1 ? "" : "s");
    else
        say("%s \"%s\": schema \"walq\" is already up to date", role, name);
    return 0;
}

/*
 * walq.generations comes along so that the source's partitions of walq.jobs
 * follow the primary's (sql/repeatable/70_replica.sql); walq.jobs is
 * published as itself, not as its partitions.
 */
static const char *const published_tables[] = {"walq.jobs", "walq.commands", "walq.generations"};

/*
 * The source's copies change only through the subscription.  A row inserted
 * there by hand would run in the groups there without being a job on the
 * primary, and its id would later collide with a replicated job and stop
 * the replication.  The subscription's workers run with
 * session_replication_role = replica, which ordinary triggers do not fire
 * for, so this trigger stops everyone else.  walq.allow_write = on lets
 * maintenance through.
 */
static const char guard_function_sql[] =
    "SET LOCAL client_min_messages = warning;"
    "CREATE OR REPLACE FUNCTION walq.replica_guard() RETURNS trigger"
    " LANGUAGE plpgsql AS $$"
    "BEGIN"
    "    IF current_setting('walq.allow_write', true) = 'on' THEN"
    "        RETURN NULL;"
    "    END IF;"
    "    RAISE EXCEPTION 'table %.% on this server is a copy of the primary''s',"
    "                    TG_TABLE_SCHEMA, TG_TABLE_NAME"
    "        USING ERRCODE = 'read_only_sql_transaction',"
    "              HINT = format('Publish, retry and cancel jobs on the primary;"
    " subscription \"%s\" copies them here.', TG_ARGV[0]);"
    "END $$;";

static const char unguard_sql[] = "SET LOCAL client_min_messages = warning;"
                                  "DROP TRIGGER IF EXISTS walqrepl_guard ON walq.jobs;"
                                  "DROP TRIGGER IF EXISTS walqrepl_guard ON walq.commands;"
                                  "DROP TRIGGER IF EXISTS walqrepl_guard ON walq.generations;"
                                  "DROP FUNCTION IF EXISTS walq.replica_guard();";

/*
 * Triggers in place are left alone: dropping one locks its table against
 * everything, the subscription's inserts and the consumers' backlog reads
 * included.
 */
static int guard_source(PGconn *sconn, const replica_opts *ro)
{
    walq__buf sql = {0};
    PGresult *res = NULL;
    int rc, in_place;

    rc = query_row(sconn, &res, "look for the triggers that protect the source's copies",
                   "SELECT count(*) = 3 FROM pg_trigger"
                   " WHERE tgname = 'walqrepl_guard'"
                   "   AND tgrelid IN ('walq.jobs'::regclass, 'walq.commands'::regclass,"
                   "                   'walq.generations'::regclass)"
                   "   AND position(format('walq.replica_guard(%L)', $1::text)"
                   "                IN pg_get_triggerdef(oid)) > 0",
                   ro->object, NULL);
    if (rc != 0)
        return rc;
    in_place = is_true(res, 0);
    PQclear(res);
    rc = walq__buf_puts(&sql, guard_function_sql);
    for (size_t t = 0; rc == 0 && !in_place && t < WALQ__ARRAY_SIZE(published_tables); t++)
        rc = walq__buf_printf(&sql,
                              "DROP TRIGGER IF EXISTS walqrepl_guard ON %s;"
                              "CREATE TRIGGER walqrepl_guard"
                              " BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON %s"
                              " FOR EACH STATEMENT EXECUTE FUNCTION walq.replica_guard('%s');",
                              published_tables[t], published_tables[t], ro->object);
    if (rc != 0) {
        walq__buf_free(&sql);
        return walq__error(WALQ_ENOMEM, NULL, "out of memory");
    }
    rc = walq__exec(sconn, "begin", "BEGIN");
    if (rc == 0)
        rc = walq__exec(sconn, "protect the source's copies of the walq tables", sql.data);
    if (rc == 0)
        rc = walq__exec(sconn, "commit", "COMMIT");
    else
        PQclear(PQexec(sconn, "ROLLBACK"));
    walq__buf_free(&sql);
    return rc;
}

/* "walq.jobs, walq.commands, walq.generations" */
static int published_list(walq__buf *b)
{
    int rc = 0;

    for (size_t t = 0; rc == 0 && t < WALQ__ARRAY_SIZE(published_tables); t++)
        rc = walq__buf_printf(b, "%s%s", t ? ", " : "", published_tables[t]);
    return rc;
}

/*
 * Creates the publication, or makes it publish what it should, as it
 * should; *changed says if it did.
 */
static int ensure_publication(PGconn *pconn, const replica_opts *ro, int *changed)
{
    PGresult *res = NULL;
    walq__buf sql = {0}, list = {0};
    int rc, exists, right = 0;

    *changed = 0;
    rc = walq__query(pconn, &res, "look up the publication",
                     "SELECT p.pubviaroot, p.puballtables,"
                     "       coalesce(array_agg(t.schemaname || '.' || t.tablename"
                     "                          ORDER BY t.schemaname, t.tablename)"
                     "                FILTER (WHERE t.tablename IS NOT NULL), '{}')::text"
                     "  FROM pg_publication p"
                     "  LEFT JOIN pg_publication_tables t ON t.pubname = p.pubname"
                     " WHERE p.pubname = $1 GROUP BY p.pubname, p.pubviaroot, p.puballtables",
                     1, (const char *const[]){ro->object});
    if (rc != 0)
        return rc;
    exists = PQntuples(res) > 0;
    if (exists)
        right = strcmp(PQgetvalue(res, 0, 0), "t") == 0 &&
                strcmp(PQgetvalue(res, 0, 2), "{walq.commands,walq.generations,walq.jobs}") == 0;
    PQclear(res);
    if (right) {
        say("primary: publication \"%s\" exists", ro->object);
        return 0;
    }
    rc = published_list(&list);
    if (rc == 0 && !exists)
        rc = walq__buf_printf(&sql,
                              "CREATE PUBLICATION %s FOR TABLE %s"
                              " WITH (publish_via_partition_root = true)",
                              ro->object, list.data);
    else if (rc == 0)
        rc = walq__buf_printf(&sql,
                              "ALTER PUBLICATION %s SET TABLE %s;"
                              "ALTER PUBLICATION %s SET (publish_via_partition_root = true)",
                              ro->object, list.data, ro->object);
    if (rc != 0) {
        walq__buf_free(&sql);
        walq__buf_free(&list);
        return walq__error(WALQ_ENOMEM, NULL, "out of memory");
    }
    rc = walq__exec(pconn,
                    exists ? "make the publication publish the walq tables"
                           : "create the publication on the primary",
                    sql.data);
    walq__buf_free(&sql);
    if (rc == 0) {
        *changed = 1;
        say("primary: %s publication \"%s\" for %s", exists ? "changed" : "created", ro->object,
            list.data);
    }
    walq__buf_free(&list);
    return rc;
}

/*
 * The source's walq.generations as the primary's, and a partition of the
 * source's tables for each generation the primary has, before rows of them
 * come.  A new subscription copies walq.generations itself (its copy is
 * emptied for it here); an existing one that did not have it gets its rows
 * from here (copy_rows).
 */
static int follow_generations(PGconn *pconn, PGconn *sconn, int copy_rows)
{
    PGresult *res = NULL, *r = NULL;
    char gens[8192] = "", rows[1 << 16] = "";
    int rc;

    rc = walq__query(pconn, &res, "read the primary's generations",
                     "SELECT coalesce(array_agg(generation) FILTER (WHERE retired_at IS NULL),"
                     "                '{}')::text,"
                     "       coalesce(json_agg(g), '[]')::text FROM walq.generations g",
                     0, NULL);
    if (rc != 0)
        return rc;
    if ((size_t)PQgetlength(res, 0, 0) >= sizeof(gens) ||
        (size_t)PQgetlength(res, 0, 1) >= sizeof(rows))
        rc = walq__error(WALQ_EINVAL, "Let the consumers retire the finished generations first.",
                         "the primary has too many generations to copy");
    if (rc == 0) {
        snprintf(gens, sizeof(gens), "%s", PQgetvalue(res, 0, 0));
        snprintf(rows, sizeof(rows), "%s", PQgetvalue(res, 0, 1));
    }
    PQclear(res);
    if (rc == 0)
        rc = walq__exec(sconn, "begin", "BEGIN");
    if (rc == 0)
        rc = walq__exec(sconn, "empty the source's generations",
                        "SET LOCAL walq.allow_write = on; TRUNCATE walq.generations");
    if (rc == 0 && copy_rows) {
        rc = walq__query(sconn, &r, "copy the primary's generations",
                         "INSERT INTO walq.generations"
                         " SELECT * FROM json_populate_recordset(NULL::walq.generations, $1::json)",
                         1, (const char *const[]){rows});
        PQclear(r);
        r = NULL;
    }
    if (rc == 0) {
        rc = walq__query(sconn, &r, "make the source's partitions",
                         "SELECT walq.make_partitions(g) FROM unnest($1::int[]) AS g", 1,
                         (const char *const[]){gens});
        PQclear(r);
    }
    if (rc == 0)
        rc = walq__exec(sconn, "commit", "COMMIT");
    else
        PQclear(PQexec(sconn, "ROLLBACK"));
    if (rc == 0)
        say("source: partitions of walq.jobs for the primary's generations %s", gens);
    return rc;
}

/* Says what went wrong when the source could not create the subscription. */
static int subscription_error(PGconn *sconn, const PGresult *res, const replica_opts *ro,
                              const char *what)
{
    char msg[1024], name[128];
    const char *hint = NULL;

    walq__pg_message(sconn, res, msg, sizeof(msg));
    walq__conn_name(sconn, name, sizeof(name));
    if (strstr(msg, "superuser or replication role") != NULL ||
        strstr(msg, "REPLICATION attribute") != NULL)
        hint = "The subscription connects to the primary as the role of its connection string, "
               "which needs the REPLICATION attribute (ALTER ROLE name REPLICATION).";
    else if (strstr(msg, "pg_hba.conf") != NULL)
        hint = "Allow replication connections from the source's address for this role and "
               "database in the primary's pg_hba.conf.";
    else if (strstr(msg, "password is required") != NULL)
        hint = "Put the role's password in the connection string of --subscription-conninfo.";
    else if (strstr(msg, "could not connect to the publisher") != NULL)
        hint = "The source server connects to the primary itself, from its own host and as the "
               "operating system user it runs as: give it a connection string that works there "
               "with --subscription-conninfo.";
    else if (strstr(msg, "replication slots are in use") != NULL)
        hint = "Raise max_replication_slots on the primary and restart it.";
    else if (strstr(msg, "max_wal_senders") != NULL)
        hint = "Raise max_wal_senders on the primary and restart it.";
    else if (strstr(msg, "wal_level") != NULL)
        hint = "Set wal_level = logical in the primary's postgresql.conf and restart it.";
    else if (strstr(msg, "must be superuser") != NULL || strstr(msg, "permission denied") != NULL)
        hint = "Connect to the source as a superuser.";
    return walq__error(WALQ_EQUERY, hint, "could not %s \"%s\" on the source \"%s\": %s", what,
                       ro->object, name, msg);
}

static int exec_subscription(PGconn *sconn, const replica_opts *ro, const char *what,
                             const char *sql)
{
    PGresult *res = PQexec(sconn, sql);
    int rc = 0;

    if (PQresultStatus(res) != PGRES_COMMAND_OK)
        rc = subscription_error(sconn, res, ro, what);
    PQclear(res);
    return rc;
}

/*
 * A conninfo value in single quotes, with \ and ' escaped as libpq reads
 * them.
 */
static int put_conninfo_value(walq__buf *b, const char *v)
{
    int rc = walq__buf_puts(b, "'");

    for (; *v && rc == 0; v++) {
        if (*v == '\\' || *v == '\'')
            rc = walq__buf_puts(b, "\\");
        if (rc == 0)
            rc = walq__buf_printf(b, "%c", *v);
    }
    return rc ? rc : walq__buf_puts(b, "'");
}

/* The TLS settings: what travels from the environment into the subscription. */
static int is_tls_keyword(const char *kw)
{
    return strncmp(kw, "ssl", 3) == 0 || strcmp(kw, "requiressl") == 0;
}

/* Settings naming a file, made absolute: the source server reads them from its data directory. */
static int is_file_keyword(const char *kw)
{
    return strcmp(kw, "sslcert") == 0 || strcmp(kw, "sslkey") == 0 ||
           strcmp(kw, "sslrootcert") == 0 || strcmp(kw, "sslcrl") == 0 ||
           strcmp(kw, "sslcrldir") == 0;
}

/*
 * The subscription's connection string, in ro->sub_text: the settings of
 * --subscription-conninfo (or --primary) as they were written, and each
 * TLS setting that this environment gives (PGSSLMODE, PGSSLROOTCERT,
 * PGSSLCERT, PGSSLKEY, PGSSLCRL, ...) and the string does not, written out:
 * explicit settings win, then the environment, as in libpq.  The source
 * server's own processes make the connection, and they have none of the
 * caller's environment.  Nothing else comes from the environment: a
 * password from PGPASSWORD or a password file is not copied into
 * pg_subscription, where it would be kept in clear; one written in
 * --primary is, since it was given for this.
 *
 * The subscription must verify the primary's certificate (sslmode
 * verify-ca or verify-full) unless --allow-insecure-subscription says
 * otherwise.  No message here shows the string: it may hold a password.
 */
static int subscription_conninfo(replica_opts *ro)
{
    PQconninfoOption *given, *defaults = NULL;
    walq__buf b = {0};
    char sslmode[32] = "", *err = NULL, cwd[4096];
    int rc = 0, n = 0;

    given = PQconninfoParse(ro->sub_conninfo, &err);
    if (given == NULL) {
        PQfreemem(err);
        return walq__error(WALQ_EINVAL,
                           "Give it as keyword=value pairs or as a postgresql:// URI, as libpq "
                           "takes it.",
                           "invalid connection string for the subscription (%s)",
                           ro->sub_conninfo == ro->primary ? "--primary"
                                                           : "--subscription-conninfo");
    }
    defaults = PQconndefaults();
    if (getcwd(cwd, sizeof(cwd)) == NULL)
        cwd[0] = '\0';
    for (PQconninfoOption *o = given; o->keyword != NULL && rc == 0; o++) {
        const char *v = o->val;

        if (v == NULL && is_tls_keyword(o->keyword) && defaults != NULL) {
            for (PQconninfoOption *d = defaults; d->keyword != NULL; d++) {
                if (strcmp(d->keyword, o->keyword) == 0 && d->envvar != NULL) {
                    v = getenv(d->envvar);
                    break;
                }
            }
            if (v != NULL && *v == '\0')
                v = NULL;
        }
        if (v == NULL)
            continue;
        if (strcmp(o->keyword, "sslmode") == 0)
            snprintf(sslmode, sizeof(sslmode), "%s", v);
        if (n++ > 0)
            rc = walq__buf_puts(&b, " ");
        if (rc == 0)
            rc = walq__buf_printf(&b, "%s=", o->keyword);
        if (rc == 0 && is_file_keyword(o->keyword) && v[0] != '/' && strcmp(v, "system") != 0 &&
            cwd[0] != '\0') {
            walq__buf path = {0};

            rc = walq__buf_printf(&path, "%s/%s", cwd, v);
            if (rc == 0)
                rc = put_conninfo_value(&b, path.data);
            walq__buf_free(&path);
        } else if (rc == 0) {
            rc = put_conninfo_value(&b, v);
        }
    }
    PQconninfoFree(given);
    if (defaults != NULL)
        PQconninfoFree(defaults);
    if (rc != 0) {
        walq__buf_free(&b);
        return walq__error(WALQ_ENOMEM, NULL, "out of memory");
    }
    if (!ro->allow_insecure && strcmp(sslmode, "verify-ca") != 0 &&
        strcmp(sslmode, "verify-full") != 0) {
        walq__buf_free(&b);
        return walq__error(
            WALQ_EINVAL,
            "Give sslmode=verify-full and sslrootcert=FILE (the CA's certificate, a path on the "
            "source's host) in --primary or --subscription-conninfo, or set PGSSLMODE and "
            "PGSSLROOTCERT; or, over a unix socket or a network you trust, pass "
            "--allow-insecure-subscription.",
            "the subscription would connect to the primary with sslmode \"%s\", which does not "
            "verify the primary's certificate",
            *sslmode ? sslmode : "prefer");
    }
    ro->sub_text = b.data ? b.data : walq__strdup("");
    return ro->sub_text ? 0 : walq__error(WALQ_ENOMEM, NULL, "out of memory");
}

static int ensure_subscription(PGconn *sconn, const replica_opts *ro, const sub_state *st,
                               int pub_changed)
{
    walq__buf sql = {0};
    char *lit;
    int rc = 0;

    lit = PQescapeLiteral(sconn, ro->sub_text, strlen(ro->sub_text));
    if (lit == NULL)
        return walq__error(WALQ_ENOMEM, NULL, "out of memory");
    if (!st->exists) {
        /* Runs outside a transaction: it creates the slot on the primary. */
        if (walq__buf_printf(&sql,
                             "CREATE SUBSCRIPTION %s CONNECTION %s PUBLICATION %s"
                             " WITH (slot_name = '%s')",
                             ro->object, lit, ro->object, ro->object) != 0)
            rc = walq__error(WALQ_ENOMEM, NULL, "out of memory");
        if (rc == 0)
            rc = exec_subscription(sconn, ro, "create subscription", sql.data);
        if (rc == 0)
            say("source: created subscription \"%s\", with replication slot \"%s\" on the "
                "primary",
                ro->object, ro->object);
        goto done;
    }
    say("source: subscription \"%s\" exists", ro->object);
    if (strcmp(st->conninfo, ro->sub_text) != 0) {
        if (walq__buf_printf(&sql, "ALTER SUBSCRIPTION %s CONNECTION %s", ro->object, lit) != 0)
            rc = walq__error(WALQ_ENOMEM, NULL, "out of memory");
        if (rc == 0)
            rc = exec_subscription(sconn, ro, "change the connection string of subscription",
                                   sql.data);
        if (rc != 0)
            goto done;
        say("source: subscription \"%s\" now connects with the new connection string", ro->object);
    }
    if (!st->enabled) {
        walq__buf_reset(&sql);
        if (walq__buf_printf(&sql, "ALTER SUBSCRIPTION %s ENABLE", ro->object) != 0)
            rc = walq__error(WALQ_ENOMEM, NULL, "out of memory");
        if (rc == 0)
            rc = exec_subscription(sconn, ro, "enable subscription", sql.data);
        if (rc != 0)
            goto done;
        say("source: enabled subscription \"%s\"", ro->object);
    }
    if (pub_changed) {
        /*
         * The publication changed when the primary's walq.jobs became
         * partitioned (sql/007): its rows are here already, in the
         * partitions they were in, and are not copied again.
         */
        walq__buf_reset(&sql);
        if (walq__buf_printf(&sql,
                             "ALTER SUBSCRIPTION %s REFRESH PUBLICATION"
                             " WITH (copy_data = false)",
                             ro->object) != 0)
            rc = walq__error(WALQ_ENOMEM, NULL, "out of memory");
        if (rc == 0)
            rc = exec_subscription(sconn, ro, "refresh subscription", sql.data);
        if (rc == 0)
            say("source: subscription \"%s\" refreshed for the new tables", ro->object);
    }

done:
    PQfreemem(lit);
    walq__buf_free(&sql);
    return rc;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};

    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* One row: tables, tables ready, those not ready, errors so far, apply worker running. */
#define SUBSCRIPTION_STATE(errors)                                                                 \
    "SELECT count(r.srrelid), count(r.srrelid) FILTER (WHERE r.srsubstate = 'r'),"                 \
    "       coalesce(string_agg(r.srrelid::regclass::text || ' (state ' || r.srsubstate::text"     \
    "                           || ')', ', ') FILTER (WHERE r.srsubstate <> 'r'), ''),"            \
    "       " errors ","                                                                           \
    "       EXISTS (SELECT 1 FROM pg_stat_subscription w"                                          \
    "                WHERE w.subid = s.oid AND w.relid IS NULL AND w.pid IS NOT NULL)"             \
    "  FROM pg_subscription s LEFT JOIN pg_subscription_rel r ON r.srsubid = s.oid"                \
    " WHERE s.subname = $1 AND s.subdbid = (SELECT oid FROM pg_database"                           \
    "                                        WHERE datname = current_database())"                  \
    " GROUP BY s.oid"

/*
 * Waits until every table of the subscription is ready (pg_subscription_rel
 * state 'r') and its apply worker runs: the initial copy is over and every
 * change streams.  A copy or apply error counted in the meantime fails at
 * once, since such errors repeat until someone removes their cause.
 */
static int wait_for_copy(PGconn *sconn, const replica_opts *ro)
{
    /* pg_stat_subscription_stats is new in PostgreSQL 15. */
    const char *query =
        PQserverVersion(sconn) >= 150000
            ? SUBSCRIPTION_STATE("(SELECT apply_error_count + sync_error_count"
                                 "   FROM pg_stat_subscription_stats WHERE subname = $1)")
            : SUBSCRIPTION_STATE("0");
    char name[128], pending[512] = "";
    int64_t deadline = walq__mono_us() + (int64_t)(ro->timeout * 1e6);
    long long errors0 = -1;
    int said = 0;

    walq__conn_name(sconn, name, sizeof(name));
    for (;;) {
        PGresult *res = NULL;
        int rc =
            query_row(sconn, &res, "read the state of the subscription", query, ro->object, NULL);
        long long nerr;
        int total, ready, applying;

        if (rc != 0)
            return rc;
        total = atoi(PQgetvalue(res, 0, 0));
        ready = atoi(PQgetvalue(res, 0, 1));
        snprintf(pending, sizeof(pending), "%s", PQgetvalue(res, 0, 2));
        nerr = PQgetisnull(res, 0, 3) ? 0 : strtoll(PQgetvalue(res, 0, 3), NULL, 10);
        applying = is_true(res, 4);
        PQclear(res);
        if (total > 0 && ready == total && applying)
            return 0;
        if (total > 0 && ready == total)
            snprintf(pending, sizeof(pending), "%s", "its apply worker is not running");
        else if (*pending)
            snprintf(pending + strlen(pending), sizeof(pending) - strlen(pending), " %s",
                     "not ready");
        else
            snprintf(pending, sizeof(pending), "%s", "no table to copy");
        if (errors0 < 0)
            errors0 = nerr;
        if (nerr > errors0)
            return walq__error(WALQ_ESERVER,
                               "The source's server log says why.  A copy fails when the "
                               "source's tables already hold rows of the primary; running "
                               "\"walq replica setup\" again waits for the copy again.",
                               "the logical replication workers of subscription \"%s\" on the "
                               "source \"%s\" failed: %s",
                               ro->object, name, pending);
        if (walq__mono_us() >= deadline)
            return walq__error(WALQ_ESERVER,
                               "The source's server log tells what its logical replication "
                               "workers do; check max_logical_replication_workers and "
                               "max_worker_processes there.  Running \"walq replica setup\" "
                               "again waits for the copy again.",
                               "subscription \"%s\" on the source \"%s\" was not ready within "
                               "%g seconds: %s",
                               ro->object, name, ro->timeout, pending);
        if (!said) {
            say("source: waiting for the initial copy of %s, %s, %s", published_tables[0],
                published_tables[1], published_tables[2]);
            said = 1;
        }
        sleep_ms(100);
    }
}

static int replica_setup(int argc, char **argv)
{
    replica_opts ro;
    PGconn *pconn = NULL, *sconn = NULL;
    PGresult *res = NULL;
    sub_state st;
    int rc, own_slot = 0, pub_changed = 0;

    switch (parse_opts(argc, argv, 1, &ro)) {
    case PARSE_HELP:
        return 0;
    case PARSE_BAD:
        return EXIT_USAGE;
    case PARSE_OK:
        break;
    }
    /* Everything is checked on both servers before anything is changed. */
    rc = subscription_conninfo(&ro);
    if (rc == 0)
        rc = connect_server(&sconn, ro.source);
    if (rc == 0)
        rc = connect_server(&pconn, ro.primary);
    if (rc == 0)
        rc = check_distinct(pconn, sconn);
    if (rc == 0)
        rc = check_server(sconn, "source");
    if (rc == 0)
        rc = check_source_role(sconn);
    if (rc == 0)
        rc = check_server(pconn, "primary");
    if (rc == 0)
        rc = check_primary_role(pconn);
    if (rc == 0)
        rc = read_subscription(sconn, &ro, &st);
    if (rc == 0)
        rc = check_other_subscription(sconn, &st);
    if (rc == 0 && !st.exists)
        rc = check_source_empty(sconn);
    if (rc == 0 && !st.exists)
        rc = find_stale_slot(pconn, &ro, &own_slot);
    if (rc == 0 && !st.exists)
        rc = check_primary_room(pconn, own_slot);
    if (rc != 0)
        goto done;

    /*
     * The source first: a new version of the schema may add a column, which
     * the subscription can copy only once the source has it too.
     */
    rc = init_schema(sconn, "source");
    if (rc == 0)
        rc = guard_source(sconn, &ro);
    if (rc == 0)
        rc = init_schema(pconn, "primary");
    if (rc == 0 && own_slot) {
        rc =
            walq__query(pconn, &res, "drop the replication slot left on the primary",
                        "SELECT pg_drop_replication_slot($1)", 1, (const char *const[]){ro.object});
        PQclear(res);
        if (rc == 0)
            say("primary: dropped replication slot \"%s\", left without its subscription",
                ro.object);
    }
    if (rc == 0)
        rc = ensure_publication(pconn, &ro, &pub_changed);
    if (rc == 0 && (!st.exists || pub_changed))
        rc = follow_generations(pconn, sconn, st.exists);
    if (rc == 0)
        rc = ensure_subscription(sconn, &ro, &st, pub_changed);
    if (rc == 0)
        rc = wait_for_copy(sconn, &ro);
    if (rc == 0)
        rc = query_row(sconn, &res, "count the jobs on the source",
                       "SELECT count(*) FROM walq.jobs", NULL, NULL);
    if (rc == 0) {
        char pname[128], sname[128];

        say("source: initial copy done; the source has %s job%s", PQgetvalue(res, 0, 0),
            strcmp(PQgetvalue(res, 0, 0), "1") == 0 ? "" : "s");
        PQclear(res);
        say("ready: consumers read from the source \"%s\" and record outcomes on the primary "
            "\"%s\" (walq consume --source ... --primary ...)",
            walq__conn_name(sconn, sname, sizeof(sname)),
            walq__conn_name(pconn, pname, sizeof(pname)));
    }

done:
    if (rc != 0)
        walq__cli_fail(rc);
    if (pconn)
        PQfinish(pconn);
    if (sconn)
        PQfinish(sconn);
    free(ro.sub_text);
    return rc == 0 ? 0 : 1;
}

/* ------------------------------------------------------------------ */
/* Teardown */

static int drop_subscription(PGconn *sconn, const replica_opts *ro)
{
    walq__buf sql = {0};
    sub_state st;
    int rc = read_subscription(sconn, ro, &st);

    if (rc != 0)
        return rc;
    if (!st.exists) {
        say("source: no subscription \"%s\"", ro->object);
        return 0;
    }
    /* Drops the slot on the primary too, through the subscription's connection. */
    if (walq__buf_printf(&sql, "DROP SUBSCRIPTION %s", ro->object) != 0)
        return walq__error(WALQ_ENOMEM, NULL, "out of memory");
    {
        PGresult *res = PQexec(sconn, sql.data);

        if (PQresultStatus(res) != PGRES_COMMAND_OK) {
            char msg[1024], name[128], hint[512];

            walq__pg_message(sconn, res, msg, sizeof(msg));
            snprintf(hint, sizeof(hint),
                     "When the source cannot reach the primary any more, detach the "
                     "subscription from its slot on the source (ALTER SUBSCRIPTION %s DISABLE; "
                     "ALTER SUBSCRIPTION %s SET (slot_name = NONE)), then run this again: it "
                     "drops the slot on the primary itself.",
                     ro->object, ro->object);
            rc = walq__error(WALQ_EQUERY, hint,
                             "could not drop subscription \"%s\" on the source \"%s\": %s",
                             ro->object, walq__conn_name(sconn, name, sizeof(name)), msg);
        }
        PQclear(res);
    }
    walq__buf_free(&sql);
    if (rc == 0)
        say("source: dropped subscription \"%s\"", ro->object);
    return rc;
}

static int unguard_source(PGconn *sconn)
{
    PGresult *res = NULL;
    int rc, present;

    rc = query_row(sconn, &res, "look for the walq tables",
                   "SELECT to_regclass('walq.jobs') IS NOT NULL"
                   "   AND to_regclass('walq.commands') IS NOT NULL",
                   NULL, NULL);
    if (rc != 0)
        return rc;
    present = is_true(res, 0);
    PQclear(res);
    if (!present)
        return 0;
    rc = walq__exec(sconn, "begin", "BEGIN");
    if (rc == 0)
        rc = walq__exec(sconn, "let writes into the source's walq tables again", unguard_sql);
    if (rc == 0)
        rc = walq__exec(sconn, "commit", "COMMIT");
    else
        PQclear(PQexec(sconn, "ROLLBACK"));
    return rc;
}

static int drop_publication(PGconn *pconn, const replica_opts *ro)
{
    walq__buf sql = {0};
    PGresult *res = NULL;
    int rc, exists;

    rc = walq__query(pconn, &res, "look up the publication",
                     "SELECT 1 FROM pg_publication WHERE pubname = $1", 1,
                     (const char *const[]){ro->object});
    if (rc != 0)
        return rc;
    exists = PQntuples(res) > 0;
    PQclear(res);
    if (!exists) {
        say("primary: no publication \"%s\"", ro->object);
    } else {
        if (walq__buf_printf(&sql, "DROP PUBLICATION %s", ro->object) != 0)
            return walq__error(WALQ_ENOMEM, NULL, "out of memory");
        rc = walq__exec(pconn, "drop the publication on the primary", sql.data);
        walq__buf_free(&sql);
        if (rc != 0)
            return rc;
        say("primary: dropped publication \"%s\"", ro->object);
    }

    /*
     * DROP SUBSCRIPTION drops the slot, unless the subscription had been
     * detached from it.  A walsender still on it goes away within moments.
     */
    for (int tries = 0;; tries++) {
        const char *pid;

        rc = walq__query(pconn, &res, "look up the subscription's slot",
                         "SELECT active_pid::text FROM pg_replication_slots WHERE slot_name = $1",
                         1, (const char *const[]){ro->object});
        if (rc != 0)
            return rc;
        if (PQntuples(res) == 0) {
            PQclear(res);
            return 0;
        }
        if (PQgetisnull(res, 0, 0))
            break;
        if (tries >= 100) {
            char name[128];

            pid = PQgetvalue(res, 0, 0);
            rc = walq__error(WALQ_EBUSY,
                             "Find the subscription that reads it in pg_stat_replication on the "
                             "primary.",
                             "replication slot \"%s\" on the primary \"%s\" is still in use by "
                             "process %s",
                             ro->object, walq__conn_name(pconn, name, sizeof(name)), pid);
            PQclear(res);
            return rc;
        }
        PQclear(res);
        sleep_ms(100);
    }
    PQclear(res);
    rc = walq__query(pconn, &res, "drop the subscription's slot on the primary",
                     "SELECT pg_drop_replication_slot($1)", 1, (const char *const[]){ro->object});
    PQclear(res);
    if (rc == 0)
        say("primary: dropped replication slot \"%s\"", ro->object);
    return rc;
}

/* The group slots stay on the source: say which, and how to drop them. */
static int report_group_slots(PGconn *sconn)
{
    PGresult *res = NULL;
    walq__buf names = {0};
    int rc, n;

    rc = walq__query(sconn, &res, "list the group slots on the source",
                     "SELECT slot_name FROM pg_replication_slots"
                     " WHERE plugin IN ('pgoutput', 'wal2json') AND slot_name ~ '^walq_'"
                     "   AND database = current_database() ORDER BY slot_name",
                     0, NULL);
    if (rc != 0)
        return rc;
    n = PQntuples(res);
    for (int i = 0; i < n && i < 8; i++)
        walq__buf_printf(&names, "%s\"%s\"", i ? ", " : "", PQgetvalue(res, i, 0));
    if (n > 8)
        walq__buf_printf(&names, " and %d more", n - 8);
    if (n > 0) {
        say("source: %d consumer group slot%s stay%s: %s", n, n == 1 ? "" : "s", n == 1 ? "s" : "",
            names.data ? names.data : "");
        say("source: %s WAL on the source; once a group's consumers are stopped for good, "
            "drop its slot there with SELECT pg_drop_replication_slot('%s'), and the "
            "publication of the same name if it has one",
            n == 1 ? "it keeps" : "they keep", PQgetvalue(res, 0, 0));
    }
    PQclear(res);
    walq__buf_free(&names);
    return 0;
}

static int replica_teardown(int argc, char **argv)
{
    replica_opts ro;
    PGconn *pconn = NULL, *sconn = NULL;
    int rc;

    switch (parse_opts(argc, argv, 0, &ro)) {
    case PARSE_HELP:
        return 0;
    case PARSE_BAD:
        return EXIT_USAGE;
    case PARSE_OK:
        break;
    }
    rc = connect_server(&sconn, ro.source);
    if (rc == 0)
        rc = connect_server(&pconn, ro.primary);
    if (rc == 0)
        rc = drop_subscription(sconn, &ro);
    if (rc == 0)
        rc = unguard_source(sconn);
    if (rc == 0)
        rc = drop_publication(pconn, &ro);
    if (rc == 0)
        rc = report_group_slots(sconn);
    if (rc == 0)
        say("the walq schema and its rows stay on both servers");
    else
        walq__cli_fail(rc);
    if (pconn)
        PQfinish(pconn);
    if (sconn)
        PQfinish(sconn);
    return rc == 0 ? 0 : 1;
}

/* ------------------------------------------------------------------ */

static void replica_help(void)
{
    printf("Usage: %s replica COMMAND --primary CONNINFO --source CONNINFO [OPTIONS]\n\n"
           "The subscriber topology: walq.jobs is copied from the primary to another\n"
           "server, the source, by a publication and a subscription, and every consumer\n"
           "group's slot lives on the source.\n\n"
           "Commands:\n"
           "  setup      create or upgrade the schema on both, the publication and the\n"
           "             subscription, and wait for the initial copy\n"
           "  teardown   drop the subscription and the publication, keeping the data\n\n"
           "\"%s replica COMMAND --help\" describes each command.\n",
           progname, progname);
}

int walq__cli_replica(int argc, char **argv)
{
    const char *sub;

    if (argc < 2) {
        usage_error(NULL, "%s", "replica needs a command: setup or teardown");
        return EXIT_USAGE;
    }
    sub = argv[1];
    if (strcmp(sub, "--help") == 0 || strcmp(sub, "-h") == 0 || strcmp(sub, "help") == 0) {
        replica_help();
        return 0;
    }
    /* Each subcommand parses its own options, starting after its name. */
    argc--;
    argv++;
    if (strcmp(sub, "setup") == 0)
        return replica_setup(argc, argv);
    if (strcmp(sub, "teardown") == 0)
        return replica_teardown(argc, argv);
    usage_error(NULL, "unknown replica command \"%s\"", sub);
    return EXIT_USAGE;
}
