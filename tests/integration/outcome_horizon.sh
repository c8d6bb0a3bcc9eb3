#!/usr/bin/env bash
# shellcheck disable=SC2016  # wait_for evals its condition later
# Outcome storage stays bounded (sql/005_outcome_horizon.sql): jobs done at
# their first attempt go into one walq.outcome_batches row per ack, and once
# a group's horizon passes them, those rows are deleted while
# walq.job_status still says done.  Dead jobs keep their rows.  Below the
# horizon nothing runs again: not after kill -9, not when the slot is lost
# and the group resynchronizes from walq.jobs.  A partitioned group's horizon
# waits for all of its readers.
# shellcheck source=SCRIPTDIR/../lib/pgtest.sh
. "$(dirname "$0")/../lib/pgtest.sh"
require_walq
pg_start
walq init

batches() { q "SELECT count(*) FROM walq.outcome_batches WHERE group_name = '$1'"; }
horizon() { q "SELECT done_below FROM walq.groups WHERE name = '$1'"; }
status_count() {
    q "SELECT count(*) FROM walq.job_status WHERE consumer_group = '$1' AND status = '$2'"
}

# 1. A flow of 20,000 jobs through --noop: the batches come and go.
bg "$WALQ_BIN" consume --group flow --queue fq --noop 2>"$WORK/flow.log"
pid=$BG_PID
wait_for 'slot_active walq_flow' 30 "the consumer to stream"
peak=0
for _ in $(seq 1 20); do
    publish_sql fq 1000
    n=$(batches flow)
    [ "$n" -gt "$peak" ] && peak=$n
    sleep 0.1
done
wait_for '[ "$(done_count flow)" -eq 20000 ]' 60 "20000 jobs done"
last=$(q "SELECT max(id) FROM walq.jobs")
wait_for '[ "$(horizon flow)" -gt '"$last"' ]' 20 "the horizon to pass the last job"
wait_for '[ "$(batches flow)" -eq 0 ]' 20 "the batches below the horizon to be deleted"
pass "20000 jobs: at most $peak batch rows at a time while they flowed, none left after"
assert_eq "$(status_count flow done)" 20000 "walq.job_status: every job done"
assert_eq "$(q "SELECT count(*) FROM walq.outcomes WHERE group_name = 'flow'")" 0 \
    "no outcome row for jobs done at their first attempt"
assert_eq "$(q "SELECT count(*) FROM walq.commands WHERE action = 'horizon'")" 1 \
    "one horizon command kept (older ones are deleted)"
capture walq job cancel 5
assert_eq "$CAP_RC" 1 "walq job cancel of a job below the horizon fails"
assert_match "$CAP_ERR" 'job 5 is already done in group "flow"' "and says it is done"
capture walq job retry 5
assert_match "$CAP_ERR" 'job 5 is done in group "flow", not dead or cancelled' \
    "walq job retry of it says it is done"
assert_eq "$(q "SELECT walq.job_finished(5)")" t "walq.job_finished: finished"
kill -TERM "$pid"
bg_wait "$pid" 20
assert_eq "$BG_RC" 0 "SIGTERM: exit 0"

# 2. A handler that logs every run, dead jobs, kill -9 below a horizon.
h=$(handler work.sh <<HANDLER
payload=\$(cat)
echo "\$WALQ_JOB_ID" >>"$WORK/ran.log"
case \$payload in *true*) exit 1 ;; esac
exit 0
HANDLER
)
touch "$WORK/ran.log"
q "INSERT INTO walq.jobs (queue, payload, max_attempts)
   SELECT 'wq', jsonb_build_object('n', g, 'bad', g % 500 = 0), 1 FROM generate_series(1, 1500) g" \
    >/dev/null
bg "$WALQ_BIN" consume --group w --queue wq --concurrency 4 -- "$h" 2>"$WORK/w1.log"
pid=$BG_PID
wait_for '[ "$(horizon w)" -gt 0 ] && [ "$(done_count w)" -ge 1000 ]' 60 \
    "a horizon and 1000 jobs done"
