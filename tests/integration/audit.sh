#!/usr/bin/env bash
# shellcheck disable=SC2016  # wait_for evals its condition later; jq programs are literal
# walq audit: every insert, update and delete of walq.jobs and walq.outcomes,
# once, in commit order, across kill -9.
#
# Two trails run through a mixed workload (publishes, a rolled-back
# transaction, a big transaction, hand-made updates and deletes, a consumer
# with retries and dead jobs, walq job cancel and retry): JSON lines in a
# file, killed with -9 three times (once in the middle of the big
# transaction) and restarted each time, and rows of a table in a second
# database, killed once.  At the end both are compared with what
# pg_recvlogical and wal2json print for the same LSN range, from a slot
# created just before theirs: the same changes in the same order, none
# missing and none twice.
# shellcheck source=SCRIPTDIR/../lib/pgtest.sh
. "$(dirname "$0")/../lib/pgtest.sh"
require_walq
command -v jq >/dev/null || fail "jq is needed (tests/setup-debian.sh installs it)"

# expect_error RC REGEX MSG CMD...: CMD exits RC with a "walq: ERROR:" line
# on stderr that matches REGEX.
expect_error() {
    local rc=$1 re=$2 msg=$3
    shift 3
    capture timeout -k 5 30 "$@"
    printf '%s\n' "$CAP_ERR" | sed 's/^/    | /'
    assert_eq "$CAP_RC" "$rc" "$msg: exit status"
    assert_match "$CAP_ERR" "^walq: ERROR:  $re" "$msg: message"
}

# Usage errors need no server.
expect_error 2 'invalid audit group name "Bad-Name"' "a bad --group" \
    "$WALQ_BIN" audit --group Bad-Name
assert_match "$CAP_ERR" 'HINT:  Use 1 to 50 lower-case letters' "a bad --group: hint"
expect_error 2 'invalid audit group name' "a --group of 51 characters" \
    "$WALQ_BIN" audit --group "$(printf 'a%.0s' $(seq 1 51))"
expect_error 2 '--output and --into cannot be used together' "--output with --into" \
    "$WALQ_BIN" audit --output "$WORK/x.jsonl" --into audit_log
assert_match "$CAP_ERR" 'HINT:  Give --output to write JSON lines, or --into' "--output with --into: hint"
expect_error 2 'invalid table name "Audit Log"' "a bad --into" \
    "$WALQ_BIN" audit --into "Audit Log"

pg_start
walq init
q "CREATE DATABASE auditdb" >/dev/null

expect_error 1 'could not open output file "/nonexistent/dir/a.jsonl": No such file or directory' \
    "an output file that cannot be created" \
    "$WALQ_BIN" audit --output /nonexistent/dir/a.jsonl --drain
echo '{"not": "an audit trail"}' >"$WORK/foreign.jsonl"
expect_error 1 'output file ".*foreign.jsonl" does not end like a walq audit trail' \
    "an output file walq did not write" \
    "$WALQ_BIN" audit --output "$WORK/foreign.jsonl" --group foreign --drain
assert_eq "$(q "SELECT count(*) FROM pg_replication_slots")" 0 "no slot is left behind by those"

RECV=$PGTEST_BINDIR/pg_recvlogical
# shellcheck disable=SC2054  # the commas are wal2json's list of tables and actions
PLUGIN_OPTS=(-o format-version=2 -o include-xids=1 -o include-timestamp=1 -o include-lsn=1
    -o add-tables=walq_jobs.*,walq_outcomes.*,walq_batches.*,walq.jobs,walq.outcomes,walq.outcome_batches -o actions=insert,update,delete)
FILE=$WORK/audit.jsonl
# The table trail reads the slot on database postgres and writes to auditdb.
TABLE_ARGS=(--group tbl --into trail.changes --source "dbname=postgres" --dbname "dbname=auditdb")
pg_psql -d auditdb -c "CREATE SCHEMA trail"

