#!/usr/bin/env bash
# shellcheck disable=SC2016  # wait_for evals its condition later
# A group whose slot is gone while its consumer is down: (a) the slot was
# dropped; (b) the slot was invalidated because the server's WAL moved on by
# more than max_slot_wal_keep_size.  At its next start the consumer warns
# about it, recreates the slot and resynchronizes from walq.jobs: every job,
# from before and after the loss, ends with exactly one outcome, done, and
# no job that was already done runs again.
# shellcheck source=SCRIPTDIR/../lib/pgtest.sh
. "$(dirname "$0")/../lib/pgtest.sh"
require_walq
pg_start
walq init

h=$(handler work.sh <<HANDLER
read -r _ || true
echo "\$WALQ_JOB_ID" >>"$WORK/ran-\$WALQ_GROUP.log"
exit 0
HANDLER
)

# drain GROUP QUEUE: runs the group until its jobs are done; the consumer's
# log goes to $WORK/GROUP.log and stays in CAP_ERR.
drain() {
    capture walq_timeout 120 consume --keep-outcomes --group "$1" --queue "$2" --concurrency 4 --drain -- "$h"
    printf '%s\n' "$CAP_ERR" >>"$WORK/$1.log"
    [ "$CAP_RC" -eq 0 ] || fail "group $1: --drain exited $CAP_RC: $CAP_ERR"
}

# ran_once GROUP N: the handler ran N times for the group, once per job.
ran_once() {
    local log=$WORK/ran-$1.log
    assert_eq "$(wc -l <"$log")|$(sort -u "$log" | wc -l)" "$2|$2" \
        "group $1: the handler ran once for each of the $2 jobs, none again after the resync"
}

slot_status() {
    q "SELECT coalesce(wal_status, '') FROM pg_replication_slots WHERE slot_name = '$1'"
}

# ---- (a) a dropped slot --------------------------------------------------

publish_sql qd 100
drain dg qd
assert_all_done dg '^qd$' 100
assert_eq "$(slot_status walq_dg)" reserved "group dg: its slot exists"

publish_sql qd 30     # published while the consumer is down, before the drop
q "SELECT pg_drop_replication_slot('walq_dg')" >/dev/null
publish_sql qd 50     # after the drop: no slot sees these
publish_sql qd 20
assert_eq "$(slot_status walq_dg)" "" "slot walq_dg dropped"

drain dg qd
assert_match "$CAP_ERR" 'WARNING: .*slot "walq_dg".*missing.*resynchroniz' \
    "dropped slot: the consumer warns that the slot is missing and it resynchronizes"
assert_eq "$(slot_status walq_dg)" reserved "group dg: its slot was recreated"
assert_all_done dg '^qd$' 200
ran_once dg 200

# Nothing special at the next start: no warning, no job again.
publish_sql qd 10
drain dg qd
if grep -q WARNING <<<"$CAP_ERR"; then
    fail "a start after the resync warns: $CAP_ERR"
fi
assert_all_done dg '^qd$' 210
ran_once dg 210

# ---- (b) an invalidated slot ---------------------------------------------

pg_conf "max_slot_wal_keep_size = '1MB'"
pg_restart
assert_eq "$(q "SHOW max_slot_wal_keep_size")" 1MB "max_slot_wal_keep_size = 1MB"
q "CREATE TABLE filler (x text)"

publish_sql q 100
drain g q
assert_all_done g '^q$' 100
assert_eq "$(slot_status walq_g)" reserved "group g: its slot holds its WAL"

publish_sql q 40      # published while the consumer is down, before the loss
publish_sql q 1

# Other traffic: WAL segments (16 MB each) filled, switched and checkpointed
# away until the slot has fallen more than 1 MB behind and is invalidated.
for i in $(seq 1 30); do
    q "INSERT INTO filler SELECT repeat(md5(g::text), 30) FROM generate_series(1, 3000) g" >/dev/null
    q "SELECT pg_switch_wal()" >/dev/null
    q "CHECKPOINT"
    [ "$(slot_status walq_g)" != lost ] || break
done
assert_eq "$(slot_status walq_g)" lost "slot walq_g invalidated after $i rounds of WAL"
pass "wal_status of slot walq_g: lost, $(q "SELECT pg_size_pretty(pg_current_wal_lsn() - '0/0')") of WAL written"

publish_sql q 50      # published after the loss
publish_sql q 9

drain g q
assert_match "$CAP_ERR" 'WARNING: .*slot "walq_g".*(invalidated|lost).*resynchroniz' \
    "invalidated slot: the consumer warns that the slot was invalidated and it resynchronizes"
assert_eq "$(slot_status walq_g)" reserved "group g: its slot was recreated"
assert_all_done g '^q$' 200
ran_once g 200

publish_sql q 10
drain g q
if grep -q WARNING <<<"$CAP_ERR"; then
    fail "a start after the resync warns: $CAP_ERR"
fi
assert_all_done g '^q$' 210
ran_once g 210
pass "all"
