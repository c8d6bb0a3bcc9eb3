#!/usr/bin/env bash
# shellcheck disable=SC2016  # wait_for evals its condition later
# Publishing: walq.publish(), a plain INSERT, `walq publish` with an argument
# and from stdin, and a bad line in the middle of stdin.
# shellcheck source=SCRIPTDIR/../lib/pgtest.sh
. "$(dirname "$0")/../lib/pgtest.sh"
require_walq
pg_start
walq init

# The SQL function.
id=$(q "SELECT walq.publish('q', '{\"a\": 1}')")
assert_match "$id" '^[0-9]+$' "walq.publish returns an id"
assert_eq "$(q "SELECT queue || ' ' || (payload->>'a') || ' ' || max_attempts FROM walq.jobs WHERE id = $id")" \
    "q 1 25" "walq.publish stored the job"

# A plain INSERT, with the optional columns.
id2=$(q "INSERT INTO walq.jobs (queue, payload, priority, max_attempts, dedup_key)
         VALUES ('q', '{\"b\": 2}', 5, 3, 'k1') RETURNING id")
assert_eq "$(q "SELECT priority || ' ' || max_attempts || ' ' || dedup_key FROM walq.jobs WHERE id = $id2")" \
    "5 3 k1" "a plain INSERT works"

# The CLI with the payload as an argument: the id on stdout.
capture walq publish cliq '{"s": "h\u00e9llo \"quoted\"", "n": [1, 2.5, null, true]}'
assert_eq "$CAP_RC" 0 "walq publish QUEUE JSON exits 0"
assert_match "$CAP_OUT" '^[0-9]+$' "walq publish QUEUE JSON prints the id"
assert_eq "$(q "SELECT payload->>'s' FROM walq.jobs WHERE id = $CAP_OUT AND queue = 'cliq'")" \
    'héllo "quoted"' "a payload with escapes and unicode round-trips"
assert_eq "$(q "SELECT payload->'n' FROM walq.jobs WHERE id = $CAP_OUT")" '[1, 2.5, null, true]' \
    "an array in the payload round-trips"

capture walq publish cliq '{"oops"'
assert_eq "$CAP_RC" 1 "an invalid JSON argument exits 1"
assert_match "$CAP_ERR" '^walq: ERROR:  ' "an invalid JSON argument: error in PostgreSQL's style"

capture walq publish --dbname "host=$PGHOST port=$PGPORT dbname=postgres" dbq '{"via": "dbname"}'
assert_eq "$CAP_RC" 0 "walq publish --dbname exits 0"
assert_eq "$(q "SELECT count(*) FROM walq.jobs WHERE queue = 'dbq'")" 1 "walq publish --dbname published"

# The CLI from stdin, enough lines to span several batches.
seq 1 5000 | sed 's/.*/{"i": &}/' >"$WORK/good.jsonl"
capture walq publish batchq <"$WORK/good.jsonl"
assert_eq "$CAP_RC" 0 "walq publish from stdin exits 0"
assert_eq "$CAP_OUT" "" "nothing on stdout when publishing from stdin"
assert_match "$CAP_ERR" 'published 5000 jobs to queue "batchq"' "publishing from stdin reports the count"
assert_eq "$(q "SELECT count(*), count(DISTINCT payload->>'i'), min((payload->>'i')::int), max((payload->>'i')::int)
                 FROM walq.jobs WHERE queue = 'batchq'")" "5000|5000|1|5000" "all 5000 lines are published"
assert_eq "$(q "SELECT bool_and(a.id < b.id) FROM walq.jobs a JOIN walq.jobs b
                   ON b.queue = a.queue AND (b.payload->>'i')::int = (a.payload->>'i')::int + 1
                WHERE a.queue = 'batchq'")" t "ids follow the order of the lines"

# A bad line after 1500 good ones: the error names it, the lines before it
# stay published and the message says how many were.
{
    seq 1 1500 | sed 's/.*/{"i": &}/'
    echo '{"i": 1501, broken'
    seq 1502 1600 | sed 's/.*/{"i": &}/'
} >"$WORK/bad.jsonl"
capture walq publish badq <"$WORK/bad.jsonl"
assert_eq "$CAP_RC" 1 "a bad line exits 1"
assert_match "$CAP_ERR" '^walq: ERROR:  ' "a bad line: error in PostgreSQL's style"
assert_match "$CAP_ERR" 'line 1501([^0-9]|$)' "the error names line 1501"
published=$(q "SELECT count(*) FROM walq.jobs WHERE queue = 'badq'")
assert_eq "$(q "SELECT count(*) FROM walq.jobs WHERE queue = 'badq' AND (payload->>'i')::int <= 1500")" 1500 \
    "the 1500 lines before the bad one are published"
assert_eq "$(q "SELECT count(*) FROM walq.jobs WHERE queue = 'badq' AND (payload->>'i')::int = 1501")" 0 \
    "the bad line is not published"
assert_match "$CAP_ERR" "(^|[^0-9])$published([^0-9]|\$)" \
    "the message says how many lines were published ($published)"

# A bad first line: nothing published, line 1 named.
capture walq publish badq2 <<<'not json'
assert_eq "$CAP_RC" 1 "a bad first line exits 1"
assert_match "$CAP_ERR" 'line 1([^0-9]|$)' "the error names line 1"
assert_eq "$(q "SELECT count(*) FROM walq.jobs WHERE queue = 'badq2'")" 0 "nothing is published"

# Usage errors.
capture walq publish
assert_eq "$CAP_RC" 2 "walq publish without a queue is a usage error (exit 2)"
capture walq publish --no-such-option q
assert_eq "$CAP_RC" 2 "an unknown option is a usage error (exit 2)"

pass "all"
