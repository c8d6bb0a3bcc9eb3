#!/usr/bin/env bash
# shellcheck disable=SC2016  # wait_for evals its condition later
# The subscriber topology on two servers: walq.jobs and walq.commands are
# copied from the primary to a replica by a publication and a subscription
# (`walq replica setup`), every group's slot lives on the replica, outcomes
# land on the primary, and the primary serves one walsender however many
# groups there are.  Also: what `walq replica setup` says when it cannot
# work, and `walq replica teardown`.
# shellcheck source=SCRIPTDIR/../lib/pgtest.sh
. "$(dirname "$0")/../lib/pgtest.sh"
require_walq
pg_start "log_replication_commands = on"
pg_start_extra replica
pg_start_extra plain "wal_level = replica"
P=$PGTEST_CONN
R=$PGTEST_CONN_REPLICA

# Walsenders on the primary: the cost the topology is for.
walsenders() {
    q "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'walsender'"
}
replica_slot_active() {
    [ "$(q_on replica "SELECT coalesce(bool_or(active), false) FROM pg_replication_slots
                        WHERE slot_name = '$1'")" = t ]
}

walq init
publish_sql work 40

# ---- What setup refuses, each before it changes anything ---------------

# Without TLS that verifies the primary (sslmode verify-ca or verify-full),
# only when told: these servers are on unix sockets, which have no TLS.
capture walq replica setup --primary "$P password=SuperSecret42" --source "$R"
assert_eq "$CAP_RC" 1 "setup without sslmode=verify-full or the flag fails"
assert_match "$CAP_ERR" 'ERROR:  the subscription would connect to the primary with sslmode "prefer", which does not verify' \
    "it names the sslmode"
assert_match "$CAP_ERR" 'HINT:  Give sslmode=verify-full .*--allow-insecure-subscription' "and the fix and the flag"
assert_eq "$(grep -c SuperSecret42 <<<"$CAP_ERR" || true)" 0 "the refusal does not show the password"
PGSSLMODE=require capture walq replica setup --primary "$P" --source "$R"
assert_match "$CAP_ERR" 'with sslmode "require", which does not verify' "PGSSLMODE counts as the sslmode"
assert_eq "$(q_on replica "SELECT to_regnamespace('walq') IS NULL")" t "nothing was created on the source"

capture walq replica setup --allow-insecure-subscription --primary "$PGTEST_CONN_PLAIN" --source "$R"
assert_eq "$CAP_RC" 1 "a primary with wal_level = replica: setup fails"
assert_match "$CAP_ERR" 'ERROR:  logical replication requires wal_level = logical, but the primary ".*" has wal_level = replica' \
    "it says the primary's wal_level is the problem"
assert_match "$CAP_ERR" "HINT:  Set wal_level = logical in the primary's postgresql.conf and restart it." \
    "and how to fix it"
assert_eq "$(q_on replica "SELECT to_regnamespace('walq') IS NULL")" t "nothing was created on the source"

capture walq replica setup --allow-insecure-subscription --primary "$P" --source "$PGTEST_CONN_PLAIN"
assert_eq "$CAP_RC" 1 "a source with wal_level = replica: setup fails"
assert_match "$CAP_ERR" 'logical decoding requires wal_level = logical, but the source' \
    "it says the source cannot hold group slots"
pg_stop_extra plain

capture walq replica setup --allow-insecure-subscription --primary "$P" --source "$P"
assert_eq "$CAP_RC" 1 "the primary as its own source: setup fails"
assert_match "$CAP_ERR" 'belong to the same cluster' "it says both are one cluster"

q_on replica "CREATE ROLE app LOGIN" >/dev/null
capture walq replica setup --allow-insecure-subscription --primary "$P" --source "$R user=app"
assert_eq "$CAP_RC" 1 "a source role that is not a superuser: setup fails"
assert_match "$CAP_ERR" 'permission denied to create a subscription on the source ".*" as role "app"' \
    "it says the role may not create a subscription"

# 19 slots of the primary's 20 taken: the subscription needs two.
q "SELECT count(pg_create_physical_replication_slot('filler_' || g)) FROM generate_series(1, 19) g" >/dev/null
capture walq replica setup --allow-insecure-subscription --primary "$P" --source "$R"
assert_eq "$CAP_RC" 1 "a primary short of replication slots: setup fails"
assert_match "$CAP_ERR" 'too few free replication slots for the subscription: max_replication_slots = 20, 19 in use' \
    "it says how many slots there are and are used"
assert_match "$CAP_ERR" 'HINT:  Raise max_replication_slots on the primary' "and how to fix it"
q "SELECT count(pg_drop_replication_slot(slot_name)) FROM pg_replication_slots
    WHERE slot_name LIKE 'filler\_%'" >/dev/null

# The source cannot reach the primary with the connection string it is
# given: setup gets as far as the subscription, and a later run completes.
capture walq replica setup --allow-insecure-subscription --primary "$P" --source "$R" \
    --subscription-conninfo "host=$WORK/nowhere port=1 user=postgres dbname=postgres"
