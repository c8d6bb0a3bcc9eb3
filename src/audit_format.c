/*
 * The audit trail's JSON: the object of one change, the times in it as
 * PostgreSQL prints them, and which audit group and table names are valid.
 */
#include "audit_format.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lsn.h"

/* ------------------------------------------------------------------ */
/* Names                                                               */

int walq__audit_group_valid(const char *group)
{
    return walq__name_valid(group, WALQ__AUDIT_GROUP_MAX);
}

/* An unquoted identifier that PostgreSQL keeps as it is: [a-z_][a-z0-9_$]*, 63 bytes. */
static size_t ident_len(const char *s)
{
    size_t n = 0;

    if (!((*s >= 'a' && *s <= 'z') || *s == '_'))
        return 0;
    while ((s[n] >= 'a' && s[n] <= 'z') || (s[n] >= '0' && s[n] <= '9') || s[n] == '_' ||
           s[n] == '$')
        n++;
    return n <= 63 ? n : 0;
}

int walq__audit_table_valid(const char *table)
{
    size_t n;

    if (table == NULL)
        return 0;
    n = ident_len(table);
    if (n == 0)
        return 0;
    if (table[n] == '.') {
        table += n + 1;
        n = ident_len(table);
        if (n == 0)
            return 0;
    }
    return table[n] == '\0';
}

/* ------------------------------------------------------------------ */
/* Lines                                                               */

char *walq__audit_format_time(int64_t us, char buf[40])
{
    int64_t secs = us / 1000000, frac = us % 1000000;
    time_t t;
    struct tm tm;
    size_t n;

    if (us == INT64_MAX || us == INT64_MIN) {
        snprintf(buf, 40, "%s", us == INT64_MAX ? "infinity" : "-infinity");
        return buf;
    }
    if (frac < 0) {
        frac += 1000000;
        secs--;
    }
    t = (time_t)secs;
    if (gmtime_r(&t, &tm) == NULL) {
        snprintf(buf, 40, "%s", "infinity");
        return buf;
    }
    n = strftime(buf, 40, "%Y-%m-%d %H:%M:%S", &tm);
    if (frac != 0) {
        int digits = 6;

        while (frac % 10 == 0) {
            frac /= 10;
            digits--;
        }
        n += (size_t)snprintf(buf + n, 40 - n, ".%0*" PRId64, digits, frac);
    }
    snprintf(buf + n, 40 - n, "+00");
    return buf;
}

static json_object *lsn_json(uint64_t lsn)
{
    char text[WALQ__LSN_BUFSZ];

    return json_object_new_string(walq__lsn_format(lsn, text));
}

/* Values keep their JSON type; numbers keep the digits the plugin printed. */
static int value_json(const walq__value *v, json_object **out)
{
    switch (v->kind) {
    case WALQ__V_NULL:
        *out = NULL;
        return 0;
    case WALQ__V_BOOL:
        *out = json_object_new_boolean(v->b);
        break;
    case WALQ__V_INT:
        *out = json_object_new_int64(v->i);
        break;
    case WALQ__V_NUM:
        *out = json_object_new_double_s(strtod(v->str, NULL), v->str);
        break;
    case WALQ__V_STR:
        *out = json_object_new_string_len(v->str, (int)v->len);
        break;
    default:
        return WALQ_EINVAL;
    }
    return *out ? 0 : WALQ_ENOMEM;
}

static int row_json(const walq__value *vals, size_t n, json_object **out)
{
    json_object *o = json_object_new_object();

    *out = NULL;
    if (o == NULL)
        return WALQ_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        json_object *v;

        if (value_json(&vals[i], &v) != 0 || json_object_object_add(o, vals[i].name, v) != 0) {
            json_object_put(o);
            return WALQ_ENOMEM;
        }
    }
    *out = o;
    return 0;
}

static int add(json_object *o, const char *key, json_object *v, int is_null)
{
    if (v == NULL && !is_null)
        return WALQ_ENOMEM;
    return json_object_object_add(o, key, v) == 0 ? 0 : WALQ_ENOMEM;
}

int walq__audit_change_json(json_object **out, const walq__audit_txn *t, const walq__change *ch,
                            size_t index)
{
    const char *action;
    json_object *o, *new_row = NULL, *old_key = NULL;
    char table[160], when[40];
    int rc = 0;

    *out = NULL;
    switch (ch->action) {
    case WALQ__ACT_INSERT:
        action = "insert";
        break;
    case WALQ__ACT_UPDATE:
        action = "update";
        break;
    case WALQ__ACT_DELETE:
        action = "delete";
        break;
    default:
        return walq__error(WALQ_EINVAL, NULL,
                           "change of kind '%c' is not an insert, update or "
                           "delete",
                           (char)ch->action);
    }
    if (ch->action != WALQ__ACT_DELETE)
        rc = row_json(ch->columns, ch->ncolumns, &new_row);
    /* An update carries the old key only when the replica identity gives one. */
    if (rc == 0 && ch->action != WALQ__ACT_INSERT && ch->identity != NULL)
        rc = row_json(ch->identity, ch->nidentity, &old_key);
    o = json_object_new_object();
    if (rc != 0 || o == NULL) {
        json_object_put(new_row);
        json_object_put(old_key);
        json_object_put(o);
        return walq__error(WALQ_ENOMEM, NULL, "out of memory");
    }
    snprintf(table, sizeof(table), "%s.%s", ch->schema ? ch->schema : "",
             ch->table ? ch->table : "");
    rc = add(o, "lsn", lsn_json(ch->lsn), 0);
    if (rc == 0)
        rc = add(o, "xid", json_object_new_int64(t->xid), 0);
    if (rc == 0)
        rc = t->commit_time_us != 0
                 ? add(o, "commit_time",
                       json_object_new_string(walq__audit_format_time(t->commit_time_us, when)), 0)
                 : add(o, "commit_time", NULL, 1);
    if (rc == 0)
        rc = add(o, "commit_lsn", lsn_json(t->commit_lsn), 0);
    if (rc == 0)
        rc = add(o, "end_lsn", lsn_json(t->end_lsn), 0);
    if (rc == 0)
        rc = add(o, "index", json_object_new_int64((int64_t)index), 0);
    if (rc == 0)
        rc = add(o, "last", json_object_new_boolean(0), 0);
    if (rc == 0)
        rc = add(o, "table", json_object_new_string(table), 0);
    if (rc == 0)
        rc = add(o, "action", json_object_new_string(action), 0);
    /* From here o owns the rows, whatever happens. */
    if (rc == 0) {
        rc = add(o, "new", new_row, 1);
        new_row = NULL;
    }
    if (rc == 0) {
        rc = add(o, "old_key", old_key, 1);
        old_key = NULL;
    }
    if (rc != 0) {
        json_object_put(new_row);
        json_object_put(old_key);
        json_object_put(o);
        return walq__error(WALQ_ENOMEM, NULL, "out of memory");
    }
    *out = o;
    return 0;
}
