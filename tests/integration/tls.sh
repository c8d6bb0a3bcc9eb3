#!/usr/bin/env bash
# shellcheck disable=SC2016  # wait_for evals its condition later
# TLS, tested (issue 13).  openssl makes a CA, a server certificate for the
# host name localhost signed by it, and a second CA that signed nothing.  The
# test server listens on 127.0.0.1 (loopback only) with ssl = on, and its
# pg_hba.conf takes TCP connections with TLS alone.  Then:
#   - walq init, consume (jobs run and are acked), audit and replica setup
#     work with sslmode=verify-full sslrootcert=CA host=localhost, over TLS
#     (pg_stat_ssl says so), and replica setup carries the TLS settings, from
#     --primary or from PGSSLMODE and PGSSLROOTCERT, into the subscription,
#     whose own connection to the primary is TLS too;
#   - a wrong CA, a host name the certificate does not name (host=127.0.0.1,
#     or a name of hostaddr's), a missing CA file and a server without TLS
#     fail, with an error that names TLS and the fix, and no password.
# shellcheck source=SCRIPTDIR/../lib/pgtest.sh
. "$(dirname "$0")/../lib/pgtest.sh"
require_walq
command -v openssl >/dev/null || pgtest_skip "openssl is not installed (tests/setup-debian.sh installs it)"

SECRET=SuperSecret42
T=$WORK/tls
mkdir -p "$T"
ossl() { openssl "$@" >>"$T/openssl.log" 2>&1 || fail "openssl $1 failed: $(tail -n 5 "$T/openssl.log")"; }
ossl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=walq test CA" -keyout "$T/ca.key" -out "$T/ca.crt"
ossl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=walq wrong CA" -keyout "$T/wrong.key" \
    -out "$T/wrong-ca.crt"
ossl req -newkey rsa:2048 -nodes -subj "/CN=localhost" -keyout "$T/server.key" -out "$T/server.csr"
printf 'subjectAltName = DNS:localhost\nbasicConstraints = CA:FALSE\n' >"$T/ext.cnf"
ossl x509 -req -in "$T/server.csr" -CA "$T/ca.crt" -CAkey "$T/ca.key" -CAcreateserial -days 2 \
    -extfile "$T/ext.cnf" -out "$T/server.crt"
chmod 0600 "$T/server.key"
chmod 0644 "$T/ca.crt" "$T/wrong-ca.crt" "$T/server.crt"
_pgtest_is_root && chown postgres:postgres "$T/server.key" "$T/server.crt"

pg_start "listen_addresses = '127.0.0.1'" "ssl = on" "ssl_cert_file = '$T/server.crt'" \
    "ssl_key_file = '$T/server.key'"
# TCP only with TLS; the unix socket (the test's own psql) stays as it was.
{
    echo "hostssl all all 127.0.0.1/32 trust"
    echo "hostssl replication all 127.0.0.1/32 trust"
    echo "hostnossl all all 0.0.0.0/0 reject"
    echo "hostnossl replication all 0.0.0.0/0 reject"
    cat "$PGTEST_DATA/pg_hba.conf"
} >"$WORK/hba" && cat "$WORK/hba" >"$PGTEST_DATA/pg_hba.conf"
q "SELECT pg_reload_conf()" >/dev/null
sleep 0.5

TCP="port=$PGPORT user=postgres dbname=postgres connect_timeout=5"
GOOD="host=localhost $TCP sslmode=verify-full sslrootcert=$T/ca.crt"

capture walq init --dbname "$GOOD"
assert_eq "$CAP_RC" 0 "walq init with sslmode=verify-full ($CAP_ERR)"

# ---- consume, with its acks, over verified TLS ------------------------
h=$(handler ok.sh <<'EOF'
cat >/dev/null
EOF
)
q "INSERT INTO walq.jobs (queue, payload) SELECT 'tq', jsonb_build_object('n', g) FROM generate_series(1, 20) g" >/dev/null
bg "$WALQ_BIN" consume --group tg --queue tq --dbname "$GOOD" -- "$h" 2>"$WORK/consume.log"
pid=$BG_PID
wait_for '[ "$(done_count tg)" -eq 20 ]' 60 "20 jobs done through a TLS consumer"
assert_eq "$(q "SELECT count(*) FILTER (WHERE s.ssl), count(*) FROM pg_stat_activity a
                 JOIN pg_stat_ssl s USING (pid) WHERE a.application_name LIKE 'walq consume%'")" "2|2" \
    "the consumer's two connections (slot and acks) are TLS"
