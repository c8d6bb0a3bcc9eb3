#!/usr/bin/env bash
# shellcheck disable=SC2016  # wait_for evals its condition later
# The configuration file (--config, docs/operations.md): a consume set up by
# the file alone drains its queues with the file's program and arguments;
# the command line wins over the file (its group and its queue list); a bad
# file is refused with exit 2 and its file:line; SIGHUP changes the
# concurrency of a running consumer, seen in its handlers' own records, logs
# a changed setting that does not reload as needing a restart, and a bad
# file at a later SIGHUP keeps the settings in use; a last SIGHUP sets a
# timeout that kills the next handler, and the log level.  Then the audit, from
# its own section of the same kind of file.
# shellcheck source=SCRIPTDIR/../lib/pgtest.sh
. "$(dirname "$0")/../lib/pgtest.sh"
require_walq
pg_start
walq init

outcomes() {
    q "SELECT coalesce(string_agg(queue || ':' || status, ' ' ORDER BY queue, job_id), '')
         FROM walq.job_status WHERE consumer_group = '$1'"
}

# ------------------------------------------------------------------
# 1. Everything from the file: group, queues, program with a quoted
#    argument, concurrency, drain.
args=$(handler args.sh <<HANDLER
cat >/dev/null
printf '%s|%s|%s\n' "\$WALQ_QUEUE" "\$1" "\$2" >>"$WORK/args.log"
HANDLER
)
for i in 1 2 3; do walq publish qa "{\"i\": $i}" >/dev/null; done
for i in 1 2; do walq publish qb "{\"i\": $i}" >/dev/null; done

cat >"$WORK/walq.ini" <<INI
; the consumer of section 1
[consume]
group = fa
queue = qa
queue = qb
program = $args "an argument" 'it''s'
concurrency = 2
drain = yes
log_level = warning

[audit]
group = ignored_by_consume
INI
capture walq consume --config "$WORK/walq.ini"
assert_eq "$CAP_RC" 0 "consume configured by the file alone drains and exits 0 ($CAP_ERR)"
assert_eq "$(outcomes fa)" "qa:done qa:done qa:done qb:done qb:done" \
    "every job of the file's two queues is done in the file's group"
assert_eq "$(sort -u "$WORK/args.log" | paste -sd' ')" "qa|an argument|its qb|an argument|its" \
    "the file's program got its arguments, quotes taken off"
case $CAP_ERR in
*"jobs/s"*) fail "log_level = warning in the file: no summary line expected ($CAP_ERR)" ;;
esac
pass "log_level = warning from the file quiets the summary"

# ------------------------------------------------------------------
# 2. The command line wins: another group, one queue of the two.
capture walq consume --config "$WORK/walq.ini" --group fb --queue qb --log-level info
assert_eq "$CAP_RC" 0 "consume with the file and command-line overrides exits 0 ($CAP_ERR)"
assert_eq "$(outcomes fb)" "qb:done qb:done" "--group fb and --queue qb win: qb's jobs done in fb"
assert_eq "$(q "SELECT queues FROM walq.groups WHERE name = 'fb'")" "{qb}" "group fb reads qb alone"
assert_eq "$(wc -l <"$WORK/args.log")" 7 "the handler ran for qb's two jobs only"
assert_eq "$(outcomes fa)" "qa:done qa:done qa:done qb:done qb:done" "the file's group is untouched"
assert_match "$CAP_ERR" 'group "fb": 2 received, 2 done' "--log-level info wins over the file's warning"

# --noop on the command line wins over the file's program.
capture walq consume --config "$WORK/walq.ini" --group fc --noop
assert_eq "$CAP_RC" 0 "--noop over the file's program exits 0 ($CAP_ERR)"
assert_eq "$(outcomes fc)" "qa:done qa:done qa:done qb:done qb:done" "--noop: every job done in fc"
assert_eq "$(wc -l <"$WORK/args.log")" 7 "with --noop the file's program did not run again"

