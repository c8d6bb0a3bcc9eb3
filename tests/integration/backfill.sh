#!/usr/bin/env bash
# shellcheck disable=SC2016  # wait_for evals its condition later
# Jobs published before the group's first consume are all processed, once,
# with the job's fields in the handler's environment and its payload on stdin.
# shellcheck source=SCRIPTDIR/../lib/pgtest.sh
. "$(dirname "$0")/../lib/pgtest.sh"
require_walq
pg_start "log_replication_commands = on"
walq init

publish_sql emails 500
publish_sql other 50

h=$(handler record.sh <<HANDLER
payload=\$(cat)
printf '%s\\n' "\$WALQ_JOB_ID|\$WALQ_QUEUE|\$WALQ_GROUP|\$WALQ_ATTEMPT|\$payload" >>"$WORK/ran.log"
HANDLER
)

walq_timeout 60 consume --group bf --queue emails --concurrency 4 --drain -- "$h"
pass "consume --drain exits 0"

assert_all_done bf '^emails$' 500
assert_eq "$(wc -l <"$WORK/ran.log")" 500 "the handler ran 500 times"
assert_eq "$(cut -d'|' -f1 "$WORK/ran.log" | sort -u | wc -l)" 500 "the handler ran once per job"

# What the handler saw, checked against the table.
pg_psql -c "CREATE TABLE ran (id bigint, queue text, grp text, attempt int, payload jsonb)"
pg_psql -c "\\copy ran FROM '$WORK/ran.log' WITH (FORMAT csv, DELIMITER '|', QUOTE E'\\x01')"
assert_eq "$(q "SELECT count(*) FROM ran r JOIN walq.jobs j ON j.id = r.id
                 WHERE r.queue = j.queue AND r.payload = j.payload AND r.grp = 'bf' AND r.attempt = 1")" 500 \
    "WALQ_JOB_ID, WALQ_QUEUE, WALQ_GROUP, WALQ_ATTEMPT and the payload on stdin match the job"

assert_eq "$(q "SELECT count(*) FILTER (WHERE status = 'done'), count(*)
                 FROM walq.job_status WHERE consumer_group = 'bf'")" "500|500" "job_status: 500 rows, all done"
assert_eq "$(q "SELECT count(*) FROM walq.job_status WHERE consumer_group = 'bf' AND queue <> 'emails'")" 0 \
    "job_status: nothing of other queues"
plugin=${WALQ_PLUGIN:-auto}
[ "$plugin" != auto ] || plugin=pgoutput
assert_eq "$(q "SELECT slot_name || ' ' || plugin FROM pg_replication_slots WHERE slot_name = 'walq_bf'")" \
    "walq_bf $plugin" "the group's slot is walq_bf, on $plugin"
assert_eq "$(q "SELECT slot_name FROM walq.readers WHERE group_name = 'bf'")" walq_bf "walq.readers names the slot"

# Another drain with nothing new runs nothing.
walq_timeout 30 consume --group bf --queue emails --drain -- "$h"
assert_eq "$(wc -l <"$WORK/ran.log")" 500 "another --drain runs nothing again"

# Jobs published between two runs come from the slot the group already has:
# a restart neither drops it nor reads the table again.
publish_sql emails 20
walq_timeout 30 consume --group bf --queue emails --drain -- "$h"
assert_all_done bf '^emails$' 520
assert_eq "$(wc -l <"$WORK/ran.log")" 520 "the 20 new jobs ran once"
assert_eq "$(grep -c 'command: CREATE_REPLICATION_SLOT "walq_bf"' "$PGTEST_DIR/server.log")" 1 \
    "the slot was created once, at the first start"
assert_eq "$(grep -c 'command: DROP_REPLICATION_SLOT "walq_bf"' "$PGTEST_DIR/server.log" || true)" 0 \
    "restarts keep the slot (no DROP_REPLICATION_SLOT)"

# The same when the first run found nothing to do, and after a --noop drain
# that ends within moments.
walq_timeout 30 consume --group empty --queue later --drain --noop
publish_sql later 30
walq_timeout 30 consume --group empty --queue later --drain --noop
walq_timeout 30 consume --group empty --queue later --drain --noop
assert_all_done empty '^later$' 30
assert_eq "$(grep -c 'command: DROP_REPLICATION_SLOT "walq_empty"' "$PGTEST_DIR/server.log" || true)" 0 \
    "a group whose first run had no job keeps its slot"

pass "all"
