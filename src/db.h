/* Connections, queries and the schema: everything that talks plain SQL. */
#ifndef WALQ_DB_H
#define WALQ_DB_H

#include <stdint.h>
#include <libpq-fe.h>

#include "common.h"

typedef struct walq__migration {
    const char *name;
    const char *sql;
} walq__migration;

/* Every migration in sql/, in order, ending with {NULL, NULL}. */
extern const walq__migration walq__migrations[];

/*
 * Every file in sql/repeatable/ (the functions, views and triggers), in
 * order, ending with {NULL, NULL}, and the checksum of the set recorded in
 * walq.repeatables.
 */
extern const walq__migration walq__repeatables[];
extern const char walq__repeatables_checksum[];

/* What a connection is for; decides the parameters added to the conninfo. */
typedef enum walq__conn_kind { WALQ__CONN_SQL = 0, WALQ__CONN_REPLICATION = 1 } walq__conn_kind;

/*
 * Connects with conninfo (NULL or "": the libpq environment).  Replication
 * connections get replication=database and a UTC, ISO session so that the
 * plugin prints timestamps we can parse.  Errors name the server and the fix.
 */
int walq__connect(PGconn **out, const char *conninfo, walq__conn_kind kind, const char *appname);

/* The connect_timeout of a connection whose conninfo and environment set none. */
#define WALQ__CONNECT_TIMEOUT_S "10"

/* The keyword and value arrays walq__connect gives PQconnectdbParams. */
typedef struct walq__conn_params {
    const char *keys[16];
    const char *vals[16]; /* borrowed: static strings, conninfo and appname */
    int n;
} walq__conn_params;

/*
 * Builds the arrays for conninfo (NULL or "": the libpq environment): the
 * string itself first, expanded by libpq, then connect_timeout=10,
 * keepalives=1, keepalives_idle=10, keepalives_interval=5,
 * keepalives_count=3 and tcp_user_timeout=30000 wherever neither the string
 * nor the environment (env: getenv when NULL) sets them, then what a
 * replication connection needs.  A pure function but for libpq's parsing.
 * Returns 0, or WALQ_EINVAL with a message that shows the string with its
 * passwords masked.
 */
int walq__conn_params_build(walq__conn_params *out, const char *conninfo, walq__conn_kind kind,
                            const char *appname, const char *(*env)(const char *name));

/*
 * conninfo (key=value pairs or a URI) for messages, as libpq reads it
 * (PQconninfoParse): the settings it holds as key=value pairs (host, port,
 * user and dbname first), with every password and sslpassword shown as
 * "********", and a dbname that is a connection string masked the same
 * way.  A string libpq cannot read is shown as it is when it could hold no
 * password, else as "********".  outlen bytes at most, NUL-terminated.
 */
void walq__conninfo_mask(const char *conninfo, char *out, size_t outlen);

/* "host:port" or "socket dir:port" of a connection, for messages. */
const char *walq__conn_name(PGconn *conn, char *buf, size_t len);

/* Did this failure come from a lost connection (retry) rather than the SQL? */
int walq__conn_failed(PGconn *conn, const PGresult *res);

/* Runs sql, expecting no rows; on failure returns WALQ_EQUERY with what. */
int walq__exec(PGconn *conn, const char *what, const char *sql);

/*
 * Runs a parameterised query and checks its status; *res is NULL on failure
 * and must be PQclear'ed on success.
 */
/*
 * Checks a result r of a query sent earlier (r may be NULL when the
 * connection broke) the way walq__query does, and takes it over.
 */
int walq__query_result(PGconn *conn, PGresult *r, PGresult **res, const char *what);

/*
 * What a wait on a server does meanwhile, and how long it may last: set by
 * a consumer for its thread, so that while the primary is slow or silent its
 * status updates, handler timeouts and signals go on.  tick runs every
 * tenth of a second or so; when it returns non-zero the wait ends with
 * WALQ_ECANCELED.  A wait that lasts timeout_us (0: no limit) ends with
 * WALQ_ECONN: the connection is then to be given up.
 */
typedef struct walq__waiter {
    int64_t timeout_us;
    int (*tick)(void *arg);
    void *arg;
} walq__waiter;

/* Makes w the calling thread's waiter (NULL: none); returns the one before. */
const walq__waiter *walq__waiter_set(const walq__waiter *w);

/*
 * Sends what a PQsend*() call queued and waits until its results can be
 * read without blocking, within the thread's waiter's bounds.
 */
int walq__wait_result(PGconn *conn, const char *what);

/* The same, then the results checked as walq__query_result does. */
int walq__finish_query(PGconn *conn, PGresult **res, const char *what);

int walq__query(PGconn *conn, PGresult **res, const char *what, const char *sql, int nparams,

                const char *const *params);

/* The message of a failed result or connection, without the trailing newline. */
const char *walq__pg_message(PGconn *conn, const PGresult *res, char *buf, size_t len);

/*
 * Applies the migrations not yet applied, then every repeatable file, in one
 * transaction; *applied receives the count of migrations.  The repeatable
 * files are left out when a newer walq has migrated the database.
 */
int walq__schema_init(PGconn *conn, int *applied);

/* The oldest PostgreSQL walq's schema runs on (CREATE OR REPLACE TRIGGER). */
#define WALQ__MIN_SERVER_VERSION 140000

/*
 * 0 for a server version (PQserverVersion's number) walq's schema runs on;
 * otherwise WALQ_ESERVER, naming the version found and the one needed.
 */
int walq__server_version_check(int version);

/*
 * Fails with a hint to run `walq init` when the schema is missing or old:
 * this program's newest migration is not recorded, or its repeatable set is
 * not while no newer migration is.
 */
int walq__schema_check(PGconn *conn);

/* Appends s to b quoted as an element of a PostgreSQL array literal. */
int walq__buf_array_elem(walq__buf *b, const char *s);

/* Appends s escaped for COPY's text format. */
int walq__buf_copy_text(walq__buf *b, const char *s, size_t n);

#endif
