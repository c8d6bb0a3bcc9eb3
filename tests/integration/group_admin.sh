#!/usr/bin/env bash
# shellcheck disable=SC2016  # wait_for evals its condition later
# walq status's lag in seconds and its warning about a slot that keeps WAL
# with no reader; walq group list; walq group drop, which refuses while a
# consumer holds the group and otherwise removes its slot, its publication
# and every row that names it, and nothing of the other groups.
#
# Group "stale" reads queues qs and shared and is stopped most of the time;
# group "keep" reads qk and shared and runs throughout, with jobs published
# to it all along: it must end with every job done exactly once.
# shellcheck source=SCRIPTDIR/../lib/pgtest.sh
. "$(dirname "$0")/../lib/pgtest.sh"
require_walq
# A limit on the WAL a slot keeps, so that the server says how much more it
# may keep (safe_wal_size), and invalidates a slot at the end.
pg_start "max_wal_size = 1GB" "checkpoint_timeout = 30min" "max_slot_wal_keep_size = 64MB"
walq init

# cell OUTPUT ROWKEY COLUMN: the cell under COLUMN of the row whose first
# field is ROWKEY.  The columns after held_by are counted from the end of
# the line, since held_by ("host pid N") spans several fields.
cell() {
    printf '%s\n' "$1" | awk -v g="$2" -v c="$3" '
        $1 == "group" { nh = NF; h = NF
                        for (i = 1; i <= NF; i++) { if ($i == c) k = i; if ($i == "held_by") h = i }
                        next }
        k && $1 == g { print (k <= h ? $k : $(NF - (nh - k))); exit }'
}

# The keep group runs from here to the end.
bg "$WALQ_BIN" consume --group keep --queue qk --queue shared --noop 2>"$WORK/keep.log"
keep_pid=$BG_PID
wait_for "slot_active walq_keep" 30 "group keep to stream"
publish_sql qk 100
walq_timeout 60 consume --group stale --queue qs --queue shared --drain --noop 2>/dev/null
publish_sql qk 100

# -- lag in seconds --------------------------------------------------------
# A job the stopped group has not taken, published 5 s ago, and one with a
# dedup key in the queue both groups read, which keep finishes and stale
# does not: its key is held for stale.
q "INSERT INTO walq.jobs (queue, payload) VALUES ('qs', '{\"late\": true}')" >/dev/null
q "SELECT walq.publish('shared', '{\"k\": 1}', dedup_key => 'only-one')" >/dev/null
sleep 5
wait_for '[ "$(q "SELECT queued FROM walq.group_counts('"'keep'"')")" = 0 ]' 30 \
    "group keep to take its jobs"
capture walq status
printf '%s\n' "$CAP_OUT" | sed 's/^/    | /'
assert_eq "$CAP_RC" 0 "walq status exits 0: nothing retains 1 GB"
lag_s=$(cell "$CAP_OUT" stale lag_s)
assert_match "$lag_s" '^[0-9]+(\.[0-9])?$' "walq status: lag_s of stale is seconds ($lag_s)"
awk -v l="$lag_s" 'BEGIN { exit !(l >= 5 && l < 60) }' ||
    fail "walq status: stale's oldest queued job waited 5 s, but lag_s is $lag_s"
assert_eq "$(cell "$CAP_OUT" stale queued)" 2 "walq status: stale has the 2 jobs queued"
assert_eq "$(cell "$CAP_OUT" keep lag_s)" 0 "walq status: keep is caught up, lag_s 0"
assert_match "$(cell "$CAP_OUT" keep recv_lag)" '^[0-9]+$' "walq status: recv_lag of keep's walsender"
assert_eq "$(cell "$CAP_OUT" stale recv_lag)" - "walq status: no recv_lag without a walsender"
assert_eq "$(q "SELECT count(*) FROM walq.dedup_keys WHERE dedup_key = 'only-one'")" 1 \
    "the dedup key is held while stale has not finished its job"

