#!/usr/bin/env bash
# shellcheck disable=SC2016  # wait_for evals its condition later
# The output plugin: pgoutput when none is named, through a publication that
# walq makes and keeps; wal2json when asked for; an existing slot keeps its
# plugin; a publication changed by hand is refused, one dropped is made anew
# and the group read again from walq.jobs, with every job done once.  On a
# server with output_plugin_libraries, wal2json is refused until a superuser
# allows it, with a hint that says how.
# shellcheck source=SCRIPTDIR/../lib/pgtest.sh
. "$(dirname "$0")/../lib/pgtest.sh"
require_walq
pg_start
walq init
# The plugin named in the environment (the test matrix's) is not a default here.
unset WALQ_PLUGIN
version=$(q "SHOW server_version_num")
has_libraries=$(q "SELECT count(*) FROM pg_settings WHERE name = 'output_plugin_libraries'")
# The server as it comes: the harness allows wal2json where it can, and
# that is put back to the default here.
if [ "$has_libraries" = 1 ]; then
    q "ALTER SYSTEM SET output_plugin_libraries = 'pgoutput', 'test_decoding'" >/dev/null
    q "SELECT pg_reload_conf()" >/dev/null
    wait_for '[ "$(q "SHOW output_plugin_libraries" | tr -d " ")" = pgoutput,test_decoding ]' 10 \
        "output_plugin_libraries to be the default"
    pass "output_plugin_libraries is the default: $(q "SHOW output_plugin_libraries")"
fi

jobs_of_a() { q "SELECT count(*) FROM walq.jobs WHERE queue = 'a'"; }
done_of() { q "SELECT count(*) FROM walq.job_status WHERE consumer_group = '$1' AND status = 'done'"; }
slot_plugin() { q "SELECT coalesce((SELECT plugin FROM pg_replication_slots WHERE slot_name = '$1'), 'none')"; }

# --- No plugin named: pgoutput, with a publication that filters the queues.
publish_sql a 300
publish_sql b 200
walq_timeout 60 consume --group p1 --queue a --drain --noop
assert_all_done p1 '^a$' 300
assert_eq "$(slot_plugin walq_p1)" pgoutput "no plugin named: the new slot is on pgoutput"
assert_eq "$(q "SELECT string_agg(schemaname || '.' || tablename, ',' ORDER BY tablename)
                 FROM pg_publication_tables WHERE pubname = 'walq_p1'")" "walq.commands,walq.jobs" \
    "publication walq_p1 publishes walq.jobs and walq.commands"
assert_eq "$(q "SELECT pubinsert AND NOT pubupdate AND NOT pubdelete AND NOT pubtruncate AND pubviaroot
                 FROM pg_publication WHERE pubname = 'walq_p1'")" t \
    "inserts only, partitions published as walq.jobs"
if [ "$version" -ge 150000 ]; then
    assert_match "$(q "SELECT rowfilter FROM pg_publication_tables WHERE pubname = 'walq_p1' AND tablename = 'jobs'")" \
        "queue = 'a'|'a'::text" "on PostgreSQL 15 and later the server filters the group's queues"
fi
publish_sql a 50
publish_sql b 50
walq_timeout 60 consume --group p1 --queue a --drain --noop
assert_all_done p1 '^a$' 350
pass "streamed jobs arrive through the publication, and only the group's queue"

# A second group on two partitions: the server sends each reader its part.
walq_timeout 60 consume --group pp --queue a --partition 0/2 --drain --noop
walq_timeout 60 consume --group pp --queue a --partition 1/2 --drain --noop
publish_sql a 100
walq_timeout 60 consume --group pp --queue a --partition 0/2 --drain --noop
walq_timeout 60 consume --group pp --queue a --partition 1/2 --drain --noop
assert_all_done pp '^a$' "$(jobs_of_a)"
assert_eq "$(q "SELECT count(*) FROM walq.job_status s WHERE consumer_group = 'pp'
                 AND s.attempts = 1 AND s.status = 'done'")" "$(jobs_of_a)" "each job of the partitioned group done once"

# --- A publication changed by hand is refused with the fix.
q "ALTER PUBLICATION walq_p1 SET TABLE walq.jobs, walq.commands" >/dev/null
capture walq_timeout 30 consume --group p1 --queue a --drain --noop
printf '%s\n' "$CAP_ERR" | sed 's/^/    | /'
assert_eq "$CAP_RC" 1 "a publication changed by hand: consume exits 1"
assert_match "$CAP_ERR" 'publication "walq_p1" was changed by hand' "it names the publication"
assert_match "$CAP_ERR" 'DROP PUBLICATION walq_p1' "the hint gives the fix"

