/* `walq replica`: set up and tear down the subscriber topology. */
#ifndef WALQ_CLI_REPLICA_H
#define WALQ_CLI_REPLICA_H

/*
 * Runs `walq replica SUBCOMMAND ...`.  argv[0] is "replica", as for the
 * other commands of the program.  Returns the exit status: 0, 1 on an
 * error, 2 on a usage error.
 */
int walq__cli_replica(int argc, char **argv);

#endif
