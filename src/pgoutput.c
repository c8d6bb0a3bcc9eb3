/*
 * Decoder of pgoutput's messages, logical replication protocol version 1
 * (PostgreSQL's "Logical Replication Message Formats").
 *
 * This is the hot path of a consumer that streams with pgoutput: every change
 * on the server passes through walq__pgoutput_decode().  One cursor reads each
 * message and checks every field against the bytes left before it reads it,
 * so nothing past len is ever read, and an error names the field and its
 * offset.  Integers are big-endian; strings end with a NUL inside the message.
 *
 * pgoutput describes a table once per session in a Relation message and then
 * refers to it by OID alone, so the descriptions are kept in a hash table:
 * with many partitions, each published as a table of its own, there can be
 * thousands.  What a change hands out lives in storage the decoder keeps from
 * one message to the next (a scratch buffer for the values, two column
 * arrays): past the first messages, decoding a change allocates nothing.
 */
#include "pgoutput.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto.h"
#include "walq.h"

/* How much of an offending value an error message quotes. */
#define QUOTE_MAX 64

/* The hash table starts with this many slots and doubles at half full. */
#define RELTAB_MIN 64

/* A column flag of the Relation message: the column is part of the replica identity key. */
#define COL_KEY 1

/* How a column's text becomes a walq__value, chosen once from its type OID. */
typedef enum vclass { VC_STR, VC_BOOL, VC_INT, VC_NUM } vclass;

typedef struct rel_column {
    const char *name;
    uint32_t type_oid;
    int32_t typmod;
    uint8_t flags;
    vclass cls;
} rel_column;

/*
 * A table as its last Relation message described it: one allocation, this
 * struct, then its columns, then its strings, so that replacing or
 * forgetting it is one free().
 */
typedef struct relation {
    uint32_t oid;
    const char *nspname;
    const char *relname;
    char replident; /* relreplident: 'd', 'n', 'f' or 'i' */
    size_t ncols;
    rel_column cols[];
} relation;

/* Open addressing with linear probing; an empty slot is NULL. */
typedef struct reltab {
    relation **slots;
    size_t cap; /* a power of two, or 0 before the first relation */
    size_t count;
} reltab;

/* A column array kept across messages; it never shrinks, so it warms up. */
typedef struct colvec {
    walq__value *v;
    size_t cap;
} colvec;

struct walq__pgoutput {
    reltab rels;
    /* The NUL-terminated copies of the current message's values. */
    char *scratch;
    size_t scratch_cap;
    size_t scratch_used;
    colvec cols;  /* the new row */
    colvec ident; /* the key or the old row */
    char err[256];
};

/* Where the parse of one message is, and what to call things in an error. */
typedef struct cursor {
    walq__pgoutput *d;
    const unsigned char *buf;
    size_t len;
    size_t pos;
    const char *what;    /* the message: "insert", "relation", ... */
    const char *tuple;   /* inside a tuple: "new row", "key" or "old row"; else NULL */
    size_t colno;        /* inside a column: its number from 1; else 0 */
    const char *colname; /* and its name, when known */
} cursor;

