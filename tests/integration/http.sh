#!/usr/bin/env bash
# shellcheck disable=SC2016  # wait_for evals its condition later
# --http of walq consume: /metrics after a known workload agrees with SQL
# (every line parsed strictly as the text exposition format), /healthz and
# /readyz (503 for a consumer standing by, and once the primary is gone),
# the status page's SQL cut at its bound while a lock blocks it, and the
# refusals at start-up: a bad address, a port in use.  walq audit serves the
# same endpoints.
# shellcheck source=SCRIPTDIR/../lib/pgtest.sh
. "$(dirname "$0")/../lib/pgtest.sh"
require_walq
command -v curl >/dev/null || pgtest_skip "curl is not installed (tests/setup-debian.sh installs it)"
pg_start
walq init

PROMCHECK=$WALQ_SOURCE_DIR/tests/lib/promcheck.py
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
# get PATH PORT: the body, and the status code in $WORK/code.
get() {
    curl -s -o "$WORK/body" -w '%{http_code}' --max-time 10 "http://127.0.0.1:$2$1" >"$WORK/code" || echo 000 >"$WORK/code"
    cat "$WORK/body"
}
code() { cat "$WORK/code"; }
# scrape PORT: /metrics, checked line by line, canonical samples in $WORK/canon.
scrape() {
    get /metrics "$1" >"$WORK/scrape"
    assert_eq "$(code)" 200 "/metrics answers 200"
    python3 "$PROMCHECK" <"$WORK/scrape" >"$WORK/canon" ||
        fail "/metrics is not well-formed: $(head -c 2000 "$WORK/scrape")"
}
# metric 'NAME{LABELS}': the sample's value (labels sorted by name), or "".
metric() { awk -v k="$1" '$1 == k { print $2 }' "$WORK/canon"; }

# Queue a: every tenth job fails twice and is dead (max_attempts 2); every
# seventh asks for a retry once.  Queue b: every fifth asks for a retry
# once; the rest are done at once.  Each run is logged, to count them.
h=$(handler h.sh <<HANDLER
n=\$(sed 's/[^0-9]//g')
echo "\$WALQ_QUEUE \$WALQ_JOB_ID \$WALQ_ATTEMPT" >>"$WORK/runs.log"
if [ "\$WALQ_QUEUE" = a ] && [ \$((n % 10)) -eq 0 ]; then
    echo "job \$n: <b>boom</b> & \"quoted\"" >&2
    exit 1
fi
if [ "\$WALQ_ATTEMPT" -eq 1 ] && { [ "\$WALQ_QUEUE" = a ] && [ \$((n % 7)) -eq 0 ] ||
                                    [ "\$WALQ_QUEUE" = b ] && [ \$((n % 5)) -eq 0 ]; }; then
    exit 75
fi
exit 0
HANDLER
)
port=$(free_port)
opts=(--group hg --queue a --queue b --concurrency 4 --backoff-min 0.01 --backoff-max 0.05
      --status-interval 1 --ready-within 2)
bg "$WALQ_BIN" consume "${opts[@]}" --http "127.0.0.1:$port" -- "$h"
cons=$BG_PID
# Streaming first, so that the jobs come through the stream.
wait_for '[ "$(get /readyz "$port" >/dev/null; code)" = 200 ]' 30 "/readyz is 200 once streaming"
# Slow clients: requests that never end hold a thread each of the HTTP
# server, not the loop, and not the other requests.
for fd in 7 8 9; do
    eval "exec $fd<>/dev/tcp/127.0.0.1/$port"
    printf 'GET /metrics HTTP/1.1\r\nHost: x\r\n' >&"$fd"
done
publish_sql a 50 2
publish_sql b 30

final_sql="SELECT count(*) FROM walq.job_status WHERE consumer_group = 'hg'
             AND status IN ('done', 'dead')"
wait_for '[ "$(q "$final_sql")" -eq 80 ]' 60 "80 jobs with a final outcome"
wait_for '[ "$(get /readyz "$port"; code)" = "ready
200" ]' 20 "/readyz answers 200 once streaming and acking"
assert_eq "$(get /healthz "$port")|$(code)" "ok|200" "/healthz answers 200, with three slow clients connected"
exec 7>&- 8>&- 9>&-