# The reference slot first, then the audit's two: no change to walq's tables
# is committed between their creations.
"$RECV" -d postgres --slot reference --create-slot -P wal2json
start_file_audit() {
    bg "$WALQ_BIN" audit --output "$FILE" 2>>"$WORK/audit.log"
    fpid=$BG_PID
    wait_for 'slot_active walqaudit_audit' 30 "the file audit to stream"
}
start_table_audit() {
    bg "$WALQ_BIN" audit "${TABLE_ARGS[@]}" 2>>"$WORK/audit_table.log"
    tpid=$BG_PID
    wait_for 'slot_active walqaudit_tbl' 30 "the table audit to stream"
}
# kill9 PID SLOT: kill -9, then wait until the server let go of the slot.
kill9() {
    kill -KILL "$1"
    bg_wait "$1" 10
    wait_for "! slot_active $2" 30 "slot $2 to be released"
}
KILLS=0
start_file_audit
start_table_audit
pass "both trails stream; reference slot created before theirs"

# Two more audits of the same groups are refused while these run.
expect_error 1 'replication slot "walqaudit_audit" is in use by process [0-9]+' \
    "a second audit of the same group" "$WALQ_BIN" audit --output "$WORK/second.jsonl" --drain
expect_error 1 'could not lock output file ".*audit.jsonl": it is in use by another process' \
    "a second audit into the same file" "$WALQ_BIN" audit --output "$FILE" --group other --drain

# ---- the workload ---------------------------------------------------------

h=$(handler work.sh <<'HANDLER'
payload=$(cat)
case $payload in
*fail*) echo "failing on purpose" >&2; exit 1 ;;
*flaky*) [ "$WALQ_ATTEMPT" -lt 2 ] && exit 75 ;;
esac
exit 0
HANDLER
)

for i in 1 2 3; do
    walq publish work "{\"n\": $i, \"price\": 1.50, \"big\": 123456789012345678901234567890}" >/dev/null
    walq publish --max-attempts 2 work "{\"fail\": $i}" >/dev/null
    walq publish work "{\"flaky\": $i, \"text\": \"tab\\tquote\\\" uni é\"}" >/dev/null
done
seq 1 200 | sed 's/.*/{"line": &}/' | walq publish --batch-size 1000 work >/dev/null
later=$(q "SELECT walq.publish('work', '{\"later\": true}', now() + interval '1 hour')")
pg_psql <<'SQL'
BEGIN;
INSERT INTO walq.jobs (queue, payload) VALUES ('misc', '{"n": 1}'), ('misc', '{"n": 2}');
INSERT INTO walq.jobs (queue, payload, priority) VALUES ('misc', '{"n": 3, "nested": {"a": [1, null, true]}}', -3);
COMMIT;
BEGIN;
INSERT INTO walq.jobs (queue, payload) VALUES ('misc', '{"rolled": "back"}');
ROLLBACK;
BEGIN;
UPDATE walq.jobs SET priority = 7 WHERE queue = 'misc' AND payload->>'n' = '1';
DELETE FROM walq.jobs WHERE queue = 'misc' AND payload->>'n' = '2';
INSERT INTO walq.jobs (queue, payload) VALUES ('misc', '{"n": 4}');
COMMIT;
SQL

# Kill 1, while busy: a transaction of 30,000 jobs, and both audits killed
# as soon as the file shows its first lines.
q "INSERT INTO walq.jobs (queue, payload)
   SELECT 'bulk', jsonb_build_object('n', g, 'pad', repeat('x', 300))
     FROM generate_series(1, 30000) g" >/dev/null
until grep -q '"queue":"bulk"' "$FILE"; do
    kill -0 "$fpid" 2>/dev/null || fail "the file audit exited on its own"
    sleep 0.02