assert_eq "$CAP_RC" 1 "a source that cannot reach the primary: setup fails"
assert_match "$CAP_ERR" 'could not create subscription "walqrepl_main" on the source ".*": could not connect to the publisher' \
    "it says the subscription could not connect"
assert_match "$CAP_ERR" 'HINT:  The source server connects to the primary itself.*--subscription-conninfo' \
    "and how to give the source another connection string"

# ---- Set-up ----------------------------------------------------------

capture walq replica setup --allow-insecure-subscription --primary "$P" --source "$R"
[ "$CAP_RC" -eq 0 ] || fail "replica setup failed: $CAP_ERR"
pass "replica setup completes what the failed run left"
assert_match "$CAP_ERR" 'primary: publication "walqrepl_main" exists' "the publication was kept from the run before"
assert_match "$CAP_ERR" 'source: created subscription "walqrepl_main", with replication slot "walqrepl_main" on the primary' \
    "it created the subscription"
assert_match "$CAP_ERR" 'initial copy done; the source has 40 jobs' "it waited for the initial copy"
assert_eq "$(q_on replica "SELECT count(*), sum(id) FROM walq.jobs")" \
    "$(q "SELECT count(*), sum(id) FROM walq.jobs")" "the replica has the primary's jobs, with their ids"

capture walq replica setup --allow-insecure-subscription --primary "$P" --source "$R"
assert_eq "$CAP_RC" 0 "replica setup again succeeds"
assert_match "$CAP_ERR" 'subscription "walqrepl_main" exists' "and changes nothing"

capture q_on replica "INSERT INTO walq.jobs (queue) VALUES ('work')"
assert_eq "$CAP_RC" 1 "an insert into the replica's copy of walq.jobs fails"
assert_match "$CAP_ERR" 'table walq.jobs on this server is a copy of the primary' "it says why"

assert_eq "$(q "SELECT string_agg(slot_name || ' ' || plugin, ',') FROM pg_replication_slots")" \
    "walqrepl_main pgoutput" "the primary's only slot is the subscription's"
wait_for '[ "$(walsenders)" = 1 ]' 20 "the copy's walsenders on the primary to end"
pass "the primary serves one walsender: the subscription's"

# ---- Consumers on the replica ----------------------------------------

seq 1 20 | sed 's/.*/{"cli": &}/' | walq publish work 2>/dev/null

# A job of queue "fragile" fails until $WORK/cured exists; with one attempt
# it is dead at once, and `walq job retry` on the primary brings it back.
h=$(handler record.sh <<HANDLER
payload=\$(cat)
case "\$payload" in *poison*) [ -f "$WORK/cured" ] || exit 1 ;; esac
echo "\$WALQ_GROUP \$WALQ_JOB_ID" >>"$WORK/ran.log"
HANDLER
)

consume() {
    local group=$1
    shift
    bg "$WALQ_BIN" consume --source "$R" --primary "$P" --group "$group" --concurrency 4 \
        "$@" -- "$h" 2>>"$WORK/$group.log"
}
consume g1 --queue work --queue fragile
pid1=$BG_PID
consume g2 --queue work
pid2=$BG_PID
wait_for 'replica_slot_active walq_g1 && replica_slot_active walq_g2' 30 \
    "groups g1 and g2 to stream from their slots on the replica"
pass "g1 and g2 stream from the replica"

# Jobs published while they run: SQL, the CLI, one transaction with both.
publish_sql work 40
for i in $(seq 1 5); do walq publish work "{\"one\": $i}" >/dev/null; done
poison=$(walq publish --max-attempts 1 fragile '{"poison": true}')
pg_psql >/dev/null <<'SQL'
BEGIN;
INSERT INTO walq.jobs (queue, payload) SELECT 'work', jsonb_build_object('tx', g) FROM generate_series(1, 10) g;
SELECT walq.publish('work', '{"tx": "publish"}');
COMMIT;
SQL
n=$((40 + 20 + 40 + 5 + 11))

wait_for '[ "$(done_count g1)" -ge $n ] && [ "$(done_count g2)" -ge $n ]' 40 "g1 and g2 to finish $n jobs"
wait_for '[ "$(q "SELECT status FROM walq.outcomes WHERE group_name = '\''g1'\'' AND job_id = $poison")" = dead ]' 20 \
    "the poison job to be dead in g1"
pass "g1 and g2 processed $n jobs; the poison job is dead"
assert_eq "$(walsenders)" 1 "two groups streaming: still one walsender on the primary"
assert_eq "$(q "SELECT count(*) FROM pg_replication_slots WHERE plugin = 'wal2json' OR slot_name ~ '^walq_'")" 0 \
    "the primary holds no walq slot and no wal2json slot"
assert_eq "$(q_on replica "SELECT (SELECT count(*) FROM walq.outcomes)
                              + (SELECT count(*) FROM walq.outcome_batches)")" 0 \
    "no outcome was written on the replica"

