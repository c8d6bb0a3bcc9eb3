#!/usr/bin/env bash
# shellcheck disable=SC2016  # wait_for evals its condition later
# The consumer's side of the roles (docs/security.md): a login with
# REPLICATION that is a member of walq_consumer, owns nothing and is no
# superuser runs its group end to end with the plugin of WALQ_PLUGIN
# (default pgoutput): its slot, its publication (made as walq's owner), its
# acks, its generations (walq.maintain) with their seals.  The fence: a
# producer login that holds the old advisory lock of the group's reader, or
# tries to take the reader through walq's functions or its row, keeps no
# consumer out; a second consumer of the group stands by while the first
# lives and takes over at once when it is killed.  A seal command walq did
# not send (inserted by the owner, whom nothing stops) is refused by the
# reader, with a warning, and so are a cancel and a retry that walq's
# functions did not record.  walq audit runs as the same login (where wal2json
# is), and a group runs in a database whose walq owner is no superuser.
# shellcheck source=SCRIPTDIR/../lib/pgtest.sh
. "$(dirname "$0")/../lib/pgtest.sh"
require_walq
if [ "${WALQ_PLUGIN:-}" = wal2json ]; then
    pgtest_require_wal2json "the consumer reads wal2json here (WALQ_PLUGIN=wal2json)"
fi
pg_start
walq init
pass "using PostgreSQL $PGTEST_PG, plugin ${WALQ_PLUGIN:-default}"

q "CREATE ROLE app_consumer LOGIN REPLICATION IN ROLE walq_consumer;
   CREATE ROLE app_producer LOGIN IN ROLE walq_producer;
   CREATE ROLE app_admin LOGIN IN ROLE walq_admin" >/dev/null
assert_eq "$(q "SELECT rolsuper OR pg_has_role('app_consumer', 'postgres', 'USAGE')
                  FROM pg_roles WHERE rolname = 'app_consumer'")" f \
    "app_consumer is no superuser and cannot act as walq's owner"
assert_eq "$(q "SELECT count(*) FROM pg_class
                 WHERE relnamespace = 'walq'::regnamespace AND relowner = 'app_consumer'::regrole")" 0 \
    "app_consumer owns no table of walq's"

CONS="host=$PGHOST port=$PGPORT dbname=postgres user=app_consumer"
PROD="host=$PGHOST port=$PGPORT dbname=postgres user=app_producer"
ADMIN="host=$PGHOST port=$PGPORT dbname=postgres user=app_admin"

# A generation every second or so, so that seals go through the stream.
psql -X -At -v ON_ERROR_STOP=1 -d "$ADMIN" -c "SELECT walq.set_retention('3 seconds')" >/dev/null
pass "walq_admin sets the retention"

h=$(handler work.sh <<HANDLER
read -r _ || true
echo "\$WALQ_JOB_ID" >>"$WORK/ran.log"
exit 0
HANDLER
)
touch "$WORK/ran.log"
# Jobs run, by the handler's log: with a retention of seconds, finished
# jobs and their records go soon after.
ran() { sort -u "$WORK/ran.log" | wc -l; }

# The producer publishes, and holds the advisory lock that used to be the
# reader's fence, in a session that stays open.
for i in $(seq 1 50); do
    echo "{\"n\": $i}"
done | walq publish --dbname "$PROD" rq >/dev/null
pass "the producer publishes 50 jobs"
psql -X -At -d "$PROD" -c "SELECT pg_advisory_lock(2037741434, hashtext('walq_rg'));
                           SELECT pg_sleep(600)" >/dev/null 2>&1 &
holder=$!
producer_locks() {
    q "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
        WHERE l.locktype = 'advisory' AND l.granted AND a.usename = 'app_producer'"
}
wait_for '[ "$(producer_locks)" = 1 ]' 10 "the producer's session to hold the old fence's advisory lock"

# The producer cannot take the reader, nor block it, through walq's side.
for sql in "SELECT walq.lock_reader('walq_rg', 0, false)" \
           "SELECT walq.unlock_reader('walq_rg')" \
           "INSERT INTO walq.readers (group_name, partition, partitions, slot_name, queues)
                 VALUES ('rg', 0, 1, 'walq_rg', '{rq}')" \
           "INSERT INTO walq.groups (name, queues) VALUES ('rg', '{rq}')"; do
    capture psql -X -At -v ON_ERROR_STOP=1 -d "$PROD" -c "$sql"
    [ "$CAP_RC" -ne 0 ] || fail "the producer ran: $sql"
    assert_match "$CAP_ERR" 'permission denied' "the producer may not: ${sql:0:40}"
done

