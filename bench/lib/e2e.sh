#!/usr/bin/env bash
# Part "e2e" of bench/run.sh: producer and consumer at once.  A batched
# producer (pgbench, one client, transactions of 1000 jobs, as fast as it
# can) publishes BENCH_JOBS jobs while the consumer runs:
#   - walq: `walq consume --noop`, started before the producer;
#   - SKIP LOCKED: the worker configuration that drained fastest in this
#     run's drain part (BENCH_SKIP_BEST="VARIANT CLIENTS"), pgbench clients;
#   - PgQ: pgq.insert_event batches, pgqd ticking, one consumer looping on
#     next_batch / get_batch_events / finish_batch (pgbench).
# Throughput is the jobs divided by the time from the producer's start to the
# last job's completion (seen by a watcher polling every 20 ms).  The lag
# (jobs published and not yet completed) is sampled every 250 ms.  The
# server's CPU over the whole run (publishing included) is noted too.
#
# Durability: fsync, synchronous_commit and full_page_writes on.
# shellcheck disable=SC2119  # bench_pg_start and server_cpu_ms take optional arguments
set -euo pipefail

BENCH_SECTION=e2e
jobs=${BENCH_JOBS:-200000}
# The SKIP LOCKED workers to run: the best configuration of each variant in
# part 1's drain ("delete 2,update 4"), or the ones given.
IFS=, read -r -a skip_configs <<<"${BENCH_SKIP_BEST:-delete 2,update 4}"
# pgqd calls pgq.ticker() every this many seconds (its default is 1).
pgq_ticker_period=${BENCH_PGQ_TICKER_PERIOD:-0.1}
export TEST_NAME=bench-e2e
# shellcheck source=SCRIPTDIR/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

bench_pg_start
walq init >/dev/null
pg_psql -f "$BENCH_DIR/schema.sql" >/dev/null
q "CREATE EXTENSION pgq" >/dev/null
q "SELECT pgq.create_queue('bench')" >/dev/null
q "SELECT pgq.register_consumer('bench', 'bench_consumer')" >/dev/null
pgq_seq=$(q "SELECT queue_event_seq FROM pgq.queue WHERE queue_name = 'bench'")

cat >"$WORK/pgqd.ini" <<EOF
[pgqd]
logfile = $WORK/pgqd.log
pidfile = $WORK/pgqd.pid
base_connstr = host=$PGHOST port=$PGPORT user=postgres
initial_database = postgres
database_list = postgres
ticker_period = $pgq_ticker_period
EOF

