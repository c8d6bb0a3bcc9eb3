#!/usr/bin/env bash
# shellcheck disable=SC2016  # wait_for evals its condition later
# systemd's notify protocol, without systemd: NOTIFY_SOCKET names a unix
# datagram socket this test listens on, as systemd would for a unit of
# Type=notify.  walq consume says READY=1 once it streams, STATUS= lines with
# its state, jobs done and lag, and WATCHDOG=1 from its loop every quarter
# of WATCHDOG_USEC; a stopped process (SIGSTOP) stops the pings, a standby
# consumer is ready and says so, and walq audit does the same; the units'
# ExecStart lines run with their configuration files and notify.
# shellcheck source=SCRIPTDIR/../lib/pgtest.sh
. "$(dirname "$0")/../lib/pgtest.sh"
require_walq
pg_start
walq init

# listen NAME: a listener on $WORK/NAME.sock that writes each datagram as a
# JSON line {"t": monotonic seconds, "pid": sender, "msg": text} to
# $WORK/NAME.log.
cat >"$WORK/listen.py" <<'PY'
import json, os, socket, struct, sys, time
path, log = sys.argv[1], sys.argv[2]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(path)
s.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
with open(log, "a") as out:
    while True:
        msg, anc, _, _ = s.recvmsg(4096, socket.CMSG_SPACE(12))
        pid = 0
        for level, kind, data in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                pid = struct.unpack("iII", data[:12])[0]
        out.write(json.dumps({"t": time.monotonic(), "pid": pid,
                              "msg": msg.decode("utf-8", "replace")}) + "\n")
        out.flush()
PY
listen() {
    bg python3 "$WORK/listen.py" "$WORK/$1.sock" "$WORK/$1.log"
    wait_for "[ -S '$WORK/$1.sock' ]" 10 "the $1 listener"
}

# count NAME WORD [PID]: datagrams of NAME holding the line WORD (from PID).
count() {
    jq -r --arg w "$2" --arg p "${3:-}" \
        'select(($p == "" or (.pid | tostring) == $p) and (.msg | split("\n") | index($w) != null)) | .t' \
        "$WORK/$1.log" 2>/dev/null | wc -l
}

# last_status NAME: the last STATUS= NAME received.
last_status() {
    jq -r '.msg | split("\n")[] | select(startswith("STATUS=")) | .[7:]' "$WORK/$1.log" | tail -1
}

listen c
publish_sql sn 5
NOTIFY_SOCKET=$WORK/c.sock WATCHDOG_USEC=400000 bg "$WALQ_BIN" consume --group sn --queue sn --noop
pid=$BG_PID
wait_for '[ "$(count c READY=1)" -ge 1 ]' 30 "READY=1"
assert_eq "$(count c READY=1)" 1 "READY=1 comes once"
wait_for '[ "$(done_count sn)" -eq 5 ]' 30 "the 5 jobs done"
wait_for '[[ "$(last_status c)" == "streaming, 5 jobs done, 0 retried, 0 dead, lag 0 B" ]]' 20 \
    "STATUS says streaming, 5 jobs done and no lag"
assert_eq "$(jq -r 'select(.msg | test("READY=1")) | .pid' "$WORK/c.log")" "$pid" \
    "READY=1 comes from walq's own process"
ready_msg=$(jq -r 'select(.msg | test("READY=1")) | .msg' "$WORK/c.log")
assert_match "$ready_msg" '^STATUS=(streaming|reading the backlog)' \
    "READY=1 comes with a STATUS of streaming or reading the backlog: $ready_msg"
assert_match "$(jq -r '.msg' "$WORK/c.log" | head -1)" '^STATUS=starting, 0 jobs done' \
    "the first STATUS says starting"

# The watchdog: every 0.1 s (a quarter of 0.4 s), while the loop turns.
n0=$(count c WATCHDOG=1)
sleep 2
n1=$(count c WATCHDOG=1)
[ $((n1 - n0)) -ge 8 ] || fail "WATCHDOG=1 every 0.1 s: $((n1 - n0)) in 2 s"
[ $((n1 - n0)) -le 30 ] || fail "WATCHDOG=1 no more often than asked: $((n1 - n0)) in 2 s"
pass "WATCHDOG=1 $((n1 - n0)) times in 2 s of an idle consumer"
publish_sql sn 3
wait_for '[ "$(done_count sn)" -eq 8 ]' 30 "3 more jobs done"
wait_for '[[ "$(last_status c)" == "streaming, 8 jobs done, 0 retried, 0 dead, lag 0 B" ]]' 20 \
    "STATUS follows the jobs done"

# A stopped loop sends nothing: that is how systemd's watchdog finds a hung one.
kill -STOP "$pid"
sleep 0.3
n2=$(count c WATCHDOG=1)
sleep 1.5
n3=$(count c WATCHDOG=1)
assert_eq "$n3" "$n2" "no WATCHDOG=1 while the process is stopped"
kill -CONT "$pid"
wait_for '[ "$(count c WATCHDOG=1)" -ge $((n3 + 3)) ]' 10 "the pings come back with the process"
pass "the pings stop with the loop and come back with it"

