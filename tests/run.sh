#!/usr/bin/env bash
# The test command: installs what is missing, builds into build/, and runs
# the tests with ctest, one leg of the matrix (docs/testing.md) at a time:
#
#   pg15   the unit tests and every integration test on Debian 12's
#          PostgreSQL 15
#   pg17   the integration tests on PostgreSQL 17 (a Debian trixie chroot
#          that the leg builds and removes), with pgoutput and with wal2json
#   pg16   the core integration tests on npm's PostgreSQL 16, pgoutput
#   pg18   the same on npm's PostgreSQL 18
#   fuzz   the fuzz targets, built into build-fuzz/ with clang, a few
#          seconds each (ctest -L fuzz)
#
# WALQ_TEST_LEGS picks legs (default: all, in that order); WALQ_BUILD_DIR
# and WALQ_FUZZ_BUILD_DIR other build directories.  A summary of each leg's
# result and time closes the output.  Works from any directory; the exit
# status fails when any leg fails.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
legs=${WALQ_TEST_LEGS:-pg15 pg17 pg16 pg18 fuzz}
build=${WALQ_BUILD_DIR:-$root/build}
fuzz_build=${WALQ_FUZZ_BUILD_DIR:-$root/build-fuzz}

bash "$root/tests/setup-debian.sh"
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo
cmake --build "$build" -j2

rc=0
summary=()
total_passed=0
total_failed=0
total_skipped=0
log=$(mktemp "${TMPDIR:-/tmp}/walq-run.XXXXXX")
trap 'rm -f "$log"' EXIT

# run_leg NAME DIR CTEST-ARGS...: one ctest run in DIR, its output shown
# and kept in $log; adds a line to the summary, timed from $leg_start.
run_leg() {
    local name=$1 dir=$2 start=$leg_start status=0 total failed skipped secs line
    shift 2
    echo "run.sh: leg $name: ctest $*"
    (cd "$dir" && ctest --output-on-failure -j2 "$@") 2>&1 | tee "$log" || status=$?
    secs=$((SECONDS - start))
    # ctest lists skipped tests without their reason; the tests print it.
    if [ -f "$dir/Testing/Temporary/LastTest.log" ]; then
        grep -h '^SKIP: ' "$dir/Testing/Temporary/LastTest.log" | sed -E 's/^SKIP: [^:]+: //' |
            sort | uniq -c | sed -E "s/^ *([0-9]+) /run.sh: leg $name: skipped \1: /" || true
    fi
    line=$(grep -E '^[0-9]+% tests passed, [0-9]+ tests? failed out of [0-9]+' "$log" | tail -n 1 || true)
    if [ -n "$line" ]; then
        failed=$(sed -E 's/.* ([0-9]+) tests? failed out of.*/\1/' <<<"$line")
        total=$(sed -E 's/.* out of ([0-9]+).*/\1/' <<<"$line")
    elif grep -q 'No tests were found' "$log"; then
        failed=0 total=0
    else
        failed=1 total=1
    fi
    skipped=$(grep -cE '^[[:space:]]+[0-9]+ - .* \(Skipped\)$' "$log" || true)
    [ "$status" -eq 0 ] || [ "$failed" -gt 0 ] || failed=1
    [ "$status" -eq 0 ] || rc=1
    total_passed=$((total_passed + total - failed - skipped))
    total_failed=$((total_failed + failed))
    total_skipped=$((total_skipped + skipped))
    summary+=("$(printf '%-5s %4d passed, %3d failed, %3d skipped  %3dm%02ds' "$name" \
        $((total - failed - skipped)) "$failed" "$skipped" $((secs / 60)) $((secs % 60)))")
}

for leg in $legs; do
    leg_start=$SECONDS
    case $leg in
    pg15) run_leg pg15 "$build" -LE '^(matrix|fuzz)$' ;;
    pg16 | pg17 | pg18) run_leg "$leg" "$build" -L "^$leg\$" ;;
    fuzz)
        # The fuzz targets (docs/fuzzing.md), in a clang build of their own:
        # libFuzzer comes with clang.
        echo "run.sh: leg fuzz: the fuzz tests, in $fuzz_build"
        if CC=clang cmake -S "$root" -B "$fuzz_build" -DWALQ_FUZZ=ON \
            -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null &&
            cmake --build "$fuzz_build" -j2 >/dev/null; then
            run_leg fuzz "$fuzz_build" -L '^fuzz$'
        else
            echo "run.sh: could not build the fuzz targets" >&2
            rc=1
            total_failed=$((total_failed + 1))
            summary+=("fuzz  the build failed after $((SECONDS - leg_start)) s")
        fi
        ;;
    *)
        echo "run.sh: unknown leg \"$leg\" in WALQ_TEST_LEGS (pg15 pg16 pg17 pg18 fuzz)" >&2
        exit 2
        ;;
    esac
done

echo
echo "run.sh: the legs"
printf '  %s\n' "${summary[@]}"
echo "matrix: $total_passed passed, $total_failed failed, $total_skipped skipped"
exit "$rc"
