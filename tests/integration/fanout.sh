#!/usr/bin/env bash
# shellcheck disable=SC2016  # wait_for evals its condition later
# Fan-out: several groups reading the same queue each get every job, each
# from its own slot with its own outcomes, and the payload is stored once.
# shellcheck source=SCRIPTDIR/../lib/pgtest.sh
. "$(dirname "$0")/../lib/pgtest.sh"
require_walq
pg_start
walq init

N=600
# The handler writes "group id payload" for every job it is given.
h=$(handler record.sh <<HANDLER
payload=\$(cat)
echo "\$WALQ_GROUP \$WALQ_JOB_ID \$payload" >>"$WORK/ran.\$WALQ_GROUP"
HANDLER
)

# Half before the groups exist (each reads it from the table), half while
# they stream.
publish_sql fan $((N / 2))
publish_sql other 50
pids=()
for g in mail search billing; do
    bg "$WALQ_BIN" consume --group "$g" --queue fan --concurrency 3 -- "$h"
    pids+=("$BG_PID")
done
bg "$WALQ_BIN" consume --group elsewhere --queue other --noop
pids+=("$BG_PID")
for g in mail search billing elsewhere; do
    wait_for "slot_active walq_$g" 30 "group $g to stream from its slot"
done
for _ in $(seq 1 6); do
    publish_sql fan $((N / 12))
done
for g in mail search billing; do
    wait_for '[ "$(done_count '"$g"')" -ge '"$N"' ]' 60 "group $g to finish $N jobs"
done
sleep 0.3
for p in "${pids[@]}"; do
    kill -TERM "$p"
    bg_wait "$p" 20
    assert_eq "$BG_RC" 0 "consumer $p exits 0 on SIGTERM"
done

for g in mail search billing; do
    assert_all_done "$g" '^fan$' "$N"
    assert_eq "$(cut -d' ' -f2 "$WORK/ran.$g" | sort -u | wc -l)" "$N" \
        "group $g: its handler saw all $N jobs"
    # What the handler read on stdin is the payload of the job it was given.
    bad=$(while read -r _ id payload; do
        [ "$payload" = "{\"n\": $(q "SELECT payload->>'n' FROM walq.jobs WHERE id = $id")}" ] ||
            echo "$id"
    done < <(head -n 20 "$WORK/ran.$g"))
    assert_eq "$bad" "" "group $g: handlers got the jobs' payloads"
done
assert_all_done elsewhere '^other$' 50

# One slot per group, and every job's status in every group as plain SQL.
assert_eq "$(q "SELECT string_agg(slot_name, ',' ORDER BY slot_name) FROM pg_replication_slots")" \
    "walq_billing,walq_elsewhere,walq_mail,walq_search" "one slot per group"
assert_eq "$(q "SELECT count(*) FROM walq.job_status j WHERE j.queue = 'fan' AND status = 'done'")" \
    $((N * 3)) "walq.job_status: every fan job done in each of the three groups"

# No copy of the payload: outcomes hold no jsonb and no text beyond errors.
assert_eq "$(q "SELECT string_agg(column_name, ',' ORDER BY ordinal_position)
                 FROM information_schema.columns
                WHERE table_schema = 'walq' AND table_name = 'outcomes'
                  AND data_type IN ('jsonb', 'json', 'bytea')")" "" \
    "walq.outcomes stores no payload"
per_job=$(q "SELECT (pg_total_relation_size('walq.outcomes')
                     + pg_total_relation_size('walq.outcome_batches')) / $((N * 3))")
pass "outcome storage: about $per_job bytes per (group, job) now"
pass "all"
