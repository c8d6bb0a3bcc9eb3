/*
 * Decoder of wal2json format-version 2 output.
 *
 * This is the hot path of a consumer: every change of every transaction on the
 * server passes through walq__decode().  yajl's event parser does the
 * tokenizing, the unescaping and the validation; the callbacks below only note
 * what the keys of a change hold.  Numbers come as the text the plugin
 * printed, so none is rounded or clamped on the way.  What is handed out lives
 * in storage the decoder keeps from one change to the next (an arena for the
 * strings and two column arrays), and so does the yajl handle while changes
 * parse cleanly: past the first changes, decoding allocates nothing.
 *
 * What the JSON means is checked once yajl has accepted the whole text, in a
 * fixed order: a syntax error or a truncation is reported before anything
 * else, and which problem is reported first does not depend on the order of
 * the keys.
 */
#include "decode.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <yajl/yajl_parse.h>

#include "lsn.h"
#include "walq.h"

/* How much of an offending value an error message quotes. */
#define QUOTE_MAX 64

/* The first block of the string arena; blocks grow to what a change needs. */
#define ARENA_MIN 4096

/* What a JSON value is, as far as the decoder cares. */
typedef enum jkind { J_NONE = 0, J_NULL, J_BOOL, J_NUMBER, J_STRING, J_ARRAY, J_OBJECT } jkind;

/* The value of one key of a change: a scalar, or only the kind of a container. */
typedef struct slot {
    jkind kind;
    int b;
    const char *str; /* J_STRING and J_NUMBER: the text, in the arena */
    size_t len;
} slot;

/* A block of the arena; the blocks filled during one change are chained from the newest. */
typedef struct block {
    struct block *prev;
    size_t cap;
    char data[];
} block;

/*
 * The strings of the current change.  A change that needs more than one block
 * has them replaced at the next reset by one block that holds it all, so the
 * arena settles on a single block as large as the largest change.
 */
typedef struct arena {
    block *cur;
    size_t used;  /* of cur */
    size_t total; /* handed out since the last reset */
    size_t peak;  /* the most one change has needed */
} arena;

/* A column array kept across changes; it never shrinks, so it warms up. */
typedef struct colvec {
    walq__value *v;
    size_t cap;
} colvec;

/* A "columns" or "identity" array as it is read. */
typedef struct section {
    colvec cv;
    const char *label; /* "column" or "identity column" */
    size_t n;          /* elements read */
    int failed;        /* err says what is wrong with the first bad element */
    char err[256];
} section;

enum { S_COLUMNS, S_IDENTITY };

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

/* The keys of a column; "typeoid" and any other are ignored. */
enum { C_OTHER, C_NAME, C_TYPE, C_VALUE };

/* Where the parse is: outside any container, in the change, in a column array, in a column. */
enum { AT_TOP, AT_CHANGE, AT_ARRAY, AT_COLUMN };

/* The top-level value: not begun, begun, or complete. */
enum { ROOT_NONE, ROOT_OPEN, ROOT_DONE };

struct walq__decoder {
    yajl_handle parser; /* reused while changes parse cleanly */
    arena strings;
    section sections[2];
    /* The parse of the current change. */
    int at;
    size_t skip; /* depth inside a container the decoder ignores; 0 outside */
    int key;     /* the K_* of the change's key whose value comes next, or -1 */
    slot keys[K_COUNT];
    section *sect; /* AT_ARRAY and AT_COLUMN: the array being read */
    int col_key;   /* AT_COLUMN: the C_* of the key whose value comes next */
    jkind col_name, col_type, col_value;
    int root;
    jkind root_kind;
    int root_integral; /* a top-level number without fraction or exponent */
    size_t root_end;   /* the offset just past the top-level value */
    int oom;
    char err[256];
};

