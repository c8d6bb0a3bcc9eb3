/*
 * SQL on the connections of an HTTP thread (`walq consume --http`, `walq
 * serve`): every wait for the server bounded, so that a slow or gone server
 * makes a page say so rather than hold it, and a connection that went bad
 * is closed for the next request to make again.
 */
#ifndef WALQ_CLI_WEBDB_H
#define WALQ_CLI_WEBDB_H

#include <stddef.h>

#include <libpq-fe.h>

/*
 * Runs sql with its n params on *conn and waits wait_ms at the most for the
 * answer.  The result (PGRES_TUPLES_OK), to PQclear; or NULL with err
 * saying why (the server's message, one line).  Past the wait, or when the
 * connection broke, *conn is closed and set to NULL.
 */
PGresult *walq__webdb_query(PGconn **conn, int wait_ms, const char *sql, int n,
                            const char *const *params, char *err, size_t errlen);

/*
 * Sets statement_timeout to ms on *conn, so that the server cancels a
 * statement past it itself, waiting wait_ms at the most: 0, or -1 with err
 * (and *conn closed, set to NULL).
 */
int walq__webdb_statement_timeout(PGconn **conn, int ms, int wait_ms, char *err, size_t errlen);

#endif
