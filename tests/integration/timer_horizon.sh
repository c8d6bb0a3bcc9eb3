#!/usr/bin/env bash
# shellcheck disable=SC2016  # wait_for evals its condition later
# Scheduled jobs beyond --timer-horizon are not kept in memory: they are
# recorded, dropped, and read back from the table as their time nears, and
# still run once, on time; a retry whose backoff reaches beyond the horizon
# goes the same way.
# shellcheck source=SCRIPTDIR/../lib/pgtest.sh
. "$(dirname "$0")/../lib/pgtest.sh"
require_walq
pg_start
walq init

h=$(handler work.sh <<HANDLER
read -r payload
echo "\$WALQ_JOB_ID \$WALQ_ATTEMPT \$(date +%s.%N)" >>"$WORK/ran.log"
case "\$payload" in *flaky*) [ "\$WALQ_ATTEMPT" -lt 2 ] && exit 1 ;; esac
exit 0
HANDLER
)
bg "$WALQ_BIN" consume --group th --queue t --timer-horizon 1 --backoff-min 2.5 --backoff-max 2.5 \
    --verbose -- "$h" 2>"$WORK/consumer.err"
pid=$BG_PID
wait_for "slot_active walq_th" 30 "the consumer streams"
q "SELECT walq.publish('t', '{\"n\": 1}', run_at => now() + interval '4 s');
   SELECT walq.publish('t', '{\"n\": 2}', run_at => now() + interval '5 s');
   SELECT walq.publish('t', '\"flaky\"')" >/dev/null
wait_for '[ "$(q "SELECT count(*) FROM walq.outcomes WHERE group_name = '"'th'"' AND status = '"'scheduled'"'")" -eq 3 ]' 20 \
    "two delayed jobs and a retry are recorded scheduled"
wait_for '[ "$(done_count th)" -eq 3 ]' 40 "all three run in the end"
assert_match "$(cat "$WORK/consumer.err")" 'scheduled jobs waiting for their time' \
    "jobs beyond the horizon were read back from the table"
late=$(q "SELECT max(extract(epoch FROM o.updated_at - coalesce(j.run_at, o.updated_at)))
            FROM walq.outcomes o JOIN walq.jobs j ON j.id = o.job_id
           WHERE o.group_name = 'th' AND j.payload ? 'n'")
echo "latest finish after run_at: ${late}s"
assert_match "$(awk -v l="$late" 'BEGIN { print (l < 1.5) ? "ok" : "late" }')" ok \
    "the delayed jobs ran on time (finished ${late}s after run_at)"
assert_eq "$(awk '{print $1}' "$WORK/ran.log" | sort | uniq -c | awk '{print $1}' | sort | tr '\n' ' ')" \
    "1 1 2 " "each delayed job ran once, the flaky one twice"
kill -TERM "$pid"
bg_wait "$pid" 30
assert_eq "$BG_RC" 0 "SIGTERM: exit 0"
assert_all_done th '^t$' 3
pass all
