-- Roles and privileges (sql/010_roles.sql; docs/security.md).  Applied by
-- `walq init` on every run, after the numbered migrations and the other
-- repeatable files, so that every function they made is covered: first
-- every right on walq's objects is taken from PUBLIC and from walq's
-- roles, then each role is given what it needs, and nothing else.  A new
-- database and an upgraded one end with the same grants.
--
--   walq_producer  publish (walq.publish, or INSERT into walq.jobs, COPY
--                  included, of every column but the generation) and read
--                  job status (walq.job_status, and
--                  the columns of walq.jobs but the payload, which an
--                  INSERT ... RETURNING needs).  The dedup trigger acts as
--                  walq's owner, so a producer needs no right on the keys,
--                  outcomes or groups, and has none.
--   walq_consumer  what `walq consume` and `walq audit` do over SQL: read
--                  walq's tables, register its group and readers, hold the
--                  reader's fence, record outcomes and batches, release
--                  dedup keys, look after the generations (walq.maintain)
--                  and keep its publication.  The login role needs the
--                  REPLICATION attribute besides, for its slot.
--   walq_admin     read everything; retry and cancel jobs, set the
--                  retention, drop groups.
--
-- No role may insert into walq.commands: retries, cancellations and seals
-- enter through walq.retry_job, walq.cancel_job and walq.maintain, which
-- run as walq's owner, and readers check what they read there.

-- The roles belong to the cluster, and may be there already (another
-- database's walq init made them, or an administrator did).  A role that
-- may not create roles can still run walq init once they exist.
DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['walq_producer', 'walq_consumer', 'walq_admin'] LOOP
        CONTINUE WHEN EXISTS (SELECT 1 FROM pg_catalog.pg_roles x WHERE x.rolname = r);
        IF NOT (SELECT x.rolcreaterole OR x.rolsuper FROM pg_catalog.pg_roles x
                 WHERE x.rolname = current_user) THEN
            RAISE EXCEPTION 'role "%" does not exist, and role "%" may not create it', r,
                            current_user
                USING ERRCODE = 'insufficient_privilege',
                      HINT = 'Run walq init once as a role with CREATEROLE, or have one run: '
                             'CREATE ROLE walq_producer NOLOGIN; CREATE ROLE walq_consumer '
                             'NOLOGIN; CREATE ROLE walq_admin NOLOGIN;';
        END IF;
        EXECUTE format('CREATE ROLE %I NOLOGIN', r);
    END LOOP;
END
$$;

REVOKE ALL ON SCHEMA walq, walq_jobs, walq_outcomes, walq_batches FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA walq FROM PUBLIC, walq_producer, walq_consumer, walq_admin;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA walq FROM PUBLIC, walq_producer, walq_consumer, walq_admin;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA walq FROM PUBLIC, walq_producer, walq_consumer, walq_admin;

GRANT USAGE ON SCHEMA walq TO walq_producer, walq_consumer, walq_admin;
-- Every program checks the schema's version first.
GRANT SELECT ON walq.migrations, walq.repeatables TO walq_producer, walq_consumer, walq_admin;

-- walq_producer
-- Every column but the generation, which is the current one's by default:
-- a job put in a generation already sealed would be seen by no seal, and
-- could go with the generation unrun.
GRANT INSERT (id, queue, payload, priority, run_at, max_attempts, dedup_key, created_at)
    ON walq.jobs TO walq_producer;
GRANT SELECT (id, queue, priority, run_at, max_attempts, dedup_key, created_at, generation)
    ON walq.jobs TO walq_producer;
-- The defaults of walq.jobs: the next id, and the current generation.
GRANT USAGE ON SEQUENCE walq.jobs_id_seq TO walq_producer;
GRANT SELECT ON SEQUENCE walq.generation_seq TO walq_producer;
GRANT SELECT ON walq.job_status TO walq_producer;

-- walq_consumer
GRANT SELECT ON ALL TABLES IN SCHEMA walq TO walq_consumer;
GRANT INSERT, UPDATE ON walq.groups TO walq_consumer;
GRANT INSERT, UPDATE, DELETE ON walq.readers TO walq_consumer;
GRANT INSERT, UPDATE ON walq.outcomes TO walq_consumer;
GRANT INSERT ON walq.outcome_batches TO walq_consumer;
GRANT DELETE ON walq.dedup_keys TO walq_consumer;
GRANT SELECT ON ALL SEQUENCES IN SCHEMA walq TO walq_consumer;
GRANT USAGE ON SEQUENCE walq.outcome_batches_id_seq TO walq_consumer;

-- walq_admin
GRANT SELECT ON ALL TABLES IN SCHEMA walq TO walq_admin;
GRANT SELECT ON ALL SEQUENCES IN SCHEMA walq TO walq_admin;

-- Functions, by name (each with every argument list it has).  What a role
-- may not call it still runs inside the functions it may call.
DO $$
DECLARE
    g record;
    f regprocedure;
BEGIN
    FOR g IN SELECT * FROM (VALUES
        ('walq_producer', ARRAY['publish']),
        ('walq_consumer', ARRAY['maintain', 'run_sql', 'partition_of', 'done_in_batch',
                                'status_in', 'job_finished', 'job_statuses', 'lock_reader',
                                'unlock_reader', 'reader_lock_pid', 'reader_held',
                                'backend_alive', 'backend_started', 'group_counts',
                                'group_summary', 'queue_summary', 'publication_fingerprint',
                                'reader_slot_name',
                                'define_publication', 'drop_publication',
                                'log_standby_snapshot']),
        ('walq_admin', ARRAY['retry_job', 'cancel_job', 'set_retention', 'drop_group',
                             'drop_publication', 'partition_of', 'done_in_batch', 'status_in',
                             'job_finished', 'job_statuses', 'reader_lock_pid', 'reader_held',
                             'backend_alive', 'group_counts', 'group_summary',
                             'queue_summary', 'publication_fingerprint'])) AS x (role, names)
    LOOP
        FOR f IN SELECT p.oid::regprocedure FROM pg_catalog.pg_proc p
                  WHERE p.pronamespace = 'walq'::regnamespace AND p.proname = ANY (g.names)
                  ORDER BY 1
        LOOP
            EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO %I', f, g.role);
        END LOOP;
    END LOOP;
END
$$;
