#!/usr/bin/env bash
# Part "drain" of bench/run.sh: a backlog is published first, then consumed,
# by
#   - pg_recvlogical to /dev/null (the decoding limit: it consumes nothing),
#     with wal2json and walq's options for it, and with pgoutput through a
#     publication defined as walq defines its group's;
#   - `walq consume --drain --noop`, on wal2json and on pgoutput, over the
#     same WAL range as both pg_recvlogical runs;
#   - the SKIP LOCKED worker (pgbench), in each variant (DELETE-claim,
#     UPDATE-claim + DELETE-ack) and client count, on a table of its own.
# The four stream readers read two backlogs each round: BENCH_JOBS (200,000)
# jobs in transactions of 1000 rows, then BENCH_TX1_JOBS (50,000) in
# transactions of one row (figures prefixed tx1_).
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
tx1_jobs=${BENCH_TX1_JOBS:-50000}
clients=${BENCH_SKIP_CLIENTS:-2 4 8}
variants=${BENCH_SKIP_VARIANTS:-delete update}
export TEST_NAME=bench-drain
# shellcheck source=SCRIPTDIR/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

for c in $clients; do
    [ $((jobs % (100 * c))) -eq 0 ] || fail "BENCH_JOBS ($jobs) must be a multiple of 100 x $c"
done
# The single-row backlog comes from 4 pgbench clients.
[ $((tx1_jobs % 4)) -eq 0 ] || fail "BENCH_TX1_JOBS ($tx1_jobs) must be a multiple of 4"

bench_pg_start
walq init >/dev/null
pg_psql -f "$BENCH_DIR/schema.sql" >/dev/null

# measure NAME ROUND TABLE JOBS CMD...: runs CMD (a consumer of JOBS jobs)
# and records its rate, server and client CPU per 1000 jobs, and the dead
# tuples it made in TABLE and left there.
measure() {
    local name=$1 round=$2 table=$3 n=$4
    shift 4
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
    result "$name.rate" "$round" "$(fdiv "$n" "$secs" %.0f)"
    result "$name.secs" "$round" "$secs"
    result "$name.server_cpu" "$round" "$(fdiv $((c1 - c0)) "$(fdiv "$n" 1000)" %.2f)"
    result "$name.client_cpu" "$round" "$(fdiv "$(client_cpu_ms "$WORK/time")" "$(fdiv "$n" 1000)" %.2f)"
    # Dead tuples made: every update and delete leaves one, whether or not
    # autovacuum has removed it since.
    result "$name.dead_made" "$round" "$(fdiv $((s1[1] - s0[1] + s1[2] - s0[2])) "$n" %.3f)"
    result "$name.dead_left" "$round" "${s1[3]}"
    note "round $round: $name: $n jobs in $secs s, server CPU $((c1 - c0)) ms"
}

# vacuum_cost NAME ROUND TABLE JOBS: the CPU of vacuuming what the consumer
# of JOBS jobs left.
vacuum_cost() {
    local c0 c1
    c0=$(server_cpu_ms)
    q "VACUUM $3" >/dev/null
    settle
    c1=$(server_cpu_ms)
    result "$1.vacuum_cpu" "$2" "$(fdiv $((c1 - c0)) "$(fdiv "$4" 1000)" %.2f)"
}

# publication_like PUB FROM: publication PUB defined as FROM is (its tables
# with their row filters, and its options), for pg_recvlogical to be sent
# what walq's pgoutput reader is sent.
publication_like() {
    local pub=$1 from=$2 tables options
    tables=$(q "SELECT string_agg(format('%I.%I', schemaname, tablename)
                                  || coalesce(' WHERE (' || rowfilter || ')', ''), ', ')
                  FROM pg_publication_tables WHERE pubname = '$from'")
    [ -n "$tables" ] || fail "publication $from publishes no table"
    options=$(q "SELECT format('publish = %L, publish_via_partition_root = %s',
                               concat_ws(', ', CASE WHEN pubinsert THEN 'insert' END,
                                         CASE WHEN pubupdate THEN 'update' END,
                                         CASE WHEN pubdelete THEN 'delete' END,
                                         CASE WHEN pubtruncate THEN 'truncate' END),
                               pubviaroot::text)
                   FROM pg_publication WHERE pubname = '$from'")
    PGOPTIONS="-c client_min_messages=warning" q "DROP PUBLICATION IF EXISTS $pub" >/dev/null
    q "CREATE PUBLICATION $pub FOR TABLE $tables WITH ($options)" >/dev/null
    note "publication $pub: FOR TABLE $tables WITH ($options)"
}

# readers GROUP: the slots of the four stream readers, at the current
# position, before a backlog for queue GROUP is published: walq's group
# GROUPp on pgoutput (which makes its publication, walq_GROUPp, first), then
# pg_recvlogical's publication like it and its pgoutput slot (a slot reads
# only the publications that existed when it was made), pg_recvlogical's
# wal2json slot, and walq's group GROUP on wal2json.  The slots of the
# backlog before are dropped: an advanced slot still restarts decoding far
# back, and no reader should read the WAL of earlier runs.
readers() {
    local group=$1
    q "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE NOT active" >/dev/null
    walq consume --plugin pgoutput --group "${group}p" --queue "$group" --drain --noop --quiet
    publication_like bench_recvlogical_pgoutput "walq_${group}p"
    "$PGTEST_BINDIR/pg_recvlogical" -d "$PGDATABASE" --slot bench_recvlogical_pgoutput \
        --create-slot --plugin pgoutput
    "$PGTEST_BINDIR/pg_recvlogical" -d "$PGDATABASE" --slot bench_recvlogical --create-slot \
        --plugin wal2json
    walq consume --plugin wal2json --group "$group" --queue "$group" --drain --noop --quiet
}

