#!/usr/bin/env bash
# shellcheck disable=SC2016  # wait_for evals its condition later
# Dedup keys: unique among a queue's jobs that have not finished.  A duplicate
# publish returns the existing job's id, a duplicate INSERT or COPY inserts
# nothing, a finished job (in every group reading its queue) frees its key,
# and two sessions publishing one key at once make one job.
# shellcheck source=SCRIPTDIR/../lib/pgtest.sh
. "$(dirname "$0")/../lib/pgtest.sh"
require_walq
pg_start
walq init >/dev/null 2>&1

jobs_with_key() { # QUEUE KEY
    q "SELECT count(*) FROM walq.jobs WHERE queue = '$1' AND dedup_key = '$2'"
}

# walq.publish() twice with one key: one job, the same id both times.
a1=$(q "SELECT walq.publish('q', '{\"n\": 1}', dedup_key => 'k1')")
a2=$(q "SELECT walq.publish('q', '{\"n\": 2}', dedup_key => 'k1')")
assert_match "$a1" '^[0-9]+$' "walq.publish with a dedup key returns an id"
assert_eq "$a2" "$a1" "a duplicate walq.publish returns the existing job's id"
assert_eq "$(jobs_with_key q k1)" 1 "a duplicate walq.publish inserts nothing"
assert_eq "$(q "SELECT payload->>'n' FROM walq.jobs WHERE id = $a1")" 1 "the first payload is kept"

# The key is per queue; no key means no deduplication.
b1=$(q "SELECT walq.publish('other', '{}', dedup_key => 'k1')")
[ "$b1" != "$a1" ] || fail "the same key in another queue must make another job"
pass "the same key in another queue is another job"
n1=$(q "SELECT walq.publish('q', '{}')")
n2=$(q "SELECT walq.publish('q', '{}')")
[ "$n1" != "$n2" ] || fail "jobs without a key must never be deduplicated"
pass "jobs without a key are never deduplicated"

# The CLI.
capture walq publish --dedup-key k2 q '{"cli": 1}'
assert_eq "$CAP_RC" 0 "walq publish --dedup-key exits 0"
c1=$CAP_OUT
capture walq publish --dedup-key k2 q '{"cli": 2}'
assert_eq "$CAP_RC" 0 "a duplicate walq publish --dedup-key exits 0"
assert_eq "$CAP_OUT" "$c1" "a duplicate walq publish --dedup-key prints the existing job's id"
assert_eq "$(jobs_with_key q k2)" 1 "a duplicate walq publish --dedup-key inserts nothing"
capture walq publish --dedup-key k1 q '{}'
assert_eq "$CAP_OUT" "$a1" "walq publish sees keys taken with SQL"

# A plain INSERT and COPY of a duplicate insert nothing, and do not fail.
capture pg_psql -c "INSERT INTO walq.jobs (queue, payload, dedup_key) VALUES ('q', '{}', 'k1')"
assert_eq "$CAP_RC" 0 "a duplicate plain INSERT does not fail"
assert_eq "$(jobs_with_key q k1)" 1 "a duplicate plain INSERT inserts nothing"
assert_eq "$(q "WITH i AS (INSERT INTO walq.jobs (queue, dedup_key) VALUES ('q', 'k1'), ('q', 'k3'),
                                                                     ('q', 'k3') RETURNING id)
                SELECT count(*) FROM i")" 1 \
    "one INSERT of three rows, one a duplicate of an older job and two of each other: one row"
printf '{"line": %d}\n' 1 2 3 | walq publish --dedup-key k4 q 2>/dev/null
assert_eq "$(jobs_with_key q k4)" 1 "walq publish from stdin (COPY) with one key for three lines: one job"

