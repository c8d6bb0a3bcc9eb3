#!/usr/bin/env bash
# shellcheck disable=SC2016  # wait_for evals its condition later
# The roles walq init makes (docs/security.md), one boundary at a time, each
# with a login role that is a member of one of them (pg_hba is trust on the
# socket, so user=NAME acts as NAME):
#   - walq_producer publishes (walq publish, walq.publish, INSERT, COPY) and
#     reads job status, but cannot insert walq.commands rows, write dedup
#     keys or outcomes, take another producer's dedup key, read payloads,
#     or call what its functions call for it;
#   - walq_admin retries and cancels jobs and drops groups, and cannot
#     insert commands;
#   - a login with none of the three can do nothing, not even read a
#     payload;
#   - walq init by a role without CREATEROLE works once the roles exist,
#     and fails before, naming the fix.
# The consumer's boundary and the fence are roles_consumer.sh's.
# shellcheck source=SCRIPTDIR/../lib/pgtest.sh
. "$(dirname "$0")/../lib/pgtest.sh"
require_walq
pg_start
walq init

assert_eq "$(q "SELECT string_agg(rolname || ' ' || rolcanlogin, ',' ORDER BY rolname) FROM pg_roles
                 WHERE rolname LIKE 'walq\_%'")" \
    "walq_admin false,walq_consumer false,walq_producer false" "walq init made three NOLOGIN roles"
assert_eq "$(q "SELECT count(*) FROM pg_proc p, aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a
                 WHERE p.pronamespace = 'walq'::regnamespace AND a.grantee = 0")" 0 \
    "PUBLIC may execute no function of walq's"
assert_eq "$(q "SELECT count(*) FROM pg_class c, aclexplode(c.relacl) a
                 WHERE c.relnamespace = 'walq'::regnamespace AND a.grantee = 0")" 0 \
    "PUBLIC has no right on a table, view or sequence of walq's"
assert_eq "$(q "SELECT count(*) FROM pg_proc
                 WHERE pronamespace = 'walq'::regnamespace AND prosecdef
                   AND NOT coalesce(proconfig @> '{\"search_path=pg_catalog, pg_temp\"}', false)")" 0 \
    "every SECURITY DEFINER function of walq's has search_path = pg_catalog, pg_temp"

q "CREATE ROLE app_producer LOGIN IN ROLE walq_producer;
   CREATE ROLE other_producer LOGIN IN ROLE walq_producer;
   CREATE ROLE app_admin LOGIN IN ROLE walq_admin;
   CREATE ROLE nobody LOGIN" >/dev/null
conn() { echo "host=$PGHOST port=$PGPORT dbname=postgres user=$1"; }
as_role() {
    local who=$1
    shift
    psql -X -Atq -v ON_ERROR_STOP=1 -d "$(conn "$who")" -c "$*"
}
# refused WHO SQL WHAT: WHO may not run SQL.
refused() {
    capture as_role "$1" "$2"
    [ "$CAP_RC" -ne 0 ] || fail "$1 ran: $2 (output: $CAP_OUT)"
    assert_match "$CAP_ERR" 'permission denied' "$1 may not $3"
}

# --- walq_producer --------------------------------------------------------
id1=$(walq publish --dbname "$(conn app_producer)" pq '{"secret": "s1"}')
pass "the producer publishes with walq publish (job $id1)"
id2=$(as_role app_producer "SELECT walq.publish('pq', '{\"secret\": \"s2\"}', dedup_key => 'k1')")
id3=$(as_role app_producer "INSERT INTO walq.jobs (queue, payload) VALUES ('pq', '{\"secret\": \"s3\"}') RETURNING id")
printf '{"secret": "s4"}\n{"secret": "s5"}\n' | walq publish --dbname "$(conn app_producer)" pq >/dev/null
as_role app_producer "COPY walq.jobs (queue, payload) FROM STDIN" <<<'pq	{"secret": "s6"}' >/dev/null
assert_eq "$(q "SELECT count(*) FROM walq.jobs WHERE queue = 'pq'")" 6 \
    "the producer published with walq.publish, INSERT ... RETURNING, a batch and COPY"

# Status: by the view, before any group reads the queue and after.
q "INSERT INTO walq.groups (name, queues) VALUES ('pg', '{pq}')" >/dev/null
assert_eq "$(as_role app_producer "SELECT status FROM walq.job_status WHERE job_id = $id3")" queued \
    "the producer reads job status"
assert_eq "$(as_role app_producer "SELECT queue FROM walq.jobs WHERE id = $id3")" pq \
    "the producer reads a job's columns but its payload"

# Dedup: another producer's key stays its own.
assert_eq "$(as_role other_producer "SELECT walq.publish('pq', '{}', dedup_key => 'k1')")" "$id2" \
    "a second producer with the same dedup key gets the first job's id"
refused other_producer "UPDATE walq.dedup_keys SET job_id = $id3 WHERE dedup_key = 'k1'" \
    "repoint a dedup key"
