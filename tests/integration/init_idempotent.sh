#!/usr/bin/env bash
# shellcheck disable=SC2016  # wait_for evals its condition later
# `walq init` creates the schema and is harmless when run again.
# shellcheck source=SCRIPTDIR/../lib/pgtest.sh
. "$(dirname "$0")/../lib/pgtest.sh"
require_walq
pg_start

walq init
pass "first walq init"

for t in jobs groups outcomes; do
    assert_eq "$(q "SELECT to_regclass('walq.$t') IS NOT NULL")" t "table walq.$t exists"
done
assert_eq "$(q "SELECT count(*) FROM pg_views WHERE schemaname = 'walq' AND viewname = 'job_status'")" 1 \
    "view walq.job_status exists"
assert_eq "$(q "SELECT string_agg(column_name, ',' ORDER BY ordinal_position)
                 FROM information_schema.columns
                WHERE table_schema = 'walq' AND table_name = 'job_status'")" \
    "job_id,queue,consumer_group,status,attempts,last_error,updated_at" "job_status columns"
cols=$(q "SELECT string_agg(column_name, ',' ORDER BY column_name)
            FROM information_schema.columns
           WHERE table_schema = 'walq' AND table_name = 'jobs'
             AND column_name IN ('id','queue','payload','priority','run_at','max_attempts','dedup_key','created_at')")
assert_eq "$cols" "created_at,dedup_key,id,max_attempts,payload,priority,queue,run_at" "jobs columns"
assert_eq "$(q "SELECT data_type FROM information_schema.columns
                 WHERE table_schema = 'walq' AND table_name = 'jobs' AND column_name = 'payload'")" jsonb \
    "payload is jsonb"
assert_eq "$(q "SELECT column_default FROM information_schema.columns
                 WHERE table_schema = 'walq' AND table_name = 'jobs' AND column_name = 'max_attempts'")" 25 \
    "max_attempts defaults to 25"

id=$(q "SELECT walq.publish('q', '{\"kept\": true}')")
relations="SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = 'walq'"
before=$(q "$relations")

walq init
pass "second walq init"
walq init --dbname "host=$PGHOST port=$PGPORT dbname=postgres"
pass "third walq init, with --dbname"

assert_eq "$(q "SELECT payload->>'kept' FROM walq.jobs WHERE id = $id")" true "data survives another init"
assert_eq "$(q "$relations")" "$before" "another init creates no relation"

# --dbname overrides the environment.
q "CREATE DATABASE other" >/dev/null
walq init --dbname "dbname=other"
assert_eq "$(pg_psql -d other -c "SELECT to_regclass('walq.jobs') IS NOT NULL")" t \
    "--dbname initialises another database"

pass "all"
