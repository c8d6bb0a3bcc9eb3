#!/usr/bin/env bash
# shellcheck disable=SC2016  # wait_for evals its condition later
# No wait on the primary is unbounded (issue 11, scenario 5).  Consumers
# run with --primary-timeout 3 (the longest one waits for a call to the
# primary before it drops that connection and reconnects with backoff) and
# --timeout 2; the servers drop a walsender silent for 6 s.
#   a. A lock: another session holds walq.outcomes and walq.outcome_batches
#      in ACCESS EXCLUSIVE mode for 20 s while jobs are published, some of
#      whose handlers sleep 60 s.  Status updates go on (no walsender
#      timeout), each sleeping handler is gone within about 5 s of its start
#      while the lock is still held, and once the lock is gone every job
#      has exactly one final outcome.  A second consumer (another group on
#      the same server) gets SIGTERM twice while the lock is held: it exits
#      within 3 s.
#   b. A silent primary, on a second server at the same time: the
#      consumer's backend there is stopped (SIGSTOP) for 15 s while jobs
#      flow.  The consumer warns that it lost the primary within its
#      primary timeout, reconnects after SIGCONT, no walsender times out,
#      and every job has exactly one final outcome.
# shellcheck source=SCRIPTDIR/../lib/pgtest.sh
. "$(dirname "$0")/../lib/pgtest.sh"
require_walq
pg_start "wal_sender_timeout = '6s'"
pg_start_extra silent "wal_sender_timeout = '6s'"
walq init
walq init --dbname "$PGTEST_CONN_SILENT"

# A marker unique to this run in the sleeps' command lines, for pgrep.
marker="60.$$$RANDOM"
h=$(handler work.sh <<HANDLER
payload=\$(cat)
echo "\$WALQ_GROUP \$WALQ_JOB_ID \$WALQ_ATTEMPT \$(date +%s.%N)" >>"$WORK/runs.log"
case \$payload in *sleep*) exec sleep $marker ;; esac
exit 0
HANDLER
)
OPTS=(--concurrency 4 --timeout 2 --primary-timeout 3 --backoff-min 0.01 --backoff-max 0.05)
now_ms() { echo $(($(date +%s%N) / 1000000)); }

# On server "" (the first) or "silent": qs SERVER SQL.
qs() { if [ -z "$1" ]; then q "$2"; else q_on "$1" "$2"; fi; }

# alive PID: the process runs (not a zombie).
alive() { kill -0 "$1" 2>/dev/null && ! _pgtest_exited "$1"; }
# running NAME PID LOG: fails when the consumer has exited.
running() {
    alive "$2" && return 0
    bg_wait "$2" 5
    fail "$1: the consumer exited (status $BG_RC): $(tail -n 3 "$3")"
}

# No walsender of walq's was dropped for its silence, on either server.
no_walsender_timeout() {
    if cat "$PGTEST_DIR/server.log" "$PGTEST_DIR_SILENT/server.log" | grep -a 'walq consume' |
        grep -a 'terminating walsender process due to replication timeout'; then
        fail "$1: a server dropped walq's walsender for want of status updates"
    fi
}

# Each sleeping handler is gone within about 5 s of its start (its
# --timeout is 2 s): fails at once otherwise.
sleepers() { pgrep -f "sleep $marker" || true; }
check_sleepers() {
    local p age
    for p in $(sleepers); do
        age=$(ps -o etimes= -p "$p" 2>/dev/null | tr -d ' ' || true)
        [ -n "$age" ] || continue
        [ "$age" -le 5 ] ||
            fail "$1: handler process $p (sleep $marker) has run for $age s, past its --timeout of 2 s"
    done
    return 0
}

all_final() { # SERVER GROUP QUEUE
    [ "$(qs "$1" "SELECT count(*) FROM walq.job_status WHERE consumer_group = '$2'
                   AND status IN ('done', 'dead', 'cancelled')")" -eq \
        "$(qs "$1" "SELECT count(*) FROM walq.jobs WHERE queue = '$3'")" ]
}