done
kill -KILL "$tpid"
kill9 "$fpid" walqaudit_audit
KILLS=$((KILLS + 1))
bg_wait "$tpid" 10
wait_for '! slot_active walqaudit_tbl' 30 "slot walqaudit_tbl to be released"
tail_last=$(tail -c 1 "$FILE" | od -An -c | tr -d ' ')
bulk_lines=$(grep -c '"queue":"bulk"' "$FILE" || true)
last_flag=$(tail -n 1 "$FILE" | jq -r .last 2>/dev/null || echo "cut")
echo "    kill 1: $bulk_lines of 30000 lines of the big transaction in the file; last line ends with '$tail_last', last=$last_flag"
[ "$bulk_lines" -lt 30000 ] || fail "the big transaction was whole before kill 1: the test proves nothing"
pass "kill -9 number $KILLS of the file audit in the middle of a transaction of 30000 changes"
start_file_audit
start_table_audit
assert_match "$(cat "$WORK/audit.log")" 'cut [0-9]+ bytes \([0-9]+ lines? of an unfinished transaction\)' \
    "the restarted audit cut the unfinished transaction from the file"

# Lost connections, the audits running on: the walsenders of both are
# terminated in the middle of a transaction of 10,000 changes (each audit
# carries on inside it where it was), and later the table audit's connection
# to auditdb while it writes.  The audits are held still with SIGSTOP as soon
# as the file grows, so that the transaction is surely unfinished.
wait_for '[ "$(grep -c "\"queue\":\"bulk\"" "$FILE")" -eq 30000 ] &&
          [ "$(pg_psql -d auditdb -c "SELECT count(*) FROM trail.changes
                                       WHERE new_row->>'"'queue'"' = '"'bulk'"'")" -eq 30000 ]' \
    60 "both trails to hold the big transaction"
size=$(stat -c %s "$FILE")
q "INSERT INTO walq.jobs (queue, payload)
   SELECT 'conn', jsonb_build_object('n', g, 'pad', repeat('y', 300))
     FROM generate_series(1, 10000) g" >/dev/null
