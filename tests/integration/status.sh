#!/usr/bin/env bash
# shellcheck disable=SC2016  # wait_for evals its condition later
# `walq status` shows each group's slot, lag, cursor and counts by status.
# shellcheck source=SCRIPTDIR/../lib/pgtest.sh
. "$(dirname "$0")/../lib/pgtest.sh"
require_walq
pg_start
walq init

odd_fails=$(handler odd.sh <<'HANDLER'
payload=$(cat)
case $payload in
*[13579]\}) exit 1 ;;
esac
exit 0
HANDLER
)

publish_sql st 50 1
walq_timeout 60 consume --group sg --queue st --concurrency 2 --backoff-min 0.01 --backoff-max 0.05 \
    --drain -- "$odd_fails"
assert_eq "$(q "SELECT string_agg(status || ':' || n, ',' ORDER BY status)
                 FROM (SELECT status, count(*) n FROM walq.job_status WHERE consumer_group = 'sg'
                        GROUP BY 1) s")" \
    "dead:25,done:25" "25 done and 25 dead (max_attempts 1)"
assert_eq "$(q "SELECT cursor_lsn > '0/0' FROM walq.readers WHERE group_name = 'sg'")" t "the group's cursor moved"

# A second group that has seen nothing yet, and a backlog for both.
walq_timeout 60 consume --group other --queue elsewhere --drain --noop
publish_sql st 10

capture walq status
assert_eq "$CAP_RC" 0 "walq status exits 0"
printf '%s\n' "$CAP_OUT" | sed 's/^/    | /'

# col GROUP COLUMN: the cell of the group's row under the column's header.
col() {
    printf '%s\n' "$CAP_OUT" | awk -v g="$1" -v c="$2" '
        $1 == "group" { for (i = 1; i <= NF; i++) if ($i == c) k = i; next }
        k && $1 == g { print $k; exit }'
}
assert_eq "$(col sg slot)" walq_sg "walq status: group sg, slot walq_sg"
assert_eq "$(col other slot)" walq_other "walq status: group other, slot walq_other"
cursor=$(q "SELECT cursor_lsn FROM walq.readers WHERE group_name = 'sg'")
assert_eq "$(col sg cursor)" "$cursor" "walq status: the cursor of sg"
lag=$(col sg lag_bytes)
assert_match "$lag" '^[0-9]+$' "walq status: lag in bytes ($lag)"
[ "$lag" -gt 0 ] || fail "walq status: sg has a backlog of 10 jobs but a lag of $lag bytes"
assert_eq "$(col sg "done")" 25 "walq status: 25 done"
assert_eq "$(col sg dead)" 25 "walq status: 25 dead"
assert_eq "$(col sg queued)" 10 "walq status: 10 queued (published, not yet seen)"
assert_eq "$(col other "done")" 0 "walq status: nothing done in group other"

capture walq status --dbname "host=$PGHOST port=$PGPORT dbname=postgres"
assert_eq "$CAP_RC" 0 "walq status --dbname exits 0"
assert_match "$CAP_OUT" 'walq_sg' "walq status --dbname shows the group"
pass "all"
