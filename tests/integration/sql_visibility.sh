#!/usr/bin/env bash
# shellcheck disable=SC2016  # wait_for evals its condition later; $1 is an SQL parameter
# The sql handler's statement sees what the producer wrote with the job
# (found by the randomized fault test, seed 7).  The stream brings a
# transaction once its commit record is flushed, a moment before other
# sessions can see it; a statement run at once found no row of the
# producer's, did nothing, and the job was done.  Here the moment is made
# long: for 1.5 s synchronous_standby_names names a standby that does not
# exist, so the producer's COMMIT is flushed and streamed, then waits,
# invisible, until the setting is cleared (walq's own commits wait as well
# meanwhile, as they would for a real standby).  walq.run_sql waits until
# the jobs are visible (5 s at most), so the statement finds the order and
# marks it.
# shellcheck source=SCRIPTDIR/../lib/pgtest.sh
. "$(dirname "$0")/../lib/pgtest.sh"
require_walq
pg_start
walq init

q "CREATE TABLE orders (id int PRIMARY KEY, handled boolean NOT NULL DEFAULT false)" >/dev/null
SQL="UPDATE orders SET handled = true WHERE id = (\$1->>'order')::int"
bg "$WALQ_BIN" consume --group og --queue oq --sql "$SQL" 2>"$WORK/consumer.log"
pid=$BG_PID
running() {
    if ! kill -0 "$pid" 2>/dev/null || _pgtest_exited "$pid"; then
        fail "the consumer exited: $(tail -n 5 "$WORK/consumer.log")"
    fi
}
wait_for "running && slot_active walq_og" 30 "the consumer to stream"
# Its first upkeep (walq.maintain()) commits on the primary: done before
# the server waits for a standby, or it would wait for it too, past this
# test's patience.
upkept() {
    [ "$(q "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'walq consume'
                 AND backend_type = 'client backend' AND state = 'idle'
                 AND (query LIKE '%walq.maintain()%' OR query LIKE '%FROM pg_publication%')")" -ge 1 ]
}
wait_for "running && upkept" 30 "the consumer's first upkeep"

# The producer: an order and its job in one transaction, whose COMMIT waits
# for the standby that never comes.
q "ALTER SYSTEM SET synchronous_standby_names = 'nobody'" >/dev/null
q "SELECT pg_reload_conf()" >/dev/null
wait_for '[ "$(q "SHOW synchronous_standby_names")" = nobody ]' 10 "the server to wait for a standby"
pg_psql -c "SET synchronous_commit = on" -c "BEGIN" -c "INSERT INTO orders (id) VALUES (1)" \
    -c "SELECT walq.publish('oq', '{\"order\": 1}')" -c "COMMIT" >"$WORK/producer.out" 2>&1 &
producer=$!
waiting() {
    [ "$(q "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'SyncRep' AND query = 'COMMIT'
                 AND application_name <> 'walq consume'")" -eq 1 ]
}
# The job comes through the stream while the COMMIT waits: the consumer's
# ack transaction has it, and waits for it to be visible.  That wait is 5 s
# at most, so it is looked for first, and the rest is checked while it
# lasts.
sql_waits() {
    [ "$(q "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'walq consume'
                 AND query LIKE '%walq.run_sql%' AND wait_event = 'PgSleep'")" -ge 1 ]
}
wait_for "running && sql_waits" 10 "walq.run_sql to wait for the job to be visible"
waiting || fail "the producer's COMMIT no longer waits for the standby"
pass "the producer's COMMIT waits for the standby meanwhile"
assert_eq "$(q "SELECT count(*) FROM orders")" 0 "the order is not visible while its COMMIT waits"
sleep 1
# The walsender sent the job meanwhile.  No standby to wait for: every
# waiting COMMIT completes.
q "ALTER SYSTEM RESET synchronous_standby_names" >/dev/null
q "SELECT pg_reload_conf()" >/dev/null
wait "$producer" || fail "the producer failed: $(cat "$WORK/producer.out")"
assert_eq "$(q "SELECT count(*) FROM orders")" 1 "the order is visible once nothing waits for a standby"
wait_for 'running && [ "$(q "SELECT status FROM walq.job_status WHERE consumer_group = '"'og'"'")" = done ]' \
    30 "the job to be done"
assert_eq "$(q "SELECT handled FROM orders WHERE id = 1")" t \
    "the statement saw the order the job came with, and marked it"
kill -TERM "$pid"
bg_wait "$pid" 20
assert_eq "$BG_RC" 0 "SIGTERM: the consumer exits 0"
pass "all"
