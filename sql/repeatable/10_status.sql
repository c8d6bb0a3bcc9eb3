-- What a job's status is: in one group, in all of them, and the views to
-- query.  Applied by `walq init` on every run, after the numbered
-- migrations, as every file here is, in name order; each object is defined
-- once, in its current form.  PostgreSQL checks the body of an SQL function
-- when it is made, so the functions it calls come before it: these are
-- called from the other files, so this file comes first.
--
-- Every status here is a record, never an inference: a row of
-- walq.outcomes, or the job's id in one of the group's batches.  A job with
-- neither has not been recorded by the group yet: it is queued.  A job that
-- is gone (its generation retired) has no status at all.

-- Whether a job with no row in walq.outcomes is done in a group: in one of
-- its batches.
CREATE OR REPLACE FUNCTION walq.done_in_batch(group_name text, job_id bigint)
RETURNS boolean
LANGUAGE sql STABLE STRICT AS $$
    SELECT EXISTS (SELECT 1 FROM walq.outcome_batches b
                    WHERE b.group_name = $1 AND b.last_id >= $2 AND b.first_id <= $2
                      AND $2 = ANY (b.job_ids))
$$;

-- A job's status in a group, as walq.job_status shows it: its row in
-- walq.outcomes; else done when in one of the group's batches; else queued.
CREATE OR REPLACE FUNCTION walq.status_in(group_name text, job_id bigint)
RETURNS text
LANGUAGE sql STABLE STRICT AS $$
    SELECT coalesce(
        (SELECT o.status FROM walq.outcomes o
          WHERE o.group_name = $1 AND o.job_id = $2 ORDER BY o.generation DESC LIMIT 1),
        CASE WHEN walq.done_in_batch($1, $2) THEN 'done' ELSE 'queued' END)
$$;

-- A job is finished once every consumer group that reads its queue recorded
-- a final outcome for it.  A job no group reads is not finished: nothing has
-- run it, and the first group to start will.  A job that no longer exists
-- (its generation retired, or deleted by hand) is finished: nothing can run
-- it any more.  Outcomes are read with the snapshot of the calling
-- statement, so a caller that needs a fresh answer calls it from its own
-- statement.
CREATE OR REPLACE FUNCTION walq.job_finished(job_id bigint)
RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT coalesce(bool_and(walq.status_in(g.name, j.id) IN ('done', 'dead', 'cancelled')),
                    NOT EXISTS (SELECT 1 FROM walq.jobs x WHERE x.id = $1))
      FROM walq.jobs j
      JOIN walq.groups g ON j.queue = ANY (g.queues)
     WHERE j.id = $1
$$;

-- "done in group ""a"", queued in group ""b""": a job's status in groups,
-- for error messages.
CREATE OR REPLACE FUNCTION walq.job_statuses(job_id bigint, groups text[])
RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT string_agg(format('%s in group "%s"', walq.status_in(g.name, $1), g.name), ', '
                      ORDER BY g.name)
      FROM unnest($2) AS g(name)
$$;

-- One row per job and group that reads the job's queue; jobs the group has
-- not recorded yet are queued.  updated_at is when the status was recorded:
-- for a job done at its first attempt, when its batch was.
CREATE OR REPLACE VIEW walq.job_status AS
SELECT j.id                                AS job_id,
       j.queue,
       g.name                              AS consumer_group,
       coalesce(o.status, d.status, 'queued') AS status,
       coalesce(o.attempts, d.attempts, 0) AS attempts,
       o.last_error,
       coalesce(o.updated_at, d.updated_at, j.created_at) AS updated_at
  FROM walq.jobs j
  JOIN walq.groups g ON j.queue = ANY (g.queues)
  LEFT JOIN walq.outcomes o
         ON o.group_name = g.name AND o.job_id = j.id AND o.generation = j.generation
  LEFT JOIN LATERAL (
      SELECT 'done'::text AS status, 1 AS attempts, b.created_at AS updated_at
        FROM walq.outcome_batches b
       WHERE o.status IS NULL AND b.generation = j.generation
         AND b.group_name = g.name AND b.last_id >= j.id AND b.first_id <= j.id
         AND j.id = ANY (b.job_ids)
      LIMIT 1) d ON true;

-- Dead jobs with why they died: the list to look at when something went
-- wrong (ORDER BY died_at DESC for the newest first).
CREATE OR REPLACE VIEW walq.dead_jobs AS
SELECT o.job_id,
       j.queue,
       o.group_name   AS consumer_group,
       o.attempts,
       o.last_error,
       o.updated_at   AS died_at,
       j.payload
  FROM walq.outcomes o
  JOIN walq.jobs j ON j.id = o.job_id AND j.generation = o.generation
  JOIN walq.groups g ON g.name = o.group_name AND j.queue = ANY (g.queues)
 WHERE o.status = 'dead';
