/* SQL with deadlines on the HTTP threads' connections (see webdb.h). */
#include <errno.h>
#include <poll.h>
#include <stdio.h>

#include "cli/webdb.h"
#include "common.h"
#include "db.h"

/* Closes a connection that can take no more statements. */
static PGresult *drop(PGconn **conn, PGresult *res)
{
    PQclear(res);
    PQfinish(*conn);
    *conn = NULL;
    return NULL;
}

PGresult *walq__webdb_query(PGconn **conn, int wait_ms, const char *sql, int n,
                            const char *const *params, char *err, size_t errlen)
{
    int64_t deadline = walq__mono_us() + (int64_t)wait_ms * 1000;
    PGresult *res = NULL, *r;

    if (!PQsendQueryParams(*conn, sql, n, NULL, params, NULL, NULL, 0))
        goto lost;
    for (;;) {
        struct pollfd pfd = {PQsocket(*conn), POLLIN, 0};
        int64_t left;

        if (!PQconsumeInput(*conn))
            goto lost;
        if (!PQisBusy(*conn)) {
            r = PQgetResult(*conn);
            if (r == NULL)
                break;
            if (res == NULL)
                res = r;
            else
                PQclear(r);
            continue;
        }
        left = deadline - walq__mono_us();
        if (left <= 0) {
            snprintf(err, errlen, "the server did not answer within %d ms", wait_ms);
            return drop(conn, res);
        }
        if (poll(&pfd, 1, (int)(left / 1000) + 1) < 0 && errno != EINTR)
            goto lost;
    }
    if (res == NULL || PQresultStatus(res) != PGRES_TUPLES_OK) {
        if (res == NULL)
            snprintf(err, errlen, "the server sent no result");
        else
            walq__pg_message(*conn, res, err, errlen);
        if (PQstatus(*conn) != CONNECTION_OK)
            return drop(conn, res);
        PQclear(res);
        return NULL;
    }
    return res;
lost:
    walq__pg_message(*conn, NULL, err, errlen);
    return drop(conn, res);
}

int walq__webdb_statement_timeout(PGconn **conn, int ms, int wait_ms, char *err, size_t errlen)
{
    char sql[96];
    PGresult *res;

    snprintf(sql, sizeof(sql), "SELECT set_config('statement_timeout', '%d', false)", ms);
    res = walq__webdb_query(conn, wait_ms, sql, 0, NULL, err, errlen);
    if (res == NULL) {
        if (*conn != NULL) {
            PQfinish(*conn);
            *conn = NULL;
        }
        return -1;
    }
    PQclear(res);
    return 0;
}
