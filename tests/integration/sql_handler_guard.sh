#!/usr/bin/env bash
# shellcheck disable=SC2016  # wait_for evals its condition later; $2 is an SQL parameter
# The sql handler's exactly-once guard (issue 11, "found by reading the
# code"): walq.run_sql runs the statement of a job only if the job has no
# final outcome in the group.  A job done at its first attempt is recorded
# in a batch (walq.outcome_batches), or below the group's horizon, not in
# walq.outcomes; calling walq.run_sql for it again must not repeat its
# effects.  A job with no outcome yet still runs (checked in a transaction
# rolled back), so that the guard is not merely refusing everything.
# shellcheck source=SCRIPTDIR/../lib/pgtest.sh
. "$(dirname "$0")/../lib/pgtest.sh"
require_walq
pg_start
walq init

GROUP=sg
QUEUE=sq
SQL='INSERT INTO effects (job_id) VALUES ($2)'
q "CREATE TABLE effects (job_id bigint NOT NULL)"

publish_sql "$QUEUE" 50
bg "$WALQ_BIN" consume --group "$GROUP" --queue "$QUEUE" --sql "$SQL" 2>"$WORK/consumer.log"
pid=$BG_PID
running() {
    if ! kill -0 "$pid" 2>/dev/null || _pgtest_exited "$pid"; then
        fail "the consumer exited: $(tail -n 5 "$WORK/consumer.log")"
    fi
}
done_jobs() {
    q "SELECT count(*) FROM walq.job_status WHERE consumer_group = '$GROUP' AND status = 'done'"
}
wait_for 'running && [ "$(done_jobs)" -eq 50 ]' 30 "50 jobs done"
# More jobs for a few seconds, so that the first ones are old news to the
# consumer (compacted, on a walq with a horizon) and the last ones recent.
until=$((SECONDS + 4))
while [ "$SECONDS" -lt "$until" ]; do
    publish_sql "$QUEUE" 10
    sleep 0.25
done
n=$(q "SELECT count(*) FROM walq.jobs WHERE queue = '$QUEUE'")
wait_for 'running && [ "$(done_jobs)" -eq '"$n"' ]' 30 "$n jobs done"
kill -TERM "$pid"
bg_wait "$pid" 20
assert_eq "$BG_RC" 0 "SIGTERM: the consumer exits 0"
assert_eq "$(q "SELECT count(*), count(DISTINCT job_id) FROM effects")" "$n|$n" \
    "the sql handler's effects: one row per job"

# A group split in two, of which only partition 0 ran: its jobs are
# recorded in batches that no horizon has compacted (on today's walq).
publish_sql pq 40
capture walq_timeout 60 consume --group pg --queue pq --partition 0/2 --sql "$SQL" --drain
[ "$CAP_RC" -eq 0 ] || fail "--drain of partition 0/2 exited $CAP_RC: $CAP_ERR"
part0=$(q "SELECT count(*) FROM walq.jobs WHERE queue = 'pq' AND walq.partition_of(id, 2) = 0")
assert_eq "$(q "SELECT count(*), count(DISTINCT e.job_id) FROM effects e JOIN walq.jobs j ON j.id = e.job_id
                 WHERE j.queue = 'pq'")" "$part0|$part0" \
    "partition 0/2: the sql handler's effects, one row for each of its $part0 jobs"

# where GROUP ID: how the group recorded the job, for the log.
where() {
    q "SELECT CASE WHEN EXISTS (SELECT 1 FROM walq.outcomes WHERE group_name = '$1' AND job_id = $2)
                   THEN 'a row of walq.outcomes'
                   WHEN EXISTS (SELECT 1 FROM walq.outcome_batches
                                 WHERE group_name = '$1' AND $2 = ANY (job_ids))
                   THEN 'a row of walq.outcome_batches'
                   ELSE 'neither walq.outcomes nor walq.outcome_batches' END"
}

