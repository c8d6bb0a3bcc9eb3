/*
 * Unit tests of the settings tables' machinery (src/cli/settings.c): values
 * of every kind from text, the ini file with its errors and their line
 * numbers, the command line winning over the file, the comparison that a
 * reload makes, and the reload itself (walq__settings_reload: what it hands
 * to the command, logs and refuses).  The table here has one setting of
 * each kind.
 */
#include <check.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/settings.h"

typedef struct conf {
    const char *name;
    const char *plugin;
    int count;
    int64_t bytes;
    int64_t wait_ms;
    int64_t limit_ms;
    int flag;
    int level;
    walq__strv queues;
    walq__strv program;
    int k, n;
    const char *sql;
    int handler;
} conf;

static const walq__set_name plugins[] = {{"pgoutput", 0}, {"wal2json", 0}, {NULL, 0}};
static const walq__set_name levels[] = {
    {"error", 0}, {"warning", 1}, {"info", 2}, {"debug", 3}, {NULL, 0}};
static const walq__set_name handlers[] = {{"exec", 0}, {"sql", 3}, {NULL, 0}};

static int parse_part(void *base, const char *v, walq__set_pool *pool)
{
    conf *c = base;
    char extra;

    (void)pool;
    return sscanf(v, "%d/%d%c", &c->k, &c->n, &extra) == 2 && c->n >= 1 && c->k >= 0 && c->k < c->n
               ? 0
               : -1;
}

static void sql_handler(void *base)
{
    ((conf *)base)->handler = 3;
}

#define OFF(f) offsetof(conf, f)
static const walq__setting tab[] = {
    {.name = "name",
     .kind = WALQ__SET_STR,
     .off = OFF(name),
     .def = "none",
     .arg = "NAME",
     .what = "a name"},
    {.name = "plugin",
     .kind = WALQ__SET_CHOICE,
     .off = OFF(plugin),
     .arg = "P",
     .what = "pgoutput or wal2json",
     .names = plugins},
    {.name = "count",
     .kind = WALQ__SET_INT,
     .off = OFF(count),
     .def = "1",
     .flags = WALQ__SET_RELOAD,
     .arg = "N",
     .help = "how many",
     .what = "a whole number from 1 to 10",
     .lo = 1,
     .hi = 10},
    {.name = "max-bytes",
     .kind = WALQ__SET_INT64,
     .off = OFF(bytes),
     .def = "268435456",
     .arg = "N",
     .what = "bytes",
     .lo = 1,
     .hi = INT64_MAX},
    {.name = "wait",
     .kind = WALQ__SET_SECONDS,
     .off = OFF(wait_ms),
     .def = "10",
     .flags = WALQ__SET_RELOAD | WALQ__SET_EXCL_LO,
     .arg = "S",
     .what = "seconds above 0",
     .lo = 0,
     .hi = 10000000000},
    {.name = "limit",
     .kind = WALQ__SET_SECONDS,
     .off = OFF(limit_ms),
     .def = "10",
     .flags = WALQ__SET_ZERO_OK,
     .arg = "S",
     .what = "seconds, 0 or at least 0.1",
     .lo = 100,
     .hi = 10000000000},
    {.name = "flag", .kind = WALQ__SET_BOOL, .off = OFF(flag), .def = "no", .what = "yes or no"},
    {.name = "log-level",
     .kind = WALQ__SET_ENUM,
     .off = OFF(level),
     .def = "info",
     .flags = WALQ__SET_RELOAD,
     .arg = "L",
     .what = "error, warning, info or debug",
     .names = levels},
    {.name = "verbose",
     .kind = WALQ__SET_ENUM,
     .off = OFF(level),
     .flags = WALQ__SET_CLI_ONLY | WALQ__SET_NO_CMP,
     .what = "",
     .names = levels,
     .fixed = "debug"},
    {.name = "queue",
     .kind = WALQ__SET_LIST,
     .off = OFF(queues),
     .arg = "Q",
     .what = "queue names"},
    {.name = "program",
     .kind = WALQ__SET_WORDS,
     .off = OFF(program),
     .arg = "P",
     .what = "a program and its arguments"},
    {.name = "partition",
     .kind = WALQ__SET_FUNC,
     .off = OFF(k),
     .def = "0/1",
     .arg = "K/N",
     .what = "K/N",
     .fn = parse_part,
     .size = 2 * sizeof(int)},
    {.name = "sql",
     .kind = WALQ__SET_STR,
     .off = OFF(sql),
     .arg = "S",
     .what = "a statement",
     .then = sql_handler},
    {.name = "handler",
     .kind = WALQ__SET_ENUM,
     .off = OFF(handler),
     .def = "exec",
     .arg = "H",
     .what = "exec or sql",
     .names = handlers},
};
static const char *const others[] = {"audit", NULL};
static const walq__settings table = {"consume", tab, sizeof(tab) / sizeof(tab[0]), others, NULL};

