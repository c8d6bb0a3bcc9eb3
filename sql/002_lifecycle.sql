-- walq schema, version 2: dedup keys that are released when their job
-- finishes, and the administration of single jobs (retry, cancel).
-- Applied by `walq init` inside one transaction; can also be run with psql.

-- ---------------------------------------------------------------------------
-- When is a job finished?
-- ---------------------------------------------------------------------------

-- A job is finished once every consumer group that reads its queue recorded
-- a final outcome for it.  A job no group reads is not finished: nothing has
-- run it, and the first group to start will.  A job that no longer exists
-- (deleted or archived by hand) is finished: nothing can run it any more.
-- Outcomes are read with the snapshot of the calling statement, so a caller
-- that needs a fresh answer calls it from its own statement.
CREATE FUNCTION walq.job_finished(job_id bigint)
RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT coalesce(bool_and(coalesce(o.status, 'queued') IN ('done', 'dead', 'cancelled')),
                    NOT EXISTS (SELECT 1 FROM walq.jobs x WHERE x.id = $1))
      FROM walq.jobs j
      JOIN walq.groups g ON j.queue = ANY (g.queues)
      LEFT JOIN walq.outcomes o ON o.group_name = g.name AND o.job_id = j.id
     WHERE j.id = $1
$$;

-- ---------------------------------------------------------------------------
-- Dedup keys
-- ---------------------------------------------------------------------------

-- A dedup key is unique among a queue's jobs that have not finished, so it
-- cannot be a unique index on walq.jobs: finished jobs keep their key there,
-- and walq.jobs is never updated.  The keys in use live in their own small
-- table instead, one row per unfinished job that has a key.
CREATE TABLE walq.dedup_keys (
    queue      text   NOT NULL,
    dedup_key  text   NOT NULL,
    job_id     bigint NOT NULL,
    PRIMARY KEY (queue, dedup_key)
);

-- Releasing finds the keys of the jobs that just finished by job id.
CREATE INDEX dedup_keys_job_id ON walq.dedup_keys (job_id);

COMMENT ON TABLE walq.dedup_keys IS
    'The dedup keys held by unfinished jobs. A key is released (its row deleted) when its job '
    'finishes in every group reading its queue.';

-- Takes the key (queue, key) for job_id and returns the job that holds it
-- afterwards: job_id itself, or an unfinished job that had it first.
--
-- Keys are released eagerly when their job finishes (by the consumer's ack
-- and by walq.cancel_job), but two groups finishing the same job at the same
-- moment each see the other's outcome as not yet recorded, and neither
-- releases the key.  So a holder found here is checked again, and a finished
-- one loses its key.  The holder's row is locked first and the check made in
-- a later statement, so the check sees every outcome committed before the
-- lock was granted, and two claimants of a released key queue up on the row.
CREATE FUNCTION walq.claim_dedup_key(queue text, dedup_key text, job_id bigint)
RETURNS bigint
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    holder bigint;
BEGIN
    -- A row deleted between the INSERT and the SELECT (a release) sends us
    -- round again.  Under REPEATABLE READ a key taken after the snapshot is
    -- invisible to the SELECT, and going round would not change that.
    FOR attempt IN 1 .. 3 LOOP
        -- ON CONFLICT waits for a concurrent claimant of the same key to
        -- commit or roll back, so two publishers cannot both win.
        INSERT INTO walq.dedup_keys AS d (queue, dedup_key, job_id)
        VALUES (claim_dedup_key.queue, claim_dedup_key.dedup_key, claim_dedup_key.job_id)
        ON CONFLICT DO NOTHING;
        IF FOUND THEN
            RETURN claim_dedup_key.job_id;
        END IF;
        SELECT d.job_id INTO holder FROM walq.dedup_keys d
         WHERE d.queue = claim_dedup_key.queue AND d.dedup_key = claim_dedup_key.dedup_key
           FOR UPDATE;
        IF FOUND THEN
            IF holder = claim_dedup_key.job_id OR NOT walq.job_finished(holder) THEN
                RETURN holder;
            END IF;
            UPDATE walq.dedup_keys d SET job_id = claim_dedup_key.job_id
             WHERE d.queue = claim_dedup_key.queue AND d.dedup_key = claim_dedup_key.dedup_key;
            RETURN claim_dedup_key.job_id;
        END IF;
    END LOOP;
    RAISE EXCEPTION 'could not take dedup key "%" of queue "%" because of concurrent changes',
                    claim_dedup_key.dedup_key, claim_dedup_key.queue
        USING ERRCODE = 'serialization_failure',
              HINT = 'Retry the transaction.';
END
$$;

-- Every insert with a key goes through here, walq.publish() or not, so a
-- plain INSERT or COPY of a duplicate inserts nothing (the row is skipped,
-- as ON CONFLICT DO NOTHING would).  Rows without a key do not call it.
CREATE FUNCTION walq.jobs_dedup()
RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF walq.claim_dedup_key(NEW.queue, NEW.dedup_key, NEW.id) = NEW.id THEN
        RETURN NEW;
    END IF;
    RETURN NULL;