# one_outcome_each SERVER GROUP QUEUE: every job of the queue has exactly
# one final record (a final row of walq.outcomes or a place in a batch of
# walq.outcome_batches, not both, not twice); walq.job_status agrees; the
# sleeping jobs are dead of their timeout, the others done.
one_outcome_each() {
    local bad
    bad=$(qs "$1" "SELECT j.id || ':' || n FROM walq.jobs j
               CROSS JOIN LATERAL (
                   SELECT (SELECT count(*) FROM walq.outcomes o WHERE o.group_name = '$2'
                             AND o.job_id = j.id AND o.status IN ('done', 'dead', 'cancelled'))
                        + (SELECT count(*) FROM walq.outcome_batches b WHERE b.group_name = '$2'
                             AND j.id = ANY (b.job_ids)) AS n) r
              WHERE j.queue = '$3' AND n <> 1 ORDER BY j.id LIMIT 10")
    [ -z "$bad" ] ||
        fail "group $2: jobs without exactly one final record (id:records): $(paste -sd' ' <<<"$bad")"
    assert_eq "$(qs "$1" "SELECT count(*) FROM walq.job_status s JOIN walq.jobs j ON j.id = s.job_id
                     WHERE s.consumer_group = '$2'
                       AND s.status <> CASE WHEN j.payload ? 'sleep' THEN 'dead' ELSE 'done' END")" 0 \
        "group $2: walq.job_status: every sleeping job dead, every other job done"
    assert_eq "$(qs "$1" "SELECT count(*) FROM walq.job_status s JOIN walq.jobs j ON j.id = s.job_id
                     WHERE s.consumer_group = '$2' AND j.payload ? 'sleep'
                       AND s.last_error !~* 'time'")" 0 "group $2: the sleeping jobs died of their timeout"
    # A handler that exited at once while the consumer waited on its
    # primary did not time out: it was reaped as it ended, not killed for
    # a deadline that passed while nobody looked.
    assert_eq "$(qs "$1" "SELECT coalesce(string_agg(s.job_id || ': ' || s.attempts || ' attempts', ', '), '')
                     FROM walq.job_status s JOIN walq.jobs j ON j.id = s.job_id
                     WHERE s.consumer_group = '$2' AND NOT j.payload ? 'sleep' AND s.attempts <> 1")" "" \
        "group $2: every job that does not sleep was done at its first attempt"
    pass "group $2: each of its $(qs "$1" "SELECT count(*) FROM walq.jobs WHERE queue = '$3'") jobs has exactly one final outcome"
}
publish() { # SERVER QUEUE N [sleep]
    local payload="jsonb_build_object('n', g)" max=25
    [ "${4:-}" != sleep ] || payload="'{\"sleep\": true}'" max=1
    qs "$1" "INSERT INTO walq.jobs (queue, payload, max_attempts)
             SELECT '$2', $payload, $max FROM generate_series(1, $3) g" >/dev/null
}

# The three consumers: A and T on the first server, B on the second.
bg "$WALQ_BIN" consume --group sa --queue qa "${OPTS[@]}" -- "$h" 2>"$WORK/a.log"
pa=$BG_PID
bg "$WALQ_BIN" consume --group st --queue qt "${OPTS[@]}" -- "$h" 2>"$WORK/t.log"
pt=$BG_PID
bg "$WALQ_BIN" consume --dbname "$PGTEST_CONN_SILENT" --group sb --queue qb "${OPTS[@]}" -- "$h" \
    2>"$WORK/b.log"
pb=$BG_PID
ready() {
    running "group sa" "$pa" "$WORK/a.log" && running "group st" "$pt" "$WORK/t.log" &&
        running "group sb" "$pb" "$WORK/b.log" && slot_active walq_sa && slot_active walq_st &&
        [ "$(q_on silent "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'walq_sb' AND active")" = 1 ]
}
wait_for ready 30 "the three consumers to stream"
publish "" qa 20
publish "" qt 20
publish silent qb 20
wait_for 'ready && all_final "" sa qa && all_final "" st qt && all_final silent sb qb' 30 \
    "the first 20 jobs of each group done"

# Handlers that sleep are running when the lock comes.
publish "" qa 3 sleep
wait_for 'ready && [ "$(sleepers | wc -l)" -ge 3 ]' 20 "3 sleeping handlers to start"

PGAPPNAME=locker bg "$PGTEST_BINDIR/psql" -X -q -c "BEGIN;
    LOCK TABLE walq.outcomes, walq.outcome_batches IN ACCESS EXCLUSIVE MODE;
    SELECT pg_sleep(20); COMMIT" >/dev/null 2>&1
locker=$BG_PID
wait_for '[ "$(q "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
                  WHERE a.application_name = '"'locker'"' AND l.relation = '"'walq.outcome_batches'"'::regclass
                    AND l.mode = '"'AccessExclusiveLock'"' AND l.granted")" = 1 ]' 10 \
    "the lock on walq's outcome tables"
t_lock=$(now_ms)
# Jobs to be recorded while the lock is held, at once.
publish "" qa 10
publish "" qt 10
pass "walq.outcomes and walq.outcome_batches locked, with 3 sleeping handlers running"

