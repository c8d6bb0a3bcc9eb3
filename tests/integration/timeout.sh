#!/usr/bin/env bash
# shellcheck disable=SC2016  # wait_for evals its condition later
# --timeout: a handler still running after the timeout is killed together
# with its whole process group (here a child it left in the background), the
# attempt counts as failed with the timeout as its last error, the job is
# retried with backoff and is dead after max_attempts, and no process of the
# handler is left behind.
# shellcheck source=SCRIPTDIR/../lib/pgtest.sh
. "$(dirname "$0")/../lib/pgtest.sh"
require_walq
pg_start
walq init

# A marker unique to this run, in the sleeps' command lines, so that pgrep
# finds these processes and no other test's.
marker="300.$$$RANDOM"
h=$(handler hang.sh <<HANDLER
cat >/dev/null
echo "\$WALQ_JOB_ID \$WALQ_ATTEMPT \$(date +%s.%N) \$(ps -o pgid= -p \$\$ | tr -d ' ')" >>"$WORK/runs.log"
sleep ${marker}1 &
echo "started a child and going to sleep" >&2
sleep ${marker}2
HANDLER
)
left() { pgrep -f "sleep ${marker}[12]" || true; }

job1=$(walq publish --max-attempts 2 hang '{"via": "cli"}')
job2=$(q "SELECT walq.publish('hang', '{\"via\": \"sql\"}', max_attempts => 2)")

bg "$WALQ_BIN" consume --group to --queue hang --concurrency 2 --timeout 1 \
    --backoff-min 0.01 --backoff-max 0.05 -- "$h" 2>"$WORK/consumer.err"
pid=$BG_PID

# The premise: the handlers and their background children do run.
wait_for '[ "$(left | wc -l)" -ge 4 ]' 30 "both handlers and their background children to run"
pass "the handlers run, each with a child in the background"

dead() {
    q "SELECT count(*) FROM walq.outcomes WHERE group_name = 'to' AND status = 'dead'"
}
wait_for '[ "$(dead)" -eq 2 ]' 40 "both jobs dead after their timeouts"
kill -TERM "$pid"
bg_wait "$pid" 20
assert_eq "$BG_RC" 0 "SIGTERM: the consumer exits 0"

assert_eq "$(q "SELECT string_agg(job_id || ':' || status || ':' || attempts, ' ' ORDER BY job_id)
                 FROM walq.outcomes WHERE group_name = 'to'")" "$job1:dead:2 $job2:dead:2" \
    "each job dead after its 2 attempts"
for id in "$job1" "$job2"; do
    err=$(q "SELECT last_error FROM walq.outcomes WHERE group_name = 'to' AND job_id = $id")
    assert_match "$err" '[Tt]imed? ?out|[Tt]imeout' "job $id: last_error mentions the timeout ($err)"
    assert_eq "$(awk -v id="$id" '$1 == id { print $2 }' "$WORK/runs.log" | paste -sd' ')" "1 2" \
        "job $id: the handler ran twice, attempts 1 and 2"
    # The first attempt was given its second: the next one starts about the
    # timeout later (less the time the first shell took to start, which is
    # in its own timestamp).
    gap=$(awk -v id="$id" '$1 == id { t[$2] = $3 } END { printf "%.3f", t[2] - t[1] }' "$WORK/runs.log")
    echo "job $id: second attempt started $gap s after the first"
    awk -v g="$gap" 'BEGIN { exit !(g >= 0.5) }' ||
        fail "job $id: the second attempt started $gap s after the first; the 1 s timeout fired early"
done
assert_match "$(cat "$WORK/consumer.err")" 'dead' "the consumer warned about the dead jobs"

# Nothing of the handlers is left: not the shells, not their children, not
# any process in their process groups.  (SIGKILL is immediate; the time
# allowed is only for the reaping of orphans.)
wait_for '[ -z "$(left)" ]' 10 "the sleeps of the killed handlers to be gone"
pass "no background child of a killed handler is left ($(left | wc -l) processes match)"
# group_alive PGID: the live (not zombie) processes of a process group.
group_alive() {
    local p
    for p in $(pgrep -g "$1" || true); do
        [ "$(awk '{ print $3 }' "/proc/$p/stat" 2>/dev/null)" = Z ] || echo "$p"
    done
    return 0
}
mapfile -t pgids < <(awk '{ print $4 }' "$WORK/runs.log" | sort -u)
assert_eq "${#pgids[@]}" 4 "each of the 4 attempts ran in a process group of its own"
for pgid in "${pgids[@]}"; do
    wait_for '[ -z "$(group_alive "$pgid")" ]' 10 "process group $pgid to be empty"
done
pass "every process group of a killed handler is empty"
assert_eq "$(pgrep -f "$WORK/hang.sh" || true)" "" "no handler shell is left"
pass "all"