# ------------------------------------------------------------------
# 3. Bad files: exit 2, the file and its line, nothing run.
bad() { # bad NAME LINE EXPECTED-TEXT, the file's text on stdin
    local f=$WORK/$1.ini
    cat >"$f"
    capture walq consume --config "$f"
    assert_eq "$CAP_RC" 2 "$1: exit 2"
    assert_match "$CAP_ERR" "$f:$2: $3" "$1: the message names $f:$2 ($CAP_ERR)"
    assert_match "$CAP_ERR" 'HINT:  |takes |expected ' "$1: the message says what to do"
}
bad unknown_key 4 'unknown setting "concurency" in section \[consume\]' <<INI
[consume]
group = fa
queue = qa
concurency = 4
INI
bad bad_value 3 '"concurrency" takes a whole number from 1 to 4096, not "four"' <<INI
[consume]
group = fa
concurrency = four
INI
bad bad_duration 2 '"timeout" takes seconds, not "10s"' <<INI
[consume]
timeout = 10s
INI
bad unknown_section 1 'unknown section \[consumer\]' <<INI
[consumer]
group = fa
INI
bad no_equals 3 'syntax error' <<INI
[consume]
group = fa
concurrency
INI
capture walq consume --config "$WORK/nonexistent.ini"
assert_eq "$CAP_RC" 2 "missing file: exit 2"
assert_match "$CAP_ERR" "$WORK/nonexistent.ini: could not open the configuration file: No such file or directory" \
    "missing file: named, with the reason"
assert_eq "$(q "SELECT count(*) FROM walq.groups WHERE name NOT IN ('fa', 'fb', 'fc')")" 0 \
    "no bad file made a group"

# ------------------------------------------------------------------
# 4. SIGHUP: concurrency 1, then 4, then a bad file that changes nothing.
sleeper=$(handler sleeper.sh <<HANDLER
phase=\$(cat)
s=\$(date +%s.%N)
sleep 1
e=\$(date +%s.%N)
echo "\$phase \$s \$e \$\$" >>"$WORK/runs.log"
HANDLER
)
# The most handlers of a phase that ran at the same time, from their own records.
overlap() {
    awk -v p="$1" '$1 == p { print $2, 1; print $3, -1 }' "$WORK/runs.log" |
        sort -k1,1n -k2,2n | awk '{ n += $2; if (n > m) m = n } END { print m + 0 }'
}
ran() { awk -v p="$1" '$1 == p' "$WORK/runs.log" 2>/dev/null | wc -l; }
# publish_phase P N: N jobs of payload P in one transaction, so that they
# are all there at once however slow the machine is.
publish_phase() { q "SELECT count(walq.publish('ql', '$1')) FROM generate_series(1, $2)" >/dev/null; }
write_conf() { # the file, replaced at once, as an editor or a deployment would
    cat >"$WORK/live.ini.new"
    mv "$WORK/live.ini.new" "$WORK/live.ini"
}

write_conf <<INI
[consume]
group = live
queue = ql
program = $sleeper
concurrency = 1
backoff_min = 0.1
INI
bg "$WALQ_BIN" consume --config "$WORK/live.ini" 2>"$WORK/live.err"
live=$BG_PID
publish_phase 1 3
wait_for '[ "$(ran 1)" -eq 3 ]' 60 "three jobs of phase 1 to run"
assert_eq "$(overlap 1)" 1 "concurrency = 1: the handlers never overlapped"

write_conf <<INI
[consume]
group = live
queue = ql
program = $sleeper
concurrency = 4
backoff_min = 0.1
status_interval = 5
INI
kill -HUP "$live"
wait_for 'grep -q "concurrency changed from 1 to 4" "$WORK/live.err"' 30 "the consumer to apply concurrency 4"
assert_match "$(cat "$WORK/live.err")" 'setting "status-interval" changed to "5" in "[^"]*live.ini" but needs a restart; it stays "10"' \
    "a setting that does not reload is logged as needing a restart"
publish_phase 2 8
wait_for '[ "$(ran 2)" -eq 8 ]' 60 "eight jobs of phase 2 to run"
assert_eq "$(overlap 2)" 4 "after SIGHUP with concurrency = 4: four handlers ran at once, never more"
kill -0 "$live" 2>/dev/null || fail "the consumer exited on SIGHUP"

write_conf <<INI
[consume]
group = live
concurrency = 9000
INI
kill -HUP "$live"
wait_for 'grep -q "not reloaded" "$WORK/live.err"' 30 "the consumer to refuse the bad file"
assert_match "$(cat "$WORK/live.err")" \
    "ERROR:  configuration file not reloaded; the settings in use stay: $WORK/live.ini:3: \"concurrency\" takes a whole number from 1 to 4096, not \"9000\"" \
    "the bad file is logged with its line, and nothing changes"
