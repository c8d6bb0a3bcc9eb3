/* Error output shared by the walq program's commands. */
#include <stdio.h>
#include <string.h>

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
