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

-- Whether a job with no row in walq.outcomes is done in a group: below the
-- group's horizon, or in one of its batches.
CREATE FUNCTION walq.done_in_batch(group_name text, job_id bigint)
RETURNS boolean
LANGUAGE sql STABLE STRICT AS $$
    SELECT EXISTS (SELECT 1 FROM walq.outcome_batches b
                    WHERE b.group_name = $1 AND b.last_id >= $2 AND b.first_id <= $2
                      AND $2 = ANY (b.job_ids))
$$;

-- A job's status in a group, as walq.job_status shows it.
CREATE FUNCTION walq.status_in(group_name text, job_id bigint)
RETURNS text
LANGUAGE sql STABLE STRICT AS $$
    SELECT coalesce(
        (SELECT o.status FROM walq.outcomes o WHERE o.group_name = $1 AND o.job_id = $2),
        (SELECT 'done' FROM walq.groups g JOIN walq.jobs j ON j.id = $2
          WHERE g.name = $1 AND j.id < g.done_below AND j.queue = ANY (g.done_queues)),
        CASE WHEN walq.done_in_batch($1, $2) THEN 'done' ELSE 'queued' END)
$$;

-- The columns are those of version 1; jobs below the horizon have lost
-- their detail: attempts shows 1 and updated_at is NULL.
CREATE OR REPLACE VIEW walq.job_status AS
SELECT j.id                                AS job_id,
       j.queue,
       g.name                              AS consumer_group,
       coalesce(o.status, d.status, 'queued') AS status,
       coalesce(o.attempts, d.attempts, 0) AS attempts,
       o.last_error,
       CASE WHEN o.status IS NOT NULL THEN o.updated_at
            WHEN d.status IS NOT NULL THEN d.updated_at
            ELSE j.created_at END          AS updated_at
  FROM walq.jobs j
  JOIN walq.groups g ON j.queue = ANY (g.queues)
  LEFT JOIN walq.outcomes o ON o.group_name = g.name AND o.job_id = j.id
  LEFT JOIN LATERAL (
      SELECT 'done'::text AS status, 1 AS attempts, NULL::timestamptz AS updated_at
       WHERE o.status IS NULL AND j.id < g.done_below AND j.queue = ANY (g.done_queues)
      UNION ALL
      SELECT 'done', 1, b.created_at
        FROM walq.outcome_batches b
       WHERE o.status IS NULL AND NOT (j.id < g.done_below AND j.queue = ANY (g.done_queues))
         AND b.group_name = g.name AND b.last_id >= j.id AND b.first_id <= j.id
         AND j.id = ANY (b.job_ids)
      LIMIT 1) d ON true;

CREATE OR REPLACE FUNCTION walq.job_finished(job_id bigint)
RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT coalesce(bool_and(walq.status_in(g.name, j.id) IN ('done', 'dead', 'cancelled')),
                    NOT EXISTS (SELECT 1 FROM walq.jobs x WHERE x.id = $1))
      FROM walq.jobs j
      JOIN walq.groups g ON j.queue = ANY (g.queues)
     WHERE j.id = $1
$$;

CREATE OR REPLACE FUNCTION walq.job_statuses(job_id bigint, groups text[])
RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT string_agg(format('%s in group "%s"', walq.status_in(g.name, $1), g.name), ', '
                      ORDER BY g.name)
      FROM unnest($2) AS g(name)
$$;

