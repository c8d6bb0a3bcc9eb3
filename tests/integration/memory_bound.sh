#!/usr/bin/env bash
# shellcheck disable=SC2016  # wait_for evals its condition later
# Everything the consumer holds is bounded (issue 11, scenario 7): jobs
# waiting for a run_at within the timer horizon count against the in-flight
# limit too.  1000 jobs of 100 kB payload each, due in 20 s (within the
# default 60 s --timer-horizon), are read by two groups at once with --noop:
#   - one with --max-in-flight 50;
#   - one with --max-in-flight-bytes 10000000 (a byte budget) and the
#     default count.
# The peak RSS of each consumer (VmHWM, sampled while it waits) stays under
# 40 MB, where holding every payload would take 100 MB; every job is done
# once its time has come.
# shellcheck source=SCRIPTDIR/../lib/pgtest.sh
. "$(dirname "$0")/../lib/pgtest.sh"
require_walq
pg_start
walq init

QUEUE=mq
N=1000
LIMIT_KB=$((40 * 1024))

bg "$WALQ_BIN" consume --group mc --queue "$QUEUE" --noop --max-in-flight 50 2>"$WORK/mc.log"
pid_count=$BG_PID
bg "$WALQ_BIN" consume --group mb --queue "$QUEUE" --noop --max-in-flight-bytes 10000000 \
    2>"$WORK/mb.log"
pid_bytes=$BG_PID

# running NAME PID LOG: fails when the consumer has exited.
running() {
    kill -0 "$2" 2>/dev/null && ! _pgtest_exited "$2" && return 0
    bg_wait "$2" 5
    fail "$1: the consumer exited (status $BG_RC): $(tail -n 3 "$3")"
}
# The byte budget's consumer failing does not stop the count's run: its
# failure is told at once and fails the test at the end.
bytes_failed=""
both_running() {
    running "--max-in-flight 50" "$pid_count" "$WORK/mc.log"
    [ -z "$bytes_failed" ] || return 0
    if ! kill -0 "$pid_bytes" 2>/dev/null || _pgtest_exited "$pid_bytes"; then
        bg_wait "$pid_bytes" 5
        bytes_failed="--max-in-flight-bytes 10000000: the consumer exited (status $BG_RC): $(tail -n 3 "$WORK/mb.log")"
        echo "FAIL (told at the end): $bytes_failed" >&2
    fi
}
# bytes_ok CONDITION: CONDITION holds for the byte budget's group, or its
# consumer failed already.
bytes_ok() { [ -n "$bytes_failed" ] || eval "$1"; }
wait_for 'both_running && slot_active walq_mc && bytes_ok "slot_active walq_mb"' 30 \
    "both consumers to stream"
[ "$(cat "/proc/$pid_count/comm")" = walq ] || fail "process $pid_count is not walq"

# hwm PID: the peak resident set of the process, in kB.
hwm() { awk '/^VmHWM:/ { print $2 }' "/proc/$1/status"; }
peak_count=0
peak_bytes=0
# sample: both consumers' peaks so far; fails as soon as one is over.
sample() {
    both_running
    local a b
    a=$(hwm "$pid_count")
    b=0
    [ -n "$bytes_failed" ] || b=$(hwm "$pid_bytes")
    [ "$a" -le "$peak_count" ] || peak_count=$a
    [ "$b" -le "$peak_bytes" ] || peak_bytes=$b
    [ "$peak_count" -lt "$LIMIT_KB" ] ||
        fail "--max-in-flight 50: peak RSS $((peak_count / 1024)) MB, over 40 MB ($(done_in mc) jobs done)"
    [ "$peak_bytes" -lt "$LIMIT_KB" ] ||
        fail "--max-in-flight-bytes 10000000: peak RSS $((peak_bytes / 1024)) MB, over 40 MB ($(done_in mb) jobs done)"
}
done_in() {
    q "SELECT count(*) FROM walq.job_status WHERE consumer_group = '$1' AND status = 'done'"
}
sample
echo "peak RSS at the start: $((peak_count / 1024)) MB and $((peak_bytes / 1024)) MB"

# Ten transactions of 100 jobs, 100 kB of payload each, all due in 20 s.
due=$(q "SELECT now() + interval '20 seconds'")
for _ in $(seq 1 10); do
    q "INSERT INTO walq.jobs (queue, payload, run_at)
       SELECT '$QUEUE', jsonb_build_object('n', g, 'pad', repeat(md5(g::text), 3125)), '$due'
         FROM generate_series(1, 100) g" >/dev/null
    sample
done
pass "$N jobs of $(q "SELECT avg(octet_length(payload::text))::int FROM walq.jobs") bytes of payload published, due at $due"

# Until they are due: nothing is done early; the peaks stay low.
while [ "$(q "SELECT now() < '$due'")" = t ]; do
    sample
    sleep 0.2
done
assert_eq "$(q "SELECT count(*) FROM walq.job_status WHERE status = 'done'
                 AND updated_at < '$due'")" 0 "no job was done before its run_at"
wait_for 'sample; [ "$(done_in mc)" -eq '"$N"' ] && bytes_ok "[ \"\$(done_in mb)\" -eq '"$N"' ]"' 60 \
    "all $N jobs done in both groups"
sample
pass "--max-in-flight 50: all $N jobs done, peak RSS $((peak_count / 1024)) MB ($peak_count kB)"
kill -TERM "$pid_count"
bg_wait "$pid_count" 20
assert_eq "$BG_RC" 0 "--max-in-flight 50: SIGTERM: the consumer exits 0"
[ -z "$bytes_failed" ] || fail "$bytes_failed"
pass "--max-in-flight-bytes 10000000: all $N jobs done, peak RSS $((peak_bytes / 1024)) MB ($peak_bytes kB)"
kill -TERM "$pid_bytes"
bg_wait "$pid_bytes" 20
assert_eq "$BG_RC" 0 "--max-in-flight-bytes 10000000: SIGTERM: the consumer exits 0"
pass "all"