# once_more GROUP ID: walq.run_sql called again for a job done at its first
# attempt does not run its statement again.
once_more() {
    local group=$1 id=$2 rec
    assert_eq "$(q "SELECT status || ' ' || attempts FROM walq.job_status
                     WHERE consumer_group = '$group' AND job_id = $id")" "done 1" \
        "group $group: job $id is done at its first attempt"
    rec=$(where "$group" "$id")
    q "SELECT * FROM walq.run_sql('$group', '$SQL', ARRAY[$id::bigint], ARRAY['{}'::jsonb])" >/dev/null
    assert_eq "$(q "SELECT count(*) FROM effects WHERE job_id = $id")" 1 \
        "group $group: walq.run_sql again for done job $id (recorded in $rec) did not run its statement again"
}

for id in $(q "SELECT min(id) || ' ' || max(id) FROM walq.jobs WHERE queue = '$QUEUE'"); do
    once_more "$GROUP" "$id"
done
once_more pg "$(q "SELECT max(id) FROM walq.jobs WHERE queue = 'pq' AND walq.partition_of(id, 2) = 0")"

# The guard lets a job without an outcome through.
fresh=$(q "SELECT walq.publish('$QUEUE', '{}')")
assert_eq "$(pg_psql -c "BEGIN" \
    -c "SELECT count(*) FROM walq.run_sql('$GROUP', '$SQL', ARRAY[$fresh::bigint], ARRAY['{}'::jsonb])" \
    -c "SELECT count(*) FROM effects WHERE job_id = $fresh" -c "ROLLBACK" | tail -n 1)" 1 \
    "walq.run_sql runs the statement for job $fresh, which has no outcome"

# A job the group finished in an earlier try whose ack committed with its
# answer lost (made here by writing its outcome by hand, before the
# consumer reads it): walq.run_sql says what is recorded instead of running
# the statement, and the consumer writes nothing over it.  Before, a job
# recorded dead was handed back as done and put in a batch row, a second
# record of it.  The jobs ran nowhere: their statement would fail.
q "CREATE TABLE refuse (job_id bigint NOT NULL CHECK (job_id < 0))"
RSQL='INSERT INTO refuse (job_id) VALUES ($2)'
capture walq_timeout 60 consume --group rg --queue rq --sql "$RSQL" --drain
[ "$CAP_RC" -eq 0 ] || fail "--drain of an empty queue exited $CAP_RC: $CAP_ERR"
dead=$(q "SELECT walq.publish('rq', '{\"n\": 1}')")
cancelled=$(q "SELECT walq.publish('rq', '{\"n\": 2}')")
done_=$(q "SELECT walq.publish('rq', '{\"n\": 3}')")
fresh2=$(q "SELECT walq.publish('rq', '{\"n\": 4}', max_attempts => 1)")
q "INSERT INTO walq.outcomes (group_name, job_id, status, attempts, last_error, generation)
   SELECT 'rg', id, s, a, e, generation FROM walq.jobs
     JOIN (VALUES ($dead, 'dead', 3, 'gave up earlier'), ($cancelled, 'cancelled', 0, NULL),
                  ($done_, 'done', 2, NULL)) AS v(i, s, a, e) ON id = v.i" >/dev/null
capture walq_timeout 60 consume --group rg --queue rq --sql "$RSQL" --drain
[ "$CAP_RC" -eq 0 ] || fail "--drain of rq exited $CAP_RC: $CAP_ERR"
assert_eq "$(q "SELECT string_agg(job_id || ' ' || status || ' ' || attempts || ' ' || coalesce(last_error, '-'), ', ' ORDER BY job_id)
                 FROM walq.outcomes WHERE group_name = 'rg' AND job_id <> $fresh2")" \
    "$dead dead 3 gave up earlier, $cancelled cancelled 0 -, $done_ done 2 -" \
    "the outcomes recorded before the consumer read the jobs stand as they were"
assert_eq "$(q "SELECT count(*) FROM walq.outcome_batches WHERE group_name = 'rg'
                 AND job_ids && ARRAY[$dead, $cancelled, $done_]::bigint[]")" 0 \
    "no batch row records the three jobs a second time"
assert_eq "$(q "SELECT status || ' ' || attempts FROM walq.job_status WHERE consumer_group = 'rg' AND job_id = $fresh2")" \
    "dead 1" "job $fresh2, with no outcome before, ran: its statement failed and it is dead"
echo "$CAP_ERR" | grep -q "job $dead was recorded dead already; not run again" ||
    fail "the consumer does not say that job $dead was recorded already: $CAP_ERR"
pass "all"
