# shellcheck shell=bash
# shellcheck disable=SC2034  # globals (CAP_*, BG_*) are read by the sourcing script
#
# pgtest.sh: a throwaway PostgreSQL for integration tests, the demo and the
# benchmarks.  Source it, call pg_start, and the server, every background
# process started with `bg` and every temporary directory are gone when the
# script exits, however it exits.
#
#   pg_start [postgresql.conf lines...]   initdb + start; exports PGHOST etc.
#   pg_conf LINE...                        append settings (apply with pg_restart)
#   pg_stop / pg_restart / pg_crash        fast stop / fast restart / immediate stop + start
#   pg_psql ARGS...                        psql -X -At -v ON_ERROR_STOP=1
#   q SQL                                  one statement, unaligned tuples only
#   walq ARGS...                           the walq program under test ($WALQ_BIN)
#   bg CMD...                              start CMD in the background; pid in BG_PID
#   bg_wait PID [SECS]                     wait for a bg process; its status in BG_RC
#   capture CMD...                         run CMD; CAP_RC, CAP_OUT, CAP_ERR
#   fail MSG / pass MSG / assert_eq ACTUAL EXPECTED MSG / assert_match TEXT REGEX MSG
#   wait_for 'SHELL CONDITION' SECS [MSG]
#   pg_lock TABLE SECS / pg_unlock         a session holding TABLE locked / its end
#
# When the script runs as root the server runs as the `postgres` user, since
# PostgreSQL refuses to run as root.
#
# More servers, for topologies of two (a primary and a replica):
#
#   PGTEST_CONN                            the first server's connection string
#   pg_start_extra NAME [conf lines...]    another server, set up as pg_start's,
#                                          in its own directory on its own port;
#                                          PGHOST etc. still name the first one
#   PGTEST_CONN_<NAME>, PGTEST_DIR_<NAME>  its connection string and directory,
#                                          NAME in capitals (replica: _REPLICA)
#   pg_psql_on NAME ARGS... / q_on NAME SQL    pg_psql / q against it
#   pg_stop_extra NAME                     fast stop (cleanup removes it anyway)
#   pg_start_standby NAME [conf lines...]  a hot standby of the first server
#                                          (pg_basebackup, physical slot NAME)
#
#   pg_restart_extra NAME / pg_crash_extra NAME   pg_restart / pg_crash of it
#   pg_promote NAME                        promotes the standby NAME, waits until
#                                          it takes writes
#
# A connection string is "host=DIR port=P user=postgres dbname=postgres": a
# unix socket only.  NAME is [a-z0-9_]+.  Extra servers are stopped and
# removed by the same cleanup as the first, and by the watchdog when the
# script is killed outright.
#
# The server under test (docs/testing.md, "The matrix"): WALQ_TEST_PG picks
# its PostgreSQL major version.
#
#   15 (default)  Debian 12's, in /usr/lib/postgresql/15/bin
#   17            Debian 13's, with wal2json and pg_basebackup, in the trixie
#                 chroot that tests/lib/pgserver-trixie.sh builds; it runs as
#                 the chroot's postgres user
#   16, 18        npm's relocatable builds (pgoutput only, no pg_basebackup)
#                 that tests/lib/pgserver-npm.sh installs
#
# The chroot and the npm servers live in WALQ_TEST_PG_CACHE (default:
# pgservers/ beside $WALQ_BIN, where the ctest fixtures put them).  When the
# chosen server is not there, sourcing this file prints "SKIP: ..." with the
# reason and exits 77.  The clients (psql, pg_recvlogical; PGTEST_BINDIR)
# are always the host's PostgreSQL 15 ones, which talk to newer servers.
# With the chroot, every directory made here (the servers', $WORK) is in the
# chroot's /tmp and the same path on the host is a symlink to it: one path
# names a file for the server and for the test alike.
#
#   PGTEST_PG                              the server's major version
#   PGTEST_WAL2JSON                        1 when the server has wal2json; pg_start
#                                          then lists it in output_plugin_libraries
#                                          where that setting exists
#   pgtest_skip MSG                        "SKIP: TEST: MSG", exit 77 (the test is skipped)
#   pgtest_require_pg MAJOR WHY            skips on a server older than MAJOR
#   pgtest_require_wal2json WHY            skips on a server without wal2json

set -Eeuo pipefail