publish_sql wq 500
sleep 0.3
kill -KILL "$pid"
bg_wait "$pid" 10
h_kill=$(horizon w)
runs_before=$(wc -l <"$WORK/ran.log")
pass "kill -9 with the horizon at job $h_kill, $runs_before runs so far"
wait_for '! slot_active walq_w' 20 "the slot to be released"
walq_timeout 120 consume --group w --queue wq --concurrency 4 --drain -- "$h"
pass "--drain after kill -9 exits 0"
assert_eq "$(status_count w done)" 1997 "1997 jobs done"
assert_eq "$(status_count w dead)" 3 "3 jobs dead (max_attempts 1)"
assert_eq "$(q "SELECT count(*) FROM walq.outcomes WHERE group_name = 'w' AND status = 'dead'")" 3 \
    "the dead jobs keep their rows, with their errors"
pg_psql -c "CREATE TABLE ran (id bigint)"
pg_psql -c "\\copy ran FROM '$WORK/ran.log'"
assert_eq "$(q "SELECT count(*) FROM (SELECT id FROM ran WHERE id < $h_kill
                                       GROUP BY id HAVING count(*) > 1) x")" 0 \
    "no job below the horizon ran twice"
assert_eq "$(q "SELECT count(DISTINCT id) FROM ran")" 2000 "every job ran"
wait_for '[ "$(batches w)" -eq 0 ]' 20 "the batches of the drain to be compacted"

# 3. The slot is lost: the resynchronization from walq.jobs runs nothing
# below the horizon, and a retried dead job runs again.
dead=$(q "SELECT min(job_id) FROM walq.outcomes WHERE group_name = 'w' AND status = 'dead'")
q "SELECT pg_drop_replication_slot('walq_w')" >/dev/null
runs_before=$(wc -l <"$WORK/ran.log")
walq job retry "$dead" >/dev/null
capture walq_timeout 60 consume --group w --queue wq --concurrency 4 --drain -- "$h"
assert_eq "$CAP_RC" 0 "--drain after the slot was dropped exits 0"
assert_match "$CAP_ERR" 'resynchronizing' "it resynchronized from walq.jobs"
assert_eq "$(tail -n +$((runs_before + 1)) "$WORK/ran.log" | tr '\n' ' ')" "$dead " \
    "only the retried job ran again"
assert_eq "$(status_count w done)" 1997 "still 1997 jobs done"

# 4. A group split over two readers: no horizon until both have one.
publish_sql pq 4000
walq_timeout 60 consume --group p --queue pq --partition 0/2 --noop --drain
assert_eq "$(horizon p)" 0 "one reader of two: the group has no horizon"
[ "$(batches p)" -gt 0 ] || fail "partition 0's batches are kept while partition 1 has not run"
walq_timeout 60 consume --group p --queue pq --partition 1/2 --noop --drain
walq_timeout 60 consume --group p --queue pq --partition 0/2 --noop --drain
assert_eq "$(status_count p done)" 4000 "4000 jobs done over two partitions"
assert_eq "$(q "SELECT horizon >= max_id FROM (SELECT done_below AS horizon FROM walq.groups
                 WHERE name = 'p') h, (SELECT max(id) AS max_id FROM walq.jobs WHERE queue = 'pq') m")" \
    t "both readers ran: the group's horizon passes every job"
assert_eq "$(batches p)" 0 "and its batches are gone"

# 5. --keep-outcomes keeps them all.
publish_sql kq 300
walq_timeout 60 consume --group k --queue kq --noop --drain --keep-outcomes
assert_eq "$(q "SELECT sum(cardinality(job_ids)) FROM walq.outcome_batches WHERE group_name = 'k'")" \
    300 "--keep-outcomes: every job stays in the batches"
assert_eq "$(horizon k)" 0 "and the group gets no horizon"
pass "all"
