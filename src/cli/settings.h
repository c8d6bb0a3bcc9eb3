/*
 * The settings of the long-running commands (consume, audit) as one table
 * per command: name, type, target, default, whether SIGHUP reloads it, and
 * its help.  The command line (getopt_long), the configuration file (ini,
 * read with inih), --help and the comparison at a reload all come from the
 * table.  Values are written into the command's own struct at the entry's
 * offset; every string and list they hold belongs to a pool, freed at once.
 */
#ifndef WALQ_CLI_SETTINGS_H
#define WALQ_CLI_SETTINGS_H

#include <getopt.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "walq.h"

/* Everything the values of one build of the settings allocate. */
typedef struct walq__set_pool {
    void **p;
    size_t n, cap;
} walq__set_pool;

void walq__set_pool_free(walq__set_pool *pool);

/* A list of strings: queues, a program and its arguments.  v is NULL-terminated (or NULL). */
typedef struct walq__strv {
    const char **v;
    size_t n;
} walq__strv;

typedef enum walq__set_kind {
    WALQ__SET_STR,     /* const char *; any text */
    WALQ__SET_CHOICE,  /* const char *; one of names (their values unused) */
    WALQ__SET_INT,     /* int from lo to hi */
    WALQ__SET_INT64,   /* int64_t from lo to hi */
    WALQ__SET_SECONDS, /* int64_t milliseconds, written as seconds; lo and hi in ms */
    WALQ__SET_BOOL,    /* int 0 or 1; a flag without a value on the command line */
    WALQ__SET_ENUM,    /* int: the value of one of names */
    WALQ__SET_LIST,    /* walq__strv: repeatable, words as in a shell, each one more */
    WALQ__SET_WORDS,   /* walq__strv: one list of words as in a shell, replaced as a whole */
    WALQ__SET_FUNC     /* parsed by fn; size bytes at the offset compared at a reload */
} walq__set_kind;

typedef struct walq__set_name {
    const char *name;
    int value;
} walq__set_name;

/* Flags of a setting. */
#define WALQ__SET_RELOAD   1u  /* SIGHUP applies a new value to the running command */
#define WALQ__SET_CLI_ONLY 2u  /* a command-line shorthand: not a key of the file */
#define WALQ__SET_NO_CMP   4u  /* stores into other settings' targets: not compared itself */
#define WALQ__SET_EXCL_LO  8u  /* SECONDS: lo itself is refused */
#define WALQ__SET_ZERO_OK  16u /* SECONDS: 0 is allowed below lo (0 meaning "no limit") */

typedef struct walq__setting {
    const char *name; /* --name, and the file's key (with _ or - alike) */
    walq__set_kind kind;
    size_t off;      /* of the target in the command's struct */
    const char *def; /* the default as a file would write it; NULL: none (zero, NULL) */
    unsigned flags;
    const char *arg;  /* --help's name of the value; NULL for a flag */
    const char *help; /* lines separated by \n */
    const char *what; /* what it takes, for errors: "a whole number from 1 to 4096" */
    int64_t lo, hi;
    const walq__set_name *names; /* CHOICE and ENUM, ending with a NULL name */
    const char *fixed;           /* a shorthand's value: --noop is handler = noop */
    /* FUNC: parses value into base; 0 or -1 (the error is "takes <what>"). */
    int (*fn)(void *base, const char *value, walq__set_pool *pool);
    size_t size; /* FUNC: bytes compared */
    /* After a value was set: what follows from it (--sql also sets the handler). */
    void (*then)(void *base);
} walq__setting;

typedef struct walq__settings {
    const char *command; /* "consume": the file's section, and messages */
    const walq__setting *v;
    size_t n;
    /* Sections of other commands a shared file may have, skipped; NULL-terminated. */
    const char *const *other_sections;
    /* Run after the defaults, before the file (the environment's say); 0 or -1 with err. */
    int (*preset)(void *base, char *err, size_t errlen);
} walq__settings;

