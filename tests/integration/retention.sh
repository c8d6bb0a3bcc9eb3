#!/usr/bin/env bash
# shellcheck disable=SC2016  # wait_for evals its condition later
# Finished jobs and their records are removed after the retention, without
# bloat (issue 11, "Retention"); the retention counts from when a job
# finished.  With a retention of 4 s: one job scheduled
# an hour ahead, then 500 jobs done at their first attempt and one dead.
# Within a minute walq.jobs holds only the scheduled job, which is still
# scheduled; no row of walq.outcomes or walq.outcome_batches refers to the
# others; the space they took is given back; and the tables that hold jobs
# and outcomes have no dead tuple, before or after the removal (autovacuum
# is off, so that none is hidden, and the statistics are reset once the
# set-up is done, so that only consuming and removal count).  Rows, bytes
# and dead tuples are printed before, during and after.
#
# The scheduled job is published more than the retention before the others:
# a walq that removes jobs by dropping whole partitions keeps the partition
# of an unfinished job, so the two must not share one.
#
# Dead tuples are counted in the tables whose rows come with jobs: walq.jobs,
# walq.outcomes, walq.outcome_batches and walq.dedup_keys, their partitions,
# and every table of the schemas walq_* (where partitions live).  The other
# tables of schema walq are bookkeeping rewritten in place by design (a
# cursor per ack, a row per group, per generation, per command, the
# settings), bounded by the number of groups rather than of jobs: their dead
# tuples are printed, not counted.
# shellcheck source=SCRIPTDIR/../lib/pgtest.sh
. "$(dirname "$0")/../lib/pgtest.sh"
require_walq
pg_start "autovacuum = off"
walq init

GROUP=rg
QUEUE=rq

capture q "SELECT walq.set_retention('4 seconds')"
[ "$CAP_RC" -eq 0 ] || fail "walq.set_retention('4 seconds') failed: $CAP_ERR"
pass "walq.set_retention('4 seconds')"
capture q "SELECT retention = interval '4 seconds' FROM walq.settings"
[ "$CAP_RC" -eq 0 ] || fail "SELECT retention FROM walq.settings failed: $CAP_ERR"
assert_eq "$CAP_OUT" t "walq.settings shows the retention: 4 seconds"

h=$(handler work.sh <<HANDLER
payload=\$(cat)
echo "\$WALQ_JOB_ID" >>"$WORK/ran.log"
case \$payload in *fail*) echo "this job fails" >&2; exit 1 ;; esac
exit 0
HANDLER
)

# The tables of every schema of walq's (walq, and any walq_* it makes), and
# those of them that hold jobs and outcomes.
TABLES="pg_stat_user_tables WHERE schemaname LIKE 'walq%'"
HOT_SET="(SELECT relid FROM pg_partition_tree('walq.jobs') UNION SELECT relid FROM pg_partition_tree('walq.outcomes')
          UNION SELECT relid FROM pg_partition_tree('walq.outcome_batches')
          UNION SELECT relid FROM pg_partition_tree('walq.dedup_keys')
          UNION SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                 WHERE n.nspname LIKE 'walq\_%')"
HOT="$TABLES AND relid IN $HOT_SET"
storage() {
    q "SELECT (SELECT count(*) FROM walq.jobs) || ' rows in walq.jobs, '
           || (SELECT count(*) FROM walq.outcomes) || ' in walq.outcomes, '
           || (SELECT count(*) FROM walq.outcome_batches) || ' in walq.outcome_batches; '
           || pg_size_pretty(sum(pg_total_relation_size(relid))) || ' ('
           || sum(pg_total_relation_size(relid)) || ' bytes) in ' || count(*)
           || ' tables of schemas walq*; '
           || coalesce(sum(n_dead_tup) FILTER (WHERE relid IN $HOT_SET), 0)
           || ' dead tuples, and '
           || coalesce(sum(n_dead_tup) FILTER (WHERE relid NOT IN $HOT_SET), 0)
           || ' in the bookkeeping tables'
         FROM $TABLES"
}
bytes() { q "SELECT sum(pg_total_relation_size(relid)) FROM $TABLES"; }

# no_dead_tuples WHEN: once the statistics of the server processes are
# flushed (the consumer's within a second while it works, and at its exit),
# the sum of n_dead_tup over the tables of jobs and outcomes is 0.
no_dead_tuples() {
    q "SELECT pg_stat_force_next_flush()" >/dev/null
    sleep 1.5
    local dead
    echo "$1: dead tuples (table: dead, updated, deleted): $(q "SELECT string_agg(relid::regclass::text || ': ' || n_dead_tup || ', ' || n_tup_upd || ', ' || n_tup_del, '; ' ORDER BY relid::regclass::text) FROM $TABLES")"
    dead=$(q "SELECT coalesce(sum(n_dead_tup), 0) FROM $HOT")
    [ "$dead" -eq 0 ] ||
        fail "$1: $dead dead tuples in the tables of jobs and outcomes (table: dead, updated, deleted): $(q "SELECT string_agg(relid::regclass::text || ': ' || n_dead_tup || ', ' || n_tup_upd || ', ' || n_tup_del, '; ' ORDER BY relid::regclass::text) FROM $HOT AND n_dead_tup > 0")"
    pass "$1: no dead tuple in the tables of jobs and outcomes"
}