END
$$;

DROP INDEX walq.jobs_queue_dedup_key;

-- The keys of the jobs that have not finished were unique under the old
-- index; they are the ones that stay taken.
INSERT INTO walq.dedup_keys (queue, dedup_key, job_id)
SELECT j.queue, j.dedup_key, j.id
  FROM walq.jobs j
 WHERE j.dedup_key IS NOT NULL AND NOT walq.job_finished(j.id);

CREATE TRIGGER jobs_dedup BEFORE INSERT ON walq.jobs
    FOR EACH ROW WHEN (NEW.dedup_key IS NOT NULL) EXECUTE FUNCTION walq.jobs_dedup();

-- A duplicate returns the id of the job holding the key.  The trigger skips
-- the row; the holder is then looked up.  If it finished and let the key go
-- in between, the insert is tried again and this time succeeds.
CREATE OR REPLACE FUNCTION walq.publish(queue text,
                                        payload jsonb DEFAULT '{}',
                                        run_at timestamptz DEFAULT now(),
                                        priority integer DEFAULT 0,
                                        max_attempts integer DEFAULT 25,
                                        dedup_key text DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    new_id bigint;
BEGIN
    FOR attempt IN 1 .. 3 LOOP
        INSERT INTO walq.jobs AS j (queue, payload, run_at, priority, max_attempts, dedup_key)
        VALUES (publish.queue, publish.payload, publish.run_at, publish.priority,
                publish.max_attempts, publish.dedup_key)
        RETURNING j.id INTO new_id;
        IF new_id IS NOT NULL OR publish.dedup_key IS NULL THEN
            RETURN new_id;
        END IF;
        SELECT d.job_id INTO new_id FROM walq.dedup_keys d
         WHERE d.queue = publish.queue AND d.dedup_key = publish.dedup_key;
        IF new_id IS NOT NULL THEN
            RETURN new_id;
        END IF;
    END LOOP;
    RAISE EXCEPTION 'could not publish to queue "%" with dedup key "%" because of concurrent changes',
                    publish.queue, publish.dedup_key
        USING ERRCODE = 'serialization_failure',
              HINT = 'Retry the transaction.';
END
$$;

-- ---------------------------------------------------------------------------
-- Administration: retry and cancel
-- ---------------------------------------------------------------------------

-- Commands for running consumers.  A consumer reads the inserts into this
-- table from its replication stream, as it reads new jobs, so a retried job
-- runs again at once and a cancelled one is dropped from memory, without
-- polling.  The rows are a record of what was asked; nothing reads them back.
CREATE TABLE walq.commands (
    id          bigint      GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    group_name  text        NOT NULL REFERENCES walq.groups (name) ON DELETE CASCADE,
    job_id      bigint      NOT NULL,
    action      text        NOT NULL CHECK (action IN ('retry', 'cancel')),
    created_at  timestamptz NOT NULL DEFAULT now()
);

COMMENT ON TABLE walq.commands IS
    'Retries and cancellations for running consumers, which read the inserts from their '
    'replication stream. Old rows can be deleted at any time.';

-- Dead and cancelled jobs are few and looked at newest first (walq job list,
-- walq.dead_jobs); without this, finding them reads every outcome.
CREATE INDEX outcomes_failed ON walq.outcomes (updated_at)
    WHERE status IN ('dead', 'cancelled');

-- The groups a job is administered in: the one named, which must exist and
-- read the job's queue, or every group that reads it, of which there must be
-- one.  Shared by walq.retry_job and walq.cancel_job so their errors match.
CREATE FUNCTION walq.job_groups(job walq.jobs, group_name text)
RETURNS text[]
LANGUAGE plpgsql STABLE AS $$
#variable_conflict use_column
DECLARE
    groups text[];
BEGIN
    IF job_groups.group_name IS NOT NULL THEN
        IF NOT EXISTS (SELECT 1 FROM walq.groups g WHERE g.name = job_groups.group_name) THEN
            RAISE EXCEPTION 'consumer group "%" does not exist', job_groups.group_name
                USING ERRCODE = 'undefined_object',
                      HINT = 'A group exists once "walq consume" has run for it; '
                             '"walq status" lists the groups.';
        END IF;
        IF NOT EXISTS (SELECT 1 FROM walq.groups g
                        WHERE g.name = job_groups.group_name AND job.queue = ANY (g.queues)) THEN
            RAISE EXCEPTION 'consumer group "%" does not read queue "%" of job %',
                            job_groups.group_name, job.queue, job.id
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Name a group that reads the queue, or no group to act in every '
                             'group that does.';
        END IF;
        RETURN ARRAY[job_groups.group_name];
    END IF;
    SELECT array_agg(g.name ORDER BY g.name) INTO groups
      FROM walq.groups g WHERE job.queue = ANY (g.queues);
    IF groups IS NULL THEN
        RAISE EXCEPTION 'no consumer group reads queue "%" of job %', job.queue, job.id
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Jobs are retried and cancelled in consumer groups; start one with '
                         '"walq consume --group NAME --queue ' || job.queue || '" first.';
    END IF;
    RETURN groups;
END
$$;

-- "done in group ""a"", queued in group ""b""": a job's status in groups,
-- for error messages.
CREATE FUNCTION walq.job_statuses(job_id bigint, groups text[])
RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT string_agg(format('%s in group "%s"', coalesce(o.status, 'queued'), g.name), ', '
                      ORDER BY g.name)
      FROM unnest($2) AS g(name)
      LEFT JOIN walq.outcomes o ON o.group_name = g.name AND o.job_id = $1
$$;

CREATE FUNCTION walq.job_row(job_id bigint)
RETURNS walq.jobs
LANGUAGE plpgsql STABLE AS $$
DECLARE
    job walq.jobs;
BEGIN
    SELECT * INTO job FROM walq.jobs j WHERE j.id = job_row.job_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'job % does not exist', job_row.job_id
            USING ERRCODE = 'no_data_found',
                  HINT = 'walq.job_status (or "walq job list") shows the jobs.';
    END IF;
    RETURN job;
END
$$;

-- Puts a dead or cancelled job back in the queue of the given group, or of
-- every group reading its queue where it is dead or cancelled, and returns
-- how many groups that was.  The consumers of those groups run it again at
-- once, with its attempts counted from zero.
CREATE FUNCTION walq.retry_job(job_id bigint, group_name text DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    job walq.jobs := walq.job_row(retry_job.job_id);
    groups text[] := walq.job_groups(job, retry_job.group_name);
    retried text[];
    holder bigint;
BEGIN
    -- The row locks make a concurrent retry, cancel or ack of the same job
    -- wait; the status is checked again on the row that was locked.  The
    -- consumer's ack never overwrites a final outcome, so a dead outcome
    -- stays dead until this changes it.
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
                            (SELECT coalesce(max(o.status), 'queued') FROM walq.outcomes o
                              WHERE o.group_name = groups[1] AND o.job_id = job.id),
                            groups[1]
                USING ERRCODE = 'object_not_in_prerequisite_state',
                      HINT = 'Only a dead or cancelled job can be retried.';
        END IF;
        RAISE EXCEPTION 'job % is not dead or cancelled in any consumer group', job.id
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = 'It is ' || walq.job_statuses(job.id, groups) || '.',
                  HINT = 'Only a dead or cancelled job can be retried.';
    END IF;

    -- The job is unfinished again, so it needs its key back.  Another job
    -- may have taken it meanwhile; two unfinished jobs with one key would
    -- break the promise the key makes, so the retry fails instead.
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

-- Cancels a job that has not run yet (no outcome, queued or scheduled) in
-- the given group, or in every group reading its queue where it has not run
-- yet, and returns how many groups that was.  A cancelled job never runs in
-- those groups unless it is retried.
CREATE FUNCTION walq.cancel_job(job_id bigint, group_name text DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    job walq.jobs := walq.job_row(cancel_job.job_id);
    groups text[] := walq.job_groups(job, cancel_job.group_name);
    cancelled text[];
    st text;
BEGIN
    -- A group that has not recorded the job yet gets a new row, with no LSN
    -- since no transaction of the stream brought it.  ON CONFLICT locks an
    -- existing row and checks the status on its latest version, so an ack
    -- that recorded the job done meanwhile wins, and the cancel skips it.
    WITH up AS (
        INSERT INTO walq.outcomes AS o (group_name, job_id, status, attempts, lsn)
        SELECT g, job.id, 'cancelled', 0, NULL FROM unnest(groups) AS g
        ON CONFLICT (group_name, job_id) DO UPDATE
           SET status = 'cancelled', run_at = NULL, updated_at = now()
         WHERE o.status IN ('queued', 'scheduled')
        RETURNING o.group_name
    ) SELECT array_agg(up.group_name ORDER BY up.group_name) INTO cancelled FROM up;

    IF cancelled IS NULL THEN
        IF cardinality(groups) = 1 THEN
            SELECT o.status INTO st FROM walq.outcomes o
             WHERE o.group_name = groups[1] AND o.job_id = job.id;
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

    -- Cancelling may finish the job, as an ack does; its key is then free.
    -- This statement sees the outcomes written above.
    IF job.dedup_key IS NOT NULL AND walq.job_finished(job.id) THEN
        DELETE FROM walq.dedup_keys d
         WHERE d.queue = job.queue AND d.dedup_key = job.dedup_key AND d.job_id = job.id;
    END IF;
    RETURN cardinality(cancelled);
END
$$;

-- Dead jobs with why they died: the list to look at when something went
-- wrong (ORDER BY died_at DESC for the newest first).
CREATE VIEW walq.dead_jobs AS
SELECT o.job_id,
       j.queue,
       o.group_name   AS consumer_group,
       o.attempts,
       o.last_error,
       o.updated_at   AS died_at,
       j.payload
  FROM walq.outcomes o
  JOIN walq.jobs j ON j.id = o.job_id
  JOIN walq.groups g ON g.name = o.group_name AND j.queue = ANY (g.queues)
 WHERE o.status = 'dead';
