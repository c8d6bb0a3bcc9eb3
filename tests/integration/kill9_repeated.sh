#!/usr/bin/env bash
# shellcheck disable=SC2016  # wait_for evals its condition later
# The guarantee under repeated crashes of the consumer: 20,000 jobs, some
# published before the first start (backfill) and the rest while it runs (in
# transactions of varied sizes), kill -9 of the consumer at least 5 times at
# random moments, a restart after each, then --drain.  Every job has exactly
# one outcome, done; none is lost.  Handlers may have run again after a kill;
# the test counts and prints those re-runs.
#
# The moments are random; WALQ_TEST_SEED=N replays a run's choices.
# shellcheck source=SCRIPTDIR/../lib/pgtest.sh
. "$(dirname "$0")/../lib/pgtest.sh"
require_walq
pg_start
walq init

SEED=${WALQ_TEST_SEED:-$$}
RANDOM=$SEED
echo "seed: $SEED (WALQ_TEST_SEED=$SEED replays the kill moments)"

N=${WALQ_KILL9_JOBS:-20000}   # smaller for a quick run while developing
KILLS=6
QUEUE=kr
GROUP=k9r

# The handler uses shell builtins only: no process besides its own shell.
h=$(handler work.sh <<HANDLER
read -r _ || true
echo "\$WALQ_JOB_ID" >>"$WORK/ran.log"
exit 0
HANDLER
)
touch "$WORK/ran.log"

# Sizes of transactions are given for 20,000 jobs and scale with N.
scaled() { local v=$(($1 * N / 20000)); echo $((v > 0 ? v : 1)); }

# Before the first start: three transactions of 1, 999 and 3000 jobs, the
# first two through `walq publish`.
pre2=$(scaled 999) pre3=$(scaled 3000)
walq publish "$QUEUE" '{"first": true}' >/dev/null
seq 1 "$pre2" | sed 's/.*/{"n": &, "s": "line &"}/' | walq publish --batch-size "$pre2" "$QUEUE" >/dev/null
q "INSERT INTO walq.jobs (queue, payload)
   SELECT '$QUEUE', jsonb_build_object('n', g, 's', repeat('x', g % 40))
     FROM generate_series(1, $pre3) g" >/dev/null
PRE=$((1 + pre2 + pre3))

# While it runs: the rest, in transactions of varied sizes, a short pause
# between them; the last one makes up N.
sizes=()
sum=0
for s in 1 2000 7 350 1 4000 64 1200 3 2500 999 10 3000; do
    s=$(scaled "$s")
    sizes+=("$s")
    sum=$((sum + s))
done
sizes+=($((N - PRE - sum)))
[ "${sizes[-1]}" -gt 0 ] || fail "the sizes add up to more than $N"
cat >"$WORK/publisher.sh" <<PUBLISHER
#!/usr/bin/env bash
set -euo pipefail
i=0
for s in ${sizes[*]}; do
    i=\$((i + 1))
    if [ \$((i % 3)) -eq 0 ]; then
        seq 1 "\$s" | sed 's/.*/{"n": &, "via": "walq publish"}/' |
            "$WALQ_BIN" publish --batch-size 100000 $QUEUE >/dev/null
    else
        "$PGTEST_BINDIR/psql" -X -q -v ON_ERROR_STOP=1 -c \\
            "INSERT INTO walq.jobs (queue, payload, priority)
             SELECT '$QUEUE', jsonb_build_object('n', g, 'txn', \$i), g % 3
               FROM generate_series(1, \$s) g"
    fi
    sleep 0.3
done
PUBLISHER
chmod 0755 "$WORK/publisher.sh"

# No process of an earlier consumer is left: its slot is free and its
# session on the primary (the holder its reader's row names) is gone.
consumer_gone() {
    ! slot_active "walq_$GROUP" &&
        [ "$(q "SELECT count(*) FROM walq.readers WHERE walq.reader_held(slot_name)")" = 0 ]
}

start_consumer() {
    bg "$WALQ_BIN" consume --keep-outcomes --group "$GROUP" --queue "$QUEUE" --concurrency 4 -- "$h" \
        2>>"$WORK/consumer.log"
    pid=$BG_PID
}

start=$SECONDS
start_consumer
bg "$WORK/publisher.sh"
publisher=$BG_PID

# Kill k happens once between k and k + 1/2 eighths of the jobs are done,
# at a random count in that range, after a random extra 0 to 0.29 s: before
# the publisher's last transaction, so that even a fast consumer is killed
# with work left.
for k in $(seq 1 "$KILLS"); do
    target=$((k * N / 8 + RANDOM % (N / 16)))
    wait_for '[ "$(done_count '"$GROUP"')" -ge '"$target"' ]' 200 "$target jobs done (kill $k)"
    sleep "0.$((RANDOM % 30))"
    kill -0 "$pid" 2>/dev/null || fail "the consumer exited on its own before kill $k"
    kill -KILL "$pid"
    bg_wait "$pid" 10
    done_now=$(done_count "$GROUP")
    [ "$done_now" -lt "$N" ] || fail "every job was done before kill $k; the test proves nothing"
    pass "kill -9 number $k with $done_now of $N jobs done, $(wc -l <"$WORK/ran.log") handler runs"
    wait_for consumer_gone 20 "the killed consumer's slot and session to be released"
    start_consumer
done

bg_wait "$publisher" 60
assert_eq "$BG_RC" 0 "the publisher published every job"
assert_eq "$(q "SELECT count(*) FROM walq.jobs WHERE queue = '$QUEUE'")" "$N" "$N jobs published"

# The last consumer records some more jobs (a random number of them), then
# a last kill -9, and the drain.
target=$(($(done_count "$GROUP") + 1 + RANDOM % (N / 40)))
[ "$target" -lt "$N" ] || target=$((N - 1))
wait_for '[ "$(done_count '"$GROUP"')" -ge '"$target"' ]' 200 "$target jobs done (last kill)"
kill -KILL "$pid"
bg_wait "$pid" 10
pass "kill -9 number $((KILLS + 1)) with $(done_count "$GROUP") of $N jobs done"
wait_for consumer_gone 20 "the killed consumer's slot and session to be released"

capture walq_timeout 240 consume --keep-outcomes --group "$GROUP" --queue "$QUEUE" --concurrency 4 --drain -- "$h"
printf '%s\n' "$CAP_ERR" >>"$WORK/consumer.log"
[ "$CAP_RC" -eq 0 ] || fail "--drain exited $CAP_RC: $CAP_ERR"
pass "--drain after $((KILLS + 1)) kill -9 exits 0 ($((SECONDS - start)) s since the first start)"

assert_all_done "$GROUP" "^$QUEUE\$" "$N"
assert_eq "$(q "SELECT count(*) FROM walq.job_status
                 WHERE consumer_group = '$GROUP' AND status = 'done'")" "$N" "job_status: $N jobs done"
assert_eq "$(sort -u "$WORK/ran.log" | wc -l)" "$N" "every job's handler ran at least once"
assert_eq "$(grep -cvE '^[0-9]+$' "$WORK/ran.log" || true)" 0 "the handler log holds job ids only"
runs=$(wc -l <"$WORK/ran.log")
reruns=$((runs - N))
twice=$(sort "$WORK/ran.log" | uniq -d | wc -l)
pass "handler runs: $runs for $N jobs: $reruns re-runs after kill -9, over $twice jobs"
pass "all"
