#!/usr/bin/env bash
# shellcheck disable=SC2016  # wait_for evals its condition later
# Partitioned groups: --partition K/N readers, each with its own slot, take
# the jobs whose id hashes to K (walq.partition_of); together they do every
# job of the group once, through the backlog, the stream, retries, a kill -9
# and a change of N.
# shellcheck source=SCRIPTDIR/../lib/pgtest.sh
. "$(dirname "$0")/../lib/pgtest.sh"
require_walq
pg_start
walq init

# The handler logs "partition id"; ids ending in 7 fail their first attempt.
h=$(handler work.sh <<HANDLER
cat >/dev/null
echo "\$1 \$WALQ_JOB_ID" >>"$WORK/ran.log"
case \$WALQ_JOB_ID:\$WALQ_ATTEMPT in
*7:1) exit 1 ;;
esac
exit 0
HANDLER
)
touch "$WORK/ran.log"
declare -A reader

start_reader() { # K N
    bg "$WALQ_BIN" consume --keep-outcomes --group p --queue pq --partition "$1/$2" --concurrency 2 \
        --backoff-min 0.05 --backoff-max 0.1 -- "$h" "$1"
    reader[$1]=$BG_PID
}
stop_reader() { # K
    kill -TERM "${reader[$1]}"
    bg_wait "${reader[$1]}" 30
    assert_eq "$BG_RC" 0 "reader $1 exits 0 on SIGTERM"
}

# 300 jobs before the readers start: each reads its share from the table.
publish_sql pq 300
for k in 0 1 2; do start_reader "$k" 3; done
for k in 0 1 2; do
    wait_for "slot_active walq_p_${k}of3" 30 "reader $k/3 to stream from walq_p_${k}of3"
done
# 600 more while they stream; reader 1 is killed in the middle.
for _ in $(seq 1 6); do publish_sql pq 50; done
kill -KILL "${reader[1]}"
bg_wait "${reader[1]}" 10
pass "kill -9 of reader 1/3 with $(done_count p) jobs done"
for _ in $(seq 1 6); do publish_sql pq 50; done
wait_for '! slot_active walq_p_1of3' 20 "slot walq_p_1of3 to be released"
start_reader 1 3
wait_for '[ "$(done_count p)" -ge 900 ]' 90 "900 jobs done"
sleep 0.3

assert_all_done p '^pq$' 900
# Each job ran only in the reader of its partition.
wrong=$(q "CREATE TEMP TABLE ran (k int, id bigint);
           COPY ran FROM '$WORK/ran.log' (DELIMITER ' ');
           SELECT count(*) FROM ran WHERE k <> walq.partition_of(id, 3)")
assert_eq "$wrong" 0 "every job ran in the reader of its partition"
shares=$(q "SELECT string_agg(n::text, ' ' ORDER BY k) FROM
              (SELECT walq.partition_of(id, 3) k, count(*) n FROM walq.jobs GROUP BY 1) s")
pass "jobs per partition: $shares"
for n in $shares; do
    [ "$n" -gt 240 ] || fail "a partition has only $n of 900 jobs: the hash does not spread"
done
retried=$(q "SELECT count(*) FROM walq.outcomes WHERE group_name = 'p' AND attempts = 2")
assert_eq "$retried" "$(q "SELECT count(*) FROM walq.jobs WHERE id % 10 = 7")" \
    "jobs ending in 7 took two attempts (retries stay in their partition)"

# walq status: one row per reader, each held by its process.
capture "$WALQ_BIN" status
printf '%s\n' "$CAP_OUT" | sed 's/^/    | /'
for k in 0 1 2; do
    assert_match "$CAP_OUT" "^p +$k/3 +walq_p_${k}of3 +[^ ]+ pid ${reader[$k]} " \
        "walq status: reader $k/3 held by pid ${reader[$k]}"
done

# Another partitioning while the group runs is refused, naming the reader.
capture "$WALQ_BIN" consume --keep-outcomes --group p --queue pq --partition 0/2 --drain -- "$h" 0
assert_eq "$CAP_RC" 1 "--partition 0/2 while 3 readers run: exit 1"
assert_match "$CAP_ERR" 'still read as partition [0-2] of 3' "the error names the running partitioning"
assert_match "$CAP_ERR" 'HINT: +Stop every reader' "with a hint"

# Changing N: stop the readers, start with the new N.  The old slots go, and
# the new readers read what is unfinished from the table.
for k in 0 1 2; do stop_reader "$k"; done
publish_sql pq 150
for k in 0 1; do
    walq_timeout 60 consume --keep-outcomes --group p --queue pq --partition "$k/2" --drain \
        --backoff-min 0.05 --backoff-max 0.1 -- "$h" "$k"
done
assert_eq "$(q "SELECT string_agg(slot_name, ',' ORDER BY slot_name) FROM pg_replication_slots")" \
    "walq_p_0of2,walq_p_1of2" "the slots of the 3-way partitioning are gone"
# pgoutput readers' publications go with their slots.
if [ "$(q "SELECT count(*) FROM pg_replication_slots WHERE plugin = 'pgoutput'")" = 2 ]; then
    assert_eq "$(q "SELECT string_agg(pubname, ',' ORDER BY pubname) FROM pg_publication")" \
        "walq_p_0of2,walq_p_1of2" "and so are their publications"
fi
assert_eq "$(q "SELECT string_agg(partition || '/' || partitions, ',' ORDER BY partition)
                 FROM walq.readers WHERE group_name = 'p'")" "0/2,1/2" "walq.readers: two readers"
assert_all_done p '^pq$' 1050
wrong=$(q "CREATE TEMP TABLE ran (k int, id bigint);
           COPY ran FROM '$WORK/ran.log' (DELIMITER ' ');
           SELECT count(*) FROM ran r JOIN walq.jobs j ON j.id = r.id
            WHERE j.id > (SELECT max(id) - 150 FROM walq.jobs) AND k <> walq.partition_of(r.id, 2)")
assert_eq "$wrong" 0 "after the change, jobs run in their partition of 2"

# Bad partitions are usage errors.
for bad in 3/3 -1/2 1/0 x 1/2/3 0/1025; do
    capture "$WALQ_BIN" consume --keep-outcomes --group p --queue pq --partition "$bad" --noop
    assert_eq "$CAP_RC" 2 "--partition $bad is a usage error"
done
pass "all"
