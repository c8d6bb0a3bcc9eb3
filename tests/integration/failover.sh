#!/usr/bin/env bash
# shellcheck disable=SC2016  # wait_for evals its condition later
# Failover slots (PostgreSQL 17+): a group reading on the primary with
# --failover-slot has its slot kept on a standby with sync_replication_slots;
# the copy cannot be read before a promotion (walq says so); after the
# primary is gone and the standby promoted, the group reads on from the copy
# there, with no resynchronization, and every job is done exactly once.
# Before 17, --failover-slot is refused with the reason.
# shellcheck source=SCRIPTDIR/../lib/pgtest.sh
. "$(dirname "$0")/../lib/pgtest.sh"
require_walq
pg_start
walq init
publish_sql q 100

if [ "$(q "SHOW server_version_num")" -lt 170000 ]; then
    capture walq_timeout 30 consume --group fo --queue q --failover-slot --drain --noop
    printf '%s\n' "$CAP_ERR" | sed 's/^/    | /'
    assert_eq "$CAP_RC" 1 "--failover-slot before PostgreSQL 17: consume exits 1"
    assert_match "$CAP_ERR" 'failover slots came with PostgreSQL 17' "it says why"
    assert_eq "$(q "SELECT count(*) FROM pg_replication_slots")" 0 "and makes no slot"
    pgtest_skip "failover slots need PostgreSQL 17 or later (WALQ_TEST_PG=17 runs the rest)"
fi

failover_of() { q "SELECT coalesce((SELECT failover FROM pg_replication_slots WHERE slot_name = '$1'), false)"; }

# A slot made without the option becomes a failover slot when it is given.
walq_timeout 60 consume --group fo --queue q --drain --noop
assert_eq "$(failover_of walq_fo)" f "without --failover-slot the slot is a plain one"
walq_timeout 60 consume --group fo --queue q --failover-slot --drain --noop 2>"$WORK/alter.log"
assert_match "$(cat "$WORK/alter.log")" 'is a failover slot now' "an existing slot is made one"
assert_eq "$(failover_of walq_fo)" t "pg_replication_slots says failover"
assert_all_done fo '^q$' 100

# A standby that keeps a copy of the failover slots: it names the database
# in primary_conninfo, and the primary waits for it before logical
# walsenders send what it has not received.
pg_start_standby standby "sync_replication_slots = on"
conninfo=$(q_on standby "SHOW primary_conninfo")
q_on standby "ALTER SYSTEM SET primary_conninfo = '${conninfo//\'/\'\'} dbname=postgres'" >/dev/null
q_on standby "SELECT pg_reload_conf()" >/dev/null
q "ALTER SYSTEM SET synchronized_standby_slots = 'standby'" >/dev/null
q "SELECT pg_reload_conf()" >/dev/null

publish_sql q 50
bg "$WALQ_BIN" consume --group fo --queue q --failover-slot --noop
pid=$BG_PID
wait_for '[ "$(done_count fo)" -ge 150 ]' 60 "150 jobs done on the primary"
synced() {
    q_on standby "SELECT count(*) FROM pg_replication_slots
                   WHERE slot_name = 'walq_fo' AND synced AND NOT temporary
                     AND confirmed_flush_lsn >= '$1'"
}
target=$(q "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = 'walq_fo'")
wait_for '[ "$(synced "$target")" = 1 ]' 90 "the standby's copy of walq_fo to reach $target"
pass "the standby keeps a copy of the group's slot"

# Jobs the consumer takes just before the primary goes, and jobs it never saw.
publish_sql q 30
wait_for '[ "$(done_count fo)" -ge 180 ]' 60 "180 jobs done on the primary"
kill -TERM "$pid"
bg_wait "$pid" 20
assert_eq "$BG_RC" 0 "the consumer on the primary exits 0 on SIGTERM"
target=$(q "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = 'walq_fo'")
wait_for '[ "$(synced "$target")" = 1 ]' 90 "the copy to reach $target"
# The copy is not to be read before a promotion.
capture walq_timeout 30 consume --source "$PGTEST_CONN_STANDBY" --primary "$PGTEST_CONN" \
    --group fo --queue q --drain --noop
printf '%s\n' "$CAP_ERR" | sed 's/^/    | /'
assert_eq "$CAP_RC" 1 "reading the group from the standby meanwhile: exit 1"
assert_match "$CAP_ERR" 'is the copy of the primary.s failover slot' "it says why"

publish_sql q 20
lsn=$(q "SELECT pg_current_wal_flush_lsn()")
wait_for '[ "$(q_on standby "SELECT pg_last_wal_replay_lsn() >= '"'$lsn'"'")" = t ]' 30 \
    "the standby to replay the last 20 jobs"

pg_stop
pg_promote standby
capture walq_timeout 60 consume --dbname "$PGTEST_CONN_STANDBY" --group fo --queue q --failover-slot \
    --drain --noop
printf '%s\n' "$CAP_ERR" | sed 's/^/    | /'
assert_eq "$CAP_RC" 0 "after the failover the group drains from the promoted standby"
if printf '%s\n' "$CAP_ERR" | grep -q 'resynchroniz'; then
    fail "the group resynchronized from walq.jobs instead of reading on from its slot"
fi
assert_match "$CAP_ERR" 'streaming slot "walq_fo"' "it streams the copied slot"
assert_eq "$(q_on standby "SELECT count(*), count(*) FILTER (WHERE status = 'done' AND attempts = 1)
                            FROM walq.job_status WHERE consumer_group = 'fo'")" "200|200" \
    "all 200 jobs done, each at its first attempt"
assert_eq "$(q_on standby "SELECT count(*) - count(DISTINCT job_id) FROM ($(recorded_sql fo)) r")" 0 \
    "no job recorded twice"
pass "all"
