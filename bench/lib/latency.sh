#!/usr/bin/env bash
# Part "latency" of bench/run.sh: from commit to handler start, at 500
# single-row jobs per second for BENCH_LAT_SECS seconds, for
#   - walq: a C program on the library with a callback handler
#     (bench/latency.c, mode walq), reading its group's slot;
#   - LISTEN/NOTIFY: a trigger notifies each insert; the listener claims
#     with DELETE ... SKIP LOCKED on each notification;
#   - polling: a worker claiming with DELETE ... SKIP LOCKED every 100 ms.
# The producer (bench/latency.c, mode produce) inserts each job in a
# transaction of its own over 8 connections, on a fixed schedule, and notes
# when the server acknowledged the commit.  Latency = the handler's start
# minus that acknowledgement (both on this machine's clock).  Each method
# runs once with the producer's synchronous_commit on and once off; walq runs
# a third time with it off and wal_writer_delay = 10ms.
#
# Durability: fsync and full_page_writes on; synchronous_commit is the
# producer's, as said.  The server's CPU per 1000 jobs over each run is
# noted too, and that of publishing alone (no consumer), to subtract.
# shellcheck disable=SC2119  # bench_pg_start and server_cpu_ms take optional arguments
set -euo pipefail

BENCH_SECTION=latency
secs=${BENCH_LAT_SECS:-5}
rate=${BENCH_LAT_RATE:-500}
count=$((secs * rate))
export TEST_NAME=bench-latency
# shellcheck source=SCRIPTDIR/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

bench_pg_start
walq init >/dev/null
pg_psql -f "$BENCH_DIR/schema.sql" >/dev/null
walq consume --group lat --queue lat --drain --noop --quiet

# percentiles FILE: "p50 p99 max" of the numbers in FILE (ms).
percentiles() {
    sort -n "$1" | awk '{ v[NR] = $1 } END {
        if (NR == 0) { print "- - -"; exit }
        i50 = int(NR * 0.50 + 0.999999); i99 = int(NR * 0.99 + 0.999999)
        printf "%.3f %.3f %.3f\n", v[i50], v[i99], v[NR] }'
}

# run_one METHOD SYNC NAME
run_one() {
    local method=$1 sync=$2 name=$3 table consumer c0 c1 missing
    case $method in
    none)
        # Publishing alone, for the server CPU it costs.
        table=bench.lat_poll
        consumer=""
        ;;
    walq)
        table=walq.jobs
        bg "$LATENCY_BIN" walq --group lat --queue lat --count "$count" --timeout $((secs + 60)) \
            --out "$WORK/consumed" 2>"$WORK/consumer.err"
        consumer=$BG_PID
        wait_for 'slot_active walq_lat' 30 "the walq latency consumer to stream"
        ;;
    notify)
        table=bench.lat_notify
        bg "$LATENCY_BIN" notify --table "$table" --queue lat --channel bench_jobs \
            --count "$count" --timeout $((secs + 60)) --out "$WORK/consumed" 2>"$WORK/consumer.err"
        consumer=$BG_PID
        wait_for "[ \"\$(q \"SELECT count(*) FROM pg_stat_activity
                             WHERE application_name = 'walq-bench-latency'\")\" -ge 1 ]" 30
        ;;
    poll)
        table=bench.lat_poll
        bg "$LATENCY_BIN" poll --table "$table" --queue lat --interval-ms 100 \
            --count "$count" --timeout $((secs + 60)) --out "$WORK/consumed" 2>"$WORK/consumer.err"
        consumer=$BG_PID
        ;;
    esac
    sleep 0.5
    c0=$(server_cpu_ms)
    "$LATENCY_BIN" produce --table "$table" --queue lat --rate "$rate" --count "$count" \
        --conns 8 --sync "$sync" --timeout $((secs + 60)) --out "$WORK/produced" 2>>"$WORK/producer.err"
    if [ -z "$consumer" ]; then
        settle
        c1=$(server_cpu_ms)
        q "TRUNCATE $table" >/dev/null
        result "$name.server_cpu" "$round" "$(fdiv $((c1 - c0)) "$(fdiv "$count" 1000)" %.1f)"
        return
    fi
    # The consumer stops by itself after the last job; give it 10 s.
    local deadline=$((SECONDS + 10))
    while ! _pgtest_exited "$consumer" && [ "$SECONDS" -lt "$deadline" ]; do
        sleep 0.05
    done
    c1=$(server_cpu_ms)
    if ! _pgtest_exited "$consumer"; then
        kill -TERM "$consumer"
    fi
    bg_wait "$consumer" 30
    [ "$BG_RC" -eq 0 ] || note "$name: the consumer exited with status $BG_RC: $(tail -n 3 "$WORK/consumer.err")"
    # Join on the job id: handler start - commit acknowledged, and the
    # commit's own round trip (statement sent to acknowledged).
    awk 'NR == FNR { ack[$1] = $3; sent[$1] = $2; next }
         ($1 in ack) { printf "%.3f\n", ($2 - ack[$1]) / 1000.0 > "/dev/stdout"
                       seen[$1] = 1 }
         END { for (id in ack) if (!(id in seen)) missing++
               print missing + 0 > "'"$WORK/missing"'" }' \
        "$WORK/produced" "$WORK/consumed" >"$WORK/lat"
    awk '{ printf "%.3f\n", ($3 - $2) / 1000.0 }' "$WORK/produced" >"$WORK/commit"
    read -r p50 p99 max < <(percentiles "$WORK/lat")
    read -r c50 c99 _ < <(percentiles "$WORK/commit")
    missing=$(cat "$WORK/missing")
    result "$name.p50" "$round" "$p50"
    result "$name.p99" "$round" "$p99"
    result "$name.max" "$round" "$max"
    result "$name.missing" "$round" "$missing"
    result "$name.commit_p50" "$round" "$c50"
    result "$name.commit_p99" "$round" "$c99"
    result "$name.server_cpu" "$round" "$(fdiv $((c1 - c0)) "$(fdiv "$count" 1000)" %.1f)"
    note "round $round: $name: p50 $p50 ms, p99 $p99 ms, max $max ms; commit p50 $c50 ms; $missing not seen"
}

result config 1 "$rate jobs/s for $secs s"
for round in $(seq 1 "$BENCH_ROUNDS"); do
    q "CHECKPOINT" >/dev/null
    for sync in on off; do
        for method in none walq notify poll; do
            run_one "$method" "$sync" "${method}_sync_$sync"
        done
    done
    q "ALTER SYSTEM SET wal_writer_delay = '10ms'" >/dev/null
    q "SELECT pg_reload_conf()" >/dev/null
    sleep 0.5
    run_one walq off walq_sync_off_wwd10
    q "ALTER SYSTEM RESET wal_writer_delay" >/dev/null
    q "SELECT pg_reload_conf()" >/dev/null
done
