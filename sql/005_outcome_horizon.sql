-- walq schema, version 5: outcome storage that stays bounded.
--
-- Most jobs succeed at their first attempt.  Storing one outcome row per job
-- and group made walq.outcomes grow with every job ever run, and writing
-- those rows was most of what consuming cost the primary.  Now:
--
--   * a job done at its first attempt (no dedup key, no row yet) is
--     recorded in walq.outcome_batches: one row per ack transaction, with
--     the ids of the jobs it finished;
--   * every other outcome (scheduled, dead, cancelled, queued again by a
--     retry, done after a retry, done with a dedup key) stays a row of
--     walq.outcomes, as before;
--   * each group has a horizon: every job of its queues with an id below
--     groups.done_below has finished, and is done unless walq.outcomes says
--     otherwise.  Batches and done rows below the horizon are deleted, so
--     outcome storage holds only what is newer than the horizon, plus the
--     dead and cancelled jobs.
--
-- How a horizon is known (the consumer does this about once a second while
-- jobs flow): it reads the last value handed out by walq.jobs's id
-- sequence, V, then the transactions holding a lock on walq.jobs (an insert
-- takes the lock before it draws its id).  Once they have all ended, every
-- job with an id up to V is committed or never will be, and the consumer
-- inserts a 'horizon' command with job_id = V.  The command reaches every
-- reader of the group through its stream after all of those jobs, so a
-- reader whose cursor passes the command has recorded them all: its
-- done_below becomes V + 1.  The group's horizon is the lowest of its
-- readers', over the queues they all read.
-- Applied by `walq init` inside one transaction; can also be run with psql.
-- The functions that read and move the horizon, and walq.job_status, are in
-- sql/repeatable/ (10_status.sql, 50_horizon.sql).

ALTER TABLE walq.readers ADD COLUMN done_below bigint NOT NULL DEFAULT 0;
COMMENT ON COLUMN walq.readers.done_below IS
    'Every job of this reader (its queues and partition) with a smaller id has an outcome.';

ALTER TABLE walq.groups ADD COLUMN done_below bigint NOT NULL DEFAULT 0,
                        ADD COLUMN done_queues text[] NOT NULL DEFAULT '{}';
COMMENT ON COLUMN walq.groups.done_below IS
    'Every job of done_queues with a smaller id has finished in this group: done, unless '
    'walq.outcomes has a row for it.';

CREATE TABLE walq.outcome_batches (
    -- A key for logical decoding (the audit trail's deletes) and for psql.
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    group_name  text        NOT NULL REFERENCES walq.groups (name) ON DELETE CASCADE,
    first_id    bigint      NOT NULL,
    last_id     bigint      NOT NULL,
    -- Ascending.
    job_ids     bigint[]    NOT NULL,
    -- The greatest end LSN of the transactions these jobs came in.
    lsn         pg_lsn      NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    CHECK (first_id <= last_id)
);

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

COMMENT ON TABLE walq.outcome_batches IS
    'Jobs done at their first attempt, one row per ack transaction of a group. Rows below '
    'the group''s horizon (walq.groups.done_below) are deleted.';

ALTER TABLE walq.commands DROP CONSTRAINT commands_action_check;
ALTER TABLE walq.commands ADD CONSTRAINT commands_action_check
    CHECK (action IN ('retry', 'cancel', 'horizon'));
