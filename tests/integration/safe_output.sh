#!/usr/bin/env bash
# What walq prints and the files it creates (issue 13): `walq job show` and
# `walq job list` print handler output and producers' text with control
# characters escaped, so that a handler's "\033]0;pwned\007" cannot retitle
# or rewrite the operator's terminal; and the audit's output file, which
# holds every payload, is created 0600 whatever the umask, or with the mode
# --file-mode gives.
# shellcheck source=SCRIPTDIR/../lib/pgtest.sh
. "$(dirname "$0")/../lib/pgtest.sh"
require_walq
pg_start
walq init >/dev/null 2>&1

# has_controls TEXT: TEXT holds a byte a terminal acts on (C0 other than newline, DEL, ESC).
has_controls() { LC_ALL=C grep -q "[$(printf '\001-\011\013-\037\177')]" <<<"$1"; }

h=$(handler evil.sh <<'EOF'
cat >/dev/null
printf 'working\n\033]0;pwned\007\033[2Jgave up\n' >&2
exit 1
EOF
)
id=$(q "SELECT walq.publish(E'evil\\033[31m', '{\"k\": 1}', max_attempts => 1)")
capture walq_timeout 60 consume --group g --queue "$(printf 'evil\033[31m')" --drain -- "$h"
assert_eq "$CAP_RC" 0 "the consumer drains the job"
assert_eq "$(q "SELECT status FROM walq.job_status WHERE job_id = $id")" dead "the job is dead"
assert_match "$(q "SELECT last_error FROM walq.job_status WHERE job_id = $id")" $'\033]0;pwned' \
    "last_error holds what the handler wrote, escape sequence and all"

capture walq job show "$id"
assert_eq "$CAP_RC" 0 "walq job show exits 0"
if has_controls "$CAP_OUT"; then
    fail "walq job show printed a control character: $(printf '%q' "$CAP_OUT")"
fi
pass "walq job show prints no control character"
assert_match "$CAP_OUT" 'working \\e\]0;pwned\\x07\\e\[2Jgave up' \
    "walq job show shows the handler's escape sequences escaped"
assert_match "$CAP_OUT" '^queue +evil\\e\[31m$' "walq job show escapes the queue name"

capture walq job list --status dead
assert_eq "$CAP_RC" 0 "walq job list exits 0"
if has_controls "$CAP_OUT"; then
    fail "walq job list printed a control character: $(printf '%q' "$CAP_OUT")"
fi
pass "walq job list prints no control character"
assert_match "$CAP_OUT" '\\e\]0;pwned\\x07' "walq job list shows the escape sequence escaped"
# The columns stay aligned: the header's second column starts where the row's does.
hdr=$(head -n 1 <<<"$CAP_OUT")
row=$(grep "^$id " <<<"$CAP_OUT")
assert_eq "$(awk '{ print index($0, $2) }' <<<"$hdr")" "$(awk '{ print index($0, $2) }' <<<"$row")" \
    "walq job list keeps its columns aligned around escaped text"
# UTF-8 text is text: shown as it is.
id2=$(q "SELECT walq.publish('caf' || chr(233), '{\"s\": \"日本\"}')")
capture walq job show "$id2"
assert_match "$CAP_OUT" "^queue +café\$" "walq job show prints UTF-8 as it is"
assert_match "$CAP_OUT" '"s": "日本"' "walq job show prints a UTF-8 payload as it is"

# The audit's file: 0600 under the usual umask 022, and under 000.
audit_mode() {
    local file=$1 um=$2
    shift 2
    rm -f "$file"
    (umask "$um" && walq_timeout 60 audit --output "$file" --drain "$@") \
        >/dev/null 2>"$WORK/audit.err" || fail "walq audit failed: $(cat "$WORK/audit.err")"
    [ -e "$file" ] || fail "walq audit made no file $file"
    stat -c %a "$file"
}
assert_eq "$(audit_mode "$WORK/a.jsonl" 022 --group a1)" 600 "the audit file is created 0600 (umask 022)"
assert_eq "$(audit_mode "$WORK/a.jsonl" 000 --group a2)" 600 "the audit file is created 0600 (umask 000)"
assert_eq "$(audit_mode "$WORK/a.jsonl" 022 --group a3 --file-mode 0640)" 640 \
    "--file-mode 0640 gives the file 0640"
assert_eq "$(audit_mode "$WORK/a.jsonl" 077 --group a4 --file-mode 640)" 640 \
    "--file-mode 640 gives 0640 even under umask 077"
# A file that exists keeps its mode, and a mode more open than asked is warned about.
: >"$WORK/open.jsonl"
chmod 0644 "$WORK/open.jsonl"
capture walq_timeout 60 audit --output "$WORK/open.jsonl" --group a5 --drain
assert_eq "$CAP_RC" 0 "walq audit into a file that exists"
assert_eq "$(stat -c %a "$WORK/open.jsonl")" 644 "a file that exists keeps its mode"
assert_match "$CAP_ERR" 'WARNING:  audit "a5": output file ".*open.jsonl" has mode 0644, more open than 0600' \
    "walq audit warns of a file that others can read"
assert_match "$CAP_ERR" 'HINT:  .*chmod 0600 it, or give --file-mode 0644' "the hint says the two fixes"
capture walq_timeout 60 audit --output "$WORK/open.jsonl" --group a5 --drain --file-mode 0644
assert_eq "$(grep -c 'more open than' <<<"$CAP_ERR" || true)" 0 "--file-mode 0644 accepts it: no warning"
capture walq audit --output "$WORK/x.jsonl" --file-mode 0800
assert_eq "$CAP_RC" 2 "--file-mode 0800: a usage error"
assert_match "$CAP_ERR" '--file-mode takes permissions in octal, such as 0640, not "0800"' \
    "--file-mode 0800: the error names the flag and the form"