# run_e2e NAME ROUND LAG_SQL: the producer command is in $producer (an
# array), the completion condition, known once the producer is done, comes
# from the function `until_sql`.  The consumer is already running.
run_e2e() {
    local name=$1 round=$2 lag_sql=$3 sampler c0 c1 t0 tp tdone secs
    rm -f "$WORK/lag"
    bg "$WATCH_BIN" --sample "$lag_sql" --samples "$WORK/lag" --sample-ms 250 --timeout 600
    sampler=$BG_PID
    c0=$(server_cpu_ms)
    t0=$(now)
    "${producer[@]}"
    tp=$(now)
    tdone=$("$WATCH_BIN" --until "$(until_sql)" --interval-ms 20 --timeout 300) ||
        fail "$name: the consumer did not finish within 300 s of the producer"
    c1=$(server_cpu_ms)
    kill -TERM "$sampler"
    bg_wait "$sampler" 10
    secs=$(fsub "$tdone" "$t0")
    result "$name.rate" "$round" "$(fdiv "$jobs" "$secs" %.0f)"
    result "$name.secs" "$round" "$secs"
    result "$name.producer_rate" "$round" "$(fdiv "$jobs" "$(fsub "$tp" "$t0")" %.0f)"
    result "$name.tail_secs" "$round" "$(fsub "$tdone" "$tp")"
    result "$name.server_cpu" "$round" "$(fdiv $((c1 - c0)) $((jobs / 1000)) %.2f)"
    # The lag: its maximum, and its value at the middle and at the end of
    # the producer's run (a lag that keeps growing is a consumer that does
    # not keep up).
    read -r lmax lmid lend < <(awk -v t0="$t0" -v tp="$tp" '
        $2 != "-" { if ($2 > max) max = $2
                    if ($1 <= t0 + (tp - t0) / 2) mid = $2
                    if ($1 <= tp) end = $2 }
        END { print max + 0, mid + 0, end + 0 }' "$WORK/lag")
    result "$name.lag_max" "$round" "$lmax"
    result "$name.lag_mid" "$round" "$lmid"
    result "$name.lag_end" "$round" "$lend"
    note "round $round: $name: $jobs jobs in $secs s (producer $(fsub "$tp" "$t0") s), lag max $lmax, mid $lmid, end $lend"
}

walq_round() {
    # A group and queue of its own per round: its slot is made now, so it
    # does not have to read the WAL of the baselines' runs before.
    local round=$1 group=e2e$1 consumer base
    truncate_outcomes
    bg "$WALQ_BIN" consume --group "$group" --queue "$group" --noop --quiet 2>"$WORK/walq.err"
    consumer=$BG_PID
    wait_for "slot_active walq_$group" 30 "walq consume to stream from its slot"
    sleep 0.5
    base=$(q "SELECT coalesce(max(id), 0) FROM walq.jobs")
    producer=(produce producer_walq.sql "$jobs" -D queue="$group")
    # The last job is a marker published after the producer, in a
    # transaction that notes where it writes: once the group's cursor
    # passes that point, every job before it has its outcome.
    until_sql() {
        local marker
        marker=$(pg_psql -c "BEGIN" -c "INSERT INTO walq.jobs (queue) VALUES ('$group')" \
            -c "SELECT pg_current_wal_insert_lsn()" -c "COMMIT")
        echo "SELECT bool_and(cursor_lsn >= '$marker') FROM walq.readers WHERE group_name = '$group'"
    }
    # The lag: the last id published minus the greatest id the group
    # recorded (an outcome row or the last id of a batch row; every record
    # is exact now and stays until its generation is retired).
    run_e2e walq "$round" \
        "SELECT (SELECT coalesce(max(id), $base) FROM walq.jobs WHERE queue = '$group')
                - coalesce(greatest(
                      (SELECT max(job_id) FROM walq.outcomes WHERE group_name = '$group'),
                      (SELECT max(last_id) FROM walq.outcome_batches WHERE group_name = '$group')),
                    $base)"
    result walq.client_cpu "$round" "$(fdiv "$(proc_cpu_ms "$consumer")" $((jobs / 1000)) %.2f)"
    kill -TERM "$consumer"
    bg_wait "$consumer" 60
    [ "$BG_RC" -eq 0 ] || note "round $round: walq consume exited with status $BG_RC: $(tail -n 3 "$WORK/walq.err")"
    result walq.recorded "$round" "$(walq_done_count "$group")"
    q "SELECT pg_drop_replication_slot('walq_$group')" >/dev/null
}

skip_round() {
    local round=$1 skip_variant=$2 skip_clients=$3 table worker script
    case $skip_variant in
    delete) table=bench.skip_jobs script=producer_skip.sql worker=worker_skip_delete.sql ;;
    update) table=bench.skip_jobs_u script=producer_skip_u.sql worker=worker_skip_update.sql ;;
    *) fail "unknown SKIP LOCKED variant \"$skip_variant\"" ;;
    esac
    q "TRUNCATE $table" >/dev/null
    # The workers' sessions pin index paths (enable_sort, enable_seqscan
    # off): their prepared claim gets its generic plan while the table is
    # empty, and without the pins that plan sorts or scans the whole table
    # on every claim once it fills up.  (Planning every claim instead makes
    # the planner wade through the dead index entries the claims leave.)
    # That would measure the planner, not the pattern.
    PGOPTIONS="-c enable_sort=off -c enable_seqscan=off" \
        bg "$PGBENCH" -n -M prepared -c "$skip_clients" -j 2 -T 3600 -f "$BENCH_DIR/$worker" \
        >"$WORK/workers.log" 2>&1
    workers=$BG_PID
    sleep 0.5
    producer=(produce "$script" "$jobs")
    until_sql() {
        echo "SELECT (SELECT id FROM $table ORDER BY id LIMIT 1) IS NULL"
    }
    run_e2e "skip_$skip_variant" "$round" "SELECT coalesce(max(id) - min(id) + 1, 0) FROM $table"
    kill -TERM "$workers"
    bg_wait "$workers" 30
}

pgq_round() {
    local round=$1 ticker consumer
    bg pgqd -q "$WORK/pgqd.ini"
    ticker=$BG_PID
    bg "$PGBENCH" -n -M prepared -c 1 -T 3600 -f "$BENCH_DIR/consumer_pgq.sql" \
        >"$WORK/pgq-consumer.log" 2>&1
    consumer=$BG_PID
    sleep 0.5
    producer=(produce producer_pgq.sql "$jobs")
    # Done when the consumer has finished a batch whose closing tick covers
    # the last event.
    until_sql() {
        local last
        last=$(q "SELECT last_value FROM $pgq_seq")
        echo "SELECT t.tick_event_seq >= $last AND s.sub_batch IS NULL
                FROM pgq.subscription s
                JOIN pgq.consumer c ON c.co_id = s.sub_consumer
                JOIN pgq.tick t ON t.tick_queue = s.sub_queue AND t.tick_id = s.sub_last_tick
               WHERE c.co_name = 'bench_consumer'"
    }
    run_e2e pgq "$round" \
        "SELECT (SELECT last_value FROM $pgq_seq) - t.tick_event_seq
           FROM pgq.subscription s
           JOIN pgq.consumer c ON c.co_id = s.sub_consumer
           JOIN pgq.tick t ON t.tick_queue = s.sub_queue AND t.tick_id = s.sub_last_tick
          WHERE c.co_name = 'bench_consumer'"
    kill -TERM "$consumer"
    bg_wait "$consumer" 30
    kill -TERM "$ticker"
    bg_wait "$ticker" 30
}

for cfg in "${skip_configs[@]}"; do
    read -r v n <<<"$cfg"
    result "skip_$v.clients" 1 "$n"
done
result pgq.ticker_period 1 "$pgq_ticker_period"
for round in $(seq 1 "$BENCH_ROUNDS"); do
    q "CHECKPOINT" >/dev/null
    walq_round "$round"
    for cfg in "${skip_configs[@]}"; do
        q "CHECKPOINT" >/dev/null
        # shellcheck disable=SC2086  # "VARIANT CLIENTS"
        skip_round "$round" $cfg
    done
    q "CHECKPOINT" >/dev/null
    pgq_round "$round"
done