# consume PREFIX ROUND GROUP JOBS END: the four readers over the backlog of
# queue GROUP, up to the WAL position END (pg_recvlogical) or the end of the
# WAL when they start (walq --drain): pg_recvlogical then walq on wal2json,
# and on pgoutput; which plugin goes first alternates with the rounds.
consume() {
    local prefix=$1 round=$2 group=$3 n=$4 end=$5 plugin plugins name walq_group done_jobs
    plugins="wal2json pgoutput"
    [ $((round % 2)) -eq 1 ] || plugins="pgoutput wal2json"
    for plugin in $plugins; do
        if [ "$plugin" = wal2json ]; then
            name="" walq_group=$group
            measure "${prefix}recvlogical" "$round" walq.jobs "$n" \
                "$PGTEST_BINDIR/pg_recvlogical" -d "$PGDATABASE" --slot bench_recvlogical --start \
                --no-loop --endpos "$end" -f /dev/null \
                -o format-version=2 -o include-xids=1 -o include-timestamp=1 -o include-lsn=1 \
                -o include-types=0 -o add-tables=walq.jobs,walq_jobs.*,walq.commands -o actions=insert
        else
            name=_pgoutput walq_group=${group}p
            measure "${prefix}recvlogical$name" "$round" walq.jobs "$n" \
                "$PGTEST_BINDIR/pg_recvlogical" -d "$PGDATABASE" --slot bench_recvlogical_pgoutput \
                --start --no-loop --endpos "$end" -f /dev/null \
                -o proto_version=1 -o publication_names=bench_recvlogical_pgoutput
        fi
        truncate_outcomes
        measure "${prefix}walq$name" "$round" walq.jobs "$n" "$WALQ_BIN" consume --plugin "$plugin" \
            --group "$walq_group" --queue "$group" --drain --noop --quiet
        done_jobs=$(walq_done_count "$walq_group")
        result "${prefix}walq$name.recorded" "$round" "$done_jobs"
        [ "$done_jobs" = "$n" ] || note "round $round: walq ($plugin) recorded $done_jobs of $n jobs done"
        if walq_slot_recreated "walq_$walq_group"; then
            note "walq dropped and recreated slot walq_$walq_group: it read the backlog from the table"
            result "${prefix}walq$name.slot_recreated" "$round" 1
        fi
        vacuum_cost "${prefix}walq$name" "$round" "walq.outcomes, walq.outcome_batches" "$n"
    done
}

for round in $(seq 1 "$BENCH_ROUNDS"); do
    # Each round has groups (and queues) of their own, created on an empty
    # backlog, so the backlog comes from the stream.  The readers of one
    # backlog read the same WAL range: their slots are made at the current
    # position, then the backlog is published.
    group=bench$round
    readers "$group"
    t0=$(now)
    produce producer_walq.sql "$jobs" -D queue="$group"
    t1=$(now)
    end_lsn=$(q "SELECT pg_current_wal_insert_lsn()")
    result publish.rate "$round" "$(fdiv "$jobs" "$(fsub "$t1" "$t0")" %.0f)"
    q "VACUUM ANALYZE walq.jobs" >/dev/null
    consume "" "$round" "$group" "$jobs" "$end_lsn"

    # The same readers over single-row transactions, from 4 clients with
    # synchronous_commit off: the WAL is the same as with it on (each
    # transaction has its commit record), and the fill takes seconds, not
    # a disk flush per job.
    group=single$round
    readers "$group"
    t0=$(now)
    PGOPTIONS="-c synchronous_commit=off" pgbench_run -c 4 -j 2 -t $((tx1_jobs / 4)) \
        -f "$BENCH_DIR/producer_walq_1.sql" -D queue="$group"
    t1=$(now)
    end_lsn=$(q "SELECT pg_current_wal_insert_lsn()")
    result tx1_publish.rate "$round" "$(fdiv "$tx1_jobs" "$(fsub "$t1" "$t0")" %.0f)"
    q "VACUUM ANALYZE walq.jobs" >/dev/null
    consume tx1_ "$round" "$group" "$tx1_jobs" "$end_lsn"
    q "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE NOT active" >/dev/null

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
                "$jobs" "$PGBENCH" -n -M prepared -c "$c" -j 2 -t $((jobs / 100 / c)) \
                -f "$BENCH_DIR/$worker"
            left=$(q "SELECT count(*) FROM $table")
            result "skip_${variant}_$c.left" "$round" "$left"
            [ "$left" -eq 0 ] || note "round $round: skip_${variant}_$c left $left jobs"
            vacuum_cost "skip_${variant}_$c" "$round" "$table" "$jobs"
        done
    done
done
