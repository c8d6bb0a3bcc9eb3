#!/usr/bin/env bash
# shellcheck disable=SC2016  # wait_for evals its condition later
# Nothing is reported done that has not run, however the job got its id
# (issue 11, scenario 3).  Jobs whose ids are not in commit order:
#   1. the issue's reproduction: X = nextval; other jobs published and
#      consumed for over 5 s; the consumer stopped; job X inserted with
#      that id: it is queued, and after its slot is dropped the
#      resynchronization runs it, once;
#   2. explicit ids below the ids in use (the sequence restarted at 1000
#      first), inserted while the consumer runs and while it is stopped;
#   3. an explicit id far above the sequence (10^12);
#   4. a sequence with CACHE 20 used by two sessions: session A draws an id
#      (and with it 19 more into its cache), session B's jobs flow and are
#      consumed for over 5 s, then session A inserts 5 jobs whose ids come
#      from its cache, below all of B's.
# Throughout, a sampler reads walq.job_status: no job may read done before
# its handler ran.  At the end every job ran exactly once and is done.
# shellcheck source=SCRIPTDIR/../lib/pgtest.sh
. "$(dirname "$0")/../lib/pgtest.sh"
require_walq
pg_start
walq init

GROUP=e
QUEUE=eq
SEQ="pg_get_serial_sequence('walq.jobs', 'id')"
# Ids below 1000 are never drawn: free for the explicit ids of part 2.
q "SELECT setval($SEQ, 1000, false)" >/dev/null

# The jobs of interest take a second before they log their run, so that a
# status that runs ahead of them shows for a while.
h=$(handler work.sh <<HANDLER
case \$(cat) in *slow*) sleep 1 ;; esac
echo "\$WALQ_JOB_ID" >>"$WORK/ran.log"
exit 0
HANDLER
)
touch "$WORK/ran.log" "$WORK/violations"

# The sampler: every 0.2 s, the jobs walq.job_status says are done, then the
# handler's log.  A job done in the first and missing from the second was
# reported done before its handler ran (the handler logs before it exits).
cat >"$WORK/sampler.sh" <<SAMPLER
#!/usr/bin/env bash
while :; do
    if "$PGTEST_BINDIR/psql" -X -At -q -c "SELECT job_id FROM walq.job_status
            WHERE consumer_group = '$GROUP' AND status = 'done'" >"$WORK/sample.done" 2>/dev/null; then
        LC_ALL=C sort -u "$WORK/ran.log" >"$WORK/sample.ran"
        LC_ALL=C sort -u "$WORK/sample.done" | LC_ALL=C comm -23 - "$WORK/sample.ran" |
            sed "s/^/\$(date +%T.%N) /" >>"$WORK/violations"
    fi
    sleep 0.2
done
SAMPLER
chmod 0755 "$WORK/sampler.sh"
bg "$WORK/sampler.sh"

no_violation() {
    if [ -s "$WORK/violations" ]; then
        fail "$1: walq.job_status said done before the handler ran (time, job id): $(head -n 10 "$WORK/violations" | paste -sd, -)"
    fi
    pass "$1: no job read done before its handler ran"
}

status_of() {
    q "SELECT string_agg(status, ',') FROM walq.job_status WHERE consumer_group = '$GROUP' AND job_id = $1"
}
runs_of() { grep -cx "$1" "$WORK/ran.log" || true; }
# not_early ID...: right after the jobs committed, none reads done unless
# its handler has run.
not_early() {
    local id st
    for id in "$@"; do
        st=$(status_of "$id")
        [ "$st" != "done" ] || [ "$(runs_of "$id")" -ge 1 ] ||
            fail "job $id reads done in walq.job_status right after its insert, before its handler ran"
    done
    pass "jobs $*: none reads done before its handler ran"
}

start_consumer() {
    bg "$WALQ_BIN" consume --group "$GROUP" --queue "$QUEUE" --concurrency 4 -- "$h" \
        2>>"$WORK/consumer.log"
    pid=$BG_PID
    wait_for "running && slot_active walq_$GROUP" 30 "the consumer to stream"
}
stop_consumer() {
    kill -TERM "$pid"
    bg_wait "$pid" 20
    assert_eq "$BG_RC" 0 "the consumer exits 0 on SIGTERM"
}
running() {
    if ! kill -0 "$pid" 2>/dev/null || _pgtest_exited "$pid"; then
        fail "the consumer exited: $(tail -n 5 "$WORK/consumer.log")"
    fi
}
done_jobs() {
    q "SELECT count(*) FROM walq.job_status WHERE consumer_group = '$GROUP' AND status = 'done'"
}
queue_jobs() { q "SELECT count(*) FROM walq.jobs WHERE queue = '$QUEUE'"; }

# flow SECONDS: jobs published, 20 at a time every 0.25 s, for at least
# SECONDS, with the consumer running; then waits until all are done.
flow() {
    local until=$((SECONDS + $1))
    while [ "$SECONDS" -lt "$until" ]; do
        publish_sql "$QUEUE" 20
        sleep 0.25
    done
    wait_for 'running && [ "$(done_jobs)" -eq "$(queue_jobs)" ]' 30 "every job published so far done"
}

# ---- 1. X = nextval, committed after the consumer has moved on ----------