/* The command line, as read once: settings in order, --config, what follows "--". */
typedef struct walq__cmdline {
    struct walq__set_arg {
        int idx;
        const char *value;
    } * args;
    size_t nargs;
    const char *config; /* --config FILE, or NULL */
    char **rest;        /* the arguments after the options */
    int nrest;
    int dashdash; /* "--" came before rest */
} walq__cmdline;

void walq__cmdline_free(walq__cmdline *cl);

/*
 * getopt_long over argv with the table's options, --config and --help.  0
 * when the settings were read, 1 for --help, -1 on an unknown option
 * (getopt has said which).
 */
int walq__settings_cmdline(const walq__settings *t, walq__cmdline *out, int argc, char **argv);

/*
 * The settings from nothing: defaults, preset, the configuration file
 * (when cl->config), then the command line, which wins.  A list set on the
 * command line replaces the file's.  Returns 0; 1 after an error of the
 * file (err: "FILE:LINE: ...", perhaps with "\nHINT:  ..."); 2 after an
 * error of the command line (err: "--name takes ..., not ...").
 */
int walq__settings_build(const walq__settings *t, const walq__cmdline *cl, void *base,
                         walq__set_pool *pool, char *err, size_t errlen);

/*
 * Sets one setting from text.  0, or -1 with err saying what it takes,
 * without saying where the value came from.
 */
int walq__setting_set(const walq__setting *s, void *base, const char *value, walq__set_pool *pool,
                      char *err, size_t errlen);

/*
 * Reads the file's [t->command] section into base; 0, or -1 with err
 * ("FILE:LINE: ...").  Sections of t->other_sections are skipped.
 */
int walq__settings_file(const walq__settings *t, void *base, walq__set_pool *pool, const char *path,
                        char *err, size_t errlen);

/* The setting called name in a file (- and _ alike), or NULL. */
const walq__setting *walq__settings_find(const walq__settings *t, const char *name);

/* Do a and b hold the same value of s? */
int walq__setting_equal(const walq__setting *s, const void *a, const void *b);

/* Copies the value of s from src to dst (strings and lists stay src's pool's). */
void walq__setting_copy(const walq__setting *s, void *dst, const void *src);

/* Writes the value of s in base as a file would write it, into buf. */
void walq__setting_format(const walq__setting *s, const void *base, char *buf, size_t len);

/* Prints the options of --help: one per setting, then the reloaded ones. */
void walq__settings_help(const walq__settings *t, FILE *f);

/*
 * The names of --log-level (walq_log_level's values) and of --log-format,
 * which every long-running command has; WALQ__SETTINGS_LOG(type, level,
 * format) are the table's entries of both, and of the shorthands --verbose
 * and --quiet, for the fields level (a walq_log_level) and format (a
 * string) of the command's struct type.
 */
extern const walq__set_name walq__set_log_levels[];
extern const walq__set_name walq__set_log_formats[];

/* The longest duration a setting takes, in milliseconds (about 116 days). */
#define WALQ__SET_MAX_MS INT64_C(10000000000)

/*
 * The settings of a long-running command's status and --http, which
 * consume and audit both have: status-interval (seconds, into an int64_t
 * of milliseconds at status), http (a string at http) and ready-within
 * (milliseconds at ready).  port is the example port in --http's help,
 * ready_help the help of --ready-within: what /readyz waits for.
 */
/* clang-format off */
#define WALQ__SETTINGS_SERVICE(type, status, http, ready, port, ready_help)                        \
    {.name = "status-interval",                                                                    \
     .kind = WALQ__SET_SECONDS,                                                                    \
     .off = offsetof(type, status),                                                                \
     .def = "10",                                                                                  \
     .flags = WALQ__SET_EXCL_LO,                                                                   \
     .arg = "SEC",                                                                                 \
     .help = "seconds between status updates (default 10)",                                       \
     .what = "seconds above 0",                                                                    \
     .lo = 0,                                                                                      \
     .hi = WALQ__SET_MAX_MS},                                                                      \
    {.name = "http",                                                                               \
     .kind = WALQ__SET_STR,                                                                        \
     .off = offsetof(type, http),                                                                  \
     .arg = "ADDR:PORT",                                                                           \
     .help = "serve /metrics, /healthz, /readyz and a status page\nat / (e.g. 127.0.0.1:" port     \
             "; default: off)",                                                                    \
     .what = "ADDR:PORT"},                                                                         \
    {.name = "ready-within",                                                                       \
     .kind = WALQ__SET_SECONDS,                                                                    \
     .off = offsetof(type, ready),                                                                 \
     .flags = WALQ__SET_EXCL_LO,                                                                   \
     .arg = "SEC",                                                                                 \
     .help = ready_help,                                                                           \
     .what = "seconds above 0",                                                                    \
     .lo = 0,                                                                                      \
     .hi = WALQ__SET_MAX_MS}
