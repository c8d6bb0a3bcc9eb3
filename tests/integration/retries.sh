#!/usr/bin/env bash
# shellcheck disable=SC2016  # wait_for evals its condition later
# Exit 75 asks for a retry; other failures (an exit status, a signal) retry
# up to the job's max_attempts, then the job is dead with its last error kept.
# shellcheck source=SCRIPTDIR/../lib/pgtest.sh
. "$(dirname "$0")/../lib/pgtest.sh"
require_walq
pg_start
walq init

flaky=$(handler flaky.sh <<HANDLER
cat >/dev/null
echo "\$WALQ_JOB_ID \$WALQ_ATTEMPT" >>"$WORK/flaky.log"
[ "\$WALQ_ATTEMPT" -lt 3 ] && exit 75
exit 0
HANDLER
)
broken=$(handler broken.sh <<HANDLER
cat >/dev/null
echo "\$WALQ_JOB_ID \$WALQ_ATTEMPT" >>"$WORK/broken.log"
echo "something went wrong" >&2
exit 1
HANDLER
)
crash=$(handler crash.sh <<'HANDLER'
cat >/dev/null
kill -KILL $$
HANDLER
)

publish_sql flaky 10
publish_sql broken 5 3
publish_sql crash 2 2

backoff=(--backoff-min 0.01 --backoff-max 0.05)
bg "$WALQ_BIN" consume --group rf --queue flaky --concurrency 4 "${backoff[@]}" -- "$flaky"
p1=$BG_PID
bg "$WALQ_BIN" consume --group rb --queue broken --concurrency 4 "${backoff[@]}" -- "$broken"
p2=$BG_PID
bg "$WALQ_BIN" consume --group rc --queue crash --concurrency 2 "${backoff[@]}" -- "$crash"
p3=$BG_PID

count() {
    q "SELECT count(*) FROM ($(recorded_sql "$1")) r WHERE r.status = '$2'"
}
wait_for '[ "$(count rf done)" -eq 10 ]' 40 "10 flaky jobs done"
wait_for '[ "$(count rb dead)" -eq 5 ]' 40 "5 broken jobs dead"
wait_for '[ "$(count rc dead)" -eq 2 ]' 40 "2 crashing jobs dead"
for p in "$p1" "$p2" "$p3"; do
    kill -TERM "$p"
    bg_wait "$p" 20
    assert_eq "$BG_RC" 0 "a consumer exits 0 on SIGTERM"
done

assert_eq "$(q "SELECT count(*), min(attempts), max(attempts) FROM walq.outcomes
                 WHERE group_name = 'rf' AND status = 'done'")" "10|3|3" \
    "exit 75 twice, then 0: done after 3 attempts"
assert_eq "$(wc -l <"$WORK/flaky.log")" 30 "the flaky handler ran 3 times per job"
assert_eq "$(sort "$WORK/flaky.log" | uniq -d | wc -l)" 0 "WALQ_ATTEMPT counts up, no attempt repeated"

assert_eq "$(q "SELECT count(*), min(attempts), max(attempts) FROM walq.outcomes
                 WHERE group_name = 'rb' AND status = 'dead'")" "5|3|3" \
    "exit 1 with max_attempts 3: dead after 3 attempts"
assert_eq "$(wc -l <"$WORK/broken.log")" 15 "the broken handler ran 3 times per job"
err=$(q "SELECT last_error FROM walq.outcomes WHERE group_name = 'rb' LIMIT 1")
assert_match "$err" '(exit|status|code)[^0-9]*1([^0-9]|$)' "last_error mentions the exit status ($err)"
assert_match "$err" 'something went wrong' "last_error keeps the tail of the handler's stderr"
assert_eq "$(q "SELECT count(*) FROM walq.job_status WHERE consumer_group = 'rb' AND status = 'dead'
                 AND last_error IS NOT NULL AND attempts = 3")" 5 "job_status shows the dead jobs with their error"

assert_eq "$(q "SELECT count(*), min(attempts), max(attempts) FROM walq.outcomes
                 WHERE group_name = 'rc' AND status = 'dead'")" "2|2|2" \
    "a handler killed by a signal: dead after max_attempts 2"
err=$(q "SELECT last_error FROM walq.outcomes WHERE group_name = 'rc' LIMIT 1")
assert_match "$err" '(signal|SIGKILL|[Kk]illed)' "last_error mentions the signal ($err)"
pass "all"
