#!/usr/bin/env bash
# shellcheck disable=SC2016  # wait_for evals its condition later
# An idle group does not pin WAL.  Group "idle" reads queue "quiet", where
# nothing is ever published, while other traffic writes at least 200 MB of
# WAL: jobs of other queues inserted into walq.jobs in bulk (which its slot
# decodes and it must skip) and bulk inserts into an unrelated table.  Soon
# after the traffic stops, its slot is within 1 MB of the server's flushed
# WAL, because with nothing in flight it confirms the positions the server
# tells it about.  A plain slot that nobody reads shows what it would be
# otherwise.
# shellcheck source=SCRIPTDIR/../lib/pgtest.sh
. "$(dirname "$0")/../lib/pgtest.sh"
require_walq
# Checkpoints may not remove what the unread slot holds; the WAL it keeps is
# the point of the comparison.
pg_start "max_wal_size = 1GB" "checkpoint_timeout = 30min"
walq init

MB=1048576
lag() {
    q "SELECT coalesce(pg_wal_lsn_diff(pg_current_wal_flush_lsn(), confirmed_flush_lsn), -1)::bigint
         FROM pg_replication_slots WHERE slot_name = '$1'"
}
mb() { awk -v b="$1" -v m="$MB" 'BEGIN { printf "%.1f", b / m }'; }

q "SELECT pg_create_logical_replication_slot('unread', 'wal2json')" >/dev/null
q "CREATE TABLE unrelated (id bigint, pad text)" >/dev/null

bg "$WALQ_BIN" consume --group idle --queue quiet --noop 2>"$WORK/consumer.err"
pid=$BG_PID
wait_for "slot_active walq_idle" 30 "the consumer to stream from slot walq_idle"
pass "group idle is streaming"

# The traffic: 11 rounds of 5,000 jobs of two other queues and 10,000 rows
# of about 2 kB (just short of compression) in another table, each in a
# transaction of its own.
cat >"$WORK/traffic.sh" <<'EOF'
set -eu
psql() { "$PGTEST_BINDIR/psql" -X -q -v ON_ERROR_STOP=1 "$@"; }
for round in $(seq 1 11); do
    psql -c "INSERT INTO walq.jobs (queue, payload)
             SELECT CASE WHEN g % 2 = 0 THEN 'busy' ELSE 'other' END,
                    jsonb_build_object('round', $round, 'n', g, 'to', 'user' || g || '@example.com')
               FROM generate_series(1, 5000) g"
    psql -c "INSERT INTO unrelated SELECT g, repeat(md5(g::text), 60) FROM generate_series(1, 10000) g"
done
EOF
start_lsn=$(q "SELECT pg_current_wal_lsn()")
t0=$(date +%s.%N)
PGTEST_BINDIR=$PGTEST_BINDIR bg bash "$WORK/traffic.sh"
traffic=$BG_PID

# Meanwhile, the idle group's lag every half second.
max_during=0
samples=0
while kill -0 "$traffic" 2>/dev/null && ! _pgtest_exited "$traffic"; do
    l=$(lag walq_idle)
    samples=$((samples + 1))
    [ "$l" -le "$max_during" ] || max_during=$l
    slot_active walq_idle || fail "slot walq_idle is not active during the traffic"
    sleep 0.5
done
bg_wait "$traffic" 120
assert_eq "$BG_RC" 0 "the traffic ran"
t1=$(date +%s.%N)
wal=$(q "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '$start_lsn')::bigint")
echo "traffic: $(mb "$wal") MB of WAL in $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }') s"
[ "$wal" -ge $((200 * MB)) ] || fail "the traffic wrote only $(mb "$wal") MB of WAL, not 200"
pass "the traffic wrote at least 200 MB of WAL"
echo "idle group's slot during the traffic: at most $(mb "$max_during") MB behind ($samples samples)"

# After the traffic: within 5 s, the idle slot is within 1 MB of the flushed WAL.
deadline=$(awk -v t="$t1" 'BEGIN { printf "%.3f", t + 5 }')
until l=$(lag walq_idle) && [ "$l" -ge 0 ] && [ "$l" -lt "$MB" ]; do
    awk -v d="$deadline" -v n="$(date +%s.%N)" 'BEGIN { exit !(n < d) }' ||
        fail "5 s after the traffic, slot walq_idle is $(mb "$l") MB behind the flushed WAL (1 MB allowed)"
    sleep 0.1
done
t2=$(date +%s.%N)
echo "idle group's slot within 1 MB of the flushed WAL $(awk -v a="$t1" -v b="$t2" 'BEGIN { printf "%.2f", b - a }') s after the traffic ($l bytes behind)"
pass "the idle group's slot is within 1 MB of the flushed WAL"

unread=$(lag unread)
echo "the unread slot: $(mb "$unread") MB behind"
[ "$unread" -ge $((200 * MB)) ] || fail "the unread slot is only $(mb "$unread") MB behind"
pass "a slot nobody reads holds the whole traffic back"

assert_eq "$(q "SELECT count(*) FROM ($(recorded_sql idle)) r")" 0 \
    "group idle recorded nothing: none of the traffic was its"
slot_active walq_idle || fail "slot walq_idle is not active after the traffic"
kill -TERM "$pid"
bg_wait "$pid" 20
assert_eq "$BG_RC" 0 "SIGTERM: the consumer exits 0"
if grep -q reconnecting "$WORK/consumer.err"; then
    fail "the consumer lost its connection: $(grep reconnecting "$WORK/consumer.err" | head -n 3)"
fi
pass "all"
