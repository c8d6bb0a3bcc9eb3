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
 * Sends SIGTERM and SIGINT to fn (which stops the running command: drain on
 * the first, at once on the second) and ignores SIGPIPE.
 */
void walq__cli_on_stop(void (*fn)(int));

/* The log callback of the program's long-running commands: stamped lines on stderr. */
void walq__cli_log(walq_log_level level, const char *msg, void *payload);

#endif
