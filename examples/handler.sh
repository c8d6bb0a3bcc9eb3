#!/bin/sh
# An example walq exec handler.
#
# walq runs it once per job, without a shell in between: the job's payload
# (JSON) arrives on stdin and the job's fields in the environment.  Exit 0
# marks the job done, exit 75 asks walq to retry it later, any other exit
# status (or a signal) is a failed attempt, retried until the job's
# max_attempts, after which the job is dead and its last error kept.
#
#   WALQ_JOB_ID   the job's id in walq.jobs
#   WALQ_QUEUE    the queue it was published to
#   WALQ_GROUP    the consumer group running it
#   WALQ_ATTEMPT  1 on the first run, 2 on the first retry, ...
#
# Set HANDLER_LOG to a file name to see what it was given.

# The payload is one line of JSON (jsonb's text form has no raw newline), so
# the shell's own `read` takes it without starting another process.
IFS= read -r payload || true

# A real handler would send the e-mail here.  This one only refuses
# payloads that ask for it, to show how a failure is reported.
case $payload in
*'"fail": true'*)
    echo "job $WALQ_JOB_ID asked to fail" >&2
    exit 1
    ;;
esac

if [ -n "${HANDLER_LOG:-}" ]; then
    printf '%s job %s attempt %s (group %s): %s\n' \
        "$WALQ_QUEUE" "$WALQ_JOB_ID" "$WALQ_ATTEMPT" "$WALQ_GROUP" "$payload" >>"$HANDLER_LOG"
fi
exit 0
