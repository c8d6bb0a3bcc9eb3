#!/usr/bin/env bash
# shellcheck disable=SC2016  # wait_for evals its condition later
# The guarantee: kill -9 of the consumer in the middle of its work, twice,
# then a restart with --drain: every job has exactly one outcome, done.  A
# handler may have run twice for a job; no job is lost.
# shellcheck source=SCRIPTDIR/../lib/pgtest.sh
. "$(dirname "$0")/../lib/pgtest.sh"
require_walq
pg_start
walq init

N=2000
h=$(handler work.sh <<HANDLER
read -r _ || true   # the payload: one line, read without another process
echo "\$WALQ_JOB_ID" >>"$WORK/ran.log"
case \$WALQ_JOB_ID in
*3|*7) sleep 0.02 ;;
esac
exit 0
HANDLER
)
touch "$WORK/ran.log"

# Half before the first start (backfill), half while it runs (stream).
publish_sql k $((N / 2))

kill9_at() {
    local target=$1 pid done_before
    bg "$WALQ_BIN" consume --keep-outcomes --group k9 --queue k --concurrency 4 -- "$h"
    pid=$BG_PID
    wait_for '[ "$(done_count k9)" -ge '"$target"' ]' 60 "$target jobs done"
    kill -KILL "$pid"
    bg_wait "$pid" 10
    done_before=$(done_count k9)
    [ "$done_before" -lt "$N" ] || fail "every job was done before kill -9; the test proves nothing"
    pass "kill -9 with $done_before of $N jobs done"
    # The server notices the dead walsender client at once on a unix
    # socket; wait for it to release the slot before the next start.
    wait_for '! slot_active walq_k9' 20 "slot walq_k9 to be released"
}

kill9_at 300
for _ in $(seq 1 10); do
    publish_sql k $((N / 20))
done
kill9_at 1100

walq_timeout 120 consume --keep-outcomes --group k9 --queue k --concurrency 4 --drain -- "$h"
pass "--drain after two kill -9 exits 0"

assert_all_done k9 '^k$' "$N"
assert_eq "$(q "SELECT count(*) FROM walq.job_status WHERE consumer_group = 'k9' AND status = 'done'")" "$N" \
    "job_status: $N jobs done"
assert_eq "$(sort -u "$WORK/ran.log" | wc -l)" "$N" "every job ran at least once"
pass "handler runs: $(wc -l <"$WORK/ran.log") for $N jobs (reruns after kill -9 are allowed)"
pass "all"