static int fail(walq__pgoutput *d, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int fail(walq__pgoutput *d, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(d->err, sizeof(d->err), fmt, ap);
    va_end(ap);
    return WALQ_EDECODE;
}

static int nomem(walq__pgoutput *d)
{
    snprintf(d->err, sizeof(d->err), "out of memory");
    return WALQ_ENOMEM;
}

static int quote_len(size_t len)
{
    return (int)(len > QUOTE_MAX ? QUOTE_MAX : len);
}

/* A message or tuple kind byte as an error shows it: 'X', or 0x01 when it does not print. */
static const char *show_byte(unsigned char b, char buf[8])
{
    if (b >= 0x20 && b < 0x7f)
        snprintf(buf, 8, "'%c'", b);
    else
        snprintf(buf, 8, "0x%02x", b);
    return buf;
}

/* " of column 3 (\"q\") in the new row", or "" outside a column. */
static const char *where(const cursor *c, char *buf, size_t size)
{
    int n = 0;

    buf[0] = '\0';
    if (c->colno > 0)
        n = snprintf(buf, size, " of column %zu", c->colno);
    if (c->colno > 0 && c->colname != NULL && n >= 0 && (size_t)n < size)
        n += snprintf(buf + n, size - (size_t)n, " (\"%s\")", c->colname);
    if (c->tuple != NULL && n >= 0 && (size_t)n < size)
        snprintf(buf + n, size - (size_t)n, " in the %s", c->tuple);
    return buf;
}

/* Fails unless n more bytes follow; field is what they would hold. */
static int need(cursor *c, size_t n, const char *field)
{
    char at[160];

    if (c->len - c->pos >= n)
        return 0;
    return fail(c->d, "truncated %s message: %s%s at offset %zu needs %zu bytes, but %zu remain",
                c->what, field, where(c, at, sizeof(at)), c->pos, n, c->len - c->pos);
}

static int get_u8(cursor *c, const char *field, uint8_t *out)
{
    if (need(c, 1, field) != 0)
        return WALQ_EDECODE;
    *out = c->buf[c->pos++];
    return 0;
}

static int get_i16(cursor *c, const char *field, int16_t *out)
{
    const unsigned char *p = c->buf + c->pos;

    if (need(c, 2, field) != 0)
        return WALQ_EDECODE;
    *out = (int16_t)(uint16_t)((unsigned)p[0] << 8 | p[1]);
    c->pos += 2;
    return 0;
}

static int get_u32(cursor *c, const char *field, uint32_t *out)
{
    const unsigned char *p = c->buf + c->pos;

    if (need(c, 4, field) != 0)
        return WALQ_EDECODE;
    *out = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
    c->pos += 4;
    return 0;
}

static int get_i32(cursor *c, const char *field, int32_t *out)
{
    uint32_t u;

    if (get_u32(c, field, &u) != 0)
        return WALQ_EDECODE;
    *out = (int32_t)u;
    return 0;
}

static int get_u64(cursor *c, const char *field, uint64_t *out)
{
    if (need(c, 8, field) != 0)
        return WALQ_EDECODE;
    *out = walq__get_u64(c->buf + c->pos);
    c->pos += 8;
    return 0;
}

static int get_i64(cursor *c, const char *field, int64_t *out)
{
    uint64_t u;

    if (get_u64(c, field, &u) != 0)
        return WALQ_EDECODE;
    *out = (int64_t)u;
    return 0;
}

/* A string: the bytes up to a NUL, which must come before the end of the message. */
static int get_str(cursor *c, const char *field, const char **out, size_t *len)
{
    const unsigned char *p = c->buf + c->pos;
    const unsigned char *nul = c->pos < c->len ? memchr(p, '\0', c->len - c->pos) : NULL;
    char at[160];

    if (nul == NULL)
        return fail(c->d, "truncated %s message: %s%s at offset %zu has no terminating NUL",
                    c->what, field, where(c, at, sizeof(at)), c->pos);
    *out = (const char *)p;
    *len = (size_t)(nul - p);
    c->pos += *len + 1;
    return 0;
}

/* Every message ends where its last field does. */
static int finish(cursor *c)
{
    if (c->pos == c->len)
        return 0;
    return fail(c->d, "unexpected data after the end of the %s message at offset %zu (%zu bytes)",
                c->what, c->pos, c->len - c->pos);
}

/*
 * A NUL-terminated copy in the scratch buffer.  The buffer holds len + 1
 * bytes for a message of len, which is always enough: each copy of n + 1
 * bytes is of a field that takes at least n + 1 bytes of the message after
 * its type byte (a value's 5-byte header and n bytes, a string and its NUL,
 * the content's 4-byte length and n bytes).
 */
static char *keep(cursor *c, const unsigned char *s, size_t n)
{
    walq__pgoutput *d = c->d;
    char *p;

    if (d->scratch_cap - d->scratch_used < n + 1)
        return NULL;
    p = d->scratch + d->scratch_used;
    memcpy(p, s, n);
    p[n] = '\0';
    d->scratch_used += n + 1;
    return p;
}

static int scratch_reserve(walq__pgoutput *d, size_t n)
{
    char *p;

    if (n <= d->scratch_cap)
        return 0;
    /* Nothing in it is live between messages, so there is nothing to copy. */
    p = malloc(n);
    if (p == NULL)
        return WALQ_ENOMEM;
    free(d->scratch);
    d->scratch = p;
    d->scratch_cap = n;
    return 0;
}

/* Grows a column array to hold n values. */
static int colvec_reserve(colvec *cv, size_t n)
{
    size_t cap = cv->cap ? cv->cap : 16;
    walq__value *v;

    if (n <= cv->cap)
        return 0;
    while (cap < n)
        cap *= 2; /* n is at most 32767, the largest Int16 */
    v = realloc(cv->v, cap * sizeof(*v));
    if (v == NULL)
        return WALQ_ENOMEM;
    cv->v = v;
    cv->cap = cap;
    return 0;
}

/*
 * OIDs are handed out in sequence, but a table's partitions need not get
 * neighbouring ones: murmur3's finalizer spreads any pattern over the slots.
 */
static size_t oid_hash(uint32_t h)
{
    h ^= h >> 16;
    h *= UINT32_C(0x85ebca6b);
    h ^= h >> 13;
    h *= UINT32_C(0xc2b2ae35);
    h ^= h >> 16;
    return h;
}

static relation *rel_find(const reltab *t, uint32_t oid)
{
    size_t mask = t->cap - 1;

    if (t->cap == 0)
        return NULL;
    for (size_t i = oid_hash(oid) & mask;; i = (i + 1) & mask) {
        relation *r = t->slots[i];

        if (r == NULL || r->oid == oid)
            return r;
    }
}

/* The slot that holds oid, or the empty one where it belongs. */
static relation **rel_slot(relation **slots, size_t cap, uint32_t oid)
{
    size_t mask = cap - 1;
    size_t i = oid_hash(oid) & mask;

    while (slots[i] != NULL && slots[i]->oid != oid)
        i = (i + 1) & mask;
    return &slots[i];
}

static int rel_grow(reltab *t)
{
    size_t cap = t->cap ? t->cap * 2 : RELTAB_MIN;
    relation **slots;

    if (cap > SIZE_MAX / sizeof(*slots))
        return WALQ_ENOMEM;
    slots = calloc(cap, sizeof(*slots));
    if (slots == NULL)
        return WALQ_ENOMEM;
    for (size_t i = 0; i < t->cap; i++) {
        if (t->slots[i] != NULL)
            *rel_slot(slots, cap, t->slots[i]->oid) = t->slots[i];
    }
    free(t->slots);
    t->slots = slots;
    t->cap = cap;
    return 0;
}

/* Takes r into the table, in place of the relation with its OID if there is one. */
static int rel_put(reltab *t, relation *r)
{
    relation **slot;

    /* Half full at most, so that a probe ends soon at an empty slot. */
    if ((t->count + 1) * 2 > t->cap && rel_grow(t) != 0)
        return WALQ_ENOMEM;
    slot = rel_slot(t->slots, t->cap, r->oid);
    if (*slot != NULL)
        free(*slot);
    else
        t->count++;
    *slot = r;
    return 0;
}

static void rel_clear(reltab *t)
{
    for (size_t i = 0; i < t->cap; i++) {
        free(t->slots[i]);
        t->slots[i] = NULL;
    }
    t->count = 0;
}

/*
 * The built-in types that wal2json prints as JSON booleans and numbers; any
 * other type (a domain over one of these too, since pgoutput sends the
 * domain's OID) is text.
 */
static vclass class_of(uint32_t type_oid)
{
    switch (type_oid) {
    case 16: /* bool */
        return VC_BOOL;
    case 20: /* int8 */
    case 21: /* int2 */
    case 23: /* int4 */
    case 26: /* oid */
        return VC_INT;
    case 700:  /* float4 */
    case 701:  /* float8 */
    case 1700: /* numeric */
        return VC_NUM;
    default:
        return VC_STR;
    }
}

static const char *int_type_name(uint32_t type_oid)
{
    switch (type_oid) {
    case 20:
        return "int8";
    case 21:
        return "int2";
    case 26:
        return "oid";
    default:
        return "int4";
    }
}

/*
 * float4, float8 and numeric print these words for values no JSON number
 * holds; wal2json quotes them, so they are strings here too.
 */
static int non_finite(const unsigned char *s, size_t len)
{
    return (len == 3 && memcmp(s, "NaN", 3) == 0) || (len == 8 && memcmp(s, "Infinity", 8) == 0) ||
           (len == 9 && memcmp(s, "-Infinity", 9) == 0);
}

/* "\"public\".\"t\"" for errors. */
static const char *rel_label(const relation *r, char *buf, size_t size)
{
    snprintf(buf, size, "\"%s\".\"%s\"", r->nspname, r->relname);
    return buf;
}

/* Reads a change's relation OID and finds what the session said of it. */
static int get_relation(cursor *c, relation **out)
{
    uint32_t oid;

    if (get_u32(c, "the relation OID", &oid) != 0)
        return WALQ_EDECODE;
    *out = rel_find(&c->d->rels, oid);
    if (*out == NULL)
        return fail(c->d, "%s for relation %" PRIu32 ", which no Relation message described",
                    c->what, oid);
    return 0;
}

/* A 't' (text) or 'b' (binary) value of n bytes at s, which is at offset at. */
static int set_value(cursor *c, const rel_column *col, uint8_t kind, const unsigned char *s,
                     size_t n, size_t at, walq__value *v)
{
    char where_buf[160];

    v->b = 0;
    v->i = 0;
    v->str = NULL;
    v->len = 0;
    /* walq never asks for binary values; their bytes are passed on as they are. */
    if (kind == 't' && col->cls == VC_BOOL) {
        if (n == 1 && (s[0] == 't' || s[0] == 'f')) {
            v->kind = WALQ__V_BOOL;
            v->b = s[0] == 't';
            return 0;
        }
        return fail(c->d,
                    "invalid %s message: the value%s at offset %zu is of type bool, but its "
                    "text is \"%.*s\", not t or f",
                    c->what, where(c, where_buf, sizeof(where_buf)), at, quote_len(n), s);
    }
    if ((v->str = keep(c, s, n)) == NULL)
        return fail(c->d, "internal error: the values of the %s message outgrew its length",
                    c->what);
    v->len = n;
    v->kind = WALQ__V_STR;
    if (kind != 't')
        return 0;
    switch (col->cls) {
    case VC_INT:
        if (!walq__int64_from_text((const char *)s, n, &v->i))
            return fail(c->d,
                        "invalid %s message: the value%s at offset %zu is of type %s, but its "
                        "text \"%.*s\" is not an integer of 64 bits",
                        c->what, where(c, where_buf, sizeof(where_buf)), at,
                        int_type_name(col->type_oid), quote_len(n), s);
        v->kind = WALQ__V_INT;
        break;
    case VC_NUM:
        if (!non_finite(s, n))
            v->kind = WALQ__V_NUM;
        break;
    default:
        break;
    }
    return 0;
}

/*
 * Reads a TupleData of relation r into cv.  An unchanged TOASTed value ('u')
 * is left out, as wal2json leaves it out.  In a key ('K') pgoutput sends every
 * column, the ones outside the key as NULLs that stand for nothing; those are
 * left out too, so that the identity holds the key alone, as wal2json's does.
 */
static int read_tuple(cursor *c, const relation *r, const char *label, int key, colvec *cv,
                      walq__value **out, size_t *nout)
{
    size_t at = c->pos, kept = 0;
    int16_t n;
    char rel[160];

    c->tuple = label;
    if (get_i16(c, "the column count", &n) != 0)
        return WALQ_EDECODE;
    if (n < 0 || (size_t)n != r->ncols)
        return fail(c->d,
                    "invalid %s message: the %s of relation %" PRIu32 " (%s) has %d columns "
                    "(offset %zu), but its Relation message described %zu",
                    c->what, label, r->oid, rel_label(r, rel, sizeof(rel)), n, at, r->ncols);
    if (colvec_reserve(cv, r->ncols) != 0)
        return nomem(c->d);
    for (size_t i = 0; i < r->ncols; i++) {
        const rel_column *col = &r->cols[i];
        walq__value *v = &cv->v[kept];
        char kbuf[8], where_buf[160];
        uint8_t kind;
        int32_t vlen;
        size_t vat;

        c->colno = i + 1;
        c->colname = col->name;
        at = c->pos;
        if (get_u8(c, "the kind", &kind) != 0)
            return WALQ_EDECODE;
        switch (kind) {
        case 'n':
            if (key && !(col->flags & COL_KEY))
                continue;
            memset(v, 0, sizeof(*v));
            v->kind = WALQ__V_NULL;
            break;
        case 'u':
            continue;
        case 't':
        case 'b':
            vat = c->pos;
            if (get_i32(c, "the length", &vlen) != 0)
                return WALQ_EDECODE;
            if (vlen < 0)
                return fail(c->d, "invalid %s message: the length%s at offset %zu is negative (%d)",
                            c->what, where(c, where_buf, sizeof(where_buf)), vat, vlen);
            if (need(c, (size_t)vlen, "the value") != 0)
                return WALQ_EDECODE;
            if (set_value(c, col, kind, c->buf + c->pos, (size_t)vlen, c->pos, v) != 0)
                return WALQ_EDECODE;
            c->pos += (size_t)vlen;
            break;
        default:
            return fail(c->d,
                        "invalid %s message: the kind%s at offset %zu is %s, not 'n', 'u', 't' "
                        "or 'b'",
                        c->what, where(c, where_buf, sizeof(where_buf)), at, show_byte(kind, kbuf));
        }
        v->name = col->name;
        v->type = NULL;
        kept++;
    }
    c->tuple = NULL;
    c->colno = 0;
    c->colname = NULL;
    *out = cv->v;
    *nout = kept;
    return 0;
}

/* A tuple kind byte that must be one of those in want (e.g. "KO"). */
static int get_tuple_kind(cursor *c, const char *want, const char *expected, uint8_t *out)
{
    size_t at = c->pos;
    char kbuf[8];

    if (get_u8(c, "the tuple kind", out) != 0)
        return WALQ_EDECODE;
    if (*out == '\0' || strchr(want, *out) == NULL)
        return fail(c->d, "invalid %s message: the tuple kind at offset %zu is %s, not %s", c->what,
                    at, show_byte(*out, kbuf), expected);
    return 0;
}

static const char *tuple_label(uint8_t kind)
{
    return kind == 'K' ? "key" : kind == 'O' ? "old row" : "new row";
}

/* pgoutput counts from 2000-01-01; walq__change from 1970-01-01. */
static int unix_time(cursor *c, int64_t pg_us, size_t at, int64_t *out)
{
    if (pg_us > INT64_MAX - WALQ__PG_EPOCH_OFFSET_US)
        return fail(c->d,
                    "invalid %s message: the commit time at offset %zu (%lld microseconds after "
                    "2000-01-01) is out of range",
                    c->what, at, (long long)pg_us);
    *out = pg_us + WALQ__PG_EPOCH_OFFSET_US;
    return 0;
}

static int decode_begin(cursor *c, walq__change *out)
{
    uint64_t final_lsn;
    int64_t ts;
    uint32_t xid;
    size_t ts_at;

    if (get_u64(c, "the final LSN", &final_lsn) != 0)
        return WALQ_EDECODE;
    ts_at = c->pos;
    if (get_i64(c, "the commit time", &ts) != 0 || get_u32(c, "the transaction ID", &xid) != 0 ||
        finish(c) != 0 || unix_time(c, ts, ts_at, &out->timestamp_us) != 0)
        return WALQ_EDECODE;
    out->action = WALQ__ACT_BEGIN;
    /* The start of the commit record; its end comes with the Commit only. */
    out->lsn = final_lsn;
    out->xid = xid;
    return 0;
}

static int decode_commit(cursor *c, walq__change *out)
{
    uint8_t flags;
    uint64_t commit_lsn, end_lsn;
    int64_t ts;
    size_t ts_at;

    if (get_u8(c, "the flags", &flags) != 0)
        return WALQ_EDECODE;
    if (flags != 0)
        return fail(c->d,
                    "invalid commit message: the flags at offset 1 are 0x%02x, but protocol "
                    "version 1 defines none (must be 0)",
                    flags);
    if (get_u64(c, "the commit LSN", &commit_lsn) != 0 || get_u64(c, "the end LSN", &end_lsn) != 0)
        return WALQ_EDECODE;
    ts_at = c->pos;
    if (get_i64(c, "the commit time", &ts) != 0 || finish(c) != 0 ||
        unix_time(c, ts, ts_at, &out->timestamp_us) != 0)
        return WALQ_EDECODE;
    out->action = WALQ__ACT_COMMIT;
    out->lsn = commit_lsn;
    out->next_lsn = end_lsn;
    return 0;
}

/* Reads one column of a Relation message. */
static int get_rel_column(cursor *c, size_t colno, uint8_t *flags, const char **name,
                          size_t *namelen, uint32_t *type_oid, int32_t *typmod)
{
    c->colno = colno;
    c->colname = NULL;
    if (get_u8(c, "the flags", flags) != 0 || get_str(c, "the name", name, namelen) != 0)
        return WALQ_EDECODE;
    c->colname = *name;
    if (get_u32(c, "the type OID", type_oid) != 0 || get_i32(c, "the type modifier", typmod) != 0)
        return WALQ_EDECODE;
    c->colno = 0;
    c->colname = NULL;
    return 0;
}

static char *put_str(char **p, const char *s, size_t len)
{
    char *start = *p;

    memcpy(start, s, len);
    start[len] = '\0';
    *p += len + 1;
    return start;
}

/*
 * A Relation message is read twice: once to check all of it and count its
 * strings, then to copy it into the one allocation of the relation, which
 * replaces the old description only when the new one is whole.
 */
static int decode_relation(cursor *c, walq__change *out)
{
    static const char catalog[] = "pg_catalog";
    const char *nsp, *name, *colname;
    size_t nsplen, namelen, colnamelen, cols_at, ncols, strings;
    uint32_t oid, type_oid;
    int32_t typmod;
    uint8_t replident, flags;
    int16_t n;
    relation *r;
    char *p;

    if (get_u32(c, "the relation OID", &oid) != 0 ||
        get_str(c, "the namespace", &nsp, &nsplen) != 0 ||
        get_str(c, "the relation name", &name, &namelen) != 0 ||
        get_u8(c, "the replica identity", &replident) != 0)
        return WALQ_EDECODE;
    cols_at = c->pos;
    if (get_i16(c, "the column count", &n) != 0)
        return WALQ_EDECODE;
    if (n < 0)
        return fail(c->d,
                    "invalid relation message: the column count at offset %zu is negative (%d)",
                    cols_at, n);
    ncols = (size_t)n;
    /* The protocol says pg_catalog with an empty namespace. */
    strings = (nsplen > 0 ? nsplen : sizeof(catalog) - 1) + 1 + namelen + 1;
    for (size_t i = 0; i < ncols; i++) {
        if (get_rel_column(c, i + 1, &flags, &colname, &colnamelen, &type_oid, &typmod) != 0)
            return WALQ_EDECODE;
        strings += colnamelen + 1;
    }
    if (finish(c) != 0)
        return WALQ_EDECODE;

    r = malloc(sizeof(*r) + ncols * sizeof(rel_column) + strings);
    if (r == NULL)
        return nomem(c->d);
    p = (char *)&r->cols[ncols];
    r->oid = oid;
    r->nspname = nsplen > 0 ? put_str(&p, nsp, nsplen) : put_str(&p, catalog, sizeof(catalog) - 1);
    r->relname = put_str(&p, name, namelen);
    r->replident = (char)replident;
    r->ncols = ncols;
    c->pos = cols_at + 2;
    for (size_t i = 0; i < ncols; i++) {
        rel_column *col = &r->cols[i];

        /* Read once already: these cannot fail. */
        (void)get_rel_column(c, i + 1, &col->flags, &colname, &colnamelen, &col->type_oid,
                             &col->typmod);
        col->name = put_str(&p, colname, colnamelen);
        col->cls = class_of(col->type_oid);
    }
    if (rel_put(&c->d->rels, r) != 0) {
        free(r);
        return nomem(c->d);
    }
    out->action = WALQ__ACT_NONE;
    return 0;
}

/* A Type message names a type that is not built in; nothing walq reads depends on it. */
static int decode_type(cursor *c, walq__change *out)
{
    const char *s;
    size_t len;
    uint32_t oid;

    if (get_u32(c, "the type OID", &oid) != 0 || get_str(c, "the namespace", &s, &len) != 0 ||
        get_str(c, "the type name", &s, &len) != 0 || finish(c) != 0)
        return WALQ_EDECODE;
    out->action = WALQ__ACT_NONE;
    return 0;
}

/* An Origin message follows the Begin of a transaction replayed from another server. */
static int decode_origin(cursor *c, walq__change *out)
{
    const char *s;
    size_t len;
    uint64_t lsn;

    if (get_u64(c, "the origin's commit LSN", &lsn) != 0 ||
        get_str(c, "the origin name", &s, &len) != 0 || finish(c) != 0)
        return WALQ_EDECODE;
    out->action = WALQ__ACT_NONE;
    return 0;
}

static int decode_insert(cursor *c, walq__change *out)
{
    relation *r;
    uint8_t kind;

    if (get_relation(c, &r) != 0 || get_tuple_kind(c, "N", "'N' (the new row)", &kind) != 0 ||
        read_tuple(c, r, "new row", 0, &c->d->cols, &out->columns, &out->ncolumns) != 0 ||
        finish(c) != 0)
        return WALQ_EDECODE;
    out->action = WALQ__ACT_INSERT;
    out->schema = r->nspname;
    out->table = r->relname;
    return 0;
}

/* The old key ('K') or row ('O') comes only when the update changed the key or the identity is
 * full. */
static int decode_update(cursor *c, walq__change *out)
{
    relation *r;
    uint8_t kind;

    if (get_relation(c, &r) != 0 ||
        get_tuple_kind(c, "KON", "'K' (the key), 'O' (the old row) or 'N' (the new row)", &kind) !=
            0)
        return WALQ_EDECODE;
    if (kind != 'N') {
        if (read_tuple(c, r, tuple_label(kind), kind == 'K', &c->d->ident, &out->identity,
                       &out->nidentity) != 0 ||
            get_tuple_kind(c, "N", "'N' (the new row)", &kind) != 0)
            return WALQ_EDECODE;
    }
    if (read_tuple(c, r, "new row", 0, &c->d->cols, &out->columns, &out->ncolumns) != 0 ||
        finish(c) != 0)
        return WALQ_EDECODE;
    out->action = WALQ__ACT_UPDATE;
    out->schema = r->nspname;
    out->table = r->relname;
    return 0;
}

static int decode_delete(cursor *c, walq__change *out)
{
    relation *r;
    uint8_t kind;

    if (get_relation(c, &r) != 0 ||
        get_tuple_kind(c, "KO", "'K' (the key) or 'O' (the old row)", &kind) != 0 ||
        read_tuple(c, r, tuple_label(kind), kind == 'K', &c->d->ident, &out->identity,
                   &out->nidentity) != 0 ||
        finish(c) != 0)
        return WALQ_EDECODE;
    out->action = WALQ__ACT_DELETE;
    out->schema = r->nspname;
    out->table = r->relname;
    return 0;
}

/* One TRUNCATE can name many tables; the change reports the first. */
static int decode_truncate(cursor *c, walq__change *out)
{
    const relation *first = NULL;
    uint32_t n, oid;
    uint8_t options;

    /* Option bits 1 (CASCADE) and 2 (RESTART IDENTITY) say nothing about the rows. */
    if (get_u32(c, "the relation count", &n) != 0 || get_u8(c, "the options", &options) != 0)
        return WALQ_EDECODE;
    if (n == 0)
        return fail(c->d, "invalid truncate message: the relation count at offset 1 is 0");
    if ((c->len - c->pos) / 4 < n)
        return fail(c->d,
                    "truncated truncate message: %" PRIu32 " relation OIDs at offset %zu need "
                    "%zu bytes, but %zu remain",
                    n, c->pos, (size_t)n * 4, c->len - c->pos);
    for (uint32_t i = 0; i < n; i++) {
        size_t at = c->pos;
        const relation *r;

        (void)get_u32(c, "a relation OID", &oid); /* the count was checked */
        r = rel_find(&c->d->rels, oid);
        if (r == NULL)
            return fail(c->d,
                        "truncate for relation %" PRIu32 " (offset %zu), which no Relation "
                        "message described",
                        oid, at);
        if (first == NULL)
            first = r;
    }
    if (finish(c) != 0)
        return WALQ_EDECODE;
    out->action = WALQ__ACT_TRUNCATE;
    out->schema = first->nspname;
    out->table = first->relname;
    return 0;
}

/* pg_logical_emit_message(), sent when the messages option is on. */
static int decode_message(cursor *c, walq__change *out)
{
    const char *prefix;
    size_t prefixlen, at;
    uint8_t flags;
    uint64_t lsn;
    int32_t n;

    if (get_u8(c, "the flags", &flags) != 0)
        return WALQ_EDECODE;
    if (flags > 1)
        return fail(c->d,
                    "invalid logical decoding message: the flags at offset 1 are 0x%02x, not 0 "
                    "or 1 (transactional)",
                    flags);
    if (get_u64(c, "the LSN", &lsn) != 0 || get_str(c, "the prefix", &prefix, &prefixlen) != 0)
        return WALQ_EDECODE;
    at = c->pos;
    if (get_i32(c, "the content length", &n) != 0)
        return WALQ_EDECODE;
    if (n < 0)
        return fail(c->d,
                    "invalid logical decoding message: the content length at offset %zu is "
                    "negative (%d)",
                    at, n);
    if (need(c, (size_t)n, "the content") != 0)
        return WALQ_EDECODE;
    out->prefix = keep(c, (const unsigned char *)prefix, prefixlen);
    out->content = keep(c, c->buf + c->pos, (size_t)n);
    c->pos += (size_t)n;
    if (finish(c) != 0)
        return WALQ_EDECODE;
    if (out->prefix == NULL || out->content == NULL)
        return fail(c->d, "internal error: the logical decoding message outgrew its length");
    out->action = WALQ__ACT_MESSAGE;
    out->transactional = flags;
    out->lsn = lsn;
    out->content_len = (size_t)n;
    return 0;
}

/* Messages of later protocol versions, which walq does not ask for. */
static const struct {
    unsigned char type;
    const char *name;
    int version;
} later_messages[] = {
    {'S', "stream start", 2},    {'E', "stream stop", 2},       {'c', "stream commit", 2},
    {'A', "stream abort", 2},    {'b', "begin prepare", 3},     {'P', "prepare", 3},
    {'K', "commit prepared", 3}, {'r', "rollback prepared", 3}, {'p', "stream prepare", 3},
};

static int unknown_message(walq__pgoutput *d, unsigned char type)
{
    char tbuf[8];

    for (size_t i = 0; i < sizeof(later_messages) / sizeof(later_messages[0]); i++) {
        if (later_messages[i].type == type)
            return fail(d,
                        "the %s message (%s) at offset 0 belongs to protocol version %d, but "
                        "walq decodes version 1",
                        later_messages[i].name, show_byte(type, tbuf), later_messages[i].version);
    }
    return fail(d, "unknown message type %s at offset 0", show_byte(type, tbuf));
}

int walq__pgoutput_decode(walq__pgoutput *d, const char *buf, size_t len, walq__change *out)
{
    cursor c = {0};
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
    d->scratch_used = 0;
    if (len == 0)
        return fail(d, "empty message");
    if (len == SIZE_MAX || scratch_reserve(d, len + 1) != 0)
        return nomem(d);
    c.d = d;
    c.buf = (const unsigned char *)buf;
    c.len = len;
    c.pos = 1;
    switch (c.buf[0]) {
    case 'B':
        c.what = "begin";
        rc = decode_begin(&c, out);
        break;
    case 'C':
        c.what = "commit";
        rc = decode_commit(&c, out);
        break;
    case 'R':
        c.what = "relation";
        rc = decode_relation(&c, out);
        break;
    case 'Y':
        c.what = "type";
        rc = decode_type(&c, out);
        break;
    case 'O':
        c.what = "origin";
        rc = decode_origin(&c, out);
        break;
    case 'I':
        c.what = "insert";
        rc = decode_insert(&c, out);
        break;
    case 'U':
        c.what = "update";
        rc = decode_update(&c, out);
        break;
    case 'D':
        c.what = "delete";
        rc = decode_delete(&c, out);
        break;
    case 'T':
        c.what = "truncate";
        rc = decode_truncate(&c, out);
        break;
    case 'M':
        c.what = "logical decoding";
        rc = decode_message(&c, out);
        break;
    default:
        rc = unknown_message(d, c.buf[0]);
        break;
    }
    if (rc != 0)
        memset(out, 0, sizeof(*out));
    return rc;
}

int walq__pgoutput_new(walq__pgoutput **out)
{
    if (out == NULL)
        return WALQ_EINVAL;
    *out = calloc(1, sizeof(**out));
    return *out != NULL ? 0 : WALQ_ENOMEM;
}

void walq__pgoutput_free(walq__pgoutput *d)
{
    if (d == NULL)
        return;
    rel_clear(&d->rels);
    free(d->rels.slots);
    free(d->scratch);
    free(d->cols.v);
    free(d->ident.v);
    free(d);
}

const char *walq__pgoutput_error(const walq__pgoutput *d)
{
    return d != NULL ? d->err : "";
}

void walq__pgoutput_reset(walq__pgoutput *d)
{
    if (d != NULL)
        rel_clear(&d->rels);
}
