/*
 * The audit trail's JSON: what one insert, update or delete of walq's tables
 * becomes, whichever sink it goes to, and the names an audit may be given.
 */
#ifndef WALQ_AUDIT_FORMAT_H
#define WALQ_AUDIT_FORMAT_H

#include <stddef.h>
#include <stdint.h>

#include <json-c/json.h>

#include "common.h"
#include "decode.h"

/* Audit group names: what follows "walqaudit_" in the slot's name. */
#define WALQ__AUDIT_GROUP_MAX 50

/* ^[a-z0-9_]{1,50}$ */
int walq__audit_group_valid(const char *group);

/* An unquoted, lower-case table name, optionally schema-qualified. */
int walq__audit_table_valid(const char *table);

/* What a change's line says of its transaction. */
typedef struct walq__audit_txn {
    uint32_t xid;
    uint64_t commit_lsn;    /* start of the commit record */
    uint64_t end_lsn;       /* end of the commit record: where a reader resumes */
    int64_t commit_time_us; /* microseconds since the Unix epoch; 0: unknown */
} walq__audit_txn;

/*
 * The JSON object of one insert, update or delete: lsn, xid, commit_time,
 * commit_lsn, end_lsn, index (1-based place in the transaction), last
 * (false; set when the transaction's commit is seen), table, action, new,
 * old_key.  The caller owns *out (json_object_put).
 */
int walq__audit_change_json(json_object **out, const walq__audit_txn *t, const walq__change *ch,
                            size_t index);

/*
 * Formats a timestamptz as PostgreSQL prints it in UTC with DateStyle ISO,
 * trailing zeros of the fraction left out: "2026-11-24 20:25:07.99+00".
 */
char *walq__audit_format_time(int64_t us, char buf[40]);

#endif
