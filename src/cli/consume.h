/* `walq consume`: run a handler for every job of some queues. */
#ifndef WALQ_CLI_CONSUME_H
#define WALQ_CLI_CONSUME_H

/*
 * Runs `walq consume ...`.  argv[0] is "consume", as for the other commands
 * of the program.  Returns the exit status: 0, 1 on an error, 2 on a usage
 * error.
 */
int walq__cli_consume(int argc, char **argv);

#endif