# -- the retention warning -------------------------------------------------
# WAL that stale's slot cannot let go of: rows of another table, and segment
# switches, until it keeps more than 2 MB.
q "CREATE TABLE unrelated (id bigint, pad text)" >/dev/null
retained() {
    q "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint
         FROM pg_replication_slots WHERE slot_name = 'walq_stale'"
}
for _ in $(seq 1 20); do
    [ "$(retained)" -le 2200000 ] || break
    q "INSERT INTO unrelated SELECT g, repeat(md5(g::text), 20) FROM generate_series(1, 2000) g" >/dev/null
    q "SELECT pg_switch_wal()" >/dev/null
done
kept=$(retained)
[ "$kept" -gt 2200000 ] || fail "stale's slot retains only $kept bytes"
publish_sql qk 50

capture walq status --warn-retained 1MB
printf '%s\n' "$CAP_ERR" | sed 's/^/    ! /'
assert_eq "$CAP_RC" 3 "walq status exits 3 when it warns"
assert_match "$CAP_ERR" 'WARNING:  slot "walq_stale" of consumer group "stale" retains [0-9]+ bytes of WAL \([0-9.]+ MB\) and no reader holds it' \
    "the warning names the slot, the group and the bytes"
said=$(printf '%s\n' "$CAP_ERR" | sed -n 's/.* retains \([0-9]*\) bytes.*/\1/p')
[ "$said" -ge "$kept" ] && [ "$said" -le $((kept + 4 * 1048576)) ] ||
    fail "the warning says $said bytes; the slot retains $kept by pg_replication_slots"
assert_match "$CAP_ERR" 'HINT:  .*walq consume --group stale.*walq group drop stale --yes' \
    "the hint gives both fixes"
assert_match "$CAP_ERR" 'wal_status reserved; the server invalidates it in [0-9.]+ MB more\)' \
    "the warning says how much more the server lets the slot keep"
case $CAP_ERR in *'"keep"'*) fail "a warning about keep, whose reader is live: $CAP_ERR" ;; esac
r=$(cell "$CAP_OUT" stale retained)
[ "$r" -ge "$kept" ] || fail "walq status: retained $r, less than the $kept bytes the slot keeps"
capture walq status --warn-retained 1GB
assert_eq "$CAP_RC" 0 "walq status exits 0 when the slot keeps less than --warn-retained"
assert_eq "$CAP_ERR" "" "no warning under the threshold"
capture walq status --warn-retained lots
assert_eq "$CAP_RC" 2 "a bad --warn-retained is a usage error"
assert_match "$CAP_ERR" 'invalid --warn-retained "lots"' "naming the value"

capture walq group list --warn-retained 1MB
printf '%s\n' "$CAP_OUT" | sed 's/^/    | /'
assert_eq "$CAP_RC" 3 "walq group list warns too"
assert_eq "$(cell "$CAP_OUT" stale live)" 0/1 "group list: stale has no live reader"
assert_eq "$(cell "$CAP_OUT" keep live)" 1/1 "group list: keep has its reader live"
assert_eq "$(cell "$CAP_OUT" stale slots)" walq_stale "group list: stale's slot"
assert_eq "$(cell "$CAP_OUT" stale plugin)" \
    "$(q "SELECT plugin FROM pg_replication_slots WHERE slot_name = 'walq_stale'")" "group list: plugin"
assert_eq "$(cell "$CAP_OUT" stale queued)" 2 "group list: stale's queued jobs"
assert_eq "$(cell "$CAP_OUT" stale "done")" \
    "$(q "SELECT done FROM walq.group_counts('stale')")" "group list: stale's done jobs"

# With stale's consumer running and caught up: no warning, lag 0.
bg "$WALQ_BIN" consume --group stale --queue qs --queue shared --noop 2>"$WORK/stale.log"
stale=$BG_PID
wait_for '[ "$(q "SELECT queued FROM walq.group_counts('"'stale'"')")" = 0 ]' 30 \
    "group stale to take its jobs"
