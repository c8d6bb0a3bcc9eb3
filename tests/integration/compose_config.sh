#!/usr/bin/env bash
# docker-compose.yml is valid for docker-compose 1.29 (Debian 12's), and the
# files it takes from the repository exist: the Dockerfile, what that copies,
# and the scripts it mounts.  No Docker engine is needed, nor started: this
# checks the file, it does not run it.
# shellcheck source=SCRIPTDIR/../lib/pgtest.sh
. "$(dirname "$0")/../lib/pgtest.sh"

compose=$WALQ_SOURCE_DIR/docker-compose.yml
if ! command -v docker-compose >/dev/null; then
    echo "SKIP: ${TEST_NAME}: docker-compose is not installed (tests/setup-debian.sh installs it)"
    exit 77
fi

# HOME may hold a Docker client configuration; keep it out of the check.
export HOME=$WORK
capture docker-compose -f "$compose" config -q
[ "$CAP_RC" -eq 0 ] || fail "docker-compose config -q rejects $compose: $CAP_ERR"
pass "docker-compose accepts docker-compose.yml"

# The file as docker-compose reads it: defaults filled in, paths absolute.
# (Each docker-compose run starts a Python interpreter, a second or more on
# a busy machine: two runs are enough.)
capture docker-compose -f "$compose" config
[ "$CAP_RC" -eq 0 ] || fail "docker-compose config failed: $CAP_ERR"
resolved=$CAP_OUT
services=$(awk '/^[a-z]/ { top = $1 } top == "services:" && /^  [a-z][a-z0-9_-]*:$/ { print $1 }' \
    <<<"$resolved" | tr -d : | sort | tr '\n' ' ')
assert_eq "$services" "consumer init primary publisher standby " \
    "the services: a primary, a standby, the schema, a publisher and a consumer"
assert_match "$resolved" 'image: postgres:16' "the servers run PostgreSQL 16"
# walq consume reads with pgoutput, built into postgres:16: nothing to install.
case $resolved in
*wal2json*) fail "docker-compose.yml names wal2json, which its consumer does not need" ;;
esac
pass "no wal2json: the consumer reads with pgoutput, which postgres:16 has built in"
assert_match "$resolved" '--source' "the consumer names a source"
assert_match "$resolved" 'host=standby' "which is the standby"

# Bind mounts come out of `config` as absolute paths into the repository.
n=0
while read -r path; do
    [ -e "$path" ] || fail "docker-compose.yml mounts $path, which does not exist"
    case $path in *.sh) sh -n "$path" || fail "$path is not valid sh" ;; esac
    if grep -q 'install.*wal2json' "$path"; then
        fail "$path installs wal2json, which the consumer does not need"
    fi
    n=$((n + 1))
done < <(grep -oE "$WALQ_SOURCE_DIR/[^: ]+" <<<"$resolved" | sort -u)
[ "$n" -ge 2 ] || fail "expected the primary's and the standby's scripts among the mounts, found $n paths"
pass "the $n files docker-compose.yml mounts exist, and its scripts parse"

# The Dockerfile of the walq image, and what it copies from the repository.
dockerfile=$(sed -n 's/^ *dockerfile: *//p' <<<"$resolved" | sort -u)
[ "$(wc -l <<<"$dockerfile")" -eq 1 ] || fail "expected one Dockerfile, found: $dockerfile"
[ -f "$WALQ_SOURCE_DIR/$dockerfile" ] || fail "the Dockerfile $dockerfile does not exist"
n=0
while read -r src; do
    [ -e "$WALQ_SOURCE_DIR/$src" ] || fail "$dockerfile copies $src, which does not exist"
    n=$((n + 1))
done < <(awk '$1 == "COPY" && $2 !~ /^--/ { for (i = 2; i < NF; i++) print $i }' \
    "$WALQ_SOURCE_DIR/$dockerfile")
pass "$dockerfile exists and the $n paths it copies exist"
pass "all"