# A second consumer of the group stands by: it is ready, and says why it waits.
listen s
NOTIFY_SOCKET=$WORK/s.sock WATCHDOG_USEC=400000 bg "$WALQ_BIN" consume --group sn --queue sn --noop
standby=$BG_PID
wait_for '[ "$(count s READY=1)" -ge 1 ]' 30 "the standby's READY=1"
assert_match "$(last_status s)" '^standing by, 0 jobs done' "the standby's STATUS says it stands by"
n4=$(count s WATCHDOG=1)
sleep 1
[ $(($(count s WATCHDOG=1) - n4)) -ge 4 ] || fail "a standby pings the watchdog while it waits"
pass "the standby pings the watchdog while it waits"

# SIGTERM: STOPPING=1, then exit 0; the standby takes over and streams.
kill -TERM "$pid"
bg_wait "$pid" 20
assert_eq "$BG_RC" 0 "SIGTERM: exit 0"
[ "$(count c STOPPING=1)" -ge 1 ] || fail "STOPPING=1 before the exit"
pass "STOPPING=1 before the exit"
wait_for '[[ "$(last_status s)" == streaming* ]]' 30 "the standby took over and streams"
publish_sql sn 2
wait_for '[ "$(done_count sn)" -eq 10 ]' 30 "the new holder does the next jobs"
kill -TERM "$standby"
bg_wait "$standby" 20

# The watchdog is the process's own: WATCHDOG_PID naming another process
# turns it off (as sd_watchdog_enabled(3) says), and READY still comes.
listen o
NOTIFY_SOCKET=$WORK/o.sock WATCHDOG_USEC=400000 WATCHDOG_PID=1 \
    bg "$WALQ_BIN" consume --group sn --queue sn --noop
other=$BG_PID
wait_for '[ "$(count o READY=1)" -ge 1 ]' 30 "READY=1 without a watchdog"
sleep 1
assert_eq "$(count o WATCHDOG=1)" 0 "no WATCHDOG=1 when WATCHDOG_PID is another process's"
kill -TERM "$other"
bg_wait "$other" 20

# The audit: ready once it streams, pinging, its STATUS counting changes.
listen a
NOTIFY_SOCKET=$WORK/a.sock WATCHDOG_USEC=400000 bg "$WALQ_BIN" audit --output "$WORK/audit.jsonl"
audit=$BG_PID
wait_for '[ "$(count a READY=1)" -ge 1 ]' 30 "the audit's READY=1"
publish_sql sn 1
wait_for '[[ "$(last_status a)" =~ ^streaming,\ [1-9][0-9]*\ changes\ written ]]' 30 \
    "the audit's STATUS counts what it wrote"
n5=$(count a WATCHDOG=1)
sleep 1
[ $(($(count a WATCHDOG=1) - n5)) -ge 4 ] || fail "the audit pings the watchdog"
kill -STOP "$audit"
sleep 0.3
n6=$(count a WATCHDOG=1)
sleep 1
assert_eq "$(count a WATCHDOG=1)" "$n6" "a stopped audit sends no WATCHDOG=1"
kill -CONT "$audit"
kill -TERM "$audit"
bg_wait "$audit" 20
assert_eq "$BG_RC" 0 "the audit exits 0 on SIGTERM"

# The units' own command lines, as systemd would run walq-consume@unitg and
# walq-audit@unitg: the program and /etc/walq pointed at this test's.
mkdir -p "$WORK/etc" "$WORK/state"
as_unit() {
    sed -n 's/^ExecStart=//p' "$WALQ_SOURCE_DIR/systemd/$1.in" |
        sed -e "s|@WALQ_BINDIR@/walq|$WALQ_BIN|" -e "s|/etc/walq/|$WORK/etc/|g" -e "s|%i|unitg|g"
}
cat >"$WORK/etc/unitg.conf" <<CONF
[consume]
group = unitg
queue = ug
handler = noop
CONF
cat >"$WORK/etc/audit-unitg.conf" <<CONF
[audit]
group = unitg
output = trail.jsonl
CONF
publish_sql ug 2
for unit in walq-consume@.service walq-audit@.service; do
    name=${unit%%@*}
    listen "$name"
    read -ra cmd <<<"$(as_unit "$unit")"
    (cd "$WORK/state" && NOTIFY_SOCKET=$WORK/$name.sock WATCHDOG_USEC=400000 bg "${cmd[@]}"
     echo "$BG_PID" >"$WORK/$name.pid")
    wait_for "[ \"\$(count $name READY=1)\" -ge 1 ]" 30 "READY=1 from $unit's ExecStart (${cmd[*]})"
    wait_for "[ \"\$(count $name WATCHDOG=1)\" -ge 3 ]" 10 "WATCHDOG=1 from $unit's ExecStart"
done
publish_sql ug 1
wait_for '[ "$(done_count unitg)" -eq 3 ]' 30 "walq-consume@unitg does the jobs of its file's queue"
wait_for '[ -s "$WORK/state/trail.jsonl" ]' 30 "walq-audit@unitg writes its trail in its working directory"
for name in walq-consume walq-audit; do
    kill -TERM "$(cat "$WORK/$name.pid")"
done
pass "the units' ExecStart lines run with their configuration files and notify"
