#!/usr/bin/env bash
# shellcheck disable=SC2016  # wait_for evals its condition later
# A slot lost while the consumer runs (its walsender terminated and the slot
# dropped before the consumer gets back): the consumer finishes and records
# what it has, recreates the slot, reads the group's unfinished jobs from the
# table and carries on, without a restart and without losing a job.
# shellcheck source=SCRIPTDIR/../lib/pgtest.sh
. "$(dirname "$0")/../lib/pgtest.sh"
require_walq
pg_start
walq init

h=$(handler work.sh <<HANDLER
read -r payload
echo "\$WALQ_JOB_ID" >>"$WORK/ran.log"
HANDLER
)
bg "$WALQ_BIN" consume --keep-outcomes --group live --queue l --concurrency 2 -- "$h" 2>"$WORK/consumer.err"
pid=$BG_PID
wait_for "slot_active walq_live" 30 "the consumer streams"
publish_sql l 300
wait_for '[ "$(done_count live)" -ge 50 ]' 60 "some jobs are done"

# Take the slot away: end its walsender and drop the slot before walq gets
# it back.  Done in the server, in a loop that ends the walsender again if
# walq reconnected first: a client retrying from outside loses that race.
q "DO \$\$
DECLARE pid int;
BEGIN
  FOR i IN 1 .. 500 LOOP
    SELECT active_pid INTO pid FROM pg_replication_slots WHERE slot_name = 'walq_live';
    IF pid IS NOT NULL THEN
      PERFORM pg_terminate_backend(pid);
    END IF;
    BEGIN
      PERFORM pg_drop_replication_slot('walq_live');
      RETURN;
    EXCEPTION WHEN object_in_use THEN
      PERFORM pg_sleep(0.01);
    END;
  END LOOP;
  RAISE EXCEPTION 'could not drop the slot while the consumer reconnects';
END \$\$" >/dev/null || fail "could not drop the slot while the consumer reconnects"
publish_sql l 200

wait_for '[ "$(done_count live)" -eq 500 ]' 90 "every job is done after the slot came back"
assert_match "$(cat "$WORK/consumer.err")" 'resynchroniz' "the consumer says it resynchronizes"
kill -0 "$pid" || fail "the consumer exited"
slot_active walq_live || fail "the consumer streams from a new slot"
kill -TERM "$pid"
bg_wait "$pid" 30
assert_eq "$BG_RC" 0 "SIGTERM: exit 0"
assert_all_done live '^l$' 500
pass "handler runs: $(wc -l <"$WORK/ran.log") for 500 jobs"
pass all
