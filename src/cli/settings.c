/*
 * The settings tables' machinery: values from text, the command line, the
 * ini file (inih does the syntax; this file the meaning), --help, and the
 * comparison of two builds at a reload.
 */
#include <errno.h>
#include <getopt.h>
#include <ini.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cli/settings.h"
#include "common.h"

/* The option codes of getopt_long: the table's index from here, and these two. */
#define OPT_BASE   256
#define OPT_CONFIG 'C'
#define OPT_HELP   'h'

/* ------------------------------------------------------------------ */
/* The pool                                                            */

static void *pool_keep(walq__set_pool *pool, void *p)
{
    if (p == NULL)
        return NULL;
    if (pool->n == pool->cap) {
        size_t cap = pool->cap ? pool->cap * 2 : 16;
        void **v = realloc(pool->p, cap * sizeof(*v));

        if (v == NULL) {
            free(p);
            return NULL;
        }
        pool->p = v;
        pool->cap = cap;
    }
    pool->p[pool->n++] = p;
    return p;
}

static char *pool_strndup(walq__set_pool *pool, const char *s, size_t n)
{
    char *p = malloc(n + 1);

    if (p != NULL) {
        memcpy(p, s, n);
        p[n] = '\0';
    }
    return pool_keep(pool, p);
}

void walq__set_pool_free(walq__set_pool *pool)
{
    for (size_t i = 0; i < pool->n; i++)
        free(pool->p[i]);
    free(pool->p);
    pool->p = NULL;
    pool->n = pool->cap = 0;
}

/* A list one longer: a new array in the pool (lists are short). */
static int strv_push(walq__strv *sv, const char *s, walq__set_pool *pool)
{
    const char **v = pool_keep(pool, malloc((sv->n + 2) * sizeof(*v)));

    if (v == NULL)
        return -1;
    if (sv->n > 0)
        memcpy(v, sv->v, sv->n * sizeof(*v));
    v[sv->n++] = s;
    v[sv->n] = NULL;
    sv->v = v;
    return 0;
}

/*
 * Splits text into words as a shell does, without expanding anything:
 * blanks separate words, '...' keeps everything as it is, "..." keeps all
 * but \" and \\, and a backslash outside quotes keeps the next character.
 * Appends them to sv.  -1 with err for an unclosed quote.
 */
