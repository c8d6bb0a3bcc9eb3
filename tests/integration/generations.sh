#!/usr/bin/env bash
# shellcheck disable=SC2016  # wait_for evals its condition later
# Exact records until retention, removed a generation at a time
# (sql/007_generations.sql): jobs done at their first attempt go into
# walq.outcome_batches, every other outcome into walq.outcomes, and nothing
# is inferred.  Every third of the retention a consumer closes the current
# generation; once its seal has reached every reader, it has been sealed
# for the retention and none of its jobs is unfinished, its partitions are
# dropped whole: no DELETE, no dead tuples.  Nothing runs twice for it: not
# after kill -9, not when the slot is lost and the group resynchronizes.
# A partitioned group's readers must all pass a seal; a job scheduled far
# ahead keeps its own generation, not the others.
# shellcheck source=SCRIPTDIR/../lib/pgtest.sh
. "$(dirname "$0")/../lib/pgtest.sh"
require_walq
pg_start
walq init
q "SELECT walq.set_retention('3 seconds')" >/dev/null

status_count() {
    q "SELECT count(*) FROM walq.job_status WHERE consumer_group = '$1' AND status = '$2'"
}
retired() { q "SELECT count(*) FROM walq.generations WHERE retired_at IS NOT NULL"; }
dead_tuples() {
    q "SELECT coalesce(sum(n_dead_tup), 0) FROM pg_stat_user_tables
        WHERE schemaname IN ('walq_jobs', 'walq_batches')"
}

# 1. A flow of 20,000 jobs through --noop while generations turn over.
bg "$WALQ_BIN" consume --group flow --queue fq --noop 2>"$WORK/flow.log"
pid=$BG_PID
wait_for 'slot_active walq_flow' 30 "the consumer to stream"
for _ in $(seq 1 20); do
    publish_sql fq 1000
    sleep 0.2
done
wait_for '[ "$(q "SELECT count(*) FROM walq.jobs WHERE queue = '"'fq'"'")" -eq 0 ]' 90 \
    "the 20000 jobs to be done and go with their generations"
gens=$(retired)
[ "$gens" -ge 2 ] || fail "the 20000 jobs went with $gens generation(s): no rotation happened"
pass "20000 jobs gone with $gens generations"
assert_eq "$(q "SELECT count(*) FROM walq.outcome_batches WHERE group_name = 'flow'")" 0 \
    "and their batches with them"
assert_eq "$(q "SELECT count(*) FROM walq.outcomes WHERE group_name = 'flow'")" 0 \
    "there was no outcome row for jobs done at their first attempt"
q "SELECT pg_stat_force_next_flush()" >/dev/null
sleep 1.5
assert_eq "$(dead_tuples)" 0 "no dead tuple in the jobs' and batches' partitions"
assert_eq "$(q "SELECT count(*) FROM pg_tables WHERE schemaname = 'walq_jobs'")" \
    "$(q "SELECT count(*) FROM walq.generations WHERE retired_at IS NULL")" \
    "one partition of walq.jobs per generation not retired"
kill -TERM "$pid"
bg_wait "$pid" 20
assert_eq "$BG_RC" 0 "SIGTERM: exit 0"
assert_match "$(cat "$WORK/flow.log")" '20000 received, 20000 done, 0 retried, 0 dead' \
    "the consumer ran each job once"

# 2. A handler that logs every run, dead jobs, kill -9 while generations
# turn; a long retention keeps the records to count, and the test turns the
# generations over itself.
q "SELECT walq.set_retention('1 hour')" >/dev/null
rotate() {
    q "UPDATE walq.generations SET opened_at = now() - interval '2 hours'
        WHERE generation = pg_sequence_last_value('walq.generation_seq')" >/dev/null
    q "SELECT walq.maintain()" >/dev/null
    q "SELECT walq.maintain()" >/dev/null
}
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
for _ in $(seq 1 10); do
    rotate
    sleep 0.2
done
wait_for '[ "$(done_count w)" -ge 1000 ]' 60 "1000 jobs done"
publish_sql wq 250
rotate
publish_sql wq 250
sleep 0.3
pg_psql -c "CREATE TABLE recorded AS SELECT job_id FROM ($(recorded_sql w)) r"
kill -KILL "$pid"
bg_wait "$pid" 10
runs_before=$(wc -l <"$WORK/ran.log")
pass "kill -9 with $(q "SELECT count(*) FROM recorded") jobs recorded, $runs_before runs so far"
wait_for '! slot_active walq_w' 20 "the slot to be released"
walq_timeout 120 consume --group w --queue wq --concurrency 4 --drain -- "$h"
pass "--drain after kill -9 exits 0"
assert_all_done_or_dead() {
    assert_eq "$(q "SELECT count(*), count(DISTINCT job_id) FROM ($(recorded_sql w)) r")" \
        "2000|2000" "group w: one outcome per job"
}
assert_all_done_or_dead
assert_eq "$(status_count w done)" "$(q "SELECT count(*) FROM walq.jobs WHERE queue = 'wq' AND NOT coalesce((payload->>'bad')::boolean, false)")" \
    "the good jobs still kept are done"
