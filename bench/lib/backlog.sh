#!/usr/bin/env bash
# Part "backlog" of bench/run.sh: the consumer's memory with a backlog of
# BENCH_BACKLOG_JOBS (1M) jobs in its slot, and walq's storage over a run
# that consumes them all and lasts longer than the retention.  One round
# (it is long).
#
#   1. The retention is set to BENCH_RETENTION (60 seconds), so that the
#      generations rotate every 20 s and retire within the run.  The group's
#      slot exists; the backlog is published in 4 transactions
#      (bench/backlog_memory.sh's method: large transactions are the hard
#      case for pausing the stream).  The storage is taken: "before".
#   2. A slow exec handler (sleep 0.2 s, --concurrency 2, --max-in-flight
#      10000) runs for BENCH_BACKLOG_SECS: the consumer must stop reading
#      and hold at most --max-in-flight jobs.  Its RSS is sampled every
#      0.25 s; GNU time gives its peak.  Then SIGTERM.
#   3. `walq consume --drain --noop` consumes the whole backlog, RSS sampled
#      the same way.
#   4. A plain `walq consume --noop` keeps running, as a deployment's
#      consumer would: its walq.maintain() calls rotate the generations and,
#      once the backlog's generations have been sealed for the retention,
#      drop them.  It stops when they are retired (or at a deadline of twice
#      the retention and a minute after the drain); then the storage is
#      taken again: "after".
#
# The storage (walq.jobs, and the outcome storage: walq.outcomes and
# walq.outcome_batches; every leaf partition, in the schemas walq_jobs,
# walq_outcomes and walq_batches, with its indexes and TOAST) and the dead
# tuples (pg_stat n_dead_tup, TOAST included) of the job and outcome tables
# and of the bookkeeping tables (every table of schema walq) are sampled
# every second from step 2 to the end: the peaks, and the time series in
# the results directory (storage-STAMP.tsv beside results-STAMP.tsv).
#
# Durability: fsync, synchronous_commit and full_page_writes on.
# shellcheck disable=SC2119  # bench_pg_start and server_cpu_ms take optional arguments
set -euo pipefail

BENCH_SECTION=backlog
jobs=${BENCH_BACKLOG_JOBS:-1000000}
txns=4
secs=${BENCH_BACKLOG_SECS:-15}
retention=${BENCH_RETENTION:-60 seconds}
export TEST_NAME=bench-backlog
# shellcheck source=SCRIPTDIR/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

# The time series goes beside the results file: storage-STAMP.tsv.
series=$(dirname "$BENCH_RESULTS")/$(basename "$BENCH_RESULTS" | sed 's/^results-/storage-/')
[ "$series" != "$BENCH_RESULTS" ] || series=${BENCH_RESULTS%.tsv}.storage.tsv

bench_pg_start "wal_sender_timeout = 60s"
walq init >/dev/null
q "SELECT walq.set_retention('$retention')" >/dev/null ||
    fail "walq.set_retention('$retention') failed (BENCH_RETENTION)"
ret_s=$(q "SELECT extract(epoch FROM retention)::numeric(12, 1) FROM walq.settings")
result retention_secs 1 "$ret_s"
walq consume --group bench --queue bench --drain --noop --quiet