kill -TERM "$pid"
bg_wait "$pid" 30
assert_eq "$BG_RC" 0 "the TLS consumer stops cleanly"
assert_all_done tg '^tq$' 20

# ---- audit ------------------------------------------------------------
capture walq_timeout 60 audit --source "$GOOD" --group ta --output "$WORK/audit.jsonl" --drain
assert_eq "$CAP_RC" 0 "walq audit over verified TLS makes its slot ($CAP_ERR)"
q "SELECT walq.publish('audited', '{\"tls\": true}')" >/dev/null
capture walq_timeout 60 audit --source "$GOOD" --group ta --output "$WORK/audit.jsonl" --drain
assert_eq "$CAP_RC" 0 "walq audit over verified TLS drains ($CAP_ERR)"
assert_match "$(cat "$WORK/audit.jsonl")" '"queue":"audited"' "the audit wrote the job published meanwhile"

# ---- replica setup: the subscription carries the TLS settings ---------
pg_start_extra replica
capture walq replica setup --primary "$GOOD" --source "$PGTEST_CONN_REPLICA"
assert_eq "$CAP_RC" 0 "walq replica setup with sslmode=verify-full ($CAP_ERR)"
sub=$(q_on replica "SELECT subconninfo FROM pg_subscription WHERE subname = 'walqrepl_main'")
assert_match "$sub" "sslmode='verify-full'" "the subscription has sslmode=verify-full"
assert_match "$sub" "sslrootcert='$T/ca.crt'" "the subscription has the CA file"
wait_for '[ "$(q "SELECT count(*) FROM pg_stat_replication r JOIN pg_stat_ssl s USING (pid)
                  WHERE r.application_name = '"'walqrepl_main'"' AND s.ssl")" -ge 1 ]' 30 \
    "the subscription's walsender on the primary to be a TLS connection"
pass "the subscription connects to the primary over TLS"
capture walq replica teardown --primary "$GOOD" --source "$PGTEST_CONN_REPLICA"
assert_eq "$CAP_RC" 0 "walq replica teardown ($CAP_ERR)"
q_on replica "TRUNCATE walq.jobs, walq.commands" >/dev/null

# The TLS settings from the environment, a password from PGPASSWORD: the
# first travel into the subscription, the second does not.  A relative
# sslrootcert becomes absolute, for the source server's processes; a quote,
# a backslash and a space in it are quoted for the conninfo and for SQL.
odd="o'd\\ir x"
mkdir "$T/$odd"
cp "$T/ca.crt" "$T/$odd/ca.crt"
chmod 0755 "$T/$odd"
(
    cd "$T"
    PGSSLMODE=verify-full PGSSLROOTCERT="$odd/ca.crt" PGPASSWORD=$SECRET \
        "$WALQ_BIN" replica setup --primary "host=localhost $TCP" --source "$PGTEST_CONN_REPLICA"
) >"$WORK/setup2.out" 2>&1 || fail "replica setup with PGSSLMODE and PGSSLROOTCERT: $(cat "$WORK/setup2.out")"
pass "walq replica setup with PGSSLMODE=verify-full and PGSSLROOTCERT"
sub=$(q_on replica "SELECT subconninfo FROM pg_subscription WHERE subname = 'walqrepl_main'")
assert_match "$sub" "sslmode='verify-full'" "PGSSLMODE travelled into the subscription"
assert_eq "$(grep -oF "sslrootcert='$T/o\\'d\\\\ir x/ca.crt'" <<<"$sub" | wc -l)" 1 \
    "PGSSLROOTCERT travelled, made absolute, its quote and backslash escaped ($sub)"
wait_for '[ "$(q "SELECT count(*) FROM pg_stat_replication r JOIN pg_stat_ssl s USING (pid)
                  WHERE r.application_name = '"'walqrepl_main'"' AND s.ssl")" -ge 1 ]' 30 \
    "the subscription made from the environment to connect over TLS"
pass "the subscription reads that CA file and connects to the primary over TLS"
assert_eq "$(grep -c "$SECRET" <<<"$sub" || true)" 0 "PGPASSWORD did not go into pg_subscription"
assert_eq "$(grep -c "$SECRET" "$WORK/setup2.out" || true)" 0 "nor into the output"
capture walq replica teardown --primary "$GOOD" --source "$PGTEST_CONN_REPLICA"
assert_eq "$CAP_RC" 0 "walq replica teardown again"

# A subscription without verification is refused, over TCP too.
capture walq replica setup --primary "host=localhost $TCP sslmode=require password=$SECRET" \
    --source "$PGTEST_CONN_REPLICA"
