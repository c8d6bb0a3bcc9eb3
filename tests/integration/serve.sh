#!/usr/bin/env bash
# shellcheck disable=SC2016  # wait_for evals its condition later
# walq serve: /metrics for the whole database checked against SQL for two
# groups (one of them split in two partitions), /healthz, the status page
# with both groups and the last dead job (its error HTML-escaped), and every
# wait bounded: a statement that blocks, and a server that is down, get a
# 503 with the reason within the timeout, and serve reconnects after.
# shellcheck source=SCRIPTDIR/../lib/pgtest.sh
. "$(dirname "$0")/../lib/pgtest.sh"
require_walq
pg_start
walq init

# A handler whose odd jobs fail, with an error that is markup and has a
# control character in it.
h=$(handler odd.sh <<'HANDLER'
payload=$(cat)
case $payload in
*[13579]\}) printf '<b>bad</b> & \001 "job"\n' >&2; exit 1 ;;
esac
exit 0
HANDLER
)
publish_sql qa 30 1
walq_timeout 60 consume --group ga --queue qa --backoff-min 0.01 --drain -- "$h" 2>/dev/null
publish_sql qb 20
walq_timeout 60 consume --group gb --queue qb --partition 0/2 --drain --noop 2>/dev/null
walq_timeout 60 consume --group gb --queue qb --partition 1/2 --drain --noop 2>/dev/null

# ga runs on; gb is stopped, with jobs waiting for it.
bg "$WALQ_BIN" consume --group ga --queue qa -- "$h" 2>"$WORK/ga.log"
wait_for "slot_active walq_ga" 30 "group ga to stream"
publish_sql qb 6
publish_sql qa 4 1
sleep 3

# serve needs no more than walq_admin, and pg_read_all_stats for what the
# walsenders have sent (pg_stat_replication).
q "CREATE ROLE mon LOGIN; GRANT walq_admin, pg_read_all_stats TO mon" >/dev/null
bg env PGUSER=mon "$WALQ_BIN" serve --http 127.0.0.1:0 --statement-timeout 1s 2>"$WORK/serve.log"
serve=$BG_PID
wait_for 'grep -q "on port [0-9]" "$WORK/serve.log"' 20 "walq serve to listen"
port=$(sed -n 's/.* on port \([0-9]*\).*/\1/p' "$WORK/serve.log" | head -1)
url=http://127.0.0.1:$port
wait_for '[ "$(q "SELECT done + dead FROM walq.group_counts('"'ga'"')")" = 34 ]' 30 "ga to finish its jobs"

capture curl -sS -m 10 -o "$WORK/health" -w '%{http_code}' "$url/healthz"
assert_eq "$CAP_OUT" 200 "/healthz answers 200"
assert_eq "$(cat "$WORK/health")" ok "/healthz says ok"

# -- /metrics against SQL ----------------------------------------------------
# slot_sql COLUMN: "wal=W SLOT=P ...": the server's WAL position and each
# slot's COLUMN, in bytes.  Both only move forward, so a lag the scrape
# computed at any moment between two readings is at least the first W less
# the second P, and at most the second W less the first P.
slot_sql() {
    q "SELECT 'wal=' || pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint || ' ' ||
              string_agg(slot_name || '=' || pg_wal_lsn_diff($1, '0/0')::bigint, ' '
                         ORDER BY slot_name)
         FROM pg_replication_slots WHERE slot_name LIKE 'walq_g%'"
}
before_lag=$(slot_sql confirmed_flush_lsn)
before_kept=$(slot_sql restart_lsn)
capture curl -sS -m 10 -D "$WORK/headers" -o "$WORK/metrics" -w '%{http_code}' "$url/metrics"
after_lag=$(slot_sql confirmed_flush_lsn)
after_kept=$(slot_sql restart_lsn)
assert_eq "$CAP_OUT" 200 "/metrics answers 200"
assert_match "$(cat "$WORK/headers")" 'Content-Type: text/plain; version=0.0.4' "in Prometheus text format"
sed 's/^/    | /' "$WORK/metrics" | grep -v '^    | #' | head -60

# metric NAME LABELS: the value of the sample NAME{LABELS}.
metric() {
    local k=$1
    [ -z "$2" ] || k="$1{$2}"
    awk -v k="$k" '$1 == k { print $2; found = 1 } END { exit !found }' "$WORK/metrics" ||
        fail "/metrics has no sample $1{$2}"
}

# Every count by group, partition, queue and status, as walq.job_status
# (the view, not the function /metrics reads) has them.
expected=$(q "SELECT string_agg(format('%s/%s/%s/%s=%s', r.group_name, r.partition, j.queue, st,
                                       (SELECT count(*) FROM walq.job_status s
                                         WHERE s.consumer_group = r.group_name AND s.queue = j.queue
                                           AND s.status = st
                                           AND (r.partitions = 1
                                                OR walq.partition_of(s.job_id, r.partitions) = r.partition))),
                                ' ' ORDER BY r.group_name, r.partition, j.queue, st)
                FROM walq.readers r
                CROSS JOIN unnest(ARRAY['queued', 'running', 'scheduled', 'done', 'dead', 'cancelled']) st
                JOIN (SELECT DISTINCT queue FROM walq.jobs) j ON j.queue = ANY (r.queues)")
