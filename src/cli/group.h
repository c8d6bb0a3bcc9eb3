/*
 * walq status, walq group list and walq group drop: the readers of the
 * consumer groups and their slots.
 */
#ifndef WALQ_CLI_GROUP_H
#define WALQ_CLI_GROUP_H

/* The exit status of walq status and walq group list when they warned. */
#define WALQ__CLI_EXIT_WARNED 3

int walq__cli_status(int argc, char **argv);
int walq__cli_group(int argc, char **argv);

#endif
