#!/usr/bin/env bash
# Installs the Debian packages walq needs to build, test and run its demo,
# and any named as arguments (bench/setup.sh names the benchmarks' own).
# Quick and silent when everything is there; otherwise apt-get (as root, or
# through sudo), with `apt-get update` only when something is missing.
set -euo pipefail

packages=(
    build-essential cmake pkg-config
    libpq-dev libjson-c-dev libyajl-dev check
    postgresql-15 postgresql-15-wal2json postgresql-client-15 python3
    procps util-linux coreutils iproute2
    # Compares the audit trail with pg_recvlogical's output (tests/integration/audit.sh).
    jq
    # The fuzz targets: clang and its libFuzzer and sanitizer runtimes (docs/fuzzing.md).
    clang libclang-rt-14-dev
    # Validates docker-compose.yml (tests/integration/compose_config.sh);
    # without its recommends, so no Docker engine comes with it.
    docker-compose
    # The test matrix's PostgreSQL 17: a Debian trixie chroot
    # (tests/lib/pgserver-trixie.sh).
    debootstrap
    # Acks through a pooler in transaction mode (tests/integration/pgbouncer.sh).
    pgbouncer
    # The CA and the certificates of the TLS test (tests/integration/tls.sh).
    openssl
    # sd_notify for the systemd units (src/cli/notify.c, tests/integration/systemd_notify.sh).
    libsystemd-dev
    # The manual pages (man/gen.sh) and the .deb (tests/integration/deb.sh);
    # man checks that the pages render.
    help2man dpkg-dev man-db
    # --http of consume and audit (src/http.c); its tests scrape with curl and
    # load the status page in headless Chromium (tests/integration/http.sh).
    libmicrohttpd-dev curl chromium
    # The configuration file of consume and audit (src/cli/settings.c).
    libinih-dev
    "$@"
)

# The matrix's PostgreSQL 16 and 18 come from npm (tests/lib/pgserver-npm.sh).
# Debian's npm only where no npm is installed: another vendor's nodejs
# package carries its own and conflicts with Debian's.
command -v npm >/dev/null || packages+=(npm)

missing=()
for p in "${packages[@]}"; do
    status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
    [ "$status" = "install ok installed" ] || missing+=("$p")
done

if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi

echo "setup-debian: installing ${missing[*]}" >&2
sudo=()
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || {
        echo "setup-debian: missing packages (${missing[*]}) and not root; install them or run as root" >&2
        exit 1
    }
    sudo=(sudo)
fi
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "${missing[@]}"
