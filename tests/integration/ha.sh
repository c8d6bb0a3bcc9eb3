#!/usr/bin/env bash
# shellcheck disable=SC2016  # wait_for evals its condition later
# High availability: a second consumer of the same group stands by while the
# first runs, takes over within seconds of its kill -9, and nothing is lost
# or recorded twice.  walq status shows which process holds the slot.
# shellcheck source=SCRIPTDIR/../lib/pgtest.sh
. "$(dirname "$0")/../lib/pgtest.sh"
require_walq
pg_start
walq init

N=1500
h=$(handler work.sh <<HANDLER
cat >/dev/null
echo "\$WALQ_JOB_ID" >>"$WORK/ran.log"
sleep 0.01
HANDLER
)
touch "$WORK/ran.log"
publish_sql ha $((N / 3))

# held_by: the held_by cell of group ha in walq status.
held_by() {
    "$WALQ_BIN" status --group ha | awk '
        $1 == "group" { for (i = 1; i <= NF; i++) if ($i == "held_by") k = i; next }
        $1 == "ha" { print $k, $(k + 1), $(k + 2) }'
}

bg "$WALQ_BIN" consume --keep-outcomes --group ha --queue ha --concurrency 4 -- "$h" 2>"$WORK/a.log"
a=$BG_PID
wait_for "slot_active walq_ha" 30 "the first consumer to stream"
bg "$WALQ_BIN" consume --keep-outcomes --group ha --queue ha --concurrency 4 -- "$h" 2>"$WORK/b.log"
b=$BG_PID
wait_for 'grep -q "standing by" "$WORK/b.log"' 20 "the second consumer to stand by"
assert_match "$(cat "$WORK/b.log")" "held by [^ ]+ pid $a, backend pid [0-9]+; standing by" \
    "the standby names the holder"
assert_match "$(held_by)" "pid $a\$" "walq status: the slot is held by the first consumer (pid $a)"

# A third one, stopped while it stands by, exits 0 at once.
bg "$WALQ_BIN" consume --keep-outcomes --group ha --queue ha --noop 2>"$WORK/c.log"
c=$BG_PID
wait_for 'grep -q "standing by" "$WORK/c.log"' 20 "the third consumer to stand by"
kill -TERM "$c"
bg_wait "$c" 5
assert_eq "$BG_RC" 0 "SIGTERM to a consumer standing by: exit 0"

for _ in $(seq 1 5); do publish_sql ha $((N / 15)); done
wait_for '[ "$(done_count ha)" -ge 400 ]' 60 "400 jobs done"
kill -KILL "$a"
t0=$(date +%s%N)
bg_wait "$a" 10
pass "kill -9 of the holder with $(done_count ha) of $N jobs done"
wait_for 'grep -q "took the reader over" "$WORK/b.log"' 10 "the standby to take over"
wait_for "slot_active walq_ha" 10 "the standby to stream"
ms=$((($(date +%s%N) - t0) / 1000000))
[ "$ms" -le 10000 ] || fail "takeover took $ms ms"
pass "the standby took over and streams ${ms} ms after the kill"
assert_match "$(held_by)" "pid $b\$" "walq status: now held by the second consumer (pid $b)"

# Fencing: the holder freezes and loses its sessions (a network partition,
# say); a standby takes over; the old holder comes back, sees that the reader
# moved on (its epoch), drops what it had in memory and stands by.
bg "$WALQ_BIN" consume --keep-outcomes --group ha --queue ha --concurrency 4 -- "$h" 2>"$WORK/d.log"
d=$BG_PID
wait_for 'grep -q "standing by" "$WORK/d.log"' 20 "a third consumer to stand by"
publish_sql ha $((N / 15))
kill -STOP "$b"
q "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
    WHERE pid IN (walq.reader_lock_pid('walq_ha'),
                  (SELECT active_pid FROM pg_replication_slots WHERE slot_name = 'walq_ha'))" >/dev/null
wait_for 'grep -q "took the reader over" "$WORK/d.log"' 10 "the third consumer to take over"
kill -CONT "$b"
wait_for 'grep -q "another process took this reader over" "$WORK/b.log"' 20 \
    "the old holder to notice it was replaced"
wait_for '[ "$(grep -c "standing by" "$WORK/b.log")" -ge 1 ]' 20 "the old holder to stand by"
assert_match "$(held_by)" "pid $d\$" "walq status: held by the third consumer (pid $d)"

for _ in $(seq 1 4); do publish_sql ha $((N / 15)); done
wait_for '[ "$(done_count ha)" -ge '"$N"' ]' 90 "all $N jobs done"
sleep 0.3
for p in "$b" "$d"; do
    kill -TERM "$p"
    bg_wait "$p" 20
    assert_eq "$BG_RC" 0 "consumer $p exits 0 on SIGTERM"
done
assert_all_done ha '^ha$' "$N"
assert_eq "$(sort -u "$WORK/ran.log" | wc -l)" "$N" "every job ran"
pass "handler runs: $(wc -l <"$WORK/ran.log") for $N jobs (reruns after kill -9 are allowed)"
assert_eq "$(q "SELECT epoch FROM walq.readers WHERE group_name = 'ha'")" 3 \
    "the reader was taken three times (epoch 3)"
assert_eq "$(held_by | cut -d" " -f1)" "-" "walq status: no holder once both are gone"
pass "all"
