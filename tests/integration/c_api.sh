#!/usr/bin/env bash
# The C API: the example consumer in examples/consumer.c (a callback handler
# linked against libwalq.so) processes a backlog and the live stream, retries
# a failing job to dead, and stops cleanly on SIGTERM.
# shellcheck source=SCRIPTDIR/../lib/pgtest.sh
. "$(dirname "$0")/../lib/pgtest.sh"
require_walq
[ -x "${WALQ_EXAMPLE_BIN:-}" ] || fail "example consumer not found (WALQ_EXAMPLE_BIN)"
pg_start
walq init

publish_sql words 200
q "INSERT INTO walq.jobs (queue, payload, max_attempts) VALUES ('words', '{\"fail\": true}', 3)" >/dev/null

capture "$WALQ_EXAMPLE_BIN" capi words --drain
assert_eq "$CAP_RC" 0 "the example drains the backlog and exits 0"
assert_eq "$(grep -c '^job [0-9]* on words: ' <<<"$CAP_OUT")" 200 "the callback ran once per job"
assert_eq "$(q "SELECT status || ' ' || attempts FROM walq.job_status
                 WHERE consumer_group = 'capi' AND job_id = (SELECT max(id) FROM walq.jobs)")" \
    "dead 3" "a failing callback retries to max_attempts, then the job is dead"
assert_match "$(q "SELECT last_error FROM walq.outcomes WHERE group_name = 'capi' AND status = 'dead'")" \
    'payload asks to fail \(attempt 3\)' "the callback's error is kept"

# Live: jobs published while it runs, then SIGTERM.
bg "$WALQ_EXAMPLE_BIN" capi words >"$WORK/live.out" 2>"$WORK/live.err"
pid=$BG_PID
wait_for "slot_active walq_capi" 20 "the example streams"
publish_sql words 50
wait_for '[ "$(done_count capi)" -eq 250 ]' 20 "the live jobs are done"
kill -TERM "$pid"
bg_wait "$pid" 20
assert_eq "$BG_RC" 0 "SIGTERM stops the example with status 0"
assert_eq "$(q "SELECT count(*), count(DISTINCT job_id) FROM ($(recorded_sql capi)) r")" \
    "251|251" "one outcome per job"
pass all
