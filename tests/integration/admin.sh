#!/usr/bin/env bash
# shellcheck disable=SC2016  # wait_for evals its condition later
# Administration of single jobs: `walq job list`, `show`, `retry` and
# `cancel`.  A dead job is found, looked at, retried, and run again by the
# consumer that was already running; a scheduled job that is cancelled never
# runs, across a restart too; jobs that cannot be changed say why.
# shellcheck source=SCRIPTDIR/../lib/pgtest.sh
. "$(dirname "$0")/../lib/pgtest.sh"
require_walq
pg_start
walq init >/dev/null 2>&1

# The handler fails while $WORK/broken exists, except for payloads marked
# "ok".  Every run is logged with the job's id.
touch "$WORK/broken"
h=$(handler handler.sh <<HANDLER
payload=\$(cat)
echo "\$WALQ_JOB_ID" >>"$WORK/ran.log"
case \$payload in *'"ok"'*) exit 0 ;; esac
if [ -e "$WORK/broken" ]; then
    echo "the handler is broken" >&2
    exit 1
fi
exit 0
HANDLER
)
: >"$WORK/ran.log"

start_consumer() {
    bg "$WALQ_BIN" consume --group ga --queue work --backoff-min 0.01 --backoff-max 0.05 \
        -- "$h" 2>>"$WORK/consumer.log"
    consumer=$BG_PID
    wait_for 'slot_active walq_ga' 20 "the consumer to stream"
}
stop_consumer() {
    kill -TERM "$consumer"
    bg_wait "$consumer" 20
    assert_eq "$BG_RC" 0 "the consumer exits 0 on SIGTERM"
}
st() { # JOB: its status in group ga
    q "SELECT status FROM walq.job_status WHERE job_id = $1 AND consumer_group = 'ga'"
}
past() { # TIMESTAMP: succeeds once the server's clock is past it
    [ "$(q "SELECT now() > timestamptz '$1'")" = t ]
}
runs() { # JOB: how many times the handler ran it
    grep -c "^$1\$" "$WORK/ran.log" || true
}

start_consumer

# A job that goes dead: max_attempts 1 and a failing handler.
a=$(walq publish --max-attempts 1 work '{"task": "a"}')
wait_for '[ "$(st "$a")" = dead ]' 20 "job $a to be dead"
pass "a job with max_attempts 1 whose handler fails is dead"

# Finding it.
capture walq job list --status dead
assert_eq "$CAP_RC" 0 "walq job list --status dead exits 0"
assert_match "$CAP_OUT" '^job_id +queue +group +status +attempts +updated_at +last_error' \
    "walq job list prints a header"
assert_match "$CAP_OUT" "^$a +work +ga +dead +1 .*the handler is broken" \
    "walq job list --status dead shows the dead job with its error"
capture walq job list --status dead --queue work --group ga --limit 5
assert_match "$CAP_OUT" "^$a +work +ga +dead" "walq job list filters by queue and group"
capture walq job list --status dead --queue nosuchqueue
assert_eq "$CAP_OUT" "(no matching jobs)" "walq job list says when nothing matches"
capture walq job list --status "done"
assert_eq "$CAP_OUT" "(no matching jobs)" "walq job list --status done leaves out the dead job"
capture walq job list --status zombie
assert_eq "$CAP_RC" 2 "walq job list --status with an unknown status is a usage error"
assert_match "$CAP_ERR" 'invalid --status "zombie": give queued, running, scheduled, done, dead or cancelled' \
    "the usage error lists the statuses"
capture walq job list --group nosuchgroup
assert_eq "$CAP_RC" 1 "walq job list --group with an unknown group exits 1"
assert_match "$CAP_ERR" '^walq: ERROR:  consumer group "nosuchgroup" does not exist' \
    "the error names the group"

# Looking at it.
capture walq job show "$a"
assert_eq "$CAP_RC" 0 "walq job show exits 0"
assert_match "$CAP_OUT" "^id +$a\$" "walq job show shows the id"
assert_match "$CAP_OUT" '^queue +work$' "walq job show shows the queue"
assert_match "$CAP_OUT" '^max_attempts +1$' "walq job show shows max_attempts"
assert_match "$CAP_OUT" '^payload +\{"task": "a"\}$' "walq job show shows the payload"
assert_match "$CAP_OUT" '^ga +dead +1 .*the handler is broken' \
    "walq job show shows the status in the group with the last error"
