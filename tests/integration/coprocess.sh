#!/usr/bin/env bash
# shellcheck disable=SC2016  # wait_for evals its condition later
# The coprocess handler (docs/coprocess.md) with examples/worker.py: many jobs
# through few long-lived workers, each job done once; ok:false replies retried
# until the job is dead with the worker's error; a worker that crashes is
# restarted and its in-flight jobs count as failed attempts; a job past
# --timeout gets its worker killed and fails with a timeout.
# shellcheck source=SCRIPTDIR/../lib/pgtest.sh
. "$(dirname "$0")/../lib/pgtest.sh"
require_walq
command -v python3 >/dev/null || fail "python3 is needed to run examples/worker.py"
worker=$WALQ_SOURCE_DIR/examples/worker.py
pg_start
walq init

count() {
    q "SELECT count(*) FROM ($(recorded_sql "$1")) r WHERE r.status = '$2'"
}
backoff=(--backoff-min 0.01 --backoff-max 0.05)

# 1. 2000 jobs through 2 workers with 8 jobs in flight each.
publish_sql bulk 2000
WORKER_LOG=$WORK/bulk.log bg "$WALQ_BIN" consume --group cp --queue bulk --coprocess \
    --concurrency 2 --coprocess-inflight 8 -- python3 "$worker"
p=$BG_PID
wait_for '[ "$(count cp done)" -eq 2000 ]' 60 "2000 jobs done"
kill -TERM "$p"
bg_wait "$p" 20
assert_eq "$BG_RC" 0 "the consumer exits 0 on SIGTERM"
assert_all_done cp '^bulk$' 2000
assert_eq "$(q "SELECT max(attempts) FROM walq.job_status WHERE consumer_group = 'cp'")" 1 \
    "every job done at its first attempt"
assert_eq "$(wc -l <"$WORK/bulk.log")" 2000 "the workers ran 2000 jobs"
assert_eq "$(cut -d' ' -f1 "$WORK/bulk.log" | sort -u | wc -l)" 2000 "each job ran once"
assert_eq "$(cut -d' ' -f3 "$WORK/bulk.log" | sort -u | tr '\n' ' ')" "1 2 " \
    "both workers (WALQ_WORKER 1 and 2) took jobs"
assert_eq "$(cut -d' ' -f4 "$WORK/bulk.log" | sort -u | wc -l)" 2 \
    "two worker processes ran them all: no restarts"
while read -r pid; do
    if kill -0 "$pid" 2>/dev/null; then
        fail "worker process $pid is still running after the consumer exited"
    fi
done < <(cut -d' ' -f4 "$WORK/bulk.log" | sort -u)
pass "the workers exited with the consumer"

# 2. ok:false replies, and crashes, each among ordinary jobs and each with a
# consumer of its own (both at once): a crash fails every job in flight on the
# worker, so it would also eat attempts of the ok:false jobs.  The crashes come
# first, so that ordinary jobs are in flight when a worker dies and the rest
# run on the restarted workers.
for _ in 1 2 3; do
    walq publish --max-attempts 2 failing '{"fail": true}' >/dev/null
done
publish_sql failing 50
for _ in 1 2; do
    walq publish --max-attempts 2 crashing '{"crash": true}' >/dev/null
done
publish_sql crashing 300
bg "$WALQ_BIN" consume --group cf --queue failing --coprocess --concurrency 2 \
    --coprocess-inflight 8 "${backoff[@]}" -- python3 "$worker"
p1=$BG_PID
WORKER_LOG=$WORK/crashing.log bg "$WALQ_BIN" consume --group cc --queue crashing --coprocess \
    --concurrency 2 --coprocess-inflight 8 "${backoff[@]}" -- python3 "$worker" \
    2>"$WORK/crashing.err"
p2=$BG_PID
wait_for '[ "$(count cf done)" -eq 50 ] && [ "$(count cf dead)" -eq 3 ]' 60 \
    "50 jobs done, 3 dead (ok:false)"
wait_for '[ "$(count cc done)" -eq 300 ] && [ "$(count cc dead)" -eq 2 ]' 60 \
    "300 jobs done, 2 dead (crashes)"
for p in "$p1" "$p2"; do
    kill -TERM "$p"
    bg_wait "$p" 20
    assert_eq "$BG_RC" 0 "the consumer exits 0 on SIGTERM"
done