static char path[64];

/* Writes text into a temporary file, whose name is path. */
static void write_file(const char *text)
{
    int fd;

    snprintf(path, sizeof(path), "/tmp/walq-test-settings-XXXXXX");
    fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
}

/* Builds conf from the file (if any) and argv; the build's result. */
static int build(conf *c, walq__set_pool *pool, const char *file, int argc, char **argv, char *err,
                 size_t errlen)
{
    walq__cmdline cl;
    int rc;

    memset(c, 0, sizeof(*c));
    ck_assert_int_eq(walq__settings_cmdline(&table, &cl, argc, argv), 0);
    if (file != NULL) {
        write_file(file);
        cl.config = path;
    }
    rc = walq__settings_build(&table, &cl, c, pool, err, errlen);
    walq__cmdline_free(&cl);
    if (file != NULL)
        unlink(path);
    return rc;
}

START_TEST(defaults_come_from_the_table)
{
    walq__set_pool pool = {0};
    char *argv[] = {"consume", NULL};
    char err[512];
    conf c;

    ck_assert_int_eq(build(&c, &pool, NULL, 1, argv, err, sizeof(err)), 0);
    ck_assert_str_eq(c.name, "none");
    ck_assert_ptr_null(c.plugin);
    ck_assert_int_eq(c.count, 1);
    ck_assert_int_eq(c.bytes, 268435456);
    ck_assert_int_eq(c.wait_ms, 10000);
    ck_assert_int_eq(c.flag, 0);
    ck_assert_int_eq(c.level, 2);
    ck_assert_int_eq(c.queues.n, 0);
    ck_assert_int_eq(c.k, 0);
    ck_assert_int_eq(c.n, 1);
    walq__set_pool_free(&pool);
}
END_TEST

START_TEST(a_file_sets_every_kind)
{
    walq__set_pool pool = {0};
    char *argv[] = {"consume", NULL};
    char err[512];
    conf c;
    int rc;

    rc = build(&c, &pool,
               "; a comment\n"
               "# another\n"
               "[audit]\n"
               "whatever = is audit's\n"
               "[consume]\n"
               "name = some name\n"
               "plugin = wal2json\n"
               "count = 7\n"
               "max_bytes = 1024\n"
               "wait = 0.0004\n"
               "limit = 0\n"
               "flag = yes\n"
               "log_level = debug\n"
               "queue = a \"b c\"\n"
               "queue = d\n"
               "  e\n"
               "program = /bin/prog --x 'it''s' \"q \\\" \\\\\" back\\ slash\n"
               "partition = 2/4\n"
               "sql = UPDATE t SET x = $1\n"
               "  WHERE id = $2\n",
               1, argv, err, sizeof(err));
    ck_assert_msg(rc == 0, "build failed: %s", err);
    ck_assert_str_eq(c.name, "some name");
    ck_assert_str_eq(c.plugin, "wal2json");
    ck_assert_int_eq(c.count, 7);
    ck_assert_int_eq(c.bytes, 1024);
    /* A positive duration stays positive. */
    ck_assert_int_eq(c.wait_ms, 1);
    ck_assert_int_eq(c.limit_ms, 0);
    ck_assert_int_eq(c.flag, 1);
    ck_assert_int_eq(c.level, 3);
    ck_assert_int_eq(c.queues.n, 4);
    ck_assert_str_eq(c.queues.v[0], "a");
    ck_assert_str_eq(c.queues.v[1], "b c");
    ck_assert_str_eq(c.queues.v[2], "d");
    ck_assert_str_eq(c.queues.v[3], "e");
    ck_assert_ptr_null(c.queues.v[4]);
    ck_assert_int_eq(c.program.n, 5);
    ck_assert_str_eq(c.program.v[0], "/bin/prog");
    ck_assert_str_eq(c.program.v[1], "--x");
    ck_assert_str_eq(c.program.v[2], "its");
    ck_assert_str_eq(c.program.v[3], "q \" \\");
    ck_assert_str_eq(c.program.v[4], "back slash");
    ck_assert_int_eq(c.k, 2);
    ck_assert_int_eq(c.n, 4);
    ck_assert_str_eq(c.sql, "UPDATE t SET x = $1 WHERE id = $2");
    ck_assert_int_eq(c.handler, 3);
    walq__set_pool_free(&pool);
}
END_TEST

