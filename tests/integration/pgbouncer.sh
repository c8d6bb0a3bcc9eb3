#!/usr/bin/env bash
# shellcheck disable=SC2016  # wait_for evals its condition later; $1 and $2 are SQL parameters
# Acks through a pooler (issue 12): three groups record their outcomes
# through PgBouncer in transaction pooling mode with a pool of one server
# connection (--primary at PgBouncer, --source direct to the server), so
# that their transactions take turns on one backend and no statement or lock
# of theirs may outlive its transaction.  Two groups run an exec handler,
# one the sql handler (whose statement commits with the ack).
#   1. 3,000 jobs, half before the consumers start: every group records
#      every job done once.  A second consumer of one group stands by while
#      the first holds the reader.
#   2. kill -9 of a consumer mid-stream: the standby takes over, and the
#      killed one started again stands by.
#   3. PgBouncer killed mid-stream and started again on the same socket:
#      the consumers reconnect.  Then group ga's holder stops, and the
#      standby takes over at once.
# In the end every job has exactly one final outcome per group, done, with
# attempts 1 unless its handler failed it on purpose (jobs n % 50 = 0 of the
# exec groups fail their first attempt), and the sql handler's effects
# happened once per job.
# shellcheck source=SCRIPTDIR/../lib/pgtest.sh
. "$(dirname "$0")/../lib/pgtest.sh"
require_walq
command -v pgbouncer >/dev/null || {
    echo "SKIP: ${TEST_NAME}: pgbouncer is not installed (bash tests/setup-debian.sh installs it)"
    exit 77
}
pg_start
walq init

# ---- PgBouncer, on a unix socket in a directory of the test's --------------

PGB_DIR=$WORK/pgb
mkdir "$PGB_DIR"
PGB_PORT=$(_pgtest_free_port)
chmod 0755 "$PGB_DIR"
_pgtest_is_root && chown postgres:postgres "$PGB_DIR"
cat >"$PGB_DIR/pgbouncer.ini" <<EOF
[databases]
postgres = host=$PGTEST_DIR port=$PGPORT dbname=postgres user=postgres

[pgbouncer]
listen_addr =
listen_port = $PGB_PORT
unix_socket_dir = $PGB_DIR
auth_type = trust
auth_file = $PGB_DIR/userlist.txt
pool_mode = transaction
default_pool_size = 1
max_client_conn = 100
logfile = $PGB_DIR/pgbouncer.log
pidfile = $PGB_DIR/pgbouncer.pid
admin_users = postgres
EOF
echo '"postgres" ""' >"$PGB_DIR/userlist.txt"
POOLED="host=$PGB_DIR port=$PGB_PORT user=postgres dbname=postgres"

# pgb_start: PgBouncer in the foreground, in a session of the harness's.
pgb_start() {
    rm -f "$PGB_DIR/pgbouncer.pid"
    if _pgtest_is_root; then
        bg runuser -u postgres -- pgbouncer "$PGB_DIR/pgbouncer.ini" 2>>"$PGB_DIR/stderr.log"
    else
        bg pgbouncer "$PGB_DIR/pgbouncer.ini" 2>>"$PGB_DIR/stderr.log"
    fi
    PGB_SESSION=$BG_PID
    wait_for '[ -s "$PGB_DIR/pgbouncer.pid" ] && pg_psql -d "$POOLED" -c "SELECT 1" >/dev/null 2>&1' \
        20 "PgBouncer to accept connections"
}
# pgb_kill: kill -9 of PgBouncer itself (whose pid is in its pid file).
pgb_kill() {
    local pid
    pid=$(cat "$PGB_DIR/pgbouncer.pid")
    kill -KILL "$pid"
    wait_for '! kill -0 '"$pid"' 2>/dev/null' 10 "PgBouncer to die"
    bg_wait "$PGB_SESSION" 10
}
pgb_start
assert_eq "$(pg_psql -d "host=$PGB_DIR port=$PGB_PORT user=postgres dbname=pgbouncer" \
    -c "SHOW CONFIG" | awk -F'|' '$1 == "pool_mode" || $1 == "default_pool_size" { print $2 }' |
    paste -sd' ')" "1 transaction" "PgBouncer: pool_mode transaction, default_pool_size 1"

# ---- the handlers ----------------------------------------------------------

