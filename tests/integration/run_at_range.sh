#!/usr/bin/env bash
# shellcheck disable=SC2016  # wait_for evals its condition later
# A job with an impossible run_at cannot stop its group (issue 11,
# scenario 1).
#   a. walq.jobs refuses a run_at outside 0001-01-01 .. 10000-01-01 UTC
#      (CHECK constraint jobs_run_at_range), through walq.publish and a
#      plain INSERT, with an error that names run_at; the edges inside pass.
#   b. Defence in depth, with that constraint dropped: jobs with run_at
#      'infinity', '294000-01-01', '-infinity' and a BC date, each in a
#      transaction with good jobs, on the backlog path (committed before the
#      group first starts) and on the stream path.  Each bad job ends dead
#      with a last_error that names run_at and never runs; every good job is
#      done, once; the consumer keeps running and exits 0 on SIGTERM; a
#      restart changes nothing.
# shellcheck source=SCRIPTDIR/../lib/pgtest.sh
. "$(dirname "$0")/../lib/pgtest.sh"
require_walq
pg_start
walq init

# ---- a. the table refuses them --------------------------------------------

capture q "SELECT walq.publish('ra', '{}', run_at => 'infinity')"
[ "$CAP_RC" -ne 0 ] ||
    fail "walq.publish(run_at => 'infinity') succeeded (job $CAP_OUT); it must be refused"
assert_match "$CAP_ERR" 'run_at' "walq.publish(run_at => 'infinity') fails, naming run_at"
for v in 'infinity' '-infinity' '0001-12-31 23:59:59.999999+00 BC' '0044-03-15 12:00:00+00 BC' \
    '10000-01-01 00:00:00+00' '294000-01-01 00:00:00+00'; do
    capture q "INSERT INTO walq.jobs (queue, payload, run_at) VALUES ('ra', '{}', '$v') RETURNING id"
    [ "$CAP_RC" -ne 0 ] || fail "INSERT with run_at '$v' succeeded (job $CAP_OUT); it must be refused"
    assert_match "$CAP_ERR" 'run_at' "INSERT with run_at '$v' fails, naming run_at"
done
for v in '0001-01-01 00:00:00+00' '9999-12-31 23:59:59.999999+00' 'now'; do
    capture q "BEGIN; INSERT INTO walq.jobs (queue, payload, run_at) VALUES ('ra', '{}', '$v'); ROLLBACK"
    assert_eq "$CAP_RC" 0 "INSERT with run_at '$v', inside the range, succeeds ($CAP_ERR)"
done

assert_eq "$(q "SELECT count(*) FROM pg_constraint
                 WHERE conrelid = 'walq.jobs'::regclass AND conname = 'jobs_run_at_range'
                   AND contype = 'c'")" 1 "the range is the CHECK constraint jobs_run_at_range of walq.jobs"

# ---- b. walq copes without the constraint ---------------------------------

q "SET client_min_messages = warning; ALTER TABLE walq.jobs DROP CONSTRAINT IF EXISTS jobs_run_at_range" >/dev/null
GROUP=rg
QUEUE=rq
BAD=('infinity' '294000-01-01 00:00:00+00' '-infinity' '0044-03-15 12:00:00+00 BC')

h=$(handler work.sh <<HANDLER
cat >/dev/null
echo "\$WALQ_JOB_ID" >>"$WORK/ran.log"
exit 0
HANDLER
)
touch "$WORK/ran.log"

# publish PATH: for each bad run_at, one transaction with it between two
# good jobs; then one transaction with all four between good jobs.
publish() {
    local path=$1 v sql
    for v in "${BAD[@]}"; do
        q "BEGIN;
           INSERT INTO walq.jobs (queue, payload) VALUES ('$QUEUE', '{\"good\": \"$path\"}');
           INSERT INTO walq.jobs (queue, payload, run_at) VALUES ('$QUEUE', '{\"bad\": \"$v\"}', '$v');
           INSERT INTO walq.jobs (queue, payload) VALUES ('$QUEUE', '{\"good\": \"$path\"}');
           COMMIT" >/dev/null
    done
    sql="BEGIN; INSERT INTO walq.jobs (queue, payload) VALUES ('$QUEUE', '{\"good\": \"$path\"}');"
    for v in "${BAD[@]}"; do
        sql+="INSERT INTO walq.jobs (queue, payload, run_at) VALUES ('$QUEUE', '{\"bad\": \"$v\"}', '$v');
              INSERT INTO walq.jobs (queue, payload) VALUES ('$QUEUE', '{\"good\": \"$path\"}');"
    done
    q "$sql COMMIT" >/dev/null
}

