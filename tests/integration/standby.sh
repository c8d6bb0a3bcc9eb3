#!/usr/bin/env bash
# shellcheck disable=SC2016  # wait_for evals its condition later
# The standby topology (PostgreSQL 16+): the group's slot on a hot standby,
# the outcomes on the primary.  Needs a PostgreSQL 16 or later server with
# wal2json; Debian 12 ships 15 only, so without one this test is skipped
# (exit 77) with the reason printed.
set -u
newest=""
for dir in /usr/lib/postgresql/*/bin; do
    v=$(basename "$(dirname "$dir")")
    if [[ $v =~ ^[0-9]+$ ]] && [ "$v" -ge 16 ] && [ -f "/usr/lib/postgresql/$v/lib/wal2json.so" ]; then
        newest=$dir
    fi
done
if [ -z "$newest" ]; then
    echo "SKIP: standby: logical decoding on a standby needs PostgreSQL 16 or later with wal2json" \
        "(postgresql-16-wal2json or newer), and none is installed; Debian 12 ships PostgreSQL 15" \
        "(tests/integration/standby_errors.sh covers what 15 can)"
    exit 77
fi
export PGTEST_BINDIR=$newest
# shellcheck source=SCRIPTDIR/../lib/pgtest.sh
. "$(dirname "$0")/../lib/pgtest.sh"
require_walq
pass "using $PGTEST_BINDIR"
pg_start
walq init
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

# Without hot_standby_feedback the standby refuses, with the fix named.
q_on replica "ALTER SYSTEM SET hot_standby_feedback = off" >/dev/null
q_on replica "SELECT pg_reload_conf()" >/dev/null
sleep 0.5
capture walq_timeout 30 consume --source "$PGTEST_CONN_REPLICA" --primary "$PGTEST_CONN" \
    --group sb2 --queue s --drain --noop
assert_eq "$CAP_RC" 1 "hot_standby_feedback = off: exit 1"
assert_match "$CAP_ERR" 'hot_standby_feedback = off' "the error names the setting"
assert_match "$CAP_ERR" 'HINT: +Set hot_standby_feedback = on' "with the fix"
pass "all"
