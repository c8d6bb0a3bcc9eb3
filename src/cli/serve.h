/* walq serve: /metrics, /healthz and a status page for the whole database. */
#ifndef WALQ_CLI_SERVE_H
#define WALQ_CLI_SERVE_H

int walq__cli_serve(int argc, char **argv);

#endif