-- As in version 2, but a job with no row is told apart: done (batch or
-- horizon) or queued.
CREATE OR REPLACE FUNCTION walq.retry_job(job_id bigint, group_name text DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    job walq.jobs := walq.job_row(retry_job.job_id);
    groups text[] := walq.job_groups(job, retry_job.group_name);
    retried text[];
    holder bigint;
BEGIN
    WITH up AS (
        UPDATE walq.outcomes o
           SET status = 'queued', attempts = 0, last_error = NULL, run_at = NULL,
               updated_at = now()
         WHERE o.group_name = ANY (groups) AND o.job_id = job.id
           AND o.status IN ('dead', 'cancelled')
        RETURNING o.group_name
    ) SELECT array_agg(up.group_name ORDER BY up.group_name) INTO retried FROM up;

    IF retried IS NULL THEN
        IF cardinality(groups) = 1 THEN
            RAISE EXCEPTION 'job % is % in group "%", not dead or cancelled', job.id,
                            walq.status_in(groups[1], job.id), groups[1]
                USING ERRCODE = 'object_not_in_prerequisite_state',
                      HINT = 'Only a dead or cancelled job can be retried.';
        END IF;
        RAISE EXCEPTION 'job % is not dead or cancelled in any consumer group', job.id
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = 'It is ' || walq.job_statuses(job.id, groups) || '.',
                  HINT = 'Only a dead or cancelled job can be retried.';
    END IF;

    IF job.dedup_key IS NOT NULL THEN
        holder := walq.claim_dedup_key(job.queue, job.dedup_key, job.id);
        IF holder <> job.id THEN
            RAISE EXCEPTION 'dedup key "%" of job % is now held by job %, which has not finished',
                            job.dedup_key, job.id, holder
                USING ERRCODE = 'unique_violation',
                      HINT = format('Cancel job %s or wait until it finishes, then retry job %s.',
                                    holder, job.id);
        END IF;
    END IF;

    INSERT INTO walq.commands (group_name, job_id, action)
    SELECT g, job.id, 'retry' FROM unnest(retried) AS g;
    RETURN cardinality(retried);
END
$$;

-- As in version 2, but a job that is done without a row (batch or horizon)
-- is not cancelled.
CREATE OR REPLACE FUNCTION walq.cancel_job(job_id bigint, group_name text DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    job walq.jobs := walq.job_row(cancel_job.job_id);
    groups text[] := walq.job_groups(job, cancel_job.group_name);
    cancelled text[];
    st text;
BEGIN
    WITH up AS (
        INSERT INTO walq.outcomes AS o (group_name, job_id, status, attempts, lsn)
        SELECT g, job.id, 'cancelled', 0, NULL FROM unnest(groups) AS g
         WHERE walq.status_in(g, job.id) <> 'done'
        ON CONFLICT (group_name, job_id) DO UPDATE
           SET status = 'cancelled', run_at = NULL, updated_at = now()
         WHERE o.status IN ('queued', 'scheduled')
        RETURNING o.group_name
    ) SELECT array_agg(up.group_name ORDER BY up.group_name) INTO cancelled FROM up;

    IF cancelled IS NULL THEN
        IF cardinality(groups) = 1 THEN
            st := walq.status_in(groups[1], job.id);
            RAISE EXCEPTION 'job % is % in group "%"', job.id,
                            CASE WHEN st = 'running' THEN 'running'
                                 ELSE 'already ' || st END,
                            groups[1]
                USING ERRCODE = 'object_not_in_prerequisite_state',
                      HINT = 'Only a queued or scheduled job can be cancelled.';
        END IF;
        RAISE EXCEPTION 'job % is not queued or scheduled in any consumer group', job.id
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = 'It is ' || walq.job_statuses(job.id, groups) || '.',
                  HINT = 'Only a queued or scheduled job can be cancelled.';
    END IF;

    INSERT INTO walq.commands (group_name, job_id, action)
    SELECT g, job.id, 'cancel' FROM unnest(cancelled) AS g;

    IF job.dedup_key IS NOT NULL AND walq.job_finished(job.id) THEN
        DELETE FROM walq.dedup_keys d
         WHERE d.queue = job.queue AND d.dedup_key = job.dedup_key AND d.job_id = job.id;
    END IF;
    RETURN cardinality(cancelled);
END
$$;

-- ---------------------------------------------------------------------------
-- The horizon
-- ---------------------------------------------------------------------------

-- Step 1: the last id handed out (NULL if none yet), and the transactions
-- that may still hold an id up to it: those holding a lock on walq.jobs.
-- The sequence is read first, so that an insert that drew its id before is
-- among the lock holders read after, unless it has ended.
CREATE FUNCTION walq.horizon_begin(OUT last_id bigint, OUT lockers text[])
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    last_id := pg_sequence_last_value(pg_get_serial_sequence('walq.jobs', 'id')::regclass);
    SELECT coalesce(array_agg(DISTINCT l.virtualtransaction), '{}') INTO lockers
      FROM pg_locks l
     WHERE l.locktype = 'relation' AND l.relation = 'walq.jobs'::regclass
       AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
       AND l.mode = 'RowExclusiveLock' AND l.pid IS DISTINCT FROM pg_backend_pid();
END
$$;

-- Step 2: once those transactions have ended, the horizon command for the
-- group's readers.  Returns false (and does nothing) while one still runs.
-- Earlier horizon commands of the group are deleted: their inserts are in
-- the WAL already, which is all a reader reads.
CREATE FUNCTION walq.horizon_mark(group_name text, last_id bigint, lockers text[])
RETURNS boolean
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_variable
BEGIN
    -- A transaction that PREPAREs (two-phase commit) keeps its locks under
    -- another name and no backend: any prepared one holding walq.jobs waits.
    IF EXISTS (SELECT 1 FROM pg_locks l
                WHERE l.locktype = 'relation' AND l.relation = 'walq.jobs'::regclass
                  AND (l.virtualtransaction = ANY (lockers) OR l.pid IS NULL)) THEN
        RETURN false;
    END IF;
    DELETE FROM walq.commands c WHERE c.group_name = horizon_mark.group_name
                                  AND c.action = 'horizon';
    INSERT INTO walq.commands (group_name, job_id, action)
    VALUES (horizon_mark.group_name, last_id, 'horizon');
    RETURN true;
END
$$;

-- Step 3, after a reader recorded a new done_below: the group's horizon is
-- the lowest of its current readers' (all of them must have one), and what
-- is below it goes.  While the group's queues differ from those its horizon
-- was taken for, nothing is deleted: a batch may hold jobs of both.
-- Returns the group's horizon.
CREATE FUNCTION walq.compact_outcomes(group_name text)
RETURNS bigint
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_variable
DECLARE
    g walq.groups;
    low bigint;
    n integer;
BEGIN
    SELECT * INTO g FROM walq.groups x WHERE x.name = compact_outcomes.group_name FOR UPDATE;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    SELECT min(r.done_below), count(*) INTO low, n
      FROM walq.readers r
     WHERE r.group_name = g.name AND r.partitions = g.partitions
       AND r.queues @> g.queues AND r.queues <@ g.queues;
    IF n = g.partitions AND low > g.done_below THEN
        UPDATE walq.groups x SET done_below = low, done_queues = g.queues
         WHERE x.name = g.name;
        g.done_below := low;
        g.done_queues := g.queues;
    END IF;
    IF g.done_below > 0 AND g.done_queues @> g.queues AND g.done_queues <@ g.queues THEN
        DELETE FROM walq.outcome_batches b
         WHERE b.group_name = g.name AND b.last_id < g.done_below;
        DELETE FROM walq.outcomes o
         WHERE o.group_name = g.name AND o.job_id < g.done_below AND o.status = 'done';
    END IF;
    RETURN g.done_below;
END
$$;
