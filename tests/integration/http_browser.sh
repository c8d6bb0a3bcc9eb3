#!/usr/bin/env bash
# shellcheck disable=SC2016  # wait_for evals its condition later
# The status page of walq consume --http in a real browser: headless
# Chromium loads it, runs it, and dumps the DOM it built; what it shows is
# checked against SQL: the group, the counts by status, the readers, the
# rates, and a dead job's error, which holds markup and script that must
# show as text, never become elements or run.
# shellcheck source=SCRIPTDIR/../lib/pgtest.sh
. "$(dirname "$0")/../lib/pgtest.sh"
require_walq
CHROMIUM=${CHROMIUM:-$(command -v chromium || true)}
[ -n "$CHROMIUM" ] || pgtest_skip "no chromium (Debian's chromium package; tests/setup-debian.sh installs it)"
command -v curl >/dev/null || pgtest_skip "curl is not installed (tests/setup-debian.sh installs it)"
pg_start
walq init

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
# Job 3 fails for good with an error that is markup; the others are done.
h=$(handler h.sh <<'HANDLER'
n=$(sed 's/[^0-9]//g')
if [ "$n" -eq 3 ]; then
    printf '%s' "<script>document.title='pwned';document.body.setAttribute('data-pwned','1')</script>" >&2
    printf '%s' "<img src=x onerror=\"document.body.setAttribute('data-pwned','2')\"> & <b>bold</b> \"q\" 'a'" >&2
    exit 1
fi
exit 0
HANDLER
)
publish_sql q 12 1
q "INSERT INTO walq.jobs (queue, payload, run_at) VALUES ('q', '{\"n\": 100}', now() + interval '1 hour')" >/dev/null
bg "$WALQ_BIN" consume --group hb --queue q --concurrency 2 --status-interval 1 \
    --http "127.0.0.1:$port" -- "$h"
cons=$BG_PID
wait_for '[ "$(q "SELECT count(*) FROM walq.job_status WHERE consumer_group = '"'hb'"'
                   AND status IN ('"'done', 'dead', 'scheduled'"')")" -eq 13 ]' 60 \
    "11 done, 1 dead, 1 scheduled"
wait_for '[ "$(curl -s -o /dev/null -w "%{http_code}" "http://127.0.0.1:$port/readyz")" = 200 ]' 30 "ready"

curl -s -D "$WORK/headers" -o /dev/null "http://127.0.0.1:$port/"
assert_match "$(cat "$WORK/headers")" "Content-Type: text/html; charset=utf-8" "the page is HTML"

timeout -k 5 90 "$CHROMIUM" --headless --no-sandbox --disable-gpu --no-first-run \
    --user-data-dir="$WORK/chromium" --dump-dom "http://127.0.0.1:$port/" \
    >"$WORK/dom.html" 2>"$WORK/chromium.log" ||
    fail "chromium could not load the page: $(tail -5 "$WORK/chromium.log")"
[ -s "$WORK/dom.html" ] || fail "chromium dumped no DOM: $(tail -5 "$WORK/chromium.log")"

# What the browser built, read back with a real HTML parser: the text of
# the elements the test looks at, and every element's tag.
cat >"$WORK/dom.py" <<'PY'
import json, sys
from html.parser import HTMLParser

