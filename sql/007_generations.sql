-- walq schema, version 7: exact records until a retention period, removed
-- by dropping whole partitions.
--
-- Version 5 kept outcome storage small with a horizon: a job below it with
-- no row was taken to be done.  That inferred status from an id, so a job
-- whose id was drawn early (or given explicitly) could read done before it
-- ran, and compaction lost the history of retried jobs.  Now every record is
-- exact and stays until the job is removed, and jobs and their records are
-- removed together, by generation:
--
--   * walq.jobs, walq.outcomes and walq.outcome_batches are partitioned by
--     a generation number.  A job's generation is the current one when it
--     is inserted (walq.generation_seq; the column's default), not a
--     function of its id; its outcomes and batch rows carry the same number.
--     The partitions live in the schemas walq_jobs, walq_outcomes and
--     walq_batches, as g1, g2, ...
--   * every so often (a third of the retention, at most an hour) a consumer
--     closes the current generation and opens the next one (walq.maintain(),
--     sql/repeatable/50_generations.sql).  Once the transactions that were
--     inserting into the closed one have ended, it is sealed, and a 'seal'
--     command goes to every group through its stream.  A reader whose cursor
--     passed it has recorded every job of the generation: its
--     walq.readers.sealed_through says so.
--   * a sealed generation is dropped, whole, once it has been sealed for
--     the retention period, every reader of a group reading one of its
--     queues has passed its seal, and none of its jobs is still unfinished
--     (queued, running or scheduled) in any group.  DROP TABLE: no DELETE,
--     no dead tuples.
--
-- The tables made by the earlier versions become generation 1.
-- Applied by `walq init` inside one transaction; can also be run with psql.

CREATE SCHEMA walq_jobs;
CREATE SCHEMA walq_outcomes;
CREATE SCHEMA walq_batches;
COMMENT ON SCHEMA walq_jobs IS 'The partitions of walq.jobs, one per generation.';
COMMENT ON SCHEMA walq_outcomes IS 'The partitions of walq.outcomes, one per generation.';
COMMENT ON SCHEMA walq_batches IS 'The partitions of walq.outcome_batches, one per generation.';

CREATE TABLE walq.settings (
    only_row    boolean     PRIMARY KEY DEFAULT true CHECK (only_row),
    -- How long finished jobs (done, dead or cancelled in every group that
    -- reads their queue) and their records are kept.
    retention   interval    NOT NULL DEFAULT '24 hours' CHECK (retention >= interval '1 second'),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
INSERT INTO walq.settings DEFAULT VALUES;
COMMENT ON TABLE walq.settings IS
    'walq''s settings for the whole database; change them with walq.set_retention().';

-- The current generation is this sequence's last value: inserts read it
-- without a snapshot or a lock, and a rotation is seen by every session at
-- once.
CREATE SEQUENCE walq.generation_seq AS integer;
SELECT setval('walq.generation_seq', 1, true);

CREATE TABLE walq.generations (
    generation  integer     PRIMARY KEY,
    -- Its partitions exist (made ahead of its opening).
    created_at  timestamptz NOT NULL DEFAULT now(),
    -- New jobs go into it from here on...
    opened_at   timestamptz,
    -- ...until here.
    closed_at   timestamptz,
    -- The transactions that held walq.jobs when it closed: some may still
    -- insert into it.  Once they ended it is sealed.
    lockers     text[],
    sealed_at   timestamptz,
    -- The queues of its jobs, once sealed.
    queues      text[],
    -- Its partitions were dropped.
    retired_at  timestamptz
);
INSERT INTO walq.generations (generation, opened_at) VALUES (1, now());
COMMENT ON TABLE walq.generations IS
    'The generations of walq.jobs and their records: made, opened, closed, sealed, retired.';

-- Views and functions over the old tables go; sql/repeatable/ makes them
-- again over the new ones.  The horizon is gone altogether.
-- (A new database has none of them yet: its repeatable files come after.)
DROP VIEW IF EXISTS walq.job_status;
DROP VIEW IF EXISTS walq.dead_jobs;
DROP FUNCTION IF EXISTS walq.job_groups(walq.jobs, text);
DROP FUNCTION IF EXISTS walq.job_row(bigint);
DROP FUNCTION IF EXISTS walq.horizon_begin();
DROP FUNCTION IF EXISTS walq.horizon_mark(text, bigint, text[]);
DROP FUNCTION IF EXISTS walq.compact_outcomes(text);
DROP TRIGGER IF EXISTS jobs_dedup ON walq.jobs;

-- A subscriber's guard trigger (walq replica setup) moves to the new table.
CREATE TEMPORARY TABLE walq_guard_triggers ON COMMIT DROP AS
SELECT c.relname, pg_get_triggerdef(t.oid) AS def
  FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
 WHERE c.relnamespace = 'walq'::regnamespace AND c.relname = 'jobs'
   AND t.tgname = 'walqrepl_guard';
DROP TRIGGER IF EXISTS walqrepl_guard ON walq.jobs;

-- ---------------------------------------------------------------------------
-- walq.jobs
-- ---------------------------------------------------------------------------

-- Ids come from a sequence of their own: before PostgreSQL 17 a partitioned
-- table cannot have an identity column.  It keeps the identity sequence's
-- name and position.
CREATE SEQUENCE walq.jobs_id_seq_next;
SELECT setval('walq.jobs_id_seq_next', last_value, is_called) FROM walq.jobs_id_seq;
ALTER TABLE walq.jobs ALTER COLUMN id DROP IDENTITY;
ALTER SEQUENCE walq.jobs_id_seq_next RENAME TO jobs_id_seq;

ALTER TABLE walq.jobs ADD COLUMN generation integer NOT NULL DEFAULT 1;
ALTER TABLE walq.jobs DROP CONSTRAINT jobs_pkey;
ALTER TABLE walq.jobs ADD CONSTRAINT jobs_pkey PRIMARY KEY (id, generation);
-- Rows that are in the table already may hold any run_at; new ones are
-- checked (see below).
ALTER TABLE walq.jobs ADD CONSTRAINT jobs_run_at_range
    CHECK (run_at >= '0001-01-01 00:00:00+00' AND run_at < '10000-01-01 00:00:00+00') NOT VALID;
ALTER TABLE walq.jobs ADD CONSTRAINT jobs_generation_1 CHECK (generation = 1);
ALTER TABLE walq.jobs RENAME TO g1;
ALTER TABLE walq.g1 SET SCHEMA walq_jobs;
ALTER INDEX walq_jobs.jobs_pkey RENAME TO g1_pkey;
ALTER INDEX walq_jobs.jobs_queue_id RENAME TO g1_queue_id;

CREATE TABLE walq.jobs (
    id           bigint      NOT NULL DEFAULT nextval('walq.jobs_id_seq'),
    queue        text        NOT NULL,
    payload      jsonb       NOT NULL DEFAULT '{}',
    priority     integer     NOT NULL DEFAULT 0,
    run_at       timestamptz NOT NULL DEFAULT now(),
    max_attempts integer     NOT NULL DEFAULT 25,
    dedup_key    text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    -- The generation current when the row was inserted; do not set it.
    generation   integer     NOT NULL
                             DEFAULT pg_sequence_last_value('walq.generation_seq')::integer,
    CONSTRAINT jobs_pkey PRIMARY KEY (id, generation),
    CONSTRAINT jobs_queue_check CHECK (queue <> ''),
    CONSTRAINT jobs_max_attempts_check CHECK (max_attempts >= 1)
) PARTITION BY LIST (generation);
-- A run_at that PostgreSQL takes but walq cannot (infinity, BC, year 10000
-- or later) is refused at insert; such a row that got in before is recorded
-- dead by the consumer, with the reason.
ALTER TABLE walq.jobs ADD CONSTRAINT jobs_run_at_range
    CHECK (run_at >= '0001-01-01 00:00:00+00' AND run_at < '10000-01-01 00:00:00+00') NOT VALID;
ALTER SEQUENCE walq.jobs_id_seq OWNED BY walq.jobs.id;
-- Backfill and resync read a group's queues in id order.
CREATE INDEX jobs_queue_id ON walq.jobs (queue, id);
ALTER TABLE walq.jobs ATTACH PARTITION walq_jobs.g1 FOR VALUES IN (1);
ALTER TABLE walq_jobs.g1 DROP CONSTRAINT jobs_generation_1;

COMMENT ON TABLE walq.jobs IS
    'Jobs as producers insert them. Consumers never update or delete rows here; finished '
    'jobs go, a generation at a time, after the retention period (walq.settings).';

-- ---------------------------------------------------------------------------
-- walq.outcomes
-- ---------------------------------------------------------------------------

ALTER TABLE walq.outcomes ADD COLUMN generation integer NOT NULL DEFAULT 1;
ALTER TABLE walq.outcomes DROP CONSTRAINT outcomes_pkey;
ALTER TABLE walq.outcomes ADD CONSTRAINT outcomes_pkey
    PRIMARY KEY (group_name, job_id, generation);
ALTER TABLE walq.outcomes ADD CONSTRAINT outcomes_generation_1 CHECK (generation = 1);
ALTER TABLE walq.outcomes RENAME TO g1;
ALTER TABLE walq.g1 SET SCHEMA walq_outcomes;
ALTER INDEX walq_outcomes.outcomes_pkey RENAME TO g1_pkey;
ALTER INDEX walq_outcomes.outcomes_unfinished RENAME TO g1_unfinished;
ALTER INDEX walq_outcomes.outcomes_failed RENAME TO g1_failed;

CREATE TABLE walq.outcomes (
    group_name  text        NOT NULL REFERENCES walq.groups (name) ON DELETE CASCADE,
    job_id      bigint      NOT NULL,
    status      text        NOT NULL,
    attempts    integer     NOT NULL DEFAULT 0,
    last_error  text,
    -- When a scheduled job runs next.
    run_at      timestamptz,
    -- End LSN of the transaction that brought the job to the group.
    lsn         pg_lsn,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    -- The job's generation.
    generation  integer     NOT NULL,
    CONSTRAINT outcomes_pkey PRIMARY KEY (group_name, job_id, generation),
    CONSTRAINT outcomes_status_check CHECK (status IN
        ('queued', 'running', 'scheduled', 'done', 'dead', 'cancelled'))
) PARTITION BY LIST (generation);
CREATE INDEX outcomes_unfinished ON walq.outcomes (group_name, run_at)
    WHERE status IN ('queued', 'running', 'scheduled');
-- Dead and cancelled jobs are few and looked at newest first (walq job list,
-- walq.dead_jobs); without this, finding them reads every outcome.
CREATE INDEX outcomes_failed ON walq.outcomes (updated_at)
    WHERE status IN ('dead', 'cancelled');
-- The foreign key of the old table is the new one's, for its partition.
ALTER TABLE walq_outcomes.g1 DROP CONSTRAINT outcomes_group_name_fkey;
ALTER TABLE walq.outcomes ATTACH PARTITION walq_outcomes.g1 FOR VALUES IN (1);
ALTER TABLE walq_outcomes.g1 DROP CONSTRAINT outcomes_generation_1;

COMMENT ON TABLE walq.outcomes IS
    'The outcome of each job in each consumer group, but for jobs done at their first attempt '
    '(walq.outcome_batches).';

-- ---------------------------------------------------------------------------
-- walq.outcome_batches
-- ---------------------------------------------------------------------------

CREATE SEQUENCE walq.outcome_batches_id_seq_next;
SELECT setval('walq.outcome_batches_id_seq_next', last_value, is_called)
  FROM walq.outcome_batches_id_seq;
ALTER TABLE walq.outcome_batches ALTER COLUMN id DROP IDENTITY;
ALTER SEQUENCE walq.outcome_batches_id_seq_next RENAME TO outcome_batches_id_seq;

ALTER TABLE walq.outcome_batches ADD COLUMN generation integer NOT NULL DEFAULT 1;
ALTER TABLE walq.outcome_batches DROP CONSTRAINT outcome_batches_pkey;
ALTER TABLE walq.outcome_batches ADD CONSTRAINT outcome_batches_pkey PRIMARY KEY (id, generation);
ALTER TABLE walq.outcome_batches ADD CONSTRAINT outcome_batches_generation_1
    CHECK (generation = 1);
ALTER TABLE walq.outcome_batches RENAME TO g1;
ALTER TABLE walq.g1 SET SCHEMA walq_batches;
ALTER INDEX walq_batches.outcome_batches_pkey RENAME TO g1_pkey;
ALTER INDEX walq_batches.outcome_batches_last_id RENAME TO g1_last_id;

CREATE TABLE walq.outcome_batches (
    -- A key for logical decoding (the audit trail) and for psql.
    id          bigint      NOT NULL DEFAULT nextval('walq.outcome_batches_id_seq'),
    group_name  text        NOT NULL REFERENCES walq.groups (name) ON DELETE CASCADE,
    first_id    bigint      NOT NULL,
    last_id     bigint      NOT NULL,
    -- Ascending.
    job_ids     bigint[]    NOT NULL,
    -- The greatest end LSN of the transactions these jobs came in.
    lsn         pg_lsn      NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    -- The generation of these jobs (a batch with jobs of two generations is
    -- two rows).
    generation  integer     NOT NULL,
    CONSTRAINT outcome_batches_pkey PRIMARY KEY (id, generation),
    CONSTRAINT outcome_batches_check CHECK (first_id <= last_id)
) PARTITION BY LIST (generation);
ALTER SEQUENCE walq.outcome_batches_id_seq OWNED BY walq.outcome_batches.id;
CREATE INDEX outcome_batches_last_id ON walq.outcome_batches (group_name, last_id);
-- A batch's ids (8 kB for 1000 jobs) are compressed into TOAST by the ack
-- that writes them: lz4 costs a fraction of pglz's CPU.  A server built
-- without lz4 keeps the default.
DO $$
BEGIN
    ALTER TABLE walq.outcome_batches ALTER COLUMN job_ids SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported OR invalid_parameter_value THEN
    NULL;
END
$$;
ALTER TABLE walq_batches.g1 DROP CONSTRAINT outcome_batches_group_name_fkey;
ALTER TABLE walq.outcome_batches ATTACH PARTITION walq_batches.g1 FOR VALUES IN (1);
ALTER TABLE walq_batches.g1 DROP CONSTRAINT outcome_batches_generation_1;

COMMENT ON TABLE walq.outcome_batches IS
    'Jobs done at their first attempt, one row per ack transaction of a group and generation.';

-- ---------------------------------------------------------------------------
-- Readers, groups, commands
-- ---------------------------------------------------------------------------

ALTER TABLE walq.readers DROP COLUMN done_below;
ALTER TABLE walq.readers ADD COLUMN sealed_through integer NOT NULL DEFAULT 0;
COMMENT ON COLUMN walq.readers.sealed_through IS
    'Every job of this reader in a generation up to this one has an outcome: its cursor passed '
    'the generation''s seal.';
ALTER TABLE walq.groups DROP COLUMN done_below, DROP COLUMN done_queues;

DELETE FROM walq.commands WHERE action = 'horizon';
ALTER TABLE walq.commands DROP CONSTRAINT commands_action_check;
ALTER TABLE walq.commands ADD CONSTRAINT commands_action_check
    CHECK (action IN ('retry', 'cancel', 'seal'));

-- The subscriber's guard trigger, on the new table.
DO $$
DECLARE
    t record;
BEGIN
    FOR t IN SELECT * FROM walq_guard_triggers LOOP
        EXECUTE t.def;
    END LOOP;
END
$$;
