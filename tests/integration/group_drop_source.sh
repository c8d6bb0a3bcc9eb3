#!/usr/bin/env bash
# shellcheck disable=SC2016  # wait_for evals its condition later
# walq group drop when the slots are not on the primary: in the subscriber
# topology every group's slot (and its publication) lives on the replica.
# A drop that names no --source, or the wrong server, is refused before it
# changes anything (a reader records the system identifier of its slot's
# server); with --source it drops the slot and the publication on the
# replica and the records on the primary, and the other group reading the
# same replica goes on and does every job once.  walq status --source warns
# about the dropped group's slot before the drop, and walq serve --source
# shows it.
# shellcheck source=SCRIPTDIR/../lib/pgtest.sh
. "$(dirname "$0")/../lib/pgtest.sh"
require_walq
pg_start
pg_start_extra replica
P=$PGTEST_CONN
R=$PGTEST_CONN_REPLICA

walq init
capture walq replica setup --allow-insecure-subscription --primary "$P" --source "$R"
[ "$CAP_RC" -eq 0 ] || fail "replica setup failed: $CAP_ERR"
publish_sql work 30
publish_sql old 10

walq_timeout 60 consume --source "$R" --primary "$P" --group gone --queue old --drain --noop 2>/dev/null
bg "$WALQ_BIN" consume --source "$R" --primary "$P" --group stays --queue work --noop 2>"$WORK/stays.log"
stays=$BG_PID
wait_for '[ "$(q_on replica "SELECT count(*) FROM pg_replication_slots WHERE slot_name = '"'walq_stays'"' AND active")" = 1 ]' \
    30 "group stays to stream from the replica"
assert_eq "$(q_on replica "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'walq_gone'")" 1 \
    "group gone's slot is on the replica"
assert_eq "$(q "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'walq_gone'")" 0 \
    "and not on the primary"

# WAL on the replica that gone's slot keeps.
q_on replica "CREATE TABLE unrelated (id bigint, pad text)" >/dev/null
for _ in 1 2 3; do
    q_on replica "INSERT INTO unrelated SELECT g, repeat(md5(g::text), 20) FROM generate_series(1, 2000) g" >/dev/null
    q_on replica "SELECT pg_switch_wal()" >/dev/null
done
capture walq status --source "$R" --warn-retained 1MB
assert_eq "$CAP_RC" 3 "walq status --source warns"
assert_match "$CAP_ERR" 'slot "walq_gone" of consumer group "gone" retains [0-9]+ bytes' \
    "about the slot on the replica"

# serve reads the slots on the replica too.
bg "$WALQ_BIN" serve --http 127.0.0.1:0 --dbname "$P" --source "$R" 2>"$WORK/serve.log"
serve=$BG_PID
wait_for 'grep -q "on port [0-9]" "$WORK/serve.log"' 20 "walq serve to listen"
port=$(sed -n 's/.* on port \([0-9]*\).*/\1/p' "$WORK/serve.log" | head -1)
curl -sS -m 10 -o "$WORK/metrics" "http://127.0.0.1:$port/metrics"
kept=$(awk '$1 == "walq_slot_retained_wal_bytes{group=\"gone\",partition=\"0\",slot=\"walq_gone\"}" { print $2 }' "$WORK/metrics")
on_replica=$(q_on replica "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint
                             FROM pg_replication_slots WHERE slot_name = 'walq_gone'")
[ -n "$kept" ] && [ "$kept" -gt 1048576 ] && [ "$kept" -le "$on_replica" ] ||
    fail "walq serve --source: gone's slot retains '$kept' bytes; the replica says $on_replica"
pass "walq serve --source: gone's slot retains $kept bytes, as the replica says"
kill -TERM "$serve"
bg_wait "$serve" 15

# The wrong server: refused, nothing changed.
capture walq group drop gone --yes
assert_eq "$CAP_RC" 1 "group drop without --source is refused"
assert_match "$CAP_ERR" 'slot "walq_gone" of consumer group "gone" is on the server with system identifier [0-9]+, not on the primary' \
    "naming where the slot is"
assert_match "$CAP_ERR" 'HINT:  Give --source' "and the fix"
assert_eq "$(q "SELECT count(*) FROM walq.readers WHERE group_name = 'gone'")" 1 "the records stay"
assert_eq "$(q_on replica "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'walq_gone'")" 1 \
    "the slot stays"

pubs=$(q_on replica "SELECT count(*) FROM pg_publication WHERE pubname = 'walq_gone'")
capture walq group drop gone --yes --source "$R"
assert_eq "$CAP_RC" 0 "group drop --source exits 0"
assert_match "$CAP_ERR" "dropped consumer group \"gone\": 1 slot and $pubs publication" "it says what it dropped"
assert_eq "$(q_on replica "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'walq_gone'")" 0 \
    "the slot is gone from the replica"
assert_eq "$(q_on replica "SELECT count(*) FROM pg_publication WHERE pubname = 'walq_gone'")" 0 \
    "and its publication"
assert_eq "$(q "SELECT count(*) FROM walq.groups WHERE name = 'gone'") $(q "SELECT count(*) FROM walq.outcomes WHERE group_name = 'gone'") $(q "SELECT count(*) FROM walq.outcome_batches WHERE group_name = 'gone'")" \
    "0 0 0" "the records are gone from the primary"

publish_sql work 20
wait_for '[ "$(done_count stays)" -ge 50 ]' 60 "group stays to finish its 50 jobs"
kill -0 "$stays" || fail "group stays' consumer died"
assert_all_done stays '^work$' 50
pass "group drop with the slots on a replica"
