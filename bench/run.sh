#!/usr/bin/env bash
# walq's benchmarks against its baselines, in one command: installs what is
# missing (bench/setup.sh), builds walq and the bench programs, runs each
# part on a throwaway PostgreSQL 15 of its own and prints one table, every
# figure the median of the rounds with min and max, and the ratios between
# figures of this run.  See docs/benchmarks.md.
#
#   bash bench/run.sh [--quick] [--only PARTS] [--rounds N]
#
# Parts: drain (backlog drain on wal2json and pgoutput, in transactions of
# 1000 rows and of one, server CPU, dead tuples), subscriber (server
# CPU on the primary in the subscriber topology, 1 and 3 groups), e2e
# (producer and consumer at once), latency (commit to handler start at 500
# jobs/s), backlog (consumer memory, and walq's storage over a 1M-job run
# that outlasts a short retention).
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: bash bench/run.sh [--quick] [--only PART[,PART...]] [--rounds N]

Runs walq's benchmarks and prints one table with the ratios against the
baselines (pg_recvlogical, the SKIP LOCKED worker, LISTEN/NOTIFY, polling,
PgQ).  Each part starts its own throwaway PostgreSQL 15.

Options:
  --quick         one round of smaller runs (3-4 minutes instead of ~15)
  --only PARTS    run only these parts: drain, subscriber, e2e, latency,
                  backlog (comma-separated)
  --rounds N      rounds per figure (default 3; --quick: 1)
  --help          this text

Environment: BENCH_JOBS (drain and e2e backlog, 200000), BENCH_TX1_JOBS
(drain backlog in single-row transactions, 50000), BENCH_SUB_JOBS
(subscriber topology, 100000), BENCH_LAT_SECS (seconds per latency run,
5), BENCH_BACKLOG_JOBS (1000000), BENCH_RETENTION (walq's retention in the
backlog part, which runs until the backlog's generations are retired: an
interval, '60 seconds'; --quick: '30 seconds'), BENCH_OUTPUT
(directory for the results, default build/bench), BENCH_DURABLE=0 (run
the servers with fsync and synchronous_commit off), WALQ_SKIP_BUILD=1.
EOF
}

quick=0
only=drain,subscriber,e2e,latency,backlog
rounds=""
while [ $# -gt 0 ]; do
    case $1 in
    --quick) quick=1 ;;
    --only)
        [ $# -ge 2 ] || { usage >&2; exit 2; }
        only=$2
        shift
        ;;
    --only=*) only=${1#--only=} ;;
    --rounds)
        [ $# -ge 2 ] || { usage >&2; exit 2; }
        rounds=$2
        shift
        ;;
    --help | -h) usage; exit 0 ;;
    *) echo "bench/run.sh: unknown option \"$1\"" >&2; usage >&2; exit 2 ;;
    esac
    shift
done
for part in ${only//,/ }; do
    case $part in
    drain | subscriber | e2e | latency | backlog) ;;
    *)
        echo "bench/run.sh: unknown part \"$part\" (drain, subscriber, e2e, latency, backlog)" >&2
        exit 2
        ;;
    esac
done

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${WALQ_BUILD_DIR:-$root/build}

bash "$root/bench/setup.sh"
if [ "${WALQ_SKIP_BUILD:-0}" != 1 ]; then
    cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
    cmake --build "$build" -j2 >/dev/null
fi
[ -f "$build/libwalq.a" ] || { echo "bench/run.sh: $build/libwalq.a is missing" >&2; exit 1; }

# The bench programs are built here against the build tree, not by CMake:
# they are not part of walq.
export BENCH_TOOLS
BENCH_TOOLS=$(mktemp -d "${TMPDIR:-/tmp}/walq-bench-tools.XXXXXX")
trap 'rm -rf "$BENCH_TOOLS"' EXIT
cflags=(-O2 -g -Wall -Wextra -std=c11)
# shellcheck disable=SC2046  # pkg-config's words are meant to split
cc "${cflags[@]}" -I"$root/include" "$root/bench/latency.c" "$build/libwalq.a" \
    $(pkg-config --cflags --libs libpq json-c yajl) -lm -o "$BENCH_TOOLS/walq-bench-latency"