# Finished jobs free their key: a job done in the one group reading its
# queue, a job done in both groups reading its queue, but not while one of
# them has not finished it.  (Each consumer run registers its group.)
drain() { # GROUP QUEUE...
    local group=$1 args=() qq
    shift
    for qq in "$@"; do args+=(--queue "$qq"); done
    walq_timeout 30 consume --group "$group" "${args[@]}" --drain --noop --quiet
}
drain g1 fin
drain g2 fin
s1=$(q "SELECT walq.publish('solo', '{}', dedup_key => 'ks')")
drain g3 solo
assert_eq "$(q "SELECT status FROM walq.job_status WHERE job_id = $s1")" "done" "the solo job is done"
s2=$(q "INSERT INTO walq.jobs (queue, dedup_key) VALUES ('solo', 'ks') RETURNING id")
if [ -z "$s2" ] || [ "$s2" = "$s1" ]; then
    fail "a plain INSERT must reuse a freed key (got '$s2')"
fi
pass "once the job is done in the one group reading its queue, a plain INSERT reuses its key"
assert_eq "$(q "SELECT walq.publish('solo', '{}', dedup_key => 'ks')")" "$s2" \
    "and the new job holds the key in turn"

d1=$(q "SELECT walq.publish('fin', '{}', dedup_key => 'kf')")
drain g1 fin
assert_eq "$(q "SELECT walq.publish('fin', '{}', dedup_key => 'kf')")" "$d1" \
    "a job done in one group of two still holds its key"
drain g2 fin
assert_eq "$(q "SELECT string_agg(status, ',' ORDER BY consumer_group) FROM walq.job_status
                 WHERE job_id = $d1")" "done,done" "the job is done in both groups"
d2=$(q "SELECT walq.publish('fin', '{\"again\": true}', dedup_key => 'kf')")
[ "$d2" != "$d1" ] || fail "a key whose job is done in every group must be free again (got $d2)"
pass "once the job is done in every group, walq.publish makes a new job with its key"
capture walq publish --dedup-key kf fin '{}'
assert_eq "$CAP_OUT" "$d2" "walq publish returns the new job"

# A cancelled job frees its key; retrying it takes the key back, or fails
# while another unfinished job holds it.  (In queue solo, read by g3 alone.)
e1=$(q "SELECT walq.publish('solo', '{}', dedup_key => 'kc')")
q "SELECT walq.cancel_job($e1)" >/dev/null
assert_eq "$(q "SELECT count(*) FROM walq.dedup_keys WHERE job_id = $e1")" 0 \
    "cancelling a job in the group reading its queue releases its key"
e2=$(q "SELECT walq.publish('solo', '{}', dedup_key => 'kc')")
[ "$e2" != "$e1" ] || fail "the key of a cancelled job must be free"
pass "the key of a cancelled job makes a new job"
capture walq job retry "$e1"
assert_eq "$CAP_RC" 1 "retrying a job whose key another unfinished job holds fails"
assert_match "$CAP_ERR" "ERROR:  dedup key \"kc\" of job $e1 is now held by job $e2" \
    "the error names the key and the job holding it"
assert_match "$CAP_ERR" "HINT:  Cancel job $e2" "the hint says what to do"
assert_eq "$(q "SELECT count(*) FROM walq.outcomes WHERE job_id = $e1 AND status = 'cancelled'")" 1 \
    "the failed retry changed nothing"
q "SELECT walq.cancel_job($e2)" >/dev/null
capture walq job retry "$e1"
assert_eq "$CAP_RC" 0 "once the holder is cancelled, the retry succeeds"
assert_eq "$(q "SELECT job_id FROM walq.dedup_keys WHERE queue = 'solo' AND dedup_key = 'kc'")" "$e1" \
    "the retried job holds its key again"
assert_eq "$(q "SELECT walq.publish('solo', '{}', dedup_key => 'kc')")" "$e1" \
    "a publish with the key returns the retried job"

