#!/usr/bin/env bash
# shellcheck disable=SC2016  # wait_for evals its condition later; $1 and $2 are SQL parameters
# The sql handler: `walq consume --sql STATEMENT` runs STATEMENT ($1 the
# payload, $2 the job id) in the ack transaction, so its effects happen
# exactly once.
#   1. 5000 jobs published while the consumer runs; kill -9 of the consumer
#      4 times and a server crash at random moments, and a fifth kill -9
#      inside an ack transaction (the INSERT waiting for a lock); then
#      --drain.  The
#      results table (no unique constraint, so a duplicate would show) has
#      exactly one row per job, and each job one outcome, done.
#   2. A statement that fails for one job (a CHECK constraint) fails that job
#      alone: it is retried up to its max_attempts, then dead with the error
#      as last_error, while the other jobs of its batch commit.
#
# The moments are random; WALQ_TEST_SEED=N replays a run's choices.
# shellcheck source=SCRIPTDIR/../lib/pgtest.sh
. "$(dirname "$0")/../lib/pgtest.sh"
require_walq
pg_start
walq init

SEED=${WALQ_TEST_SEED:-$$}
RANDOM=$SEED
echo "seed: $SEED (WALQ_TEST_SEED=$SEED replays the kill moments)"

q "CREATE TABLE results (
       job_id  bigint NOT NULL,
       payload jsonb  NOT NULL,
       CONSTRAINT results_not_bad CHECK (NOT coalesce((payload->>'bad')::boolean, false)))"
SQL='INSERT INTO results (job_id, payload) VALUES ($2, $1)'

# ---- 1. exactly once under kill -9 and a server crash --------------------

N=5000
QUEUE=sq
GROUP=sg

