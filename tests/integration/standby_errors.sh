#!/usr/bin/env bash
# shellcheck disable=SC2016  # wait_for evals its condition later
# A hot standby as the source: PostgreSQL 15 cannot decode there, and walq
# says so, naming the server and what to read from instead; nothing is
# created on either server.  (The PostgreSQL 16+ path is standby.sh.)
# shellcheck source=SCRIPTDIR/../lib/pgtest.sh
. "$(dirname "$0")/../lib/pgtest.sh"
[ "$PGTEST_PG" = 15 ] || pgtest_skip "the refusal of a PostgreSQL 15 standby needs PostgreSQL 15"
require_walq
pg_start
walq init
pg_start_standby replica
wait_for '[ "$(q_on replica "SELECT count(*) FROM walq.jobs")" = 0 ]' 30 "the standby to replay walq init"
publish_sql s 10

capture walq_timeout 30 consume --source "$PGTEST_CONN_REPLICA" --primary "$PGTEST_CONN" \
    --group sb --queue s --drain --noop
assert_eq "$CAP_RC" 1 "consume from a PostgreSQL 15 standby: exit 1"
assert_match "$CAP_ERR" 'ERROR: +".*" is a standby running PostgreSQL 15\.[0-9]+, which cannot decode' \
    "the error names the standby and its version"
assert_match "$CAP_ERR" 'HINT: +Read from the primary, from a standby running PostgreSQL 16 or later, or from a logical subscriber' \
    "the hint names the three ways out"
assert_eq "$(q "SELECT count(*) FROM pg_replication_slots WHERE slot_type = 'logical'")" 0 \
    "no logical slot on the primary"
assert_eq "$(q "SELECT (SELECT count(*) FROM walq.outcomes)
                      + (SELECT count(*) FROM walq.outcome_batches)")" 0 "nothing recorded"
pass "all"
