#!/usr/bin/env bash
# shellcheck disable=SC2016  # wait_for evals its condition later
# Delayed jobs: a job whose run_at is in the future is recorded as scheduled
# at once, so the group's cursor and its slot move past its transaction before
# it runs; it runs at run_at, within 100 ms, from an in-memory timer; and a
# consumer restarted while jobs are waiting rebuilds its timers from the
# table, so they still run once, at their time.
#
# Lateness is measured from the time the handler itself records when it
# starts (`date +%s.%N`) against run_at as the server stores it.
# shellcheck source=SCRIPTDIR/../lib/pgtest.sh
. "$(dirname "$0")/../lib/pgtest.sh"
require_walq
pg_start
walq init
# To find the commit record of a job's transaction, independently of walq.
q "CREATE EXTENSION pg_walinspect" >/dev/null

# The first thing the handler does is to note the time.
h=$(handler record.sh <<HANDLER
t=\$(date +%s.%N)
cat >/dev/null
echo "\$WALQ_JOB_ID \$t \$WALQ_ATTEMPT" >>"$WORK/ran.log"
HANDLER
)
: >"$WORK/ran.log"

start_consumer() {
    bg "$WALQ_BIN" consume --group dl --queue d --concurrency 4 -- "$h" 2>>"$WORK/consumer.err"
    pid=$BG_PID
    wait_for "slot_active walq_dl" 30 "the consumer to stream from slot walq_dl"
}

