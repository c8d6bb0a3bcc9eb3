#!/usr/bin/env bash
# shellcheck disable=SC2016  # wait_for evals its condition later
# The harness itself (tests/lib/pgtest.sh) on the server of the leg
# (WALQ_TEST_PG): the version asked for, walq init, restart and crash, an
# extra server, a standby that replays, is restarted, crashed and promoted,
# and the cleanup of a test killed outright, which leaves no server and no
# directory behind.  No output plugin is needed, so every leg runs it.
# shellcheck source=SCRIPTDIR/../lib/pgtest.sh
. "$(dirname "$0")/../lib/pgtest.sh"
require_walq
pg_start
assert_eq "$(q "SELECT current_setting('server_version_num')::int / 10000")" "$PGTEST_PG" \
    "the server is PostgreSQL ${WALQ_TEST_PG:-15}"
assert_eq "$(q "SHOW wal_level")" logical "wal_level = logical"
if [ "$PGTEST_WAL2JSON" = 1 ] &&
    [ "$(q "SELECT count(*) FROM pg_settings WHERE name = 'output_plugin_libraries'")" = 1 ]; then
    assert_match "$(q "SHOW output_plugin_libraries")" 'wal2json' "wal2json is allowed"
fi
walq init >/dev/null
walq init >/dev/null
assert_eq "$(q "SELECT count(*) FROM walq.jobs")" 0 "walq init, twice"
publish_sql h 10

pg_restart
assert_eq "$(q "SELECT count(*) FROM walq.jobs")" 10 "the jobs after pg_restart"
pg_crash
assert_eq "$(q "SELECT count(*) FROM walq.jobs")" 10 "the jobs after pg_crash"

pg_start_extra other
assert_eq "$(q_on other "SELECT current_setting('server_version_num')::int / 10000")" \
    "$PGTEST_PG" "an extra server of the same version"
assert_eq "$(q_on other "SELECT to_regclass('walq.jobs') IS NULL")" t "a cluster of its own"
pg_stop_extra other

if [ "$PGTEST_PG" -ge 16 ]; then
    # Logical decoding on a standby, the reason for the standby topology.
    pg_start_standby replica
    wait_for '[ "$(q_on replica "SELECT count(*) FROM walq.jobs")" = 10 ]' 30 "the standby's copy"
    assert_eq "$(q_on replica "SELECT pg_is_in_recovery()")" t "the standby is in recovery"
    publish_sql h 5
    wait_for '[ "$(q_on replica "SELECT count(*) FROM walq.jobs")" = 15 ]' 30 "the standby to replay"
    q "SELECT pg_log_standby_snapshot()" >/dev/null
    assert_match "$(q_on replica "SELECT pg_create_logical_replication_slot('h', 'test_decoding')")" \
        '^\(h,' "a logical slot on the standby"
    pg_restart_extra replica
    pg_crash_extra replica
    publish_sql h 5
    wait_for '[ "$(q_on replica "SELECT count(*) FROM walq.jobs")" = 20 ]' 30 \
        "the standby to replay after its restart and crash"
    pg_promote replica
    q_on replica "INSERT INTO walq.jobs (queue, payload) VALUES ('h', '{}')" >/dev/null
    assert_eq "$(q_on replica "SELECT count(*) FROM walq.jobs")" 21 "the promoted standby takes writes"
    assert_eq "$(q_on replica "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'h'")" 1 \
        "its logical slot survives the promotion"
fi

# A test killed outright: its watchdog stops its server and removes its
# directories.
cat >"$WORK/killed.sh" <<EOF
. '$WALQ_SOURCE_DIR/tests/lib/pgtest.sh'
pg_start
echo "\$PGTEST_DIR \$WORK" >'$WORK/killed.dirs'
head -c 1 "\$PGTEST_DATA/postmaster.pid" >/dev/null
sleep 600
EOF
TEST_NAME=killed bg bash "$WORK/killed.sh"
killed=$BG_PID
wait_for '[ -s "$WORK/killed.dirs" ]' 60 "the killed test's server"
# shellcheck disable=SC2034  # kwork and kpid are read by wait_for's conditions
read -r kdir kwork <"$WORK/killed.dirs"
# shellcheck disable=SC2034
kpid=$(head -n 1 "$kdir/data/postmaster.pid")
{
    kill -KILL "$killed"
    sleep 0.5
} 2>/dev/null # (bash's "Killed" notice)
bg_wait "$killed" 10
wait_for '! kill -0 "$kpid" 2>/dev/null' 30 "the killed test's server to stop"
wait_for '[ ! -e "$kdir" ] && [ ! -e "$kwork" ]' 30 "the killed test's directories to go"
if [ -n "$PGTEST_CHROOT" ]; then
    assert_eq "$(find "$PGTEST_CHROOT/tmp" -maxdepth 1 -name "${kdir##*/}" | wc -l)" 0 \
        "nothing left of it in the chroot"
fi
pass "a killed test leaves no server and no directory"
pass "all"