publish_phase 3 8
wait_for '[ "$(ran 3)" -eq 8 ]' 60 "eight jobs of phase 3 to run"
assert_eq "$(overlap 3)" 4 "after the bad file the concurrency is still 4"

# The timeout and the log level reload too: a 1 s handler is killed at 0.3 s.
write_conf <<INI
[consume]
group = live
queue = ql
program = $sleeper
concurrency = 4
backoff_min = 0.1
timeout = 0.3
log_level = debug
INI
kill -HUP "$live"
wait_for 'grep -q "timeout_ms changed from 0 to 300" "$WORK/live.err"' 30 "the consumer to apply the timeout"
assert_match "$(cat "$WORK/live.err")" 'log_level changed from 2 to 3' "the log level reloads"
slow=$(walq publish --max-attempts 1 ql 4)
wait_for '[ "$(q "SELECT status FROM walq.job_status WHERE job_id = $slow")" = dead ]' 30 \
    "the job past the reloaded timeout to be dead"
assert_match "$(q "SELECT last_error FROM walq.job_status WHERE job_id = $slow")" '[Tt]imed? ?out|[Tt]imeout' \
    "it died of the timeout that SIGHUP set"
assert_eq "$(ran 4)" 0 "its handler never finished its second of sleep"

kill -TERM "$live"
bg_wait "$live" 30
assert_eq "$BG_RC" 0 "the consumer stops cleanly after its reloads"
assert_eq "$(outcomes live | tr ' ' '\n' | sort | uniq -c | awk '{ print $1, $2 }' | paste -sd' ')" \
    "1 ql:dead 19 ql:done" "the 19 jobs of the three phases are done once each, the slow one dead"

# ------------------------------------------------------------------
# 4b. SIGHUP and a coprocess handler: more workers start; fewer wait for a
#     restart.  The example worker logs "ID ATTEMPT WORKER PID" per job.
cp_conf() { # cp_conf CONCURRENCY
    write_conf_cp <<INI
[consume]
group = cop
queue = qc
handler = coprocess
program = python3 $WALQ_SOURCE_DIR/examples/worker.py
coprocess_inflight = 1
concurrency = $1
INI
}
write_conf_cp() {
    cat >"$WORK/cop.ini.new"
    mv "$WORK/cop.ini.new" "$WORK/cop.ini"
}
workers_of() { # the workers that ran the jobs with payload {"sleep": ..., "phase": P}
    awk '{ print $1, $3 }' "$WORK/workers.log" | sort -u | while read -r id w; do
        [ "$(q "SELECT payload->>'phase' FROM walq.jobs WHERE id = $id")" = "$1" ] && echo "$w"
    done | sort -u | paste -sd' '
}
cp_conf 1
WORKER_LOG=$WORK/workers.log bg "$WALQ_BIN" consume --config "$WORK/cop.ini" 2>"$WORK/cop.err"
cop=$BG_PID
q "SELECT count(walq.publish('qc', '{\"sleep\": 0.3, \"phase\": \"1\"}')) FROM generate_series(1, 3)" >/dev/null
wait_for '[ "$(wc -l <"$WORK/workers.log" 2>/dev/null || echo 0)" -ge 3 ]' 60 "the coprocess to run phase 1"
assert_eq "$(workers_of 1)" "1" "coprocess concurrency 1: one worker ran every job"
cp_conf 3
kill -HUP "$cop"
wait_for 'grep -q "concurrency changed from 1 to 3" "$WORK/cop.err"' 30 "the coprocess handler to grow to 3"
q "SELECT count(walq.publish('qc', '{\"sleep\": 0.5, \"phase\": \"2\"}')) FROM generate_series(1, 9)" >/dev/null
wait_for '[ "$(wc -l <"$WORK/workers.log")" -ge 12 ]' 60 "the coprocess to run phase 2"
assert_eq "$(workers_of 2)" "1 2 3" "after SIGHUP with concurrency = 3: three workers took jobs"
cp_conf 2
kill -HUP "$cop"
wait_for 'grep -q "concurrency 2 takes a restart; keeping 3 workers" "$WORK/cop.err"' 30 \
    "the coprocess handler to keep its workers"
kill -TERM "$cop"
bg_wait "$cop" 30
assert_eq "$BG_RC" 0 "the coprocess consumer stops cleanly after its reloads"
assert_eq "$(q "SELECT count(*) FROM walq.job_status WHERE consumer_group = 'cop' AND status = 'done'")" 12 \
    "the coprocess consumer did all 12 jobs"