# Two sessions at once.  The first holds its transaction open after
# publishing; the second publishes the same key, waits for the first to end,
# and gets its id, or makes the job if the first rolled back.
first_sleeping() {
    [ "$(q "SELECT count(*) FROM pg_stat_activity
             WHERE application_name = 'first' AND query LIKE '%pg_sleep%'")" = 1 ]
}
second_waiting() {
    [ "$(q "SELECT count(*) FROM pg_stat_activity
             WHERE application_name = 'second' AND wait_event_type = 'Lock'")" = 1 ]
}
concurrent() { # KEY END: the first session ends with END (COMMIT or ROLLBACK)
    local key=$1 end=$2 p1 p2
    bg env PGAPPNAME=first "$PGTEST_BINDIR/psql" -X -At -q -v ON_ERROR_STOP=1 \
        -c "BEGIN" -c "SELECT walq.publish('c', '{\"s\": 1}', dedup_key => '$key')" \
        -c "SELECT pg_sleep(3)" -c "$end" >"$WORK/first.$key"
    p1=$BG_PID
    wait_for first_sleeping 10 "the first session to publish"
    bg env PGAPPNAME=second "$PGTEST_BINDIR/psql" -X -At -q -v ON_ERROR_STOP=1 \
        -c "SELECT walq.publish('c', '{\"s\": 2}', dedup_key => '$key')" >"$WORK/second.$key"
    p2=$BG_PID
    wait_for second_waiting 10 "the second session to wait for the first"
    pass "the second session waits for the first ($key)"
    bg_wait "$p1" 20
    assert_eq "$BG_RC" 0 "the first session ran"
    bg_wait "$p2" 20
    assert_eq "$BG_RC" 0 "the second session ran"
}
concurrent kx COMMIT
assert_eq "$(head -n 1 "$WORK/second.kx")" "$(head -n 1 "$WORK/first.kx")" \
    "two sessions publishing one key at once get the same id"
assert_eq "$(jobs_with_key c kx)" 1 "two sessions publishing one key at once make one job"
concurrent ky ROLLBACK
assert_eq "$(jobs_with_key c ky)" 1 "when the first session rolls back, the second one makes the job"
assert_eq "$(q "SELECT id FROM walq.jobs WHERE queue = 'c' AND dedup_key = 'ky'")" \
    "$(head -n 1 "$WORK/second.ky")" "and the second session gets its id"

# Many at once, without arranging the order.
pids=()
for i in $(seq 1 12); do
    bg "$PGTEST_BINDIR/psql" -X -At -q -c "SELECT walq.publish('c', '{\"i\": $i}', dedup_key => 'kz')" >"$WORK/many.$i"
    pids+=("$BG_PID")
done
for p in "${pids[@]}"; do
    bg_wait "$p" 20
    [ "$BG_RC" -eq 0 ] || fail "a concurrent publish failed"
done
assert_eq "$(cat "$WORK"/many.* | sort -u | wc -l)" 1 "12 concurrent publishes of one key all return one id"
assert_eq "$(jobs_with_key c kz)" 1 "12 concurrent publishes of one key make one job"

# The consumer's ack releases the keys of the jobs it finishes, so that the
# table of keys stays as small as the set of unfinished jobs.  (Without it,
# a finished holder still loses its key, lazily, at the next claim.)
f1=$(q "SELECT walq.publish('fin', '{}', dedup_key => 'kr')")
drain g1 fin
assert_eq "$(q "SELECT count(*) FROM walq.dedup_keys WHERE job_id = $f1")" 1 \
    "a job done in one group of two keeps its key in walq.dedup_keys"
drain g2 fin
assert_eq "$(q "SELECT string_agg(status, ',' ORDER BY consumer_group) FROM walq.job_status
                 WHERE job_id = $f1")" "done,done" "another job is done in both groups"
assert_eq "$(q "SELECT count(*) FROM walq.dedup_keys WHERE job_id = $f1")" 0 \
    "the ack released the key of a job done in every group"
assert_eq "$(q "SELECT count(*) FROM walq.dedup_keys d WHERE walq.job_finished(d.job_id)")" 0 \
    "no key of a finished job is left in walq.dedup_keys"
pass "all"
