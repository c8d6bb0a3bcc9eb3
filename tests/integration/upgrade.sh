#!/usr/bin/env bash
# shellcheck disable=SC2016  # wait_for evals its condition later
# Upgrading a database made before the functions, views and triggers moved
# to sql/repeatable/.  tests/data/schema-620d411/ holds the migrations of
# commit 620d411, whose five files each (re)defined functions and views; a
# database made from them, with jobs published through its functions, is
# upgraded by this walq init, then consumed (--noop and an exec handler) and
# administered (retry, cancel).  Every job is done once, walq.job_status is
# right, and the upgraded database has the same functions, views, triggers
# and tables as a new one.  The same holds from migrations 001-003 and 001
# alone.  A database whose definitions are not this program's fails the
# schema check until walq init runs; one migrated by a newer walq keeps its
# definitions.
# shellcheck source=SCRIPTDIR/../lib/pgtest.sh
. "$(dirname "$0")/../lib/pgtest.sh"
require_walq
pg_start

OLD=$WALQ_SOURCE_DIR/tests/data/schema-620d411

# old_init DB LAST: what `walq init` of 620d411 did to DB, up to migration
# LAST: the schema, walq.migrations, and each file with its row, in one
# transaction.
old_init() {
    local db=$1 last=$2 f name
    {
        echo "BEGIN;"
        echo "SET LOCAL client_min_messages = warning;"
        echo "CREATE SCHEMA IF NOT EXISTS walq;"
        echo "CREATE TABLE IF NOT EXISTS walq.migrations ("
        echo " name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now());"
        for f in "$OLD"/*.sql; do
            name=$(basename "$f")
            cat "$f"
            printf "\nINSERT INTO walq.migrations (name) VALUES ('%s');\n" "$name"
            if [ "$name" = "$last" ]; then
                break
            fi
        done
        echo "COMMIT;"
    } | pg_psql -d "$db" >/dev/null
}

# Every function (with its definition, owner and grants), view and trigger
# of schema walq, one per line group, in a stable order.
definitions_sql="
SELECT 'function ' || p.oid::regprocedure || ' owner ' || p.proowner::regrole
       || ' acl ' || coalesce(p.proacl::text, '-') || E'\n' || pg_get_functiondef(p.oid)
  FROM pg_proc p WHERE p.pronamespace = 'walq'::regnamespace
UNION ALL
SELECT 'view ' || c.oid::regclass || ' acl ' || coalesce(c.relacl::text, '-') || E'\n'
       || pg_get_viewdef(c.oid)
  FROM pg_class c WHERE c.relnamespace = 'walq'::regnamespace AND c.relkind IN ('v', 'm')
UNION ALL
SELECT 'trigger ' || pg_get_triggerdef(t.oid)
  FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
 WHERE c.relnamespace = 'walq'::regnamespace AND NOT t.tgisinternal
ORDER BY 1"

# The tables: columns, constraints, indexes, comments and grants.
tables_sql="
SELECT 'column ' || a.attrelid::regclass || '.' || a.attname || ' ' || format_type(a.atttypid, a.atttypmod)
       || CASE WHEN a.attnotnull THEN ' not null' ELSE '' END
       || coalesce(' default ' || pg_get_expr(d.adbin, d.adrelid), '')
       || CASE WHEN a.attidentity <> '' THEN ' identity ' || a.attidentity::text ELSE '' END
       || coalesce(' -- ' || col_description(a.attrelid, a.attnum), '')
  FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
  LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
 WHERE c.relnamespace = 'walq'::regnamespace AND c.relkind = 'r' AND a.attnum > 0
   AND NOT a.attisdropped
UNION ALL
SELECT 'constraint ' || r.conrelid::regclass || ' ' || r.conname || ' ' || pg_get_constraintdef(r.oid)
  FROM pg_constraint r WHERE r.connamespace = 'walq'::regnamespace
UNION ALL
SELECT 'index ' || pg_get_indexdef(i.indexrelid)
  FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid
 WHERE c.relnamespace = 'walq'::regnamespace
UNION ALL
SELECT 'table ' || c.oid::regclass || coalesce(' -- ' || obj_description(c.oid, 'pg_class'), '')
  FROM pg_class c WHERE c.relnamespace = 'walq'::regnamespace AND c.relkind = 'r'
UNION ALL
SELECT 'grants ' || c.oid::regclass || ' ' || coalesce(c.relacl::text, '-')
       || coalesce(' columns ' || (SELECT string_agg(a.attname || ' ' || a.attacl::text, ', '
                                                     ORDER BY a.attname)
                                     FROM pg_attribute a
                                    WHERE a.attrelid = c.oid AND a.attacl IS NOT NULL), '')
  FROM pg_class c
 WHERE c.relnamespace = 'walq'::regnamespace AND c.relkind IN ('r', 'p', 'S')
UNION ALL
SELECT 'schema ' || n.nspname || ' ' || coalesce(n.nspacl::text, '-')
  FROM pg_namespace n WHERE n.nspname IN ('walq', 'walq_jobs', 'walq_outcomes', 'walq_batches')
ORDER BY 1"

# same_as_fresh DB KIND SQL WHAT: fails when SQL lists other KIND in
# DB than in the new database "fresh".
same_as_fresh() {
    local db=$1 kind=$2 sql=$3 what=$4
    pg_psql -d fresh -c "$sql" >"$WORK/$kind.fresh"
    pg_psql -d "$db" -c "$sql" >"$WORK/$kind.$db"
    if ! diff -u "$WORK/$kind.fresh" "$WORK/$kind.$db" >"$WORK/$kind.diff"; then
        cat "$WORK/$kind.diff" >&2
        fail "$what: the $kind differ from a new database's (- new, + upgraded)"
    fi
}

# same_schema DB WHAT: DB has the functions, views, triggers and tables of
# the new database "fresh".
same_schema() {
    same_as_fresh "$1" definitions "$definitions_sql" "$2"
    same_as_fresh "$1" tables "$tables_sql" "$2"
    pass "$2: the same functions, views, triggers and tables as a new database"
}

# What `sha256sum *.sql | sha256sum` prints in sql/repeatable/: the checksum
# walq init records (sql/006_repeatables.sql).
checksum=$(cd "$WALQ_SOURCE_DIR/sql/repeatable" && LC_ALL=C sha256sum -- *.sql | sha256sum)
checksum=${checksum%% *}

# A new database, the reference.
q "CREATE DATABASE fresh" >/dev/null
capture walq init --dbname "dbname=fresh"
assert_eq "$CAP_RC" 0 "walq init of a new database exits 0"
assert_eq "$(pg_psql -d fresh -c "SELECT string_agg(checksum, ',') FROM walq.repeatables")" "$checksum" \
    "walq.repeatables records the checksum of sql/repeatable/, as sha256sum makes it"

# ---------------------------------------------------------------------------
# The database of 620d411, with jobs published through its functions.
# ---------------------------------------------------------------------------

old_init postgres 005_outcome_horizon.sql
assert_eq "$(q "SELECT string_agg(name, ',' ORDER BY name) FROM walq.migrations")" \
    "001_schema.sql,002_lifecycle.sql,003_sql_handler.sql,004_readers.sql,005_outcome_horizon.sql" \
    "the old database records migrations 001 to 005"

publish_sql work 200
k1=$(q "SELECT walq.publish('work', '{\"key\": 1}', dedup_key => 'k1')")
assert_eq "$(q "SELECT walq.publish('work', '{\"key\": 2}', dedup_key => 'k1')")" "$k1" \
    "before the upgrade, the old walq.publish returns the holder of a dedup key"
later=$(q "SELECT walq.publish('work', '{\"later\": true}', run_at => now() + interval '1 hour')")

# This walq refuses the old schema until it is upgraded.
capture walq job list
assert_eq "$CAP_RC" 1 "before the upgrade, walq job list exits 1"
assert_match "$CAP_ERR" 'the walq schema is missing or older than this program on ' \
    "and says the schema is older than the program"
assert_match "$CAP_ERR" 'HINT:  Run "walq init" against this database first\.' "with the hint"

capture walq init
assert_eq "$CAP_RC" 0 "walq init upgrades the old database"
assert_match "$CAP_ERR" 'applied 5 migrations; schema "walq" is up to date' \
    "walq init applies five migrations, 006 to 010"
assert_eq "$(q "SELECT string_agg(checksum, ',') FROM walq.repeatables")" "$checksum" \
    "the upgrade records the repeatable set"
same_schema postgres "upgraded from 001-005"

# The jobs published before the upgrade, consumed after it.
walq_timeout 60 consume --group g --queue work --drain --noop 2>>"$WORK/consumer.log"
pass "consume --drain --noop after the upgrade exits 0"
assert_eq "$(q "SELECT count(*), count(DISTINCT r.job_id) FROM ($(recorded_sql g)) r
                 WHERE r.status = 'done'")" "201|201" "the 201 jobs due are each done once"
assert_eq "$(q "SELECT status FROM walq.job_status WHERE job_id = $later")" scheduled \
    "the job due in an hour is scheduled"
assert_eq "$(q "SELECT status, count(*) FROM walq.job_status WHERE consumer_group = 'g'
                 GROUP BY 1 ORDER BY 1")" "$(printf 'done|201\nscheduled|1')" \
    "walq.job_status: 201 done, 1 scheduled"

# The key of a job that is done is free again.
k1b=$(q "SELECT walq.publish('work', '{\"key\": 3}', dedup_key => 'k1')")
[ "$k1b" != "$k1" ] || fail "walq.publish gave the done holder's id $k1 for a free key"
assert_eq "$(q "SELECT walq.publish('work', '{\"key\": 4}', dedup_key => 'k1')")" "$k1b" \
    "a key released by the consumer is taken again, and held"

# An exec handler run: one job fails and is dead.
publish_sql work 20
bad=$(q "SELECT walq.publish('work', '{\"fail\": true}', max_attempts => 1)")
touch "$WORK/broken"
h=$(handler handler.sh <<HANDLER
payload=\$(cat)
echo "\$WALQ_JOB_ID" >>"$WORK/ran.log"
case \$payload in *'"fail"'*) [ -e "$WORK/broken" ] && { echo "broken" >&2; exit 1; } ;; esac
exit 0
HANDLER
)
walq_timeout 60 consume --group g --queue work --drain -- "$h" 2>>"$WORK/consumer.log"
pass "consume --drain with an exec handler exits 0"
assert_eq "$(wc -l <"$WORK/ran.log")" 22 "the handler ran the 22 new jobs"
assert_eq "$(sort -u "$WORK/ran.log" | wc -l)" 22 "each once"
assert_eq "$(q "SELECT status || ' ' || attempts FROM walq.job_status WHERE job_id = $bad")" "dead 1" \
    "the failing job is dead after its one attempt"
assert_match "$(q "SELECT last_error FROM walq.dead_jobs WHERE job_id = $bad")" broken \
    "walq.dead_jobs shows it with its error"

# Administration through the upgraded functions.
capture walq job retry "$bad"
assert_eq "$CAP_RC" 0 "walq job retry of the dead job exits 0"
assert_match "$CAP_ERR" "^walq: job $bad queued again in 1 group\$" "and says so"
assert_eq "$(q "SELECT status FROM walq.job_status WHERE job_id = $bad")" queued "it is queued"
capture walq job cancel "$later"
assert_eq "$CAP_RC" 0 "walq job cancel of the scheduled job exits 0"
assert_match "$CAP_ERR" "^walq: job $later cancelled in 1 group\$" "and says so"
capture walq job cancel "$k1"
assert_eq "$CAP_RC" 1 "walq job cancel of a done job exits 1"
assert_match "$CAP_ERR" "job $k1 is already done in group \"g\"" "and says it is done"
capture walq job retry "$k1b"
assert_eq "$CAP_RC" 1 "walq job retry of a done job exits 1"
assert_match "$CAP_ERR" "job $k1b is done in group \"g\", not dead or cancelled" \
    "and says it is done"

rm "$WORK/broken"
walq_timeout 60 consume --group g --queue work --drain -- "$h" 2>>"$WORK/consumer.log"
assert_eq "$(grep -c "^$bad\$" "$WORK/ran.log")" 2 "the retried job ran again"
assert_eq "$(q "SELECT status, count(*) FROM walq.job_status WHERE consumer_group = 'g'
                 GROUP BY 1 ORDER BY 1")" "$(printf 'cancelled|1\ndone|223')" \
    "walq.job_status: 223 done, 1 cancelled"
assert_eq "$(q "SELECT count(*) - count(DISTINCT r.job_id) FROM ($(recorded_sql g)) r")" 0 \
    "no job has two outcomes"
assert_eq "$(q "SELECT count(*) FROM walq.jobs j WHERE NOT walq.job_finished(j.id)")" 0 \
    "walq.job_finished: every job is finished"

# Again: nothing new.
migrations=$(q "SELECT string_agg(name || ' ' || applied_at, ',' ORDER BY name) FROM walq.migrations")
sets=$(q "SELECT string_agg(checksum || ' ' || applied_at, ',') FROM walq.repeatables")
capture walq init
assert_eq "$CAP_RC" 0 "a second walq init exits 0"
assert_match "$CAP_ERR" 'schema "walq" is already up to date' "and applies no migration"
assert_eq "$(q "SELECT string_agg(name || ' ' || applied_at, ',' ORDER BY name) FROM walq.migrations")" \
    "$migrations" "walq.migrations is unchanged"
assert_eq "$(q "SELECT string_agg(checksum || ' ' || applied_at, ',') FROM walq.repeatables")" "$sets" \
    "walq.repeatables is unchanged"
same_schema postgres "upgraded, after a second walq init"

# ---------------------------------------------------------------------------
# Older databases: at migration 003, and at 001.
# ---------------------------------------------------------------------------

q "CREATE DATABASE old3" >/dev/null
old_init old3 003_sql_handler.sql
h3=$(pg_psql -d old3 -c "SELECT walq.publish('work', '{}', dedup_key => 'k3')")
capture walq init --dbname "dbname=old3"
assert_eq "$CAP_RC" 0 "walq init upgrades a database at migration 003"
assert_match "$CAP_ERR" 'applied 7 migrations' "applying 004 to 010"
same_schema old3 "upgraded from 001-003"
assert_eq "$(pg_psql -d old3 -c "SELECT walq.publish('work', '{}', dedup_key => 'k3')")" "$h3" \
    "the key taken before the upgrade is still held"

# At 001 the dedup key was a unique index; 002 moves the keys of unfinished
# jobs to walq.dedup_keys.  One job with a key is done in the group that
# reads its queue, one is not.
q "CREATE DATABASE old1" >/dev/null
old_init old1 001_schema.sql
pg_psql -d old1 -c "INSERT INTO walq.groups (name, slot_name, queues) VALUES ('g1', 'walq_g1', '{work}')"
d1=$(pg_psql -d old1 -c "SELECT walq.publish('work', '{}', dedup_key => 'done-key')")
u1=$(pg_psql -d old1 -c "SELECT walq.publish('work', '{}', dedup_key => 'open-key')")
pg_psql -d old1 -c "INSERT INTO walq.outcomes (group_name, job_id, status, attempts)
                    VALUES ('g1', $d1, 'done', 1)"
capture walq init --dbname "dbname=old1"
assert_eq "$CAP_RC" 0 "walq init upgrades a database at migration 001"
assert_match "$CAP_ERR" 'applied 9 migrations' "applying 002 to 010"
same_schema old1 "upgraded from 001"
assert_eq "$(pg_psql -d old1 -c "SELECT string_agg(dedup_key || ' ' || job_id, ',') FROM walq.dedup_keys")" \
    "open-key $u1" "the unfinished job keeps its key, the done one's is free"
assert_eq "$(pg_psql -d old1 -c "SELECT status FROM walq.job_status WHERE job_id = $d1")" "done" \
    "walq.job_status shows the outcome recorded before the upgrade"

# ---------------------------------------------------------------------------
# The schema check and the repeatable set.
# ---------------------------------------------------------------------------

# Definitions that are not this program's (another walq applied its own
# set): the check fails, walq init puts this program's back.
pg_psql -d old1 -c "UPDATE walq.repeatables SET checksum = 'another'"
capture walq job list --dbname "dbname=old1"
assert_eq "$CAP_RC" 1 "with another repeatable set, walq job list exits 1"
assert_match "$CAP_ERR" 'the walq schema is missing or older than this program on ' \
    "and says the schema is older than the program"
pg_psql -d old1 -c "CREATE OR REPLACE FUNCTION walq.partition_of(job_id bigint, partitions integer)
                    RETURNS integer LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS \$\$ SELECT -1 \$\$"
capture walq init --dbname "dbname=old1"
assert_eq "$CAP_RC" 0 "walq init exits 0"
assert_match "$CAP_ERR" 'schema "walq" is already up to date' "with no migration to apply"
assert_eq "$(pg_psql -d old1 -c "SELECT string_agg(checksum, ',' ORDER BY checksum = 'another')
                                  FROM walq.repeatables")" \
    "$checksum,another" "walq init records this program's set"
same_schema old1 "a function changed by hand, after walq init"
capture walq job list --dbname "dbname=old1"
assert_eq "$CAP_RC" 0 "then walq job list works"

# A database that a newer walq migrated (its migration 999) keeps that
# walq's definitions: this walq init leaves them, and this walq runs.
pg_psql -d old1 -c "INSERT INTO walq.migrations (name) VALUES ('999_future.sql');
                    DELETE FROM walq.repeatables;
                    CREATE OR REPLACE FUNCTION walq.partition_of(job_id bigint, partitions integer)
                    RETURNS integer LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS \$\$ SELECT -1 \$\$"
capture walq init --dbname "dbname=old1"
assert_eq "$CAP_RC" 0 "walq init of a database migrated by a newer walq exits 0"
assert_eq "$(pg_psql -d old1 -c "SELECT walq.partition_of(7, 3), count(*) FROM walq.repeatables")" "-1|0" \
    "and leaves the newer walq's definitions alone"
capture walq job list --dbname "dbname=old1"
assert_eq "$CAP_RC" 0 "this walq runs against the newer schema"

pass "all"