START_TEST(the_command_line_wins)
{
    walq__set_pool pool = {0};
    char *argv[] = {"consume",  "--count",  "3",  "--queue",    "x",   "--verbose", "--flag",
                    "--plugin", "pgoutput", "--", "/bin/other", "arg", NULL};
    char err[512];
    walq__cmdline cl;
    conf c;

    write_file("[consume]\ncount = 9\nqueue = a b\nlog_level = warning\nplugin = wal2json\n"
               "program = /bin/prog\nname = from the file\n");
    memset(&c, 0, sizeof(c));
    ck_assert_int_eq(walq__settings_cmdline(&table, &cl, 12, argv), 0);
    cl.config = path;
    ck_assert_int_eq(walq__settings_build(&table, &cl, &c, &pool, err, sizeof(err)), 0);
    unlink(path);
    ck_assert_int_eq(c.count, 3);
    /* A list on the command line replaces the file's. */
    ck_assert_int_eq(c.queues.n, 1);
    ck_assert_str_eq(c.queues.v[0], "x");
    ck_assert_int_eq(c.level, 3);
    ck_assert_int_eq(c.flag, 1);
    ck_assert_str_eq(c.plugin, "pgoutput");
    /* What the command line does not say comes from the file. */
    ck_assert_str_eq(c.name, "from the file");
    ck_assert_int_eq(cl.nrest, 2);
    ck_assert_str_eq(cl.rest[0], "/bin/other");
    ck_assert(cl.dashdash);
    walq__cmdline_free(&cl);
    walq__set_pool_free(&pool);
}
END_TEST

START_TEST(bad_command_line_values_name_the_option)
{
    walq__set_pool pool = {0};
    char *argv[] = {"consume", "--count", "11", NULL};
    char err[512];
    conf c;

    ck_assert_int_eq(build(&c, &pool, NULL, 3, argv, err, sizeof(err)), 2);
    ck_assert_str_eq(err, "--count takes a whole number from 1 to 10, not \"11\"");
    walq__set_pool_free(&pool);
}
END_TEST

/* Files that are wrong, the line at fault, and a piece of the message. */
static const struct {
    const char *text;
    int line;
    const char *says;
} bad_files[] = {
    {"[consume]\ncount = 4\ncuont = 4\n", 3, "unknown setting \"cuont\" in section [consume]"},
    {"[consume]\n\ncount = 0\n", 3, "\"count\" takes a whole number from 1 to 10, not \"0\""},
    {"[consume]\ncount = 4x\n", 2, "not \"4x\""},
    {"[consume]\nwait = 0\n", 2, "\"wait\" takes seconds above 0, not \"0\""},
    {"[consume]\nwait = nan\n", 2, "not \"nan\""},
    {"[consume]\nlimit = 0.05\n", 2, "\"limit\" takes seconds, 0 or at least 0.1"},
    {"[consume]\nflag = maybe\n", 2, "\"flag\" takes yes or no, not \"maybe\""},
    {"[consume]\nplugin = decoderbufs\n", 2, "\"plugin\" takes pgoutput or wal2json"},
    {"[consume]\nlog_level = loud\n", 2, "not \"loud\""},
    {"[consume]\npartition = 4/4\n", 2, "\"partition\" takes K/N, not \"4/4\""},
    {"[consume]\nmax-bytes = 0\n", 2, "\"max-bytes\" takes bytes"},
    {"[consume]\nqueue = \"open\n", 2, "a quote (\") is not closed"},
    {"[consume]\nqueue =\n", 2, "\"queue\" takes queue names, not an empty value"},
    {"[consume]\nverbose = yes\n", 2, "unknown setting \"verbose\""},
    {"count = 4\n", 1, "outside any section"},
    {"[consum]\ncount = 4\n", 1, "unknown section [consum]"},
    {"[consume]\ncount = 4\njust words\n", 3, "syntax error"},
    {"[consume]\n[unclosed\n", 2, "syntax error"},
    {"[consume]\ncount = 4\n  5\n", 3, "continues the value of \"count\" on line 2"},
    {"[consume]\ncount = 2\ncount = 99\n", 3, "not \"99\""},
};