x=$(q "SELECT nextval($SEQ)")
pass "X = $x drawn from the sequence"
start_consumer
flow 6
stop_consumer
q "INSERT INTO walq.jobs (id, queue, payload) VALUES ($x, '$QUEUE', '{\"early\": true, \"slow\": true}')" >/dev/null
assert_eq "$(runs_of "$x")" 0 "job $x has not run"
assert_eq "$(status_of "$x")" queued "walq.job_status: job $x, committed while the consumer was stopped, is queued"
q "SELECT pg_drop_replication_slot('walq_$GROUP')" >/dev/null
capture walq_timeout 60 consume --group "$GROUP" --queue "$QUEUE" --concurrency 4 --drain -- "$h"
printf '%s\n' "$CAP_ERR" >>"$WORK/consumer.log"
[ "$CAP_RC" -eq 0 ] || fail "--drain after the slot was dropped exited $CAP_RC: $CAP_ERR"
assert_eq "$(runs_of "$x")" 1 "after the slot was dropped, the resynchronization ran job $x once"
assert_eq "$(status_of "$x")" "done" "job $x is done"
no_violation "part 1"

# ---- 2, 3, 4: explicit ids below and far above, a cached sequence --------

# Session A: one psql session that lives on, fed through a FIFO.
mkfifo "$WORK/a.sql"
bg "$PGTEST_BINDIR/psql" -X -At -q -v ON_ERROR_STOP=1 -f "$WORK/a.sql" >"$WORK/a.out" 2>&1
sess_a=$BG_PID
exec 7>"$WORK/a.sql"
na=0
# in_a SQL: runs SQL in session A; its output is left in A_OUT.
in_a() {
    local before
    before=$(wc -l <"$WORK/a.out")
    na=$((na + 1))
    printf '%s\n\\echo end-of-%s\n' "$1" "$na" >&7
    wait_for 'grep -qx "end-of-'"$na"'" "$WORK/a.out" || ! kill -0 '"$sess_a"' 2>/dev/null' 20 \
        "session A to run: $1"
    kill -0 "$sess_a" 2>/dev/null || fail "session A ended: $(cat "$WORK/a.out")"
    A_OUT=$(tail -n +$((before + 1)) "$WORK/a.out" | grep -v '^end-of-')
}

q "ALTER SEQUENCE walq.jobs_id_seq CACHE 20" >/dev/null
in_a "SELECT nextval($SEQ);"
a_first=$A_OUT
pass "session A drew $a_first; ids up to $((a_first + 19)) are in its cache"

start_consumer
flow 6
[ "$(q "SELECT min(id) FROM walq.jobs WHERE id > $a_first")" -gt $((a_first + 19)) ] ||
    fail "session B's jobs took ids from session A's cache; the test proves nothing"
pass "session B's jobs (ids $(q "SELECT min(id) || '..' || max(id) FROM walq.jobs WHERE id > $a_first")) consumed"

low=5
high=1000000000000
q "INSERT INTO walq.jobs (id, queue, payload) VALUES ($low, '$QUEUE', '{\"explicit\": \"low\", \"slow\": true}')" >/dev/null
q "INSERT INTO walq.jobs (id, queue, payload) VALUES ($high, '$QUEUE', '{\"explicit\": \"high\", \"slow\": true}')" >/dev/null
in_a "INSERT INTO walq.jobs (queue, payload) SELECT '$QUEUE', '{\"cached\": true, \"slow\": true}' FROM generate_series(1, 5) RETURNING id;"
mapfile -t cached <<<"$A_OUT"
for id in "${cached[@]}"; do
    if [ "$id" -le "$a_first" ] || [ "$id" -gt $((a_first + 19)) ]; then
        fail "session A's job $id did not come from its cache ($a_first..$((a_first + 19)))"
    fi
done
pass "session A inserted jobs ${cached[*]} from its cache, below session B's"
not_early "$low" "$high" "${cached[@]}"
wait_for 'running && [ "$(done_jobs)" -eq "$(queue_jobs)" ]' 30 "the jobs with early and explicit ids done"
for id in "$low" "$high" "${cached[@]}"; do
    assert_eq "$(runs_of "$id")|$(status_of "$id")" "1|done" "job $id ran once and is done"
done
flow 6
no_violation "parts 2 to 4 with the consumer running"

# An explicit low id while the consumer is stopped.
stop_consumer
low2=6
q "INSERT INTO walq.jobs (id, queue, payload) VALUES ($low2, '$QUEUE', '{\"explicit\": \"low, stopped\", \"slow\": true}')" >/dev/null
assert_eq "$(status_of "$low2")" queued "job $low2, inserted while the consumer was stopped, is queued"
start_consumer
wait_for 'running && [ "$(done_jobs)" -eq "$(queue_jobs)" ]' 30 "job $low2 done"
assert_eq "$(runs_of "$low2")|$(status_of "$low2")" "1|done" "job $low2 ran once and is done"
stop_consumer
no_violation "part 2 with the consumer stopped"

# ---- every job: done, once -------------------------------------------------

n=$(queue_jobs)
assert_eq "$(q "SELECT count(*) FILTER (WHERE status = 'done') FROM walq.job_status
                 WHERE consumer_group = '$GROUP'")" "$n" "all $n jobs done in walq.job_status"
assert_eq "$(wc -l <"$WORK/ran.log")|$(sort -u "$WORK/ran.log" | wc -l)" "$n|$n" \
    "the handler ran $n times, once for each job"
pass "all"
