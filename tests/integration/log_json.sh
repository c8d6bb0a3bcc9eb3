#!/usr/bin/env bash
# shellcheck disable=SC2016  # wait_for evals its condition later
# --log-format json: every line walq writes on standard error is one JSON
# object (time in RFC 3339 UTC, level, message, and what the message is
# about), whatever bytes a handler's stderr or a user's argument holds:
# quotes, newlines, control characters and bytes that are not UTF-8.
# shellcheck source=SCRIPTDIR/../lib/pgtest.sh
. "$(dirname "$0")/../lib/pgtest.sh"
require_walq
pg_start
walq init

# Checks that every line of FILE is a JSON object with time, level and
# message, and prints the objects again as JSON lines (ASCII only) for jq.
check_json() {
    python3 - "$1" <<'PY'
import json, re, sys
raw = open(sys.argv[1], 'rb').read()
if not raw:
    sys.exit("no output at all")
if not raw.endswith(b"\n"):
    sys.exit("the last line has no newline")
for n, line in enumerate(raw.split(b"\n")[:-1], 1):
    try:
        text = line.decode("utf-8")           # strict: bytes that are not UTF-8 fail
        obj = json.loads(text)                # strict: raw control characters fail
    except Exception as e:
        sys.exit("line %d is not one UTF-8 JSON object (%s): %r" % (n, e, line))
    if not isinstance(obj, dict):
        sys.exit("line %d is not an object: %r" % (n, line))
    for k in ("time", "level", "message"):
        if not isinstance(obj.get(k), str):
            sys.exit("line %d has no string %s: %r" % (n, k, line))
    if not re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", obj["time"]):
        sys.exit("line %d: time %r is not RFC 3339 UTC" % (n, obj["time"]))
    if obj["level"] not in ("error", "warning", "info", "debug"):
        sys.exit("line %d: unknown level %r" % (n, obj["level"]))
    print(json.dumps(obj, ensure_ascii=True))
PY
}

# A handler whose stderr holds everything that breaks hand-made JSON.
nasty=$(handler nasty.sh <<'HANDLER'
cat >/dev/null
printf 'said "hi" \\ back\nsecond\tline \001 bad \377\376 end' >&2
exit 1
HANDLER
)
publish_sql lj 3 1
walq_timeout 60 --log-format json consume --group lj --queue lj --drain --verbose -- "$nasty" \
    2>"$WORK/consume.err"
pass "consume --drain with --log-format json exits 0"
check_json "$WORK/consume.err" >"$WORK/consume.json" || fail "consume: $(check_json "$WORK/consume.err" 2>&1 | tail -1)"
pass "every line of the consume run is a JSON object ($(wc -l <"$WORK/consume.json") lines)"

assert_eq "$(jq -r 'select(.message | test("is dead after")) | .group' "$WORK/consume.json" | sort -u)" \
    lj "the dead jobs' warnings name the group as a field"
assert_eq "$(jq -r 'select(.message | test("is dead after")) | .slot' "$WORK/consume.json" | sort -u)" \
    walq_lj "and the slot"
assert_eq "$(jq -r 'select(.message | test("is dead after")) | .level' "$WORK/consume.json" | sort -u)" \
    warning "at level warning"
assert_eq "$(jq -c 'select(.message | test("is dead after"))' "$WORK/consume.json" | wc -l)" 3 \
    "one warning per dead job"
msg=$(jq -r 'select(.message | test("is dead after")) | .message' "$WORK/consume.json" | head -c 2000)
assert_match "$msg" 'said "hi" \\ back' "the handler's quotes and backslash survive"
# The library makes a handler's text one line of valid UTF-8 (src/text.c); the
# JSON line holds what it made of it.
[[ "$msg" == *'back'?'second'?'line'* ]] || fail "the handler's lines are in the message: $msg"
[[ "$msg" == *$'\xef\xbf\xbd'* ]] || fail "the bytes that are not UTF-8 became U+FFFD: $msg"
[[ "$msg" != *'group "lj"'* ]] || fail "the library's prefix is taken off the message: $msg"
pass "the handler's stderr is in the message, quoted, made valid UTF-8"
assert_eq "$(jq -r 'select(.message | test("^group \"lj\": [0-9]+ received")) | .level' "$WORK/consume.json" | wc -l)" 0 \
    "the summary's message has no prefix either"
assert_match "$(jq -r 'select(.message | test("received, [0-9]+ done")) | .message' "$WORK/consume.json")" \
    '^3 received, 0 done, 0 retried, 3 dead in ' "the summary is a JSON line too"
