#!/usr/bin/env bash
# The test command: installs what is missing, builds into build/, and runs
# every unit and integration test with ctest.  Works from any directory; the
# exit status is ctest's.
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
exit "$rc"
