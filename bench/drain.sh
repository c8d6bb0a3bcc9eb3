#!/usr/bin/env bash
# Drain benchmark: how fast does `walq consume --drain --noop` read a backlog
# compared with pg_recvlogical reading the same WAL range with the same
# wal2json options to /dev/null?  See bench/README.md.
#
#   bash bench/drain.sh              BENCH_JOBS=200000 BENCH_TX_ROWS=1000
set -euo pipefail

jobs=${BENCH_JOBS:-200000}
tx_rows=${BENCH_TX_ROWS:-1000}

export TEST_NAME=bench-drain
# shellcheck source=SCRIPTDIR/../tests/lib/standalone.sh
. "$(dirname "${BASH_SOURCE[0]}")/../tests/lib/standalone.sh"
require_walq

now() { date +%s.%N; }

pg_start "shared_buffers = 256MB" "max_wal_size = 4GB" "checkpoint_timeout = 30min" \
    "log_replication_commands = on"
walq init

# The two readers' slots exist before the fill, so both read exactly the
# WAL the fill writes.  walq creates its slot on its first start; this run
# has no backlog and returns at once.
"$PGTEST_BINDIR/pg_recvlogical" -d "$PGDATABASE" --slot bench_pg_recvlogical --create-slot --plugin wal2json
walq consume --group bench --queue bench --drain --noop

echo "filling: $jobs jobs in transactions of $tx_rows" >&2
t0=$(now)
q "DO \$\$
BEGIN
    FOR b IN 0 .. ($jobs - 1) / $tx_rows LOOP
        INSERT INTO walq.jobs (queue, payload)
        SELECT 'bench', jsonb_build_object('to', 'user' || g || '@example.com', 'n', g)
          FROM generate_series(b * $tx_rows + 1, least((b + 1) * $tx_rows, $jobs)) g;
        COMMIT;
    END LOOP;
END
\$\$" >/dev/null
t1=$(now)
end_lsn=$(q "SELECT pg_current_wal_insert_lsn()")
wal_bytes=$(q "SELECT pg_wal_lsn_diff('$end_lsn', confirmed_flush_lsn)::bigint
                 FROM pg_replication_slots WHERE slot_name = 'bench_pg_recvlogical'")
q "CHECKPOINT" >/dev/null
awk -v n="$jobs" -v a="$t0" -v b="$t1" -v w="$wal_bytes" \
    'BEGIN { printf "fill: %d rows in %.2f s; %.1f MB of WAL to read\n", n, b - a, w / 1048576 }' >&2

# (a) pg_recvlogical, the same wal2json options walq asks for.
t0=$(now)
"$PGTEST_BINDIR/pg_recvlogical" -d "$PGDATABASE" --slot bench_pg_recvlogical --start --no-loop \
    --endpos "$end_lsn" -f /dev/null \
    -o format-version=2 -o include-xids=1 -o include-timestamp=1 -o include-lsn=1 \
    -o include-types=0 -o add-tables=walq.jobs,walq_jobs.*,walq.commands -o actions=insert
t1=$(now)
pg_secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')

# (b) walq with the built-in handler that acks without running anything.
t0=$(now)
walq consume --group bench --queue bench --drain --noop
t1=$(now)
walq_secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')

# Outcome rows and the ids of batch rows (tests/lib/pgtest.sh).
done_rows=$(done_count bench)
[ "$done_rows" -eq "$jobs" ] || fail "walq recorded $done_rows of $jobs jobs done"
# The comparison holds only if walq read the jobs from its slot.
if grep -q 'command: DROP_REPLICATION_SLOT "walq_bench"' "$PGTEST_DIR/server.log"; then
    echo "WARNING: walq dropped and recreated slot walq_bench and read the backlog from" \
        "walq.jobs, not from the slot: its figure below is the table backfill, not the stream" >&2
fi

awk -v n="$jobs" -v p="$pg_secs" -v w="$walq_secs" 'BEGIN {
    printf "rows:                      %d\n", n
    printf "pg_recvlogical (wal2json): %8.2f s  %10.0f rows/s\n", p, n / p
    printf "walq consume --noop:       %8.2f s  %10.0f rows/s\n", w, n / w
    printf "ratio walq/pg_recvlogical: %.2f\n", (n / w) / (n / p)
}'