assert_match "$(jq -r 'select(.level == "debug") | .message' "$WORK/consume.json" | head -1)" '.' \
    "--verbose's debug lines are JSON lines"
assert_eq "$(q "SELECT count(*) FROM ($(recorded_sql lj)) r WHERE r.status = 'dead'")" 3 \
    "SQL agrees: 3 dead"

# Errors: a hint becomes its own field; an argument that is not UTF-8 is made so.
capture "$WALQ_BIN" --log-format json consume --group lj --queue lj --noop --plugin $'x\xff"\n'
assert_eq "$CAP_RC" 2 "a bad --plugin is a usage error"
printf '%s\n' "$CAP_ERR" >"$WORK/usage.err"
check_json "$WORK/usage.err" >"$WORK/usage.json" || fail "usage error: $(cat -v "$WORK/usage.err")"
assert_eq "$(wc -l <"$WORK/usage.json")" 1 "the usage error is one line"
assert_eq "$(jq -r .level "$WORK/usage.json")" error "at level error"
assert_match "$(jq -r .message "$WORK/usage.json")" $'^--plugin takes pgoutput, wal2json or auto, not "x\xef\xbf\xbd"\n"$' \
    "the argument's bytes are in the message, made valid UTF-8"
assert_match "$(jq -r .hint "$WORK/usage.json")" 'walq --help' "the pointer to --help is the hint"

capture "$WALQ_BIN" consume --log-format json --group 'Bad"name' --queue lj --noop
printf '%s\n' "$CAP_ERR" >"$WORK/bad.err"
check_json "$WORK/bad.err" >"$WORK/bad.json" || fail "bad group: $(cat -v "$WORK/bad.err")"
assert_eq "$(jq -r .message "$WORK/bad.json")" 'invalid consumer group name "Bad"name"' \
    "--log-format after the command works too"
assert_match "$(jq -r .hint "$WORK/bad.json")" '^Use lower-case letters' "with the hint apart"

capture "$WALQ_BIN" --log-format json init --dbname "host=$WORK/nowhere port=1 connect_timeout=2"
assert_eq "$CAP_RC" 1 "init against no server fails"
printf '%s\n' "$CAP_ERR" >"$WORK/init.err"
check_json "$WORK/init.err" >/dev/null || fail "init's error: $(cat -v "$WORK/init.err")"
pass "other commands' errors are JSON lines too"
printf '{"a": 1}\n{"b": \n' | "$WALQ_BIN" --log-format json publish ljp 2>"$WORK/publish.err" && fail "a bad line fails publish"
check_json "$WORK/publish.err" >"$WORK/publish.json" || fail "publish: $(cat -v "$WORK/publish.err")"
assert_eq "$(jq -r .level "$WORK/publish.json" | tr '\n' ' ')" "error info " \
    "publish's error and its summary are JSON lines"
assert_match "$(jq -r .message "$WORK/publish.json" | head -1)" '^line 2: invalid JSON' "naming the line"
walq --log-format json init 2>"$WORK/init2.err"
check_json "$WORK/init2.err" >/dev/null || fail "init: $(cat -v "$WORK/init2.err")"
pass "init's and publish's own lines are JSON too"

# The configuration file's log_format, as the units would have it.
cat >"$WORK/walq.conf" <<CONF
[consume]
group = lj
queue = lj
handler = noop
log_format = json
CONF
publish_sql lj 2
walq_timeout 60 consume --config "$WORK/walq.conf" --drain 2>"$WORK/conf.err"
check_json "$WORK/conf.err" >"$WORK/conf.json" || fail "--config: $(cat -v "$WORK/conf.err")"
assert_match "$(jq -r 'select(.message | test("received, [0-9]+ done")) | .message' "$WORK/conf.json")" \
    '^2 received, 2 done, 0 retried, 0 dead in ' "log_format = json in the file: JSON lines"

# The audit, and a text run for contrast: no JSON unless asked.
walq_timeout 60 audit --log-format json --output "$WORK/audit.jsonl" --drain 2>"$WORK/audit.err"
check_json "$WORK/audit.err" >"$WORK/audit.json" || fail "audit: $(cat -v "$WORK/audit.err")"
assert_eq "$(jq -r 'select(.message | test("changes in")) | .group' "$WORK/audit.json")" audit \
    "the audit's summary names its group"
walq_timeout 60 consume --group lj --queue lj --drain --noop 2>"$WORK/text.err"
assert_match "$(cat "$WORK/text.err")" '^walq: group "lj": 0 received' "without --log-format: text"