mapfile -t stopped < <(q_on silent "SELECT pid FROM pg_stat_activity
                                     WHERE application_name = 'walq consume' AND backend_type = 'client backend'")
[ "${#stopped[@]}" -ge 1 ] || fail "group sb: the consumer has no backend on its primary"
# A warning that names the primary (the stream's own troubles do not count).
primary_warnings() { grep -Eai 'WARNING.*primary' "$WORK/b.log" || true; }
b_warnings=$(primary_warnings | wc -l)
kill -STOP "${stopped[@]}"
t_stop=$(now_ms)
pass "group sb: its primary backend(s) ${stopped[*]} stopped"

# Until the lock is gone and the primary of sb has been silent for 15 s:
# jobs flow; the sleeping handlers die on time; no walsender times out;
# group st gets SIGTERM twice 3 s into the lock and must exit within 3 s;
# group sb must warn of its silent primary.
tick=0 t_term="" t_exit="" warned="" continued=""
while alive "$locker" || [ -z "$continued" ]; do
    now=$(now_ms)
    running "group sa" "$pa" "$WORK/a.log"
    running "group sb" "$pb" "$WORK/b.log"
    check_sleepers "group sa, the outcome tables locked"
    no_walsender_timeout "with the outcome tables locked and a silent primary"
    if alive "$locker"; then
        publish "" qa 5
        [ "$tick" -ne 8 ] || publish "" qa 2 sleep
    fi
    [ -n "$continued" ] || publish silent qb 5
    if [ -z "$t_term" ] && [ $((now - t_lock)) -ge 3000 ]; then
        alive "$locker" || fail "the lock ended before group st could be stopped"
        running "group st" "$pt" "$WORK/t.log"
        kill -TERM "$pt"
        sleep 0.5
        kill -TERM "$pt"
        t_term=$(now_ms)
    elif [ -n "$t_term" ] && [ -z "$t_exit" ]; then
        if ! alive "$pt"; then
            t_exit=$(($(now_ms) - t_term))
            alive "$locker" || fail "group st: the lock ended before the consumer exited; the test proves nothing"
        elif [ $((now - t_term)) -gt 3000 ]; then
            fail "group st: the consumer still runs $(((now - t_term) / 1000)) s after a second SIGTERM, with the outcome tables locked"
        fi
    fi
    if [ -z "$warned" ] && [ "$(primary_warnings | wc -l)" -gt "$b_warnings" ]; then
        warned=$((now - t_stop))
    fi
    if [ -z "$continued" ] && [ $((now - t_stop)) -ge 15000 ]; then
        kill -CONT "${stopped[@]}"
        continued=$now
    fi
    tick=$((tick + 1))
    sleep 0.5
done
bg_wait "$locker" 5
pass "the lock was held for $((($(now_ms) - t_lock) / 1000)) s; every sleeping handler was gone within 5 s of its start"
[ -n "$t_exit" ] || fail "group st: the consumer did not exit after a second SIGTERM"
bg_wait "$pt" 1
pass "group st: a second SIGTERM with the outcome tables locked: exit (status $BG_RC) after $t_exit ms"

# a. After the lock.
wait_for 'running "group sa" "$pa" "$WORK/a.log" && check_sleepers "group sa, after the lock" &&
          all_final "" sa qa' 40 "group sa: every job to have a final outcome"
no_walsender_timeout "after the lock"
pass "group sa: no walsender timeout while the outcome tables were locked"
kill -TERM "$pa"
bg_wait "$pa" 20
assert_eq "$BG_RC" 0 "group sa: SIGTERM after the lock: the consumer exits 0"
one_outcome_each "" sa qa
capture walq_timeout 60 consume --group st --queue qt "${OPTS[@]}" --drain -- "$h"
printf '%s\n' "$CAP_ERR" >>"$WORK/t.log"
assert_eq "$CAP_RC" 0 "group st: --drain after the double SIGTERM exits 0"
one_outcome_each "" st qt

# b. After the silent primary.
[ -n "$warned" ] ||
    fail "group sb: in 15 s of a silent primary the consumer logged no warning about its primary: $(tail -n 3 "$WORK/b.log")"
pass "group sb: the consumer warned $((warned / 1000)).$((warned % 1000 / 100)) s after its primary went silent: $(primary_warnings | sed -n "$((b_warnings + 1))p")"
[ "$warned" -le 7000 ] ||
    fail "group sb: the consumer noticed its silent primary after $warned ms, not within its --primary-timeout of 3 s"
wait_for 'running "group sb" "$pb" "$WORK/b.log" && all_final silent sb qb' 40 \
    "group sb: every job to have a final outcome after SIGCONT"
backends=$(q_on silent "SELECT string_agg(pid::text, ' ') FROM pg_stat_activity
                         WHERE application_name = 'walq consume' AND backend_type = 'client backend'
                           AND pid NOT IN ($(IFS=,; echo "${stopped[*]}"))")
[ -n "$backends" ] || fail "group sb: the consumer did not reconnect to its primary"
pass "group sb: the consumer reconnected to its primary (backend $backends)"
no_walsender_timeout "after the silent primary"
kill -TERM "$pb"
bg_wait "$pb" 20
assert_eq "$BG_RC" 0 "group sb: SIGTERM: the consumer exits 0"
one_outcome_each silent sb qb
pass "all"
