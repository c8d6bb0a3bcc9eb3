#!/usr/bin/env bash
# shellcheck disable=SC2016  # wait_for evals its condition later
# A handler's text cannot stop its group (issue 11, scenario 2).  Whatever
# bytes a handler writes, in every kind of handler, they fail that job alone:
# the job is dead with a last_error that is valid text, the other jobs of
# its transaction and of its group are done, and the consumer keeps running.
#   1. exec: Latin-1 "caf\xe9" on stderr, exit 1;
#   2. exec: 700 bytes of stderr ('x', then 'é' repeated), so that the
#      512-byte tail walq keeps starts inside a two-byte character;
#   3. coprocess: a reply whose error string holds the raw byte 0xE9;
#   4. C callback (tests/helpers/badtext_consumer.c): "caf\xe9" in err,
#      WALQ_JOB_RETRY;
#   5. sql: the statement raises an error of 6,000 bytes of 'é' (the kept
#      text is cut to 2,048 bytes, which must not split a character) with a
#      control character and a tab; its effects roll back with the job's
#      subtransaction.
# Bad jobs have max_attempts 1, so their first failure makes them dead.
# shellcheck source=SCRIPTDIR/../lib/pgtest.sh
. "$(dirname "$0")/../lib/pgtest.sh"
require_walq
command -v python3 >/dev/null || fail "python3 is needed for the coprocess worker"
WALQ_BADTEXT_BIN=${WALQ_BADTEXT_BIN:-$(dirname "$WALQ_BIN")/tests/walq-badtext-consumer}
[ -x "$WALQ_BADTEXT_BIN" ] ||
    fail "badtext consumer not found at $WALQ_BADTEXT_BIN (build tests/helpers/badtext_consumer.c, or set WALQ_BADTEXT_BIN)"
pg_start
walq init

# An exec handler: {"bad": "latin"} writes Latin-1 to stderr, {"bad": "cut"}
# writes 700 bytes whose last 512 start on the second byte of an 'é'
# (1 + 349 * 2 + 1 = 700 bytes; 700 - 512 = 188, an even offset, and the
# even offsets are the second bytes).  Both exit 1.  The rest are done.
h=$(handler text.sh <<HANDLER
payload=\$(cat)
echo "\$WALQ_JOB_ID" >>"$WORK/ran-\$WALQ_GROUP.log"
case \$payload in
*latin*)
    printf 'caf\\351\\n' >&2
    exit 1 ;;
*cut*)
    printf 'x' >&2
    i=0
    while [ \$i -lt 349 ]; do printf '\\303\\251'; i=\$((i + 1)); done >&2
    printf '\\n' >&2
    exit 1 ;;
esac
exit 0
HANDLER
)
# A check of the handler itself: the bytes the exec handlers write.
printf '{"bad": "cut"}' | WALQ_GROUP=selftest WALQ_JOB_ID=0 "$h" 2>"$WORK/cut.bytes" || true
assert_eq "$(wc -c <"$WORK/cut.bytes")" 700 "the cut handler writes 700 bytes of stderr"
assert_eq "$(tail -c 512 "$WORK/cut.bytes" | head -c 1 | od -An -tx1 | tr -d ' ')" a9 \
    "its last 512 bytes start with the second byte of an 'é' (0xA9)"
printf '{"bad": "latin"}' | WALQ_GROUP=selftest WALQ_JOB_ID=0 "$h" 2>"$WORK/latin.bytes" || true
assert_eq "$(od -An -tx1 <"$WORK/latin.bytes" | tr -s ' \n' ' ' | sed 's/^ //; s/ $//')" \
    "63 61 66 e9 0a" "the latin handler writes caf\\xe9 and a newline"

# A coprocess worker: {"bad": ...} gets an error whose JSON string holds the
# raw byte 0xE9; the rest are done.
cat >"$WORK/worker.py" <<'WORKER'
import json, os, sys
log = os.environ["RAN_LOG"]
for raw in sys.stdin.buffer:
    job = json.loads(raw)
    with open(log, "a") as f:
        f.write("%d\n" % job["id"])
    if isinstance(job.get("payload"), dict) and "bad" in job["payload"]:
        sys.stdout.buffer.write(b'{"id":%d,"ok":false,"error":"caf\xe9 in a reply"}\n' % job["id"])
    else:
        sys.stdout.buffer.write(b'{"id":%d,"ok":true}\n' % job["id"])
    sys.stdout.flush()