capture walq status --warn-retained 1MB
assert_eq "$CAP_RC" 0 "walq status exits 0 with stale's consumer live"
assert_eq "$CAP_ERR" "" "no warning with stale's consumer live"
assert_eq "$(cell "$CAP_OUT" stale lag_s)" 0 "walq status: stale is caught up, lag_s 0"
assert_eq "$(q "SELECT count(*) FROM walq.dedup_keys WHERE dedup_key = 'only-one'")" 0 \
    "the dedup key is free once both groups finished its job"
q "SELECT walq.publish('shared', '{\"k\": 2}', dedup_key => 'only-two')" >/dev/null
wait_for '[ "$(q "SELECT queued FROM walq.group_counts('"'keep'"')")" = 0 ]' 30 "keep: only-two"

# -- group drop ------------------------------------------------------------
capture walq group drop stale
assert_eq "$CAP_RC" 2 "group drop without --yes is refused"
assert_match "$CAP_ERR" 'HINT:  Add --yes' "naming --yes"
capture walq group drop stale --yes
assert_eq "$CAP_RC" 1 "group drop is refused while stale's consumer runs"
assert_match "$CAP_ERR" "consumer group \"stale\" is in use: reader \"walq_stale\" is held by [^ ]+ pid $stale" \
    "the refusal names the holding process"
assert_match "$CAP_ERR" 'HINT:  Stop every "walq consume" of the group' "and what to do"
assert_eq "$(q "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'walq_stale'")" 1 \
    "the refused drop kept the slot"
assert_eq "$(q "SELECT count(*) FROM walq.readers WHERE group_name = 'stale'")" 1 \
    "the refused drop kept the reader"

kill -TERM "$stale"
bg_wait "$stale" 30
assert_eq "$BG_RC" 0 "stale's consumer stops"
# Stale leaves a job unfinished behind it, with a dedup key keep finishes.
q "SELECT walq.publish('shared', '{\"k\": 3}', dedup_key => 'only-three')" >/dev/null
wait_for '[ "$(q "SELECT queued FROM walq.group_counts('"'keep'"')")" = 0 ]' 30 "keep: only-three"
assert_eq "$(q "SELECT count(*) FROM walq.dedup_keys WHERE dedup_key = 'only-three'")" 1 \
    "only-three's key is held for stale"

