#!/usr/bin/env bash
# The test command: installs what is missing, builds into build/, and runs
# every unit and integration test with ctest; then builds the fuzz targets
# into build-fuzz/ with clang and runs each for a few seconds (ctest -L
# fuzz).  Works from any directory; the exit status fails when either run
# fails.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

bash "$root/tests/setup-debian.sh"
cmake -S "$root" -B "$root/build" -DCMAKE_BUILD_TYPE=RelWithDebInfo
cmake --build "$root/build" -j2

cd "$root/build"
rc=0
ctest --output-on-failure -j2 || rc=$?
# ctest lists skipped tests without their reason; the tests print it.
if [ -f Testing/Temporary/LastTest.log ]; then
    grep -h '^SKIP: ' Testing/Temporary/LastTest.log || true
fi

# The fuzz targets (docs/fuzzing.md), a short run each, in a clang build of
# their own: libFuzzer comes with clang.
fuzz_rc=0
echo "run.sh: the fuzz tests, in $root/build-fuzz"
if CC=clang cmake -S "$root" -B "$root/build-fuzz" -DWALQ_FUZZ=ON \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null &&
    cmake --build "$root/build-fuzz" -j2 >/dev/null; then
    (cd "$root/build-fuzz" && ctest -L fuzz -j2 --output-on-failure) || fuzz_rc=$?
else
    echo "run.sh: could not build the fuzz targets" >&2
    fuzz_rc=1
fi
[ "$rc" -ne 0 ] || rc=$fuzz_rc
exit "$rc"