START_TEST(bad_files_say_where)
{
    walq__set_pool pool = {0};
    char *argv[] = {"consume", NULL};
    char err[1024], where[128];
    conf c;

    ck_assert_int_eq(build(&c, &pool, bad_files[_i].text, 1, argv, err, sizeof(err)), 1);
    snprintf(where, sizeof(where), "%s:%d: ", path, bad_files[_i].line);
    ck_assert_msg(strncmp(err, where, strlen(where)) == 0, "\"%s\" does not start with \"%s\"", err,
                  where);
    ck_assert_msg(strstr(err, bad_files[_i].says) != NULL, "\"%s\" does not say \"%s\"", err,
                  bad_files[_i].says);
    walq__set_pool_free(&pool);
}
END_TEST

START_TEST(a_long_line_is_refused_not_cut)
{
    walq__set_pool pool = {0};
    char *argv[] = {"consume", NULL};
    char text[2048], err[1024], where[128];
    conf c;

    snprintf(text, sizeof(text), "[consume]\nname = %01000d\ncount = 2\n", 7);
    ck_assert_int_eq(build(&c, &pool, text, 1, argv, err, sizeof(err)), 1);
    snprintf(where, sizeof(where), "%s:2: the line is longer than", path);
    ck_assert_msg(strncmp(err, where, strlen(where)) == 0, "%s", err);
    walq__set_pool_free(&pool);
}
END_TEST

START_TEST(a_missing_file_is_named)
{
    walq__set_pool pool = {0};
    char err[512];
    conf c;

    memset(&c, 0, sizeof(c));
    ck_assert_int_eq(
        walq__settings_file(&table, &c, &pool, "/nonexistent/walq.ini", err, sizeof(err)), -1);
    ck_assert_msg(strstr(err, "/nonexistent/walq.ini: could not open the configuration file: "
                              "No such file or directory") == err,
                  "%s", err);
    ck_assert_ptr_nonnull(strstr(err, "\nHINT:  "));
    walq__set_pool_free(&pool);
}
END_TEST

START_TEST(equal_and_copy_per_kind)
{
    walq__set_pool pool = {0};
    char *argv[] = {"consume", NULL};
    char err[512];
    conf a, b;

    ck_assert_int_eq(
        build(&a, &pool, "[consume]\nqueue = x y\ncount = 2\n", 1, argv, err, sizeof(err)), 0);
    ck_assert_int_eq(build(&b, &pool, "[consume]\nqueue = x y\ncount = 5\nname = n\n", 1, argv, err,
                           sizeof(err)),
                     0);
    for (size_t i = 0; i < table.n; i++) {
        const walq__setting *s = &tab[i];
        int same = walq__setting_equal(s, &a, &b);

        if (strcmp(s->name, "count") == 0 || strcmp(s->name, "name") == 0)
            ck_assert_msg(!same, "%s should differ", s->name);
        else
            ck_assert_msg(same, "%s should be the same", s->name);
    }
    walq__setting_copy(&tab[2], &a, &b);
    ck_assert_int_eq(a.count, 5);
    ck_assert(walq__setting_equal(&tab[2], &a, &b));
    walq__set_pool_free(&pool);
}
END_TEST

