/* `walq job`: look at single jobs, list them, retry and cancel them. */
#ifndef WALQ_CLI_JOB_H
#define WALQ_CLI_JOB_H

/*
 * Runs `walq job SUBCOMMAND ...`.  argv[0] is "job", as for the other
 * commands of the program.  Returns the exit status: 0, 1 on an error, 2 on
 * a usage error.
 */
int walq__cli_job(int argc, char **argv);

#endif