scrape "$port"
L='group="hg",partition="0"'
for qu in a b; do
    read -r jobs done dead retried runs <<<"$(q "
        SELECT count(*), count(*) FILTER (WHERE status = 'done'),
               count(*) FILTER (WHERE status = 'dead'), sum(attempts - 1), sum(attempts)
          FROM walq.job_status WHERE consumer_group = 'hg' AND queue = '$qu'" | tr '|' ' ')"
    assert_eq "$(metric "walq_jobs_received_total{$L,queue=\"$qu\"}")" "$jobs" "queue $qu: received = jobs in SQL"
    assert_eq "$(metric "walq_jobs_done_total{$L,queue=\"$qu\"}")" "$done" "queue $qu: done = SQL's done"
    assert_eq "$(metric "walq_jobs_dead_total{$L,queue=\"$qu\"}")" "$dead" "queue $qu: dead = SQL's dead"
    assert_eq "$(metric "walq_jobs_retried_total{$L,queue=\"$qu\"}")" "$retried" \
        "queue $qu: retried = SQL's attempts beyond the first"
    assert_eq "$(metric "walq_jobs_cancelled_total{$L,queue=\"$qu\"}")" 0 "queue $qu: none cancelled"
    assert_eq "$(metric "walq_handler_duration_seconds_count{$L,queue=\"$qu\"}")" "$runs" \
        "queue $qu: the histogram counts every handler run SQL counts"
    assert_eq "$(grep -c "^$qu " "$WORK/runs.log")" "$runs" "queue $qu: the handler ran as often"
    assert_eq "$(metric "walq_handler_duration_seconds_bucket{group=\"hg\",le=\"+Inf\",partition=\"0\",queue=\"$qu\"}")" "$runs" \
        "queue $qu: the +Inf bucket holds every run"
done
# The workload is what was meant, not an accident of it.
assert_eq "$(q "SELECT count(*) FROM walq.job_status WHERE consumer_group = 'hg' AND status = 'dead'")" 5 \
    "5 jobs of a are dead"
assert_eq "$(metric "walq_jobs_in_flight{$L}")" 0 "nothing in flight once drained"
acks=$(metric "walq_acks_total{$L}")
[ "$acks" -ge 1 ] || fail "walq_acks_total is $acks after 80 outcomes"
assert_eq "$(metric "walq_ack_duration_seconds_count{$L}")" "$acks" "one ack latency per ack"
bytes=$(metric "walq_stream_bytes_total{$L}")
payload_bytes=$(q "SELECT sum(length(payload::text)) FROM walq.jobs")
[ "${bytes:-0}" -gt "$payload_bytes" ] ||
    fail "walq_stream_bytes_total is '$bytes', less than the payloads streamed ($payload_bytes)"
for g in walq_lag_received_bytes walq_lag_received_seconds walq_lag_confirmed_bytes \
    walq_lag_confirmed_seconds walq_reconnects_total walq_streaming walq_primary_up \
    walq_last_ack_timestamp_seconds walq_received_lsn_bytes walq_confirmed_lsn_bytes; do
    [ -n "$(metric "$g{$L}")" ] || fail "no $g in the scrape"
done
assert_eq "$(metric "walq_streaming{$L}")" 1 "streaming"
assert_eq "$(metric "walq_reconnects_total{$L}")" 0 "no reconnect"
last_ack=$(metric "walq_last_ack_timestamp_seconds{$L}")
python3 -c "import sys, time; sys.exit(0 if abs(time.time() - $last_ack) < 120 else 1)" ||
    fail "the last ack ($last_ack) is not recent"
assert_eq "$(metric "walq_info{group=\"hg\",kind=\"consume\",partition=\"0\",partitions=\"1\",slot=\"walq_hg\"}")" 1 \
    "walq_info names the slot"
# The received position is the server's LSN of the stream, and the slot's
# retained WAL is what pg_replication_slots says (sampled: within a few MB).
recv=$(metric "walq_received_lsn_bytes{$L}")
[ "$recv" -le "$(q "SELECT pg_current_wal_lsn() - '0/0'")" ] && [ "$recv" -gt 0 ] ||
    fail "walq_received_lsn_bytes $recv is not a position of the server's WAL"
retained=$(metric "walq_slot_retained_wal_bytes{$L,slot=\"walq_hg\"}")
sql_retained=$(q "SELECT pg_current_wal_lsn() - restart_lsn FROM pg_replication_slots WHERE slot_name = 'walq_hg'")
[ -n "$retained" ] && [ "$retained" -ge 0 ] && [ "$retained" -le "$((sql_retained + 16777216))" ] ||
    fail "walq_slot_retained_wal_bytes '$retained' against SQL's $sql_retained"
# Lag settles to nothing once everything is confirmed.
wait_for 'scrape "$port"; [ "$(metric "walq_lag_confirmed_bytes{$L}")" = 0 ]' 20 \
    "confirmed catches up with received"
pass "/metrics agrees with SQL after 80 jobs"

# Every family served is in docs/operations.md's list, and the Grafana
# dashboard uses only names that are served.
families=$(awk '$1 == "#" && $2 == "TYPE" { print $3 }' "$WORK/scrape")
for f in $families; do
    grep -qF "| \`$f\` |" "$WALQ_SOURCE_DIR/docs/operations.md" || fail "$f is not in docs/operations.md"
done
for n in $(grep -o 'walq_[a-z_]*' "$WALQ_SOURCE_DIR/docs/grafana-walq.json" | sed -E 's/_(bucket|sum|count)$//' | sort -u); do
    grep -qx "$n" <<<"$families" || fail "docs/grafana-walq.json uses $n, which /metrics does not serve"
done
pass "the metrics are documented and the dashboard's names are served"

# What is not served.
get /nothing "$port" >/dev/null
assert_eq "$(code)" 404 "an unknown path is 404"
assert_eq "$(curl -s -o /dev/null -w '%{http_code}' -X POST "http://127.0.0.1:$port/metrics")" 405 "POST is 405"