until [ "$(stat -c %s "$FILE")" -gt "$size" ]; do sleep 0.01; done
kill -STOP "$fpid" "$tpid"
conn_lines=$(grep -c '"queue":"conn"' "$FILE" || true)
terminated=$(q "SELECT count(pg_terminate_backend(active_pid)) FROM pg_replication_slots
                 WHERE slot_name LIKE 'walqaudit%'")
kill -CONT "$fpid" "$tpid"
assert_eq "$terminated" 2 "both walsenders terminated with $conn_lines of 10000 lines in the file"
[ "$conn_lines" -lt 10000 ] || fail "the transaction was whole before the walsenders went"
wait_for 'slot_active walqaudit_audit && slot_active walqaudit_tbl' 30 "both audits to stream again"
assert_match "$(cat "$WORK/audit.log")" 'WARNING:  audit "audit": .*reconnecting in' \
    "the file audit reconnected"

# Kill 2: while the consumer records outcomes (retries, dead jobs).
bg "$WALQ_BIN" consume --group w --queue work --concurrency 2 --backoff-min 0.05 \
    --backoff-max 0.1 --drain -- "$h" 2>>"$WORK/consumer.log"
cpid=$BG_PID
wait_for '[ "$(q "SELECT count(*) FROM ($(recorded_sql w)) r")" -ge 20 ]' 60 "20 outcomes"
assert_eq "$(q "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
                 WHERE datname = 'auditdb' AND application_name = 'walq audit'")" 1 \
    "the table audit's connection to auditdb terminated"
kill9 "$fpid" walqaudit_audit
KILLS=$((KILLS + 1))
pass "kill -9 number $KILLS of the file audit while outcomes are recorded"
start_file_audit
bg_wait "$cpid" 120
assert_eq "$BG_RC" 0 "the consumer drained"
assert_eq "$(q "SELECT status, count(*) FROM walq.job_status WHERE consumer_group = 'w'
                 GROUP BY 1 ORDER BY 1" | tr '\n' ' ')" \
    "dead|3 done|206 scheduled|1 " "outcomes: 206 done, 3 dead, 1 scheduled"

dead=$(q "SELECT min(job_id) FROM walq.outcomes WHERE status = 'dead'")
walq job cancel "$later" >/dev/null 2>&1
walq job retry "$dead" >/dev/null 2>&1
capture walq_timeout 60 consume --group w --queue work --backoff-min 0.05 --backoff-max 0.1 --drain -- "$h"
assert_eq "$CAP_RC" 0 "the consumer ran the retried job"
assert_eq "$(q "SELECT status || ':' || attempts FROM walq.outcomes WHERE job_id IN ($later, $dead) ORDER BY job_id" | tr '\n' ' ')" \
    "dead:2 cancelled:0 " "walq job cancel and retry recorded"

# Kill 3: in the middle of a stream of small transactions.
cat >"$WORK/trickle.sh" <<TRICKLE
#!/usr/bin/env bash
set -euo pipefail
for i in \$(seq 1 60); do
    "$PGTEST_BINDIR/psql" -X -q -v ON_ERROR_STOP=1 -c \\
        "INSERT INTO walq.jobs (queue, payload) VALUES ('trickle', jsonb_build_object('i', \$i))"
    sleep 0.03
done
TRICKLE
chmod 0755 "$WORK/trickle.sh"
bg "$WORK/trickle.sh"
trickle=$BG_PID
wait_for '[ "$(q "SELECT count(*) FROM walq.jobs WHERE queue = '"'trickle'"'")" -ge 20 ]' 60 "20 trickle jobs"
kill9 "$fpid" walqaudit_audit
KILLS=$((KILLS + 1))
pass "kill -9 number $KILLS of the file audit during a stream of small transactions"
start_file_audit
bg_wait "$trickle" 60
assert_eq "$BG_RC" 0 "the trickle of 60 transactions committed"
wait_for 'grep -q "reconnected to the server of table" "$WORK/audit_table.log"' 30 \
    "the table audit to reconnect to auditdb"
q "UPDATE walq.jobs SET priority = 1 WHERE queue = 'trickle'" >/dev/null
q "DELETE FROM walq.jobs WHERE queue = 'bulk' AND (payload->>'n')::int <= 100" >/dev/null

# The end of the compared range; then SIGTERM, and a --drain to catch up.
END=$(q "SELECT pg_current_wal_insert_lsn()")
for p in "$fpid" "$tpid"; do
    kill -TERM "$p"
    bg_wait "$p" 30
    assert_eq "$BG_RC" 0 "an audit exits 0 on SIGTERM"
done
capture walq_timeout 120 audit --output "$FILE" --drain
assert_eq "$CAP_RC" 0 "the file audit drains: $(tail -n 1 <<<"$CAP_ERR")"
capture walq_timeout 120 audit "${TABLE_ARGS[@]}" --drain
assert_eq "$CAP_RC" 0 "the table audit drains: $(tail -n 1 <<<"$CAP_ERR")"
lines=$(wc -l <"$FILE")
capture walq_timeout 60 audit --output "$FILE" --drain
assert_eq "$(wc -l <"$FILE")" "$lines" "another --drain writes nothing more"
assert_eq "$(tail -c 1 "$FILE" | od -An -c | tr -d ' ')" '\n' "the file ends with a whole line"

# ---- the comparison -------------------------------------------------------

PGOPTIONS="-c timezone=UTC" "$RECV" -d postgres --slot reference --start -E "$END" --no-loop \
    -f "$WORK/reference.jsonl" "${PLUGIN_OPTS[@]}"

DEFS='def hex: explode | reduce .[] as $c (0; . * 16 + (if $c >= 97 then $c - 87
                                                     elif $c >= 65 then $c - 55 else $c - 48 end));
      def lsn: split("/") | (.[0] | hex) * 4294967296 + (.[1] | hex);'
