/* `walq audit`: the audit trail of the job tables, as JSON lines or table rows. */
#ifndef WALQ_CLI_AUDIT_H
#define WALQ_CLI_AUDIT_H

/*
 * Runs `walq audit [OPTIONS]`.  argv[0] is "audit", as for the other
 * commands of the program.  Returns the exit status: 0, 1 on an error, 2 on
 * a usage error.
 */
int walq__cli_audit(int argc, char **argv);

#endif