N=3000
q "CREATE TABLE results (job_id bigint NOT NULL, payload jsonb NOT NULL)"
SQL='INSERT INTO results (job_id, payload) VALUES ($2, $1)'
h=$(handler work.sh <<HANDLER
payload=\$(cat)
echo "\$WALQ_JOB_ID \$WALQ_ATTEMPT" >>"$WORK/ran.\$WALQ_GROUP"
case \$payload in
*'"fail": true'*)
    if [ ! -e "$WORK/failed.\$WALQ_GROUP.\$WALQ_JOB_ID" ]; then
        : >"$WORK/failed.\$WALQ_GROUP.\$WALQ_JOB_ID"
        echo "failing the first attempt on purpose" >&2
        exit 1
    fi ;;
esac
case \$WALQ_JOB_ID in *3) sleep 0.01 ;; esac
exit 0
HANDLER
)
touch "$WORK/ran.ga" "$WORK/ran.gb"

# publish N: N jobs in one transaction on the server; every 50th is one the
# exec handlers fail once.
publish() {
    q "INSERT INTO walq.jobs (queue, payload)
       SELECT 'pq', jsonb_build_object('n', g, 'fail', g % 50 = 0) FROM generate_series(1, $1) g" \
        >/dev/null
}

OPTS=(--queue pq --source "$PGTEST_CONN" --primary "$POOLED" --backoff-min 0.2 --backoff-max 0.5
    --primary-timeout 5)
# start_consumer GROUP LOG: a consumer of the group, through PgBouncer.
start_consumer() {
    local g=$1 log=$2
    if [ "$g" = gs ]; then
        bg "$WALQ_BIN" consume --group "$g" "${OPTS[@]}" --sql "$SQL" 2>>"$log"
    else
        bg "$WALQ_BIN" consume --group "$g" "${OPTS[@]}" --concurrency 3 -- "$h" 2>>"$log"
    fi
}
# alive PID LOG: the consumer still runs; else its log is shown and the test fails.
alive() {
    if ! kill -0 "$1" 2>/dev/null || _pgtest_exited "$1"; then
        echo "--- $2 ---" >&2
        tail -n 20 "$2" >&2
        fail "consumer $1 exited ($2)"
    fi
}

# ---- 1. three groups through one server connection --------------------------

publish $((N / 2))
declare -A pid
for g in ga gb gs; do
    start_consumer "$g" "$WORK/$g.log"
    pid[$g]=$BG_PID
done
for g in ga gb gs; do
    wait_for "slot_active walq_$g || ! kill -0 ${pid[$g]} 2>/dev/null" 30 "group $g to stream"
    alive "${pid[$g]}" "$WORK/$g.log"
done
pass "three groups stream, their acks through PgBouncer (pool_mode transaction, pool size 1)"
start_consumer ga "$WORK/ga2.log"
standby=$BG_PID
wait_for 'grep -q "standing by" "$WORK/ga2.log" || ! kill -0 '"$standby"' 2>/dev/null' 20 \
    "a second consumer of group ga to stand by"
