#!/usr/bin/env bash
# shellcheck disable=SC2016  # wait_for evals its condition later
# A group touches only its own queues; groups are independent of each other.
# shellcheck source=SCRIPTDIR/../lib/pgtest.sh
. "$(dirname "$0")/../lib/pgtest.sh"
require_walq
pg_start
walq init

h=$(handler record.sh <<HANDLER
cat >/dev/null
echo "\$WALQ_GROUP \$WALQ_QUEUE \$WALQ_JOB_ID" >>"$WORK/ran.log"
HANDLER
)

publish_sql a 100
publish_sql b 100
publish_sql c 50

walq_timeout 60 consume --group ga --queue a --concurrency 2 --drain -- "$h"
assert_all_done ga '^a$' 100
assert_eq "$(q "SELECT (SELECT count(*) FROM walq.outcomes WHERE group_name <> 'ga')
                      + (SELECT count(*) FROM walq.outcome_batches WHERE group_name <> 'ga')")" 0 \
    "only ga has outcomes"
assert_eq "$(grep -c '^ga a ' "$WORK/ran.log")" 100 "ga's handler saw queue a only"

walq_timeout 60 consume --group gb --queue b --concurrency 2 --drain -- "$h"
assert_all_done gb '^b$' 100
assert_all_done ga '^a$' 100

# Jobs published now come through the stream, not the backfill.
publish_sql a 20
publish_sql b 30
walq_timeout 60 consume --group ga --queue a --drain -- "$h"
walq_timeout 60 consume --group gb --queue b --drain -- "$h"
assert_all_done ga '^a$' 120
assert_all_done gb '^b$' 130

# One group over two queues.
walq_timeout 60 consume --group gab --queue a --queue b --concurrency 3 --drain -- "$h"
assert_all_done gab '^(a|b)$' 250
assert_eq "$(grep -c '^gab [ab] ' "$WORK/ran.log")" 250 "gab's handler saw queues a and b"
assert_eq "$(grep -c ' c ' "$WORK/ran.log" || true)" 0 "no handler saw queue c"

# job_status: a job of queue a is listed for ga and gab, not for gb.
a1=$(q "SELECT min(id) FROM walq.jobs WHERE queue = 'a'")
assert_eq "$(q "SELECT string_agg(consumer_group || ':' || status, ',' ORDER BY consumer_group)
                 FROM walq.job_status WHERE job_id = $a1")" "ga:done,gab:done" "job_status of a job of queue a"
assert_eq "$(q "SELECT count(*) FROM walq.job_status WHERE queue = 'c'")" 0 "no group lists queue c"
assert_eq "$(q "SELECT count(*) FROM walq.job_status GROUP BY job_id, consumer_group HAVING count(*) > 1")" "" \
    "job_status: one row per job per group"
pass "all"
