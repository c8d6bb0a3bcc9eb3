#!/usr/bin/env bash
# Part "backlog" of bench/run.sh: the consumer's memory with a backlog of
# BENCH_BACKLOG_JOBS (1M) jobs in its slot, and walq's storage over a run
# that consumes them all.  One round (it is long).
#
#   1. The group's slot exists; the backlog is published in 4 transactions
#      (bench/backlog_memory.sh's method: large transactions are the hard
#      case for pausing the stream).  Table sizes are taken.
#   2. A slow exec handler (sleep 0.2 s, --concurrency 2, --max-in-flight
#      10000) runs for BENCH_BACKLOG_SECS: the consumer must stop reading
#      and hold at most --max-in-flight jobs.  Its RSS is sampled every
#      0.25 s; GNU time gives its peak.  Then SIGTERM.
#   3. `walq consume --drain --noop` consumes the whole backlog, RSS sampled
#      the same way.
#   4. Table sizes (pg_total_relation_size, live and dead tuples) again.
#
# Durability: fsync, synchronous_commit and full_page_writes on.
# shellcheck disable=SC2119  # bench_pg_start and server_cpu_ms take optional arguments
set -euo pipefail

BENCH_SECTION=backlog
jobs=${BENCH_BACKLOG_JOBS:-1000000}
txns=4
secs=${BENCH_BACKLOG_SECS:-15}
export TEST_NAME=bench-backlog
# shellcheck source=SCRIPTDIR/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

bench_pg_start "wal_sender_timeout = 60s"
walq init >/dev/null
walq consume --group bench --queue bench --drain --noop --quiet

outcome_bytes_sql="SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = 'walq' AND c.relkind = 'r' AND c.relname LIKE 'outcome%'"

# sizes WHEN: every table of schema walq: bytes with indexes and TOAST,
# live and dead tuples.  Outcome storage is every table whose name starts
# with "outcome" (partitions or rotated tables included).
sizes() {
    local when=$1 name bytes live dead
    sleep 0.7
    while IFS='|' read -r name bytes live dead; do
        result "size.$when.$name" 1 "$bytes"
        result "live.$when.$name" 1 "$live"
        result "dead.$when.$name" 1 "$dead"
    done < <(q "SELECT c.relname, pg_total_relation_size(c.oid),
                       coalesce(s.n_live_tup, 0), coalesce(s.n_dead_tup, 0)
                  FROM pg_class c
                  JOIN pg_namespace n ON n.oid = c.relnamespace
                  LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid
                 WHERE n.nspname = 'walq' AND c.relkind = 'r'")
    result "size.$when.outcomes_all" 1 "$(q "$outcome_bytes_sql")"
    result "size.$when.schema" 1 "$(q "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)
          FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = 'walq' AND c.relkind = 'r'")"
}

# rss_sampler PID FILE: VmRSS (KiB) every 0.25 s while PID lives.
rss_sampler() {
    # shellcheck disable=SC2016  # expanded by the sampler's shell
    bg bash -c 'while [ -r "/proc/$1/status" ]; do
                    awk "/^VmRSS:/ { print \$2 }" "/proc/$1/status" 2>/dev/null
                    sleep 0.25
                done' rss-sampler "$1" >"$2"
}

note "publishing $jobs jobs in $txns transactions"
per=$(((jobs + txns - 1) / txns))
t0=$(now)
for i in $(seq 0 $((txns - 1))); do
    q "INSERT INTO walq.jobs (queue, payload)
       SELECT 'bench', jsonb_build_object('to', 'user' || g || '@example.com', 'n', g)
         FROM generate_series($((i * per + 1)), least($(((i + 1) * per)), $jobs)) g" >/dev/null
done
t1=$(now)
result publish.rate 1 "$(fdiv "$jobs" "$(fsub "$t1" "$t0")" %.0f)"
result wal_mb 1 "$(q "SELECT round(pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn) / 1048576.0, 1)
                        FROM pg_replication_slots WHERE slot_name = 'walq_bench'")"
q "VACUUM ANALYZE walq.jobs" >/dev/null
q "CHECKPOINT" >/dev/null
sizes before