class P(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack, self.ids, self.tags, self.errors, self.body = [], {}, [], [], {}
        self.rates, self.readers, self.row, self.table = [], [], None, None
        self.title = ""
    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append(tag)
        if tag == "body":
            self.body = a
        if tag == "table":
            self.table = a.get("id")
        if tag == "tr":
            self.row = []
        if tag in ("td", "th") and self.row is not None:
            self.row.append("")
        self.stack.append((tag, a.get("id"), a.get("class"), len(self.errors)))
        if a.get("class") == "error":
            self.errors.append("")
    def handle_endtag(self, tag):
        while self.stack:
            t = self.stack.pop()
            if t[0] == tag:
                break
        if tag == "tr" and self.row is not None:
            if self.table == "rates":
                self.rates.append(self.row)
            elif self.table == "readers":
                self.readers.append(self.row)
            self.row = None
    def handle_data(self, d):
        for tag, id_, cls, _ in self.stack:
            if id_:
                self.ids[id_] = self.ids.get(id_, "") + d
            if cls == "error":
                self.errors[-1] += d
            if tag == "title":
                self.title += d
        if self.row is not None and self.row:
            self.row[-1] += d

p = P()
p.feed(sys.stdin.read())
json.dump({"ids": p.ids, "tags": sorted(set(p.tags)), "errors": p.errors, "body": p.body,
           "rates": p.rates, "readers": p.readers, "title": p.title}, sys.stdout)
PY
python3 "$WORK/dom.py" <"$WORK/dom.html" >"$WORK/dom.json"
dom() { jq -r "$1" "$WORK/dom.json"; }

assert_eq "$(dom .ids.group)" hb "the page names the group"
assert_match "$(dom .title)" "^walq consume hb$" "the title is the page's own"
for st in queued running scheduled done dead cancelled; do
    assert_eq "$(dom ".ids[\"count-$st\"]")" \
        "$(q "SELECT count(*) FROM walq.job_status WHERE consumer_group = 'hb' AND status = '$st'")" \
        "the page's $st count is SQL's"
done
assert_eq "$(dom '.ids["count-done"]')|$(dom '.ids["count-dead"]')|$(dom '.ids["count-scheduled"]')" \
    "11|1|1" "and those are the workload's"

# The dead job's error, exactly as SQL holds it, and shown as text only.
assert_eq "$(dom '.errors | length')" 1 "one dead job shown"
assert_eq "$(dom '.errors[0]')" "$(q "SELECT last_error FROM walq.dead_jobs WHERE consumer_group = 'hb'")" \
    "the dead job's error is shown as SQL has it"
assert_match "$(dom '.errors[0]')" "<script>document.title='pwned'" "with its markup as text"
assert_eq "$(dom '.tags | map(select(. == "script" or . == "img" or . == "b")) | length')" 0 \
    "no element came from the error: no script, img or b"
assert_eq "$(dom '.body["data-pwned"] // "none"')" none "nothing of the error ran"
assert_match "$(cat "$WORK/dom.html")" "&lt;script&gt;" "the error is escaped in the DOM"

# The readers, from walq.readers: this process holds the group's one reader.
assert_eq "$(dom '.readers | length')" 2 "a header and one reader"
assert_eq "$(dom '.readers[1][1]')" walq_hb "the reader's slot"
assert_match "$(dom '.readers[1][3]')" "pid $cons\$" "held by this consumer"
# The minutes' ring: everything this process received, minute by minute.
assert_eq "$(dom '[.rates[1:][] | .[1] | tonumber] | add')" 13 "the rates add up to the jobs received"
assert_eq "$(dom '.ids.ready')" ready "the page says ready"

kill -TERM "$cons"
bg_wait "$cons" 20
assert_eq "$BG_RC" 0 "the consumer exits 0 on SIGTERM"
pass "headless Chromium shows the page as SQL has it, the error escaped"

# A partition's page counts its partition's jobs, and its metrics say which.
pport=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
publish_sql p 40
bg "$WALQ_BIN" consume --group hp --queue p --partition 1/2 --noop --status-interval 1 \
    --http "127.0.0.1:$pport"
pcons=$BG_PID
part_done="SELECT count(*) FROM walq.job_status WHERE consumer_group = 'hp'
             AND walq.partition_of(job_id, 2) = 1 AND status = 'done'"
part_jobs=$(q "SELECT count(*) FROM walq.jobs WHERE queue = 'p' AND walq.partition_of(id, 2) = 1")
[ "$part_jobs" -gt 0 ] && [ "$part_jobs" -lt 40 ] || fail "partition 1 of 2 has $part_jobs of the 40 jobs"
wait_for '[ "$(q "$part_done")" -eq "$part_jobs" ]' 60 "partition 1 of 2 done"
timeout -k 5 90 "$CHROMIUM" --headless --no-sandbox --disable-gpu --no-first-run \
    --user-data-dir="$WORK/chromium" --dump-dom "http://127.0.0.1:$pport/" >"$WORK/dom.html" 2>>"$WORK/chromium.log" ||
    fail "chromium could not load the partition's page"
python3 "$WORK/dom.py" <"$WORK/dom.html" >"$WORK/dom.json"
assert_eq "$(dom .ids.partition)" 1/2 "the page names the partition"
assert_eq "$(dom '.ids["count-done"]')" "$part_jobs" "the partition's done count is SQL's, for its jobs only"
assert_eq "$(dom '.ids["count-queued"]')" 0 "none of its jobs queued"
assert_match "$(curl -s "http://127.0.0.1:$pport/metrics")" \
    "walq_jobs_done_total\{group=\"hp\",partition=\"1\",queue=\"p\"\} $part_jobs" \
    "its metrics carry partition=\"1\""
kill -TERM "$pcons"
bg_wait "$pcons" 20
pass "a partition's page and metrics are its own"
