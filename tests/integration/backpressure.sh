#!/usr/bin/env bash
# shellcheck disable=SC2016  # wait_for evals its condition later
# Backpressure: with a large backlog in its slot and a slow handler, the
# consumer keeps at most --max-in-flight jobs in memory, so its memory stays
# bounded; it stops reading the stream while full, and still answers the
# server, which (wal_sender_timeout = 5 s) would otherwise end the connection.
#
# The backlog is BP_JOBS jobs (300,000 by default: publishing 1,000,000 takes
# too long for the test suite on a small machine; bench/backlog_memory.sh
# runs the full million and prints the figures).
# shellcheck source=SCRIPTDIR/../lib/pgtest.sh
. "$(dirname "$0")/../lib/pgtest.sh"
require_walq

JOBS=${BP_JOBS:-300000}
TXNS=3                 # the backlog is published in this many transactions
SECS=15                # how long the consumer is watched
MAX_RSS_KB=$((64 * 1024))  # the bound on its resident memory
MAX_GROWTH_KB=$((4 * 1024)) # allowed growth from the first sample to the last

pg_start "max_wal_size = 4GB" "checkpoint_timeout = 30min"
# A walsender that hears nothing from its client for 5 s ends the connection.
pg_conf "wal_sender_timeout = 5s"
pg_restart
assert_eq "$(q "SHOW wal_sender_timeout")" 5s "the server's wal_sender_timeout is 5 s"
walq init

# The group's first run creates its slot; the backlog published afterwards
# comes through the stream, not from the table.
walq_timeout 60 consume --group bp --queue bp --drain --noop 2>/dev/null

t0=$(date +%s.%N)
per=$(((JOBS + TXNS - 1) / TXNS))
for i in $(seq 0 $((TXNS - 1))); do
    q "INSERT INTO walq.jobs (queue, payload)
       SELECT 'bp', jsonb_build_object('n', g, 'to', 'user' || g || '@example.com')
         FROM generate_series($((i * per + 1)), least($(((i + 1) * per)), $JOBS)) g" >/dev/null
done
t1=$(date +%s.%N)
backlog_mb=$(q "SELECT round(pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn) / 1048576.0, 1)
                  FROM pg_replication_slots WHERE slot_name = 'walq_bp'")
echo "published $JOBS jobs in $TXNS transactions in $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }') s;" \
    "$backlog_mb MB of WAL in the slot"

h=$(handler slow.sh <<'HANDLER'
cat >/dev/null
sleep 0.2
HANDLER
)
bg "$WALQ_BIN" consume --group bp --queue bp --concurrency 2 --max-in-flight 10000 -- "$h" \
    2>"$WORK/consumer.err"
pid=$BG_PID
wait_for "slot_active walq_bp" 30 "the consumer to stream from slot walq_bp"
# Sampling starts once jobs run: the walsender has decoded the first
# transaction and the consumer has read its fill.
wait_for '[ "$(done_count bp)" -gt 0 ]' 40 "the first jobs to be done"

# The RSS from /proc every 0.5 s, by a sampler that does nothing else, while
# this shell checks the slot as often as it can.
bg bash -c 'end=$((SECONDS + $2))
            while [ "$SECONDS" -lt "$end" ] && [ -r "/proc/$1/status" ]; do
                awk "/^VmRSS:/ { print \$2 }" "/proc/$1/status"
                sleep 0.5
            done' rss-sampler "$pid" "$SECS" >"$WORK/rss.log"
sampler=$BG_PID
checks=0
inactive=0
end=$((SECONDS + SECS))
while [ "$SECONDS" -lt "$end" ]; do
    if ! kill -0 "$pid" 2>/dev/null || _pgtest_exited "$pid"; then
        fail "the consumer exited: $(tail -n 5 "$WORK/consumer.err")"
    fi
    checks=$((checks + 1))
    slot_active walq_bp || inactive=$((inactive + 1))
    sleep 0.2
done
bg_wait "$sampler" 10
mapfile -t samples <"$WORK/rss.log"
[ "${#samples[@]}" -ge $((SECS)) ] || fail "only ${#samples[@]} RSS samples in $SECS s"
first=${samples[0]}
last=${samples[${#samples[@]} - 1]}
max=$(printf '%s\n' "${samples[@]}" | sort -n | tail -n 1)
echo "consumer RSS (KiB), every 0.5 s for $SECS s: ${samples[*]}"
echo "first $first KiB, last $last KiB, max $max KiB ($(awk -v m="$max" 'BEGIN { printf "%.1f", m / 1024 }') MiB)"
done_now=$(done_count bp)
echo "jobs done meanwhile: $done_now of $JOBS"

[ "$max" -le "$MAX_RSS_KB" ] || fail "the consumer's RSS reached $max KiB, above the bound of $MAX_RSS_KB KiB"
pass "the consumer's RSS stayed under $((MAX_RSS_KB / 1024)) MiB with $JOBS jobs in its slot"
[ $((last - first)) -le "$MAX_GROWTH_KB" ] ||
    fail "the consumer's RSS grew by $((last - first)) KiB over $SECS s (at most $MAX_GROWTH_KB KiB allowed)"
pass "the consumer's RSS did not grow by more than $((MAX_GROWTH_KB / 1024)) MiB over $SECS s"
timeouts=$(grep -c 'terminating walsender process due to replication timeout' "$PGTEST_DIR/server.log" || true)
if [ "$inactive" -ne 0 ] || [ "$timeouts" -ne 0 ]; then
    fail "slot walq_bp was inactive in $inactive of $checks checks; the server ended" \
        "the consumer's walsender $timeouts times for replication timeout (wal_sender_timeout 5 s)"
fi
pass "slot walq_bp active in all $checks checks: the server never dropped the consumer"
if grep -q reconnecting "$WORK/consumer.err"; then
    fail "the consumer lost its stream: $(grep reconnecting "$WORK/consumer.err" | head -n 3)"
fi
pass "no reconnection: the consumer answered the server while it was not reading"
# The walsender stopped sending: the consumer read only part of the backlog.
behind=$(q "SELECT round(pg_wal_lsn_diff(pg_current_wal_lsn(), sent_lsn) / 1048576.0, 1)
              FROM pg_stat_replication WHERE application_name = 'walq consume'")
echo "the walsender's sent position is $behind MB behind the server's WAL"
[ "$done_now" -lt "$JOBS" ] || fail "the slow handler finished the whole backlog; nothing was tested"

kill -TERM "$pid"
bg_wait "$pid" 60
assert_eq "$BG_RC" 0 "SIGTERM with a full memory: the consumer exits 0"
if grep -q reconnecting "$WORK/consumer.err"; then
    fail "the consumer lost its stream: $(grep reconnecting "$WORK/consumer.err" | head -n 3)"
fi
pass "all"
