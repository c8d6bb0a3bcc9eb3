#!/usr/bin/env bash
# shellcheck disable=SC2016  # wait_for evals its condition later
# A server crash (pg_ctl stop -m immediate) in the middle of a batch, twice,
# and a fast restart, while a producer keeps publishing (and goes on after
# each restart): the consumer reconnects and carries on, and after a final
# --drain every job has exactly one outcome, done.
#
# "In the middle of a batch": outcomes are batched for up to a second
# (--ack-delay-ms 1000), and the server goes down only once the handlers
# have finished jobs whose outcomes are not committed yet.
# shellcheck source=SCRIPTDIR/../lib/pgtest.sh
. "$(dirname "$0")/../lib/pgtest.sh"
require_walq
pg_start
walq init

QUEUE=cm
GROUP=cmb
BACKLOG=300  # jobs the producer lets the consumer fall behind, at most

h=$(handler work.sh <<HANDLER
read -r _ || true
echo "\$WALQ_JOB_ID" >>"$WORK/ran.log"
exit 0
HANDLER
)
touch "$WORK/ran.log"

# The producer: transactions of varied sizes until it is told to stop,
# keeping at most BACKLOG jobs ahead of the consumer, so that the test takes
# as long on a slow machine as the consumer needs, no more.  A transaction
# that fails because the server is down is not retried: whatever committed
# is in walq.jobs, and walq.jobs is what the assertions count.  (A commit
# that failed may have committed; one that succeeded may even be lost in the
# crash, since the test server runs with synchronous_commit = off.)
cat >"$WORK/producer.sh" <<PRODUCER
#!/usr/bin/env bash
set -uo pipefail
psql() { "$PGTEST_BINDIR/psql" -X -At -q -v ON_ERROR_STOP=1 "\$@" 2>/dev/null; }
sizes=(1 40 7 120 3 60 1 25 90 2)
i=0 sent=0
while [ ! -e "$WORK/stop" ]; do
    done=\$(psql -c "SELECT count(*) FROM ($(recorded_sql "$GROUP")) r") || done=
    if [ -z "\$done" ] || [ \$((sent - done)) -gt $BACKLOG ]; then
        sleep 0.2
        continue
    fi
    s=\${sizes[i % \${#sizes[@]}]}
    i=\$((i + 1))
    if psql -c "INSERT INTO walq.jobs (queue, payload)
                SELECT '$QUEUE', jsonb_build_object('txn', \$i, 'n', g)
                  FROM generate_series(1, \$s) g" >/dev/null; then
        sent=\$((sent + s))
        # Whole or not at all: a reader never sees the file empty.
        echo "\$sent" >"$WORK/sent.new" && mv "$WORK/sent.new" "$WORK/sent"
    else
        sleep 0.2
    fi
    sleep 0.1
done
PRODUCER
chmod 0755 "$WORK/producer.sh"
echo 0 >"$WORK/sent"

published() { q "SELECT count(*) FROM walq.jobs WHERE queue = '$QUEUE'"; }
handled() { sort -u "$WORK/ran.log" | wc -l; }

bg "$WALQ_BIN" consume --keep-outcomes --group "$GROUP" --queue "$QUEUE" --concurrency 4 \
    --ack-delay-ms 1000 --batch-size 500 -- "$h" 2>"$WORK/consumer.log"
pid=$BG_PID
wait_for "slot_active walq_$GROUP" 30 "the consumer to stream"
bg "$WORK/producer.sh"
producer=$BG_PID

# mid_batch MIN_DONE: waits until at least MIN_DONE jobs are recorded and
# the handlers have finished at least 10 more than are recorded.  (The log
# is read first: a job counted there and not in walq.outcomes, read later,
# was finished and not recorded at that later moment.)
mid_batch() {
    local min=$1 deadline=$((SECONDS + 90)) ran rec
    while :; do
        ran=$(handled)
        rec=$(done_count "$GROUP")
        if [ "$rec" -ge "$min" ] && [ "$ran" -ge $((rec + 10)) ]; then
            break
        fi
        [ "$SECONDS" -lt "$deadline" ] || fail "timed out waiting for $min jobs done mid-batch ($rec recorded, $ran run)"
        sleep 0.05
    done
    MID="$rec of $(published) jobs recorded, $((ran - rec)) or more finished and not yet recorded"
}

# after_event WHAT: the consumer survived, and the producer publishes again.
after_event() {
    local what=$1 before
    kill -0 "$pid" 2>/dev/null || fail "the consumer exited after the $what"
    before=$(cat "$WORK/sent")
    wait_for '[ "$(cat "$WORK/sent")" -gt '"$before"' ]' 60 "the producer to publish after the $what"
    wait_for "slot_active walq_$GROUP" 30 "the consumer to stream again after the $what"
    pass "after the $what: the consumer streams again and the producer publishes ($(published) jobs)"
}

mid_batch 200
pg_crash
pass "server crash 1 with $MID"
after_event "first crash"

mid_batch $(($(done_count "$GROUP") + 250))
pg_crash
pass "server crash 2 with $MID"
after_event "second crash"

mid_batch $(($(done_count "$GROUP") + 250))
pg_restart
pass "server restart with $MID"
after_event "restart"

wait_for '[ "$(done_count '"$GROUP"')" -ge '"$(($(done_count "$GROUP") + 100))"' ]' 60 \
    "100 more jobs done after the restart"
touch "$WORK/stop"
bg_wait "$producer" 30
kill -TERM "$pid"
bg_wait "$pid" 60
assert_eq "$BG_RC" 0 "SIGTERM after two crashes and a restart: exit 0"

n=$(published)
capture walq_timeout 120 consume --keep-outcomes --group "$GROUP" --queue "$QUEUE" --concurrency 4 --drain -- "$h"
printf '%s\n' "$CAP_ERR" >>"$WORK/consumer.log"
[ "$CAP_RC" -eq 0 ] || fail "--drain exited $CAP_RC: $CAP_ERR"
pass "--drain exits 0"

assert_all_done "$GROUP" "^$QUEUE\$" "$n"
assert_eq "$(handled)" "$n" "every job's handler ran"
pass "handler runs: $(wc -l <"$WORK/ran.log") for $n jobs"
pass "all"
