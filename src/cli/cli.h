/* What the walq program's commands share: how they print errors. */
#ifndef WALQ_CLI_H
#define WALQ_CLI_H

extern const char *walq__progname;

/* Prints a message in PostgreSQL's style; a "\nHINT:  " part gets its own line. */
void walq__cli_message(const char *level, const char *msg);

/* Prints the last library error (or rc's description) as an ERROR. */
void walq__cli_fail(int rc);

#endif