PGTEST_BINDIR=${PGTEST_BINDIR:-/usr/lib/postgresql/15/bin}
WALQ_SOURCE_DIR=${WALQ_SOURCE_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
WALQ_BIN=${WALQ_BIN:-$WALQ_SOURCE_DIR/build/walq}
TEST_NAME=${TEST_NAME:-$(basename "$0" .sh)}

# pgtest_skip MSG: the test is skipped (ctest's SKIP_RETURN_CODE 77), with
# the reason on a line of its own for tests/run.sh to list.
pgtest_skip() {
    PGTEST_SKIPPED=1
    echo "SKIP: ${TEST_NAME}: $*"
    exit 77
}

# The server programs (initdb, pg_ctl, postgres, pg_basebackup) of the server
# under test, and how to run them: PGTEST_MODE is host, chroot or npm.  These
# are exported so that a helper run by a test (faultgen.py's pg_restart)
# finds the same server.
# _pgtest_require_ready DIR WHAT WHY: the servers a fixture put in DIR are
# complete, or the test is skipped with the reason the fixture wrote beside
# DIR, else WHY.
_pgtest_require_ready() {
    local reason
    [ ! -f "$1/.walq-ready" ] || return 0
    reason=$(cat "$1.skip" 2>/dev/null) || reason=$3
    pgtest_skip "$2 is not available: $reason"
}

_pgtest_select_server() {
    local cache want=${WALQ_TEST_PG:-15} dir
    cache=$(realpath -m "${WALQ_TEST_PG_CACHE:-$(dirname "$WALQ_BIN")/pgservers}")
    PGTEST_CHROOT=""
    PGTEST_CHROOT_USER=""
    case $want in
    15)
        PGTEST_MODE=host
        PGTEST_SERVER_BINDIR=${PGTEST_SERVER_BINDIR:-$PGTEST_BINDIR}
        ;;
    17)
        PGTEST_MODE=chroot
        dir=$cache/trixie
        _pgtest_require_ready "$dir" "PostgreSQL 17 (the trixie chroot in $dir)" \
            "it is not built (bash tests/lib/pgserver-trixie.sh setup $dir)"
        [ "$(id -u)" -eq 0 ] || pgtest_skip "PostgreSQL 17 runs in a chroot, which needs root"
        PGTEST_CHROOT=$dir
        # The chroot's postgres user, whose ids need not be the host's.
        PGTEST_CHROOT_USER=$(awk -F: '$1 == "postgres" { print $3 ":" $4 }' "$dir/etc/passwd")
        PGTEST_SERVER_BINDIR=/usr/lib/postgresql/17/bin
        ;;
    16 | 18)
        PGTEST_MODE=npm
        dir=$cache/npm
        _pgtest_require_ready "$dir" "PostgreSQL $want (npm's servers in $dir)" \
            "they are not installed (bash tests/lib/pgserver-npm.sh setup $dir)"
        # Resolved: the postgres user may not be able to go through $dir.
        PGTEST_SERVER_BINDIR=$(readlink -f "$dir/pg$want")/bin
        ;;
    *)
        echo "FAIL: ${TEST_NAME}: WALQ_TEST_PG=$want: choose 15, 16, 17 or 18" >&2
        exit 1
        ;;
    esac
    PGTEST_PG=$want
    PGTEST_WAL2JSON=0
    if [ -f "$PGTEST_CHROOT$(dirname "$PGTEST_SERVER_BINDIR")/lib/wal2json.so" ]; then
        PGTEST_WAL2JSON=1
    fi
    export PGTEST_MODE PGTEST_SERVER_BINDIR PGTEST_CHROOT PGTEST_CHROOT_USER PGTEST_PG PGTEST_WAL2JSON
}
PGTEST_SKIPPED=0
_pgtest_select_server

# pgtest_require_pg MAJOR WHY: skips the test on a server older than MAJOR.
pgtest_require_pg() {
    [ "$PGTEST_PG" -ge "$1" ] || pgtest_skip "$2 (this server is PostgreSQL $PGTEST_PG)"
}

# pgtest_require_wal2json WHY: skips the test on a server without wal2json.
pgtest_require_wal2json() {
    [ "$PGTEST_WAL2JSON" = 1 ] || pgtest_skip "$1 (PostgreSQL $PGTEST_PG here has no wal2json)"
}

PGTEST_DIR=""        # the server's directory: data/, socket, server.log
PGTEST_DATA=""
PGTEST_CONN=""       # its connection string
declare -gA PGTEST_EXTRA=() # the extra servers: NAME -> directory
PGTEST_PIDS=()       # background processes still to be waited for
PGTEST_SESSIONS=()   # their sessions: whatever is left in them dies at exit
PGTEST_FAILED=0
BG_PID=""
BG_RC=0
CAP_RC=0
CAP_OUT=""
CAP_ERR=""

