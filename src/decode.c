/*
 * Decoder of wal2json format-version 2 output.
 *
 * This is the hot path of a consumer: every change of every transaction on the
 * server passes through walq__decode().  json-c does the parsing; the decoder
 * keeps one tokener and its column arrays from one change to the next, and
 * hands out pointers into the json-c tree of the last change instead of
 * copying strings, so that past the first changes the only allocations are
 * json-c's own.
 */
#include "decode.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>
#include <json-c/json_visit.h>

#include "lsn.h"
#include "walq.h"

/* Room for "-9223372036854775808" and its NUL. */
#define INT_TEXT_LEN 21

/* How much of an offending value an error message quotes. */
#define QUOTE_MAX 64

typedef char int_text[INT_TEXT_LEN];

/*
 * Column arrays kept across changes.  The decimal text of integer values
 * lives beside them because json-c would otherwise allocate a print buffer
 * for every integer it is asked to show as text.
 */
typedef struct colvec {
    walq__value *v;
    int_text *text;
    size_t cap;
} colvec;

/* An integer of the tree with where it hangs, so that it can be replaced. */
typedef struct int_leaf {
    json_object *obj;
    json_object *parent;
    const char *key;
    size_t idx;
} int_leaf;

struct walq__decoder {
    json_tokener *tok;
    json_object *root; /* the last change; backs every borrowed pointer */
    colvec cols;
    colvec ident;
    const char *buf; /* the input being decoded, for number recovery */
    size_t len;
    int exact;      /* the tree's integers are known to match their text */
    int minus_zero; /* "-0" occurs in the input: -1 not yet looked for */
    int_leaf *leaves;
    size_t nleaves;
    size_t leaves_cap;
    int leaves_oom;
    char err[256];
};

/* Returned by the fill functions when an integer's text must be recovered. */
#define NEED_RECOVERY 1