# --- Dropped: made anew, the group read again from the table, nothing lost or doubled.
q "DROP PUBLICATION walq_p1" >/dev/null
publish_sql a 40
capture walq_timeout 60 consume --group p1 --queue a --drain --noop
printf '%s\n' "$CAP_ERR" | sed 's/^/    | /'
assert_eq "$CAP_RC" 0 "a dropped publication: consume goes on"
assert_match "$CAP_ERR" 'publication "walq_p1" of replication slot "walq_p1" is missing' "and warns"
assert_all_done p1 '^a$' "$(jobs_of_a)"
assert_eq "$(q "SELECT count(*) FROM pg_publication WHERE pubname = 'walq_p1'")" 1 "the publication is back"

# Dropped under a running consumer: the stream fails, the group resynchronizes.
bg "$WALQ_BIN" consume --group p1 --queue a --noop
run_pid=$BG_PID
publish_sql a 10
wait_for '[ "$(done_of p1)" -ge "$(jobs_of_a)" ]' 30 \
    "the running consumer to do 10 new jobs"
q "DROP PUBLICATION walq_p1" >/dev/null
publish_sql a 25
wait_for '[ "$(done_of p1)" -ge "$(jobs_of_a)" ]' 60 \
    "the 25 jobs published after the drop to be done"
kill -TERM "$run_pid"
bg_wait "$run_pid" 30
assert_eq "$BG_RC" 0 "the consumer that lost its publication exits 0 on SIGTERM"
assert_all_done p1 '^a$' "$(jobs_of_a)"
assert_eq "$(q "SELECT count(*) FROM pg_publication WHERE pubname = 'walq_p1'")" 1 "the publication was made anew"

# --- wal2json when asked for; the slot keeps it; another plugin named is refused.
if [ "$PGTEST_WAL2JSON" != 1 ]; then
    echo "note: PostgreSQL $PGTEST_PG here has no wal2json; the wal2json half is tested where it is installed"
    pass "all"
    exit 0
fi
if [ "$has_libraries" = 1 ]; then
    q "ALTER SYSTEM SET output_plugin_libraries = 'pgoutput', 'test_decoding'" >/dev/null
    q "SELECT pg_reload_conf()" >/dev/null
    capture walq_timeout 30 consume --group w1 --queue a --plugin wal2json --drain --noop
    printf '%s\n' "$CAP_ERR" | sed 's/^/    | /'
    assert_eq "$CAP_RC" 1 "wal2json not allowed: consume exits 1"
    assert_match "$CAP_ERR" "output_plugin_libraries = 'pgoutput', 'test_decoding', 'wal2json'" \
        "the hint gives the ALTER SYSTEM line"
    # The line of the hint, as given: a list of names.
    q "$(grep -o "ALTER SYSTEM SET output_plugin_libraries = [^(]*" <<<"$CAP_ERR" | sed 's/ *$//')" >/dev/null
    q "SELECT pg_reload_conf()" >/dev/null
    sleep 1
else
    echo "note: this server has no output_plugin_libraries; the refusal of wal2json is tested on newer minor releases"
fi
walq_timeout 60 consume --group w1 --queue a --plugin wal2json --drain --noop
assert_eq "$(slot_plugin walq_w1)" wal2json "--plugin wal2json: the slot is on wal2json"
assert_all_done w1 '^a$' "$(jobs_of_a)"
assert_eq "$(q "SELECT count(*) FROM pg_publication WHERE pubname = 'walq_w1'")" 0 "wal2json needs no publication"
publish_sql a 5
walq_timeout 60 consume --group w1 --queue a --drain --noop
assert_eq "$(slot_plugin walq_w1)" wal2json "no plugin named: the slot keeps wal2json"
assert_all_done w1 '^a$' "$(jobs_of_a)"
capture walq_timeout 30 consume --group w1 --queue a --plugin pgoutput --drain --noop
printf '%s\n' "$CAP_ERR" | sed 's/^/    | /'
assert_eq "$CAP_RC" 1 "--plugin pgoutput on a wal2json slot: consume exits 1"
assert_match "$CAP_ERR" 'replication slot "walq_w1" was made with plugin wal2json, not pgoutput' "it says why"
assert_match "$CAP_ERR" "pg_drop_replication_slot\\('walq_w1'\\)" "and how to move the group"
capture env WALQ_PLUGIN=nonesuch "$WALQ_BIN" consume --group w1 --queue a --drain --noop
assert_eq "$CAP_RC" 2 "WALQ_PLUGIN=nonesuch: a usage error"
assert_match "$CAP_ERR" 'WALQ_PLUGIN takes pgoutput, wal2json or auto' "naming the variable"

# Both plugins read the same jobs alike: the wal2json group and the pgoutput
# group recorded the same set.
assert_eq "$(q "SELECT count(*) FROM (SELECT job_id FROM walq.job_status WHERE consumer_group = 'p1'
                 EXCEPT SELECT job_id FROM walq.job_status WHERE consumer_group = 'w1') d")" 0 \
    "every job the pgoutput group did, the wal2json group did"
assert_eq "$(done_of w1)" "$(( $(done_of p1) + 5 ))" "and the 5 jobs published since"
pass "all"