# The producer: transactions of varied sizes, a pause between them, until N
# jobs are published.  A transaction that fails while the server is down is
# tried again; walq.jobs, not the producer, is what the assertions count.
cat >"$WORK/producer.sh" <<PRODUCER
#!/usr/bin/env bash
set -uo pipefail
sizes=(1 300 17 450 2 120 600 9 250 60)
i=0 sent=0
while [ "\$sent" -lt $N ]; do
    s=\${sizes[i % \${#sizes[@]}]}
    [ \$((sent + s)) -le $N ] || s=\$(($N - sent))
    if "$PGTEST_BINDIR/psql" -X -q -v ON_ERROR_STOP=1 -c \\
        "INSERT INTO walq.jobs (queue, payload)
         SELECT '$QUEUE', jsonb_build_object('txn', \$i, 'n', g, 's', repeat('y', g % 20))
           FROM generate_series(1, \$s) g" >/dev/null 2>&1; then
        sent=\$((sent + s))
        i=\$((i + 1))
        sleep 0.3
    else
        sleep 0.2
    fi
done
PRODUCER
chmod 0755 "$WORK/producer.sh"

consumer_gone() {
    ! slot_active "walq_$GROUP" &&
        [ "$(q "SELECT count(*) FROM walq.readers WHERE walq.reader_held(slot_name)")" = 0 ]
}

# atomic WHAT: the handler's rows and the outcomes committed together: a
# row in results for each job done, and for no other job.
atomic() {
    local res
    res=$(q "SELECT count(*) FILTER (WHERE o.job_id IS NULL), count(*) FILTER (WHERE r.job_id IS NULL),
                    count(*)
               FROM results r
               FULL JOIN (SELECT job_id FROM ($(recorded_sql "$GROUP")) x
                           WHERE x.status = 'done') o ON o.job_id = r.job_id")
    [ "${res%|*}" = "0|0" ] ||
        fail "$1: results and outcomes disagree (rows without a done outcome | done without a row | all: $res)"
    pass "$1: ${res##*|} result rows, one for each job done"
}

start_consumer() {
    bg "$WALQ_BIN" consume --group "$GROUP" --queue "$QUEUE" --sql "$SQL" \
        2>>"$WORK/consumer.log"
    pid=$BG_PID
}

start_consumer
wait_for "slot_active walq_$GROUP" 30 "the consumer to stream"
bg "$WORK/producer.sh"
producer=$BG_PID

# Event k happens at a random count of done jobs between k and k + 1/2
# sevenths of N, after a random extra 0 to 0.29 s.  Event 3 is a crash of
# the server, the others a kill -9 of the consumer.
for k in 1 2 3 4 5; do
    target=$((k * N / 7 + RANDOM % (N / 14)))
    wait_for '[ "$(done_count '"$GROUP"')" -ge '"$target"' ]' 60 "$target jobs done (event $k)"
    sleep "0.$((RANDOM % 30))"
    kill -0 "$pid" 2>/dev/null || fail "the consumer exited on its own before event $k"
    if [ "$k" -eq 3 ]; then
        pg_crash
        pass "server crash with $(done_count "$GROUP") of $N jobs done"
        kill -0 "$pid" 2>/dev/null || fail "the consumer exited when the server crashed"
        wait_for "slot_active walq_$GROUP" 30 "the consumer to stream again after the crash"
        continue
    fi
    kill -KILL "$pid"
    bg_wait "$pid" 10
    done_now=$(done_count "$GROUP")
    [ "$done_now" -lt "$N" ] || fail "every job was done before kill $k; the test proves nothing"
    wait_for consumer_gone 20 "the killed consumer's slot and session to be released"
    atomic "kill -9 with $done_now of $N jobs done"
    start_consumer
done
bg_wait "$producer" 60

# And once more, at a moment known to be inside an ack transaction: the
# handler's INSERT waits for a lock on results held by another session when
# the consumer is killed.  The transaction is rolled back, the statement's
# row with it.  (The consumer must be past its set-up first: preparing the
# statement would wait for the lock too.)
wait_for "slot_active walq_$GROUP" 30 "the consumer to stream"
PGAPPNAME=locker bg "$PGTEST_BINDIR/psql" -X -q -c \
    "BEGIN; LOCK TABLE results IN SHARE MODE; SELECT pg_sleep(120)" >/dev/null 2>&1
locker=$BG_PID
wait_for '[ "$(q "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation
                  WHERE c.relname = '"'results'"' AND l.mode = '"'ShareLock'"' AND l.granted")" = 1 ]' \
    20 "the lock on results"
publish_sql "$QUEUE" 10
wait_for '[ "$(q "SELECT count(*) FROM pg_stat_activity
                  WHERE wait_event_type = '"'Lock'"' AND query LIKE '"'%run_sql%'"'")" -ge 1 ]' \
    20 "the sql handler to wait for the lock in its ack transaction"
kill -KILL "$pid"
bg_wait "$pid" 10
q "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'locker'" >/dev/null
bg_wait "$locker" 20
wait_for consumer_gone 20 "the killed consumer's slot and session to be released"
assert_match "$(cat "$PGTEST_DIR/server.log")" \
    'unexpected EOF on client connection with an open transaction|could not send data to client' \
    "the server saw the killed consumer's ack transaction cut"
atomic "kill -9 inside an ack transaction, with $(done_count "$GROUP") jobs done"
n=$(q "SELECT count(*) FROM walq.jobs WHERE queue = '$QUEUE'")
pass "$n jobs published"

capture walq_timeout 120 consume --group "$GROUP" --queue "$QUEUE" --sql "$SQL" --drain
printf '%s\n' "$CAP_ERR" >>"$WORK/consumer.log"
[ "$CAP_RC" -eq 0 ] || fail "--drain exited $CAP_RC: $CAP_ERR"
pass "--drain after 5 kill -9 and a server crash exits 0"

assert_all_done "$GROUP" "^$QUEUE\$" "$n"
assert_eq "$(q "SELECT count(*), count(DISTINCT r.job_id), count(j.id)
                  FROM results r LEFT JOIN walq.jobs j ON j.id = r.job_id AND j.queue = '$QUEUE'")" \
    "$n|$n|$n" "results: $n rows, one per job, each for a job of the queue"
assert_eq "$(q "SELECT count(*) FROM walq.jobs j
                 WHERE j.queue = '$QUEUE'
                   AND NOT EXISTS (SELECT 1 FROM results r WHERE r.job_id = j.id AND r.payload = j.payload)")" \
    0 "results: every job has its row, with its payload"

# ---- 2. a failing statement fails its job alone --------------------------

bg "$WALQ_BIN" consume --group sbg --queue sb --sql "$SQL" --concurrency 4 \
    --backoff-min 0.01 --backoff-max 0.05 2>"$WORK/sb.log"
pid=$BG_PID
wait_for "slot_active walq_sbg" 30 "the consumer of sb to stream"
# One transaction, so one stream transaction: 30 jobs, 3 of them bad.
for i in $(seq 1 30); do
    if [ $((i % 10)) -eq 3 ]; then
        echo "{\"n\": $i, \"bad\": true}"
    else
        echo "{\"n\": $i, \"bad\": false}"
    fi
done | walq publish --max-attempts 2 sb >/dev/null
count_sb() { q "SELECT count(*) FROM ($(recorded_sql sbg)) r WHERE r.status = '$1'"; }
wait_for '[ "$(count_sb done)" -eq 27 ] && [ "$(count_sb dead)" -eq 3 ]' 30 "27 jobs done and 3 dead"
kill -TERM "$pid"
bg_wait "$pid" 20
assert_eq "$BG_RC" 0 "SIGTERM: exit 0"

assert_eq "$(q "SELECT count(*), min(o.attempts), max(o.attempts) FROM walq.job_status o
                  JOIN walq.jobs j ON j.id = o.job_id
                 WHERE o.consumer_group = 'sbg' AND o.status = 'done' AND j.payload->>'bad' = 'false'")" \
    "27|1|1" "the good jobs of the batch are done at the first attempt"
assert_eq "$(q "SELECT count(*), min(o.attempts), max(o.attempts) FROM walq.outcomes o
                  JOIN walq.jobs j ON j.id = o.job_id
                 WHERE o.group_name = 'sbg' AND o.status = 'dead' AND j.payload->>'bad' = 'true'")" \
    "3|2|2" "the bad jobs are dead after max_attempts 2"
err=$(q "SELECT last_error FROM walq.outcomes WHERE group_name = 'sbg' AND status = 'dead' LIMIT 1")
assert_match "$err" 'violates check constraint "results_not_bad"' "last_error holds the server's error ($err)"
assert_eq "$(q "SELECT count(*), count(DISTINCT r.job_id), bool_and(j.payload->>'bad' = 'false')
                  FROM results r JOIN walq.jobs j ON j.id = r.job_id WHERE j.queue = 'sb'")" \
    "27|27|t" "results: one row for each good job, none for the bad ones"
assert_eq "$(q "SELECT count(*) FROM walq.job_status WHERE consumer_group = 'sbg' AND status = 'dead'
                 AND last_error LIKE '%results_not_bad%'")" 3 "job_status lists the 3 dead jobs with their error"
pass "all"
