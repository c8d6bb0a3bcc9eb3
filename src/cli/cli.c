/* Error output shared by the walq program's commands. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <yajl/yajl_gen.h>

#include "cli/cli.h"
#include "text.h"
#include "walq.h"

const char *walq__progname = "walq";

/*
 * --log-format json: one JSON object per line, for log collectors.  The
 * fields that name what a message is about come from the command, and the
 * library's own prefix of them ("group \"g\": ") is taken off the message.
 */
static int log_json, log_fixed;
static struct {
    const char *command, *group, *partition, *slot;
    char prefix[160];
} log_ctx;

int walq__cli_log_format(const char *format)
{
    int json = strcmp(format, "json") == 0;

    if (!json && strcmp(format, "text") != 0)
        return -1;
    if (!log_fixed)
        log_json = json;
    return 0;
}

int walq__cli_log_format_fixed(const char *format)
{
    int rc = walq__cli_log_format(format);

    log_fixed |= rc == 0;
    return rc;
}

void walq__cli_log_context(const char *command, const char *group, const char *partition,
                           const char *slot, const char *prefix)
{
    log_ctx.command = command;
    log_ctx.group = group;
    log_ctx.partition = partition;
    log_ctx.slot = slot;
    snprintf(log_ctx.prefix, sizeof(log_ctx.prefix), "%s", prefix ? prefix : "");
}

/* A string field; text from outside (a handler's stderr) is made valid UTF-8 first. */
static void json_field(yajl_gen g, const char *key, const char *value, size_t len)
{
    char *clean = NULL;

    yajl_gen_string(g, (const unsigned char *)key, strlen(key));
    if (!walq__utf8_valid(value, len)) {
        clean = walq__utf8_clean(value, len, 0);
        value = clean ? clean : "?";
        len = strlen(value);
    }
    yajl_gen_string(g, (const unsigned char *)value, len);
    free(clean);
}

/* Writes the whole line at once, so that lines of several processes do not mix. */
static void write_line(const unsigned char *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = write(STDERR_FILENO, buf, len);

        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return;
        buf += n;
        len -= (size_t)n;
    }
}

static void json_message(const char *level, const char *msg)
{
    static const struct {
        const char *pg, *json;
    } levels[] = {{"ERROR", "error"}, {"WARNING", "warning"}, {"LOG", "info"},
                  {"DEBUG", "debug"}, {"FATAL", "fatal"},     {"NOTICE", "notice"}};
    const char *lvl = "info", *hint;
    size_t plen = strlen(log_ctx.prefix);
    yajl_gen g = yajl_gen_alloc(NULL);
    const unsigned char *buf;
    struct timespec ts;
    struct tm tm;
    char stamp[40];
    size_t len;

    if (g == NULL) {
        fprintf(stderr, "%s: %s:  %s\n", walq__progname, level, msg);
        return;
    }
    for (size_t i = 0; i < sizeof(levels) / sizeof(levels[0]); i++)
        if (strcmp(level, levels[i].pg) == 0)
            lvl = levels[i].json;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    len = strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(stamp + len, sizeof(stamp) - len, ".%03ldZ", ts.tv_nsec / 1000000);
    if (plen > 0 && strncmp(msg, log_ctx.prefix, plen) == 0)
        msg += plen;
    hint = strstr(msg, "\nHINT:  ");
    yajl_gen_map_open(g);
    json_field(g, "time", stamp, strlen(stamp));
    json_field(g, "level", lvl, strlen(lvl));
    json_field(g, "program", walq__progname, strlen(walq__progname));
    if (log_ctx.command)
        json_field(g, "command", log_ctx.command, strlen(log_ctx.command));
    if (log_ctx.group)
        json_field(g, "group", log_ctx.group, strlen(log_ctx.group));
    if (log_ctx.partition)
        json_field(g, "partition", log_ctx.partition, strlen(log_ctx.partition));
    if (log_ctx.slot)
        json_field(g, "slot", log_ctx.slot, strlen(log_ctx.slot));
    json_field(g, "message", msg, hint ? (size_t)(hint - msg) : strlen(msg));
    if (hint)
        json_field(g, "hint", hint + 8, strlen(hint + 8));
    yajl_gen_map_close(g);
    if (yajl_gen_get_buf(g, &buf, &len) == yajl_gen_status_ok) {
        unsigned char *line = malloc(len + 1);

        if (line != NULL) {
            memcpy(line, buf, len);
            line[len] = '\n';
            write_line(line, len + 1);
            free(line);
        }
    }
    yajl_gen_free(g);
}

void walq__cli_message(const char *level, const char *msg)
{
    const char *hint = strstr(msg, "\nHINT:  ");

    if (log_json) {
        json_message(level, msg);
        return;
    }
    if (hint == NULL) {
        fprintf(stderr, "%s: %s:  %s\n", walq__progname, level, msg);
        return;
    }
    fprintf(stderr, "%s: %s:  %.*s\n", walq__progname, level, (int)(hint - msg), msg);
    fprintf(stderr, "%s: HINT:  %s\n", walq__progname, hint + 8);
}

