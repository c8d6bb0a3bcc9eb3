#!/usr/bin/env bash
# shellcheck disable=SC2016  # wait_for evals its condition later
# A primary that turns read-only is waited for, not fatal (issue 11,
# scenario 6).  While a consumer runs and jobs flow, the server is made
# read-only (default_transaction_read_only = on, reloaded): 10 s later the
# consumer still runs and has warned about it; once the server takes writes
# again, every job has exactly one final outcome and SIGTERM exits 0.  The
# producer's session sets default_transaction_read_only = off for itself,
# so that jobs keep coming while the consumer cannot record.
# shellcheck source=SCRIPTDIR/../lib/pgtest.sh
. "$(dirname "$0")/../lib/pgtest.sh"
require_walq
pg_start
walq init

GROUP=ro
QUEUE=rq
h=$(handler work.sh <<HANDLER
cat >/dev/null
echo "\$WALQ_JOB_ID" >>"$WORK/ran.log"
exit 0
HANDLER
)

# Sessions that write whatever the server's default.
rw() { PGOPTIONS='-c default_transaction_read_only=off' pg_psql "$@"; }
publish() {
    rw -c "INSERT INTO walq.jobs (queue, payload)
           SELECT '$QUEUE', jsonb_build_object('n', g) FROM generate_series(1, $1) g" >/dev/null
}
server_read_only() { q "SHOW default_transaction_read_only"; }

bg "$WALQ_BIN" consume --group "$GROUP" --queue "$QUEUE" --concurrency 4 -- "$h" \
    2>"$WORK/consumer.log"
pid=$BG_PID
running() {
    kill -0 "$pid" 2>/dev/null && ! _pgtest_exited "$pid" && return 0
    bg_wait "$pid" 5
    fail "the consumer exited (status $BG_RC): $(tail -n 3 "$WORK/consumer.log")"
}
all_final() {
    [ "$(q "SELECT count(*) FROM walq.job_status WHERE consumer_group = '$GROUP'
              AND status IN ('done', 'dead', 'cancelled')")" -eq \
        "$(q "SELECT count(*) FROM walq.jobs WHERE queue = '$QUEUE'")" ]
}
wait_for 'running && slot_active walq_$GROUP' 30 "the consumer to stream"
publish 20
wait_for 'running && all_final' 30 "the first 20 jobs done"

pg_psql -c "ALTER SYSTEM SET default_transaction_read_only = on" -c "SELECT pg_reload_conf()" >/dev/null
wait_for '[ "$(server_read_only)" = on ]' 10 "the server to be read-only"
pass "the server is read-only"
t0=$SECONDS
while [ $((SECONDS - t0)) -lt 10 ]; do
    running
    publish 5
    sleep 0.5
done
running
pass "10 s later, the consumer still runs"
assert_match "$(cat "$WORK/consumer.log")" 'WARNING: .*read-only' \
    "the consumer warned that the primary is read-only"

rw -c "ALTER SYSTEM RESET default_transaction_read_only" -c "SELECT pg_reload_conf()" >/dev/null
wait_for '[ "$(server_read_only)" = off ]' 10 "the server to take writes again"
publish 10
wait_for 'running && all_final' 40 "every job to have a final outcome"

bad=$(q "SELECT j.id || ':' || n FROM walq.jobs j
           CROSS JOIN LATERAL (
               SELECT (SELECT count(*) FROM walq.outcomes o WHERE o.group_name = '$GROUP'
                         AND o.job_id = j.id AND o.status IN ('done', 'dead', 'cancelled'))
                    + (SELECT count(*) FROM walq.outcome_batches b WHERE b.group_name = '$GROUP'
                         AND j.id = ANY (b.job_ids)) AS n) r
          WHERE j.queue = '$QUEUE' AND n <> 1 ORDER BY j.id LIMIT 10")
[ -z "$bad" ] || fail "jobs without exactly one final record (id:records): $(paste -sd' ' <<<"$bad")"
n=$(q "SELECT count(*) FROM walq.jobs WHERE queue = '$QUEUE'")
assert_eq "$(q "SELECT count(*) FROM walq.job_status WHERE consumer_group = '$GROUP' AND status = 'done'")" \
    "$n" "walq.job_status: all $n jobs done"
assert_eq "$(sort -u "$WORK/ran.log" | wc -l)" "$n" "the handler ran every job"
kill -TERM "$pid"
bg_wait "$pid" 20
assert_eq "$BG_RC" 0 "SIGTERM: the consumer exits 0"
pass "all"
