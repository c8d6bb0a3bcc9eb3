-- Administration of single jobs: retry and cancel (`walq job retry`,
-- `walq job cancel`).  Applied by `walq init` on every run, after the
-- numbered migrations.  Both insert into walq.commands, which running
-- consumers read from their replication stream.
--
-- walq.commands is written only here and by walq.maintain(): no role is
-- granted INSERT on it.  retry_job and cancel_job run with the rights of
-- walq's owner (SECURITY DEFINER, search_path fixed to pg_catalog), and
-- walq_admin may call them (sql/repeatable/90_privileges.sql).

-- The groups a job is administered in: the one named, which must exist and
-- read the job's queue, or every group that reads it, of which there must be
-- one.  Shared by walq.retry_job and walq.cancel_job so their errors match.
CREATE OR REPLACE FUNCTION walq.job_groups(job walq.jobs, group_name text)
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

-- A job's row, or an error saying that it does not exist.
CREATE OR REPLACE FUNCTION walq.job_row(job_id bigint)
RETURNS walq.jobs
LANGUAGE plpgsql STABLE AS $$
DECLARE
    job walq.jobs;
BEGIN
    -- Ids are unique but for explicit ones a producer gave twice: the newest.
    SELECT * INTO job FROM walq.jobs j WHERE j.id = job_row.job_id
     ORDER BY j.generation DESC LIMIT 1;
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
-- once, with its attempts counted from zero.  A job with no row in
-- walq.outcomes is done (in a batch) or queued, as walq.status_in says.
--
-- The row locks make a concurrent retry, cancel or ack of the same job wait;
-- the status is checked again on the row that was locked.  The consumer's
-- ack never overwrites a final outcome, so a dead outcome stays dead until
-- this changes it.  The job is unfinished again, so it needs its dedup key
-- back.  Another job may have taken it meanwhile; two unfinished jobs with
-- one key would break the promise the key makes, so the retry fails instead.
CREATE OR REPLACE FUNCTION walq.retry_job(job_id bigint, group_name text DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
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
           AND o.generation = job.generation AND o.status IN ('dead', 'cancelled')
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

-- Cancels a job that has not run yet (queued or scheduled) in the given
-- group, or in every group reading its queue where it has not run yet, and
-- returns how many groups that was.  A cancelled job never runs in those
-- groups unless it is retried.  A job that is done without a row (in a
-- batch) is not cancelled.
--
-- A group that has not recorded the job yet gets a new row, with no LSN
-- since no transaction of the stream brought it.  ON CONFLICT locks an
-- existing row and checks the status on its latest version, so an ack that
-- recorded the job done meanwhile wins, and the cancel skips it.  Cancelling
-- may finish the job, as an ack does; its dedup key is then free.
-- walq.job_finished, called from a statement of its own, sees the outcomes
-- written before it.
CREATE OR REPLACE FUNCTION walq.cancel_job(job_id bigint, group_name text DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    job walq.jobs := walq.job_row(cancel_job.job_id);
    groups text[] := walq.job_groups(job, cancel_job.group_name);
    cancelled text[];
    st text;
BEGIN
    WITH up AS (
        INSERT INTO walq.outcomes AS o (group_name, job_id, generation, status, attempts, lsn)
        SELECT g, job.id, job.generation, 'cancelled', 0, NULL FROM unnest(groups) AS g
         WHERE walq.status_in(g, job.id) <> 'done'
        ON CONFLICT (group_name, job_id, generation) DO UPDATE
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

-- Removes a consumer group's records (`walq group drop`): its row in
-- walq.groups and, by ON DELETE CASCADE, every row that names it, in
-- walq.readers, walq.outcomes, walq.outcome_batches and walq.commands.
-- Returns the slots of its readers (each with the system identifier of the
-- source it lives on), which the caller drops on the source before it
-- commits, with the publications named like them.  Nothing when the group
-- does not exist, so a second drop does nothing.
--
-- A reader held by a process (walq.reader_held: its session, or a lease
-- through a pooler) makes it fail, naming the holder: the group is in use.
-- The rows of the group and its readers are locked first, so a consumer
-- that takes a reader meanwhile waits for this transaction.  Jobs that were unfinished
-- only in this group are finished once it is gone (walq.job_finished), so
-- their dedup keys are freed; a job no group reads any more keeps its key,
-- as a job published before any group does.  Other groups are not touched.
CREATE OR REPLACE FUNCTION walq.drop_group(group_name text)
RETURNS TABLE (slot_name text, source_id text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    g walq.groups;
    held record;
BEGIN
    SELECT * INTO g FROM walq.groups gr WHERE gr.name = drop_group.group_name FOR UPDATE;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    PERFORM 1 FROM walq.readers r WHERE r.group_name = g.name FOR UPDATE;
    SELECT r.slot_name, coalesce(r.holder, 'an unknown process') AS holder,
           walq.reader_lock_pid(r.slot_name) AS pid
      INTO held
      FROM walq.readers r
     WHERE r.group_name = g.name AND walq.reader_held(r.slot_name)
     ORDER BY r.partition LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'consumer group "%" is in use: reader "%" is held by %', g.name,
                        held.slot_name, held.holder
            USING ERRCODE = 'object_in_use',
                  DETAIL = CASE WHEN held.pid IS NOT NULL
                                THEN format('Its session is backend pid %s on the primary.',
                                            held.pid)
                                ELSE 'It holds a lease through a connection pooler.' END,
                  HINT = 'Stop every "walq consume" of the group, then drop it.';
    END IF;

    RETURN QUERY SELECT r.slot_name, r.source_id FROM walq.readers r
                  WHERE r.group_name = g.name ORDER BY r.partition;
    DELETE FROM walq.groups gr WHERE gr.name = g.name;
    DELETE FROM walq.dedup_keys d
     WHERE d.queue = ANY (g.queues) AND walq.job_finished(d.job_id);
END
$$;
