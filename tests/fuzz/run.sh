#!/usr/bin/env bash
# Runs one fuzz target for a while (docs/fuzzing.md):
#
#   bash tests/fuzz/run.sh TARGET [SECONDS] [-- LIBFUZZER-OPTIONS...]
#
# TARGET is a name (decode, proto, coproc_reply, ...) or the path of a built
# fuzz program.  A name is looked up in the fuzz build directory,
# $WALQ_FUZZ_BUILD (default: build-fuzz in the source tree), which is
# configured (CC=clang, -DWALQ_FUZZ=ON) and built when the program is
# missing.  SECONDS defaults to $WALQ_FUZZ_SECONDS, else 60.
#
# It starts from the committed seeds (tests/fuzz/corpus/TARGET), which it
# never writes; what it finds goes to fuzz-work/TARGET/corpus beside the
# program, and crashes, leaks, timeouts and out-of-memory inputs to
# fuzz-work/TARGET/artifacts.  The exit status is libFuzzer's: 0 when
# nothing was found.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
[ $# -ge 1 ] || { sed -n '2,16p' "${BASH_SOURCE[0]}" >&2; exit 2; }
target=$1
shift
seconds=${WALQ_FUZZ_SECONDS:-60}
if [ $# -ge 1 ] && [ "$1" != "--" ]; then
    seconds=$1
    shift
fi
[ "${1:-}" != "--" ] || shift

if [[ $target == */* ]]; then
    bin=$target
else
    build=${WALQ_FUZZ_BUILD:-$root/build-fuzz}
    bin=$build/tests/fuzz/fuzz_$target
    if [ ! -x "$bin" ]; then
        CC=clang cmake -S "$root" -B "$build" -DWALQ_FUZZ=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
        cmake --build "$build" -j2 --target "fuzz_$target"
    fi
fi
[ -x "$bin" ] || { echo "run.sh: no fuzz program $bin" >&2; exit 2; }
name=$(basename "$bin")
name=${name#fuzz_}
seeds=$root/tests/fuzz/corpus/$name
[ -d "$seeds" ] || { echo "run.sh: no seed corpus $seeds" >&2; exit 2; }
work=$(dirname "$bin")/fuzz-work/$name
mkdir -p "$work/corpus" "$work/artifacts"

# Leaks and every sanitizer report are failures; UBSan stops at the first.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:allocator_may_return_null=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
before=$(find "$work/corpus" -type f | wc -l)
echo "fuzz $name: $seconds s from $(find "$seeds" -type f | wc -l) seeds and $before found before"
rc=0
# -timeout: one input taking 10 s is a hang; -rss_limit_mb: 2 GB is a leak or a bomb.
"$bin" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
    -print_final_stats=1 -artifact_prefix="$work/artifacts/" "$@" \
    "$work/corpus" "$seeds" || rc=$?
after=$(find "$work/corpus" -type f | wc -l)
echo "fuzz $name: exit status $rc; corpus $before -> $after inputs in $work/corpus"
if [ "$rc" -ne 0 ]; then
    echo "fuzz $name: reproduce with: $bin $(ls -t "$work/artifacts" | head -n 1 | sed "s|^|$work/artifacts/|")" >&2
fi
exit "$rc"