/* clang-format on */

/* Kept as written: clang-format would indent the entries after the first one. */
/* clang-format off */
#define WALQ__SETTINGS_LOG(type, level, format)                                                    \
    {.name = "log-level",                                                                          \
     .kind = WALQ__SET_ENUM,                                                                       \
     .off = offsetof(type, level),                                                                 \
     .def = "info",                                                                                \
     .flags = WALQ__SET_RELOAD,                                                                    \
     .arg = "LEVEL",                                                                               \
     .help = "error, warning, info (the default) or debug",                                        \
     .what = "error, warning, info or debug",                                                      \
     .names = walq__set_log_levels},                                                               \
    {.name = "verbose",                                                                            \
     .kind = WALQ__SET_ENUM,                                                                       \
     .off = offsetof(type, level),                                                                 \
     .flags = WALQ__SET_CLI_ONLY | WALQ__SET_NO_CMP,                                               \
     .help = "--log-level debug",                                                                  \
     .what = "",                                                                                   \
     .names = walq__set_log_levels,                                                                \
     .fixed = "debug"},                                                                            \
    {.name = "quiet",                                                                              \
     .kind = WALQ__SET_ENUM,                                                                       \
     .off = offsetof(type, level),                                                                 \
     .flags = WALQ__SET_CLI_ONLY | WALQ__SET_NO_CMP,                                               \
     .help = "--log-level warning",                                                                \
     .what = "",                                                                                   \
     .names = walq__set_log_levels,                                                                \
     .fixed = "warning"},                                                                          \
    {.name = "log-format",                                                                         \
     .kind = WALQ__SET_CHOICE,                                                                     \
     .off = offsetof(type, format),                                                                \
     .def = "text",                                                                                \
     .arg = "FORMAT",                                                                              \
     .help = "text (the default) or json: one JSON object per line\non standard error, for log "   \
             "collectors",                                                                         \
     .what = "text or json",                                                                       \
     .names = walq__set_log_formats}
/* clang-format on */

/* ------------------------------------------------------------------ */
/* SIGHUP                                                              */

/*
 * What a long-running command's reload needs: its settings in use (cur,
 * the command's struct of size bytes, whose walq__set_pool is at pool_off
 * and whose walq_log_level is at level_off), how they were given, and the
 * command's own part: how its settings are built, and how the reloaded ones
 * reach what runs.  The settings that reload hold numbers, not strings or
 * lists: what they would point to is freed with the build they came from.
 */
typedef struct walq__reload {
    const walq__settings *t;
    const walq__cmdline *cl;
    void *cur;
    size_t size, pool_off, level_off;
    /* Builds the settings into base as at the start: 0, or 1 or 2 with err. */
    int (*build)(void *base, const walq__cmdline *cl, char *err, size_t errlen);
    /* Hands next (cur with the settings that reload and changed) to arg: 0, or -1 with err. */
    int (*apply)(void *arg, const void *next, char *err, size_t errlen);
    void *arg;
    walq_log_fn log; /* the reload's messages, those at or below cur's log level */
} walq__reload;

/*
 * One reload, as walq__cli_on_reload() calls it at SIGHUP, with a
 * walq__reload as arg: the settings built again, as at the start.  The
 * ones that reload and changed go to apply(), and are cur's once it took
 * them; any other change is logged as needing a restart and keeps its value
 * (the value of a string, which may be a connection string with a password,
 * or of a FUNC is not shown); a bad file, or an apply() that refuses,
 * changes nothing.
 */
void walq__settings_reload(void *arg);

#endif