# Every table of walq's schemas with a group_name column.
group_tables=$(q "SELECT string_agg(format('%I.%I', c.table_schema, c.table_name), ' ')
                    FROM information_schema.columns c
                    JOIN pg_class k ON k.oid = format('%I.%I', c.table_schema, c.table_name)::regclass
                   WHERE c.table_schema LIKE 'walq%' AND c.column_name = 'group_name'
                     AND k.relkind IN ('r', 'p') AND NOT k.relispartition")
rows_of() {
    local t total=0 n
    for t in $group_tables; do
        n=$(q "SELECT count(*) FROM $t WHERE group_name = '$1'")
        total=$((total + n))
    done
    echo "$total"
}
before_keep=$(rows_of keep)
[ "$(rows_of stale)" -gt 0 ] || fail "stale has no rows in $group_tables before the drop"
pub_exists() { q "SELECT count(*) FROM pg_publication WHERE pubname = '$1'"; }
pubs=$(pub_exists walq_stale)

# A member of walq_admin may drop a group's records, but dropping its slot
# takes the REPLICATION attribute: without it nothing is removed.
q "CREATE ROLE mon LOGIN; GRANT walq_admin TO mon;
   CREATE ROLE adm LOGIN REPLICATION; GRANT walq_admin TO adm" >/dev/null
capture env PGUSER=mon "$WALQ_BIN" group drop stale --yes
assert_eq "$CAP_RC" 1 "group drop as a walq_admin without REPLICATION fails"
assert_match "$CAP_ERR" 'could not drop the slot: ' "saying what failed"
assert_match "$CAP_ERR" 'HINT:  .*REPLICATION attribute' "and what it needs"
assert_eq "$(q "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'walq_stale'")" 1 \
    "the failed drop kept the slot"
assert_eq "$(q "SELECT count(*) FROM walq.readers WHERE group_name = 'stale'")" 1 \
    "the failed drop kept the records (rolled back)"

publish_sql qk 200 &
publisher=$!
capture env PGUSER=adm "$WALQ_BIN" group drop stale --yes
wait "$publisher"
assert_eq "$CAP_RC" 0 "group drop stale --yes exits 0 as a walq_admin with REPLICATION"
assert_match "$CAP_ERR" "dropped consumer group \"stale\": 1 slot and $pubs publication" "it says what it dropped"
assert_eq "$(q "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'walq_stale'")" 0 \
    "the slot is gone"
assert_eq "$(pub_exists walq_stale)" 0 "the publication is gone"
assert_eq "$(q "SELECT count(*) FROM walq.groups WHERE name = 'stale'")" 0 "the group is gone"
assert_eq "$(rows_of stale)" 0 "no row names stale in any of: $group_tables"
assert_eq "$(q "SELECT count(*) FROM walq.dedup_keys WHERE dedup_key = 'only-three'")" 0 \
    "only-three's key is free: keep, the one group left, finished it"
[ "$(rows_of keep)" -ge "$before_keep" ] || fail "keep lost rows in the drop"
assert_eq "$(q "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'walq_keep'")" 1 \
    "keep's slot is there"
[ "$(pub_exists walq_keep)" = "$pubs" ] || fail "keep's publication changed"

capture walq group drop stale --yes
assert_eq "$CAP_RC" 0 "a second drop exits 0"
assert_match "$CAP_ERR" 'consumer group "stale" does not exist; nothing to drop' "and does nothing"

# keep went on throughout, and did every job of its queues once.
publish_sql qk 50
total=$(q "SELECT count(*) FROM walq.jobs WHERE queue IN ('qk', 'shared')")
wait_for '[ "$(done_count keep)" -ge '"$total"' ]' 60 "keep to finish its $total jobs"
kill -0 "$keep_pid" || fail "keep's consumer died"
assert_all_done keep '^(qk|shared)$' "$total"
capture walq status
assert_eq "$(cell "$CAP_OUT" stale slot)" "" "walq status no longer shows stale"
assert_eq "$(cell "$CAP_OUT" keep slot)" walq_keep "walq status shows keep"
# A queue name with a terminal escape in it reaches neither output raw.
walq_timeout 60 consume --group esc --queue $'q\e]0;pwned\a' --drain --noop 2>/dev/null
for cmd in status "group list"; do
    # shellcheck disable=SC2086  # two words on purpose
    capture walq $cmd
    case $CAP_OUT in *$'\e'* | *$'\a'*) fail "walq $cmd printed a control character raw" ;; esac
    assert_match "$CAP_OUT" 'q\\e\]0;pwned\\x07' "walq $cmd shows the queue's control characters escaped"
done
# A slot the server invalidated: group esc's, once its consumer is gone and
# more WAL than max_slot_wal_keep_size was written since.
kill -TERM "$keep_pid"
bg_wait "$keep_pid" 30
for _ in $(seq 1 6); do
    q "INSERT INTO unrelated SELECT g, repeat(md5(g::text), 20) FROM generate_series(1, 2000) g" >/dev/null
    q "SELECT pg_switch_wal()" >/dev/null
done
q "CHECKPOINT" >/dev/null
wait_for '[ "$(q "SELECT wal_status FROM pg_replication_slots WHERE slot_name = '"'walq_esc'"'")" = lost ]' 30 \
    "the server to invalidate walq_esc"
capture walq status --group esc
assert_eq "$CAP_RC" 3 "walq status warns about an invalidated slot"
assert_match "$CAP_ERR" 'WARNING:  slot "walq_esc" of consumer group "esc" was invalidated by the server \(wal_status lost\)' \
    "saying the server invalidated it"
assert_match "$CAP_ERR" 'HINT:  Start "walq consume --group esc" to recreate it' "and what to do"
pass "status lag and warning, group list and group drop"