WORKER

# publish QUEUE BAD...: one transaction of good jobs with a bad one (its
# payload {"bad": BAD}, max_attempts 1) after every third good one.
publish() {
    local queue=$1 sql="BEGIN;" i=0 bad
    shift
    for bad in "$@"; do
        sql+="INSERT INTO walq.jobs (queue, payload) SELECT '$queue', jsonb_build_object('n', g)
                FROM generate_series($i * 3 + 1, $i * 3 + 3) g;
              INSERT INTO walq.jobs (queue, payload, max_attempts)
                VALUES ('$queue', jsonb_build_object('bad', '$bad'), 1);"
        i=$((i + 1))
    done
    sql+="INSERT INTO walq.jobs (queue, payload) SELECT '$queue', jsonb_build_object('n', g)
            FROM generate_series(100, 102) g; COMMIT;"
    pg_psql -c "$sql" >/dev/null
}

# running NAME PID LOG: fails when the consumer has exited.
running() {
    if ! kill -0 "$2" 2>/dev/null || _pgtest_exited "$2"; then
        bg_wait "$2" 5
        fail "$1: the consumer exited (status $BG_RC) instead of failing the job alone: $(tail -n 5 "$3")"
    fi
}

count() {
    q "SELECT count(*) FROM walq.job_status WHERE consumer_group = '$1' AND status = '$2'"
}

# settled NAME PID LOG GROUP DONE DEAD: the group has DONE jobs done and
# DEAD dead, while its consumer runs.
settled() {
    running "$1" "$2" "$3"
    [ "$(count "$4" "done")" -eq "$5" ] && [ "$(count "$4" dead)" -eq "$6" ]
}

# ran_ids GROUP: the ids of the jobs the group's handler ran, one per run;
# the sql group's are the rows its statement left (none for a failed job).
ran_ids() {
    if [ "$1" = gs ]; then
        q "SELECT job_id FROM sql_ran ORDER BY 1"
    else
        cat "$WORK/ran-$1.log"
    fi
}