_pgtest_is_root() { [ "$(id -u)" -eq 0 ]; }

# _pgtest_mktemp NAME [PARENT]: makes a new directory PARENT/NAME.XXXXXX
# (PARENT: /tmp) and prints its path.  With the chroot the directory is the
# chroot's /tmp/NAME.XXXXXX, and the same path on the host a symlink to it.
_pgtest_mktemp() {
    local real path i
    if [ "$PGTEST_MODE" != chroot ]; then
        mktemp -d "${2:-/tmp}/$1.XXXXXX"
        return
    fi
    for i in 1 2 3 4 5; do
        real=$(mktemp -d "$PGTEST_CHROOT/tmp/$1.XXXXXX")
        path=/tmp/${real##*/}
        if ln -sT "$real" "$path" 2>/dev/null; then
            echo "$path"
            return 0
        fi
        rmdir "$real"
        : "$i"
    done
    echo "pgtest: could not make a directory /tmp/$1.* for the chroot" >&2
    return 1
}

# _pgtest_rmtemp DIR...: removes directories made by _pgtest_mktemp.
_pgtest_rmtemp() {
    local d
    for d in "$@"; do
        [ -n "$d" ] || continue
        if [ -L "$d" ]; then
            rm -rf -- "$(readlink "$d")"
        fi
        rm -rf -- "$d"
    done
}

# Scratch space for the test itself (handlers, their output files).  Mode
# 0755 so that a server running as postgres could read files put here.
WORK=$(_pgtest_mktemp "walq-${TEST_NAME}" "${TMPDIR:-/tmp}")
chmod 0755 "$WORK"

# _pgtest_own DIR: gives DIR to the user the servers run as.
_pgtest_own() {
    chmod 0755 "$1"
    if [ "$PGTEST_MODE" = chroot ]; then
        chown "$PGTEST_CHROOT_USER" "$(readlink "$1")"
    elif _pgtest_is_root; then
        chown postgres:postgres "$1"
    fi
}

# Runs a server binary as the user that owns the cluster.
_pg_as() {
    _pg_as_in "$PGTEST_DIR" "$@"
}

# _pg_as_in DIR CMD...: the same for the server in DIR, from DIR.  In the
# chroot with an environment of its own: none of the host's PG* settings.
_pg_as_in() {
    local dir=$1
    shift
    if [ "$PGTEST_MODE" = chroot ]; then
        chroot --userspec="$PGTEST_CHROOT_USER" "$PGTEST_CHROOT" /usr/bin/env -i -C "$dir" \
            PATH=/usr/bin:/bin HOME=/var/lib/postgresql LANG=C "$@"
    elif _pgtest_is_root; then
        (cd "$dir" && runuser -u postgres -- "$@")
    else
        "$@"
    fi
}

fail() {
    PGTEST_FAILED=1
    echo "FAIL: ${TEST_NAME}: $*" >&2
    exit 1
}

pass() { echo "PASS: ${TEST_NAME}: $*"; }

assert_eq() {
    local actual=$1 expected=$2 msg=${3:-value}
    if [ "$actual" = "$expected" ]; then
        pass "$msg"
    else
        fail "$msg: expected '$expected', got '$actual'"
    fi
}

# assert_match TEXT EXTENDED-REGEX MSG
assert_match() {
    local text=$1 re=$2 msg=${3:-match}
    # A here-string, not a pipe: grep -q may exit first and fail the pipe.
    if grep -Eq -- "$re" <<<"$text"; then
        pass "$msg"
    else
        fail "$msg: /$re/ not found in: $text"
    fi
}

# wait_for 'CONDITION' SECONDS [MSG]: polls the shell condition every 0.1 s.
wait_for() {
    local cond=$1 secs=${2:-30} msg=${3:-$1}
    local deadline=$((SECONDS + secs))
    until eval "$cond"; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            fail "timed out after ${secs}s waiting for: $msg"
        fi
        sleep 0.1
    done
}

# capture CMD...: runs CMD with set -e off for it; sets CAP_RC, CAP_OUT, CAP_ERR.
capture() {
    local out err
    out=$(mktemp "$WORK/out.XXXXXX")
    err=$(mktemp "$WORK/err.XXXXXX")
    CAP_RC=0
    "$@" >"$out" 2>"$err" || CAP_RC=$?
    CAP_OUT=$(cat "$out")
    CAP_ERR=$(cat "$err")
    rm -f "$out" "$err"
}

walq() { "$WALQ_BIN" "$@"; }

require_walq() {
    [ -x "$WALQ_BIN" ] || fail "walq program not found at $WALQ_BIN (build first, or set WALQ_BIN)"
}

# bg CMD...: starts CMD in the background in a session of its own, so that
# cleanup can kill it together with the handlers it started.  Signals sent
# to BG_PID reach CMD alone.  Redirections on the call apply to CMD.
bg() {
    setsid "$@" &
    BG_PID=$!
    PGTEST_PIDS+=("$BG_PID")
    PGTEST_SESSIONS+=("$BG_PID")
    echo "$BG_PID" >>"$WORK/.sessions"
}

# bg_wait PID [SECONDS]: waits for a process started by bg; its exit status
# goes to BG_RC.  Fails the test when it is still running after SECONDS.
bg_wait() {
    local pid=$1 secs=${2:-60}
    local deadline=$((SECONDS + secs))
    # (stderr goes to /dev/null while bash may reap the process, to keep its
    # "Killed" notice out of the output.)
    {
        while kill -0 "$pid" && ! _pgtest_exited "$pid" && [ "$SECONDS" -lt "$deadline" ]; do
            sleep 0.1
        done
    } 2>/dev/null
    if kill -0 "$pid" 2>/dev/null && ! _pgtest_exited "$pid"; then
        fail "process $pid still running after ${secs}s"
    fi
    BG_RC=0
    { wait "$pid" || BG_RC=$?; } 2>/dev/null
    local p keep=()
    for p in "${PGTEST_PIDS[@]}"; do
        [ "$p" = "$pid" ] || keep+=("$p")
    done
    PGTEST_PIDS=("${keep[@]+"${keep[@]}"}")
}

# A child that exited but was not waited for is a zombie: kill -0 still
# succeeds on it.
_pgtest_exited() {
    local state
    state=$(ps -o stat= -p "$1" 2>/dev/null) || return 0
    case $state in Z*) return 0 ;; esac
    return 1
}