echo "before: $(storage)"
base=$(bytes)
# Only what consuming and removal do counts from here on.
q "SELECT pg_stat_reset()" >/dev/null

bg "$WALQ_BIN" consume --group "$GROUP" --queue "$QUEUE" --concurrency 4 -- "$h" \
    2>"$WORK/consumer.log"
pid=$BG_PID
running() {
    if ! kill -0 "$pid" 2>/dev/null || _pgtest_exited "$pid"; then
        fail "the consumer exited: $(tail -n 5 "$WORK/consumer.log")"
    fi
}
wait_for "running && slot_active walq_$GROUP" 30 "the consumer to stream"

later=$(q "SELECT walq.publish('$QUEUE', '{\"later\": true}', run_at => now() + interval '1 hour')")
wait_for 'running && [ "$(q "SELECT status FROM walq.job_status WHERE consumer_group = '"'$GROUP'"' AND job_id = $later")" = scheduled ]' \
    20 "job $later to be scheduled"
sleep 5 # more than the retention

# 500 jobs of 1.8 kB each (stored as they are: below the size at which
# PostgreSQL compresses a row), so that the space they take is plain to see.
q "INSERT INTO walq.jobs (queue, payload, max_attempts)
   SELECT '$QUEUE', jsonb_build_object('n', g, 'pad', repeat('p', 1800)), 1
     FROM generate_series(1, 500) g" >/dev/null
lo=$(q "SELECT min(id) FROM walq.jobs WHERE id > $later")
dead=$(q "SELECT walq.publish('$QUEUE', '{\"fail\": true}', max_attempts => 1)")
hi=$(q "SELECT max(id) FROM walq.jobs")
echo "published: $(storage)"
status_counts() {
    q "SELECT count(*) FILTER (WHERE status = 'done') || ' ' || count(*) FILTER (WHERE status = 'dead')
              || ' ' || count(*) FILTER (WHERE status = 'scheduled')
         FROM walq.job_status WHERE consumer_group = '$GROUP'"
}
# Every job has its outcome, or it was removed already: the 500 and the dead
# one ran.
ran_all() { [ "$(sort -u "$WORK/ran.log" 2>/dev/null | wc -l)" -eq 501 ]; }
wait_for 'running && ran_all' 60 "the handler to run the 501 jobs due"
peak=$(bytes)
echo "during: $(storage); job_status: $(status_counts) (done dead scheduled)"
no_dead_tuples "once the jobs ran"

# Removal: within a minute walq.jobs holds only the scheduled job.
last=""
gone() {
    local now
    now=$(storage)
    [ "$now" = "$last" ] || echo "  $(date +%T) $now"
    last=$now
    [ "$(q "SELECT string_agg(id::text, ',') FROM walq.jobs")" = "$later" ]
}
wait_for 'running && gone' 60 "walq.jobs to hold only the scheduled job $later"
pass "the 500 done jobs and the dead one are gone from walq.jobs"
assert_eq "$(q "SELECT count(*) FROM walq.outcomes WHERE job_id BETWEEN $lo AND $hi")" 0 \
    "no row of walq.outcomes refers to a removed job"
assert_eq "$(q "SELECT count(*) FROM walq.outcome_batches b
                 WHERE EXISTS (SELECT 1 FROM unnest(b.job_ids) x WHERE x BETWEEN $lo AND $hi)")" 0 \
    "no row of walq.outcome_batches refers to a removed job"
assert_eq "$(q "SELECT status FROM walq.job_status WHERE consumer_group = '$GROUP' AND job_id = $later")" \
    scheduled "the job an hour ahead is still scheduled"

# The retention counts from when a job finished, not from its generation's
# seal: a job due 10 s ahead finishes well after its generation was sealed
# (a generation lasts a third of the retention), and is kept for the
# retention after that.  Before, it went at the first round after it ran.
late=$(q "SELECT walq.publish('$QUEUE', '{\"late\": true}', run_at => now() + interval '10 seconds')")
late_gen=$(q "SELECT generation FROM walq.jobs WHERE id = $late")
wait_for 'running && [ "$(q "SELECT sealed_at IS NOT NULL FROM walq.generations WHERE generation = $late_gen")" = t ]' \
    20 "generation $late_gen, of job $late, to be sealed"
late_status() {
    q "SELECT status FROM walq.job_status WHERE consumer_group = '$GROUP' AND job_id = $late"
}
wait_for 'running && [ "$(late_status)" = done ]' 30 "job $late to be done"
sleep 2
assert_eq "$(late_status)" done \
    "2 s after job $late finished (its generation sealed long before), its record is still there"
wait_for 'running && [ -z "$(q "SELECT id FROM walq.jobs WHERE id = $late")" ]' 30 \
    "job $late to be removed once the retention passed after it finished"
pass "job $late was kept for the retention after it finished, then removed"
kill -TERM "$pid"
bg_wait "$pid" 20
assert_eq "$BG_RC" 0 "SIGTERM: the consumer exits 0"
assert_eq "$(sort "$WORK/ran.log" | uniq -d | wc -l)" 0 "no job ran twice"
echo "after: $(storage)"
no_dead_tuples "after the removal"
after=$(bytes)
[ "$after" -lt "$peak" ] ||
    fail "the removed jobs' space was not given back: $after bytes after the removal, $peak bytes once they ran ($base before)"
pass "storage: $base bytes before, $peak once the jobs ran, $after after the removal"
pass "all"