refused other_producer "DELETE FROM walq.dedup_keys" "delete dedup keys"
refused other_producer "INSERT INTO walq.dedup_keys VALUES ('pq', 'k2', $id3)" "insert a dedup key"
refused other_producer "SELECT walq.claim_dedup_key('pq', 'k1', $id3)" \
    "call the function that takes dedup keys"
assert_eq "$(q "SELECT job_id FROM walq.dedup_keys WHERE dedup_key = 'k1'")" "$id2" \
    "the key is still the first producer's job's"

# Commands, outcomes, groups, readers, the fence and the upkeep.
refused app_producer "INSERT INTO walq.commands (group_name, job_id, action) VALUES ('pg', 999999, 'seal')" \
    "insert a seal command"
refused app_producer "INSERT INTO walq.commands (group_name, job_id, action) VALUES ('pg', $id1, 'cancel')" \
    "insert a cancel command"
refused app_producer "INSERT INTO walq.outcomes (group_name, job_id, status, generation)
                      VALUES ('pg', $id1, 'done', 1)" "insert an outcome"
refused app_producer "UPDATE walq.outcomes SET status = 'done'" "update outcomes"
refused app_producer "INSERT INTO walq.outcome_batches (group_name, first_id, last_id, job_ids, lsn, generation)
                      VALUES ('pg', $id1, $id1, ARRAY[$id1::bigint], '0/1', 1)" "insert a batch"
refused app_producer "UPDATE walq.groups SET queues = '{}'" "change a group"
refused app_producer "UPDATE walq.readers SET lease_until = 'infinity'" "write the readers' fence"
refused app_producer "SELECT walq.lock_reader('walq_pg', 0, false)" "take a reader"
refused app_producer "SELECT walq.maintain()" "run the generations' upkeep"
refused app_producer "SELECT walq.retry_job($id1)" "retry a job"
refused app_producer "SELECT walq.cancel_job($id1)" "cancel a job"
refused app_producer "SELECT walq.set_retention('1 second')" "set the retention"
refused app_producer "SELECT payload FROM walq.jobs" "read payloads"
refused app_producer "SELECT * FROM walq.dead_jobs" "read dead jobs' payloads"
refused app_producer "SELECT * FROM walq_jobs.g1" "read a partition of walq.jobs"
refused app_producer "SELECT walq.define_publication('walq_pg', 'pg', '{pq}')" "make a publication"
refused app_producer "DELETE FROM walq.jobs" "delete jobs"
refused app_producer "INSERT INTO walq.jobs (queue, generation) VALUES ('pq', 1)" \
    "choose a job's generation"
assert_eq "$(q "SELECT count(*) FROM walq.commands")" 0 "no command was inserted"
assert_eq "$(q "SELECT count(*) FROM walq.outcomes")" 0 "no outcome was written"
# The old reader fence, an advisory lock, is no fence now: held, it blocks
# nothing of walq's.
as_role app_producer "SELECT pg_advisory_lock(2037741434, hashtext('walq_pg')), pg_advisory_lock(2037741436)" >/dev/null
pass "(the producer may take advisory locks; roles_consumer.sh shows they keep no consumer out)"

# --- walq_admin -----------------------------------------------------------
q "CREATE ROLE app_consumer LOGIN REPLICATION IN ROLE walq_consumer" >/dev/null
h=$(handler fail.sh <<'HANDLER'
read -r line || true
case $line in *'"fail": true'*) exit 1 ;; esac
exit 0
HANDLER
)
dead=$(walq publish --dbname "$(conn app_producer)" --max-attempts 1 aq '{"fail": true}')
later=$(walq publish --dbname "$(conn app_producer)" --run-at "$(date -u -d '+1 day' '+%Y-%m-%d %H:%M:%S+00')" aq '{}')
PGUSER=app_consumer bg "$WALQ_BIN" consume --group ag --queue aq -- "$h" 2>"$WORK/consume.log"
cons=$BG_PID
wait_for '[ "$(q "SELECT status FROM walq.job_status WHERE job_id = '"$dead"'")" = dead ]' 60 \
    "job $dead to die"
wait_for '[ "$(q "SELECT status FROM walq.job_status WHERE job_id = '"$later"'")" = scheduled ]' 60 \
    "job $later to be scheduled"
refused app_admin "INSERT INTO walq.commands (group_name, job_id, action) VALUES ('ag', $dead, 'retry')" \
    "insert a command"
refused app_admin "UPDATE walq.outcomes SET status = 'queued' WHERE job_id = $dead" "update outcomes"
walq job retry --dbname "$(conn app_admin)" "$dead" >/dev/null
walq job cancel --dbname "$(conn app_admin)" "$later" >/dev/null
pass "the admin retries job $dead and cancels job $later with walq job"
assert_eq "$(q "SELECT string_agg(action, ',' ORDER BY id) FROM walq.commands WHERE group_name = 'ag'")" \
    "retry,cancel" "through walq.retry_job and walq.cancel_job, the commands are there"
wait_for '[ "$(q "SELECT attempts FROM walq.job_status WHERE job_id = '"$dead"'")" = 1 ] &&
          [ "$(q "SELECT status FROM walq.job_status WHERE job_id = '"$dead"'")" = dead ]' 60 \
    "the retried job to run again (and die again)"