assert_eq "$(q "SELECT count(*) FROM walq.outcomes WHERE group_name = 'w' AND status = 'dead'")" 3 \
    "3 jobs dead (max_attempts 1), with their rows"
pg_psql -c "CREATE TABLE ran (id bigint)"
pg_psql -c "\\copy ran FROM '$WORK/ran.log'"
assert_eq "$(q "SELECT count(*) FROM (SELECT id FROM ran WHERE id IN (SELECT job_id FROM recorded)
                                       GROUP BY id HAVING count(*) > 1) x")" 0 \
    "no job recorded before the kill ran again"
assert_eq "$(q "SELECT count(DISTINCT id) FROM ran")" 2000 "every job ran"

# 3. The slot is lost: the resynchronization from walq.jobs runs nothing
# recorded, and a retried dead job runs again.
dead=$(q "SELECT min(job_id) FROM walq.outcomes WHERE group_name = 'w' AND status = 'dead'")
q "SELECT pg_drop_replication_slot('walq_w')" >/dev/null
runs_before=$(wc -l <"$WORK/ran.log")
walq job retry "$dead" >/dev/null
capture walq_timeout 60 consume --group w --queue wq --concurrency 4 --drain -- "$h"
assert_eq "$CAP_RC" 0 "--drain after the slot was dropped exits 0"
assert_match "$CAP_ERR" 'resynchronizing' "it resynchronized from walq.jobs"
assert_eq "$(tail -n +$((runs_before + 1)) "$WORK/ran.log" | tr '\n' ' ')" "$dead " \
    "only the retried job ran again"

# 4. A group split over two readers: a generation waits for both.
rotate
publish_sql pq 2000
walq_timeout 60 consume --group p --queue pq --partition 0/2 --noop --drain
q "UPDATE walq.generations SET opened_at = now() - interval '2 hours'
    WHERE generation = pg_sequence_last_value('walq.generation_seq')" >/dev/null
q "SELECT walq.set_retention('1 second')" >/dev/null
for _ in 1 2 3 4; do q "SELECT walq.maintain()" >/dev/null; sleep 0.4; done
pgen=$(q "SELECT max(generation) FROM walq.jobs WHERE queue = 'pq'")
assert_eq "$(q "SELECT sealed_at IS NOT NULL AND retired_at IS NULL FROM walq.generations
                 WHERE generation = $pgen")" t \
    "the generation of p's jobs is sealed, not retired: partition 1/2 has not read it"
walq_timeout 60 consume --group p --queue pq --partition 1/2 --noop --drain
walq_timeout 60 consume --group p --queue pq --partition 0/2 --noop --drain
for _ in $(seq 1 20); do
    q "SELECT walq.maintain()" >/dev/null
    [ "$(q "SELECT retired_at IS NOT NULL FROM walq.generations WHERE generation = $pgen")" = t ] &&
        break
    sleep 0.3
done
assert_eq "$(q "SELECT retired_at IS NOT NULL FROM walq.generations WHERE generation = $pgen")" t \
    "both readers passed its seal: the generation is retired"

# 5. A job scheduled far ahead keeps its generation; later ones still go.
rotate
q "SELECT walq.publish('sq', '{}', run_at => now() + interval '1 day')" >/dev/null
sgen=$(q "SELECT generation FROM walq.jobs WHERE queue = 'sq'")
publish_sql sq 10
bg "$WALQ_BIN" consume --group s --queue sq --noop 2>"$WORK/s.log"
pid=$BG_PID
wait_for '[ "$(done_count s)" -eq 10 ]' 30 "10 jobs done"
wait_for '[ "$(q "SELECT count(*) FROM walq.generations WHERE retired_at IS NOT NULL
                  AND generation > '"$sgen"'")" -ge 2 ]' 60 \
    "later generations to be retired"
assert_eq "$(q "SELECT status FROM walq.job_status WHERE consumer_group = 's'
                 AND job_id = (SELECT id FROM walq.jobs WHERE queue = 'sq' AND run_at > now())")" \
    scheduled "the scheduled job is still there, scheduled"
assert_eq "$(q "SELECT retired_at IS NULL FROM walq.generations WHERE generation = $sgen")" t \
    "its generation is kept"
kill -TERM "$pid"
bg_wait "$pid" 20
assert_eq "$BG_RC" 0 "SIGTERM: exit 0"
pass "all"