# shellcheck disable=SC2046
cc "${cflags[@]}" "$root/bench/watch.c" $(pkg-config --cflags --libs libpq) \
    -o "$BENCH_TOOLS/walq-bench-watch"

out=${BENCH_OUTPUT:-$build/bench}
mkdir -p "$out"
stamp=$(date +%Y%m%d-%H%M%S)
export BENCH_RESULTS=$out/results-$stamp.tsv
: >"$BENCH_RESULTS"
export BENCH_QUICK=$quick
if [ "$quick" = 1 ]; then
    export BENCH_ROUNDS=${rounds:-1}
    export BENCH_JOBS=${BENCH_JOBS:-40000}
    export BENCH_TX1_JOBS=${BENCH_TX1_JOBS:-8000}
    export BENCH_SKIP_CLIENTS=${BENCH_SKIP_CLIENTS:-2 8}
    export BENCH_SUB_JOBS=${BENCH_SUB_JOBS:-20000}
    export BENCH_LAT_SECS=${BENCH_LAT_SECS:-2}
    export BENCH_BACKLOG_JOBS=${BENCH_BACKLOG_JOBS:-200000}
    export BENCH_BACKLOG_SECS=${BENCH_BACKLOG_SECS:-5}
    export BENCH_RETENTION=${BENCH_RETENTION:-30 seconds}
else
    export BENCH_ROUNDS=${rounds:-3}
fi

# The machine, for the report.
{
    printf 'date\t%s\n' "$(date -u '+%Y-%m-%d %H:%M UTC')"
    printf 'cpus\t%s\n' "$(nproc)"
    printf 'cpu_model\t%s\n' "$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)"
    printf 'memory\t%s\n' "$(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
    printf 'postgres\t%s\n' "$(/usr/lib/postgresql/15/bin/postgres --version)"
    printf 'wal2json\t%s\n' "$(dpkg-query -W -f='${Version}' postgresql-15-wal2json 2>/dev/null || echo '?')"
    printf 'pgq\t%s\n' "$(dpkg-query -W -f='${Version}' postgresql-15-pgq3 2>/dev/null || echo '?')"
    printf 'kernel\t%s\n' "$(uname -r)"
    printf 'loadavg\t%s\n' "$(cut -d' ' -f1-3 /proc/loadavg)"
    printf 'walq\t%s\n' "$(git -C "$root" describe --always --dirty 2>/dev/null || echo '?')"
    printf 'rounds\t%s\n' "$BENCH_ROUNDS"
    printf 'quick\t%s\n' "$quick"
    printf 'durable\t%s\n' "${BENCH_DURABLE:-1}"
} >"$out/machine-$stamp.tsv"

start=$SECONDS
failed=()
for part in drain subscriber e2e latency backlog; do
    case ",$only," in *",$part,"*) ;; *) continue ;; esac
    if [ "$part" = e2e ]; then
        # The e2e part runs each SKIP LOCKED worker in the configuration
        # that drained fastest in this run (or the ones given).
        if [ -z "${BENCH_SKIP_BEST:-}" ]; then
            BENCH_SKIP_BEST=$(python3 "$root/bench/lib/report.py" --best-skip "$BENCH_RESULTS")
        fi
        export BENCH_SKIP_BEST
    fi
    echo "bench: part $part (started at $((SECONDS - start)) s)" >&2
    if ! bash "$root/bench/lib/$part.sh"; then
        echo "bench: part $part failed; its figures are incomplete" >&2
        failed+=("$part")
    fi
done
echo "bench: all parts done in $((SECONDS - start)) s" >&2
printf 'elapsed\t%s s\n' "$((SECONDS - start))" >>"$out/machine-$stamp.tsv"

python3 "$root/bench/lib/report.py" --machine "$out/machine-$stamp.tsv" "$BENCH_RESULTS" |
    tee "$out/table-$stamp.txt"
echo "bench: results in $BENCH_RESULTS, table in $out/table-$stamp.txt" >&2
if [ ${#failed[@]} -gt 0 ]; then
    echo "bench: parts that failed: ${failed[*]}" >&2
    exit 1
fi