assert_eq "$(q "SELECT status FROM walq.job_status WHERE job_id = $later")" cancelled \
    "the cancelled job is cancelled"
grep -q "job $dead queued again by walq job retry" "$WORK/consume.log" ||
    fail "the consumer did not run the retried job again: $(cat "$WORK/consume.log")"
assert_eq "$(as_role app_admin "SELECT count(*) FROM walq.dead_jobs WHERE job_id = $dead")" 1 \
    "the admin reads dead jobs"
walq status --dbname "$(conn app_admin)" >/dev/null
walq job list --dbname "$(conn app_admin)" >/dev/null
assert_match "$(walq job show --dbname "$(conn app_admin)" "$dead")" 'dead' "the admin shows a dead job"
pass "the admin runs walq status, walq job list and walq job show"
kill -TERM "$cons"
bg_wait "$cons" 30

# Group administration: walq group drop, by an admin that may drop slots.
refused app_producer "SELECT * FROM walq.drop_group('ag')" "drop a group"
refused app_consumer "SELECT * FROM walq.drop_group('ag')" "drop a group"
refused app_consumer "INSERT INTO walq.commands (group_name, job_id, action) VALUES ('ag', 1, 'seal')" \
    "insert a command"
refused app_consumer "SELECT walq.retry_job($dead)" "retry a job"
refused app_consumer "SELECT walq.set_retention('1 second')" "set the retention"
q "CREATE ROLE app_admin_repl LOGIN REPLICATION IN ROLE walq_admin" >/dev/null
walq group drop --dbname "$(conn app_admin_repl)" ag --yes
assert_eq "$(q "SELECT (SELECT count(*) FROM walq.groups WHERE name = 'ag')
                     + (SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'walq_ag')
                     + (SELECT count(*) FROM pg_publication WHERE pubname = 'walq_ag')")" 0 \
    "an admin with REPLICATION drops a group: its row, its slot, its publication"

# --- a role with none of the three ------------------------------------------
for sql in "SELECT payload FROM walq.jobs" "SELECT * FROM walq.job_status" \
           "SELECT walq.publish('pq', '{}')" "INSERT INTO walq.jobs (queue) VALUES ('pq')" \
           "SELECT * FROM walq.dead_jobs" "SELECT * FROM walq.outcomes" \
           "SELECT walq.retry_job($dead)" "SELECT walq.partition_of(1, 2)" \
           "SELECT * FROM walq_jobs.g1"; do
    refused nobody "$sql" "${sql:0:40}"
done
capture walq publish --dbname "$(conn nobody)" pq '{}'
[ "$CAP_RC" -ne 0 ] || fail "walq publish as nobody exited 0"
capture walq job show --dbname "$(conn nobody)" "$id1"
[ "$CAP_RC" -ne 0 ] || fail "walq job show as nobody exited 0"
if grep -q 's1' <<<"$CAP_OUT$CAP_ERR"; then fail "walq job show as nobody showed a payload"; fi
pass "walq publish and walq job show fail for a role with none of the three"

# --- walq init without CREATEROLE -----------------------------------------
# In this cluster the roles exist: a database owner without CREATEROLE can
# make walq in its database.
q "CREATE ROLE dbowner LOGIN" >/dev/null
q "CREATE DATABASE owned OWNER dbowner" >/dev/null
q "GRANT CREATE ON DATABASE owned TO dbowner" >/dev/null
walq init --dbname "host=$PGHOST port=$PGPORT dbname=owned user=dbowner"
pass "walq init by a role without CREATEROLE works when the roles exist"
assert_eq "$(pg_psql -d owned -c "SELECT has_column_privilege('walq_producer', 'walq.jobs', 'queue', 'INSERT'),
                                         has_table_privilege('walq_producer', 'walq.commands', 'INSERT')")" \
    "t|f" "and grants what the roles need"

# In a cluster without them it fails, and says how to put it right.
pg_start_extra fresh
q_on fresh "CREATE ROLE dbowner LOGIN" >/dev/null
q_on fresh "CREATE DATABASE owned OWNER dbowner" >/dev/null
fresh_conn="$PGTEST_CONN_FRESH dbname=owned user=dbowner"
capture walq init --dbname "$fresh_conn"
[ "$CAP_RC" -ne 0 ] || fail "walq init without CREATEROLE and without the roles exited 0"
assert_match "$CAP_ERR" 'role "walq_producer" does not exist, and role "dbowner" may not create it' \
    "walq init names the missing role"
assert_match "$CAP_ERR" 'CREATE ROLE walq_producer NOLOGIN' "and the fix"
assert_eq "$(q_on fresh "SELECT count(*) FROM pg_roles WHERE rolname LIKE 'walq\_%'")" 0 \
    "no role was made"
q_on fresh "CREATE ROLE walq_producer NOLOGIN; CREATE ROLE walq_consumer NOLOGIN;
            CREATE ROLE walq_admin NOLOGIN" >/dev/null
walq init --dbname "$fresh_conn"
pass "once a role with CREATEROLE made them, walq init by dbowner works"
pass "all"