assert_eq "$CAP_RC" 1 "replica setup with sslmode=require: refused"
assert_match "$CAP_ERR" 'sslmode "require", which does not verify the primary' "it names the sslmode"
assert_match "$CAP_ERR" '--allow-insecure-subscription' "and the flag"
assert_eq "$(grep -c "$SECRET" <<<"$CAP_ERR$CAP_OUT" || true)" 0 "and shows no password"

# ---- what fails, and says why -----------------------------------------
# check_fail NAME MSG_REGEX HINT_REGEX CONNINFO: walq status, consume and
# audit fail with CONNINFO (which carries a password), naming TLS and the fix.
check_fail() {
    local name=$1 msg=$2 hint=$3 conn="$4 password=$SECRET" cmd
    for cmd in status consume audit; do
        case $cmd in
        status) capture walq_timeout 30 status --dbname "$conn" ;;
        consume) capture walq_timeout 30 consume --group tg --queue tq --dbname "$conn" --drain -- "$h" ;;
        audit) capture walq_timeout 30 audit --source "$conn" --group ta --output "$WORK/x.jsonl" --drain ;;
        esac
        if [ "$CAP_RC" -eq 0 ] || [ "$CAP_RC" -eq 124 ]; then
            fail "$name: walq $cmd exited $CAP_RC: $CAP_ERR"
        fi
        assert_match "$CAP_ERR" "$msg" "$name: walq $cmd says what failed"
        assert_match "$CAP_ERR" "HINT:  TLS: $hint" "$name: walq $cmd names TLS and the fix"
        assert_eq "$(grep -c "$SECRET" <<<"$CAP_ERR$CAP_OUT" || true)" 0 "$name: walq $cmd shows no password"
    done
}
check_fail "a wrong CA" 'certificate verify failed' "the server's certificate is not signed by a CA in sslrootcert" \
    "host=localhost $TCP sslmode=verify-full sslrootcert=$T/wrong-ca.crt"
check_fail "host=127.0.0.1" 'server certificate for "localhost".* does not match host name "127.0.0.1"' \
    "with sslmode=verify-full the server's certificate must name the host" \
    "host=127.0.0.1 $TCP sslmode=verify-full sslrootcert=$T/ca.crt"
check_fail "another name with hostaddr" 'does not match host name "db.example.com"' \
    "with sslmode=verify-full the server's certificate must name the host" \
    "host=db.example.com hostaddr=127.0.0.1 $TCP sslmode=verify-full sslrootcert=$T/ca.crt"
check_fail "a missing CA file" 'root certificate file ".*nosuch.crt" does not exist' \
    "sslmode verify-ca and verify-full need the CA's certificate" \
    "host=localhost $TCP sslmode=verify-full sslrootcert=$T/nosuch.crt"
capture walq_timeout 30 replica setup --primary "host=localhost $TCP sslmode=verify-full sslrootcert=$T/wrong-ca.crt password=$SECRET" \
    --source "$PGTEST_CONN_REPLICA"
assert_eq "$CAP_RC" 1 "replica setup with a wrong CA fails"
assert_match "$CAP_ERR" "certificate verify failed" "replica setup says the certificate was refused"
assert_match "$CAP_ERR" "HINT:  TLS: " "replica setup names TLS and the fix"
assert_eq "$(grep -c "$SECRET" <<<"$CAP_ERR$CAP_OUT" || true)" 0 "replica setup shows no password"
# hostaddr with the right name verifies.
capture walq status --dbname "host=localhost hostaddr=127.0.0.1 $TCP sslmode=verify-full sslrootcert=$T/ca.crt"
assert_eq "$CAP_RC" 0 "host=localhost hostaddr=127.0.0.1 verifies ($CAP_ERR)"

# A server without TLS: the replica, listening on loopback for this.
pg_stop_extra replica
echo "listen_addresses = '127.0.0.1'" >>"$PGTEST_DIR_REPLICA/data/postgresql.conf"
_pg_ctl_start_in "$PGTEST_DIR_REPLICA"
rport=$(q_on replica "SHOW port")
capture walq_timeout 30 status --dbname "host=localhost port=$rport user=postgres dbname=postgres sslmode=verify-full sslrootcert=$T/ca.crt password=$SECRET"
[ "$CAP_RC" -ne 0 ] || fail "walq status against a server without TLS exited 0"
assert_match "$CAP_ERR" 'server does not support SSL' "a server without TLS: walq status says so"
assert_match "$CAP_ERR" 'HINT:  TLS: the server does not take TLS connections' "and how to fix it"
assert_eq "$(grep -c "$SECRET" <<<"$CAP_ERR$CAP_OUT" || true)" 0 "and shows no password"
