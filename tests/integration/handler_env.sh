#!/usr/bin/env bash
# Handlers' environment (issue 13): exec and coprocess handlers run on what
# producers wrote, so they get none of walq's PG* variables (PGPASSWORD,
# PGPASSFILE, PGSERVICEFILE, PGSSLKEY, where and as whom to connect) unless
# `walq consume --pass-env NAME` names them.  Each handler writes its whole
# environment into a file; the test reads what it got.
# shellcheck disable=SC2016  # wait_for evals its condition later
# shellcheck source=SCRIPTDIR/../lib/pgtest.sh
. "$(dirname "$0")/../lib/pgtest.sh"
require_walq
pg_start
walq init >/dev/null 2>&1

# What a handler sees: env(1) into a file per job.
h=$(handler env.sh <<EOF
env >"$WORK/env.\$WALQ_JOB_ID"
EOF
)
# A coprocess worker writes its environment once, then answers every job.
cp=$(handler coproc.sh <<EOF
env >"$WORK/coenv.\$WALQ_WORKER"
while read -r line; do
    id=\${line#*\"id\":}
    id=\${id%%,*}
    printf '{"id":%s,"ok":true}\n' "\$id"
done
EOF
)

# The consumer's environment: a password and the other secrets libpq reads,
# and the connection settings pgtest.sh exported.  The trust of the test
# server ignores the password, so the consumer still connects.
export PGPASSWORD=SuperSecret42 PGPASSFILE=$WORK/nopass PGSSLKEY=$WORK/nokey \
    PGSERVICEFILE=$WORK/noservice PGAPPNAME=envtest OTHER_SETTING=kept

# run_one GROUP QUEUE [consume options...]: one job, drained.
run_one() {
    local group=$1 queue=$2
    shift 2
    q "SELECT walq.publish('$queue', '{}')" >/dev/null
    capture walq_timeout 60 consume --group "$group" --queue "$queue" --drain "$@"
    [ "$CAP_RC" -eq 0 ] || fail "consume $group exited $CAP_RC: $CAP_ERR"
}
id_of() { q "SELECT max(id) FROM walq.jobs WHERE queue = '$1'"; }

run_one plain plainq -- "$h"
f=$WORK/env.$(id_of plainq)
[ -s "$f" ] || fail "the exec handler wrote no environment"
assert_match "$(cat "$f")" '^OTHER_SETTING=kept$' "the exec handler gets walq's other variables"
assert_match "$(cat "$f")" '^WALQ_JOB_ID=[0-9]+$' "the exec handler gets WALQ_JOB_ID"
assert_eq "$(grep -c '^PG' "$f" || true)" 0 "the exec handler gets no PG* variable by default"
assert_eq "$(grep -c SuperSecret42 "$f" || true)" 0 "the exec handler does not see the password"

run_one passed passedq --pass-env PGPASSWORD --pass-env 'PGSSL*' -- "$h"
f=$WORK/env.$(id_of passedq)
assert_match "$(cat "$f")" '^PGPASSWORD=SuperSecret42$' "--pass-env PGPASSWORD brings the password back"
assert_match "$(cat "$f")" "^PGSSLKEY=$WORK/nokey\$" "--pass-env 'PGSSL*' brings PGSSLKEY"
assert_eq "$(grep '^PG' "$f" | cut -d= -f1 | sort | tr '\n' ' ')" "PGPASSWORD PGSSLKEY " \
    "--pass-env passes what it names and nothing more"

# The coprocess workers: the same rule.
q "SELECT walq.publish('cq', '{}')" >/dev/null
capture walq_timeout 60 consume --group cp --queue cq --drain --coprocess --concurrency 2 -- "$cp"
[ "$CAP_RC" -eq 0 ] || fail "consume --coprocess exited $CAP_RC: $CAP_ERR"
wait_for '[ -s "$WORK/coenv.1" ] && [ -s "$WORK/coenv.2" ]' 10 "both workers' environments"
assert_eq "$(cat "$WORK"/coenv.* | grep -c '^PG' || true)" 0 "coprocess workers get no PG* variable"
assert_match "$(cat "$WORK/coenv.1")" '^WALQ_WORKER=1$' "a coprocess worker gets WALQ_WORKER"
rm -f "$WORK"/coenv.*
q "SELECT walq.publish('cq2', '{}')" >/dev/null
capture walq_timeout 60 consume --group cp2 --queue cq2 --drain --coprocess --pass-env PGPASSWORD -- "$cp"
[ "$CAP_RC" -eq 0 ] || fail "consume --coprocess --pass-env exited $CAP_RC: $CAP_ERR"
wait_for '[ -s "$WORK/coenv.1" ]' 10 "the worker's environment"
assert_match "$(cat "$WORK/coenv.1")" '^PGPASSWORD=SuperSecret42$' \
    "--pass-env PGPASSWORD reaches a coprocess worker"

# A name that is not one is refused before anything starts.
capture walq_timeout 20 consume --group bad --queue badq --drain --pass-env 'PG PASSWORD' -- "$h"
assert_eq "$CAP_RC" 2 "--pass-env with a bad name: exit status 2"
assert_match "$CAP_ERR" 'invalid pass_env name "PG PASSWORD"' "the error names the bad name"