static int split_words(walq__strv *sv, const char *text, walq__set_pool *pool, char *err,
                       size_t errlen)
{
    const char *p = text;
    char *word = pool_keep(pool, malloc(strlen(text) + 1));

    if (word == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    for (;;) {
        size_t n = 0;
        int any = 0;

        while (*p == ' ' || *p == '\t')
            p++;
        if (*p == '\0')
            return 0;
        while (*p != '\0' && *p != ' ' && *p != '\t') {
            char q = *p;

            any = 1;
            if (q == '\'' || q == '"') {
                p++;
                while (*p != '\0' && *p != q) {
                    if (q == '"' && *p == '\\' && (p[1] == '"' || p[1] == '\\'))
                        p++;
                    word[n++] = *p++;
                }
                if (*p != q) {
                    snprintf(err, errlen, "a quote (%c) is not closed", q);
                    return -1;
                }
                p++;
            } else if (q == '\\' && p[1] != '\0') {
                word[n++] = p[1];
                p += 2;
            } else {
                word[n++] = *p++;
            }
        }
        if (any) {
            char *w = pool_strndup(pool, word, n);

            if (w == NULL || strv_push(sv, w, pool) != 0) {
                snprintf(err, errlen, "out of memory");
                return -1;
            }
        }
    }
}

/* ------------------------------------------------------------------ */
/* Values                                                              */

/* "type const": for a pointer type, the pointer is what is read only (const char *const). */
#define AT(base, s, type)  ((type *)(void *)((char *)(base) + (s)->off))
#define CAT(base, s, type) ((type const *)(const void *)((const char *)(base) + (s)->off))

static int parse_int64(const char *text, int64_t lo, int64_t hi, int64_t *out)
{
    char *end;
    long long v;

    errno = 0;
    v = strtoll(text, &end, 10);
    if (errno != 0 || end == text || *end != '\0' || v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

/* Seconds into milliseconds; a positive duration stays positive. */
static int parse_seconds(const walq__setting *s, const char *text, int64_t *ms)
{
    char *end;
    double v;
    int64_t out;

    errno = 0;
    v = strtod(text, &end);
    /* Written so that "nan" is refused too. */
    if (errno != 0 || end == text || *end != '\0' || !(v >= 0 && v <= 1e7))
        return -1;
    out = (int64_t)llround(v * 1000.0);
    if (out == 0 && v > 0)
        out = 1;
    if (out == 0 && (s->flags & WALQ__SET_ZERO_OK))
        return *ms = 0, 0;
    if (out < s->lo || out > s->hi || ((s->flags & WALQ__SET_EXCL_LO) && v * 1000.0 <= s->lo))
        return -1;
    *ms = out;
    return 0;
}

static int parse_bool(const char *text, int *out)
{
    static const char *const yes[] = {"1", "yes", "true", "on"};
    static const char *const no[] = {"0", "no", "false", "off"};

    for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
        if (strcasecmp(text, yes[i]) == 0)
            return *out = 1, 0;
        if (strcasecmp(text, no[i]) == 0)
            return *out = 0, 0;
    }
    return -1;
}

static const walq__set_name *find_name(const walq__set_name *names, const char *text)
{
    for (; names->name != NULL; names++)
        if (strcmp(names->name, text) == 0)
            return names;
    return NULL;
}

int walq__setting_set(const walq__setting *s, void *base, const char *value, walq__set_pool *pool,
                      char *err, size_t errlen)
{
    const walq__set_name *nm;
    int64_t v;
    int b;

    err[0] = '\0';
    switch (s->kind) {
    case WALQ__SET_STR:
        if ((*AT(base, s, const char *) = pool_strndup(pool, value, strlen(value))) == NULL)
            goto nomem;
        break;
    case WALQ__SET_CHOICE:
        if ((nm = find_name(s->names, value)) == NULL)
            goto bad;
        *AT(base, s, const char *) = nm->name;
        break;
    case WALQ__SET_INT:
        if (parse_int64(value, s->lo, s->hi, &v) != 0)
            goto bad;
        *AT(base, s, int) = (int)v;
        break;
    case WALQ__SET_INT64:
        if (parse_int64(value, s->lo, s->hi, &v) != 0)
            goto bad;
        *AT(base, s, int64_t) = v;
        break;
    case WALQ__SET_SECONDS:
        if (parse_seconds(s, value, &v) != 0)
            goto bad;
        *AT(base, s, int64_t) = v;
        break;
    case WALQ__SET_BOOL:
        if (parse_bool(value, &b) != 0)
            goto bad;
        *AT(base, s, int) = b;
        break;
    case WALQ__SET_ENUM:
        if ((nm = find_name(s->names, value)) == NULL)
            goto bad;
        *AT(base, s, int) = nm->value;
        break;
    case WALQ__SET_WORDS:
        AT(base, s, walq__strv)->v = NULL;
        AT(base, s, walq__strv)->n = 0;
        /* fall through */
    case WALQ__SET_LIST: {
        walq__strv *sv = AT(base, s, walq__strv);
        size_t before = sv->n;

        if (split_words(sv, value, pool, err, errlen) != 0)
            return -1;
        if (sv->n == before) {
            snprintf(err, errlen, "takes %s, not an empty value", s->what);
            return -1;
        }
        break;
    }
    case WALQ__SET_FUNC:
        if (s->fn(base, value, pool) != 0)
            goto bad;
        break;
    }
    if (s->then != NULL)
        s->then(base);
    return 0;
bad:
    snprintf(err, errlen, "takes %s, not \"%s\"", s->what, value);
    return -1;
nomem:
    snprintf(err, errlen, "out of memory");
    return -1;
}

static int strv_equal(const walq__strv *a, const walq__strv *b)
{
    if (a->n != b->n)
        return 0;
    for (size_t i = 0; i < a->n; i++)
        if (strcmp(a->v[i], b->v[i]) != 0)
            return 0;
    return 1;
}

static int str_equal(const char *a, const char *b)
{
    return a == b || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

int walq__setting_equal(const walq__setting *s, const void *a, const void *b)
{
    switch (s->kind) {
    case WALQ__SET_STR:
    case WALQ__SET_CHOICE:
        return str_equal(*CAT(a, s, const char *), *CAT(b, s, const char *));
    case WALQ__SET_INT:
    case WALQ__SET_BOOL:
    case WALQ__SET_ENUM:
        return *CAT(a, s, int) == *CAT(b, s, int);
    case WALQ__SET_INT64:
    case WALQ__SET_SECONDS:
        return *CAT(a, s, int64_t) == *CAT(b, s, int64_t);
    case WALQ__SET_LIST:
    case WALQ__SET_WORDS:
        return strv_equal(CAT(a, s, walq__strv), CAT(b, s, walq__strv));
    case WALQ__SET_FUNC:
        return memcmp(CAT(a, s, char), CAT(b, s, char), s->size) == 0;
    }
    return 0;
}

void walq__setting_copy(const walq__setting *s, void *dst, const void *src)
{
    size_t size = 0;

    switch (s->kind) {
    case WALQ__SET_STR:
    case WALQ__SET_CHOICE:
        size = sizeof(const char *);
        break;
    case WALQ__SET_INT:
    case WALQ__SET_BOOL:
    case WALQ__SET_ENUM:
        size = sizeof(int);
        break;
    case WALQ__SET_INT64:
    case WALQ__SET_SECONDS:
        size = sizeof(int64_t);
        break;
    case WALQ__SET_LIST:
    case WALQ__SET_WORDS:
        size = sizeof(walq__strv);
        break;
    case WALQ__SET_FUNC:
        size = s->size;
        break;
    }
    memcpy(AT(dst, s, char), CAT(src, s, char), size);
}

void walq__setting_format(const walq__setting *s, const void *base, char *buf, size_t len)
{
    const char *str;
    const walq__strv *sv;
    size_t used = 0;

    buf[0] = '\0';
    switch (s->kind) {
    case WALQ__SET_STR:
    case WALQ__SET_CHOICE:
        str = *CAT(base, s, const char *);
        snprintf(buf, len, "%s", str ? str : "");
        break;
    case WALQ__SET_INT:
    case WALQ__SET_BOOL:
        snprintf(buf, len, "%d", *CAT(base, s, int));
        break;
    case WALQ__SET_ENUM:
        for (const walq__set_name *nm = s->names; nm->name; nm++)
            if (nm->value == *CAT(base, s, int)) {
                snprintf(buf, len, "%s", nm->name);
                break;
            }
        break;
    case WALQ__SET_INT64:
        snprintf(buf, len, "%lld", (long long)*CAT(base, s, int64_t));
        break;
    case WALQ__SET_SECONDS:
        snprintf(buf, len, "%g", (double)*CAT(base, s, int64_t) / 1000.0);
        break;
    case WALQ__SET_LIST:
    case WALQ__SET_WORDS:
        sv = CAT(base, s, walq__strv);
        for (size_t i = 0; i < sv->n && used < len; i++) {
            int k = snprintf(buf + used, len - used, "%s%s", i ? " " : "", sv->v[i]);

            used += k > 0 ? (size_t)k : 0;
        }
        break;
    case WALQ__SET_FUNC:
        snprintf(buf, len, "(set)");
        break;
    }
}

/* ------------------------------------------------------------------ */
/* The file                                                            */

/* Names of the file are the options' with _ or - alike. */
static int name_is(const char *key, const char *name)
{
    for (; *key && *name; key++, name++) {
        char k = *key == '_' ? '-' : *key, n = *name == '_' ? '-' : *name;

        if (k != n)
            return 0;
    }
    return *key == '\0' && *name == '\0';
}

const walq__setting *walq__settings_find(const walq__settings *t, const char *name)
{
    for (size_t i = 0; i < t->n; i++)
        if (!(t->v[i].flags & WALQ__SET_CLI_ONLY) && name_is(name, t->v[i].name))
            return &t->v[i];
    return NULL;
}

typedef struct file_ctx {
    const walq__settings *t;
    void *base;
    walq__set_pool *pool;
    const char *path;
    FILE *f;
    char *line; /* the line inih is reading, as getline gave it */
    size_t linecap;
    int lineno;
    int section_line; /* of the last "[section]" */
    int too_long;     /* lineno is longer than inih takes */
    int maxlen;
    int err_line; /* the first error's, 0: none */
    char *err;
    size_t errlen;
    const walq__setting *prev; /* the last setting with a value, for continued lines */
    int prev_line;
} file_ctx;

static void file_error(file_ctx *x, const char *fmt, ...) WALQ__PRINTF(2, 3);

static void file_error(file_ctx *x, const char *fmt, ...)
{
    va_list ap;
    int n;

    if (x->err_line != 0)
        return;
    x->err_line = x->lineno;
    n = snprintf(x->err, x->errlen, "%s:%d: ", x->path, x->lineno);
    if (n < 0 || (size_t)n >= x->errlen)
        return;
    va_start(ap, fmt);
    vsnprintf(x->err + n, x->errlen - (size_t)n, fmt, ap);
    va_end(ap);
}

/* inih's reader: whole lines, counted, so that the handler knows where it is. */
static char *file_reader(char *str, int num, void *stream)
{
    file_ctx *x = stream;
    ssize_t n = getline(&x->line, &x->linecap, x->f);

    if (n < 0)
        return NULL;
    x->lineno++;
    if (n > 0 && x->line[n - 1] == '\n')
        x->line[--n] = '\0';
    if (n > 0 && x->line[n - 1] == '\r')
        x->line[--n] = '\0';
    if (n >= num - 1) {
        /* inih would cut it and read the rest as a line of its own: stop here. */
        x->too_long = 1;
        x->maxlen = num - 2;
        return NULL;
    }
    if (x->line[strspn(x->line, " \t")] == '[')
        x->section_line = x->lineno;
    memcpy(str, x->line, (size_t)n);
    str[n] = '\n';
    str[n + 1] = '\0';
    return str;
}

static int is_other_section(const walq__settings *t, const char *section)
{
    for (const char *const *o = t->other_sections; o && *o; o++)
        if (strcmp(*o, section) == 0)
            return 1;
    return 0;
}

static int file_handler(void *user, const char *section, const char *name, const char *value)
{
    file_ctx *x = user;
    const walq__setting *s;
    char err[512];
    int continued = x->line[0] == ' ' || x->line[0] == '\t';

    if (section[0] == '\0') {
        file_error(x, "setting \"%s\" is outside any section\nHINT:  Put it under [%s].", name,
                   x->t->command);
        return 0;
    }
    if (strcmp(section, x->t->command) != 0) {
        int at = x->lineno;

        if (is_other_section(x->t, section))
            return 1;
        /* Said of the section's line, not of its first setting's. */
        x->lineno = x->section_line;
        file_error(x, "unknown section [%s]\nHINT:  \"walq %s\" reads the section [%s].", section,
                   x->t->command, x->t->command);
        x->lineno = at;
        return 0;
    }
    if (continued) {
        /* inih gives an indented line as more of the value above. */
        s = x->prev;
        if (s == NULL || (s->kind != WALQ__SET_LIST && s->kind != WALQ__SET_STR)) {
            file_error(x,
                       "this line starts with a blank, which continues the value of \"%s\" on "
                       "line %d, and \"%s\" takes one value\nHINT:  Remove the blanks at the "
                       "start of the line.",
                       name, x->prev_line, name);
            return 0;
        }
        if (s->kind == WALQ__SET_LIST) {
            if (walq__setting_set(s, x->base, value, x->pool, err, sizeof(err)) != 0) {
                file_error(x, "\"%s\" %s", s->name, err);
                return 0;
            }
        } else {
            /* A statement over several lines: joined with a space. */
            const char *old = *CAT(x->base, s, const char *);
            size_t n = strlen(old ? old : "") + strlen(value) + 2;
            char *joined = pool_keep(x->pool, malloc(n));

            if (joined == NULL) {
                file_error(x, "out of memory");
                return 0;
            }
            snprintf(joined, n, "%s %s", old ? old : "", value);
            *AT(x->base, s, const char *) = joined;
        }
        return 1;
    }
    s = walq__settings_find(x->t, name);
    if (s == NULL) {
        file_error(x,
                   "unknown setting \"%s\" in section [%s]\nHINT:  The settings are the long "
                   "options of \"walq %s --help\" without their \"--\".",
                   name, section, x->t->command);
        x->prev = NULL;
        return 0;
    }
    if (walq__setting_set(s, x->base, value, x->pool, err, sizeof(err)) != 0) {
        file_error(x, "\"%s\" %s", s->name, err);
        x->prev = NULL;
        return 0;
    }
    x->prev = s;
    x->prev_line = x->lineno;
    return 1;
}

int walq__settings_file(const walq__settings *t, void *base, walq__set_pool *pool, const char *path,
                        char *err, size_t errlen)
{
    file_ctx x = {.t = t, .base = base, .pool = pool, .path = path, .err = err, .errlen = errlen};
    int rc;

    err[0] = '\0';
    x.f = fopen(path, "r");
    if (x.f == NULL) {
        snprintf(err, errlen,
                 "%s: could not open the configuration file: %s\nHINT:  Give --config the path "
                 "of an ini file with a [%s] section.",
                 path, strerror(errno), t->command);
        return -1;
    }
    rc = ini_parse_stream(file_reader, &x, file_handler, &x);
    if (rc == 0 && ferror(x.f)) {
        snprintf(err, errlen, "%s: could not read the configuration file: %s", path,
                 strerror(errno));
        rc = -1;
    } else if (x.too_long && x.err_line == 0) {
        file_error(&x,
                   "the line is longer than %d characters\nHINT:  Continue a long value on the "
                   "next lines, each starting with a blank.",
                   x.maxlen);
        rc = -1;
    } else if (rc > 0 && x.err_line == 0) {
        /* inih found no "name = value" or "[section]" there. */
        x.lineno = rc;
        file_error(&x, "syntax error: expected \"name = value\" or \"[section]\"");
    } else if (rc == -2) {
        snprintf(err, errlen, "out of memory");
    }
    fclose(x.f);
    free(x.line);
    return rc == 0 && x.err_line == 0 ? 0 : -1;
}

/* ------------------------------------------------------------------ */
/* The command line                                                    */

void walq__cmdline_free(walq__cmdline *cl)
{
    free(cl->args);
    memset(cl, 0, sizeof(*cl));
}

int walq__settings_cmdline(const walq__settings *t, walq__cmdline *out, int argc, char **argv)
{
    struct option *lo = calloc(t->n + 3, sizeof(*lo));
    int opt, rc = 0;

    memset(out, 0, sizeof(*out));
    out->args = calloc((size_t)argc + 1, sizeof(*out->args));
    if (lo == NULL || out->args == NULL) {
        free(lo);
        free(out->args);
        out->args = NULL;
        return -1;
    }
    for (size_t i = 0; i < t->n; i++) {
        const walq__setting *s = &t->v[i];
        int flag = s->fixed != NULL || (s->kind == WALQ__SET_BOOL && s->arg == NULL);

        lo[i] = (struct option){s->name, flag ? no_argument : required_argument, NULL,
                                OPT_BASE + (int)i};
    }
    lo[t->n] = (struct option){"config", required_argument, NULL, OPT_CONFIG};
    lo[t->n + 1] = (struct option){"help", no_argument, NULL, OPT_HELP};
    /* 0, not 1: GNU getopt starts afresh, whatever an earlier scan left. */
    optind = 0;
    while ((opt = getopt_long(argc, argv, "+h", lo, NULL)) != -1) {
        if (opt == OPT_HELP) {
            rc = 1;
            break;
        }
        if (opt == OPT_CONFIG) {
            out->config = optarg;
        } else if (opt >= OPT_BASE && (size_t)(opt - OPT_BASE) < t->n) {
            const walq__setting *s = &t->v[opt - OPT_BASE];

            out->args[out->nargs].idx = opt - OPT_BASE;
            out->args[out->nargs++].value = s->fixed ? s->fixed
                                            : (s->kind == WALQ__SET_BOOL && s->arg == NULL)
                                                ? "1"
                                                : optarg;
        } else {
            rc = -1;
            break;
        }
    }
    out->dashdash = optind > 1 && optind <= argc && strcmp(argv[optind - 1], "--") == 0;
    out->rest = argv + optind;
    out->nrest = argc - optind;
    free(lo);
    return rc;
}

/*
 * The table's defaults.  One that does not parse is a mistake in the table,
 * which every run of the command then reports: -1 with err.
 */
static int apply_defaults(const walq__settings *t, void *base, walq__set_pool *pool, char *err,
                          size_t errlen)
{
    for (size_t i = 0; i < t->n; i++) {
        const walq__setting *s = &t->v[i];
        char why[256];

        if (s->def == NULL || (s->flags & WALQ__SET_CLI_ONLY))
            continue;
        if (walq__setting_set(s, base, s->def, pool, why, sizeof(why)) != 0) {
            snprintf(err, errlen, "the default of --%s %s (an error of walq's settings table)",
                     s->name, why);
            return -1;
        }
    }
    return 0;
}

int walq__settings_build(const walq__settings *t, const walq__cmdline *cl, void *base,
                         walq__set_pool *pool, char *err, size_t errlen)
{
    unsigned char *cleared = calloc(t->n + 1, 1);
    int rc = 0;

    err[0] = '\0';
    if (cleared == NULL) {
        snprintf(err, errlen, "out of memory");
        return 2;
    }
    if (apply_defaults(t, base, pool, err, errlen) != 0)
        rc = 2;
    if (rc == 0 && t->preset != NULL && t->preset(base, err, errlen) != 0)
        rc = 2;
    if (rc == 0 && cl->config != NULL &&
        walq__settings_file(t, base, pool, cl->config, err, errlen) != 0)
        rc = 1;
    for (size_t i = 0; rc == 0 && i < cl->nargs; i++) {
        const walq__setting *s = &t->v[cl->args[i].idx];
        char why[512];

        /* A list on the command line replaces the file's. */
        if (s->kind == WALQ__SET_LIST && !cleared[cl->args[i].idx]) {
            AT(base, s, walq__strv)->v = NULL;
            AT(base, s, walq__strv)->n = 0;
            cleared[cl->args[i].idx] = 1;
        }
        if (s->kind == WALQ__SET_LIST) {
            /* One value per option: no splitting of what the shell split already. */
            walq__strv *sv = AT(base, s, walq__strv);

            if (strv_push(sv, cl->args[i].value, pool) != 0) {
                snprintf(err, errlen, "out of memory");
                rc = 2;
            }
            continue;
        }
        if (walq__setting_set(s, base, cl->args[i].value, pool, why, sizeof(why)) != 0) {
            snprintf(err, errlen, "--%s %s", s->name, why);
            rc = 2;
        }
    }
    free(cleared);
    return rc;
}

/* ------------------------------------------------------------------ */
/* The settings every long-running command has                         */

const walq__set_name walq__set_log_levels[] = {{"error", WALQ_LOG_ERROR},
                                               {"warning", WALQ_LOG_WARNING},
                                               {"info", WALQ_LOG_INFO},
                                               {"debug", WALQ_LOG_DEBUG},
                                               {NULL, 0}};
const walq__set_name walq__set_log_formats[] = {{"text", 0}, {"json", 0}, {NULL, 0}};

/* ------------------------------------------------------------------ */
/* --help                                                              */

#define HELP_COL 26

void walq__settings_help(const walq__settings *t, FILE *f)
{
    int first = 1;

    for (size_t i = 0; i < t->n; i++) {
        const walq__setting *s = &t->v[i];
        const char *h = s->help, *nl;
        char head[64];
        int n;

        if (h == NULL)
            continue;
        n = snprintf(head, sizeof(head), "  --%s%s%s", s->name, s->arg ? " " : "",
                     s->arg ? s->arg : "");
        fputs(head, f);
        if (n >= HELP_COL - 1) {
            fputc('\n', f);
            n = 0;
        }
        fprintf(f, "%*s", HELP_COL - n, "");
        while ((nl = strchr(h, '\n')) != NULL) {
            fprintf(f, "%.*s\n%*s", (int)(nl - h), h, HELP_COL, "");
            h = nl + 1;
        }
        fprintf(f, "%s\n", h);
    }
    fprintf(f,
            "  --config FILE           read the settings from FILE's [%s] section (an ini\n"
            "                          file); the command line wins over it\n",
            t->command);
    fprintf(f, "\nIn the file, each setting above is written NAME = VALUE, without the \"--\"\n"
               "(- or _ alike; --verbose and the like are shorthands of the command line),\n"
               "and flags take yes or no.  SIGHUP reads the file again and applies these\n"
               "settings to the running command; the others need a restart:\n  ");
    for (size_t i = 0, col = 2; i < t->n; i++) {
        const walq__setting *s = &t->v[i];

        if (!(s->flags & WALQ__SET_RELOAD) || (s->flags & WALQ__SET_CLI_ONLY))
            continue;
        if (!first && col + strlen(s->name) + 2 > 78) {
            fputs(",\n  ", f);
            col = 2;
        } else if (!first) {
            col += (size_t)fprintf(f, ", ");
        }
        col += (size_t)fprintf(f, "%s", s->name);
        first = 0;
    }
    fputc('\n', f);
}

/* ------------------------------------------------------------------ */
/* SIGHUP                                                              */

#define FIELD(base, off, type) ((type *)(void *)((char *)(base) + (off)))

/* A message of the reload, at or below the log level in use. */
static void reload_log(const walq__reload *r, walq_log_level level, const char *fmt, ...)
    WALQ__PRINTF(3, 4);

static void reload_log(const walq__reload *r, walq_log_level level, const char *fmt, ...)
{
    char msg[2048];
    va_list ap;

    if (level > *FIELD(r->cur, r->level_off, walq_log_level))
        return;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    r->log(level, msg, NULL);
}

/*
 * Compares each setting of fresh with cur's: those that reload and changed
 * are copied into next; any other change is logged.  Returns how many were
 * copied.
 */
static int reload_compare(const walq__reload *r, const void *fresh, void *next)
{
    const walq__settings *t = r->t;
    char was[256], now[256];
    int changed = 0;

    for (size_t i = 0; i < t->n; i++) {
        const walq__setting *s = &t->v[i];

        if ((s->flags & (WALQ__SET_CLI_ONLY | WALQ__SET_NO_CMP)) ||
            walq__setting_equal(s, r->cur, fresh))
            continue;
        if (s->flags & WALQ__SET_RELOAD) {
            walq__setting_copy(s, next, fresh);
            changed++;
        } else if (s->kind == WALQ__SET_STR || s->kind == WALQ__SET_FUNC) {
            /*
             * Connection strings may hold a password, and a FUNC's value has
             * no text of its own: those values are not shown.
             */
            reload_log(r, WALQ_LOG_WARNING,
                       "setting \"%s\" changed in \"%s\" but needs a restart; the value in use "
                       "stays",
                       s->name, r->cl->config);
        } else {
            walq__setting_format(s, r->cur, was, sizeof(was));
            walq__setting_format(s, fresh, now, sizeof(now));
            reload_log(r, WALQ_LOG_WARNING,
                       "setting \"%s\" changed to \"%s\" in \"%s\" but needs a restart; it stays "
                       "\"%s\"",
                       s->name, now, r->cl->config, was);
        }
    }
    return changed;
}

void walq__settings_reload(void *arg)
{
    const walq__reload *r = arg;
    const char *config = r->cl->config;
    char err[2048];
    /* The settings built again, then cur with those of them that reload. */
    char *fresh, *next;
    int changed;

    if (config == NULL) {
        reload_log(r, WALQ_LOG_WARNING,
                   "received SIGHUP, but there is no configuration file to read again\nHINT:  "
                   "Start walq %s with --config FILE.",
                   r->t->command);
        return;
    }
    /* One block for both: a struct's size keeps the second as aligned as the first. */
    fresh = calloc(2, r->size);
    if (fresh == NULL) {
        reload_log(r, WALQ_LOG_ERROR,
                   "configuration file not reloaded; the settings in use stay: out of memory");
        return;
    }
    next = fresh + r->size;
    if (r->build(fresh, r->cl, err, sizeof(err)) != 0) {
        reload_log(r, WALQ_LOG_ERROR,
                   "configuration file not reloaded; the settings in use stay: %s", err);
        goto done;
    }
    memcpy(next, r->cur, r->size);
    changed = reload_compare(r, fresh, next);
    if (changed == 0) {
        reload_log(r, WALQ_LOG_INFO, "reloaded \"%s\": no setting that reloads has changed",
                   config);
    } else if (r->apply(r->arg, next, err, sizeof(err)) != 0) {
        reload_log(r, WALQ_LOG_ERROR,
                   "configuration file not reloaded; the settings in use stay: %s", err);
    } else {
        memcpy(r->cur, next, r->size);
        reload_log(r, WALQ_LOG_INFO, "reloaded \"%s\": %d setting%s changed", config, changed,
                   changed == 1 ? "" : "s");
    }
done:
    walq__set_pool_free(FIELD(fresh, r->pool_off, walq__set_pool));
    free(fresh);
}
