#!/usr/bin/env bash
# The randomized fault test: producers of every kind, handlers that
# succeed, fail, retry, hang, crash and write garbage, and faults at random
# moments (kill -9 of a consumer, server restart and crash, slot drop,
# walsender terminated, the primary read-only for a while, the primary
# connection cut), then, once every group has drained, the invariants:
#   - every committed job has exactly one final outcome per group reading
#     its queue (scheduled only for the year-9999 ones), the one the plan
#     predicts from the job's behaviour string;
#   - nothing was seen done before its handler ran (sampled every 200 ms);
#   - no rolled-back job ran, in any group;
#   - the sql group's effects happened exactly once per done job, never for
#     others (also checked in the same snapshot during the run);
#   - attempts in walq.job_status equal the attempts the handler logged.
# tests/lib/faultgen.py generates the plan from the seed and drives the run;
# docs/testing.md explains the generator, the checks and how to replay.
#
#   WALQ_FAULT_SEED=N        replays seed N (default: a new seed, printed first)
#   WALQ_FAULT_SECONDS=T     seconds of producers and faults (default 75)
#   WALQ_FAULT_EXCLUDE=a,b   leave features out (faultgen.py lists them)
#   PGTEST_KEEP=1            keep the work directory (handler log, consumer
#                            logs, plan, server log) for a look afterwards
# shellcheck source=SCRIPTDIR/../lib/pgtest.sh
. "$(dirname "$0")/../lib/pgtest.sh"
require_walq

GEN=$WALQ_SOURCE_DIR/tests/lib/faultgen.py
SEED=${WALQ_FAULT_SEED:-$(( (RANDOM << 15 | RANDOM) % 1000000 ))}
SECS=${WALQ_FAULT_SECONDS:-75}
EXCLUDE=${WALQ_FAULT_EXCLUDE:-}
echo "seed: $SEED (replay: WALQ_FAULT_SEED=$SEED WALQ_FAULT_SECONDS=$SECS${EXCLUDE:+ WALQ_FAULT_EXCLUDE=$EXCLUDE} bash $0)"
python3 "$GEN" plan --seed "$SEED" --seconds "$SECS" --exclude "$EXCLUDE" --out "$WORK/plan.json" ||
    fail "could not make the plan"

# synchronous_commit on: a COMMIT that psql saw succeed survives pg_crash, so
# the producers' "committed" is true.
pg_start "synchronous_commit = on" "max_connections = 100"
walq init >/dev/null 2>&1 || fail "walq init failed"
# The sequence starts above the range of the explicit "low" ids, so that
# those are far below the ids around them (what a horizon inferred from ids
# got wrong), and never taken by the sequence.
q "SELECT setval(pg_get_serial_sequence('walq.jobs', 'id'), 1000000, false)" >/dev/null
# The sql group's table: no unique constraint, so that a duplicate shows.  A
# job with "sf" in its payload fails the statement (and ends dead).
q "CREATE TABLE effects (job_id bigint NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp());
   CREATE INDEX ON effects (job_id);
   CREATE FUNCTION effects_check() RETURNS trigger LANGUAGE plpgsql AS \$\$
   BEGIN
     IF EXISTS (SELECT 1 FROM walq.jobs j WHERE j.id = NEW.job_id AND j.payload ? 'sf') THEN
       RAISE EXCEPTION 'faultgen: the statement fails for job % (as planned, caf\u00e9)', NEW.job_id;
     END IF;
     RETURN NEW;
   END \$\$;
   CREATE TRIGGER effects_check BEFORE INSERT ON effects FOR EACH ROW EXECUTE FUNCTION effects_check();" >/dev/null

# The handler: its behaviour is the letter of its attempt in the payload's
# "wb" (H sleeps past faultgen's --timeout 5; G and W write the payload's
# "wg", base64, to stderr and stdout); its first act is one line appended to
# the log with one write (well under PIPE_BUF): job id, attempt, group, key,
# letter, time, pid.
cat >"$WORK/handler.sh" <<HANDLER
#!/bin/bash
IFS= read -r p || true
k=\${p#*\"wk\": \"}; k=\${k%%\"*}
b=\${p#*\"wb\": \"}; b=\${b%%\"*}
a=\${WALQ_ATTEMPT:-0}
c=X
[ "\$a" -ge 1 ] && [ "\$a" -le "\${#b}" ] && c=\${b:a-1:1}
printf '%s %s %s %s %s %s %s\n' "\$WALQ_JOB_ID" "\$a" "\$WALQ_GROUP" "\$k" "\$c" "\$EPOCHREALTIME" "\$\$" >>"$WORK/handler.log"
garbage() {
    local g=\${p#*\"wg\": \"}
    g=\${g%%\"*}
    printf '%s' "\$g" | base64 -d >&2
    printf '%s' "\$g" | base64 -d
}
case \$c in
S) exit 0 ;;
F) echo "failing as planned" >&2; exit 1 ;;
R) exit 75 ;;
H) exec sleep 12 ;;
C) kill -9 \$\$ ;;
G) garbage; exit 1 ;;
W) garbage; exit 0 ;;
*) echo "attempt \$a is beyond the plan" >&2; exit 1 ;;
esac
HANDLER
chmod 0755 "$WORK/handler.sh"

# faultgen restarts and crashes the server with pgtest.sh's own functions.
export PGTEST_DIR PGTEST_DATA PGTEST_BINDIR TEST_NAME PGTEST_FAILED
export -f _pgtest_is_root _pg_as _pg_as_in _pg_ctl_start _pg_ctl_start_in pg_restart pg_crash fail

args=(run --plan "$WORK/plan.json" --work "$WORK" --walq "$WALQ_BIN" --handler "$WORK/handler.sh"
    --drain-timeout "${WALQ_FAULT_DRAIN_SECONDS:-240}")
start=$SECONDS
bg python3 -u "$GEN" "${args[@]}"
bg_wait "$BG_PID" $((SECS * 4 + 900))
rc=$BG_RC
echo "seed $SEED: $((SECONDS - start)) s"
[ "$rc" -eq 0 ] || fail "seed $SEED: invariants violated (see above); replay: WALQ_FAULT_SEED=$SEED WALQ_FAULT_SECONDS=$SECS${EXCLUDE:+ WALQ_FAULT_EXCLUDE=$EXCLUDE}"
pass "seed $SEED: every invariant holds after ${SECS} s of faults"
