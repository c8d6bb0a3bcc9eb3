#!/usr/bin/env bash
# Bounded connects (src/db.c): a server whose packets are dropped makes walq
# give up after connect_timeout (10 s unless the connection string or
# PGCONNECT_TIMEOUT says otherwise) with a message that names the server and
# the fix and shows no password, instead of hanging for the kernel's two
# minutes of SYN retries.
#
# The black hole is an address in a network namespace of the test's own,
# behind a veth pair and a permanent neighbour entry: every packet to it goes
# out and nothing ever answers.  Without the rights for a namespace (not
# root), a local listener whose backlog is full stands in for it.
# shellcheck source=SCRIPTDIR/../lib/pgtest.sh
. "$(dirname "$0")/../lib/pgtest.sh"
require_walq

ns=walqct$$
addr=198.51.100.1
port=5432
run=()
if [ "$(id -u)" -eq 0 ] && ip netns add "$ns" 2>/dev/null; then
    trap 'rc=$?; ip netns del "$ns" 2>/dev/null; (exit $rc); _pgtest_cleanup' EXIT
    ip netns exec "$ns" sh -e -c "
        ip link set lo up
        ip link add v0 type veth peer name v1
        ip link set v0 up
        ip link set v1 up
        ip addr add 198.51.100.2/24 dev v0
        ip neigh add $addr lladdr 02:00:00:00:00:01 dev v0 nud permanent" ||
        fail "could not set up the network namespace $ns"
    run=(ip netns exec "$ns")
    echo "black hole: $addr:$port in network namespace $ns"
else
    command -v python3 >/dev/null || fail "python3 is needed for the black hole without a netns"
    addr=127.0.0.1
    python3 -c '
import socket, sys, time
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen(0)
print(s.getsockname()[1], flush=True)
# Fill the backlog: later connections are never answered.
held = []
for _ in range(4):
    c = socket.socket()
    c.setblocking(False)
    try:
        c.connect(s.getsockname())
    except BlockingIOError:
        pass
    held.append(c)
time.sleep(600)
' >"$WORK/port" &
    PGTEST_PIDS+=("$!")
    PGTEST_SESSIONS+=("$!")
    wait_for '[ -s "$WORK/port" ]' 10 "the listener's port"
    port=$(cat "$WORK/port")
    echo "black hole: a full backlog on $addr:$port"
fi

# connect CONNINFO: walq init against it, timed; CAP_* and elapsed.
connect() {
    local t0=$SECONDS
    capture "${run[@]}" timeout -k 5 60 "$WALQ_BIN" init --dbname "$1"
    elapsed=$((SECONDS - t0))
}

# 1. The default: 10 s, then a message that names the server and the fix.
unset PGCONNECT_TIMEOUT
connect "host=$addr port=$port user=u password=hunter2 dbname=d"
[ "$CAP_RC" -ne 0 ] || fail "walq init connected to a black hole"
[ "$CAP_RC" -ne 124 ] || fail "walq init hung until timeout(1) killed it"
[ "$elapsed" -ge 9 ] && [ "$elapsed" -le 14 ] ||
    fail "the connect ended after ${elapsed}s, not about 10 s: $CAP_ERR"
pass "the connect gave up after ${elapsed}s"
assert_match "$CAP_ERR" \
    "could not connect to \"host=$addr port=$port user=u password=\\*{8} dbname=d\": .*timeout expired" \
    "the message names the server and says it timed out"
assert_match "$CAP_ERR" 'HINT: +Check that the server is running and reachable from here' \
    "the hint says what to check"
if grep -q hunter2 <<<"$CAP_ERR"; then
    fail "the password is in the message: $CAP_ERR"
fi
pass "no password in the message"

# 2. The connection string's connect_timeout wins.
connect "host=$addr port=$port dbname=d connect_timeout=2"
[ "$CAP_RC" -ne 0 ] && [ "$CAP_RC" -ne 124 ] || fail "walq init: status $CAP_RC"
[ "$elapsed" -ge 1 ] && [ "$elapsed" -le 5 ] ||
    fail "connect_timeout=2: the connect ended after ${elapsed}s: $CAP_ERR"
pass "connect_timeout=2 in the connection string: gave up after ${elapsed}s"

# 3. So does PGCONNECT_TIMEOUT, as libpq reads it.
PGCONNECT_TIMEOUT=3 connect "postgresql://u:hunter2@$addr:$port/d"
[ "$CAP_RC" -ne 0 ] && [ "$CAP_RC" -ne 124 ] || fail "walq init: status $CAP_RC"
[ "$elapsed" -ge 2 ] && [ "$elapsed" -le 6 ] ||
    fail "PGCONNECT_TIMEOUT=3: the connect ended after ${elapsed}s: $CAP_ERR"
pass "PGCONNECT_TIMEOUT=3: gave up after ${elapsed}s"
assert_match "$CAP_ERR" "could not connect to \"host=$addr port=$port user=u password=\\*{8} dbname=d\"" \
    "a URI's password is masked too (shown as libpq reads it)"
if grep -q hunter2 <<<"$CAP_ERR"; then
    fail "the URI's password is in the message: $CAP_ERR"
fi
pass "all"