static int fail(walq__decoder *d, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int fail(walq__decoder *d, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(d->err, sizeof(d->err), fmt, ap);
    va_end(ap);
    return WALQ_EDECODE;
}

static int quote_len(size_t len)
{
    return (int)(len > QUOTE_MAX ? QUOTE_MAX : len);
}

int walq__decoder_new(walq__decoder **out)
{
    walq__decoder *d;

    if (out == NULL)
        return WALQ_EINVAL;
    *out = NULL;
    d = calloc(1, sizeof(*d));
    if (d == NULL)
        return WALQ_ENOMEM;
    d->tok = json_tokener_new();
    if (d->tok == NULL) {
        free(d);
        return WALQ_ENOMEM;
    }
    /*
     * Strict mode rejects what is not JSON (comments, trailing commas, leading
     * zeros); trailing characters are allowed only so that we can report
     * them in our own words.
     */
    json_tokener_set_flags(d->tok, JSON_TOKENER_STRICT | JSON_TOKENER_ALLOW_TRAILING_CHARS);
    *out = d;
    return 0;
}

void walq__decoder_free(walq__decoder *d)
{
    if (d == NULL)
        return;
    json_object_put(d->root);
    json_tokener_free(d->tok);
    free(d->cols.v);
    free(d->cols.text);
    free(d->ident.v);
    free(d->ident.text);
    free(d->leaves);
    free(d);
}

const char *walq__decoder_error(const walq__decoder *d)
{
    return d != NULL ? d->err : "";
}

const walq__value *walq__change_column(const walq__change *c, const char *name)
{
    if (c == NULL || name == NULL)
        return NULL;
    for (size_t i = 0; i < c->ncolumns; i++) {
        if (strcmp(c->columns[i].name, name) == 0)
            return &c->columns[i];
    }
    return NULL;
}

/* Grows a column array to hold n values; it never shrinks, so it warms up. */
static int colvec_reserve(colvec *cv, size_t n)
{
    size_t cap = cv->cap ? cv->cap : 16;
    walq__value *v;
    int_text *text;

    if (n <= cv->cap)
        return 0;
    while (cap < n) {
        if (cap > SIZE_MAX / 2 / sizeof(walq__value))
            return WALQ_ENOMEM;
        cap *= 2;
    }
    v = realloc(cv->v, cap * sizeof(*v));
    if (v == NULL)
        return WALQ_ENOMEM;
    cv->v = v;
    text = realloc(cv->text, cap * sizeof(*text));
    if (text == NULL)
        return WALQ_ENOMEM;
    cv->text = text;
    cv->cap = cap;
    return 0;
}

/* Writes v in decimal and returns the length; faster than snprintf. */
static size_t format_i64(char *buf, int64_t v)
{
    char tmp[20];
    size_t n = 0, len = 0;
    uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;

    do {
        tmp[n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u != 0);
    if (v < 0)
        buf[len++] = '-';
    while (n > 0)
        buf[len++] = tmp[--n];
    buf[len] = '\0';
    return len;
}

/*
 * Whether text is a number as JSON defines it.  json-c, even in strict mode,
 * lets through "NaN", "Infinity" and "1.", which are not.
 */
static int is_json_number(const char *s)
{
    if (*s == '-')
        s++;
    if (*s == '0') {
        s++;
    } else if (*s >= '1' && *s <= '9') {
        while (*s >= '0' && *s <= '9')
            s++;
    } else {
        return 0;
    }
    if (*s == '.') {
        s++;
        if (!(*s >= '0' && *s <= '9'))
            return 0;
        while (*s >= '0' && *s <= '9')
            s++;
    }
    if (*s == 'e' || *s == 'E') {
        s++;
        if (*s == '+' || *s == '-')
            s++;
        if (!(*s >= '0' && *s <= '9'))
            return 0;
        while (*s >= '0' && *s <= '9')
            s++;
    }
    return *s == '\0';
}

/*
 * Whether "-0" occurs anywhere in the input.  json-c reads -0 as the integer
 * 0, which loses the sign a double precision column can carry; looking for
 * the two bytes is cheap and almost always rules the case out.
 */
static int input_has_minus_zero(walq__decoder *d)
{
    if (d->minus_zero < 0)
        d->minus_zero = memmem(d->buf, d->len, "-0", 2) != NULL;
    return d->minus_zero;
}

/*
 * json-c clamps integers beyond int64 (and beyond uint64) and keeps no text
 * for them, so a value whose text may differ from what json-c kept is sent
 * to recover_numbers() to be read from the input.
 */
static int int_needs_text(walq__decoder *d, json_object *v, int64_t i)
{
    if (d->exact)
        return 0;
    if (i == INT64_MAX)
        return json_object_get_uint64(v) > (uint64_t)INT64_MAX;
    if (i == INT64_MIN)
        return 1;
    return i == 0 && input_has_minus_zero(d);
}

static int fill_value(walq__decoder *d, json_object *v, walq__value *out, char *text,
                      const char *label, size_t colno)
{
    const char *s;
    char *end;

    switch (json_object_get_type(v)) {
    case json_type_null:
        out->kind = WALQ__V_NULL;
        return 0;
    case json_type_boolean:
        out->kind = WALQ__V_BOOL;
        out->b = json_object_get_boolean(v) ? 1 : 0;
        return 0;
    case json_type_int:
        out->i = json_object_get_int64(v);
        if (int_needs_text(d, v, out->i))
            return NEED_RECOVERY;
        out->kind = WALQ__V_INT;
        out->len = format_i64(text, out->i);
        out->str = text;
        return 0;
    case json_type_double:
        /*
         * json-c keeps a parsed double's text as the object's userdata (see
         * json_object_new_double_s()); reading it there avoids the print
         * buffer json_object_get_string() would allocate.
         */
        s = json_object_get_userdata(v);
        if (s == NULL)
            s = json_object_get_string(v);
        if (!is_json_number(s))
            return fail(d, "value of %s %zu (\"%s\") is not a valid JSON number: \"%.*s\"", label,
                        colno, out->name, quote_len(strlen(s)), s);
        out->str = s;
        out->len = strlen(s);
        out->kind = WALQ__V_NUM;
        /*
         * Only integers read back by recover_numbers() (beyond int64, or -0)
         * arrive here without '.' or 'e'.
         */
        if (strpbrk(s, ".eE") == NULL) {
            errno = 0;
            out->i = strtoll(s, &end, 10);
            if (errno == 0 && *end == '\0')
                out->kind = WALQ__V_INT;
            else
                out->i = 0;
        }
        return 0;
    case json_type_string:
        out->kind = WALQ__V_STR;
        out->str = json_object_get_string(v);
        out->len = (size_t)json_object_get_string_len(v);
        return 0;
    default:
        return fail(d, "value of %s %zu (\"%s\") is a JSON %s", label, colno, out->name,
                    json_type_to_name(json_object_get_type(v)));
    }
}

/* Fills n values from a "columns" or "identity" array of {name, type, value}. */
static int fill_columns(walq__decoder *d, json_object *arr, const char *key, const char *label,
                        colvec *cv, walq__value **out, size_t *nout)
{
    size_t n;
    int rc;

    if (!json_object_is_type(arr, json_type_array))
        return fail(d, "\"%s\" is not an array", key);
    n = json_object_array_length(arr);
    rc = colvec_reserve(cv, n);
    if (rc != 0) {
        snprintf(d->err, sizeof(d->err), "out of memory for %zu columns", n);
        return rc;
    }

    for (size_t i = 0; i < n; i++) {
        json_object *col = json_object_array_get_idx(arr, i);
        walq__value *val = &cv->v[i];
        json_object *name = NULL, *type = NULL, *value = NULL;
        int has_value = 0;

        if (!json_object_is_type(col, json_type_object))
            return fail(d, "%s %zu is not an object", label, i + 1);
        /*
         * Walking the entries costs less than three hash look-ups, and keys
         * other than these three (such as "typeoid") are ignored.
         */
        for (struct lh_entry *e = lh_table_head(json_object_get_object(col)); e != NULL;
             e = lh_entry_next(e)) {
            const char *k = lh_entry_k(e);
            json_object *v = lh_entry_v(e);

            switch (k[0]) {
            case 'n':
                if (strcmp(k, "name") == 0)
                    name = v;
                break;
            case 't':
                if (strcmp(k, "type") == 0)
                    type = v;
                break;
            case 'v':
                if (strcmp(k, "value") == 0) {
                    value = v;
                    has_value = 1;
                }
                break;
            default:
                break;
            }
        }
        if (name == NULL)
            return fail(d, "%s %zu has no \"name\"", label, i + 1);
        if (!json_object_is_type(name, json_type_string))
            return fail(d, "\"name\" of %s %zu is not a string", label, i + 1);
        if (type == NULL)
            return fail(d, "%s %zu has no \"type\"", label, i + 1);
        if (!json_object_is_type(type, json_type_string))
            return fail(d, "\"type\" of %s %zu is not a string", label, i + 1);
        if (!has_value)
            return fail(d, "%s %zu has no \"value\"", label, i + 1);

        memset(val, 0, sizeof(*val));
        val->name = json_object_get_string(name);
        val->type = json_object_get_string(type);
        rc = fill_value(d, value, val, cv->text[i], label, i + 1);
        if (rc != 0)
            return rc;
    }
    *out = cv->v;
    *nout = n;
    return 0;
}

/* The keys of a change that the decoder reads; any other key is ignored. */
enum {
    K_ACTION,
    K_XID,
    K_TIMESTAMP,
    K_LSN,
    K_NEXTLSN,
    K_SCHEMA,
    K_TABLE,
    K_COLUMNS,
    K_IDENTITY,
    K_PREFIX,
    K_CONTENT,
    K_TRANSACTIONAL,
    K_COUNT
};

static const char *const key_names[K_COUNT] = {
    "action", "xid",     "timestamp", "lsn",    "nextlsn", "schema",
    "table",  "columns", "identity",  "prefix", "content", "transactional",
};

/* Switching on the first byte leaves at most three comparisons per key. */
static int key_index(const char *k)
{
    switch (k[0]) {
    case 'a':
        return strcmp(k, "action") == 0 ? K_ACTION : -1;
    case 'x':
        return strcmp(k, "xid") == 0 ? K_XID : -1;
    case 't':
        if (strcmp(k, "timestamp") == 0)
            return K_TIMESTAMP;
        if (strcmp(k, "table") == 0)
            return K_TABLE;
        return strcmp(k, "transactional") == 0 ? K_TRANSACTIONAL : -1;
    case 'l':
        return strcmp(k, "lsn") == 0 ? K_LSN : -1;
    case 'n':
        return strcmp(k, "nextlsn") == 0 ? K_NEXTLSN : -1;
    case 's':
        return strcmp(k, "schema") == 0 ? K_SCHEMA : -1;
    case 'c':
        if (strcmp(k, "columns") == 0)
            return K_COLUMNS;
        return strcmp(k, "content") == 0 ? K_CONTENT : -1;
    case 'i':
        return strcmp(k, "identity") == 0 ? K_IDENTITY : -1;
    case 'p':
        return strcmp(k, "prefix") == 0 ? K_PREFIX : -1;
    default:
        return -1;
    }
}

static int parse_lsn_key(walq__decoder *d, json_object *v, int key, uint64_t *out)
{
    const char *s;
    size_t len;

    if (!json_object_is_type(v, json_type_string))
        return fail(d, "\"%s\" is not a string", key_names[key]);
    s = json_object_get_string(v);
    len = (size_t)json_object_get_string_len(v);
    if (walq__lsn_parse_n(s, len, out) != 0)
        return fail(d, "\"%s\" is not a valid LSN: \"%.*s\"", key_names[key], quote_len(len), s);
    return 0;
}

/* Returns the string of a key that the action requires. */
static int required_string(walq__decoder *d, json_object *const *keys, const int *seen, int key,
                           char action, const char **out, size_t *len)
{
    if (!seen[key])
        return fail(d, "\"%c\" change has no \"%s\" key", action, key_names[key]);
    if (!json_object_is_type(keys[key], json_type_string))
        return fail(d, "\"%s\" is not a string", key_names[key]);
    *out = json_object_get_string(keys[key]);
    if (len != NULL)
        *len = (size_t)json_object_get_string_len(keys[key]);
    return 0;
}

static int fill_change(walq__decoder *d, json_object *root, walq__change *out)
{
    json_object *keys[K_COUNT] = {NULL};
    int seen[K_COUNT] = {0};
    const char *s;
    size_t len;
    char action;
    int rc;

    memset(out, 0, sizeof(*out));
    for (struct lh_entry *e = lh_table_head(json_object_get_object(root)); e != NULL;
         e = lh_entry_next(e)) {
        int k = key_index(lh_entry_k(e));

        if (k >= 0) {
            keys[k] = lh_entry_v(e);
            seen[k] = 1;
        }
    }

    if (!seen[K_ACTION])
        return fail(d, "change has no \"action\" key");
    if (!json_object_is_type(keys[K_ACTION], json_type_string))
        return fail(d, "\"action\" is not a string");
    s = json_object_get_string(keys[K_ACTION]);
    len = (size_t)json_object_get_string_len(keys[K_ACTION]);
    action = s[0];
    if (len != 1 || strchr("BCIUDTM", action) == NULL)
        return fail(d, "unknown action \"%.*s\"", quote_len(len), s);
    out->action = (walq__action)action;

    /* The plugin's include-* options decide which of these are present. */
    if (seen[K_XID]) {
        json_object *v = keys[K_XID];
        int64_t xid = json_object_is_type(v, json_type_int) ? json_object_get_int64(v) : -1;

        if (xid < 0 || xid > (int64_t)UINT32_MAX)
            return fail(d, "\"xid\" is not a valid transaction ID: %s",
                        json_object_to_json_string(v));
        out->xid = (uint32_t)xid;
    }
    if (seen[K_TIMESTAMP]) {
        json_object *v = keys[K_TIMESTAMP];

        if (!json_object_is_type(v, json_type_string))
            return fail(d, "\"timestamp\" is not a string");
        s = json_object_get_string(v);
        len = (size_t)json_object_get_string_len(v);
        if (walq__parse_timestamp(s, len, &out->timestamp_us) != 0)
            return fail(d, "\"timestamp\" is not a valid timestamp: \"%.*s\"", quote_len(len), s);
    }
    if (seen[K_LSN] && (rc = parse_lsn_key(d, keys[K_LSN], K_LSN, &out->lsn)) != 0)
        return rc;
    if (seen[K_NEXTLSN] && (rc = parse_lsn_key(d, keys[K_NEXTLSN], K_NEXTLSN, &out->next_lsn)) != 0)
        return rc;

    switch (action) {
    case 'B':
    case 'C':
        return 0;
    case 'M':
        if ((rc = required_string(d, keys, seen, K_PREFIX, action, &out->prefix, NULL)) != 0)
            return rc;
        if ((rc = required_string(d, keys, seen, K_CONTENT, action, &out->content,
                                  &out->content_len)) != 0)
            return rc;
        if (!seen[K_TRANSACTIONAL])
            return fail(d, "\"M\" change has no \"transactional\" key");
        if (!json_object_is_type(keys[K_TRANSACTIONAL], json_type_boolean))
            return fail(d, "\"transactional\" is not a boolean");
        out->transactional = json_object_get_boolean(keys[K_TRANSACTIONAL]) ? 1 : 0;
        return 0;
    default:
        break;
    }

    /* I, U, D and T name their table. */
    if ((rc = required_string(d, keys, seen, K_SCHEMA, action, &out->schema, NULL)) != 0)
        return rc;
    if ((rc = required_string(d, keys, seen, K_TABLE, action, &out->table, NULL)) != 0)
        return rc;
    if (action == 'I' || action == 'U') {
        if (!seen[K_COLUMNS])
            return fail(d, "\"%c\" change has no \"columns\" key", action);
        rc = fill_columns(d, keys[K_COLUMNS], "columns", "column", &d->cols, &out->columns,
                          &out->ncolumns);
        if (rc != 0)
            return rc;
    }
    if (action == 'D' && !seen[K_IDENTITY])
        return fail(d, "\"D\" change has no \"identity\" key");
    /* An update carries the old key only when the replica identity provides one. */
    if ((action == 'U' || action == 'D') && seen[K_IDENTITY]) {
        rc = fill_columns(d, keys[K_IDENTITY], "identity", "identity column", &d->ident,
                          &out->identity, &out->nidentity);
        if (rc != 0)
            return rc;
    }
    return 0;
}

static int collect_int(json_object *jso, int flags, json_object *parent, const char *key,
                       size_t *idx, void *arg)
{
    walq__decoder *d = arg;
    int_leaf *leaf;

    (void)flags;
    if (!json_object_is_type(jso, json_type_int))
        return JSON_C_VISIT_RETURN_CONTINUE;
    if (d->nleaves == d->leaves_cap) {
        size_t cap = d->leaves_cap ? d->leaves_cap * 2 : 64;
        int_leaf *p = realloc(d->leaves, cap * sizeof(*p));

        if (p == NULL) {
            d->leaves_oom = 1;
            return JSON_C_VISIT_RETURN_STOP;
        }
        d->leaves = p;
        d->leaves_cap = cap;
    }
    leaf = &d->leaves[d->nleaves++];
    leaf->obj = jso;
    leaf->parent = parent;
    leaf->key = key;
    leaf->idx = idx != NULL ? *idx : 0;
    return JSON_C_VISIT_RETURN_CONTINUE;
}

/*
 * Puts the text of one integer of the input in place of what json-c made of
 * it, as a double carrying the text, which fill_value() then classifies.
 */
static int fix_leaf(walq__decoder *d, const int_leaf *leaf, const char *text, size_t len)
{
    int64_t i = json_object_get_int64(leaf->obj);
    uint64_t u = json_object_get_uint64(leaf->obj);
    char kept[INT_TEXT_LEN];
    json_object *repl;
    char *copy;
    int matches;

    /* An integer that fits int64 and reads back as written is left alone. */
    if (!(i == INT64_MAX && u > (uint64_t)INT64_MAX) && format_i64(kept, i) == len &&
        memcmp(kept, text, len) == 0)
        return 0;

    copy = strndup(text, len);
    if (copy == NULL)
        return WALQ_ENOMEM;
    /* A text that json-c would not have turned into this value means we are lost. */
    if (copy[0] == '-')
        matches = strtoll(copy, NULL, 10) == i;
    else
        matches = strtoull(copy, NULL, 10) == u;
    if (!matches || leaf->parent == NULL) {
        free(copy);
        return fail(d, "could not match the number %.*s with the parsed change", quote_len(len),
                    text);
    }
    repl = json_object_new_double_s(strtod(copy, NULL), copy);
    free(copy);
    if (repl == NULL)
        return WALQ_ENOMEM;
    if (json_object_is_type(leaf->parent, json_type_object)) {
        if (json_object_object_add(leaf->parent, leaf->key, repl) != 0) {
            json_object_put(repl);
            return WALQ_ENOMEM;
        }
    } else if (json_object_array_put_idx(leaf->parent, leaf->idx, repl) != 0) {
        json_object_put(repl);
        return WALQ_ENOMEM;
    }
    return 0;
}

/*
 * Recovers the text of the integers of the input.  The integers of the tree,
 * in document order, pair one to one with the integer tokens of the input,
 * found by skipping strings; a count that differs (duplicate keys) is an
 * error rather than a guess.  This runs only for changes holding an integer
 * json-c cannot represent, or a zero that may have been written "-0".
 */
static int recover_numbers(walq__decoder *d)
{
    const char *buf = d->buf;
    size_t len = d->len, p = 0, n = 0;
    int rc;

    d->nleaves = 0;
    d->leaves_oom = 0;
    json_c_visit(d->root, 0, collect_int, d);
    if (d->leaves_oom)
        return WALQ_ENOMEM;

    while (p < len) {
        char c = buf[p];

        if (c == '"') {
            for (p++; p < len && buf[p] != '"'; p++) {
                if (buf[p] == '\\')
                    p++;
            }
            p++;
        } else if (c == '-' || (c >= '0' && c <= '9')) {
            size_t start = p;
            int integral = 1;

            while (p < len && buf[p] != '\0' && strchr("0123456789+-.eE", buf[p]) != NULL) {
                if (buf[p] == '.' || buf[p] == 'e' || buf[p] == 'E')
                    integral = 0;
                p++;
            }
            if (!integral)
                continue;
            if (n == d->nleaves)
                break;
            rc = fix_leaf(d, &d->leaves[n++], buf + start, p - start);
            if (rc != 0)
                return rc;
        } else {
            p++;
        }
    }
    if (p < len || n != d->nleaves)
        return fail(d, "could not match the numbers of the change with its text");
    return 0;
}

int walq__decode(walq__decoder *d, const char *buf, size_t len, walq__change *out)
{
    enum json_tokener_error jerr;
    json_object *root;
    size_t end;
    int rc;

    if (d == NULL)
        return WALQ_EINVAL;
    if (out == NULL || (buf == NULL && len > 0)) {
        snprintf(d->err, sizeof(d->err), "invalid argument");
        return WALQ_EINVAL;
    }
    memset(out, 0, sizeof(*out));
    d->err[0] = '\0';
    /* The previous change's pointers are documented to die here. */
    json_object_put(d->root);
    d->root = NULL;

    if (len == 0)
        return fail(d, "empty change");
    if (len > INT_MAX)
        return fail(d, "change of %zu bytes is too large to decode", len);

    json_tokener_reset(d->tok);
    root = json_tokener_parse_ex(d->tok, buf, (int)len);
    jerr = json_tokener_get_error(d->tok);
    end = json_tokener_get_parse_end(d->tok);
    if (jerr == json_tokener_continue) {
        /*
         * A bare number or literal is incomplete until json-c sees what ends
         * it; a NUL ends it without ending an unfinished object.
         */
        root = json_tokener_parse_ex(d->tok, "", 1);
        if (json_tokener_get_error(d->tok) != json_tokener_success)
            return fail(d, "truncated JSON: input ends after %zu bytes inside a value", len);
        d->root = root;
        return fail(d, "change is a JSON %s, not an object",
                    json_type_to_name(json_object_get_type(root)));
    }
    if (jerr != json_tokener_success) {
        json_object_put(root);
        return fail(d, "invalid JSON at offset %zu: %s", end, json_tokener_error_desc(jerr));
    }
    d->root = root;
    if (end < len)
        return fail(d, "unexpected data after the JSON object at offset %zu", end);
    if (!json_object_is_type(root, json_type_object))
        return fail(d, "change is a JSON %s, not an object",
                    json_type_to_name(json_object_get_type(root)));

    d->buf = buf;
    d->len = len;
    d->exact = 0;
    d->minus_zero = -1;
    rc = fill_change(d, root, out);
    if (rc == NEED_RECOVERY) {
        rc = recover_numbers(d);
        if (rc == 0) {
            d->exact = 1;
            rc = fill_change(d, root, out);
        }
    }
    d->buf = NULL;
    if (rc != 0) {
        memset(out, 0, sizeof(*out));
        if (rc == WALQ_ENOMEM && d->err[0] == '\0')
            snprintf(d->err, sizeof(d->err), "out of memory");
    }
    return rc;
}

/* Reads exactly min to max digits. */
static int read_digits(const char **p, const char *end, int min, int max, int *out)
{
    int v = 0, n = 0;

    while (*p < end && n < max && **p >= '0' && **p <= '9') {
        v = v * 10 + (**p - '0');
        (*p)++;
        n++;
    }
    if (n < min)
        return -1;
    *out = v;
    return 0;
}

static int expect(const char **p, const char *end, char c)
{
    if (*p == end || **p != c)
        return -1;
    (*p)++;
    return 0;
}

/*
 * Days from 1970-01-01 to a date of the proleptic Gregorian calendar, after
 * Howard Hinnant's days_from_civil: pure arithmetic, so neither the time zone
 * nor the locale of the process can change the result.
 */
static int64_t days_from_civil(int64_t y, int m, int d)
{
    int64_t era;
    int64_t yoe, doy, doe;

    y -= m <= 2;
    era = (y >= 0 ? y : y - 399) / 400;
    yoe = y - era * 400;
    doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static int days_in_month(int64_t y, int m)
{
    static const int days[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;

    return m == 2 && leap ? 29 : days[m - 1];
}

int walq__parse_timestamp(const char *s, size_t len, int64_t *us_out)
{
    const char *p = s, *end;
    int year, mon, day, hour, min, sec, usec = 0;
    int oh, om = 0, os = 0, sign;
    int64_t y, secs, offset;

    if (s == NULL || us_out == NULL)
        return WALQ_EINVAL;
    if (len == 8 && memcmp(s, "infinity", 8) == 0) {
        *us_out = INT64_MAX;
        return 0;
    }
    if (len == 9 && memcmp(s, "-infinity", 9) == 0) {
        *us_out = INT64_MIN;
        return 0;
    }
    end = s + len;

    /* PostgreSQL prints at least four digits of year, more past 9999. */
    if (read_digits(&p, end, 4, 6, &year) || expect(&p, end, '-') ||
        read_digits(&p, end, 2, 2, &mon) || expect(&p, end, '-') ||
        read_digits(&p, end, 2, 2, &day) || expect(&p, end, ' ') ||
        read_digits(&p, end, 2, 2, &hour) || expect(&p, end, ':') ||
        read_digits(&p, end, 2, 2, &min) || expect(&p, end, ':') ||
        read_digits(&p, end, 2, 2, &sec))
        return WALQ_EINVAL;
    if (p < end && *p == '.') {
        const char *f = ++p;

        if (read_digits(&p, end, 1, 6, &usec))
            return WALQ_EINVAL;
        for (ptrdiff_t n = p - f; n < 6; n++)
            usec *= 10;
    }
    if (p == end || (*p != '+' && *p != '-'))
        return WALQ_EINVAL;
    sign = *p++ == '-' ? -1 : 1;
    if (read_digits(&p, end, 2, 2, &oh))
        return WALQ_EINVAL;
    if (p < end && *p == ':') {
        p++;
        if (read_digits(&p, end, 2, 2, &om))
            return WALQ_EINVAL;
        if (p < end && *p == ':') {
            p++;
            if (read_digits(&p, end, 2, 2, &os))
                return WALQ_EINVAL;
        }
    }
    y = year;
    /* Years before 1 AD are printed as "0044-03-15 ... BC"; year 0 is 1 BC. */
    if (end - p == 3 && memcmp(p, " BC", 3) == 0) {
        y = 1 - y;
        p = end;
    }
    if (p != end)
        return WALQ_EINVAL;

    if (year < 1 || mon < 1 || mon > 12 || day < 1 || day > days_in_month(y, mon) || hour > 23 ||
        min > 59 || sec > 59 || oh > 15 || om > 59 || os > 59)
        return WALQ_EINVAL;

    offset = sign * ((int64_t)oh * 3600 + om * 60 + os);
    secs = days_from_civil(y, mon, day) * 86400 + hour * 3600 + min * 60 + sec - offset;
    /* Six-digit years reach past what int64 microseconds can hold. */
    if (secs >= INT64_MAX / 1000000 || secs <= INT64_MIN / 1000000)
        return WALQ_EINVAL;
    *us_out = secs * 1000000 + usec;
    return 0;
}