got=$(awk '$1 ~ /^walq_jobs\{/ {
             match($1, /group="[^"]*"/); g = substr($1, RSTART + 7, RLENGTH - 8)
             match($1, /partition="[^"]*"/); p = substr($1, RSTART + 11, RLENGTH - 12)
             match($1, /queue="[^"]*"/); qu = substr($1, RSTART + 7, RLENGTH - 8)
             match($1, /status="[^"]*"/); s = substr($1, RSTART + 8, RLENGTH - 9)
             print g "/" p "/" qu "/" s "=" $2 }' "$WORK/metrics" | LC_ALL=C sort | tr '\n' ' ' | sed 's/ $//')
expected=$(tr ' ' '\n' <<<"$expected" | LC_ALL=C sort | tr '\n' ' ' | sed 's/ $//')
assert_eq "$got" "$expected" "walq_jobs: every count by group, partition, queue and status is walq.job_status's"
assert_eq "$(metric walq_jobs 'group="ga",partition="0",queue="qa",status="dead"')" 17 \
    "walq_jobs: ga's 17 dead jobs"
assert_eq "$(metric walq_jobs 'group="ga",partition="0",queue="qa",status="done"')" 17 \
    "walq_jobs: ga's 17 done jobs"
gb_queued=$(($(metric walq_jobs 'group="gb",partition="0",queue="qb",status="queued"') +
    $(metric walq_jobs 'group="gb",partition="1",queue="qb",status="queued"')))
assert_eq "$gb_queued" 6 "walq_jobs: gb's 6 queued jobs over its two partitions"
assert_eq "$(metric walq_groups '')" 2 "walq_groups: 2"

assert_eq "$(metric walq_reader_live 'group="ga",partition="0"')" 1 "walq_reader_live: ga's reader is live"
assert_eq "$(metric walq_reader_live 'group="gb",partition="1"')" 0 "walq_reader_live: gb's are not"
assert_eq "$(metric walq_slot_active 'group="ga",partition="0",slot="walq_ga"')" 1 "walq_slot_active: ga"
assert_eq "$(metric walq_slot_active 'group="gb",partition="0",slot="walq_gb_0of2"')" 0 "walq_slot_active: gb"

# within NAME LABELS SLOT BEFORE AFTER: the sample lies within what SQL's
# readings just before and just after the scrape allow (slot_sql).
within() {
    local v lo hi
    pos() { tr ' ' '\n' <<<"$1" | sed -n "s/^$2=//p"; }
    v=$(metric "$1" "$2")
    lo=$(($(pos "$4" wal) - $(pos "$5" "$3")))
    hi=$(($(pos "$5" wal) - $(pos "$4" "$3")))
    [ "$lo" -ge 0 ] || lo=0
    [ "$v" -ge "$lo" ] && [ "$v" -le "$hi" ] || fail "$1{$2} is $v; SQL allows $lo to $hi"
    pass "$1{$2} = $v, between $lo and $hi by SQL"
}
for spec in 'ga 0 walq_ga' 'gb 0 walq_gb_0of2' 'gb 1 walq_gb_1of2'; do
    read -r g p slot <<<"$spec"
    within walq_group_lag_bytes "group=\"$g\",partition=\"$p\"" "$slot" "$before_lag" "$after_lag"
    within walq_slot_retained_wal_bytes "group=\"$g\",partition=\"$p\",slot=\"$slot\"" "$slot" \
        "$before_kept" "$after_kept"
done
lag_s=$(metric walq_group_lag_seconds 'group="gb",partition="0"')
lag_s1=$(metric walq_group_lag_seconds 'group="gb",partition="1"')
awk -v a="$lag_s" -v b="$lag_s1" 'BEGIN { m = a > b ? a : b; exit !(m >= 3 && m < 60) }' ||
    fail "walq_group_lag_seconds of gb: $lag_s and $lag_s1; its jobs have waited 3 s"