# Two more groups: more walsenders on the replica, none on the primary.
consume g3 --queue work
pid3=$BG_PID
consume g4 --queue work
pid4=$BG_PID
wait_for 'replica_slot_active walq_g3 && replica_slot_active walq_g4' 30 \
    "groups g3 and g4 to stream from their slots on the replica"
wait_for '[ "$(done_count g3)" -ge $n ] && [ "$(done_count g4)" -ge $n ]' 40 "g3 and g4 to finish $n jobs"
pass "g3 and g4 processed the backlog from the replica"
assert_eq "$(walsenders)" 1 "four groups streaming: still one walsender on the primary"
assert_eq "$(q_on replica "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'walsender'")" 4 \
    "the replica serves the four groups' walsenders"

# A retry on the primary reaches the running g1 through the replicated
# walq.commands.
touch "$WORK/cured"
walq job retry "$poison" --group g1 2>/dev/null
wait_for '[ "$(q "SELECT status FROM walq.outcomes WHERE group_name = '\''g1'\'' AND job_id = $poison")" = done ]' 20 \
    "the retried job to be done in g1"
assert_match "$(cat "$WORK/g1.log")" "job $poison queued again by walq job retry" \
    "g1 got the retry from its stream"

# More jobs while all four run, then a clean stop.
publish_sql work 10
n=$((n + 10))
wait_for '[ "$(done_count g1)" -ge $((n + 1)) ] && [ "$(done_count g4)" -ge $n ]' 30 "the last 10 jobs"
sleep 0.5
for pid in "$pid1" "$pid2" "$pid3" "$pid4"; do
    kill -TERM "$pid"
    bg_wait "$pid" 20
    assert_eq "$BG_RC" 0 "SIGTERM: consumer $pid exits 0"
done

assert_all_done g1 '^(work|fragile)$' $((n + 1))
for g in g2 g3 g4; do
    assert_all_done "$g" '^work$' "$n"
done
assert_eq "$(wc -l <"$WORK/ran.log")" $((4 * n + 1)) "the handler ran once per job and group"
assert_eq "$(sort -u "$WORK/ran.log" | wc -l)" $((4 * n + 1)) "no job ran twice in a group"

capture walq status --source "$R"
assert_eq "$CAP_RC" 0 "walq status --source works"
for g in g1 g2 g3 g4; do
    assert_match "$CAP_OUT" "^$g .* walq_$g " "walq status shows group $g with its slot"
done
assert_eq "$(grep -c 'missing' <<<"$CAP_OUT" || true)" 0 "walq status finds every slot on the replica"

# A group moved from the primary to the replica: its cursor was a position
# in the primary's WAL, meaningless on the replica, so it starts afresh there
# and resynchronizes from the table; nothing is lost or done twice.
walq_timeout 60 consume --group moved --queue work --drain --noop 2>/dev/null
publish_sql work 15
n=$((n + 15))
wait_for '[ "$(q_on replica "SELECT count(*) FROM walq.jobs WHERE queue = '\''work'\''")" = $n ]' 20 \
    "the replica to have the last 15 jobs"
capture walq_timeout 60 consume --source "$R" --primary "$P" --group moved --queue work --drain --noop
assert_eq "$CAP_RC" 0 "the moved group drains from the replica"
assert_match "$CAP_ERR" 'last read from another source server; resynchronizing' \
    "the consumer sees the change of source"
assert_all_done moved '^work$' "$n"
# What the move leaves on the primary: the group's slot, and its publication
# when it read with pgoutput.
q "SELECT pg_drop_replication_slot('walq_moved')" >/dev/null
q "DROP PUBLICATION IF EXISTS walq_moved" >/dev/null

# ---- Teardown --------------------------------------------------------

capture walq replica teardown --primary "$P" --source "$R"
assert_eq "$CAP_RC" 0 "replica teardown succeeds"
assert_match "$CAP_ERR" 'source: dropped subscription "walqrepl_main"' "it dropped the subscription"
assert_match "$CAP_ERR" 'primary: dropped publication "walqrepl_main"' "and the publication"
assert_match "$CAP_ERR" 'source: 5 consumer group slots stay: "walq_g1", "walq_g2", "walq_g3", "walq_g4", "walq_moved"' \
    "it lists the group slots left on the replica"
assert_eq "$(q "SELECT count(*) FROM pg_replication_slots")" 0 "the primary has no slot left"
assert_eq "$(q "SELECT count(*) FROM pg_publication")" 0 "nor a publication"
assert_eq "$(q_on replica "SELECT count(*) FROM pg_subscription")" 0 "the replica has no subscription"
assert_eq "$(q_on replica "SELECT count(*) FROM walq.jobs")" "$(q "SELECT count(*) FROM walq.jobs")" \
    "the replica keeps its copy of the jobs"
wait_for '[ "$(walsenders)" = 0 ]' 20 "the subscription's walsender to end"
pass "no walsender is left on the primary"

capture walq replica teardown --primary "$P" --source "$R"
assert_eq "$CAP_RC" 0 "replica teardown again succeeds"
assert_match "$CAP_ERR" 'no subscription "walqrepl_main"' "and finds nothing to drop"
pass "all"
