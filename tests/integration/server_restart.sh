#!/usr/bin/env bash
# shellcheck disable=SC2016  # wait_for evals its condition later
# A restart and a crash of the server while the consumer streams: it
# reconnects, carries on, and every job is done exactly once.
# shellcheck source=SCRIPTDIR/../lib/pgtest.sh
. "$(dirname "$0")/../lib/pgtest.sh"
require_walq
pg_start
walq init

h=$(handler work.sh <<HANDLER
read -r _ || true   # the payload: one line, read without another process
echo "\$WALQ_JOB_ID" >>"$WORK/ran.log"
case \$WALQ_JOB_ID in
*7) sleep 0.02 ;;
esac
HANDLER
)
touch "$WORK/ran.log"

publish_some() {
    for _ in 1 2 3 4 5; do
        publish_sql r 100
    done
}

bg "$WALQ_BIN" consume --keep-outcomes --group sr --queue r --concurrency 4 -- "$h"
pid=$BG_PID
wait_for "slot_active walq_sr" 20 "the consumer to stream"

publish_some
wait_for '[ "$(done_count sr)" -ge 100 ]' 30 "100 jobs done"
pg_restart
pass "server restarted with $(done_count sr) of 500 jobs done"
kill -0 "$pid" || fail "the consumer exited when the server restarted"
publish_some
wait_for '[ "$(done_count sr)" -ge 600 ]' 60 "600 jobs done after the restart"

pg_crash
pass "server crashed and recovered with $(done_count sr) of 1000 jobs done"
kill -0 "$pid" || fail "the consumer exited when the server crashed"
publish_some
wait_for '[ "$(done_count sr)" -ge 1500 ]' 60 "1500 jobs done after the crash"
wait_for "slot_active walq_sr" 20 "the consumer to stream again"

kill -TERM "$pid"
bg_wait "$pid" 20
assert_eq "$BG_RC" 0 "SIGTERM after the restarts: exit 0"
assert_all_done sr '^r$' 1500
assert_eq "$(sort -u "$WORK/ran.log" | wc -l)" 1500 "every job ran"
pass "handler runs: $(wc -l <"$WORK/ran.log") for 1500 jobs"

walq_timeout 30 consume --keep-outcomes --group sr --queue r --drain -- "$h"
assert_all_done sr '^r$' 1500
pass "all"