oldest=$(q "SELECT extract(epoch FROM now() - min(created_at)) FROM walq.jobs j WHERE queue = 'qb'
              AND NOT EXISTS (SELECT 1 FROM walq.job_status s WHERE s.job_id = j.id AND s.status <> 'queued')")
awk -v a="$lag_s" -v b="$lag_s1" -v o="$oldest" 'BEGIN { m = a > b ? a : b; exit !(m <= o && m > o - 5) }' ||
    fail "walq_group_lag_seconds of gb ($lag_s, $lag_s1) is not the wait of its oldest queued job ($oldest s)"
pass "walq_group_lag_seconds of gb: $lag_s and $lag_s1 (oldest queued job: $oldest s)"
assert_eq "$(metric walq_group_lag_seconds 'group="ga",partition="0"')" 0.000 "walq_group_lag_seconds: ga is caught up"
grep -q '^# TYPE walq_slot_retained_wal_bytes gauge$' "$WORK/metrics" || fail "no TYPE line"
assert_match "$(metric walq_group_lag_received_bytes 'group="ga",partition="0"')" '^[0-9]+$' \
    "walq_group_lag_received_bytes of ga, whose walsender streams"
grep -q '^walq_group_lag_received_bytes{group="gb"' "$WORK/metrics" &&
    fail "walq_group_lag_received_bytes for gb, which no walsender serves"

# -- the status page -----------------------------------------------------------
capture curl -sS -m 10 -o "$WORK/page.html" -w '%{http_code}' "$url/"
assert_eq "$CAP_OUT" 200 "/ answers 200"
page=$(cat "$WORK/page.html")
assert_match "$page" '<tr data-group="ga">' "the page shows group ga"
assert_match "$page" '<tr data-group="gb">.*<tr data-group="gb">' "and both readers of group gb"
assert_match "$page" '<meta http-equiv="refresh"' "and refreshes itself"
assert_match "$page" '&lt;b&gt;bad&lt;/b&gt; &amp; \\x01 &quot;job&quot;' \
    "the dead job's error is HTML-escaped, its control character shown as an escape"
case $page in *'<b>bad'*) fail "the error reached the page unescaped" ;; esac
case $page in *$'\001'*) fail "a control character reached the page" ;; esac
case $page in *'src='* | *'<link'* | *'://'*) fail "the page loads something from elsewhere" ;; esac
newest=$(q "SELECT job_id FROM walq.dead_jobs ORDER BY died_at DESC LIMIT 1")
assert_match "$page" "<tr><td class=\"n\">$newest</td>" "the page lists the newest dead job ($newest)"
assert_eq "$(grep -o '<tr><td class="n">[0-9]*</td>' "$WORK/page.html" | wc -l)" 17 \
    "the page lists the 17 dead jobs"

# -- bounded waits ---------------------------------------------------------------
# A lock that blocks every read of walq.readers: /metrics answers 503 within
# the statement timeout, with the server's reason.
pg_lock walq.readers 20
t0=$(date +%s.%N)
capture curl -sS -m 20 -o "$WORK/blocked" -w '%{http_code}' "$url/metrics"
t1=$(date +%s.%N)
assert_eq "$CAP_OUT" 503 "/metrics answers 503 while its statement is blocked"
assert_match "$(cat "$WORK/blocked")" 'statement timeout' "naming the statement timeout"
awk -v a="$t0" -v b="$t1" 'BEGIN { exit !(b - a < 4) }' || fail "the 503 took $(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }') s"
pass "the blocked scrape answered within the bound"
pg_unlock

# The server down: 503 with the reason, at once; up again: 200.
pg_stop
t0=$(date +%s.%N)
capture curl -sS -m 20 -o "$WORK/down" -w '%{http_code}' "$url/metrics"
t1=$(date +%s.%N)
assert_eq "$CAP_OUT" 503 "/metrics answers 503 while the server is down"
assert_match "$(cat "$WORK/down")" '^walq serve: could not' "with the reason: $(head -c 200 "$WORK/down")"
awk -v a="$t0" -v b="$t1" 'BEGIN { exit !(b - a < 8) }' || fail "the 503 took too long"
capture curl -sS -m 20 -o /dev/null -w '%{http_code}' "$url/healthz"
assert_eq "$CAP_OUT" 200 "/healthz still answers 200: the process is alive"
capture curl -sS -m 20 -o "$WORK/downpage" -w '%{http_code}' "$url/"
assert_eq "$CAP_OUT" 503 "the page answers 503 too"
assert_match "$(cat "$WORK/downpage")" 'id="error">could not' "and says why"
_pg_ctl_start
wait_for '[ "$(curl -s -m 10 -o /dev/null -w "%{http_code}" "$url/metrics")" = 200 ]' 30 \
    "/metrics to answer 200 again"
pass "serve reconnected after the restart"
curl -sS -m 10 -o "$WORK/metrics" "$url/metrics"
assert_eq "$(metric walq_jobs 'group="ga",partition="0",queue="qa",status="dead"')" 17 \
    "the counts after the reconnect"

kill -TERM "$serve"
bg_wait "$serve" 15
assert_eq "$BG_RC" 0 "walq serve exits 0 at SIGTERM"
capture walq serve --dbname "host=$PGHOST port=$PGPORT"
assert_eq "$CAP_RC" 2 "walq serve without --http is a usage error"
capture walq serve --http nowhere
assert_eq "$CAP_RC" 2 "a bad --http is a usage error"
pass "walq serve"