capture walq job show 999999
assert_eq "$CAP_RC" 1 "walq job show of an unknown id exits 1"
assert_match "$CAP_ERR" '^walq: ERROR:  job 999999 does not exist' "and says the job does not exist"
capture walq job show abc
assert_eq "$CAP_RC" 2 "walq job show of a malformed id is a usage error"

# What walq.retry_job changes, seen inside a transaction that is rolled back.
assert_eq "$(pg_psql -c "BEGIN" -c "SELECT walq.retry_job($a)" \
    -c "SELECT status, attempts, coalesce(last_error, '-'), coalesce(run_at::text, '-')
          FROM walq.outcomes WHERE job_id = $a" \
    -c "SELECT group_name || ' ' || action FROM walq.commands
          WHERE job_id = $a AND action <> 'horizon'" -c "ROLLBACK")" \
    "$(printf '1\nqueued|0|-|-\nga retry')" \
    "walq.retry_job: queued, attempts 0, no error, a retry command for the group"

# A done job can be neither retried nor cancelled.
d=$(walq publish work '{"ok": true}')
wait_for '[ "$(st "$d")" = done ]' 20 "job $d to be done"
capture walq job cancel "$d"
assert_eq "$CAP_RC" 1 "cancelling a done job exits 1"
assert_match "$CAP_ERR" "^walq: ERROR:  job $d is already done in group \"ga\"" \
    "cancelling a done job says it is done"
assert_match "$CAP_ERR" '^walq: HINT:  Only a queued or scheduled job can be cancelled\.$' \
    "with a hint"
capture walq job retry "$d"
assert_eq "$CAP_RC" 1 "retrying a done job exits 1"
assert_match "$CAP_ERR" "^walq: ERROR:  job $d is done in group \"ga\", not dead or cancelled" \
    "retrying a done job says it is done"
assert_eq "$(st "$d")" "done" "the done job is still done"

# Other mistakes.
capture walq job retry 999999
assert_eq "$CAP_RC" 1 "retrying an unknown job exits 1"
assert_match "$CAP_ERR" '^walq: ERROR:  job 999999 does not exist' "and says so"
capture walq job retry "$a" --group nosuchgroup
assert_eq "$CAP_RC" 1 "retrying in an unknown group exits 1"
assert_match "$CAP_ERR" '^walq: ERROR:  consumer group "nosuchgroup" does not exist' "and says so"
capture walq job cancel
assert_eq "$CAP_RC" 2 "walq job cancel without an id is a usage error"
capture walq job frobnicate 1
assert_eq "$CAP_RC" 2 "an unknown job command is a usage error"
capture walq job retry --help
assert_eq "$CAP_RC" 0 "walq job retry --help exits 0"
assert_match "$CAP_OUT" '^Usage: walq job retry ID' "walq job retry --help shows the usage"

# A job scheduled an hour ahead is cancelled, and stays cancelled.
later=$(q "SELECT now() + interval '1 hour'")
s=$(walq publish --run-at "$later" work '{"task": "s"}')
wait_for '[ "$(st "$s")" = scheduled ]' 20 "job $s to be scheduled"
capture walq job cancel "$s"
assert_eq "$CAP_RC" 0 "walq job cancel of a scheduled job exits 0"
assert_match "$CAP_ERR" "^walq: job $s cancelled in 1 group\$" "walq job cancel says what it did"
assert_eq "$(st "$s")" "cancelled" "the scheduled job is cancelled"
assert_eq "$(q "SELECT group_name || ' ' || action FROM walq.commands WHERE job_id = $s AND action <> 'horizon'")" "ga cancel" \
    "a cancel command was sent to the group"
capture walq job cancel "$s"
assert_eq "$CAP_RC" 1 "cancelling it again exits 1"
assert_match "$CAP_ERR" "job $s is already cancelled in group \"ga\"" "and says it is cancelled"

