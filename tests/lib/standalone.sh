# Sourced by the scripts that run outside the test suite (the demo and the
# benchmarks): installs what is missing, builds into $WALQ_BUILD_DIR
# (default build/) unless WALQ_SKIP_BUILD=1, then loads pgtest.sh for its
# throwaway server.  Set TEST_NAME before sourcing.  Leaves root and build set.
# shellcheck shell=bash

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
build=${WALQ_BUILD_DIR:-$root/build}

bash "$root/tests/setup-debian.sh"
if [ "${WALQ_SKIP_BUILD:-0}" != 1 ]; then
    cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
    cmake --build "$build" -j2 >/dev/null
fi

export WALQ_BIN=${WALQ_BIN:-$build/walq}
export WALQ_SOURCE_DIR=$root
# shellcheck source=SCRIPTDIR/pgtest.sh
. "$root/tests/lib/pgtest.sh"
