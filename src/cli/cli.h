/* What the walq program's commands share: how they print errors. */
#ifndef WALQ_CLI_H
#define WALQ_CLI_H

#include "common.h"
#include "walq.h"

extern const char *walq__progname;

/* Prints a message in PostgreSQL's style; a "\nHINT:  " part gets its own line. */
void walq__cli_message(const char *level, const char *msg);

/* Prints the last library error (or rc's description) as an ERROR. */
void walq__cli_fail(int rc);

/*
 * A usage error: the message, then where help is ("walq COMMAND SUB --help";
 * command and sub may be NULL).
 */
void walq__cli_usage(const char *command, const char *sub, const char *fmt, ...) WALQ__PRINTF(3, 4);

/*
 * The stop rule of the long-running commands: the first SIGTERM or SIGINT
 * calls stop(arg, 0) (finish what is under way, then exit), any later one
 * stop(arg, 1) (at once).  SIGPIPE is ignored.  walq__cli_on_stop(NULL,
 * NULL) once the command's object is gone.
 */
void walq__cli_on_stop(void (*stop)(void *arg, int immediate), void *arg);

/*
 * The reload rule of the long-running commands: each SIGHUP calls
 * reload(arg) in a thread of the program's own, which reads the
 * configuration file again and hands the settings to the library; the
 * signal handler only wakes that thread.  walq__cli_on_reload(NULL, NULL)
 * stops the thread, waiting for a reload under way, and ignores SIGHUP from
 * then on.  0, or -1 if the thread could not start.
 */
int walq__cli_on_reload(void (*reload)(void *arg), void *arg);

/* A command's open failed with rc: prints why; the exit status (2 for bad options). */
int walq__cli_open_failed(int rc);

/* The log callback of the program's long-running commands: stamped lines on stderr. */
void walq__cli_log(walq_log_level level, const char *msg, void *payload);

/*
 * --log-format: "text" (the default, lines in PostgreSQL's style) or "json"
 * (one object per line: time, level, program, command, group, partition,
 * slot, message, hint).  -1 for another format.
 */
int walq__cli_log_format(const char *format);

/*
 * The same, for "walq --log-format FORMAT COMMAND": the command's own
 * setting (its default, its configuration file) does not change it then.
 */
int walq__cli_log_format_fixed(const char *format);

/*
 * What the JSON lines name beside the message (any may be NULL; the strings
 * are borrowed and must outlive the command), and the prefix the library
 * puts before its messages about it, which is taken off them.
 */
void walq__cli_log_context(const char *command, const char *group, const char *partition,
                           const char *slot, const char *prefix);

/* An informational line of the program (a summary): "walq: ..." or a JSON line. */
void walq__cli_note(const char *fmt, ...) WALQ__PRINTF(1, 2);

#endif
