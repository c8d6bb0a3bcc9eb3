/* Error output shared by the walq program's commands. */
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "cli/cli.h"
#include "walq.h"

const char *walq__progname = "walq";

void walq__cli_message(const char *level, const char *msg)
{
    const char *hint = strstr(msg, "\nHINT:  ");

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

void walq__cli_usage(const char *command, const char *sub, const char *fmt, ...)
{
    va_list ap;

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