void walq__cli_fail(int rc)
{
    const char *msg = walq_last_error();

    walq__cli_message("ERROR", *msg ? msg : walq_strerror(rc));
}

void walq__cli_note(const char *fmt, ...)
{
    char msg[1024];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (log_json)
        json_message("LOG", msg);
    else
        fprintf(stderr, "%s: %s\n", walq__progname, msg);
}

void walq__cli_usage(const char *command, const char *sub, const char *fmt, ...)
{
    va_list ap;

    if (log_json) {
        char msg[1024];
        int n;

        va_start(ap, fmt);
        n = vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        if (n >= 0 && (size_t)n < sizeof(msg))
            snprintf(msg + n, sizeof(msg) - (size_t)n,
                     "\nHINT:  Try \"%s%s%s%s%s --help\" for more information.", walq__progname,
                     command ? " " : "", command ? command : "", sub ? " " : "", sub ? sub : "");
        json_message("ERROR", msg);
        return;
    }
    fprintf(stderr, "%s: ", walq__progname);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\nTry \"%s%s%s%s%s --help\" for more information.\n", walq__progname,
            command ? " " : "", command ? command : "", sub ? " " : "", sub ? sub : "");
}

void walq__cli_log(walq_log_level level, const char *msg, void *payload)
{
    static const char *const names[] = {"ERROR", "WARNING", "LOG", "DEBUG"};
    char stamp[32];
    time_t t = time(NULL);
    struct tm tm;

    (void)payload;
    if (log_json) {
        json_message(names[level], msg);
        return;
    }
    gmtime_r(&t, &tm);
    strftime(stamp, sizeof(stamp), "%Y-%m-%d %H:%M:%S UTC", &tm);
    fprintf(stderr, "%s ", stamp);
    walq__cli_message(names[level], msg);
}

static void (*volatile stop_fn)(void *arg, int immediate);
static void *volatile stop_arg;
static volatile sig_atomic_t stop_signals;

static void on_stop_signal(int sig)
{
    void (*fn)(void *, int) = stop_fn;

    (void)sig;
    stop_signals++;
    if (fn != NULL)
        fn(stop_arg, stop_signals > 1);
}

void walq__cli_on_stop(void (*stop)(void *arg, int immediate), void *arg)
{
    struct sigaction sa;

    stop_fn = NULL;
    stop_arg = arg;
    stop_fn = stop;
    if (stop == NULL)
        return;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
}

int walq__cli_open_failed(int rc)
{
    walq__cli_fail(rc);
    return rc == WALQ_EINVAL ? 2 : 1;
}

static int hup_pipe[2] = {-1, -1};
static pthread_t reload_thread;
static void (*reload_fn)(void *arg);
static void *reload_arg;

static void on_hup_signal(int sig)
{
    int saved = errno;
    char b = 'h';

    (void)sig;
    if (write(hup_pipe[1], &b, 1) < 0) {
        /* A full pipe has a reload waiting already. */
    }
    errno = saved;
}

/* Reads the pipe: 'h' is a SIGHUP, 'q' the end. */
static void *reload_main(void *unused)
{
    sigset_t all;

    (void)unused;
    /* Signals stay the main thread's, whose poll they wake. */
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL);
    for (;;) {
        char b;
        ssize_t n = read(hup_pipe[0], &b, 1);

        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0 || b == 'q')
            return NULL;
        reload_fn(reload_arg);
    }
}

int walq__cli_on_reload(void (*reload)(void *arg), void *arg)
{
    struct sigaction sa;

    memset(&sa, 0, sizeof(sa));
    sigemptyset(&sa.sa_mask);
    if (reload == NULL) {
        char b = 'q';

        if (hup_pipe[0] < 0)
            return 0;
        sa.sa_handler = SIG_IGN;
        sigaction(SIGHUP, &sa, NULL);
        if (write(hup_pipe[1], &b, 1) == 1)
            pthread_join(reload_thread, NULL);
        close(hup_pipe[0]);
        close(hup_pipe[1]);
        hup_pipe[0] = hup_pipe[1] = -1;
        return 0;
    }
    if (pipe2(hup_pipe, O_CLOEXEC) != 0)
        return -1;
    reload_fn = reload;
    reload_arg = arg;
    if (pthread_create(&reload_thread, NULL, reload_main, NULL) != 0) {
        close(hup_pipe[0]);
        close(hup_pipe[1]);
        hup_pipe[0] = hup_pipe[1] = -1;
        return -1;
    }
    sa.sa_handler = on_hup_signal;
    sa.sa_flags = SA_RESTART;
    sigaction(SIGHUP, &sa, NULL);
    return 0;
}
