# shellcheck shell=bash
# Sourced by the parts of bench/run.sh (bench/lib/{drain,e2e,latency,backlog}.sh).
# Each part runs in a process of its own with a throwaway server of its own
# (tests/lib/pgtest.sh) and appends its figures to $BENCH_RESULTS, one line
# per figure and round:
#
#   SECTION <tab> NAME <tab> ROUND <tab> VALUE
#
# bench/lib/report.py turns them into the table.

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
: "${BENCH_RESULTS:?run the benchmarks with bench/run.sh}"
: "${BENCH_TOOLS:?run the benchmarks with bench/run.sh}"
BENCH_ROUNDS=${BENCH_ROUNDS:-3}
BENCH_QUICK=${BENCH_QUICK:-0}
# 1: the server under test has production durability (fsync, synchronous
# commit and full-page writes on); 0: pgtest.sh's defaults (all off).
BENCH_DURABLE=${BENCH_DURABLE:-1}

# run.sh built walq already.
export WALQ_SKIP_BUILD=1
# shellcheck source=SCRIPTDIR/../../tests/lib/standalone.sh
. "$BENCH_DIR/../tests/lib/standalone.sh"
require_walq

# shellcheck disable=SC2034  # used by the parts
PGBENCH=$PGTEST_BINDIR/pgbench
# shellcheck disable=SC2034
LATENCY_BIN=$BENCH_TOOLS/walq-bench-latency
# shellcheck disable=SC2034
WATCH_BIN=$BENCH_TOOLS/walq-bench-watch

now() { date +%s.%N; }
note() { echo "bench: $*" >&2; }

# result NAME ROUND VALUE: one figure of this part's section.
result() {
    printf '%s\t%s\t%s\t%s\n' "$BENCH_SECTION" "$1" "$2" "$3" >>"$BENCH_RESULTS"
}

# fdiv A B [FORMAT]: A / B, or "-" when B is 0 or either is not a number.
fdiv() {
    awk -v a="$1" -v b="$2" -v f="${3:-%.3f}" 'BEGIN {
        if (a !~ /^-?[0-9.]+$/ || b !~ /^-?[0-9.]+$/ || b + 0 == 0) { print "-"; exit }
        printf f "\n", a / b }'
}

# fsub A B: A - B with 6 decimals.
fsub() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.6f\n", a - b }'; }

# bench_pg_start [conf lines...]: the server under test.  Checkpoints are
# kept out of the measured windows (each run starts right after one).
bench_conf() {
    if [ "$BENCH_DURABLE" = 1 ]; then
        printf '%s\n' "fsync = on" "synchronous_commit = on" "full_page_writes = on"
    fi
    printf '%s\n' "shared_buffers = 256MB" "max_wal_size = 8GB" "min_wal_size = 1GB" \
        "checkpoint_timeout = 30min" "max_connections = 100" "log_replication_commands = on" \
        "log_autovacuum_min_duration = 0"
}

# shellcheck disable=SC2120  # the settings are optional
bench_pg_start() {
    local conf
    mapfile -t conf < <(bench_conf)
    pg_start "${conf[@]}" "$@"
}

# bench_pg_start_extra NAME [conf lines...]: a second server, set up alike.
bench_pg_start_extra() {
    local name=$1 conf
    shift
    mapfile -t conf < <(bench_conf)
    pg_start_extra "$name" "${conf[@]}" "$@"
}

postmaster_pid() { head -n 1 "${1:-$PGTEST_DATA}/postmaster.pid"; }

# server_cpu_ms [DATADIR]: CPU time the server's processes have used so far,
# in ms (default: the first server).
# shellcheck disable=SC2120  # the directory is optional
server_cpu_ms() { python3 "$BENCH_DIR/lib/cpu.py" "$(postmaster_pid "${1:-}")"; }

# Backends that just exited are reaped by the postmaster within moments;
# read the CPU after that.
settle() { sleep 0.3; }

# timed OUT CMD...: runs CMD under GNU time; OUT gets "user_s sys_s maxrss_kib".
timed() {
    local out=$1
    shift
    /usr/bin/time -f '%U %S %M' -o "$out" "$@"
}

# proc_cpu_ms PID: the CPU time a running process has used, in ms.
proc_cpu_ms() {
    awk -v hz="$(getconf CLK_TCK)" '{ sub(/.*\) /, ""); printf "%.0f\n", ($12 + $13) * 1000 / hz }' \
        "/proc/$1/stat"
}

# client_cpu_ms FILE: user + sys of a `timed` file, in ms.
client_cpu_ms() { tail -n 1 "$1" | awk '{ printf "%.0f\n", ($1 + $2) * 1000 }'; }

# table_stat REL: "inserted updated deleted dead live" from pg_stat_user_tables,
# summed over REL and its partitions (a partitioned table's own counters stay 0).
table_stat() {
    q "SELECT coalesce(sum(n_tup_ins), 0), coalesce(sum(n_tup_upd), 0), coalesce(sum(n_tup_del), 0),
              coalesce(sum(n_dead_tup), 0), coalesce(sum(n_live_tup), 0)
         FROM pg_stat_user_tables
        WHERE relid = '$1'::regclass
           OR relid IN (SELECT relid FROM pg_partition_tree('$1'::regclass))" | tr '|' ' '
}

# pgbench_run ARGS...: pgbench quietly, its output in $WORK/pgbench.log.
pgbench_run() {
    "$PGBENCH" -n -M prepared "$@" >>"$WORK/pgbench.log" 2>&1 ||
        fail "pgbench $* failed: $(tail -n 5 "$WORK/pgbench.log")"
}

# produce FILE N [pgbench -D ...]: N jobs in transactions of 1000 rows from
# one client, with the producer script FILE (bench/producer_*.sql).
produce() {
    local file=$1 n=$2
    shift 2
    pgbench_run -c 1 -t $((n / 1000)) -f "$BENCH_DIR/$file" "$@"
}

# slot_advance SLOT: moves a logical slot to the server's current WAL
# position, so that the next reader decodes only what comes after.
slot_advance() {
    q "SELECT pg_replication_slot_advance('$1', pg_current_wal_lsn())" >/dev/null
}

# truncate_outcomes: empties walq's outcome storage between rounds, so that
# each round starts alike.  Best effort: the storage is walq's to shape.
truncate_outcomes() {
    local err
    if ! err=$(q "TRUNCATE walq.outcomes, walq.outcome_batches" 2>&1); then
        note "could not empty walq's outcome storage between rounds ($err); rounds will differ"
    fi
}

# walq_done_count GROUP: jobs the group recorded done.
walq_done_count() {
    q "SELECT count(*) FROM walq.job_status WHERE consumer_group = '$1' AND status = 'done'" \
        2>/dev/null ||
        echo "-"
}

# walq_slot_recreated SLOT: succeeds when the server log shows walq dropped
# the slot (it then read the backlog from the table, not from the stream).
walq_slot_recreated() {
    grep -q "command: DROP_REPLICATION_SLOT \"$1\"" "$PGTEST_DIR/server.log"
}
