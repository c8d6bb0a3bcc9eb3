#!/usr/bin/env bash
# shellcheck disable=SC2016  # wait_for evals its condition later
# A job's status is exact until walq removes its record (issue 11, scenario
# 4).  Long after they finished, with the consumer still running and other
# jobs flowing (so that whatever bookkeeping it does on finished jobs has
# happened), walq.job_status shows:
#   - a job that asked for a retry once, then succeeded: done, attempts 2,
#     and when it finished;
#   - a job done at its first attempt: done, attempts 1, and when it
#     finished (the time its batch was recorded, at least);
#   - a dead job: dead, its attempts and its last error.
# The attempts shown equal the handler's runs.
# shellcheck source=SCRIPTDIR/../lib/pgtest.sh
. "$(dirname "$0")/../lib/pgtest.sh"
require_walq
pg_start
walq init

GROUP=hg
QUEUE=hq
h=$(handler work.sh <<HANDLER
payload=\$(cat)
echo "\$WALQ_JOB_ID \$WALQ_ATTEMPT" >>"$WORK/ran.log"
case \$payload in
*retry-once*) [ "\$WALQ_ATTEMPT" -eq 1 ] && exit 75 ;;
*broken*) echo "the broken job broke" >&2; exit 1 ;;
esac
exit 0
HANDLER
)
touch "$WORK/ran.log"

start=$(q "SELECT now()")
retried=$(q "SELECT walq.publish('$QUEUE', '{\"kind\": \"retry-once\"}')")
first=$(q "SELECT walq.publish('$QUEUE', '{\"kind\": \"first\"}')")
dead=$(q "SELECT walq.publish('$QUEUE', '{\"kind\": \"broken\"}', max_attempts => 2)")
publish_sql "$QUEUE" 50

bg "$WALQ_BIN" consume --group "$GROUP" --queue "$QUEUE" --concurrency 2 \
    --backoff-min 0.01 --backoff-max 0.05 -- "$h" 2>"$WORK/consumer.log"
pid=$BG_PID
running() {
    if ! kill -0 "$pid" 2>/dev/null || _pgtest_exited "$pid"; then
        fail "the consumer exited: $(tail -n 5 "$WORK/consumer.log")"
    fi
}
final() {
    q "SELECT count(*) FROM walq.job_status WHERE consumer_group = '$GROUP'
          AND status IN ('done', 'dead')"
}
wait_for 'running && [ "$(final)" -eq 53 ]' 30 "the first 53 jobs finished"
finished=$(q "SELECT now()")

# Other jobs flow for more than 5 s.
until=$((SECONDS + 6))
while [ "$SECONDS" -lt "$until" ]; do
    publish_sql "$QUEUE" 20
    sleep 0.25
done
wait_for 'running && [ "$(final)" -eq "$(q "SELECT count(*) FROM walq.jobs WHERE queue = '"'$QUEUE'"'")" ]' 30 \
    "every job finished"
running

runs() { awk -v id="$1" '$1 == id' "$WORK/ran.log" | wc -l; }

# status ID: status|attempts|whether updated_at is set and between the
# publishing and the end of the first 53 jobs.
status() {
    q "SELECT status || '|' || attempts || '|' ||
              CASE WHEN updated_at IS NULL THEN 'updated_at NULL'
                   WHEN updated_at < '$start' OR updated_at > '$finished'
                   THEN 'updated_at ' || updated_at || ' not between $start and $finished'
                   ELSE 'finish time kept' END
         FROM walq.job_status WHERE consumer_group = '$GROUP' AND job_id = $1"
}

check() {
    assert_eq "$(status "$retried")" "done|2|finish time kept" \
        "$1: the job retried once shows done, attempts 2, and when it finished"
    assert_eq "$(runs "$retried")" 2 "$1: its handler ran twice"
    assert_eq "$(status "$first")" "done|1|finish time kept" \
        "$1: the job done at its first attempt shows done, attempts 1, and when it finished"
    assert_eq "$(runs "$first")" 1 "$1: its handler ran once"
    assert_eq "$(status "$dead")" "dead|2|finish time kept" \
        "$1: the dead job shows dead, attempts 2, and when it died"
    assert_eq "$(runs "$dead")" 2 "$1: its handler ran twice"
    assert_match "$(q "SELECT last_error FROM walq.job_status
                        WHERE consumer_group = '$GROUP' AND job_id = $dead")" \
        'exit status 1.*the broken job broke' "$1: the dead job keeps its last error"
    # Every job: the attempts shown are the handler's runs, and each shows
    # when it finished.
    pg_psql -c "CREATE TEMP TABLE ran (id bigint, attempt int)" \
        -c "\\copy ran FROM '$WORK/ran.log' DELIMITER ' '" \
        -c "SELECT s.job_id, s.status, s.attempts, r.n, s.updated_at
                  FROM walq.job_status s
                  LEFT JOIN (SELECT id, count(*) AS n FROM ran GROUP BY id) r ON r.id = s.job_id
                 WHERE s.consumer_group = '$GROUP'
                   AND (s.attempts IS DISTINCT FROM r.n OR s.updated_at IS NULL)" >"$WORK/mismatch"
    [ ! -s "$WORK/mismatch" ] ||
        fail "$1: jobs whose status shows other attempts than the handler's runs, or no finish time (job|status|attempts|runs|updated_at): $(head -n 5 "$WORK/mismatch" | paste -sd, -)"
    pass "$1: every job shows as many attempts as its handler ran, and when it finished"
}

check "with the consumer running, over 5 s later"
kill -TERM "$pid"
bg_wait "$pid" 20
assert_eq "$BG_RC" 0 "SIGTERM: the consumer exits 0"
check "with the consumer stopped"
pass "all"