START_TEST(a_default_that_does_not_parse_is_reported)
{
    static const walq__setting bad_tab[] = {
        {.name = "count",
         .kind = WALQ__SET_INT,
         .off = OFF(count),
         .def = "0",
         .what = "1 to 10",
         .lo = 1,
         .hi = 10},
    };
    static const walq__settings bad = {"consume", bad_tab, 1, NULL, NULL};
    walq__set_pool pool = {0};
    char *argv[] = {"consume", NULL};
    char err[512];
    walq__cmdline cl;
    conf c;

    memset(&c, 0, sizeof(c));
    ck_assert_int_eq(walq__settings_cmdline(&bad, &cl, 1, argv), 0);
    ck_assert_int_eq(walq__settings_build(&bad, &cl, &c, &pool, err, sizeof(err)), 2);
    ck_assert_str_eq(err, "the default of --count takes 1 to 10, not \"0\" (an error of walq's "
                          "settings table)");
    walq__cmdline_free(&cl);
    walq__set_pool_free(&pool);
}
END_TEST

START_TEST(help_lists_the_reloaded_settings)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);

    walq__settings_help(&table, f);
    fclose(f);
    ck_assert_ptr_nonnull(strstr(buf, "  --count N"));
    ck_assert_ptr_nonnull(strstr(buf, "  --config FILE"));
    ck_assert_ptr_nonnull(strstr(buf, "restart:\n  count, wait, log-level\n"));
    free(buf);
}
END_TEST

/* ------------------------------------------------------------------ */
/* SIGHUP                                                              */

/* A command's settings in use, as walq__settings_reload() sees them. */
typedef struct live {
    conf c; /* first: the table's offsets are conf's */
    walq__set_pool pool;
} live;

static char reload_log[8192];
static int applied, refuse;
static conf applied_conf;

static void capture(walq_log_level level, const char *msg, void *payload)
{
    size_t n = strlen(reload_log);

    (void)payload;
    snprintf(reload_log + n, sizeof(reload_log) - n, "%d:%s\n", (int)level, msg);
}

static int live_build(void *base, const walq__cmdline *cl, char *err, size_t errlen)
{
    live *l = base;

    memset(l, 0, sizeof(*l));
    return walq__settings_build(&table, cl, l, &l->pool, err, errlen);
}

static int live_apply(void *arg, const void *next, char *err, size_t errlen)
{
    ck_assert_ptr_eq(arg, &applied);
    applied++;
    applied_conf = ((const live *)next)->c;
    if (refuse) {
        snprintf(err, errlen, "the command refused");
        return -1;
    }
    return 0;
}

static void rewrite(const char *text)
{
    FILE *f = fopen(path, "w");

    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    fclose(f);
}

/* Rewrites the file, reloads, and says whether the log has want (and clears it). */
static void reload_with(walq__reload *r, const char *text, int nlines, const char *const *want)
{
    if (text != NULL)
        rewrite(text);
    reload_log[0] = '\0';
    walq__settings_reload(r);
    for (int i = 0; i < nlines; i++)
        ck_assert_msg(strstr(reload_log, want[i]) != NULL, "no \"%s\" in:\n%s", want[i],
                      reload_log);
}

