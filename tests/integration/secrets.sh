#!/usr/bin/env bash
# shellcheck disable=SC2016,SC2034  # wait_for evals its condition later; the conninfos are read as ${!c}
# No secret in any output (issue 13).  The test server takes bob on
# 127.0.0.1 (loopback only) with a scram-sha-256 password, SuperSecret42.
#   1. The password need not be in argv: PGPASSWORD, a service file
#      (PGSERVICE with PGSERVICEFILE) and a password file (PGPASSFILE) each
#      let a consumer run its group.
#   2. Consumers whose conninfo holds the password (password=..., and a URI
#      with bob:SuperSecret42@) live through a 10-second stop of the server,
#      logging at debug level: the password is nowhere in what they print,
#      and they carry on and drain.
#   3. Every command that fails with a bad or unreachable conninfo holding
#      the password prints no password.
# shellcheck source=SCRIPTDIR/../lib/pgtest.sh
. "$(dirname "$0")/../lib/pgtest.sh"
require_walq
SECRET=SuperSecret42
ENCODED=Super%53ecret42
pg_start "listen_addresses = '127.0.0.1'"
{
    echo "host all bob 127.0.0.1/32 scram-sha-256"
    echo "host replication bob 127.0.0.1/32 scram-sha-256"
    cat "$PGTEST_DATA/pg_hba.conf"
} >"$WORK/hba" && cat "$WORK/hba" >"$PGTEST_DATA/pg_hba.conf"
q "SELECT pg_reload_conf()" >/dev/null
q "CREATE ROLE bob LOGIN SUPERUSER REPLICATION PASSWORD '$SECRET'" >/dev/null
walq init >/dev/null 2>&1
sleep 0.5

BOB="host=127.0.0.1 port=$PGPORT user=bob dbname=postgres"
# no_secret NAME TEXT: the password is not in TEXT, nor its %-encoded form of the URIs below.
no_secret() {
    if grep -q -e "$SECRET" -e "$ENCODED" <<<"$2"; then
        fail "$1: the password is in the output: $(grep -e "$SECRET" -e "$ENCODED" <<<"$2" | head -n 3)"
    fi
    pass "$1: no password in the output"
}
h=$(handler ok.sh <<'EOF'
cat >/dev/null
EOF
)
# Without the libpq variables pgtest.sh exported: only what each case gives.
BARE=(env -u PGHOST -u PGPORT -u PGUSER -u PGDATABASE -u PGPASSWORD -u PGSERVICE)

# ---- 1. the password from the environment and from files ---------------
capture "${BARE[@]}" "$WALQ_BIN" status --dbname "$BOB"
[ "$CAP_RC" -ne 0 ] || fail "bob connected without a password: the test's pg_hba.conf is not in force"
assert_match "$CAP_ERR" 'no password supplied|password authentication failed' \
    "without a password bob is refused: the server asks for one"

# consume_with NAME GROUP [env assignments...] -- [consume options...]
consume_with() {
    local name=$1 group=$2 envs=()
    shift 2
    while [ "$1" != -- ]; do
        envs+=("$1")
        shift
    done
    shift
    publish_sql "$group" 5
    capture "${BARE[@]}" "${envs[@]}" timeout -k 5 60 "$WALQ_BIN" consume --group "$group" --queue "$group" --drain "$@" -- "$h"
    [ "$CAP_RC" -eq 0 ] || fail "$name: consume exited $CAP_RC: $CAP_ERR"
    assert_all_done "$group" "^$group\$" 5
    no_secret "$name" "$CAP_OUT$CAP_ERR"
}
consume_with "PGPASSWORD" g_env PGPASSWORD=$SECRET -- --dbname "$BOB"
cat >"$WORK/pg_service.conf" <<EOF
[walqsvc]
host=127.0.0.1
port=$PGPORT
user=bob
dbname=postgres
password=$SECRET
EOF
chmod 0600 "$WORK/pg_service.conf"
consume_with "PGSERVICE and PGSERVICEFILE" g_svc PGSERVICEFILE="$WORK/pg_service.conf" PGSERVICE=walqsvc --
consume_with "service= in --dbname" g_svc2 PGSERVICEFILE="$WORK/pg_service.conf" -- --dbname "service=walqsvc"
echo "127.0.0.1:$PGPORT:*:bob:$SECRET" >"$WORK/pgpass"
chmod 0600 "$WORK/pgpass"
consume_with "PGPASSFILE" g_pass PGPASSFILE="$WORK/pgpass" -- --dbname "$BOB"
assert_eq "$(q "SELECT count(DISTINCT usename) FROM pg_stat_activity WHERE usename = 'bob'")" 0 \
    "the consumers are gone"

