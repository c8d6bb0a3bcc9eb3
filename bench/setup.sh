#!/usr/bin/env bash
# Installs what the benchmarks need beyond the packages of the tests, with
# tests/setup-debian.sh: PgQ for the PgQ baseline, perf-free tools only.
# Quick and silent when everything is there; otherwise apt-get (as root, or
# through sudo), with `apt-get update` only when something is missing.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
packages=(
    # The PgQ baseline: the extension and its ticker daemon.
    postgresql-15-pgq3 pgqd
    # pgbench runs the SKIP LOCKED worker and the producers; it comes with
    # postgresql-15, named here so that a missing one is installed.
    postgresql-contrib
    # /usr/bin/time measures the consumers' own CPU time and peak RSS.
    time
)
exec bash "$root/tests/setup-debian.sh" "${packages[@]}"