PGUSER=app_consumer bg "$WALQ_BIN" consume --group rg --queue rq -- "$h" 2>"$WORK/first.log"
first=$BG_PID
wait_for '[ "$(ran)" -ge 50 ]' 60 "app_consumer to do the 50 jobs"
pass "app_consumer runs its group although the producer holds the old advisory lock"
assert_eq "$(q "SELECT holder_pid IS NOT NULL AND walq.reader_held('walq_rg')
                  FROM walq.readers WHERE slot_name = 'walq_rg'")" t \
    "the reader's row names the consumer's backend as its holder"
if [ "${WALQ_PLUGIN:-pgoutput}" = pgoutput ]; then
    assert_eq "$(q "SELECT pg_get_userbyid(pubowner) FROM pg_publication WHERE pubname = 'walq_rg'")" \
        postgres "the publication of a consumer that does not own walq.jobs is walq's owner's"
fi

# Now that the reader's row is there, the producer cannot write it either.
capture psql -X -At -v ON_ERROR_STOP=1 -d "$PROD" \
    -c "UPDATE walq.readers SET holder_pid = pg_backend_pid(), lease_until = 'infinity'"
assert_match "$CAP_ERR" 'permission denied' "the producer may not write the reader's row"

# The generations go on as app_consumer: partitions made and sealed by
# walq.maintain(), seals passed by the reader.
wait_for '[ "$(q "SELECT coalesce(max(sealed_through), 0) FROM walq.readers WHERE group_name = '"'rg'"'")" -ge 2 ]' \
    60 "the reader to pass the seals of two generations"
assert_eq "$(q "SELECT count(*) > 2 FROM walq.generations")" t \
    "walq.maintain() called by app_consumer made new generations"

# A seal walq did not send: the owner can insert one; the reader refuses it.
far=$(q "SELECT pg_sequence_last_value('walq.generation_seq') + 1000")
q "INSERT INTO walq.commands (group_name, job_id, action) VALUES ('rg', $far, 'seal')" >/dev/null
for i in $(seq 1 5); do
    echo "{\"after_seal\": $i}"
done | walq publish --dbname "$PROD" rq >/dev/null
wait_for '[ "$(ran)" -ge 55 ]' 60 "the jobs after the forged seal to be done"
wait_for 'grep -q "seal command for generation $far ignored" "$WORK/first.log"' 20 \
    "the consumer to warn about the forged seal"
assert_eq "$(q "SELECT max(sealed_through) < $far FROM walq.readers WHERE group_name = 'rg'")" t \
    "the forged seal moved no reader's sealed_through"

# A cancel and a retry walq did not send are not trusted either: the reader
# acts on them only when the outcome walq.cancel_job or walq.retry_job
# records says so.
sched=$(walq publish --dbname "$PROD" --run-at "$(date -u -d '+40 seconds' '+%Y-%m-%d %H:%M:%S+00')" rq '{"later": true}')
wait_for '[ "$(q "SELECT status FROM walq.job_status WHERE job_id = '"$sched"'")" = scheduled ]' 30 \
    "job $sched to be scheduled"
q "INSERT INTO walq.commands (group_name, job_id, action) VALUES ('rg', $sched, 'cancel')" >/dev/null
wait_for 'grep -q "cancel command for job $sched ignored" "$WORK/first.log"' 20 \
    "the consumer to ignore the forged cancel"
assert_eq "$(q "SELECT status FROM walq.job_status WHERE job_id = $sched")" scheduled \
    "job $sched is still scheduled after a forged cancel"
done_id=$(head -n 1 "$WORK/ran.log")
q "INSERT INTO walq.commands (group_name, job_id, action) VALUES ('rg', $done_id, 'retry')" >/dev/null
wait_for 'grep -q "retry command for job $done_id ignored" "$WORK/first.log"' 20 \
    "the consumer to ignore the forged retry"
assert_eq "$(grep -cx "$done_id" "$WORK/ran.log")" 1 "job $done_id did not run again"
walq job cancel --dbname "$ADMIN" "$sched" >/dev/null
wait_for 'grep -q "job $sched cancelled" "$WORK/first.log"' 20 "the consumer to drop the cancelled job"
assert_eq "$(q "SELECT status FROM walq.job_status WHERE job_id = $sched")" cancelled \
    "walq_admin's cancel of job $sched is acted on"

# A second consumer stands by while the first lives...
PGUSER=app_consumer bg "$WALQ_BIN" consume --group rg --queue rq -- "$h" 2>"$WORK/second.log"
second=$BG_PID
sleep 2
for i in $(seq 1 10); do
    echo "{\"standby\": $i}"