# One line per change: end LSN of its transaction, its LSN, xid, commit time,
# table (a generation's partition named as its table, as the trails do),
# action, new row and old key, keys of objects sorted.
jq -nc -S --arg stop "$END" "$DEFS"'
    ($stop | lsn) as $e
    | foreach inputs as $r (null; if $r.action == "B" then $r.nextlsn else . end;
        select($r.action == "I" or $r.action == "U" or $r.action == "D")
        | select((. | lsn) <= $e)
        | [., $r.lsn, $r.xid, $r.timestamp,
           ({"walq_jobs": "walq.jobs", "walq_outcomes": "walq.outcomes",
             "walq_batches": "walq.outcome_batches"}[$r.schema] // ($r.schema + "." + $r.table)),
           {"I": "insert", "U": "update", "D": "delete"}[$r.action],
           (if $r.columns then ($r.columns | map({(.name): .value}) | add) else null end),
           (if $r.identity then ($r.identity | map({(.name): .value}) | add) else null end)])' \
    "$WORK/reference.jsonl" >"$WORK/reference.keys"
canonical() {
    jq -c -S --arg stop "$END" "$DEFS"'
        ($stop | lsn) as $e | select((.[0] | lsn) <= $e)'
}
jq -c '[.end_lsn, .lsn, .xid, .commit_time, .table, .action, .new, .old_key]' "$FILE" |
    canonical >"$WORK/file.keys"
PGOPTIONS="-c timezone=UTC" pg_psql -d auditdb -c \
    "SELECT json_build_array(end_lsn::text, lsn::text, xid, commit_time::text, table_name, action,
                             new_row, old_key)
       FROM trail.changes ORDER BY end_lsn, change_index" | canonical >"$WORK/table.keys"

n=$(wc -l <"$WORK/reference.keys")
[ "$n" -gt 30000 ] || fail "only $n changes in the reference: the workload did not run"
count() { jq -r "$1" "$WORK/reference.keys" | sort | uniq -c | awk '{printf "%s=%s ", $2, $1}'; }
echo "    reference: $n changes: $(count '.[5]')/ $(count '.[4]')"
for t in file table; do
    if ! diff -q "$WORK/reference.keys" "$WORK/$t.keys" >/dev/null; then
        diff "$WORK/reference.keys" "$WORK/$t.keys" | head -n 20 | cut -c 1-300 >&2
        fail "the $t trail differs from pg_recvlogical ($(wc -l <"$WORK/$t.keys") changes against $n)"
    fi
    pass "the $t trail holds the $n changes pg_recvlogical printed, in the same order"
    assert_eq "$(sort "$WORK/$t.keys" | uniq -d | wc -l)" 0 "the $t trail has no change twice"
done
for a in insert update delete; do
    [ "$(jq -r '.[5]' "$WORK/file.keys" | grep -c "^$a\$")" -gt 0 ] || fail "no $a in the trail"
done
pass "the trails hold inserts, updates and deletes of both tables"
assert_eq "$(jq -c 'select(.[6].payload? // "" | test("rolled"))' "$WORK/file.keys" | wc -l)" 0 \
    "the rolled-back transaction is in no trail"

# Every transaction's lines are numbered 1..n, and only the n-th says last.
bad=$(jq -r '[.end_lsn, .index, .last] | @tsv' "$FILE" | awk -F'\t' '
    $1 != cur { if (cur != "" && !done) bad++; if ($2 != 1) bad++; cur = $1; want = 1; done = 0 }
    { if ($2 != want || done) bad++; want++; if ($3 == "true") done = 1 }
    END { if (cur != "" && !done) bad++; print bad + 0 }')
assert_eq "$bad" 0 "every transaction in the file is numbered 1..n and ends with \"last\": true"
txns=$(grep -c '"last":true' "$FILE")
assert_eq "$(pg_psql -d auditdb -c "SELECT count(DISTINCT end_lsn) FROM trail.changes")" "$txns" \
    "the table holds the same $txns transactions"
assert_eq "$(pg_psql -d auditdb -c "SELECT end_lsn = (SELECT max(end_lsn) FROM trail.changes)
                                      FROM trail.walq_audit_cursor WHERE group_name = 'tbl'")" t \
    "the table's cursor is the end of its last transaction"

# The table is append-only.
for stmt in "DELETE FROM trail.changes" "UPDATE trail.changes SET xid = 0" "TRUNCATE trail.changes"; do
    capture pg_psql -d auditdb -c "$stmt"
    [ "$CAP_RC" -ne 0 ] || fail "$stmt succeeded on the audit table"
    assert_match "$CAP_ERR" 'is not allowed on table trail.changes: it is an append-only audit trail' \
        "$stmt is refused"
done

pass "all: $n changes compared, $KILLS kill -9 of the file audit, 1 of the table audit"
