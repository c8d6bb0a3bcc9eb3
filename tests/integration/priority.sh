#!/usr/bin/env bash
# shellcheck disable=SC2016  # wait_for evals its condition later
# Priorities: with one handler at a time and a backlog waiting when the
# consumer starts, lower priority numbers run first, and jobs of equal
# priority run in id order (here the same as commit order).  Twice: a backlog
# read from walq.jobs at the group's first start, and a backlog that comes
# through the slot at a later start.
# shellcheck source=SCRIPTDIR/../lib/pgtest.sh
. "$(dirname "$0")/../lib/pgtest.sh"
require_walq
pg_start
walq init

# The second backlog arrives over the stream, which the consumer reads as it
# comes: when it starts the first job, the rest may not have arrived yet, and
# it cannot know more is coming.  So the handler holds its first job of that
# round for a second, and that first job is left out of the comparison.
h=$(handler record.sh <<HANDLER
cat >/dev/null
echo "\$WALQ_JOB_ID" >>"$WORK/order.log"
if [ -e "$WORK/hold-first" ]; then
    rm -f "$WORK/hold-first"
    sleep 1
fi
HANDLER
)

# backlog QUEUE N: N jobs in 3 SQL transactions and 5 `walq publish
# --priority` calls, priorities from -3 to 3 in a scrambled order, and one
# job of priority -10 published last.
backlog() {
    local queue=$1 n=$2 tx
    for tx in 0 1 2; do
        q "INSERT INTO walq.jobs (queue, payload, priority)
           SELECT '$queue', jsonb_build_object('n', g), (g * 37 + $tx) % 7 - 3
             FROM generate_series(1, $n) g" >/dev/null
    done
    for p in 2 -1 0 3 -3; do
        walq publish --priority "$p" "$queue" "{\"cli\": $p}" >/dev/null
    done
    q "SELECT walq.publish('$queue', '{\"urgent\": true}', priority => -10)" >/dev/null
}

# check_order AFTER_ID SKIP_FIRST MSG: the handler ran every job of queue p
# with an id above AFTER_ID once, in (priority, id) order; with SKIP_FIRST=1
# the first run is left out of the comparison.
check_order() {
    local after=$1 skip=$2 msg=$3 ran expected first
    first=$(head -n 1 "$WORK/order.log")
    ran=$(tail -n "+$((skip + 1))" "$WORK/order.log" | paste -sd' ')
    expected=$(q "SELECT string_agg(id::text, ' ' ORDER BY priority, id) FROM walq.jobs
                   WHERE queue = 'p' AND id > $after AND ($skip = 0 OR id <> $first)")
    assert_eq "$(sort -n "$WORK/order.log" | paste -sd' ')" \
        "$(q "SELECT string_agg(id::text, ' ' ORDER BY id) FROM walq.jobs WHERE queue = 'p' AND id > $after")" \
        "every job ran once"
    assert_eq "$ran" "$expected" "$msg"
}

# ---- 1. the backlog of a new group, read from walq.jobs -----------------------

backlog p 20
bg "$WALQ_BIN" consume --group prio --queue p --concurrency 1 -- "$h"
pid=$BG_PID
n=$(q "SELECT count(*) FROM walq.jobs WHERE queue = 'p'")
wait_for '[ "$(done_count prio)" -eq "$n" ]' 60 "all $n jobs done"
kill -TERM "$pid"
bg_wait "$pid" 20
assert_eq "$BG_RC" 0 "SIGTERM: the consumer exits 0"
check_order 0 0 "first start: the backlog ran by priority, then id"
assert_eq "$(head -n 1 "$WORK/order.log")" "$(q "SELECT id FROM walq.jobs WHERE payload ? 'urgent'")" \
    "the priority -10 job, published last, ran first"

# ---- 2. a backlog that comes through the slot ---------------------------------

# The group exists and its slot is past everything so far; these jobs are
# committed while no consumer runs, and the next one reads them from the slot.
last=$(q "SELECT max(id) FROM walq.jobs")
backlog p 20
touch "$WORK/hold-first"
: >"$WORK/order.log"
bg "$WALQ_BIN" consume --group prio --queue p --concurrency 1 --verbose -- "$h" 2>"$WORK/consumer.err"
pid=$BG_PID
n=$(q "SELECT count(*) FROM walq.jobs WHERE queue = 'p'")
wait_for '[ "$(done_count prio)" -eq "$n" ]' 60 "all $n jobs done"
kill -TERM "$pid"
bg_wait "$pid" 20
assert_eq "$BG_RC" 0 "SIGTERM: the consumer exits 0"
if grep -q 'reading the backlog from walq.jobs' "$WORK/consumer.err"; then
    fail "the second start resynchronized from the table instead of reading the slot"
fi
check_order "$last" 1 "restart: the backlog from the slot ran by priority, then id"
pass "all"