done | walq publish --dbname "$PROD" rq >/dev/null
wait_for '[ "$(ran)" -ge 65 ]' 60 "the first consumer to do 10 more jobs"
epoch=$(q "SELECT epoch FROM walq.readers WHERE slot_name = 'walq_rg'")
holder_pid=$(q "SELECT holder_pid FROM walq.readers WHERE slot_name = 'walq_rg'")
assert_eq "$(q "SELECT usename FROM pg_stat_activity WHERE pid = $holder_pid")" app_consumer \
    "the holder is the first consumer's backend"
kill -0 "$second" || fail "the second consumer exited while the first ran"

# ... and takes over at once when it is killed.
kill -KILL "$first"
bg_wait "$first" 10
start=$(date +%s%N)
wait_for '[ "$(q "SELECT epoch FROM walq.readers WHERE slot_name = '"'walq_rg'"'")" -gt '"$epoch"' ]' 20 \
    "the second consumer to take the reader over"
took=$((($(date +%s%N) - start) / 1000000))
[ "$took" -lt 5000 ] || fail "the takeover took $took ms"
pass "the second consumer took over $took ms after kill -9 of the first"
for i in $(seq 1 10); do
    echo "{\"after\": $i}"
done | walq publish --dbname "$PROD" rq >/dev/null
wait_for '[ "$(ran)" -ge 75 ]' 60 "the second consumer to do 10 more jobs"

# walq audit as the same login (wal2json: the audit reads no other plugin).
if [ "$PGTEST_WAL2JSON" = 1 ]; then
    PGUSER=app_consumer bg "$WALQ_BIN" audit --group ra --output "$WORK/audit.jsonl" 2>"$WORK/audit.log"
    apid=$BG_PID
    wait_for 'slot_active walqaudit_ra' 30 "app_consumer's audit to stream"
    for i in $(seq 1 3); do
        echo "{\"audited\": $i}"
    done | walq publish --dbname "$PROD" rq >/dev/null
    wait_for '[ "$(grep -c audited "$WORK/audit.jsonl" 2>/dev/null)" -ge 3 ]' 30 \
        "app_consumer's audit to write the 3 jobs"
    kill -TERM "$apid"
    bg_wait "$apid" 30
    assert_eq "$BG_RC" 0 "app_consumer's audit exits 0 on SIGTERM"
    wait_for '[ "$(ran)" -ge 78 ]' 60 "the second consumer to do the audited jobs"
    total=78
else
    pass "(no wal2json on this server: walq audit, which reads only wal2json, is not tried)"
    total=75
fi
grep -q "standing by" "$WORK/second.log" || fail "the second consumer did not stand by: $(cat "$WORK/second.log")"
# walq's owner need not be a superuser either: in a database it owns, its
# SECURITY DEFINER functions make the publication, the partitions and the
# fence for app_consumer (pg_stat_activity then shows it pids only).
q "CREATE ROLE walq_owner LOGIN" >/dev/null
q "CREATE DATABASE ownerdb OWNER walq_owner" >/dev/null
walq init --dbname "host=$PGHOST port=$PGPORT dbname=ownerdb user=walq_owner"
for i in $(seq 1 20); do
    echo "{\"owned\": $i}"
done | walq publish --dbname "host=$PGHOST port=$PGPORT dbname=ownerdb user=app_producer" oq >/dev/null
walq_timeout 60 consume --dbname "host=$PGHOST port=$PGPORT dbname=ownerdb user=app_consumer" \
    --group og --queue oq --drain --noop
assert_eq "$(pg_psql -d ownerdb -c "SELECT count(*) FILTER (WHERE status = 'done'), count(*)
                                       FROM walq.job_status WHERE consumer_group = 'og'")" "20|20" \
    "app_consumer did every job in a database whose walq owner is no superuser"
if [ "${WALQ_PLUGIN:-pgoutput}" = pgoutput ]; then
    assert_eq "$(pg_psql -d ownerdb -c "SELECT pg_get_userbyid(pubowner) FROM pg_publication
                                          WHERE pubname = 'walq_og'")" walq_owner \
        "the publication there is walq_owner's"
fi
assert_eq "$(pg_psql -d ownerdb -c "SELECT count(*) > 1 FROM walq.generations")" t \
    "walq.maintain() made the next generation as walq_owner"

assert_eq "$(producer_locks)" 1 "the producer held the old advisory lock all along"
kill "$holder" 2>/dev/null || true
assert_eq "$(ran)" "$total" "every job ran"
assert_eq "$(q "SELECT count(*) FROM walq.job_status WHERE consumer_group = 'rg' AND status <> 'done'
                   AND job_id <> $sched")" 0 \
    "no job kept is other than done in the group, but the cancelled one"
pass "all"