alive "$standby" "$WORK/ga2.log"
pass "a second consumer of group ga stands by: $(grep -o 'held by .*' "$WORK/ga2.log" | head -n 1)"
held_by=$("$WALQ_BIN" status --dbname "$POOLED" --source "$PGTEST_CONN" --group ga | awk '
    $1 == "group" { for (i = 1; i <= NF; i++) if ($i == "held_by") k = i; next }
    $1 == "ga" { print $k, $(k + 1), $(k + 2) }')
assert_match "$held_by" "pid ${pid[ga]}\$" "walq status through PgBouncer: group ga held by pid ${pid[ga]}"
capture "$WALQ_BIN" init --dbname "$POOLED"
assert_eq "$CAP_RC" 0 "walq init through PgBouncer (the schema is there already): exit 0"

for _ in $(seq 1 3); do
    publish $((N / 12))
    sleep 0.2
done
done_all() {
    local g
    for g in ga gb gs; do
        [ "$(done_count "$g")" -ge "$1" ] || return 1
    done
}
wait_for 'done_all '"$((N * 3 / 4))"' || ! kill -0 '"${pid[ga]}"' 2>/dev/null' 90 \
    "every group to finish $((N * 3 / 4)) jobs"
for g in ga gb gs; do
    alive "${pid[$g]}" "$WORK/$g.log"
done
pass "$((N * 3 / 4)) jobs done in every group"

# ---- 2. kill -9 of a consumer mid-stream ------------------------------------

publish $((N / 12))
wait_for '[ "$(done_count ga)" -gt '"$((N * 3 / 4))"' ]' 30 "group ga to go on"
kill -KILL "${pid[ga]}"
bg_wait "${pid[ga]}" 10
pass "kill -9 of group ga's consumer with $(done_count ga) of $((N * 5 / 6)) jobs done"
wait_for 'grep -q "took the reader over" "$WORK/ga2.log"' 20 "the standby of group ga to take over"
assert_match "$(cat "$WORK/ga2.log")" "holder, [^ ]+ pid [0-9]+, .* is gone" \
    "the standby took over at once, its holder gone (not when the lease ran out)"
pid[ga]=$standby
start_consumer ga "$WORK/ga3.log"
standby=$BG_PID
wait_for 'grep -q "standing by" "$WORK/ga3.log" || ! kill -0 '"$standby"' 2>/dev/null' 20 \
    "the restarted consumer of group ga to stand by"
alive "$standby" "$WORK/ga3.log"
pass "the killed consumer, started again, stands by"

# ---- 3. PgBouncer restarted mid-stream --------------------------------------

publish $((N / 12))
sleep 0.3
pgb_kill
pass "kill -9 of PgBouncer"
publish $((N / 12))
sleep 1
pgb_start
pass "PgBouncer started again on the same socket"
wait_for 'done_all '"$N"'' 90 "every group to finish all $N jobs"
for g in ga gb gs; do
    alive "${pid[$g]}" "$WORK/$g.log"
done
alive "$standby" "$WORK/ga3.log"
grep -q "reconnected to the primary" "$WORK/gb.log" ||
    fail "group gb did not say it reconnected to the primary: $(tail -n 5 "$WORK/gb.log")"
pass "the consumers reconnected through PgBouncer"

# The holder of group ga lets its lease go as it stops: the standby takes
# over at once, not when the lease would have run out (30 s).
sleep 0.5
kill -TERM "${pid[ga]}"
bg_wait "${pid[ga]}" 20
assert_eq "$BG_RC" 0 "group ga's holder exits 0 on SIGTERM"
wait_for 'grep -q "took the reader over" "$WORK/ga3.log"' 10 "the last standby of group ga to take over"
grep -q "is gone" "$WORK/ga3.log" && fail "the last standby found the holder gone, not its lease let go"
pass "the holder let its lease go"
pid[ga]=$standby
for g in ga gb gs; do
    kill -TERM "${pid[$g]}"
    bg_wait "${pid[$g]}" 20
    assert_eq "$BG_RC" 0 "group $g's consumer exits 0 on SIGTERM"
done

# ---- what was recorded -------------------------------------------------------

for g in ga gb gs; do
    assert_all_done "$g" '^pq$' "$N"
done
for g in ga gb; do
    assert_eq "$(q "SELECT count(*) FROM walq.job_status s JOIN walq.jobs j ON j.id = s.job_id
                     WHERE s.consumer_group = '$g'
                       AND s.attempts <> 1 AND NOT (j.payload->>'fail')::boolean")" 0 \
        "group $g: attempts 1 for every job its handler did not fail"
    assert_eq "$(q "SELECT count(*) FROM walq.job_status s JOIN walq.jobs j ON j.id = s.job_id
                     WHERE s.consumer_group = '$g' AND (j.payload->>'fail')::boolean
                       AND s.attempts NOT IN (1, 2)")" 0 \
        "group $g: attempts 1 or 2 for the jobs its handler failed once"
    assert_eq "$(cut -d' ' -f1 "$WORK/ran.$g" | sort -u | wc -l)" "$N" "group $g: every job ran"
done
assert_eq "$(q "SELECT count(*) FROM walq.job_status WHERE consumer_group = 'gs' AND attempts <> 1")" \
    0 "group gs: attempts 1 for every job"
assert_eq "$(q "SELECT count(*), count(DISTINCT job_id) FROM results")" "$N|$N" \
    "the sql handler's effects: one row per job"
assert_eq "$(q "SELECT count(*) FROM results r JOIN walq.jobs j ON j.id = r.job_id
                 WHERE r.payload <> j.payload")" 0 "the sql handler's rows hold the jobs' payloads"
assert_eq "$(q "SELECT epoch FROM walq.readers WHERE group_name = 'ga'")" 3 \
    "group ga's reader was taken three times (epoch 3)"
# Nothing of walq's is left in the server's session by a transaction.
assert_eq "$(q "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'")" 0 \
    "no advisory lock left on the server"
pass "all"