# The page's SQL waits within its bound: with walq.readers locked, the page
# still answers, at once after the server's statement_timeout, and says on
# one line which part it could not read and why.
pg_lock walq.readers 8
t0=$(date +%s.%N)
page=$(get / "$port")
t1=$(date +%s.%N)
pg_unlock
assert_eq "$(code)" 200 "the page answers while walq.readers is locked"
assert_match "$page" '<p class="bad">could not read the readers: canceling statement due to statement timeout</p>' \
    "and says why the readers are missing, the server's message on one line"
awk -v a="$t0" -v b="$t1" 'BEGIN { exit !(b - a < 7) }' ||
    fail "the page took $(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }') s with walq.readers locked"
pass "a blocked query of the page is cut at its bound"

# A second consumer of the group stands by: alive, not ready.
port2=$(free_port)
bg "$WALQ_BIN" consume "${opts[@]}" --http "127.0.0.1:$port2" -- "$h"
standby=$BG_PID
wait_for '[ "$(get /healthz "$port2" >/dev/null; code)" = 200 ]' 20 "the standing-by consumer answers /healthz"
sleep 1
body=$(get /readyz "$port2")
assert_eq "$(code)" 503 "/readyz of a consumer standing by is 503"
assert_match "$body" "not ready: not streaming" "and says why"
kill -TERM "$standby"
bg_wait "$standby" 20
assert_eq "$BG_RC" 0 "the standing-by consumer exits 0 on SIGTERM"

# Refused at start-up: a bad address, a port in use.
capture "$WALQ_BIN" consume "${opts[@]}" --http 127.0.0.1:notaport -- "$h"
assert_eq "$CAP_RC" 2 "a bad --http is a usage error"
assert_match "$CAP_ERR" 'invalid --http address "127.0.0.1:notaport"' "naming the address"
assert_match "$CAP_ERR" 'HINT:  Give ADDR:PORT' "with the form it takes"
capture "$WALQ_BIN" consume "${opts[@]}" --http localhost:80 -- "$h"
assert_eq "$CAP_RC" 2 "a host name is refused too (numeric addresses only)"
capture timeout 20 "$WALQ_BIN" consume "${opts[@]}" --http "127.0.0.1:$port" -- "$h"
assert_eq "$CAP_RC" 1 "a port in use fails at start-up"
assert_match "$CAP_ERR" "could not listen on --http \"127.0.0.1:$port\": Address already in use" \
    "naming the address and the cause"
capture "$WALQ_BIN" consume "${opts[@]}" --ready-within 0 --http "127.0.0.1:$port" -- "$h"
assert_eq "$CAP_RC" 2 "--ready-within 0 is refused"
pass "bad addresses and ports in use are refused at start-up"

# The audit serves the same endpoints.
aport=$(free_port)
bg "$WALQ_BIN" audit --group ha --output "$WORK/trail.jsonl" --status-interval 1 --http "127.0.0.1:$aport"
audit=$BG_PID
wait_for '[ "$(get /readyz "$aport" >/dev/null; code)" = 200 ]' 30 "the audit is ready"
publish_sql c 3
wait_for '[ "$(wc -l <"$WORK/trail.jsonl")" -ge 3 ]' 30 "the audit wrote the 3 inserts"
wait_for 'scrape "$aport"; [ "$(metric "walq_audit_changes_total{group=\"ha\",partition=\"0\"}")" -ge 3 ]' 20 \
    "walq_audit_changes_total counts them"
assert_eq "$(metric "walq_audit_changes_total{group=\"ha\",partition=\"0\"}")" "$(wc -l <"$WORK/trail.jsonl")" \
    "one change counted per line of the trail"
[ "$(metric "walq_stream_bytes_total{group=\"ha\",partition=\"0\"}")" -gt 0 ] || fail "the audit streamed no bytes"
for f in $(awk '$1 == "#" && $2 == "TYPE" { print $3 }' "$WORK/scrape"); do
    grep -qF "| \`$f\` |" "$WALQ_SOURCE_DIR/docs/operations.md" || fail "the audit's $f is not in docs/operations.md"
done
kill -TERM "$audit"
bg_wait "$audit" 20
assert_eq "$BG_RC" 0 "the audit exits 0 on SIGTERM with --http on"
pass "walq audit --http"

# The primary goes away: alive, and not ready once the stream and the
# primary have been gone longer than --ready-within.
pg_stop
wait_for '[ "$(get /readyz "$port" >/dev/null; code)" = 503 ]' 30 "/readyz is 503 with the primary stopped"
assert_match "$(get /readyz "$port")" "not ready: (not streaming|the primary)" "and says why"
assert_eq "$(get /healthz "$port")|$(code)" "ok|200" "/healthz still answers 200"
scrape "$port"
assert_eq "$(metric "walq_streaming{$L}")" 0 "walq_streaming is 0"
kill -INT "$cons"
sleep 0.5
kill -INT "$cons" 2>/dev/null || true
bg_wait "$cons" 20
pass "/readyz turns 503 when the primary is gone"
