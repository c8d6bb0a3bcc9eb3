#!/usr/bin/env bash
# shellcheck disable=SC2016  # wait_for evals its condition later
# A running consumer picks up jobs as they are committed, never sees rolled
# back inserts or other queues, and stops cleanly on SIGTERM.
# shellcheck source=SCRIPTDIR/../lib/pgtest.sh
. "$(dirname "$0")/../lib/pgtest.sh"
require_walq
pg_start
walq init

h=$(handler record.sh <<HANDLER
cat >/dev/null
echo "\$WALQ_JOB_ID" >>"$WORK/ran.log"
HANDLER
)

bg "$WALQ_BIN" consume --group live --queue s --concurrency 4 -- "$h"
pid=$BG_PID
wait_for "slot_active walq_live" 20 "the consumer to stream from slot walq_live"
pass "the consumer is streaming"

# Jobs arrive while it runs: SQL in several transactions, a rolled back
# insert, another queue, and the CLI.
for _ in $(seq 1 10); do
    publish_sql s 20
done
pg_psql <<'SQL'
BEGIN;
INSERT INTO walq.jobs (queue, payload) VALUES ('s', '{"rolled": "back"}');
ROLLBACK;
SQL
publish_sql not_s 30
seq 1 100 | sed 's/.*/{"cli": &}/' | walq publish s 2>/dev/null
for i in $(seq 1 5); do walq publish s "{\"one\": $i}" >/dev/null; done

wait_for '[ "$(done_count live)" -ge 305 ]' 40 "305 jobs done"
sleep 0.5
kill -TERM "$pid"
bg_wait "$pid" 20
assert_eq "$BG_RC" 0 "SIGTERM: the consumer exits 0"

assert_all_done live '^s$' 305
assert_eq "$(q "SELECT count(*) FROM ($(recorded_sql live)) o JOIN walq.jobs j ON j.id = o.job_id
                 WHERE j.payload ? 'rolled'")" 0 "a rolled back insert is never seen"
assert_eq "$(sort -u "$WORK/ran.log" | wc -l)" 305 "the handler saw 305 distinct jobs"
assert_eq "$(wc -l <"$WORK/ran.log")" 305 "the handler ran once per job"

# The slot was confirmed past the acked work: a restart finds nothing to do.
walq_timeout 30 consume --group live --queue s --drain -- "$h"
assert_eq "$(wc -l <"$WORK/ran.log")" 305 "a later --drain reruns nothing"
pass "all"