# publish_both SECS_CLI SECS_SQL: one job through `walq publish --run-at`,
# one through walq.publish(run_at => ...), due that many seconds from now;
# sets JOBS, DUE (their run_at as Unix time), IDS and FROM_LSN.
publish_both() {
    local row ts1 ts2 due1 due2
    row=$(q "SELECT pg_current_wal_insert_lsn(), now() + interval '$1 s', now() + interval '$2 s',
                    extract(epoch FROM now() + interval '$1 s'), extract(epoch FROM now() + interval '$2 s')")
    IFS='|' read -r FROM_LSN ts1 ts2 due1 due2 <<<"$row"
    DUE=("$due1" "$due2")
    JOBS=("$(walq publish --run-at "$ts1" d '{"via": "cli"}')")
    JOBS+=("$(q "SELECT walq.publish('d', '{\"via\": \"sql\"}', run_at => '$ts2')")")
    IDS=$(IFS=,; echo "${JOBS[*]}")
}

# observe: in one statement, "S|SLOT|CURSOR": how many of the jobs
# walq.job_status shows scheduled in group dl, and whether the slot's
# confirmed position and the group's cursor are past the commit records of
# the jobs' transactions (found in the WAL with pg_walinspect, so that this
# does not take walq's word for where they are).  Past means beyond the
# record's start, which is what the server goes by when it decides not to
# send a transaction again: wal2json readers confirm the record's end,
# pgoutput readers its start plus one (pgoutput's Begin has no end).
observe() {
    q "WITH x AS (SELECT DISTINCT xmin AS xid FROM walq.jobs WHERE id IN ($IDS)),
            c AS (SELECT count(*) AS n, max(r.start_lsn) AS commit_start
                    FROM pg_get_wal_records_info('$FROM_LSN', pg_current_wal_flush_lsn()) r
                    JOIN x ON r.xid = x.xid
                   WHERE r.resource_manager = 'Transaction' AND r.record_type LIKE 'COMMIT%')
       SELECT (SELECT count(*) FROM walq.job_status
                WHERE consumer_group = 'dl' AND job_id IN ($IDS) AND status = 'scheduled'),
              coalesce(c.n = (SELECT count(*) FROM x)
                       AND s.confirmed_flush_lsn > c.commit_start, false),
              coalesce(c.n = (SELECT count(*) FROM x) AND g.cursor_lsn > c.commit_start, false)
         FROM c, pg_replication_slots s, walq.readers g
        WHERE s.slot_name = 'walq_dl' AND g.group_name = 'dl'"
}

# wait_slot_past: polls observe until the slot is past the jobs; OBS holds
# the last observation.
wait_slot_past() {
    local deadline=$((SECONDS + 15))
    until OBS=$(observe) && [ "$(cut -d'|' -f2 <<<"$OBS")" = t ]; do
        [ "$SECONDS" -lt "$deadline" ] || fail "slot walq_dl not confirmed past jobs $IDS after 15 s ($OBS)"
        sleep 0.05
    done
}

# status_count STATUS: how many of the jobs walq.job_status shows so in dl.
status_count() {
    q "SELECT count(*) FROM walq.job_status
        WHERE consumer_group = 'dl' AND job_id IN ($IDS) AND status = '$1'"
}

# done_once: how many of the jobs dl recorded done after one attempt.
done_once() {
    q "SELECT count(*) FROM walq.job_status
        WHERE consumer_group = 'dl' AND job_id IN ($IDS) AND status = 'done' AND attempts = 1"
}

ran_count() {
    local id n=0
    for id in "$@"; do
        n=$((n + $(awk -v id="$id" '$1 == id' "$WORK/ran.log" | wc -l)))
    done
    echo "$n"
}

# start_controls: for each job of JOBS, a control process that sleeps until
# the job's run_at and then runs `date`, as the handler does.  How late it is
# shows how late the machine itself (timers, starting processes) is just
# then.  It works out how long to sleep with shell builtins only, so that
# starting `sleep` is the only process start before the wait.
start_controls() {
    local i
    CONTROLS=()
    for i in 0 1; do
        bg bash -c 'int=${1%.*} frac=${1#*.}
                    [ "$frac" != "$1" ] || frac=0
                    frac=${frac}000000
                    now=${EPOCHREALTIME//[.,]/}
                    us=$((int * 1000000 + 10#${frac:0:6} - now))
                    if [ "$us" -gt 0 ]; then
                        printf -v secs "%d.%06d" $((us / 1000000)) $((us % 1000000))
                        sleep "$secs"
                    fi
                    date +%s.%N >"$2"' control "${DUE[$i]}" "$WORK/control.${JOBS[$i]}"
        CONTROLS+=("$BG_PID")
    done
}

# check_lateness: each job of JOBS ran once, at or after its run_at and
# within 100 ms of it.  On a machine so loaded that the control process was
# more than 20 ms late itself, its lateness is allowed on top.
check_lateness() {
    local id started due ms control allowed p
    for p in "${CONTROLS[@]}"; do
        bg_wait "$p" 30
    done
    for id in "${JOBS[@]}"; do
        assert_eq "$(ran_count "$id")" 1 "job $id ran once"
        started=$(awk -v id="$id" '$1 == id { print $2 }' "$WORK/ran.log")
        # run_at as stored, which the consumer had to go by.
        due=$(q "SELECT extract(epoch FROM run_at) FROM walq.jobs WHERE id = $id")
        ms=$(awk -v s="$started" -v d="$due" 'BEGIN { printf "%.1f", (s - d) * 1000 }')
        control=$(awk -v s="$(cat "$WORK/control.$id")" -v d="$due" 'BEGIN { printf "%.1f", (s - d) * 1000 }')
        allowed=$(awk -v c="$control" 'BEGIN { printf "%.1f", (c > 20) ? 100 + c : 100 }')
        echo "job $id: run_at $due, handler started $started: lateness $ms ms" \
            "(control process: $control ms late; load average $(cut -d' ' -f1 /proc/loadavg))"
        awk -v ms="$ms" 'BEGIN { exit !(ms >= 0) }' ||
            fail "job $id started $ms ms before its run_at"
        awk -v ms="$ms" -v a="$allowed" 'BEGIN { exit !(ms <= a) }' ||
            fail "job $id started $ms ms after its run_at, more than $allowed ms (control $control ms)"
        if [ "$allowed" != 100.0 ]; then
            echo "WARNING: the machine is overloaded (a plain timer was $control ms late);" \
                "allowed $allowed ms instead of 100 ms" >&2
        fi
        pass "job $id ran $ms ms after its run_at"
    done
}

# ---- 1. jobs about 3 s ahead, one consumer ---------------------------------

start_consumer
publish_both 3 2.8
start_controls
wait_slot_past
t_past=$(date +%s.%N)
# The observation counts only if it came before the jobs ran.
assert_eq "$(ran_count "${JOBS[@]}")" 0 "the slot passed the jobs' transactions before they ran"
assert_eq "$OBS" "2|t|t" "while they wait: both scheduled in walq.job_status, slot and cursor past their transactions"
echo "slot confirmed past the jobs $(awk -v a="${DUE[0]}" -v b="${DUE[1]}" -v t="$t_past" \
    'BEGIN { printf "%.2f", (a < b ? a : b) - t }') s before the first run_at"

wait_for '[ "$(ran_count "${JOBS[@]}")" -ge 2 ]' 20 "the two delayed jobs to run"
wait_for '[ "$(done_once)" -eq 2 ]' 10 "the two delayed jobs recorded done after one attempt"
check_lateness

# ---- 2. a restart while jobs wait -------------------------------------------

publish_both 6 6.5
start_controls
wait_slot_past
assert_eq "$(ran_count "${JOBS[@]}")" 0 "the slot passed the jobs' transactions before they ran"
assert_eq "$OBS" "2|t|t" "while they wait: both scheduled, slot and cursor past their transactions"
kill -TERM "$pid"
bg_wait "$pid" 20
assert_eq "$BG_RC" 0 "SIGTERM while jobs wait for their time: the consumer exits 0"
assert_eq "$(ran_count "${JOBS[@]}")" 0 "the later jobs did not run before the restart"
assert_eq "$(status_count scheduled)" 2 "they are still scheduled while no consumer runs"
start_consumer
wait_for '[ "$(ran_count "${JOBS[@]}")" -ge 2 ]' 30 "the later jobs to run after the restart"
wait_for '[ "$(done_once)" -eq 2 ]' 10 "the later jobs recorded done after one attempt"
check_lateness
assert_match "$(cat "$WORK/consumer.err")" '2 scheduled jobs' "the restarted consumer reloaded the 2 scheduled jobs"

# Nothing runs twice, not even a little later.
sleep 1
kill -TERM "$pid"
bg_wait "$pid" 20
assert_eq "$BG_RC" 0 "SIGTERM: the consumer exits 0"
assert_eq "$(wc -l <"$WORK/ran.log")" 4 "four jobs, four runs in all"
assert_all_done dl '^d$' 4
pass "all"