_pgtest_free_port() {
    local port i
    for i in $(seq 1 100); do
        port=$((20000 + (RANDOM * 32768 + RANDOM) % 40000))
        # The socket lives in our own directory, so only a TCP listener on
        # the same number could confuse a reader of the logs; avoid those.
        if ! (ss -Htln 2>/dev/null || true) | awk '{print $4}' | grep -q ":$port\$"; then
            echo "$port"
            return 0
        fi
        : "$i"
    done
    echo $((20000 + RANDOM % 40000))
}

# _pgtest_initdb DIR PORT [conf lines...]: a new cluster in DIR/data with
# the settings every server of the tests has.
_pgtest_initdb() {
    local dir=$1 port=$2
    shift 2
    _pgtest_own "$dir"
    if ! _pg_as_in "$dir" "$PGTEST_SERVER_BINDIR/initdb" -D "$dir/data" -A trust -U postgres \
        --no-sync --locale=C -E UTF8 >"$dir/initdb.log" 2>&1; then
        cat "$dir/initdb.log" >&2
        fail "initdb failed"
    fi
    cat >>"$dir/data/postgresql.conf" <<EOF

# pgtest.sh
listen_addresses = ''
unix_socket_directories = '$dir'
port = $port
wal_level = logical
max_replication_slots = 20
max_wal_senders = 20
fsync = off
synchronous_commit = off
full_page_writes = off
shared_buffers = 64MB
max_connections = 60
log_min_duration_statement = -1
log_line_prefix = '%m [%p] %q%a '
EOF
    _pgtest_allow_wal2json "$dir"
    if [ $# -gt 0 ]; then
        printf '%s\n' "$@" >>"$dir/data/postgresql.conf"
    fi
}

# Current minor releases decode only with the plugins listed in
# output_plugin_libraries (default 'pgoutput, test_decoding').  Where the
# setting exists and the server has wal2json, the tests' servers allow it
# too; a test of the default sets it again (a later line wins).
# _pgtest_allow_wal2json DIR
_pgtest_allow_wal2json() {
    [ "$PGTEST_WAL2JSON" = 1 ] || return 0
    if [ -z "${_PGTEST_OPL:-}" ]; then
        _PGTEST_OPL=no
        if _pg_as_in "$1" "$PGTEST_SERVER_BINDIR/postgres" -D "$1/data" \
            -C output_plugin_libraries >/dev/null 2>&1; then
            _PGTEST_OPL=yes
        fi
    fi
    if [ "$_PGTEST_OPL" = yes ]; then
        echo "output_plugin_libraries = 'pgoutput, test_decoding, wal2json'" \
            >>"$1/data/postgresql.conf"
    fi
}

# shellcheck disable=SC2120  # the settings are optional
pg_start() {
    [ -z "$PGTEST_DIR" ] || fail "pg_start: a server is already running in $PGTEST_DIR"
    PGTEST_DIR=$(_pgtest_mktemp walq-pg)
    PGTEST_DATA=$PGTEST_DIR/data
    local port
    port=$(_pgtest_free_port)
    _pgtest_initdb "$PGTEST_DIR" "$port" "$@"
    export PGHOST=$PGTEST_DIR PGPORT=$port PGUSER=postgres PGDATABASE=postgres
    unset PGSERVICE PGPASSWORD PGOPTIONS PGHOSTADDR 2>/dev/null || true
    PGTEST_CONN="host=$PGTEST_DIR port=$port user=postgres dbname=postgres"
    _pgtest_watchdog "$PGTEST_DIR"
    _pg_ctl_start
}

# pg_start_extra NAME [postgresql.conf lines...]: another server beside the
# first.  Sets PGTEST_CONN_<NAME> and PGTEST_DIR_<NAME>; PGHOST and the rest
# stay on the first server.
pg_start_extra() {
    local name=${1:-} dir port var
    [[ $name =~ ^[a-z0-9_]+$ ]] ||
        fail "pg_start_extra: invalid server name \"$name\" (use [a-z0-9_]+)"
    shift
    [ -z "${PGTEST_EXTRA[$name]:-}" ] || fail "pg_start_extra: server \"$name\" already exists"
    dir=$(_pgtest_mktemp "walq-pg-$name")
    PGTEST_EXTRA[$name]=$dir
    port=$(_pgtest_free_port)
    _pgtest_initdb "$dir" "$port" "$@"
    var=${name^^}
    printf -v "PGTEST_CONN_$var" '%s' "host=$dir port=$port user=postgres dbname=postgres"
    printf -v "PGTEST_DIR_$var" '%s' "$dir"
    _pgtest_watchdog "$dir"
    _pg_ctl_start_in "$dir"
}

# pg_start_standby NAME [postgresql.conf lines...]: a hot standby of the
# first server, cloned with pg_basebackup (or, on servers without it, a copy
# between pg_backup_start and pg_backup_stop) and streaming from it through
# a physical slot called NAME, with hot_standby_feedback on.  Sets the same
# variables as pg_start_extra.
pg_start_standby() {
    local name=${1:-} dir port var
    [[ $name =~ ^[a-z0-9_]+$ ]] ||
        fail "pg_start_standby: invalid server name \"$name\" (use [a-z0-9_]+)"
    shift
    [ -z "${PGTEST_EXTRA[$name]:-}" ] || fail "pg_start_standby: server \"$name\" already exists"
    dir=$(_pgtest_mktemp "walq-pg-$name")
    _pgtest_own "$dir"
    PGTEST_EXTRA[$name]=$dir
    port=$(_pgtest_free_port)
    _pgtest_watchdog "$dir"
    if [ -x "$PGTEST_CHROOT$PGTEST_SERVER_BINDIR/pg_basebackup" ]; then
        q "SELECT pg_create_physical_replication_slot('$name')" >/dev/null
        if ! _pg_as_in "$dir" "$PGTEST_SERVER_BINDIR/pg_basebackup" -D "$dir/data" -R -S "$name" \
            -X stream -h "$PGTEST_DIR" -p "$PGPORT" -U postgres >"$dir/basebackup.log" 2>&1; then
            cat "$dir/basebackup.log" >&2
            fail "pg_basebackup failed"
        fi
    else
        _pgtest_copy_backup "$dir" "$name"
    fi
    cat >>"$dir/data/postgresql.conf" <<EOF

# pgtest.sh: a hot standby of $PGTEST_DIR
unix_socket_directories = '$dir'
port = $port
hot_standby = on
hot_standby_feedback = on
EOF
    if [ $# -gt 0 ]; then
        printf '%s\n' "$@" >>"$dir/data/postgresql.conf"
    fi
    var=${name^^}
    printf -v "PGTEST_CONN_$var" '%s' "host=$dir port=$port user=postgres dbname=postgres"
    printf -v "PGTEST_DIR_$var" '%s' "$dir"
    _pg_ctl_start_in "$dir"
}

# _pgtest_copy_backup DIR NAME: what pg_basebackup -R -S NAME -X none would
# do, for servers without it (npm's): a copy of the data directory between
# pg_backup_start and pg_backup_stop, in one session of the primary.  The
# standby streams the WAL from the backup's start through the physical slot
# NAME, reserved before the backup starts.
_pgtest_copy_backup() {
    local dir=$1 name=$2
    q "SELECT pg_create_physical_replication_slot('$name', true)" >/dev/null
    # tar's status 1 is "a file changed as it was read", which the WAL replay
    # from the backup's start repairs, as for any base backup.
    cat >"$dir/copy.sh" <<EOF
set -u
mkdir -m 0700 '$dir/data'
tar -C '$PGTEST_DATA' -cf - --exclude=./postmaster.pid --exclude=./postmaster.opts \\
    --exclude='./pg_wal/*' --exclude='./pg_replslot/*' --warning=none --ignore-failed-read . |
    tar -C '$dir/data' -xpf -
[ "\${PIPESTATUS[0]}" -le 1 ] && [ "\${PIPESTATUS[1]}" -eq 0 ] || echo "pgtest: the copy failed" >&2
EOF
    if ! pg_psql >"$dir/basebackup.log" 2>&1 <<EOF; then
SELECT pg_backup_start('pgtest $name', true);
\\! bash '$dir/copy.sh'
\\o '$dir/data/backup_label'
SELECT labelfile FROM pg_backup_stop(false);
EOF
        cat "$dir/basebackup.log" >&2
        fail "the backup for standby \"$name\" failed"
    fi
    if grep -q 'pgtest: the copy failed' "$dir/basebackup.log"; then
        cat "$dir/basebackup.log" >&2
        fail "the copy of the primary for standby \"$name\" failed"
    fi
    touch "$dir/data/standby.signal"
    cat >>"$dir/data/postgresql.auto.conf" <<EOF
primary_conninfo = 'host=$PGTEST_DIR port=$PGPORT user=postgres application_name=$name'
primary_slot_name = '$name'
EOF
    if _pgtest_is_root; then
        chown postgres:postgres "$dir/data" "$dir/data/backup_label" "$dir/data/standby.signal"
    fi
}

# The directory of the extra server NAME, in _PGTEST_XDIR (not printed: a
# failure in a command substitution would not end the test).
_pgtest_extra() {
    _PGTEST_XDIR=${PGTEST_EXTRA[${1:-}]:-}
    [ -n "$_PGTEST_XDIR" ] || fail "no extra server named \"${1:-}\" (start it with pg_start_extra)"
}

pg_stop_extra() {
    _pgtest_extra "$1"
    _pg_as_in "$_PGTEST_XDIR" "$PGTEST_SERVER_BINDIR/pg_ctl" -D "$_PGTEST_XDIR/data" -m fast \
        -w -t 60 stop >/dev/null
}

# pg_restart_extra NAME / pg_crash_extra NAME: a fast / an immediate stop of
# the extra server NAME, then a start.
pg_restart_extra() {
    pg_stop_extra "$1"
    _pg_ctl_start_in "$_PGTEST_XDIR"
}

pg_crash_extra() {
    _pgtest_extra "$1"
    _pg_as_in "$_PGTEST_XDIR" "$PGTEST_SERVER_BINDIR/pg_ctl" -D "$_PGTEST_XDIR/data" \
        -m immediate -w -t 60 stop >/dev/null
    _pg_ctl_start_in "$_PGTEST_XDIR"
}

# pg_promote NAME: promotes the standby NAME and waits until it is out of
# recovery.  The first server, if still up, goes on as a primary of its own.
pg_promote() {
    _pgtest_extra "$1"
    _pg_as_in "$_PGTEST_XDIR" "$PGTEST_SERVER_BINDIR/pg_ctl" -D "$_PGTEST_XDIR/data" -w -t 60 \
        promote >/dev/null
    wait_for "[ \"\$(q_on $1 'SELECT pg_is_in_recovery()')\" = f ]" 60 "standby $1 to be promoted"
}

# pg_psql_on NAME ARGS...: pg_psql against the extra server NAME.
pg_psql_on() {
    local var
    _pgtest_extra "$1"
    var=PGTEST_CONN_${1^^}
    shift
    pg_psql -d "${!var}" "$@"
}

# q_on NAME SQL: q against the extra server NAME.
q_on() {
    pg_psql_on "$1" -c "$2"
}

# If this script is killed outright (kill -9, a test runner's timeout), its
# EXIT trap never runs.  A watchdog outside its process tree then stops the
# server in DIR, kills what `bg` started and removes the directories.  Each
# server has its own watchdog; what they share they may both do.
# _pgtest_watchdog DIR
_pgtest_watchdog() {
    local dir=$1
    (
        # shellcheck disable=SC2016  # expanded by the watchdog's own shell
        setsid bash -c "$(declare -f _pgtest_is_root _pg_as_in _pgtest_rmtemp)"'
            parent=$1 dir=$2 work=$3 bindir=$4 keep=$5
            while kill -0 "$parent" 2>/dev/null; do sleep 1; done
            if [ -f "$work/.sessions" ]; then
                while read -r s; do
                    kill -KILL "$s"; pkill -KILL -s "$s"
                done <"$work/.sessions"
            fi
            if [ -f "$dir/data/postmaster.pid" ]; then
                _pg_as_in "$dir" "$bindir/pg_ctl" -D "$dir/data" -m immediate -w stop
            fi
            [ "$keep" = 1 ] || _pgtest_rmtemp "$dir" "$work"
        ' pgtest-watchdog "$$" "$dir" "$WORK" "$PGTEST_SERVER_BINDIR" "${PGTEST_KEEP:-0}" \
            </dev/null >/dev/null 2>&1 &
    )
}

# pg_conf LINE...: appends settings; they apply at the next (re)start.
pg_conf() {
    printf '%s\n' "$@" >>"$PGTEST_DATA/postgresql.conf"
}

_pg_ctl_start() {
    _pg_ctl_start_in "$PGTEST_DIR"
}

_pg_ctl_start_in() {
    local dir=$1
    if ! _pg_as_in "$dir" "$PGTEST_SERVER_BINDIR/pg_ctl" -D "$dir/data" -l "$dir/server.log" \
        -w -t 60 start >/dev/null; then
        tail -n 30 "$dir/server.log" >&2 || true
        fail "the server did not start"
    fi
}

pg_stop() {
    [ -n "$PGTEST_DATA" ] || return 0
    _pg_as "$PGTEST_SERVER_BINDIR/pg_ctl" -D "$PGTEST_DATA" -m fast -w -t 60 stop >/dev/null
}

pg_restart() {
    _pg_as "$PGTEST_SERVER_BINDIR/pg_ctl" -D "$PGTEST_DATA" -m fast -w -t 60 stop >/dev/null
    _pg_ctl_start
}

# An immediate stop is PostgreSQL's crash: no shutdown checkpoint, crash
# recovery at the next start.
pg_crash() {
    _pg_as "$PGTEST_SERVER_BINDIR/pg_ctl" -D "$PGTEST_DATA" -m immediate -w -t 60 stop >/dev/null
    _pg_ctl_start
}

pg_psql() {
    "$PGTEST_BINDIR/psql" -X -At -q -v ON_ERROR_STOP=1 "$@"
}

# q SQL: the result of one statement, rows on lines, columns separated by |.
q() {
    pg_psql -c "$1"
}

# pg_lock TABLE SECONDS: a session of its own holds an ACCESS EXCLUSIVE lock
# on TABLE for SECONDS at the most; returns once the lock is granted.
# pg_unlock ends that session.
pg_lock() {
    bg "$PGTEST_BINDIR/psql" -X -q -c "BEGIN; LOCK $1 IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep($2)"
    PGTEST_LOCK_PID=$BG_PID
    wait_for "[ \"\$(q \"SELECT count(*) FROM pg_locks WHERE relation = '$1'::regclass
                          AND mode = 'AccessExclusiveLock' AND granted\")\" = 1 ]" 10 "the lock on $1"
}
pg_unlock() {
    kill "$PGTEST_LOCK_PID" 2>/dev/null || true
    q "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
        WHERE query LIKE 'BEGIN; LOCK %' AND pid <> pg_backend_pid()" >/dev/null
}

_pgtest_cleanup() {
    local rc=$? name dir
    set +e
    trap - ERR
    if [ "$rc" -ne 0 ] && [ "$PGTEST_SKIPPED" -eq 0 ]; then
        [ "$PGTEST_FAILED" -eq 1 ] || echo "FAIL: ${TEST_NAME}: exited with status $rc" >&2
        if [ -n "$PGTEST_DIR" ] && [ -f "$PGTEST_DIR/server.log" ]; then
            echo "--- last lines of the server log ---" >&2
            tail -n 40 "$PGTEST_DIR/server.log" >&2
        fi
        for name in "${!PGTEST_EXTRA[@]}"; do
            if [ -f "${PGTEST_EXTRA[$name]}/server.log" ]; then
                echo "--- last lines of the log of server \"$name\" ---" >&2
                tail -n 40 "${PGTEST_EXTRA[$name]}/server.log" >&2
            fi
        done
    fi
    # Handlers may sit in process groups of their own; the session holds
    # them all.  (stderr is closed here so that bash's "Killed" notices stay
    # out of the output.)
    {
        local p
        for p in "${PGTEST_SESSIONS[@]+"${PGTEST_SESSIONS[@]}"}"; do
            kill -KILL "$p"
            pkill -KILL -s "$p"
        done
        if [ -n "$PGTEST_DATA" ] && [ -f "$PGTEST_DATA/postmaster.pid" ]; then
            _pg_as "$PGTEST_SERVER_BINDIR/pg_ctl" -D "$PGTEST_DATA" -m immediate -w -t 30 \
                stop >/dev/null
        fi
        for name in "${!PGTEST_EXTRA[@]}"; do
            dir=${PGTEST_EXTRA[$name]}
            if [ -f "$dir/data/postmaster.pid" ]; then
                _pg_as_in "$dir" "$PGTEST_SERVER_BINDIR/pg_ctl" -D "$dir/data" -m immediate -w -t 30 \
                    stop >/dev/null
            fi
        done
    } 2>/dev/null
    if [ "${PGTEST_KEEP:-0}" = 1 ]; then
        echo "kept: $WORK ${PGTEST_DIR} ${PGTEST_EXTRA[*]}" >&2
    else
        _pgtest_rmtemp "$PGTEST_DIR" "${PGTEST_EXTRA[@]+"${PGTEST_EXTRA[@]}"}" "$WORK"
    fi
    exit "$rc"
}

_pgtest_err() {
    echo "${TEST_NAME}: line $1: command failed (status $2): $3" >&2
}

trap _pgtest_cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap '_pgtest_err "$LINENO" "$?" "$BASH_COMMAND"' ERR

# ---- walq helpers ------------------------------------------------------

# walq_timeout SECS ARGS...: walq with a deadline, so that a hang fails the
# test instead of stalling the suite (status 124 when it expires).
walq_timeout() {
    local secs=$1
    shift
    timeout -k 5 "$secs" "$WALQ_BIN" "$@"
}

# handler NAME <<'EOF' ... EOF: writes an executable /bin/sh handler into
# $WORK and prints its path.
handler() {
    local path=$WORK/$1
    {
        echo '#!/bin/sh'
        cat
    } >"$path"
    chmod 0755 "$path"
    echo "$path"
}

# publish_sql QUEUE N [MAX_ATTEMPTS]: N jobs {"n": i} in one transaction.
publish_sql() {
    local queue=$1 n=$2 max=${3:-25}
    q "INSERT INTO walq.jobs (queue, payload, max_attempts)
       SELECT '$queue', jsonb_build_object('n', g), $max FROM generate_series(1, $n) g" >/dev/null
}

# recorded_sql GROUP: a query of every outcome GROUP recorded, one row
# (job_id, status) per record: its rows in walq.outcomes and each id of its
# batches in walq.outcome_batches.  A job recorded twice shows twice.
recorded_sql() {
    cat <<SQL
SELECT o.job_id, o.status FROM walq.outcomes o WHERE o.group_name = '$1'
UNION ALL
SELECT unnest(b.job_ids), 'done' FROM walq.outcome_batches b WHERE b.group_name = '$1'
SQL
}

# assert_all_done GROUP QUEUE_REGEX N: the group recorded exactly one
# outcome for each of the N jobs of the matching queues, all done, and
# nothing for other jobs.
assert_all_done() {
    local group=$1 queues=$2 n=$3 res
    res=$(q "SELECT count(*), count(DISTINCT r.job_id),
                    count(*) FILTER (WHERE r.status = 'done'),
                    count(*) FILTER (WHERE j.queue !~ '$queues' OR j.id IS NULL)
               FROM ($(recorded_sql "$group")) r LEFT JOIN walq.jobs j ON j.id = r.job_id")
    assert_eq "$res" "$n|$n|$n|0" "group $group: $n outcomes, one per job, all done, none foreign"
    res=$(q "SELECT count(*) FROM walq.jobs j WHERE j.queue ~ '$queues'
                AND j.id NOT IN (SELECT job_id FROM ($(recorded_sql "$group")) r)")
    assert_eq "$res" 0 "group $group: no job of its queues without an outcome"
}

# done_count GROUP: jobs the group recorded done.
done_count() {
    q "SELECT count(*) FROM ($(recorded_sql "$1")) r WHERE r.status = 'done'"
}

# slot_active SLOT: succeeds when a walsender is streaming from the slot.
slot_active() {
    [ "$(q "SELECT coalesce(bool_or(active), false) FROM pg_replication_slots
             WHERE slot_name = '$1'")" = t ]
}
