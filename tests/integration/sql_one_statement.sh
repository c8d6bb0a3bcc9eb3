#!/usr/bin/env bash
# shellcheck disable=SC2016  # $1 and $2 are the statement's parameters
# --sql is exactly one statement (issue 13): the start-up check prepares it
# with the extended protocol, which takes one statement and runs nothing, so
# `--sql 'SELECT 1; DROP TABLE x'` no longer drops x at start-up.  The
# consumer exits with an error that names the flag; one statement still runs.
# shellcheck source=SCRIPTDIR/../lib/pgtest.sh
. "$(dirname "$0")/../lib/pgtest.sh"
require_walq
pg_start
walq init >/dev/null 2>&1
q "CREATE TABLE victim (x int); INSERT INTO victim VALUES (1)"
q "CREATE TABLE effects (job_id bigint NOT NULL, payload jsonb)"
publish_sql sq 5

for stmt in 'SELECT 1; DROP TABLE victim' \
    'INSERT INTO effects VALUES ($2, $1); DROP TABLE victim' \
    'INSERT INTO effects VALUES ($2, $1); DROP TABLE victim;' \
    'SELECT 1 /* ; */; DROP TABLE victim -- ;'; do
    capture walq_timeout 30 consume --group sg --queue sq --drain --sql "$stmt"
    assert_eq "$(q "SELECT count(*) FROM victim")" 1 "--sql \"$stmt\": table victim is still there"
    [ "$CAP_RC" -ne 0 ] || fail "--sql \"$stmt\": the consumer exited 0"
    assert_match "$CAP_ERR" 'invalid sql handler statement: it holds more than one statement' \
        "--sql \"$stmt\": the consumer says the statement is more than one"
    assert_match "$CAP_ERR" 'HINT:  --sql \(the sql option\) takes exactly one statement' \
        "--sql \"$stmt\": the hint names the flag and the fix"
done
assert_eq "$(q "SELECT count(*) FROM effects")" 0 "no job ran with a statement that was refused"
assert_eq "$(q "SELECT count(*) FROM walq.job_status WHERE consumer_group = 'sg' AND status <> 'queued'")" 0 \
    "no outcome was recorded for a refused statement"

# A statement that is wrong otherwise keeps its own message.
capture walq_timeout 30 consume --group sg --queue sq --drain --sql 'INSERT INTO nosuch VALUES ($2)'
[ "$CAP_RC" -ne 0 ] || fail "a statement on a missing table: the consumer exited 0"
assert_match "$CAP_ERR" 'invalid sql handler statement: .*relation "nosuch" does not exist' \
    "a statement on a missing table: the server's message"

# One statement, with a ";" at its end and inside a string, runs per job.
capture walq_timeout 60 consume --group sg --queue sq --drain \
    --sql 'INSERT INTO effects SELECT $2, $1 || jsonb_build_object($$k;$$, 1);'
assert_eq "$CAP_RC" 0 "one statement: the consumer drains ($CAP_ERR)"
assert_eq "$(q "SELECT count(*), count(DISTINCT job_id), bool_and(payload ? 'k;') FROM effects")" "5|5|t" \
    "one statement: one effect per job"
assert_eq "$(q "SELECT count(*) FROM victim")" 1 "table victim is still there at the end"