# point WHEN: the storage at one point, with exact row counts, and the
# bookkeeping tables one by one.  Statistics reach pg_stat within a second
# of a session's transaction (a busy consumer's within ten).
point() {
    local when=$1 row name value i=0
    sleep 1.2
    row=$(pg_psql -F ' ' -c "$storage_sql")
    read -r -a v <<<"$row"
    for name in ${columns#phase }; do
        case $name in
        jobs_rows | outcomes_rows | batches_rows) ;; # counted below
        *) result "storage.$when.$name" 1 "${v[$i]}" ;;
        esac
        i=$((i + 1))
    done
    row=$(q "SELECT (SELECT count(*) FROM walq.jobs), (SELECT count(*) FROM walq.outcomes),
                    (SELECT count(*) FROM walq.outcome_batches),
                    (SELECT coalesce(sum(cardinality(job_ids)), 0) FROM walq.outcome_batches)")
    IFS='|' read -r a b c d <<<"$row"
    result "storage.$when.jobs_rows" 1 "$a"
    result "storage.$when.outcomes_rows" 1 "$b"
    result "storage.$when.batches_rows" 1 "$c"
    result "storage.$when.batch_ids" 1 "$d"
    while IFS='|' read -r name value; do
        result "book.$when.$name" 1 "$value"
    done < <(q "SELECT c.relname, coalesce(s.n_dead_tup, 0) + coalesce(ts.n_dead_tup, 0)
                  FROM pg_class c
                  JOIN pg_namespace n ON n.oid = c.relnamespace
                  LEFT JOIN pg_stat_all_tables s ON s.relid = c.oid
                  LEFT JOIN pg_stat_all_tables ts ON ts.relid = c.reltoastrelid
                 WHERE n.nspname = 'walq' AND c.relkind = 'r'
                 ORDER BY 1")
}

# rss_sampler PID FILE: VmRSS (KiB) every 0.25 s while PID lives.
rss_sampler() {
    # shellcheck disable=SC2016  # expanded by the sampler's shell
    bg bash -c 'while [ -r "/proc/$1/status" ]; do
                    awk "/^VmRSS:/ { print \$2 }" "/proc/$1/status" 2>/dev/null
                    sleep 0.25
                done' rss-sampler "$1" >"$2"
}

# phase NAME: what the samples from now on are taken during.
phase() { echo "$1" >"$WORK/storage.phase"; }

note "publishing $jobs jobs in $txns transactions (retention $retention)"
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
# The generations that hold the backlog.
backlog_gens=$(q "SELECT string_agg(DISTINCT generation::text, ',') FROM walq.jobs")
result backlog_generations 1 "$backlog_gens"
backlog_parts="'g${backlog_gens//,/\',\'g}'"

# The storage in one row, cheap enough to run every second: the clock, the
# current generation, generations made (rows of walq.generations) and
# retired; then for walq.jobs: its leaf partitions, rows, bytes, dead
# tuples; for the outcome storage: rows of walq.outcomes, rows of
# walq.outcome_batches, bytes, dead tuples, and the bytes of the backlog's
# generations alone (their records; the others are empty); the dead tuples
# of the bookkeeping tables (schema walq).  Partitioned parents (relkind 'p') hold
# nothing: only leaf partitions ('r') count.  Rows are pg_stat's n_live_tup
# here (exact for tables that only get inserts, a moment late); the points
# before and after count them.  A partition dropped meanwhile counts 0.
storage_sql="
WITH t AS (
    SELECT n.nspname, c.relname, coalesce(pg_total_relation_size(c.oid), 0) AS bytes,
           coalesce(s.n_live_tup, 0) AS live,
           coalesce(s.n_dead_tup, 0) + coalesce(ts.n_dead_tup, 0) AS dead
      FROM pg_class c
      JOIN pg_namespace n ON n.oid = c.relnamespace
      LEFT JOIN pg_stat_all_tables s ON s.relid = c.oid
      LEFT JOIN pg_stat_all_tables ts ON ts.relid = c.reltoastrelid
     WHERE n.nspname IN ('walq', 'walq_jobs', 'walq_outcomes', 'walq_batches')
       AND c.relkind = 'r')
SELECT round(extract(epoch FROM clock_timestamp()), 3),
       pg_sequence_last_value('walq.generation_seq'),
       (SELECT count(*) FROM walq.generations),
       (SELECT count(*) FROM walq.generations WHERE retired_at IS NOT NULL),
       count(*) FILTER (WHERE nspname = 'walq_jobs'),
       coalesce(sum(live) FILTER (WHERE nspname = 'walq_jobs'), 0),
       coalesce(sum(bytes) FILTER (WHERE nspname = 'walq_jobs'), 0),
       coalesce(sum(dead) FILTER (WHERE nspname = 'walq_jobs'), 0),
       coalesce(sum(live) FILTER (WHERE nspname = 'walq_outcomes'), 0),
       coalesce(sum(live) FILTER (WHERE nspname = 'walq_batches'), 0),
       coalesce(sum(bytes) FILTER (WHERE nspname IN ('walq_outcomes', 'walq_batches')), 0),
       coalesce(sum(dead) FILTER (WHERE nspname IN ('walq_outcomes', 'walq_batches')), 0),
       coalesce(sum(bytes) FILTER (WHERE nspname IN ('walq_outcomes', 'walq_batches')
                                     AND relname IN ($backlog_parts)), 0),
       coalesce(sum(dead) FILTER (WHERE nspname = 'walq'), 0)
  FROM t"
# The columns of a sample (the sampler puts the phase first).
columns="phase epoch generation gens_made gens_retired jobs_parts jobs_rows jobs_bytes jobs_dead"
columns+=" outcomes_rows batches_rows outcome_bytes outcome_dead backlog_outcome_bytes book_dead"

q "VACUUM ANALYZE walq.jobs" >/dev/null
q "CHECKPOINT" >/dev/null
point before

# The storage every second from here to the end.
phase slow
# shellcheck disable=SC2016  # expanded by the sampler's shell
bg bash -c 'while [ ! -e "$1.stop" ]; do
                row=$("$2" -X -At -F "	" -c "$3" 2>/dev/null) &&
                    printf "%s\t%s\n" "$(cat "$1.phase" 2>/dev/null)" "$row"
                sleep 1
            done' storage-sampler "$WORK/storage" "$PGTEST_BINDIR/psql" "$storage_sql" \
    >"$WORK/storage.samples"
storage_sampler=$BG_PID

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
result slow.done 1 "$(done_count bench)"
result slow.rss_max_kib 1 "$(sort -n "$WORK/slow.rss" | tail -n 1)"
result slow.rss_last_kib 1 "$(tail -n 1 "$WORK/slow.rss")"
result slow.peak_kib 1 "$(tail -n 1 "$WORK/slow.time" | awk '{ print $3 }')"
result slow.reconnects 1 "$(grep -c reconnecting "$WORK/slow.err" || true)"

# 3. Drain everything with --noop.
q "CHECKPOINT" >/dev/null
phase drain
c0=$(server_cpu_ms)
t0=$(now)
bg /usr/bin/time -f '%U %S %M' -o "$WORK/drain.time" \
    "$WALQ_BIN" consume --group bench --queue bench --drain --noop --quiet 2>"$WORK/drain.err"
timer=$BG_PID
if wait_for_child=$(timeout 10 bash -c "until pgrep -P $timer; do sleep 0.05; done"); then
    rss_sampler "$wait_for_child" "$WORK/drain.rss"
fi
bg_wait "$timer" 900
t1=$(now)
c1=$(server_cpu_ms)
[ "$BG_RC" -eq 0 ] || note "walq consume --drain --noop exited with status $BG_RC: $(tail -n 3 "$WORK/drain.err")"
# Counted from the records themselves (tests/lib/pgtest.sh's done_count):
# walq.job_status takes about a minute over a million jobs, and the
# consumer that retires the generations has to start now.
done_jobs=$(done_count bench)
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

# The jobs' records once drained: rows of walq.outcomes and ids in
# walq.outcome_batches (one per job; more would be a job recorded twice).
result records.drained 1 "$(q "SELECT (SELECT count(*) FROM walq.outcomes)
                                   + (SELECT coalesce(sum(cardinality(job_ids)), 0)
                                        FROM walq.outcome_batches)")"

# When the last job of the backlog was done (its ack's time), and in which
# generation: read now, before the records go.
last_gen="" last_done=""
read -r last_gen last_done < <(q "SELECT generation, extract(epoch FROM t) FROM (
        SELECT generation, created_at AS t FROM walq.outcome_batches WHERE group_name = 'bench'
        UNION ALL
        SELECT generation, updated_at FROM walq.outcomes
         WHERE group_name = 'bench' AND status IN ('done', 'dead', 'cancelled')) x
     ORDER BY t DESC LIMIT 1" | tr '|' ' ') || true

# 4. A consumer keeps running, and its walq.maintain() calls retire the
# generations once the retention has run out.
phase retention
t2=$(now)
bg "$WALQ_BIN" consume --group bench --queue bench --noop --quiet 2>"$WORK/keep.err"
keeper=$BG_PID
result retention.keeper_start 1 "$(fsub "$t2" "$t1")"
deadline=$(awk -v r="$ret_s" 'BEGIN { printf "%d", 2 * r + 60 }')
note "waiting up to $deadline s for the backlog's generations ($backlog_gens) to be retired"
retired_all="SELECT coalesce(bool_and(retired_at IS NOT NULL), false) FROM walq.generations
              WHERE generation IN ($backlog_gens)"
end=$((SECONDS + deadline))
while [ "$(q "$retired_all")" != t ] && [ "$SECONDS" -lt "$end" ]; do
    if _pgtest_exited "$keeper"; then
        note "the consumer kept running for the retention exited: $(tail -n 3 "$WORK/keep.err")"
        break
    fi
    sleep 1
done
t3=$(now)
retired=$(q "$retired_all")
# A few samples more, of the storage once they went.
sleep 3
result retention.wait_secs 1 "$(fsub "$t3" "$t2")"
result retention.retired 1 "$([ "$retired" = t ] && echo 1 || echo 0)"
[ "$retired" = t ] || note "the backlog's generations were not all retired within $deadline s"
kill -TERM "$keeper" 2>/dev/null || true
bg_wait "$keeper" 60
[ "$BG_RC" -eq 0 ] || note "walq consume --noop (kept for the retention) exited with status $BG_RC: $(tail -n 3 "$WORK/keep.err")"
touch "$WORK/storage.stop"
bg_wait "$storage_sampler" 30
point after

# The generations: made (walq.generations rows, the one made ahead
# included), retired; and the timeline of the one that held the last job.
result generations.made 1 "$(q "SELECT count(*) FROM walq.generations")"
result generations.opened 1 "$(q "SELECT count(*) FROM walq.generations WHERE opened_at IS NOT NULL")"
result generations.retired 1 "$(q "SELECT count(*) FROM walq.generations WHERE retired_at IS NOT NULL")"
# finished_at (sql/008: when walq.maintain() first saw every job of the
# generation finished; the retention counts from there) is read through
# to_jsonb, so that a schema without it gives "-".
gen_times="SELECT generation, opened_at, closed_at, sealed_at,
                  (to_jsonb(x) ->> 'finished_at')::timestamptz, retired_at
             FROM walq.generations x ORDER BY generation"
if [ -n "${last_gen:-}" ]; then
    result last_done.generation 1 "$last_gen"
    IFS='|' read -r sealed_after finished_after retired_after < <(q "
        SELECT extract(epoch FROM sealed_at) - $last_done,
               extract(epoch FROM (to_jsonb(x) ->> 'finished_at')::timestamptz) - $last_done,
               extract(epoch FROM retired_at) - $last_done
          FROM walq.generations x WHERE generation = $last_gen") || true
    # Negative: sealed before its last job was done (the usual case).
    result last_done.sealed_after 1 "${sealed_after:--}"
    result last_done.finished_after 1 "${finished_after:--}"
    result last_done.retired_after 1 "${retired_after:--}"
fi
q "$gen_times" >"$WORK/generations"

# The time series, with seconds from the first sample, and its peaks.
{
    echo "t_s $columns" | tr ' ' '\t'
    awk -F '\t' 'NR == 1 { t0 = $2 } { printf "%.1f\t%s\n", $2 - t0, $0 }' "$WORK/storage.samples"
} >"$series"
{
    echo
    echo "# walq.generations at the end: generation|opened_at|closed_at|sealed_at|finished_at|retired_at"
    sed 's/^/# /' "$WORK/generations"
} >>"$series"
result storage.series 1 "$series"
result storage.samples 1 "$(wc -l <"$WORK/storage.samples")"
i=2
for name in ${columns#phase }; do
    i=$((i + 1))
    case $name in epoch | generation | gens_made | gens_retired) continue ;; esac
    result "storage.peak.$name" 1 "$(awk -F '\t' -v c="$i" 'NR > 1 && NF > 3 && $c + 0 > m { m = $c + 0 } END { print m + 0 }' "$series")"
done
note "storage time series in $series"