res=$(q "SELECT count(*), count(DISTINCT o.job_id), min(o.attempts), max(o.attempts)
           FROM walq.outcomes o JOIN walq.jobs j ON j.id = o.job_id
          WHERE o.group_name = 'cf' AND j.payload = '{\"fail\": true}' AND o.status = 'dead'")
assert_eq "$res" "3|3|2|2" "ok:false with max_attempts 2: dead after 2 attempts"
err=$(q "SELECT last_error FROM walq.outcomes o JOIN walq.jobs j ON j.id = o.job_id
          WHERE o.group_name = 'cf' AND o.status = 'dead' LIMIT 1")
assert_match "$err" '^job [0-9]+ asked to fail$' "last_error is the worker's error ($err)"
assert_all_done_but() {
    q "SELECT count(*), count(DISTINCT o.job_id), max(s.attempts)
         FROM ($(recorded_sql "$1")) o JOIN walq.jobs j ON j.id = o.job_id
         JOIN walq.job_status s ON s.job_id = o.job_id AND s.consumer_group = '$1'
        WHERE j.payload ? 'n' AND o.status = 'done'"
}
assert_eq "$(assert_all_done_but cf)" "50|50|1" "the other 50 jobs each done once, at once"

res=$(q "SELECT count(*), count(DISTINCT o.job_id), min(o.attempts), max(o.attempts)
           FROM walq.outcomes o JOIN walq.jobs j ON j.id = o.job_id
          WHERE o.group_name = 'cc' AND j.payload = '{\"crash\": true}' AND o.status = 'dead'")
assert_eq "$res" "2|2|2|2" "a job that crashes its worker: dead after 2 attempts"
err=$(q "SELECT last_error FROM walq.outcomes WHERE group_name = 'cc' AND status = 'dead' LIMIT 1")
assert_match "$err" \
    '^coprocess worker [12] \(pid [0-9]+\) exited with exit status 1 while running the job$' \
    "last_error says the worker exited ($err)"
res=$(q "SELECT count(*), count(DISTINCT o.job_id)
           FROM ($(recorded_sql cc)) o JOIN walq.jobs j ON j.id = o.job_id
          WHERE j.payload ? 'n' AND o.status = 'done'")
assert_eq "$res" "300|300" "the other 300 jobs each done once"
assert_eq "$(count cc dead)" 2 "nothing else is dead"
assert_eq "$(cut -d' ' -f1 "$WORK/crashing.log" | sort -u | wc -l)" 300 "each ordinary job ran"
# Two workers at a time: more than two processes in all means restarts.
npids=$({
    cut -d' ' -f4 "$WORK/crashing.log"
    grep -oE '\(pid [0-9]+\) exited with exit status 1' "$WORK/crashing.err" | cut -d' ' -f2
} | tr -d ')' | sort -u | wc -l)
[ "$npids" -gt 2 ] || fail "the crashed workers were not restarted (only $npids worker processes)"
pass "crashed workers were restarted ($npids worker processes in all)"
assert_match "$(cat "$WORK/crashing.err")" \
    'coprocess worker [12] \(pid [0-9]+\) exited with exit status 1 with [0-9]+ jobs? in flight; restarting it' \
    "the consumer logs the crash and the restart"

# 3. A job past --timeout: its worker is killed and restarted, the job fails.
# Alone in its queue, since a job's clock starts when it is handed to a worker,
# start-up included, and a slow interpreter start could time out others too.
walq publish --max-attempts 1 slow '{"sleep": 60}' >/dev/null
bg "$WALQ_BIN" consume --group ct --queue slow --coprocess --concurrency 1 --timeout 2 \
    "${backoff[@]}" -- python3 "$worker" 2>"$WORK/slow.err"
p=$BG_PID
wait_for '[ "$(count ct dead)" -eq 1 ]' 60 "the sleeping job dead"
kill -TERM "$p"
bg_wait "$p" 20
assert_eq "$BG_RC" 0 "the consumer exits 0 on SIGTERM"
err=$(q "SELECT last_error FROM walq.outcomes WHERE group_name = 'ct' AND status = 'dead'")
assert_match "$err" '^timed out after 2 s; coprocess worker 1 \(pid [0-9]+\) was killed$' \
    "last_error says the job timed out ($err)"
assert_match "$(cat "$WORK/slow.err")" \
    'coprocess worker 1 \(pid [0-9]+\) was killed because job [0-9]+ on it timed out after 2 s with 1 job in flight; restarting it' \
    "the consumer logs the timeout and the restart"

# 4. A reply that does not parse, with no --timeout: the job does not stay in
# flight for ever.  The worker is killed and restarted, the jobs it had fail
# and are retried, and the garbling job ends dead after its attempts.
cat >"$WORK/garbler.py" <<'EOF_PY'
import json, sys
for line in sys.stdin:
    job = json.loads(line)
    if job["payload"].get("garble"):
        sys.stdout.write("this is not JSON \x1b[31m\n")
    else:
        sys.stdout.write(json.dumps({"id": job["id"], "ok": True}) + "\n")
    sys.stdout.flush()
EOF_PY
walq publish --max-attempts 2 garbled '{"garble": true}' >/dev/null
publish_sql garbled 20
bg "$WALQ_BIN" consume --group cg --queue garbled --coprocess --concurrency 1 \
    --coprocess-inflight 4 "${backoff[@]}" -- python3 "$WORK/garbler.py" 2>"$WORK/garbled.err"
p=$BG_PID
wait_for '[ "$(count cg done)" -eq 20 ] && [ "$(count cg dead)" -eq 1 ]' 60 \
    "20 jobs done, the garbling one dead"
kill -TERM "$p"
bg_wait "$p" 20
assert_eq "$BG_RC" 0 "the consumer exits 0 on SIGTERM"
err=$(q "SELECT last_error FROM walq.outcomes WHERE group_name = 'cg' AND status = 'dead'")
assert_match "$err" \
    '^coprocess worker 1 \(pid [0-9]+\) was killed because it sent an invalid reply \(invalid JSON\) while running the job$' \
    "last_error says the worker broke the protocol ($err)"
assert_match "$(cat "$WORK/garbled.err")" \
    'coprocess worker 1 \(pid [0-9]+\) sent an invalid reply \(invalid JSON\): "this is not JSON \?\[31m"; killing it' \
    "the consumer logs the bad line, sanitised"
pass "all"
