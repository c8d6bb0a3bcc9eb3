#!/usr/bin/env bash
# shellcheck disable=SC2016  # wait_for evals its condition later
# The standby topology (PostgreSQL 16+): the group's slot on a hot standby,
# the outcomes on the primary; the consumer killed with -9 and the standby
# restarted under it; then a failover: the primary gone, the standby
# promoted, and the group read on from its slot there.  Debian 12 ships
# PostgreSQL 15 only: this test runs in the matrix's legs of 16 to 18
# (WALQ_TEST_PG, docs/testing.md) and skips, with the reason, on 15.
# shellcheck source=SCRIPTDIR/../lib/pgtest.sh
. "$(dirname "$0")/../lib/pgtest.sh"
pgtest_require_pg 16 "logical decoding on a standby needs PostgreSQL 16 or later (WALQ_TEST_PG=17 runs it)"
if [ "${WALQ_PLUGIN:-}" = wal2json ]; then
    pgtest_require_wal2json "the consumer reads wal2json here (WALQ_PLUGIN=wal2json)"
fi
require_walq
pass "using PostgreSQL $PGTEST_PG ($PGTEST_SERVER_BINDIR), plugin ${WALQ_PLUGIN:-default}"
pg_start
walq init
# pgoutput is walq's default: the consumers name no plugin, and the servers
# keep their default output_plugin_libraries (the harness allows wal2json).
if [ "${WALQ_PLUGIN:-pgoutput}" = pgoutput ]; then
    unset WALQ_PLUGIN
    if [ "$(q "SELECT count(*) FROM pg_settings WHERE name = 'output_plugin_libraries'")" = 1 ]; then
        q "ALTER SYSTEM SET output_plugin_libraries = 'pgoutput', 'test_decoding'" >/dev/null
        q "SELECT pg_reload_conf()" >/dev/null
    fi
fi
pg_start_standby replica
wait_for '[ "$(q_on replica "SELECT count(*) FROM walq.jobs")" = 0 ]' 30 "the standby to replay walq init"

# A backlog, read from the standby's snapshot; then jobs while streaming.
publish_sql s 300
walq_timeout 120 consume --source "$PGTEST_CONN_REPLICA" --primary "$PGTEST_CONN" \
    --group sb --queue s --drain --noop
assert_all_done sb '^s$' 300
bg "$WALQ_BIN" consume --source "$PGTEST_CONN_REPLICA" --primary "$PGTEST_CONN" \
    --group sb --queue s --noop
pid=$BG_PID
for _ in $(seq 1 5); do publish_sql s 100; done
wait_for '[ "$(done_count sb)" -ge 800 ]' 60 "800 jobs done from the standby"
kill -TERM "$pid"
bg_wait "$pid" 20
assert_eq "$BG_RC" 0 "the consumer exits 0 on SIGTERM"
assert_all_done sb '^s$' 800
assert_eq "$(q "SELECT count(*) FROM pg_replication_slots WHERE slot_type = 'logical'")" 0 \
    "no logical slot on the primary"
assert_eq "$(q_on replica "SELECT slot_name FROM pg_replication_slots WHERE slot_type = 'logical'")" \
    walq_sb "the group's slot lives on the standby"
assert_eq "$(q_on replica "SELECT plugin FROM pg_replication_slots WHERE slot_name = 'walq_sb'")" \
    "${WALQ_PLUGIN:-pgoutput}" "on ${WALQ_PLUGIN:-pgoutput}, no plugin named for pgoutput"
if [ -z "${WALQ_PLUGIN:-}" ]; then
    assert_eq "$(q "SELECT count(*) FROM pg_publication WHERE pubname = 'walq_sb'")" 1 \
        "its publication was made on the primary (a standby takes no DDL) and replayed"
fi

# kill -9 of the consumer mid-stream: the next one goes on from the slot
# and the cursor, and no job is recorded twice.
consume_bg() {
    bg "$WALQ_BIN" consume --source "$PGTEST_CONN_REPLICA" --primary "$PGTEST_CONN" \
        --group sb --queue s --noop --status-interval 1
    pid=$BG_PID
}
consume_bg
for _ in $(seq 1 10); do publish_sql s 100; done
wait_for '[ "$(done_count sb)" -ge 1000 ]' 60 "jobs done before the kill"
kill -KILL "$pid"
bg_wait "$pid" 20
consume_bg
wait_for '[ "$(done_count sb)" -ge 1800 ]' 60 "1800 jobs done after kill -9"

# The standby restarted (fast) and crashed (immediate) under the consumer,
# which reconnects to it.
for restart in pg_restart_extra pg_crash_extra; do
    n=$(done_count sb)
    "$restart" replica
    publish_sql s 100
    wait_for '[ "$(done_count sb)" -ge $((n + 100)) ]' 90 "100 more jobs after $restart of the standby"
done
kill -TERM "$pid"
bg_wait "$pid" 20
assert_eq "$BG_RC" 0 "the consumer exits 0 on SIGTERM after the kill -9 and the restarts"
assert_all_done sb '^s$' 2000

# Without hot_standby_feedback the standby refuses, with the fix named.
q_on replica "ALTER SYSTEM SET hot_standby_feedback = off" >/dev/null
q_on replica "SELECT pg_reload_conf()" >/dev/null
sleep 0.5
capture walq_timeout 30 consume --source "$PGTEST_CONN_REPLICA" --primary "$PGTEST_CONN" \
    --group sb2 --queue s --drain --noop
assert_eq "$CAP_RC" 1 "hot_standby_feedback = off: exit 1"
assert_match "$CAP_ERR" 'hot_standby_feedback = off' "the error names the setting"
assert_match "$CAP_ERR" 'HINT: +Set hot_standby_feedback = on' "with the fix"
q_on replica "ALTER SYSTEM RESET hot_standby_feedback" >/dev/null
q_on replica "SELECT pg_reload_conf()" >/dev/null

# A failover: jobs the consumer has not seen reach the standby, the primary
# goes, the standby is promoted, and the group carries on there with its slot,
# sources and primary both the promoted server.
publish_sql s 300
wait_for '[ "$(q_on replica "SELECT pg_last_wal_replay_lsn() >= '"'"'$(q "SELECT pg_current_wal_lsn()")'"'"'")" = t ]' \
    30 "the standby to replay the primary's last WAL"
pg_stop
pg_promote replica
export PGHOST=$PGTEST_DIR_REPLICA
PGPORT=${PGTEST_CONN_REPLICA#* port=}
PGPORT=${PGPORT%% *}
assert_eq "$(q "SELECT pg_is_in_recovery()")" f "PGHOST now names the promoted standby"
publish_sql s 200
walq_timeout 120 consume --source "$PGTEST_CONN_REPLICA" --primary "$PGTEST_CONN_REPLICA" \
    --group sb --queue s --drain --noop
assert_all_done sb '^s$' 2500
assert_eq "$(q "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'walq_sb'")" 1 \
    "the group's slot carried over the promotion"
pass "all"