# 2. A slow handler: the backlog stays; memory must stay bounded.
h=$(handler slow.sh <<'HANDLER'
cat >/dev/null
sleep 0.2
HANDLER
)
bg /usr/bin/time -f '%U %S %M' -o "$WORK/slow.time" \
    "$WALQ_BIN" consume --group bench --queue bench --concurrency 2 --max-in-flight 10000 \
    --quiet -- "$h" 2>"$WORK/slow.err"
timer=$BG_PID
wait_for "pgrep -P $timer >/dev/null" 10 "the consumer to start"
pid=$(pgrep -P "$timer")
rss_sampler "$pid" "$WORK/slow.rss"
sleep "$secs"
kill -0 "$pid" 2>/dev/null || fail "the consumer with the slow handler exited: $(tail -n 5 "$WORK/slow.err")"
kill -TERM "$pid"
bg_wait "$timer" 120
[ "$BG_RC" -eq 0 ] || note "walq consume (slow handler) exited with status $BG_RC on SIGTERM: $(tail -n 3 "$WORK/slow.err")"
result slow.secs 1 "$secs"
result slow.done 1 "$(walq_done_count bench)"
result slow.rss_max_kib 1 "$(sort -n "$WORK/slow.rss" | tail -n 1)"
result slow.rss_last_kib 1 "$(tail -n 1 "$WORK/slow.rss")"
result slow.peak_kib 1 "$(tail -n 1 "$WORK/slow.time" | awk '{ print $3 }')"
result slow.reconnects 1 "$(grep -c reconnecting "$WORK/slow.err" || true)"

# 3. Drain everything with --noop.
q "CHECKPOINT" >/dev/null
c0=$(server_cpu_ms)
t0=$(now)
bg /usr/bin/time -f '%U %S %M' -o "$WORK/drain.time" \
    "$WALQ_BIN" consume --group bench --queue bench --drain --noop --quiet 2>"$WORK/drain.err"
timer=$BG_PID
if wait_for_child=$(timeout 10 bash -c "until pgrep -P $timer; do sleep 0.05; done"); then
    rss_sampler "$wait_for_child" "$WORK/drain.rss"
fi
# The outcome storage while the backlog drains, every second.
# shellcheck disable=SC2016  # expanded by the sampler's shell
bg bash -c 'while kill -0 "$1" 2>/dev/null; do
                "$2" -X -At -c "$3" 2>/dev/null
                sleep 1
            done' storage-sampler "$timer" "$PGTEST_BINDIR/psql" "$outcome_bytes_sql" \
    >"$WORK/drain.storage"
storage_sampler=$BG_PID
bg_wait "$timer" 900
t1=$(now)
c1=$(server_cpu_ms)
[ "$BG_RC" -eq 0 ] || note "walq consume --drain --noop exited with status $BG_RC: $(tail -n 3 "$WORK/drain.err")"
done_jobs=$(walq_done_count bench)
result drain.rate 1 "$(fdiv "$jobs" "$(fsub "$t1" "$t0")" %.0f)"
result drain.server_cpu 1 "$(fdiv $((c1 - c0)) $((jobs / 1000)) %.2f)"
result drain.done 1 "$done_jobs"
result drain.rss_max_kib 1 "$(sort -n "$WORK/drain.rss" 2>/dev/null | tail -n 1)"
result drain.peak_kib 1 "$(tail -n 1 "$WORK/drain.time" | awk '{ print $3 }')"
[ "$done_jobs" = "$jobs" ] || note "walq recorded $done_jobs of $jobs jobs done"
if walq_slot_recreated walq_bench; then
    note "walq dropped and recreated slot walq_bench: it read the backlog from the table"
    result slot_recreated 1 1
fi
sizes after
bg_wait "$storage_sampler" 10
result storage.peak 1 "$(sort -n "$WORK/drain.storage" | tail -n 1)"
# What is left per job: outcome rows and batch entries (dead jobs would
# stay; this run has none).
result records.after 1 "$(q "SELECT (SELECT count(*) FROM walq.outcomes)
                                  + (SELECT coalesce(sum(cardinality(job_ids)), 0)
                                       FROM walq.outcome_batches)")"
# The space the deleted rows held is reused once vacuumed (autovacuum would).
q "VACUUM walq.outcomes, walq.outcome_batches" >/dev/null
result size.vacuumed.outcomes_all 1 "$(q "$outcome_bytes_sql")"