running() {
    kill -0 "$pid" 2>/dev/null && ! _pgtest_exited "$pid" && return 0
    bg_wait "$pid" 5
    fail "the consumer exited (status $BG_RC): $(tail -n 3 "$WORK/consumer.log")"
}
finished() {
    q "SELECT count(*) FROM walq.job_status WHERE consumer_group = '$GROUP'
          AND status IN ('done', 'dead', 'cancelled')"
}
jobs() { q "SELECT count(*) FROM walq.jobs WHERE queue = '$QUEUE'"; }

# check PATH: every job of the queue so far has its final outcome.
check() {
    local bad
    assert_eq "$(q "SELECT count(*) FROM walq.job_status s JOIN walq.jobs j ON j.id = s.job_id
                     WHERE s.consumer_group = '$GROUP' AND j.payload ? 'good'
                       AND s.status <> 'done'")" 0 "$1: every good job is done"
    while IFS='|' read -r id status err; do
        [ "$status" = dead ] || fail "$1: job $id ($(q "SELECT run_at FROM walq.jobs WHERE id = $id")) is $status, not dead"
        assert_match "$err" 'run_at' "$1: job $id with run_at $(q "SELECT run_at FROM walq.jobs WHERE id = $id") is dead: $err"
        [ "$(grep -cx "$id" "$WORK/ran.log" || true)" -eq 0 ] || fail "$1: the handler ran bad job $id"
    done < <(q "SELECT s.job_id, s.status, s.last_error FROM walq.job_status s JOIN walq.jobs j ON j.id = s.job_id
                 WHERE s.consumer_group = '$GROUP' AND j.payload ? 'bad' ORDER BY 1")
    bad=$(q "SELECT count(*) FROM walq.jobs WHERE queue = '$QUEUE' AND payload ? 'bad'")
    pass "$1: the $bad bad jobs are dead, none ran"
    assert_eq "$(sort -n "$WORK/ran.log" | paste -sd' ')" \
        "$(q "SELECT string_agg(id::text, ' ' ORDER BY id) FROM walq.jobs
               WHERE queue = '$QUEUE' AND payload ? 'good'")" \
        "$1: the handler ran once for each good job, and for nothing else"
}

# The backlog path: committed before the group first starts.
publish backlog
bg "$WALQ_BIN" consume --group "$GROUP" --queue "$QUEUE" --concurrency 2 -- "$h" \
    2>"$WORK/consumer.log"
pid=$BG_PID
wait_for 'running && [ "$(finished)" -eq "$(jobs)" ]' 30 "the backlog's $(jobs) jobs to finish"
check "backlog"

# The stream path.
wait_for 'running && slot_active walq_$GROUP' 30 "the consumer to stream"
publish stream
wait_for 'running && [ "$(finished)" -eq "$(jobs)" ]' 30 "the streamed jobs to finish too"
check "stream"

sleep 5
running
pass "the consumer still runs 5 s later"
kill -TERM "$pid"
bg_wait "$pid" 20
assert_eq "$BG_RC" 0 "SIGTERM: the consumer exits 0"

# A restart changes nothing.
snapshot() {
    q "SELECT job_id, status, attempts, last_error, updated_at FROM walq.job_status
        WHERE consumer_group = '$GROUP' ORDER BY job_id"
}
before=$(snapshot)
runs=$(wc -l <"$WORK/ran.log")
capture walq_timeout 60 consume --group "$GROUP" --queue "$QUEUE" --drain -- "$h"
assert_eq "$CAP_RC" 0 "a restart with --drain exits 0 ($CAP_ERR)"
if grep -E 'ERROR' <<<"$CAP_ERR"; then
    fail "the restart logged an error"
fi
assert_eq "$(snapshot)" "$before" "after the restart walq.job_status is the same"
assert_eq "$(wc -l <"$WORK/ran.log")" "$runs" "after the restart no job ran again"
pass "all"
