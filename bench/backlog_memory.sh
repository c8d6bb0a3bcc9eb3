#!/usr/bin/env bash
# Backlog memory benchmark: how much memory does `walq consume` use with a
# backlog of a million jobs in its slot and a slow handler?  It should hold
# at most --max-in-flight jobs, stop reading the stream while full, and stay
# connected.  Prints the time to publish the backlog, the consumer's RSS over
# time and its maximum.  The test tests/integration/backpressure.sh checks
# the same with a smaller backlog.
#
#   bash bench/backlog_memory.sh      BENCH_JOBS=1000000 BENCH_TXNS=4 BENCH_SECS=30
#                                     BENCH_MAX_IN_FLIGHT=10000 BENCH_CONCURRENCY=2
#                                     BENCH_HANDLER_SLEEP=0.2 BENCH_WAL_SENDER_TIMEOUT=60s
set -euo pipefail

jobs=${BENCH_JOBS:-1000000}
txns=${BENCH_TXNS:-4}
secs=${BENCH_SECS:-30}
max_in_flight=${BENCH_MAX_IN_FLIGHT:-10000}
concurrency=${BENCH_CONCURRENCY:-2}
handler_sleep=${BENCH_HANDLER_SLEEP:-0.2}
wal_sender_timeout=${BENCH_WAL_SENDER_TIMEOUT:-60s}

export TEST_NAME=bench-backlog-memory
# shellcheck source=SCRIPTDIR/../tests/lib/standalone.sh
. "$(dirname "${BASH_SOURCE[0]}")/../tests/lib/standalone.sh"
require_walq

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }

pg_start "shared_buffers = 256MB" "max_wal_size = 8GB" "checkpoint_timeout = 30min" \
    "wal_sender_timeout = $wal_sender_timeout"
walq init

# The group's slot exists before the backlog, which therefore comes through
# the stream.
walq consume --group bench --queue bench --drain --noop

echo "publishing $jobs jobs in $txns transactions" >&2
per=$(((jobs + txns - 1) / txns))
t0=$(now)
for i in $(seq 0 $((txns - 1))); do
    q "INSERT INTO walq.jobs (queue, payload)
       SELECT 'bench', jsonb_build_object('n', g, 'to', 'user' || g || '@example.com')
         FROM generate_series($((i * per + 1)), least($(((i + 1) * per)), $jobs)) g" >/dev/null
    echo "  transaction $((i + 1)) of $txns committed at $(elapsed "$t0" "$(now)") s" >&2
done
t1=$(now)
publish_secs=$(elapsed "$t0" "$t1")
wal_mb=$(q "SELECT round(pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn) / 1048576.0, 1)
              FROM pg_replication_slots WHERE slot_name = 'walq_bench'")

h=$(handler slow.sh <<HANDLER
cat >/dev/null
sleep $handler_sleep
HANDLER
)
t2=$(now)
bg "$WALQ_BIN" consume --group bench --queue bench --concurrency "$concurrency" \
    --max-in-flight "$max_in_flight" -- "$h" 2>"$WORK/consumer.err"
pid=$BG_PID

# The RSS from /proc every 0.5 s, by a sampler that does nothing else; this
# shell checks the slot and counts the jobs done meanwhile.
# shellcheck disable=SC2016  # expanded by the sampler's shell
bg bash -c 'end=$((SECONDS + $2))
            while [ "$SECONDS" -lt "$end" ] && [ -r "/proc/$1/status" ]; do
                echo "$(date +%s.%N) $(awk "/^VmRSS:/ { print \$2 }" "/proc/$1/status")"
                sleep 0.5
            done' rss-sampler "$pid" "$secs" >"$WORK/rss.log"
sampler=$BG_PID
echo "watching the consumer for $secs s (seconds since start, slot active, jobs done):" >&2
checks=0
inactive=0
end=$((SECONDS + secs))
while [ "$SECONDS" -lt "$end" ]; do
    if ! kill -0 "$pid" 2>/dev/null || _pgtest_exited "$pid"; then
        fail "the consumer exited: $(tail -n 5 "$WORK/consumer.err")"
    fi
    active=$(q "SELECT coalesce(bool_or(active), false) FROM pg_replication_slots
                 WHERE slot_name = 'walq_bench'")
    checks=$((checks + 1))
    [ "$active" = t ] || inactive=$((inactive + 1))
    printf '  %6s s  %s  %s\n' "$(elapsed "$t2" "$(now)")" "$active" "$(done_count bench)" >&2
    sleep 1
done
bg_wait "$sampler" 10
echo "consumer RSS every 0.5 s (seconds since start, KiB):" >&2
awk -v t="$t2" '{ printf "  %6.1f s  %8d KiB\n", $1 - t, $2 }' "$WORK/rss.log" >&2
mapfile -t samples < <(awk '{ print $2 }' "$WORK/rss.log")
done_jobs=$(done_count bench)
sent_behind=$(q "SELECT coalesce(round(pg_wal_lsn_diff(pg_current_wal_lsn(), sent_lsn) / 1048576.0, 1)::text, '-')
                   FROM pg_stat_replication WHERE application_name = 'walq consume'")
kill -TERM "$pid"
bg_wait "$pid" 120
stop_rc=$BG_RC
reconnects=$(grep -c reconnecting "$WORK/consumer.err" || true)
timeouts=$(grep -c 'terminating walsender process due to replication timeout' "$PGTEST_DIR/server.log" || true)

sorted=$(printf '%s\n' "${samples[@]}" | sort -n)
awk -v n="$jobs" -v t="$txns" -v p="$publish_secs" -v w="$wal_mb" -v m="$max_in_flight" \
    -v first="${samples[0]}" -v last="${samples[${#samples[@]} - 1]}" \
    -v min="$(head -n 1 <<<"$sorted")" -v max="$(tail -n 1 <<<"$sorted")" \
    -v k="${#samples[@]}" -v d="$done_jobs" -v s="$sent_behind" -v i="$inactive" \
    -v c="$checks" -v r="$reconnects" -v to="$timeouts" -v rc="$stop_rc" -v wst="$wal_sender_timeout" 'BEGIN {
    printf "backlog:                 %d jobs in %d transactions, published in %.1f s (%.0f rows/s); %.1f MB of WAL\n", n, t, p, n / p, w
    printf "--max-in-flight:         %d\n", m
    printf "RSS over %d samples:     first %.1f MiB, last %.1f MiB, min %.1f MiB, max %.1f MiB\n", k, first / 1024, last / 1024, min / 1024, max / 1024
    printf "jobs done while watched: %d\n", d
    printf "walsender sent position: %s MB behind the server WAL at the end\n", s
    printf "wal_sender_timeout %s:  slot inactive in %d of %d checks; %d replication timeouts; %d reconnects\n", wst, i, c, to, r
    printf "SIGTERM:                 exit status %d\n", rc
}'
