#!/usr/bin/env bash
# PostgreSQL 17 with wal2json for the test matrix (WALQ_TEST_PG=17,
# docs/testing.md): Debian 13 (trixie) in a chroot at DIR, built with
# debootstrap from Debian's package registry.  Its servers run inside it as
# its postgres user; tests/lib/pgtest.sh reaches them through the chroot's
# /tmp.  Nothing is mounted in it.
#
#   pgserver-trixie.sh setup DIR     builds DIR unless a complete one is there
#   pgserver-trixie.sh cleanup DIR   stops what runs in it and removes it
#
# setup exits 77 after "SKIP: ..." when the chroot cannot be had (not root,
# no debootstrap, no registry), and writes the reason to DIR.skip, where the
# tests of the leg read it.  A complete chroot has DIR/.walq-ready.
# WALQ_TEST_KEEP_SERVERS=1 makes cleanup keep it for the next run;
# WALQ_TRIXIE_MIRROR names another Debian mirror.
set -euo pipefail

mirror=${WALQ_TRIXIE_MIRROR:-http://deb.debian.org/debian}
packages=(postgresql-17 postgresql-17-wal2json)

usage() {
    echo "usage: $0 setup|cleanup DIR" >&2
    exit 2
}

[ $# -eq 2 ] || usage
cmd=$1
dir=$(realpath -m "$2")

skip() {
    echo "$*" >"$dir.skip"
    echo "SKIP: pgserver-trixie: $*"
    exit 77
}

# The processes whose root is the chroot: its servers, and whatever else a
# killed test left there.
chroot_pids() {
    local p root
    for p in /proc/[0-9]*; do
        root=$(readlink "$p/root" 2>/dev/null) || continue
        [ "$root" = "$dir" ] && echo "${p#/proc/}"
    done
    return 0
}

# Stops every server in the chroot, then kills what is left in it.
stop_all() {
    local pid user pids
    [ -f "$dir/etc/passwd" ] || return 0
    user=$(awk -F: '$1 == "postgres" { print $3 ":" $4 }' "$dir/etc/passwd")
    for pid in "$dir"/tmp/*/data/postmaster.pid; do
        [ -f "$pid" ] || continue
        [ -n "$user" ] || break
        chroot --userspec="$user" "$dir" /usr/bin/env -i PATH=/usr/bin:/bin \
            /usr/lib/postgresql/17/bin/pg_ctl -D "$(dirname "${pid#"$dir"}")" -m immediate -w -t 30 \
            stop >/dev/null 2>&1 || true
    done
    pids=$(chroot_pids)
    if [ -n "$pids" ]; then
        # shellcheck disable=SC2086  # one pid a word
        kill -KILL $pids 2>/dev/null || true
    fi
}

# The tests mount nothing in the chroot, but debootstrap mounts /proc (and
# maybe more) there while it runs, and leaves it when it is killed.  Those
# go first, the deepest first; rm then stays on the chroot's file system.
remove() {
    local m
    while read -r m; do
        umount "$m" 2>/dev/null || umount -l "$m"
    done < <(awk -v d="$dir/" 'index($2, d) == 1 { print $2 }' /proc/mounts | sort -r)
    if grep -q " $dir/" /proc/mounts; then
        echo "pgserver-trixie: something is still mounted under $dir" >&2
        exit 1
    fi
    rm -rf --one-file-system -- "$dir"
    # The host's ends of the chroot's temporary directories.
    find /tmp -maxdepth 1 -type l -lname "$dir/tmp/*" -delete 2>/dev/null || true
}

setup() {
    local start=$SECONDS version
    if [ -f "$dir/.walq-ready" ]; then
        echo "pgserver-trixie: reusing $dir ($(cat "$dir/.walq-ready"))"
        exit 0
    fi
    rm -f "$dir.skip"
    [ "$(id -u)" -eq 0 ] || skip "building and entering the chroot needs root"
    command -v debootstrap >/dev/null ||
        skip "debootstrap is not installed (tests/setup-debian.sh installs it)"
    [ -f /usr/share/debootstrap/scripts/trixie ] ||
        skip "this debootstrap does not know Debian trixie"
    stop_all
    remove
    mkdir -p "$(dirname "$dir")"
    echo "pgserver-trixie: debootstrap of trixie into $dir (about 40 s)"
    # Bounded, so that a stalled download fails here and not at ctest's
    # timeout, which would leave debootstrap running.
    if ! timeout -k 10 420 debootstrap --variant=minbase trixie "$dir" "$mirror" >"$dir.log" 2>&1; then
        tail -n 5 "$dir.log"
        stop_all
        remove
        skip "debootstrap of trixie from $mirror failed: $(grep -E '^E:' "$dir.log" | tail -n 1)"
    fi
    # The packages' scripts must neither create a cluster nor start one.
    mkdir -p "$dir/etc/postgresql-common"
    echo "create_main_cluster = false" >"$dir/etc/postgresql-common/createcluster.conf"
    printf '#!/bin/sh\nexit 101\n' >"$dir/usr/sbin/policy-rc.d"
    chmod 0755 "$dir/usr/sbin/policy-rc.d"
    # Without a mount of its own, /dev/shm is a plain directory; PostgreSQL's
    # POSIX shared memory (shm_open) then lives in files there.
    chmod 1777 "$dir/dev/shm"
    echo "pgserver-trixie: apt-get install ${packages[*]}"
    if ! timeout -k 10 420 chroot "$dir" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        "${packages[@]}" >>"$dir.log" 2>&1; then
        tail -n 5 "$dir.log"
        stop_all
        remove
        skip "apt-get install ${packages[*]} in the chroot failed: $(grep -E '^E:' "$dir.log" | tail -n 1)"
    fi
    chroot "$dir" apt-get clean
    version=$(chroot "$dir" /usr/lib/postgresql/17/bin/postgres --version)
    [ -f "$dir/usr/lib/postgresql/17/lib/wal2json.so" ] || {
        echo "pgserver-trixie: wal2json.so is missing after the install" >&2
        exit 1
    }
    # shellcheck disable=SC2016  # dpkg-query's format
    echo "$version, wal2json $(chroot "$dir" dpkg-query -W -f='${Version}' postgresql-17-wal2json)" \
        >"$dir/.walq-ready"
    echo "pgserver-trixie: $(cat "$dir/.walq-ready") in $dir, $((SECONDS - start)) s"
}

cleanup() {
    rm -f "$dir.skip"
    if [ "${WALQ_TEST_KEEP_SERVERS:-0}" = 1 ]; then
        echo "pgserver-trixie: kept $dir (WALQ_TEST_KEEP_SERVERS=1)"
        stop_all
        exit 0
    fi
    [ -e "$dir" ] || exit 0
    stop_all
    remove
    rm -f "$dir.log"
    echo "pgserver-trixie: removed $dir"
}

case $cmd in
setup) setup ;;
cleanup) cleanup ;;
*) usage ;;
esac
