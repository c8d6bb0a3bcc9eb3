#!/usr/bin/env bash
# shellcheck disable=SC2016  # wait_for evals its condition later
# Each misconfiguration gives a clear error in PostgreSQL's style and a
# non-zero exit, never a hang or a crash.
# shellcheck source=SCRIPTDIR/../lib/pgtest.sh
. "$(dirname "$0")/../lib/pgtest.sh"
require_walq

# expect_error RC REGEX MSG CMD...: CMD exits RC (an alternation like 1|2
# allowed) with a "walq: ERROR:" line on stderr that matches REGEX.
expect_error() {
    local rc=$1 re=$2 msg=$3
    shift 3
    capture timeout -k 5 30 "$@"
    [ "$CAP_RC" -ne 124 ] || fail "$msg: timed out after 30s"
    printf '%s\n' "$CAP_ERR" | sed 's/^/    | /'
    assert_match "$CAP_RC" "^($rc)\$" "$msg: exit status $CAP_RC"
    assert_match "$CAP_ERR" '^walq: ERROR:  ' "$msg: error in PostgreSQL's style"
    assert_match "$CAP_ERR" "$re" "$msg: message matches /$re/"
}

true_handler=$(handler ok.sh <<'HANDLER'
cat >/dev/null
HANDLER
)

# Usage errors need no server.
capture "$WALQ_BIN" consume --queue q -- "$true_handler"
assert_eq "$CAP_RC" 2 "consume without --group: usage error"
capture "$WALQ_BIN" consume --group g -- "$true_handler"
assert_eq "$CAP_RC" 2 "consume without --queue: usage error"
capture "$WALQ_BIN" consume --group g --queue q
assert_eq "$CAP_RC" 2 "consume with neither a program nor --noop: usage error"
capture "$WALQ_BIN" consume --group g --queue q --bogus -- "$true_handler"
assert_eq "$CAP_RC" 2 "consume with an unknown option: usage error"
capture "$WALQ_BIN" frobnicate
assert_eq "$CAP_RC" 2 "an unknown command: usage error"

# A server without wal_level=logical.
pg_start "wal_level = replica"
walq init
expect_error 1 'wal_level' "wal_level=replica" \
    "$WALQ_BIN" consume --group g --queue q --drain -- "$true_handler"
pg_conf "wal_level = logical"
pg_restart

# `walq init` not run.
q "CREATE DATABASE fresh" >/dev/null
expect_error 1 'walq init' "consume without walq init" \
    env PGDATABASE=fresh "$WALQ_BIN" consume --group g --queue q --drain -- "$true_handler"
expect_error 1 'walq init' "publish without walq init" \
    "$WALQ_BIN" publish --dbname "dbname=fresh" q '{}'
expect_error 1 'walq init' "status without walq init" \
    "$WALQ_BIN" status --dbname "dbname=fresh"
assert_eq "$(pg_psql -d fresh -c "SELECT count(*) FROM pg_replication_slots")" 0 \
    "no slot is left behind by the failed consume"

# Bad connection strings.
expect_error 1 'nonexistent' "a socket directory that does not exist" \
    "$WALQ_BIN" init --dbname "host=/nonexistent/walq port=5432"
expect_error 1 '.' "a connection string that does not parse" \
    "$WALQ_BIN" status --dbname "this is not a conninfo"
expect_error 1 'nonexistent' "consume --source to a server that is not there" \
    "$WALQ_BIN" consume --source "host=/nonexistent/walq" --group g --queue q --drain -- "$true_handler"
expect_error 1 'nonexistent' "consume --primary to a server that is not there" \
    "$WALQ_BIN" consume --primary "host=/nonexistent/walq" --group g --queue q --drain -- "$true_handler"
expect_error 1 'nosuchdb' "a database that does not exist" \
    env PGDATABASE=nosuchdb "$WALQ_BIN" consume --group g --queue q --drain -- "$true_handler"

# A role without the REPLICATION attribute.
pg_psql <<'SQL'
CREATE ROLE app LOGIN;
GRANT USAGE ON SCHEMA walq TO app;
GRANT ALL ON ALL TABLES IN SCHEMA walq TO app;
GRANT ALL ON ALL SEQUENCES IN SCHEMA walq TO app;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA walq TO app;
SQL
expect_error 1 'REPLICATION' "a role without REPLICATION" \
    env PGUSER=app "$WALQ_BIN" consume --group norepl --queue q --drain -- "$true_handler"
capture env PGUSER=app "$WALQ_BIN" publish q '{"by": "app"}'
assert_eq "$CAP_RC" 0 "the same role may publish"

# Group names a slot name cannot hold.
for bad in Upper with-dash 'sp ace' 'dot.ted' "$(printf 'x%.0s' $(seq 1 59))" ''; do
    expect_error '1|2' 'group' "group name '$bad'" \
        "$WALQ_BIN" consume --group "$bad" --queue q --drain -- "$true_handler"
done
assert_eq "$(q "SELECT count(*) FROM pg_replication_slots")" 0 "no slot was created for a bad name"

# (A second consumer of a running group stands by: tests/integration/ha.sh.)

# wal2json missing: the server looks up output plugins along
# dynamic_library_path, so a directory there without it hides it.  Since
# PostgreSQL 18 plpgsql's functions name their library bare ("plpgsql"),
# looked up along the same path, and walq's functions need it: the
# directory holds plpgsql alone.
mkdir "$WORK/nolib"
pkglibdir=$(q "SELECT setting FROM pg_config() WHERE name = 'PKGLIBDIR'")
if [ -e "$pkglibdir/plpgsql.so" ]; then
    ln -s "$pkglibdir/plpgsql.so" "$WORK/nolib/plpgsql.so"
fi
pg_conf "dynamic_library_path = '$WORK/nolib'"
pg_restart
expect_error 1 'wal2json' "wal2json not installed" \
    "$WALQ_BIN" consume --group nowal --queue q --plugin wal2json --drain -- "$true_handler"
assert_match "$CAP_ERR" 'apt-get install postgresql-[0-9]+-wal2json' "the hint names the package"
assert_match "$CAP_ERR" '--plugin pgoutput' "and the plugin every server has"
pass "all"