# Across a restart the cancelled job is not brought back: the consumer
# reloads scheduled jobs, and this one is not.  It would run at once if it
# came back, since it is due now.
stop_consumer
q "UPDATE walq.jobs SET run_at = now() WHERE id = $s" >/dev/null
start_consumer
marker=$(walq publish work '{"ok": "marker"}')
wait_for '[ "$(st "$marker")" = done ]' 20 "a job published after the restart to be done"
assert_eq "$(runs "$s")" 0 "the cancelled job never ran, across a restart"
assert_eq "$(st "$s")" "cancelled" "the cancelled job is still cancelled"

# The rest needs the consumer to act on walq.commands from its stream.

# Retrying the dead job: the consumer started before the retry runs it again
# at once, without a restart, and this time the handler succeeds.
rm "$WORK/broken"
capture walq job retry "$a"
assert_eq "$CAP_RC" 0 "walq job retry exits 0"
assert_match "$CAP_ERR" "^walq: job $a queued again in 1 group\$" "walq job retry says what it did"
assert_eq "$(q "SELECT group_name || ' ' || action FROM walq.commands WHERE job_id = $a AND action <> 'horizon'")" "ga retry" \
    "a retry command was sent to the group"
wait_for '[ "$(st "$a")" = done ]' 5 "the retried job to run again in the running consumer"
pass "the running consumer ran the retried job again within 5 s"
assert_eq "$(runs "$a")" 2 "the handler ran the job twice: the failure and the retry"
assert_eq "$(q "SELECT attempts || ' ' || coalesce(last_error, '-') FROM walq.outcomes
                 WHERE job_id = $a")" "1 -" "its attempts were counted from zero again"

# A job due in 2 seconds, cancelled before then, never runs: the running
# consumer drops it from its timers.
soon=$(q "SELECT now() + interval '2 seconds'")
s2=$(walq publish --run-at "$soon" work '{"task": "s2"}')
wait_for '[ "$(st "$s2")" = scheduled ]' 20 "job $s2 to be scheduled"
walq job cancel "$s2" 2>/dev/null
wait_for 'past "$soon"' 10 "the cancelled job's time to pass"
sleep 1
marker=$(walq publish work '{"ok": "marker2"}')
wait_for '[ "$(st "$marker")" = done ]' 20 "a later job to be done"
assert_eq "$(runs "$s2")" 0 "a job cancelled while scheduled in a running consumer never ran"
assert_eq "$(st "$s2")" "cancelled" "and it is still cancelled"

# A job cancelled while the consumer is stopped, before the consumer saw it,
# never runs when the consumer reads it from the stream.
stop_consumer
x=$(walq publish work '{"task": "x"}')
walq job cancel "$x" 2>/dev/null
assert_eq "$(st "$x")" "cancelled" "a job the consumer has not seen yet can be cancelled"
start_consumer
marker=$(walq publish work '{"ok": "marker3"}')
wait_for '[ "$(st "$marker")" = done ]' 20 "a later job to be done"
assert_eq "$(runs "$marker")" 1 "the consumer runs jobs after the restart"
assert_eq "$(runs "$x")" 0 "a job cancelled before the consumer read it never ran"

# A job retried while the consumer is stopped runs when it starts.
touch "$WORK/broken"
b=$(walq publish --max-attempts 1 work '{"task": "b"}')
wait_for '[ "$(st "$b")" = dead ]' 20 "job $b to be dead"
stop_consumer
rm "$WORK/broken"
walq job retry "$b" 2>/dev/null
start_consumer
wait_for '[ "$(st "$b")" = done ]' 10 "a job retried while the consumer was stopped to run at its start"
pass "a job retried while the consumer was stopped ran when it started"

# A job cancelled and retried before the consumer saw it runs once.
stop_consumer
y=$(walq publish work '{"task": "y"}')
walq job cancel "$y" 2>/dev/null
walq job retry "$y" 2>/dev/null
start_consumer
wait_for '[ "$(st "$y")" = done ]' 10 "a job cancelled and retried before the consumer saw it to be done"
marker=$(walq publish work '{"ok": "marker4"}')
wait_for '[ "$(st "$marker")" = done ]' 20 "a later job to be done"
assert_eq "$(runs "$y")" 1 "a job cancelled and retried before the consumer saw it ran once"
stop_consumer
pass "all"
