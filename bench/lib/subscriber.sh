#!/usr/bin/env bash
# Part "subscriber" of bench/run.sh: the server CPU on the primary per 1000
# jobs consumed in the subscriber topology (`walq replica setup`: walq.jobs
# is copied to a second server by a publication and a subscription, every
# group's slot lives there, outcomes go to the primary), with 1 and with 3
# groups consuming the same BENCH_SUB_JOBS jobs.  The backlog is published
# and copied to the source first; the primary's CPU is then read over the
# consumption, until its walsender has sent the WAL the acks wrote (that
# walsender decodes everything the primary writes).  The source's CPU is
# noted too.
#
# Durability: fsync, synchronous_commit and full_page_writes on, both servers.
# shellcheck disable=SC2119  # bench_pg_start and server_cpu_ms take optional arguments
set -euo pipefail

BENCH_SECTION=subscriber
jobs=${BENCH_SUB_JOBS:-100000}
export TEST_NAME=bench-subscriber
# shellcheck source=SCRIPTDIR/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

bench_pg_start
bench_pg_start_extra replica
P=$PGTEST_CONN
R=$PGTEST_CONN_REPLICA
walq init >/dev/null
walq replica setup --allow-insecure-subscription --primary "$P" --source "$R" 2>"$WORK/setup.log" ||
    fail "walq replica setup failed: $(tail -n 5 "$WORK/setup.log")"

# caught_up: the subscription's walsender on the primary has sent all the
# primary's WAL written so far.
caught_up() {
    local lsn
    lsn=$(q "SELECT pg_current_wal_lsn()")
    wait_for "[ \"\$(q \"SELECT coalesce(bool_and(sent_lsn >= '$lsn'), false)
                         FROM pg_stat_replication WHERE application_name = 'walqrepl_main'\")\" = t ]" \
        120 "the subscription's walsender to send up to $lsn"
}

for round in $(seq 1 "$BENCH_ROUNDS"); do
    for ngroups in 1 3; do
        queue=sub${round}_$ngroups
        groups=()
        for i in $(seq 1 "$ngroups"); do
            groups+=("${queue}_g$i")
        done
        # The groups exist (their slots on the source) before the backlog.
        for g in "${groups[@]}"; do
            walq consume --source "$R" --primary "$P" --group "$g" --queue "$queue" --drain --noop \
                --quiet
        done
        produce producer_walq.sql "$jobs" -D queue="$queue"
        wait_for "[ \"\$(q_on replica \"SELECT count(*) FROM walq.jobs WHERE queue = '$queue'\")\" = $jobs ]" \
            120 "the source to have the $jobs jobs"
        caught_up
        q "CHECKPOINT" >/dev/null
        q_on replica "CHECKPOINT" >/dev/null
        c0=$(server_cpu_ms)
        r0=$(server_cpu_ms "$PGTEST_DIR_REPLICA/data")
        t0=$(now)
        pids=()
        for g in "${groups[@]}"; do
            bg "$WALQ_BIN" consume --source "$R" --primary "$P" --group "$g" --queue "$queue" \
                --drain --noop --quiet 2>>"$WORK/consume.log"
            pids+=("$BG_PID")
        done
        for p in "${pids[@]}"; do
            bg_wait "$p" 600
            [ "$BG_RC" -eq 0 ] || note "walq consume exited with status $BG_RC: $(tail -n 3 "$WORK/consume.log")"
        done
        t1=$(now)
        caught_up
        settle
        c1=$(server_cpu_ms)
        r1=$(server_cpu_ms "$PGTEST_DIR_REPLICA/data")
        consumed=$((jobs * ngroups))
        done_jobs=$(q "SELECT count(*) FROM walq.job_status WHERE consumer_group LIKE '${queue}\\_g%'
                        AND status = 'done'")
        [ "$done_jobs" = "$consumed" ] || note "round $round, $ngroups groups: $done_jobs of $consumed recorded"
        result "g$ngroups.primary_cpu" "$round" "$(fdiv $((c1 - c0)) $((consumed / 1000)) %.2f)"
        result "g$ngroups.source_cpu" "$round" "$(fdiv $((r1 - r0)) $((consumed / 1000)) %.2f)"
        result "g$ngroups.rate" "$round" "$(fdiv "$consumed" "$(fsub "$t1" "$t0")" %.0f)"
        result "g$ngroups.recorded" "$round" "$done_jobs"
        note "round $round: $ngroups groups: $consumed jobs consumed in $(fsub "$t1" "$t0") s; primary CPU $((c1 - c0)) ms, source CPU $((r1 - r0)) ms"
        truncate_outcomes
    done
done
