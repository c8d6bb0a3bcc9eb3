#!/usr/bin/env bash
# The demo: a throwaway PostgreSQL, `walq init`, jobs published from the
# command line, consumed by examples/handler.sh and by the built-in no-op
# handler, with the rates and the final status.  The server is stopped and
# removed at the end, however the script ends.
#
#   bash examples/demo.sh            DEMO_JOBS=2000 DEMO_NOOP_JOBS=100000
set -euo pipefail

jobs=${DEMO_JOBS:-2000}
noop_jobs=${DEMO_NOOP_JOBS:-100000}

export TEST_NAME=demo
# shellcheck source=SCRIPTDIR/../tests/lib/standalone.sh
. "$(dirname "${BASH_SOURCE[0]}")/../tests/lib/standalone.sh"
require_walq

say() { printf '\n== %s\n' "$*"; }
now() { date +%s.%N; }
rate() { awk -v n="$1" -v a="$2" -v b="$3" 'BEGIN { t = b - a; printf "%d jobs in %.2f s: %.0f jobs/s\n", n, t, n / t }'; }
show() { printf '$ %s\n' "$*"; }

say "starting a throwaway PostgreSQL 15 (wal_level=logical)"
pg_start
echo "PGHOST=$PGHOST PGPORT=$PGPORT"

say "walq init"
show "walq init"
walq init

say "publishing"
show "psql -c \"SELECT walq.publish('emails', '{\\\"to\\\": \\\"ada@example.com\\\"}')\""
q "SELECT walq.publish('emails', '{\"to\": \"ada@example.com\"}')"
show "walq publish emails '{\"to\": \"grace@example.com\"}'"
walq publish emails '{"to": "grace@example.com"}'
show "seq $((jobs - 2)) | ... | walq publish emails     # one JSON document per line"
seq 3 "$jobs" | awk '{ printf "{\"to\": \"user%d@example.com\", \"n\": %d}\n", $1, $1 }' | walq publish emails

say "consuming $jobs jobs with examples/handler.sh, 4 at a time"
export HANDLER_LOG=$WORK/handler.log
show "walq consume --group demo --queue emails --concurrency 4 --drain -- examples/handler.sh"
t0=$(now)
walq consume --group demo --queue emails --concurrency 4 --drain -- "$root/examples/handler.sh"
t1=$(now)
rate "$jobs" "$t0" "$t1"
echo "first lines the handler logged:"
head -n 3 "$HANDLER_LOG" | sed 's/^/  /'

say "streaming: a consumer that is already running sees new jobs at once"
bg "$WALQ_BIN" consume --group demo --queue emails --concurrency 4 -- "$root/examples/handler.sh"
consumer=$BG_PID
wait_for "slot_active walq_demo" 20 "the consumer to stream"
id=$(walq publish emails '{"to": "late@example.com"}')
wait_for "[ \"\$(q \"SELECT status FROM walq.job_status WHERE job_id = $id\")\" = done ]" 20 "job $id"
echo "job $id published while the consumer ran: $(q "SELECT status FROM walq.job_status WHERE job_id = $id")"
show "INSERT INTO walq.jobs (queue, payload, max_attempts) VALUES ('emails', '{\"fail\": true}', 1)"
id=$(q "INSERT INTO walq.jobs (queue, payload, max_attempts)
        VALUES ('emails', '{\"to\": \"nobody@example.com\", \"fail\": true}', 1) RETURNING id")
wait_for "[ \"\$(q \"SELECT status FROM walq.job_status WHERE job_id = $id\")\" = dead ]" 20 "job $id"
echo "job $id: $(q "SELECT status || ', ' || attempts || ' attempt(s), last error: ' || coalesce(last_error, '')
                     FROM walq.job_status WHERE job_id = $id")"
show "kill -TERM <consumer>      # finishes running jobs, acks them, exits 0"
kill -TERM "$consumer"
bg_wait "$consumer" 30
echo "consumer exited with status $BG_RC"

say "the stream rate: $noop_jobs jobs with the built-in --noop handler"
seq 1 "$noop_jobs" | awk '{ printf "{\"event\": \"signup\", \"user\": %d}\n", $1 }' | walq publish events
show "walq consume --group demo_noop --queue events --drain --noop"
t0=$(now)
walq consume --group demo_noop --queue events --drain --noop
t1=$(now)
rate "$noop_jobs" "$t0" "$t1"

say "final status"
show "walq status"
walq status
show "SELECT consumer_group, status, count(*) FROM walq.job_status GROUP BY 1, 2"
pg_psql -P footer=off -A -F ' | ' -c "SELECT consumer_group, status, count(*)
                                    FROM walq.job_status GROUP BY 1, 2 ORDER BY 1, 2"

say "stopping the server"