# check NAME GROUP QUEUE PID LOG DONE DEAD TEXT_RE [RAN]: every job of the
# group has one final outcome, the bad ones dead with valid text matching
# TEXT_RE, the good ones done at their first attempt, the handler ran once
# per job (RAN runs in all, DONE + DEAD unless given), and the consumer
# still works: new jobs are done, SIGTERM exits 0.
check() {
    local name=$1 group=$2 queue=$3 pid=$4 log=$5 ndone=$6 ndead=$7 re=$8 err
    local nran=${9:-$((ndone + ndead))}
    wait_for "settled '$name' $pid '$log' $group $ndone $ndead" 40 \
        "$name: $ndone jobs done and $ndead dead"
    assert_eq "$(q "SELECT count(*) FROM walq.jobs j WHERE j.queue = '$queue' AND NOT EXISTS (
                      SELECT 1 FROM walq.job_status s WHERE s.job_id = j.id
                         AND s.consumer_group = '$group' AND s.status IN ('done', 'dead'))")" 0 \
        "$name: every job of the queue has a final outcome"
    assert_eq "$(q "SELECT count(*) FROM walq.job_status s JOIN walq.jobs j ON j.id = s.job_id
                     WHERE s.consumer_group = '$group' AND j.payload ? 'bad' AND s.status <> 'dead'")" 0 \
        "$name: each bad job is dead"
    assert_eq "$(q "SELECT count(*) FROM walq.job_status s JOIN walq.jobs j ON j.id = s.job_id
                     WHERE s.consumer_group = '$group' AND NOT j.payload ? 'bad'
                       AND (s.status <> 'done' OR s.attempts <> 1)")" 0 \
        "$name: each good job is done, at its first attempt"
    while read -r id; do
        err=$(q "SELECT last_error FROM walq.job_status WHERE consumer_group = '$group' AND job_id = $id")
        [ -n "$err" ] || fail "$name: dead job $id has no last_error"
        # The text came back from the server, so it is valid UTF-8; iconv
        # checks it once more, byte for byte, on this side.
        iconv -f UTF-8 -t UTF-8 <<<"$err" >/dev/null 2>&1 ||
            fail "$name: last_error of job $id is not valid UTF-8: $(od -c <<<"$err" | head -n 5)"
        assert_match "$err" "$re" "$name: dead job $id keeps the handler's text (${err:0:80})"
        [ "$(printf '%s' "$err" | wc -c)" -le 2048 ] ||
            fail "$name: last_error of job $id is $(printf '%s' "$err" | wc -c) bytes, more than 2048"
    done < <(q "SELECT s.job_id FROM walq.job_status s JOIN walq.jobs j ON j.id = s.job_id
                 WHERE s.consumer_group = '$group' AND j.payload ? 'bad' ORDER BY 1")
    assert_eq "$(q "SELECT count(*) FROM walq.jobs WHERE queue = '$queue'")|$(ran_ids "$group" | sort -u | wc -l)|$(ran_ids "$group" | wc -l)" \
        "$((ndone + ndead))|$nran|$nran" \
        "$name: the handler ran once for each job"
    # The group still runs: a job published now is done.
    publish_sql "$queue" 5
    wait_for "settled '$name' $pid '$log' $group $((ndone + 5)) $ndead" 30 \
        "$name: 5 jobs published afterwards done"
    sleep 1
    running "$name" "$pid" "$log"
    kill -TERM "$pid"
    bg_wait "$pid" 20
    assert_eq "$BG_RC" 0 "$name: the consumer exits 0 on SIGTERM"
    if grep -E 'ERROR|invalid byte sequence' "$log"; then
        fail "$name: the consumer logged an error"
    fi
}

backoff=(--backoff-min 0.01 --backoff-max 0.05)

# The five consumers run side by side, each its own group and queue.
publish tl latin latin
publish tc cut cut
publish tp x x
publish tb x x
publish ts x x

bg "$WALQ_BIN" consume --group gl --queue tl --concurrency 2 "${backoff[@]}" -- "$h" \
    2>"$WORK/gl.err"
pl=$BG_PID
bg "$WALQ_BIN" consume --group gc --queue tc --concurrency 2 "${backoff[@]}" -- "$h" \
    2>"$WORK/gc.err"
pc=$BG_PID
RAN_LOG=$WORK/ran-gp.log bg "$WALQ_BIN" consume --group gp --queue tp --coprocess --concurrency 1 \
    "${backoff[@]}" -- python3 "$WORK/worker.py" 2>"$WORK/gp.err"
pp=$BG_PID
bg "$WALQ_BADTEXT_BIN" gb tb >"$WORK/ran-gb.log" 2>"$WORK/gb.err"
pb=$BG_PID
# The sql handler: a bad job's statement raises 6,000 bytes of text.
q "CREATE TABLE sql_ran (job_id bigint NOT NULL);
   CREATE FUNCTION text_job(p jsonb, id bigint) RETURNS void LANGUAGE plpgsql AS \$\$
   BEGIN
     INSERT INTO sql_ran VALUES (id);
     IF p ? 'bad' THEN
       RAISE EXCEPTION 'bad %', repeat('é', 3000) || E'\\x01\\t.';
     END IF;
   END \$\$" >/dev/null
bg "$WALQ_BIN" consume --group gs --queue ts "${backoff[@]}" --sql 'SELECT text_job($1, $2)' \
    2>"$WORK/gs.err"
ps_=$BG_PID

# 7 good jobs and 2 bad ones in each transaction.
check "exec, Latin-1 stderr" gl tl "$pl" "$WORK/gl.err" 9 2 'caf'
check "exec, stderr tail cut inside a character" gc tc "$pc" "$WORK/gc.err" 9 2 'éééé'
check "coprocess, 0xE9 in the error of a reply" gp tp "$pp" "$WORK/gp.err" 9 2 'caf'
check "C callback, caf\\xe9 in err" gb tb "$pb" "$WORK/gb.err" 9 2 'caf'
check "sql, 6,000 bytes of error" gs ts "$ps_" "$WORK/gs.err" 9 2 '^bad éééé' 9
pass "all"
