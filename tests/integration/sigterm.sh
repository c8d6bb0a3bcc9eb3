#!/usr/bin/env bash
# shellcheck disable=SC2016  # wait_for evals its condition later
# SIGTERM lets the running handlers finish, acks them and exits 0; a later
# consumer does the rest without running any job twice.  A second signal
# exits at once.
# shellcheck source=SCRIPTDIR/../lib/pgtest.sh
. "$(dirname "$0")/../lib/pgtest.sh"
require_walq
pg_start
walq init

slow=$(handler slow.sh <<HANDLER
cat >/dev/null
echo "\$WALQ_JOB_ID" >>"$WORK/started.log"
sleep 1
echo "\$WALQ_JOB_ID" >>"$WORK/finished.log"
HANDLER
)
touch "$WORK/started.log" "$WORK/finished.log"

publish_sql t 20

bg "$WALQ_BIN" consume --group st --queue t --concurrency 4 -- "$slow"
pid=$BG_PID
wait_for '[ "$(wc -l <"$WORK/started.log")" -ge 2 ]' 20 "handlers to start"
sleep 0.2
kill -TERM "$pid"
bg_wait "$pid" 15
assert_eq "$BG_RC" 0 "SIGTERM while jobs run: exit 0"

started=$(wc -l <"$WORK/started.log")
assert_eq "$(wc -l <"$WORK/finished.log")" "$started" "every running handler finished ($started)"
[ "$started" -lt 20 ] || fail "all jobs ran before SIGTERM took effect; the test proves nothing"
assert_eq "$(done_count st)" "$started" \
    "the jobs that ran are recorded done"
pg_psql -c "CREATE TABLE started (id bigint)"
pg_psql -c "\\copy started FROM '$WORK/started.log'"
assert_eq "$(q "SELECT count(*) FROM started s JOIN ($(recorded_sql st)) o
                   ON o.job_id = s.id AND o.status = 'done'")" "$started" \
    "exactly those jobs are done"

walq_timeout 60 consume --group st --queue t --concurrency 4 --drain -- "$slow"
pass "a later --drain exits 0"
assert_all_done st '^t$' 20
assert_eq "$(wc -l <"$WORK/started.log")" 20 "no job ran twice across the clean stop"
assert_eq "$(sort -u "$WORK/started.log" | wc -l)" 20 "every job ran"

# A second signal does not wait for the handlers.
sleepy=$(handler sleepy.sh <<HANDLER
cat >/dev/null
echo "\$WALQ_JOB_ID" >>"$WORK/sleepy.log"
sleep 30
HANDLER
)
fast=$(handler fast.sh <<'HANDLER'
cat >/dev/null
HANDLER
)
publish_sql t2 4
bg "$WALQ_BIN" consume --group st2 --queue t2 --concurrency 4 -- "$sleepy"
pid=$BG_PID
wait_for '[ -s "$WORK/sleepy.log" ]' 20 "sleepy handlers to start"
kill -TERM "$pid"
sleep 0.3
kill -TERM "$pid"
start=$SECONDS
bg_wait "$pid" 10
pass "a second SIGTERM exits in $((SECONDS - start))s without waiting for 30s handlers (status $BG_RC)"
assert_eq "$(done_count st2)" 0 \
    "interrupted jobs are not recorded done"
walq_timeout 60 consume --group st2 --queue t2 --drain -- "$fast"
assert_all_done st2 '^t2$' 4
pass "all"