START_TEST(a_reload_applies_what_reloads_and_logs_the_rest)
{
    char *argv[] = {"consume", "--wait", "3", NULL};
    char err[512], want[6][512];
    const char *w[6];
    walq__cmdline cl;
    live cur;
    walq__reload r = {.t = &table,
                      .cur = &cur,
                      .size = sizeof(cur),
                      .pool_off = offsetof(live, pool),
                      .level_off = offsetof(live, c.level),
                      .build = live_build,
                      .apply = live_apply,
                      .arg = &applied,
                      .log = capture};

    for (int i = 0; i < 6; i++)
        w[i] = want[i];
    ck_assert_int_eq(walq__settings_cmdline(&table, &cl, 3, argv), 0);
    write_file("[consume]\ncount = 2\nname = first\nflag = no\n");
    cl.config = path;
    r.cl = &cl;
    ck_assert_int_eq(live_build(&cur, &cl, err, sizeof(err)), 0);
    ck_assert_int_eq(cur.c.count, 2);

    /* What reloads goes to the command, and is then in use; the rest is logged. */
    applied = 0;
    snprintf(want[0], sizeof(want[0]),
             "1:setting \"name\" changed in \"%s\" but needs a restart; the value in use stays\n",
             path);
    snprintf(want[1], sizeof(want[1]),
             "1:setting \"flag\" changed to \"1\" in \"%s\" but needs a restart; it stays \"0\"\n",
             path);
    snprintf(want[2], sizeof(want[2]), "2:reloaded \"%s\": 2 settings changed\n", path);
    reload_with(&r, "[consume]\ncount = 5\nname = second\nflag = yes\nlog_level = debug\n", 3, w);
    ck_assert_int_eq(applied, 1);
    ck_assert_int_eq(applied_conf.count, 5);
    ck_assert_int_eq(cur.c.count, 5);
    /* The command line still wins: --wait 3 is not the file's default. */
    ck_assert_int_eq(cur.c.wait_ms, 3000);
    ck_assert_str_eq(cur.c.name, "first");
    ck_assert_int_eq(cur.c.flag, 0);
    ck_assert_msg(strstr(reload_log, "second") == NULL, "a string's value shown:\n%s", reload_log);
    ck_assert_int_eq(cur.c.level, 3);

    /* Nothing that reloads changed: the command is not asked. */
    snprintf(want[0], sizeof(want[0]), "2:reloaded \"%s\": no setting that reloads has changed\n",
             path);
    reload_with(&r, NULL, 1, w);
    ck_assert_int_eq(applied, 1);

    /* A bad file changes nothing. */
    snprintf(want[0], sizeof(want[0]),
             "0:configuration file not reloaded; the settings in use stay: %s:2: \"count\" takes a "
             "whole number from 1 to 10, not \"99\"\n",
             path);
    reload_with(&r, "[consume]\ncount = 99\nname = first\n", 1, w);
    ck_assert_int_eq(applied, 1);
    ck_assert_int_eq(cur.c.count, 5);

    /* Nor does a command that refuses the new settings. */
    refuse = 1;
    snprintf(want[0], sizeof(want[0]),
             "0:configuration file not reloaded; the settings in use stay: the command refused\n");
    reload_with(&r, "[consume]\ncount = 7\nname = first\nflag = no\n", 1, w);
    refuse = 0;
    ck_assert_int_eq(applied, 2);
    ck_assert_int_eq(applied_conf.count, 7);
    ck_assert_int_eq(cur.c.count, 5);

    /* The log level in use filters the reload's own lines, the new one once it is in use. */
    reload_with(&r, "[consume]\ncount = 6\nname = first\nlog_level = warning\n", 0, w);
    ck_assert_int_eq(applied, 3);
    ck_assert_int_eq(cur.c.count, 6);
    ck_assert_int_eq(cur.c.level, 1);
    ck_assert_msg(reload_log[0] == '\0', "logged below the level in use:\n%s", reload_log);

    /* Without a file there is nothing to read again. */
    unlink(path);
    cl.config = NULL;
    snprintf(want[0], sizeof(want[0]),
             "1:received SIGHUP, but there is no configuration file to read again\nHINT:  Start "
             "walq consume with --config FILE.\n");
    reload_with(&r, NULL, 1, w);
    ck_assert_int_eq(applied, 3);
    walq__set_pool_free(&cur.pool);
    walq__cmdline_free(&cl);
}
END_TEST

static Suite *settings_suite(void)
{
    Suite *s = suite_create("settings");
    TCase *tc = tcase_create("core");

    tcase_add_test(tc, defaults_come_from_the_table);
    tcase_add_test(tc, a_file_sets_every_kind);
    tcase_add_test(tc, the_command_line_wins);
    tcase_add_test(tc, bad_command_line_values_name_the_option);
    tcase_add_loop_test(tc, bad_files_say_where, 0, sizeof(bad_files) / sizeof(bad_files[0]));
    tcase_add_test(tc, a_long_line_is_refused_not_cut);
    tcase_add_test(tc, a_missing_file_is_named);
    tcase_add_test(tc, equal_and_copy_per_kind);
    tcase_add_test(tc, a_default_that_does_not_parse_is_reported);
    tcase_add_test(tc, help_lists_the_reloaded_settings);
    tcase_add_test(tc, a_reload_applies_what_reloads_and_logs_the_rest);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(settings_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