# ------------------------------------------------------------------
# 5. The audit, from the [audit] section of a file that has [consume] too.
cat >"$WORK/audit.ini" <<INI
[consume]
group = not_the_audits
[audit]
group = trail
output = $WORK/trail.jsonl
drain = yes
INI
capture walq audit --config "$WORK/audit.ini"
assert_eq "$CAP_RC" 0 "audit configured by the file drains and exits 0 ($CAP_ERR)"
assert_eq "$(q "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'walqaudit_trail'")" 1 \
    "the file's audit group names the slot"
# A new slot starts now: the changes after it come at the next run.
a1=$(walq publish qa '{"audit": 1}')
a2=$(walq publish qa '{"audit": 2}')
capture walq audit --config "$WORK/audit.ini"
assert_eq "$CAP_RC" 0 "the file's audit again ($CAP_ERR)"
assert_eq "$(jq -r 'select(.table == "walq.jobs" and .action == "insert") | .new.id' "$WORK/trail.jsonl" | paste -sd' ')" \
    "$a1 $a2" "the file's output holds the inserts committed since"
capture walq audit --config "$WORK/audit.ini" --group other --output "$WORK/other.jsonl"
assert_eq "$CAP_RC" 0 "audit with command-line overrides exits 0 ($CAP_ERR)"
assert_eq "$(q "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'walqaudit_other'")" 1 \
    "--group wins over the file's"
[ -e "$WORK/other.jsonl" ] || fail "--output wins over the file's: no $WORK/other.jsonl"
assert_eq "$(wc -l <"$WORK/trail.jsonl")" 2 "--output wins: the file's output got nothing more"
printf '[audit]\ndrain = perhaps\n' >"$WORK/bad_audit.ini"
capture walq audit --config "$WORK/bad_audit.ini"
assert_eq "$CAP_RC" 2 "audit with a bad file: exit 2"
assert_match "$CAP_ERR" "$WORK/bad_audit.ini:2: \"drain\" takes yes or no, not \"perhaps\"" "audit: the bad line named"

# SIGHUP: the log level of a running audit.
printf '[audit]\ngroup = live_trail\noutput = %s\n' "$WORK/live.jsonl" >"$WORK/live_audit.ini"
bg "$WALQ_BIN" audit --config "$WORK/live_audit.ini" 2>"$WORK/live_audit.err"
aud=$BG_PID
wait_for 'grep -q "streaming slot" "$WORK/live_audit.err"' 30 "the audit to stream"
printf '[audit]\ngroup = live_trail\noutput = %s\nlog_level = debug\n' "$WORK/live.jsonl" >"$WORK/live_audit.ini"
kill -HUP "$aud"
wait_for 'grep -q "log_level changed from 2 to 3" "$WORK/live_audit.err"' 30 "the audit to log at debug"
walq publish qa '{"after": "reload"}' >/dev/null
wait_for 'grep -q "DEBUG" "$WORK/live_audit.err"' 30 "a debug line from the audit after the reload"
printf '[audit]\ngroup = renamed\n' >"$WORK/live_audit.ini"
kill -HUP "$aud"
wait_for 'grep -q "setting \"group\" changed in \"[^\"]*live_audit.ini\" but needs a restart" "$WORK/live_audit.err"' 30 \
    "the audit to log that a new group needs a restart"
kill -TERM "$aud"
bg_wait "$aud" 30
assert_eq "$BG_RC" 0 "the audit stops cleanly after its reloads"

# ------------------------------------------------------------------
# 6. The example file of examples/ reads as it says (its servers and its
#    program replaced by the command line's).
ex=$WALQ_SOURCE_DIR/examples/walq.conf
capture walq consume --config "$ex" --dbname "$PGTEST_CONN" --group example --noop --drain
assert_eq "$CAP_RC" 0 "examples/walq.conf: consume reads it ($CAP_ERR)"
assert_eq "$(q "SELECT queues FROM walq.groups WHERE name = 'example'")" '{orders,refunds,"gift cards"}' \
    "examples/walq.conf: its three queues, the quoted one whole"
capture walq audit --config "$ex" --source "$PGTEST_CONN" --group example --output "$WORK/example.jsonl" --drain
assert_eq "$CAP_RC" 0 "examples/walq.conf: audit reads it ($CAP_ERR)"
