#!/usr/bin/env bash
# Part "drain" of bench/run.sh: a backlog of BENCH_JOBS jobs is published
# first, then consumed, by
#   - pg_recvlogical with wal2json and walq's plugin options, to /dev/null
#     (the decoding limit: it consumes nothing);
#   - `walq consume --drain --noop`, over the same WAL range;
#   - the SKIP LOCKED worker (pgbench), in each variant (DELETE-claim,
#     UPDATE-claim + DELETE-ack) and client count, on a table of its own.
# For each: jobs per second, the server's CPU during consumption (all its
# processes, including the walsender and backends that exit), the
# consumer's own CPU, dead tuples made and left, and the CPU of the VACUUM
# that the consumption makes necessary afterwards.
#
# Durability: fsync, synchronous_commit and full_page_writes on (what a
# production server runs; walq's acks and the workers' claims all commit
# synchronously).  A CHECKPOINT precedes every measured run.
# shellcheck disable=SC2119  # bench_pg_start and server_cpu_ms take optional arguments
set -euo pipefail

BENCH_SECTION=drain
jobs=${BENCH_JOBS:-200000}
clients=${BENCH_SKIP_CLIENTS:-2 4 8}
variants=${BENCH_SKIP_VARIANTS:-delete update}
export TEST_NAME=bench-drain
# shellcheck source=SCRIPTDIR/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

for c in $clients; do
    [ $((jobs % (100 * c))) -eq 0 ] || fail "BENCH_JOBS ($jobs) must be a multiple of 100 x $c"
done

bench_pg_start
walq init >/dev/null
pg_psql -f "$BENCH_DIR/schema.sql" >/dev/null

# measure NAME ROUND TABLE CMD...: runs CMD (a consumer) and records its
# rate, server and client CPU per 1000 jobs, and the dead tuples it made in
# TABLE and left there.
measure() {
    local name=$1 round=$2 table=$3
    shift 3
    local s0=() s1=() c0 c1 t0 t1 secs
    read -r -a s0 < <(table_stat "$table")
    q "CHECKPOINT" >/dev/null
    c0=$(server_cpu_ms)
    t0=$(now)
    if ! timed "$WORK/time" timeout -k 5 "${BENCH_TIMEOUT:-600}" "$@" >"$WORK/measure.log" 2>&1; then
        fail "$name failed: $(tail -n 5 "$WORK/measure.log")"
    fi
    t1=$(now)
    settle
    c1=$(server_cpu_ms)
    secs=$(fsub "$t1" "$t0")
    sleep 0.7 # the stats of the exited backends reach pg_stat_user_tables
    read -r -a s1 < <(table_stat "$table")
    result "$name.rate" "$round" "$(fdiv "$jobs" "$secs" %.0f)"
    result "$name.secs" "$round" "$secs"
    result "$name.server_cpu" "$round" "$(fdiv $((c1 - c0)) $((jobs / 1000)) %.2f)"
    result "$name.client_cpu" "$round" "$(fdiv "$(client_cpu_ms "$WORK/time")" $((jobs / 1000)) %.2f)"
    # Dead tuples made: every update and delete leaves one, whether or not
    # autovacuum has removed it since.
    result "$name.dead_made" "$round" "$(fdiv $((s1[1] - s0[1] + s1[2] - s0[2])) "$jobs" %.3f)"
    result "$name.dead_left" "$round" "${s1[3]}"
    note "round $round: $name: $jobs jobs in $secs s, server CPU $((c1 - c0)) ms"
}

# vacuum_cost NAME ROUND TABLE: the CPU of vacuuming what the consumer left.
vacuum_cost() {
    local c0 c1
    c0=$(server_cpu_ms)
    q "VACUUM $3" >/dev/null
    settle
    c1=$(server_cpu_ms)
    result "$1.vacuum_cpu" "$2" "$(fdiv $((c1 - c0)) $((jobs / 1000)) %.2f)"
}

for round in $(seq 1 "$BENCH_ROUNDS"); do
    # walq and pg_recvlogical read the same WAL range: both slots are made
    # at the current position, then the backlog is published.  Each round
    # has a group (and a queue) of its own, created on an empty backlog, so
    # that no slot has to read the WAL of the rounds before (an advanced
    # slot still restarts decoding far back).
    group=bench$round
    q "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots
        WHERE slot_name IN ('bench_recvlogical', 'walq_bench$((round - 1))')" >/dev/null
    "$PGTEST_BINDIR/pg_recvlogical" -d "$PGDATABASE" --slot bench_recvlogical --create-slot \
        --plugin wal2json
    walq consume --group "$group" --queue "$group" --drain --noop --quiet
    t0=$(now)
    produce producer_walq.sql "$jobs" -D queue="$group"
    t1=$(now)
    end_lsn=$(q "SELECT pg_current_wal_insert_lsn()")
    result publish.rate "$round" "$(fdiv "$jobs" "$(fsub "$t1" "$t0")" %.0f)"
    q "VACUUM ANALYZE walq.jobs" >/dev/null

    measure recvlogical "$round" walq.jobs \
        "$PGTEST_BINDIR/pg_recvlogical" -d "$PGDATABASE" --slot bench_recvlogical --start \
        --no-loop --endpos "$end_lsn" -f /dev/null \
        -o format-version=2 -o include-xids=1 -o include-timestamp=1 -o include-lsn=1 \
        -o include-types=0 -o add-tables=walq.jobs,walq_jobs.*,walq.commands -o actions=insert

    truncate_outcomes
    measure walq "$round" walq.jobs "$WALQ_BIN" consume --group "$group" --queue "$group" --drain \
        --noop --quiet
    done_jobs=$(walq_done_count "$group")
    result walq.recorded "$round" "$done_jobs"
    [ "$done_jobs" = "$jobs" ] || note "round $round: walq recorded $done_jobs of $jobs jobs done"
    if walq_slot_recreated "walq_$group"; then
        note "walq dropped and recreated slot walq_$group: it read the backlog from the table"
        result walq.slot_recreated "$round" 1
    fi
    vacuum_cost walq "$round" "walq.outcomes, walq.outcome_batches"

    for variant in $variants; do
        case $variant in
        delete) table=bench.skip_jobs producer=producer_skip.sql worker=worker_skip_delete.sql ;;
        update) table=bench.skip_jobs_u producer=producer_skip_u.sql worker=worker_skip_update.sql ;;
        *) fail "unknown SKIP LOCKED variant \"$variant\" (delete or update)" ;;
        esac
        for c in $clients; do
            q "TRUNCATE $table" >/dev/null
            produce "$producer" "$jobs"
            q "VACUUM ANALYZE $table" >/dev/null
            # Each claim takes 100 jobs while 100 are left, so jobs / 100
            # claims in all drain the table exactly.
            # The same pinned plan as in part e2e (here the statistics would
            # choose it anyway).
            PGOPTIONS="-c enable_sort=off -c enable_seqscan=off" measure "skip_${variant}_$c" "$round" "$table" \
                "$PGBENCH" -n -M prepared -c "$c" -j 2 -t $((jobs / 100 / c)) \
                -f "$BENCH_DIR/$worker"
            left=$(q "SELECT count(*) FROM $table")
            result "skip_${variant}_$c.left" "$round" "$left"
            [ "$left" -eq 0 ] || note "round $round: skip_${variant}_$c left $left jobs"
            vacuum_cost "skip_${variant}_$c" "$round" "$table"
        done
    done
done
