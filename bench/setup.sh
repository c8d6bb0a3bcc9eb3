#!/usr/bin/env bash
# Installs what the benchmarks need beyond the packages of the tests
# (tests/setup-debian.sh, which this runs first): PgQ for the PgQ baseline,
# perf-free tools only.  Quick and silent when everything is there;
# otherwise apt-get (as root, or through sudo), with `apt-get update` only
# when something is missing.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$root/tests/setup-debian.sh"

packages=(
    # The PgQ baseline: the extension and its ticker daemon.
    postgresql-15-pgq3 pgqd
    # pgbench runs the SKIP LOCKED worker and the producers; it comes with
    # postgresql-15, named here so that a missing one is installed.
    postgresql-contrib
    # /usr/bin/time measures the consumers' own CPU time and peak RSS.
    time
)

missing=()
for p in "${packages[@]}"; do
    status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
    [ "$status" = "install ok installed" ] || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "bench/setup.sh: installing ${missing[*]}" >&2
sudo=()
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || {
        echo "bench/setup.sh: missing packages (${missing[*]}) and not root; install them or run as root" >&2
        exit 1
    }
    sudo=(sudo)
fi
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "${missing[@]}"