# ---- 2. a 10-second outage ---------------------------------------------
KW="$BOB password=$SECRET"
URI="postgresql://bob:$SECRET@127.0.0.1:$PGPORT/postgres"
publish_sql o_kw 10
publish_sql o_uri 10
bg "${BARE[@]}" "$WALQ_BIN" consume --verbose --group o_kw --queue o_kw --dbname "$KW" -- "$h" \
    >"$WORK/kw.out" 2>"$WORK/kw.err"
kw=$BG_PID
bg "${BARE[@]}" "$WALQ_BIN" consume --verbose --group o_uri --queue o_uri --source "$URI" --primary "$URI" -- "$h" \
    >"$WORK/uri.out" 2>"$WORK/uri.err"
uri=$BG_PID
wait_for '[ "$(done_count o_kw)" -eq 10 ] && [ "$(done_count o_uri)" -eq 10 ]' 60 "the first 20 jobs"
pg_stop
sleep 10
_pg_ctl_start
publish_sql o_kw 10
publish_sql o_uri 10
wait_for '[ "$(done_count o_kw)" -eq 20 ] && [ "$(done_count o_uri)" -eq 20 ]' 90 \
    "both consumers to carry on after the outage"
for p in "$kw" "$uri"; do
    kill -0 "$p" 2>/dev/null || fail "a consumer exited during the outage"
    kill -TERM "$p"
    bg_wait "$p" 30
    assert_eq "$BG_RC" 0 "consumer $p stops cleanly after the outage"
done
assert_all_done o_kw '^o_kw$' 20
assert_all_done o_uri '^o_uri$' 20
for f in kw uri; do
    log=$(cat "$WORK/$f.out" "$WORK/$f.err")
    # The outage shows in the log, or the test would prove nothing.
    assert_match "$log" 'WARNING:  .*(could not|lost|terminat|reconnect|retry|trying again)' \
        "consumer $f logged the outage"
    no_secret "consumer $f through a 10-second outage" "$log"
done

# ---- 3. failing commands -------------------------------------------------
DOWN="host=127.0.0.1 port=1 user=bob dbname=postgres password=$SECRET connect_timeout=3"
BADKW="host=127.0.0.1 port=1 user=bob password=$SECRET nosuchkey=1"
BADQUOTE="host=127.0.0.1 user=bob password='$SECRET"
URIDOWN="postgresql://bob:$SECRET@127.0.0.1:1/postgres?connect_timeout=3"
BADURI="postgresql://bob:$SECRET@127.0.0.1:1/postgres?nosuchkey=1"
WRONGPW="$BOB password=${SECRET}x"
URIWRONG="postgresql://bob:${SECRET}x@127.0.0.1:$PGPORT/postgres"
URIENC="postgresql://bob:$ENCODED@127.0.0.1:1/postgres?connect_timeout=3"
URIQUERY="postgresql://127.0.0.1:1/postgres?user=bob&password=$SECRET&nosuchkey=1"
# A connection string in dbname is read as one, by libpq and by walq's masking.
DBURI="dbname=postgresql://bob:$SECRET@127.0.0.1:1/postgres connect_timeout=3"
DBURIQ="dbname='postgresql://bob:$SECRET@127.0.0.1:1/postgres' connect_timeout=3"
DBKW="dbname='host=127.0.0.1 port=1 user=bob password=$SECRET' connect_timeout=3"
# A password keyword misspelt: libpq refuses the string, and walq shows none of it.
UPPERPW="host=127.0.0.1 port=1 user=bob PASSWORD=$SECRET"
PASSWD="host=127.0.0.1 port=1 user=bob passwd=$SECRET"
for c in DOWN BADKW BADQUOTE URIDOWN BADURI WRONGPW URIWRONG URIENC URIQUERY DBURI DBURIQ DBKW \
    UPPERPW PASSWD; do
    conn=${!c}
    for cmd in "status --dbname" "init --dbname" "publish q {} --dbname" "job show 1 --dbname" \
        "job list --dbname" "job retry 1 --dbname" "job cancel 1 --dbname" \
        "consume --group s --queue s --noop --drain --dbname" \
        "consume --group s --queue s --noop --drain --primary $BOB --source" \
        "audit --drain --output $WORK/a.jsonl --source" \
        "replica setup --allow-insecure-subscription --source $PGTEST_CONN --primary" \
        "replica setup --allow-insecure-subscription --primary $PGTEST_CONN --source" \
        "replica setup --primary"; do
        # shellcheck disable=SC2086  # the command's words
        capture "${BARE[@]}" timeout -k 5 60 "$WALQ_BIN" $cmd "$conn"
        [ "$CAP_RC" -ne 0 ] || fail "walq $cmd with $c exited 0"
        [ "$CAP_RC" -ne 124 ] || fail "walq $cmd with $c timed out"
        no_secret "walq $cmd <$c> (exit $CAP_RC)" "$CAP_OUT$CAP_ERR"
    done
done