static int fail(walq__decoder *d, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int fail(walq__decoder *d, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(d->err, sizeof(d->err), fmt, ap);
    va_end(ap);
    return WALQ_EDECODE;
}

static int nomem(walq__decoder *d)
{
    snprintf(d->err, sizeof(d->err), "out of memory");
    return WALQ_ENOMEM;
}

static int quote_len(size_t len)
{
    return (int)(len > QUOTE_MAX ? QUOTE_MAX : len);
}

/* Names as json-c printed them, which the decoder's messages have always used. */
static const char *kind_name(jkind kind, int integral)
{
    switch (kind) {
    case J_NULL:
        return "null";
    case J_BOOL:
        return "boolean";
    case J_NUMBER:
        return integral ? "int" : "double";
    case J_STRING:
        return "string";
    case J_ARRAY:
        return "array";
    case J_OBJECT:
        return "object";
    default:
        return "nothing";
    }
}

/* The offset of the first byte at or after p that is not JSON whitespace. */
static size_t skip_space(const char *buf, size_t len, size_t p)
{
    while (p < len && (buf[p] == ' ' || buf[p] == '\n' || buf[p] == '\r' || buf[p] == '\t'))
        p++;
    return p;
}

static void arena_free(arena *a)
{
    while (a->cur != NULL) {
        block *prev = a->cur->prev;

        free(a->cur);
        a->cur = prev;
    }
}

static void arena_reset(arena *a)
{
    if (a->cur != NULL && a->cur->prev != NULL)
        arena_free(a);
    a->used = 0;
    a->total = 0;
}

static char *arena_alloc(arena *a, size_t n)
{
    char *p;

    if (a->cur == NULL || a->cur->cap - a->used < n) {
        size_t cap = a->cur != NULL ? a->cur->cap : ARENA_MIN;
        block *b;

        while (cap < n || cap < a->peak) {
            if (cap > SIZE_MAX / 2 - sizeof(block))
                return NULL;
            cap *= 2;
        }
        b = malloc(sizeof(block) + cap);
        if (b == NULL)
            return NULL;
        b->prev = a->cur;
        b->cap = cap;
        a->cur = b;
        a->used = 0;
    }
    p = a->cur->data + a->used;
    a->used += n;
    a->total += n;
    if (a->total > a->peak)
        a->peak = a->total;
    return p;
}

/* Copies len bytes into the arena, NUL-terminated; NULL when memory runs out. */
static const char *keep(walq__decoder *d, const char *s, size_t len)
{
    char *p = arena_alloc(&d->strings, len + 1);

    if (p == NULL) {
        d->oom = 1;
        return NULL;
    }
    memcpy(p, s, len);
    p[len] = '\0';
    return p;
}

/* Grows a column array to hold n values. */
static int colvec_reserve(colvec *cv, size_t n)
{
    size_t cap = cv->cap ? cv->cap : 16;
    walq__value *v;

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
    cv->cap = cap;
    return 0;
}

/*
 * Whether the text of a JSON number is an integer that fits int64, and its
 * value.  yajl has checked the syntax, so anything but a digit after the
 * optional minus sign is a fraction or an exponent.
 */
int walq__int64_from_text(const char *s, size_t len, int64_t *out)
{
    uint64_t u = 0, limit = INT64_MAX;
    int neg = len > 0 && s[0] == '-';
    size_t i = neg ? 1 : 0;

    if (neg)
        limit = (uint64_t)INT64_MAX + 1;
    if (i == len)
        return 0;
    for (; i < len; i++) {
        unsigned digit = (unsigned)s[i] - '0';

        if (digit > 9 || u > (limit - digit) / 10)
            return 0;
        u = u * 10 + digit;
    }
    if (!neg)
        *out = (int64_t)u;
    else if (u == (uint64_t)INT64_MAX + 1)
        *out = INT64_MIN;
    else
        *out = -(int64_t)u;
    return 1;
}

static int same(const unsigned char *k, size_t len, const char *name)
{
    return len == strlen(name) && memcmp(k, name, len) == 0;
}

/* Switching on the first byte leaves at most three comparisons per key. */
static int key_index(const unsigned char *k, size_t len)
{
    if (len == 0)
        return -1;
    switch (k[0]) {
    case 'a':
        return same(k, len, "action") ? K_ACTION : -1;
    case 'x':
        return same(k, len, "xid") ? K_XID : -1;
    case 't':
        if (same(k, len, "timestamp"))
            return K_TIMESTAMP;
        if (same(k, len, "table"))
            return K_TABLE;
        return same(k, len, "transactional") ? K_TRANSACTIONAL : -1;
    case 'l':
        return same(k, len, "lsn") ? K_LSN : -1;
    case 'n':
        return same(k, len, "nextlsn") ? K_NEXTLSN : -1;
    case 's':
        return same(k, len, "schema") ? K_SCHEMA : -1;
    case 'c':
        if (same(k, len, "columns"))
            return K_COLUMNS;
        return same(k, len, "content") ? K_CONTENT : -1;
    case 'i':
        return same(k, len, "identity") ? K_IDENTITY : -1;
    case 'p':
        return same(k, len, "prefix") ? K_PREFIX : -1;
    default:
        return -1;
    }
}

static int column_key(const unsigned char *k, size_t len)
{
    if (same(k, len, "name"))
        return C_NAME;
    if (same(k, len, "type"))
        return C_TYPE;
    return same(k, len, "value") ? C_VALUE : C_OTHER;
}

/* Notes the first bad element of the array being read. */
static void section_fail(walq__decoder *d, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void section_fail(walq__decoder *d, const char *fmt, ...)
{
    section *s = d->sect;
    va_list ap;

    if (s->failed)
        return;
    s->failed = 1;
    va_start(ap, fmt);
    vsnprintf(s->err, sizeof(s->err), fmt, ap);
    va_end(ap);
}

/*
 * The callbacks.  They return 0, which stops yajl, only when memory runs out
 * or when a second value follows the change; every other problem is noted for
 * fill_change() and the parse goes on, so that a syntax error further on is
 * still the one reported.
 */

static void root_done(walq__decoder *d, jkind kind)
{
    d->root = ROOT_DONE;
    d->root_kind = kind;
    /*
     * During a callback yajl's count of bytes consumed stops just past the
     * token it reports (here the last one of the value), which is where the
     * change ends; the offsets of the tests' trailing-data cases rest on it.
     */
    d->root_end = yajl_get_bytes_consumed(d->parser);
}

static int set_value(walq__decoder *d, walq__value *v, jkind kind, const char *s, size_t len, int b)
{
    v->b = 0;
    v->i = 0;
    v->str = NULL;
    v->len = 0;
    switch (kind) {
    case J_NULL:
        v->kind = WALQ__V_NULL;
        return 1;
    case J_BOOL:
        v->kind = WALQ__V_BOOL;
        v->b = b;
        return 1;
    default:
        if ((v->str = keep(d, s, len)) == NULL)
            return 0;
        v->len = len;
        if (kind == J_STRING)
            v->kind = WALQ__V_STR;
        else
            v->kind = walq__int64_from_text(s, len, &v->i) ? WALQ__V_INT : WALQ__V_NUM;
        return 1;
    }
}

/* A name or a type: only a string is kept. */
static int set_text(walq__decoder *d, const char **out, jkind *kind_out, jkind kind, const char *s,
                    size_t len)
{
    *kind_out = kind;
    *out = NULL;
    if (kind != J_STRING)
        return 1;
    return (*out = keep(d, s, len)) != NULL;
}

static int on_scalar(walq__decoder *d, jkind kind, const char *s, size_t len, int b)
{
    walq__value *v;
    slot *k;

    if (d->skip > 0)
        return 1;
    switch (d->at) {
    case AT_TOP:
        if (d->root != ROOT_NONE)
            return 0;
        d->root_integral = kind == J_NUMBER && memchr(s, '.', len) == NULL &&
                           memchr(s, 'e', len) == NULL && memchr(s, 'E', len) == NULL;
        root_done(d, kind);
        return 1;
    case AT_CHANGE:
        if (d->key < 0)
            return 1;
        k = &d->keys[d->key];
        k->kind = kind;
        k->b = b;
        k->str = NULL;
        k->len = 0;
        if (s != NULL) {
            if ((k->str = keep(d, s, len)) == NULL)
                return 0;
            k->len = len;
        }
        return 1;
    case AT_ARRAY:
        section_fail(d, "%s %zu is not an object", d->sect->label, d->sect->n + 1);
        d->sect->n++;
        return 1;
    default:
        v = &d->sect->cv.v[d->sect->n];
        switch (d->col_key) {
        case C_NAME:
            return set_text(d, &v->name, &d->col_name, kind, s, len);
        case C_TYPE:
            return set_text(d, &v->type, &d->col_type, kind, s, len);
        case C_VALUE:
            d->col_value = kind;
            return set_value(d, v, kind, s, len, b);
        default:
            return 1;
        }
    }
}

static int on_null(void *ctx)
{
    return on_scalar(ctx, J_NULL, NULL, 0, 0);
}

static int on_boolean(void *ctx, int b)
{
    return on_scalar(ctx, J_BOOL, NULL, 0, b != 0);
}

static int on_number(void *ctx, const char *s, size_t len)
{
    return on_scalar(ctx, J_NUMBER, s, len, 0);
}

static int on_string(void *ctx, const unsigned char *s, size_t len)
{
    return on_scalar(ctx, J_STRING, (const char *)s, len, 0);
}

static int on_start(walq__decoder *d, jkind kind)
{
    section *s;

    if (d->skip > 0) {
        d->skip++;
        return 1;
    }
    switch (d->at) {
    case AT_TOP:
        if (d->root != ROOT_NONE)
            return 0;
        d->root = ROOT_OPEN;
        d->root_kind = kind;
        if (kind == J_OBJECT)
            d->at = AT_CHANGE;
        else
            d->skip = 1;
        return 1;
    case AT_CHANGE:
        if (d->key >= 0)
            d->keys[d->key] = (slot){.kind = kind};
        if (kind == J_ARRAY && (d->key == K_COLUMNS || d->key == K_IDENTITY)) {
            s = &d->sections[d->key == K_COLUMNS ? S_COLUMNS : S_IDENTITY];
            s->n = 0;
            s->failed = 0;
            d->sect = s;
            d->at = AT_ARRAY;
        } else {
            d->skip = 1;
        }
        return 1;
    case AT_ARRAY:
        s = d->sect;
        if (kind != J_OBJECT) {
            section_fail(d, "%s %zu is not an object", s->label, s->n + 1);
            s->n++;
            d->skip = 1;
            return 1;
        }
        if (colvec_reserve(&s->cv, s->n + 1) != 0) {
            d->oom = 1;
            return 0;
        }
        memset(&s->cv.v[s->n], 0, sizeof(walq__value));
        d->col_key = C_OTHER;
        d->col_name = d->col_type = d->col_value = J_NONE;
        d->at = AT_COLUMN;
        return 1;
    default:
        switch (d->col_key) {
        case C_NAME:
            d->col_name = kind;
            d->sect->cv.v[d->sect->n].name = NULL;
            break;
        case C_TYPE:
            d->col_type = kind;
            d->sect->cv.v[d->sect->n].type = NULL;
            break;
        case C_VALUE:
            d->col_value = kind;
            break;
        default:
            break;
        }
        d->skip = 1;
        return 1;
    }
}

static int on_start_map(void *ctx)
{
    return on_start(ctx, J_OBJECT);
}

static int on_start_array(void *ctx)
{
    return on_start(ctx, J_ARRAY);
}

/* Checks a column in the order the decoder always has: name, type, value. */
static void end_column(walq__decoder *d)
{
    section *s = d->sect;
    size_t colno = ++s->n;

    if (d->col_name == J_NONE)
        section_fail(d, "%s %zu has no \"name\"", s->label, colno);
    else if (d->col_name != J_STRING)
        section_fail(d, "\"name\" of %s %zu is not a string", s->label, colno);
    else if (d->col_type != J_NONE && d->col_type != J_STRING)
        section_fail(d, "\"type\" of %s %zu is not a string", s->label, colno);
    else if (d->col_value == J_NONE)
        section_fail(d, "%s %zu has no \"value\"", s->label, colno);
    else if (d->col_value == J_ARRAY || d->col_value == J_OBJECT)
        section_fail(d, "value of %s %zu (\"%s\") is a JSON %s", s->label, colno,
                     s->cv.v[colno - 1].name, kind_name(d->col_value, 0));
}

/* yajl pairs every end with its start, so one callback serves both kinds. */
static int on_end(void *ctx)
{
    walq__decoder *d = ctx;

    if (d->skip > 0) {
        if (--d->skip == 0 && d->at == AT_TOP)
            root_done(d, d->root_kind);
        return 1;
    }
    switch (d->at) {
    case AT_CHANGE:
        d->at = AT_TOP;
        root_done(d, J_OBJECT);
        break;
    case AT_ARRAY:
        d->at = AT_CHANGE;
        break;
    case AT_COLUMN:
        end_column(d);
        d->at = AT_ARRAY;
        break;
    default:
        break;
    }
    return 1;
}

static int on_map_key(void *ctx, const unsigned char *k, size_t len)
{
    walq__decoder *d = ctx;

    if (d->skip > 0)
        return 1;
    if (d->at == AT_CHANGE)
        d->key = key_index(k, len);
    else if (d->at == AT_COLUMN)
        d->col_key = column_key(k, len);
    return 1;
}

static const yajl_callbacks callbacks = {
    on_null,      on_boolean, NULL,   NULL,           on_number, on_string,
    on_start_map, on_map_key, on_end, on_start_array, on_end,
};

static int parser_open(walq__decoder *d)
{
    d->parser = yajl_alloc(&callbacks, NULL, d);
    if (d->parser == NULL)
        return WALQ_ENOMEM;
    /*
     * One handle parses change after change, as it would a stream of values:
     * yajl 2 has no reset, and a handle stays usable after a value only when
     * multiple values are allowed.  Strings are not checked for UTF-8, as
     * json-c did not check them: wal2json prints text in the database's
     * encoding.
     */
    yajl_config(d->parser, yajl_allow_multiple_values, 1);
    yajl_config(d->parser, yajl_dont_validate_strings, 1);
    return 0;
}

/* After an error or a truncation the handle is mid-value; the next change gets a new one. */
static void parser_close(walq__decoder *d)
{
    if (d->parser != NULL)
        yajl_free(d->parser);
    d->parser = NULL;
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
    d->sections[S_COLUMNS].label = "column";
    d->sections[S_IDENTITY].label = "identity column";
    if (parser_open(d) != 0) {
        free(d);
        return WALQ_ENOMEM;
    }
    *out = d;
    return 0;
}

void walq__decoder_free(walq__decoder *d)
{
    if (d == NULL)
        return;
    parser_close(d);
    arena_free(&d->strings);
    free(d->sections[S_COLUMNS].cv.v);
    free(d->sections[S_IDENTITY].cv.v);
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

/*
 * Syntax errors.  yajl's messages, in the words json-c used where it had
 * them; those not listed are shown as yajl wrote them.
 */
static const struct {
    const char *yajl;
    const char *ours;
} syntax_messages[] = {
    {"after key and value, inside map, I expect ',' or '}'", "object value separator ',' expected"},
    {"after array element, I expect ',' or ']'", "array value separator ',' expected"},
    {"object key and value must be separated by a colon (':')",
     "object property name separator ':' expected"},
    {"invalid object key (must be a string)", "quoted object property name expected"},
    {"unallowed token at this point in JSON text", "value expected"},
    {"invalid char in json text", "unexpected character"},
    {"invalid string in json text", "invalid literal: true, false or null expected"},
    {"inside a string, '\\' occurs before a character which it may not",
     "invalid escape sequence in string"},
    {"invalid character inside string", "unescaped control character in string"},
    {"invalid (non-hex) character occurs after '\\u' inside string",
     "four hex digits expected after \\u in string"},
    {"malformed number, a digit is required after the exponent", "digit expected in exponent"},
    {"malformed number, a digit is required after the decimal point",
     "digit expected after decimal point"},
    {"malformed number, a digit is required after the minus sign", "digit expected after minus"},
    {"probable comment found in input text, comments are not enabled", "comments are not JSON"},
};

/* Says what yajl found wrong, and whether its lexer (rather than its parser) found it. */
static void syntax_message(yajl_handle h, char *out, size_t outsz, int *lexical)
{
    unsigned char *msg = yajl_get_error(h, 0, NULL, 0);
    const char *m, *colon;
    size_t len;

    *lexical = 0;
    if (msg == NULL) {
        snprintf(out, outsz, "syntax error");
        return;
    }
    /* "parse error: what.\n" or "lexical error: what.\n" */
    m = (const char *)msg;
    *lexical = strncmp(m, "lexical ", 8) == 0;
    colon = strstr(m, ": ");
    if (colon != NULL)
        m = colon + 2;
    len = strlen(m);
    while (len > 0 && (m[len - 1] == '\n' || m[len - 1] == '.'))
        len--;
    snprintf(out, outsz, "%.*s", (int)len, m);
    for (size_t i = 0; i < sizeof(syntax_messages) / sizeof(syntax_messages[0]); i++) {
        if (strlen(syntax_messages[i].yajl) == len &&
            memcmp(syntax_messages[i].yajl, m, len) == 0) {
            snprintf(out, outsz, "%s", syntax_messages[i].ours);
            break;
        }
    }
    yajl_free_error(h, msg);
}

/*
 * Where yajl stopped on a syntax error is not always where the fault is (it
 * can be inside the token it rejected), so the offset reported is found by a
 * second parse that notes where each accepted token ends: the rejected token
 * starts after that, past blanks and the ':' or ',' yajl accepts there.
 */
typedef struct locator {
    yajl_handle h;
    size_t end;  /* the end of the last token yajl reported */
    int depth;   /* of containers */
    char expect; /* what punctuation may come next: ':' after a key, ',' after a member */
} locator;

static int loc_token(locator *l, char expect)
{
    l->end = yajl_get_bytes_consumed(l->h);
    l->expect = expect;
    return 1;
}

static int loc_value(void *ctx)
{
    locator *l = ctx;

    return loc_token(l, l->depth > 0 ? ',' : 0);
}

static int loc_boolean(void *ctx, int b)
{
    (void)b;
    return loc_value(ctx);
}

static int loc_number(void *ctx, const char *s, size_t len)
{
    (void)s;
    (void)len;
    return loc_value(ctx);
}

static int loc_string(void *ctx, const unsigned char *s, size_t len)
{
    (void)s;
    (void)len;
    return loc_value(ctx);
}

static int loc_key(void *ctx, const unsigned char *s, size_t len)
{
    (void)s;
    (void)len;
    return loc_token(ctx, ':');
}

static int loc_start(void *ctx)
{
    locator *l = ctx;

    l->depth++;
    return loc_token(l, 0);
}

static int loc_end(void *ctx)
{
    locator *l = ctx;

    l->depth--;
    return loc_value(l);
}

static size_t syntax_error_offset(const char *buf, size_t len, size_t stop, int lexical)
{
    static const yajl_callbacks loc_callbacks = {
        loc_value, loc_boolean, NULL,    NULL,      loc_number, loc_string,
        loc_start, loc_key,     loc_end, loc_start, loc_end,
    };
    locator l = {0};
    size_t p;

    l.h = yajl_alloc(&loc_callbacks, NULL, &l);
    if (l.h == NULL)
        return stop;
    yajl_config(l.h, yajl_dont_validate_strings, 1);
    yajl_parse(l.h, (const unsigned char *)buf, len);
    yajl_free(l.h);
    p = skip_space(buf, len, l.end);
    if (l.expect != 0 && p < len && buf[p] == l.expect)
        p = skip_space(buf, len, p + 1);
    /* The lexer stops at a fault inside a token that began well, such as a bad escape. */
    if (lexical && stop > p + 1)
        return stop;
    return p;
}

static int syntax_error(walq__decoder *d, const char *buf, size_t len)
{
    char what[160];
    size_t stop = yajl_get_bytes_consumed(d->parser);
    int lexical;

    syntax_message(d->parser, what, sizeof(what), &lexical);
    parser_close(d);
    return fail(d, "invalid JSON at offset %zu: %s", syntax_error_offset(buf, len, stop, lexical),
                what);
}

/* Judges what yajl made of the text: one JSON object and nothing after it but blanks. */
static int check_syntax(walq__decoder *d, yajl_status st, const char *buf, size_t len)
{
    if (d->oom) {
        parser_close(d);
        return nomem(d);
    }
    if (d->root == ROOT_DONE) {
        /* yajl reads on past the change, as into the next value of a stream. */
        size_t p = skip_space(buf, len, d->root_end);

        if (p < len || st != yajl_status_ok) {
            parser_close(d);
            return fail(d, "unexpected data after the JSON object at offset %zu", p);
        }
    } else if (st != yajl_status_ok) {
        return syntax_error(d, buf, len);
    } else if (d->root == ROOT_OPEN) {
        parser_close(d);
        return fail(d, "truncated JSON: input ends after %zu bytes inside a value", len);
    } else {
        /* Nothing came out of yajl yet: a bare number waits for what ends it. */
        st = yajl_complete_parse(d->parser);
        parser_close(d);
        if (d->oom)
            return nomem(d);
        if (st != yajl_status_ok || d->root != ROOT_DONE)
            return fail(d, "truncated JSON: input ends after %zu bytes inside a value", len);
    }
    if (d->root_kind != J_OBJECT)
        return fail(d, "change is a JSON %s, not an object",
                    kind_name(d->root_kind, d->root_integral));
    return 0;
}

static int parse_lsn_key(walq__decoder *d, int key, uint64_t *out)
{
    const slot *k = &d->keys[key];

    if (k->kind != J_STRING)
        return fail(d, "\"%s\" is not a string", key_names[key]);
    if (walq__lsn_parse_n(k->str, k->len, out) != 0)
        return fail(d, "\"%s\" is not a valid LSN: \"%.*s\"", key_names[key], quote_len(k->len),
                    k->str);
    return 0;
}

static int parse_xid(walq__decoder *d, uint32_t *out)
{
    const slot *k = &d->keys[K_XID];
    int64_t xid;

    switch (k->kind) {
    case J_NUMBER:
        if (walq__int64_from_text(k->str, k->len, &xid) && xid >= 0 && xid <= (int64_t)UINT32_MAX) {
            *out = (uint32_t)xid;
            return 0;
        }
        return fail(d, "\"xid\" is not a valid transaction ID: %.*s", quote_len(k->len), k->str);
    case J_STRING:
        return fail(d, "\"xid\" is not a valid transaction ID: \"%.*s\"", quote_len(k->len),
                    k->str);
    case J_BOOL:
        return fail(d, "\"xid\" is not a valid transaction ID: %s", k->b ? "true" : "false");
    case J_NULL:
        return fail(d, "\"xid\" is not a valid transaction ID: null");
    default:
        return fail(d, "\"xid\" is not a valid transaction ID: a JSON %s", kind_name(k->kind, 0));
    }
}

/* Returns the string of a key that the action requires. */
static int required_string(walq__decoder *d, int key, char action, const char **out, size_t *len)
{
    const slot *k = &d->keys[key];

    if (k->kind == J_NONE)
        return fail(d, "\"%c\" change has no \"%s\" key", action, key_names[key]);
    if (k->kind != J_STRING)
        return fail(d, "\"%s\" is not a string", key_names[key]);
    *out = k->str;
    if (len != NULL)
        *len = k->len;
    return 0;
}

/* Hands out the values of a "columns" or "identity" array. */
static int read_section(walq__decoder *d, int key, walq__value **out, size_t *nout)
{
    const section *s = &d->sections[key == K_COLUMNS ? S_COLUMNS : S_IDENTITY];

    if (d->keys[key].kind != J_ARRAY)
        return fail(d, "\"%s\" is not an array", key_names[key]);
    if (s->failed)
        return fail(d, "%s", s->err);
    *out = s->cv.v;
    *nout = s->n;
    return 0;
}

static int fill_change(walq__decoder *d, walq__change *out)
{
    const slot *k = d->keys;
    char action;
    int rc;

    if (k[K_ACTION].kind == J_NONE)
        return fail(d, "change has no \"action\" key");
    if (k[K_ACTION].kind != J_STRING)
        return fail(d, "\"action\" is not a string");
    action = k[K_ACTION].str[0];
    if (k[K_ACTION].len != 1 || action == '\0' || strchr("BCIUDTM", action) == NULL)
        return fail(d, "unknown action \"%.*s\"", quote_len(k[K_ACTION].len), k[K_ACTION].str);
    out->action = (walq__action)action;

    /* The plugin's include-* options decide which of these are present. */
    if (k[K_XID].kind != J_NONE && (rc = parse_xid(d, &out->xid)) != 0)
        return rc;
    if (k[K_TIMESTAMP].kind != J_NONE) {
        if (k[K_TIMESTAMP].kind != J_STRING)
            return fail(d, "\"timestamp\" is not a string");
        if (walq__parse_timestamp(k[K_TIMESTAMP].str, k[K_TIMESTAMP].len, &out->timestamp_us) != 0)
            return fail(d, "\"timestamp\" is not a valid timestamp: \"%.*s\"",
                        quote_len(k[K_TIMESTAMP].len), k[K_TIMESTAMP].str);
    }
    if (k[K_LSN].kind != J_NONE && (rc = parse_lsn_key(d, K_LSN, &out->lsn)) != 0)
        return rc;
    if (k[K_NEXTLSN].kind != J_NONE && (rc = parse_lsn_key(d, K_NEXTLSN, &out->next_lsn)) != 0)
        return rc;

    switch (action) {
    case 'B':
    case 'C':
        return 0;
    case 'M':
        if ((rc = required_string(d, K_PREFIX, action, &out->prefix, NULL)) != 0)
            return rc;
        if ((rc = required_string(d, K_CONTENT, action, &out->content, &out->content_len)) != 0)
            return rc;
        if (k[K_TRANSACTIONAL].kind == J_NONE)
            return fail(d, "\"M\" change has no \"transactional\" key");
        if (k[K_TRANSACTIONAL].kind != J_BOOL)
            return fail(d, "\"transactional\" is not a boolean");
        out->transactional = k[K_TRANSACTIONAL].b;
        return 0;
    default:
        break;
    }

    /* I, U, D and T name their table. */
    if ((rc = required_string(d, K_SCHEMA, action, &out->schema, NULL)) != 0)
        return rc;
    if ((rc = required_string(d, K_TABLE, action, &out->table, NULL)) != 0)
        return rc;
    if (action == 'I' || action == 'U') {
        if (k[K_COLUMNS].kind == J_NONE)
            return fail(d, "\"%c\" change has no \"columns\" key", action);
        if ((rc = read_section(d, K_COLUMNS, &out->columns, &out->ncolumns)) != 0)
            return rc;
    }
    if (action == 'D' && k[K_IDENTITY].kind == J_NONE)
        return fail(d, "\"D\" change has no \"identity\" key");
    /* An update carries the old key only when the replica identity provides one. */
    if ((action == 'U' || action == 'D') && k[K_IDENTITY].kind != J_NONE) {
        if ((rc = read_section(d, K_IDENTITY, &out->identity, &out->nidentity)) != 0)
            return rc;
    }
    return 0;
}

static void begin_change(walq__decoder *d)
{
    arena_reset(&d->strings);
    d->at = AT_TOP;
    d->skip = 0;
    d->key = -1;
    memset(d->keys, 0, sizeof(d->keys));
    d->sect = NULL;
    for (int i = 0; i < 2; i++) {
        d->sections[i].n = 0;
        d->sections[i].failed = 0;
    }
    d->root = ROOT_NONE;
    d->root_kind = J_NONE;
    d->root_integral = 0;
    d->root_end = 0;
    d->oom = 0;
}

int walq__decode(walq__decoder *d, const char *buf, size_t len, walq__change *out)
{
    yajl_status st;
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
    begin_change(d);
    if (skip_space(buf, len, 0) == len)
        return fail(d, "empty change");
    if (d->parser == NULL && parser_open(d) != 0)
        return nomem(d);

    st = yajl_parse(d->parser, (const unsigned char *)buf, len);
    rc = check_syntax(d, st, buf, len);
    if (rc == 0)
        rc = fill_change(d, out);
    if (rc != 0)
        memset(out, 0, sizeof(*out));
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
