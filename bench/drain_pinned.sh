#!/usr/bin/env bash
# Where the pgoutput drain's time goes on a small machine: walq against
# pg_recvlogical over the same backlog, with the server's walsenders alone
# on CPU 0 and everything else (the reader, walq's ack backend, the other
# server processes) on CPU 1.  The walsender decodes for both readers alike;
# walq also records every outcome on the server, which pg_recvlogical (to
# /dev/null) does not.  Pinned, that work no longer takes the walsender's
# CPU, and the ratio shows whether walq keeps pace with decoding.  Needs
# two CPUs or more.  See bench/README.md.
#
#   bash bench/drain_pinned.sh    BENCH_JOBS=200000 BENCH_PAIRS=7
set -euo pipefail

jobs=${BENCH_JOBS:-200000}
pairs=${BENCH_PAIRS:-7}
[ "$(nproc)" -ge 2 ] || {
    echo "drain_pinned: needs two CPUs, this machine has $(nproc)" >&2
    exit 1
}

export TEST_NAME=bench-drain-pinned
# shellcheck source=SCRIPTDIR/../tests/lib/standalone.sh
. "$(dirname "${BASH_SOURCE[0]}")/../tests/lib/standalone.sh"
require_walq

# Production durability, as bench/run.sh's drain part has it.
pg_start "max_replication_slots = 64" "max_wal_senders = 64" "fsync = on" \
    "synchronous_commit = on" "full_page_writes = on"
walq init >/dev/null

# One walq group and one pg_recvlogical slot (on the group's publication)
# per pair, all made before the backlog, so every reader reads its WAL.
for i in $(seq 1 "$pairs"); do
    walq consume --group w"$i" --queue bench --drain --noop --quiet
    walq consume --group r"$i" --queue bench --drain --noop --quiet
done
echo "filling: $jobs jobs in transactions of 1000" >&2
for _ in $(seq 1 $((jobs / 1000))); do
    echo "INSERT INTO walq.jobs (queue, payload) SELECT 'bench', '{\"n\": 1}' FROM generate_series(1, 1000);"
done | pg_psql -q >/dev/null
q "CHECKPOINT" >/dev/null
end=$(q "SELECT pg_current_wal_lsn()")

pm=$(head -n 1 "$PGTEST_DATA/postmaster.pid")
# Every server process on CPU 1; a walsender is moved to CPU 0 as it starts.
for p in "$pm" $(pgrep -P "$pm"); do taskset -p 2 "$p" >/dev/null; done
pin_walsenders() {
    while [ ! -e "$WORK/unpin" ]; do
        for p in $(pgrep -P "$pm"); do
            if grep -q walsender "/proc/$p/cmdline" 2>/dev/null; then
                taskset -p 1 "$p" >/dev/null 2>&1 || true
            fi
        done
        sleep 0.002
    done
}
ms_since() { echo $((($(date +%s%N) - $1) / 1000000)); }

ratios=()
for i in $(seq 1 "$pairs"); do
    rm -f "$WORK/unpin"
    pin_walsenders &
    pinner=$!
    t0=$(date +%s%N)
    taskset 2 "$WALQ_BIN" consume --group w"$i" --queue bench --drain --noop --quiet
    walq_ms=$(ms_since "$t0")
    t0=$(date +%s%N)
    taskset 2 "$PGTEST_BINDIR/pg_recvlogical" -d "$PGDATABASE" --slot walq_r"$i" --start \
        --no-loop --endpos "$end" -f /dev/null -o proto_version=1 -o publication_names=walq_r"$i"
    recv_ms=$(ms_since "$t0")
    touch "$WORK/unpin"
    wait "$pinner"
    ratio=$(awk -v r="$recv_ms" -v w="$walq_ms" 'BEGIN { printf "%.2f", r / w }')
    ratios+=("$ratio")
    printf 'pair %d: walq %d ms (%.0f jobs/s), pg_recvlogical %d ms (%.0f jobs/s): walq / pg_recvlogical %s\n' \
        "$i" "$walq_ms" "$(awk -v n="$jobs" -v t="$walq_ms" 'BEGIN { print n * 1000 / t }')" \
        "$recv_ms" "$(awk -v n="$jobs" -v t="$recv_ms" 'BEGIN { print n * 1000 / t }')" "$ratio"
done
printf '%s\n' "${ratios[@]}" | sort -n |
    awk '{ v[NR] = $1 } END { printf "walsenders pinned apart, 1000-row tx, pgoutput: walq / pg_recvlogical %s [%s .. %s] over %d pairs\n", v[int((NR + 1) / 2)], v[1], v[NR], NR }'
