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

# walq.group_counts, which walq status shows, counts as walq.job_status does:
# for the groups above, for each reader of a group split in two (one that
# ran, one that did not), and after a dead job was queued again.
publish_sql sp 40 1
walq_timeout 60 consume --group sp --queue sp --partition 0/2 --concurrency 2 --drain -- "$odd_fails"
walq_timeout 60 consume --group sp --queue sp --partition 1/2 --drain --noop
publish_sql sp 6
walq job retry "$(q "SELECT min(job_id) FROM walq.job_status WHERE consumer_group = 'sg' AND status = 'dead'")" >/dev/null
view_counts() {
    q "SELECT string_agg(n::text, ' ' ORDER BY k) FROM (
         SELECT k, count(s.status) FILTER (WHERE s.status = st) AS n
           FROM unnest(ARRAY['queued', 'running', 'scheduled', 'done', 'dead', 'cancelled'])
                WITH ORDINALITY AS u (st, k)
           LEFT JOIN walq.job_status s ON s.consumer_group = '$1'
                AND ($2 = 1 OR walq.partition_of(s.job_id, $2) = $3)
          GROUP BY k) x"
}
fn_counts() {
    q "SELECT concat_ws(' ', queued, running, scheduled, done, dead, cancelled)
         FROM walq.group_counts('$1', $2, $3)"
}
for spec in "sg 1 0" "other 1 0" "sp 2 0" "sp 2 1"; do
    # shellcheck disable=SC2086  # spec is three words on purpose
    set -- $spec
    want=$(view_counts "$@")
    assert_eq "$(fn_counts "$@")" "$want" "walq.group_counts($1, $2, $3) counts as walq.job_status: $want"
done
assert_eq "$(fn_counts sg 1 0)" "11 0 0 25 24 0" \
    "group sg: 11 queued (10 new, 1 retried), 25 done, 24 dead"
pass "all"
