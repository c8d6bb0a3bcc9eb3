-- Readers: a group is read by one process per partition, each with its own
-- slot and cursor (walq.readers, made by sql/004_readers.sql).  Applied by
-- `walq init` on every run, after the numbered migrations.

-- The partition of a job in a group split over `partitions` readers.  The
-- consumer computes the same in C (PostgreSQL's hashint8, taken unsigned).
CREATE OR REPLACE FUNCTION walq.partition_of(job_id bigint, partitions integer)
RETURNS integer
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT ((hashint8(job_id)::bigint & 4294967295) % partitions)::integer
$$;

-- Each reader is held by one process at a time (sql/010_roles.sql).  The
-- fence is the reader's row, which only walq_consumer may write: its holder
-- is the backend of holder_pid (started at holder_started) while that
-- backend lives, or, for a holder whose primary connection goes through a
-- pooler (and so has no session of its own), whoever holds the lease until
-- lease_until.  A consumer that dies loses its backend, and a waiting
-- consumer of the same reader takes the reader at its next try.  Whether a
-- backend lives is read from pg_stat_activity with the rights of walq's
-- owner, which, as a superuser or a member of pg_read_all_stats, sees when
-- every backend started; otherwise the pid alone is checked.
CREATE OR REPLACE FUNCTION walq.backend_alive(pid integer, started timestamptz)
RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_stat_activity a
                    WHERE a.pid = $1
                      AND ($2 IS NULL OR a.backend_start IS NULL OR a.backend_start = $2))
$$;

-- When the calling session's backend started (pg_stat_activity shows every
-- session its own).
CREATE OR REPLACE FUNCTION walq.backend_started()
RETURNS timestamptz
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT a.backend_start FROM pg_catalog.pg_stat_activity a
     WHERE a.pid = pg_catalog.pg_backend_pid()
$$;

-- The fence used to be a session-level advisory lock, which any role could
-- take; the function that took it goes.
DROP FUNCTION IF EXISTS walq.lock_reader(text);

-- Tries to take the reader for the calling session: true when no live
-- backend but this one holds it and no lease of another epoch than `mine`
-- runs.  A session that connects directly (pooled false) becomes the
-- holder; one through a pooler does not (it takes the lease when it takes
-- the reader over, walq consume's take_row).  A reader with no row yet is
-- free: whoever makes the row first takes it.  The row is locked, so two
-- claimants queue up, and the second sees the first as the holder.
CREATE OR REPLACE FUNCTION walq.lock_reader(slot_name text, mine bigint, pooled boolean)
RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    r walq.readers;
BEGIN
    SELECT * INTO r FROM walq.readers x WHERE x.slot_name = lock_reader.slot_name FOR UPDATE;
    IF NOT FOUND THEN
        RETURN true;
    END IF;
    IF coalesce(r.lease_until > now() AND r.epoch IS DISTINCT FROM lock_reader.mine, false) THEN
        RETURN false;
    END IF;
    IF r.holder_pid IS NOT NULL AND r.holder_pid <> pg_backend_pid()
       AND walq.backend_alive(r.holder_pid, r.holder_started) THEN
        RETURN false;
    END IF;
    IF NOT lock_reader.pooled THEN
        UPDATE walq.readers x SET holder_pid = pg_backend_pid(),
                                  holder_started = walq.backend_started()
         WHERE x.slot_name = lock_reader.slot_name;
    END IF;
    RETURN true;
END
$$;

-- Lets the reader go if the calling session holds it.
CREATE OR REPLACE FUNCTION walq.unlock_reader(slot_name text)
RETURNS boolean
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    WITH up AS (
        UPDATE walq.readers r SET holder_pid = NULL, holder_started = NULL
         WHERE r.slot_name = $1 AND r.holder_pid = pg_catalog.pg_backend_pid()
        RETURNING 1)
    SELECT EXISTS (SELECT 1 FROM up)
$$;

-- The backend holding a reader, or NULL when no live backend holds it.
CREATE OR REPLACE FUNCTION walq.reader_lock_pid(slot_name text)
RETURNS integer
LANGUAGE sql STABLE STRICT AS $$
    SELECT r.holder_pid FROM walq.readers r
     WHERE r.slot_name = $1 AND r.holder_pid IS NOT NULL
       AND walq.backend_alive(r.holder_pid, r.holder_started)
$$;

-- Logs the primary's running transactions, so that a slot on a standby is
-- made at once (PostgreSQL 16 and later, where only a superuser may call
-- pg_log_standby_snapshot): as walq's owner, for a consumer that is not.
-- PL/pgSQL, so that it can be made on PostgreSQL 15, where the function is
-- missing and this fails when called.
CREATE OR REPLACE FUNCTION walq.log_standby_snapshot()
RETURNS pg_lsn
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN pg_catalog.pg_log_standby_snapshot();
END
$$;

-- Whether a process holds the reader: by a live backend, or, through a
-- pooler, by a lease that has not run out.
CREATE OR REPLACE FUNCTION walq.reader_held(slot_name text)
RETURNS boolean
LANGUAGE sql STABLE STRICT AS $$
    SELECT walq.reader_lock_pid($1) IS NOT NULL
           OR coalesce((SELECT r.lease_until > now() FROM walq.readers r
                         WHERE r.slot_name = $1), false)
$$;

-- How many jobs of a group (of one reader of it, for a group split over
-- partitions readers) are in each status, per queue: what counting
-- walq.job_status gives, without its cost.  The view finds a job's batch
-- row per job, and reads the row's array of ids each time: fine for one
-- job, minutes for a day of them.  Here each batch row's ids are read once,
-- and joined to the jobs by hash.  oldest_queued is when the oldest queued
-- job became queued: the created_at of a job the group has not recorded
-- yet, or when `walq job retry` put a job back (NULL when none is queued).
-- now() minus it is the group's lag in seconds (`walq status`, `walq
-- serve`): at least that long, a job has waited for the group to take it.
-- A queue of the group with no job has no row.
CREATE OR REPLACE FUNCTION walq.queue_summary(group_name text, partitions integer DEFAULT 1,
                                              part integer DEFAULT 0)
RETURNS TABLE (queue text, queued bigint, running bigint, scheduled bigint, done bigint,
               dead bigint, cancelled bigint, oldest_queued timestamptz)
LANGUAGE sql STABLE AS $$
    WITH g AS (SELECT gr.name, gr.queues FROM walq.groups gr WHERE gr.name = $1),
    d AS (SELECT DISTINCT x.id, b.generation
            FROM walq.outcome_batches b, g, unnest(b.job_ids) AS x (id)
           WHERE b.group_name = g.name),
    s AS (SELECT j.queue,
                 coalesce(o.status, CASE WHEN d.id IS NOT NULL THEN 'done' END, 'queued')
                     AS status,
                 coalesce(o.updated_at, j.created_at) AS since
            FROM walq.jobs j
            JOIN g ON j.queue = ANY (g.queues)
            LEFT JOIN walq.outcomes o
                   ON o.group_name = g.name AND o.job_id = j.id AND o.generation = j.generation
            LEFT JOIN d ON d.id = j.id AND d.generation = j.generation
           WHERE $2 <= 1 OR walq.partition_of(j.id, $2) = $3)
    SELECT s.queue,
           count(*) FILTER (WHERE status = 'queued'),
           count(*) FILTER (WHERE status = 'running'),
           count(*) FILTER (WHERE status = 'scheduled'),
           count(*) FILTER (WHERE status = 'done'),
           count(*) FILTER (WHERE status = 'dead'),
           count(*) FILTER (WHERE status = 'cancelled'),
           min(since) FILTER (WHERE status = 'queued')
      FROM s GROUP BY s.queue
$$;

-- The same for the whole group (or reader), every queue together: one row,
-- of zeros for a group with no job.
CREATE OR REPLACE FUNCTION walq.group_summary(group_name text, partitions integer DEFAULT 1,
                                              part integer DEFAULT 0)
RETURNS TABLE (queued bigint, running bigint, scheduled bigint, done bigint, dead bigint,
               cancelled bigint, oldest_queued timestamptz)
LANGUAGE sql STABLE AS $$
    SELECT coalesce(sum(q.queued), 0)::bigint, coalesce(sum(q.running), 0)::bigint,
           coalesce(sum(q.scheduled), 0)::bigint, coalesce(sum(q.done), 0)::bigint,
           coalesce(sum(q.dead), 0)::bigint, coalesce(sum(q.cancelled), 0)::bigint,
           min(q.oldest_queued)
      FROM walq.queue_summary($1, $2, $3) q
$$;

-- The counts of walq.group_summary alone.
CREATE OR REPLACE FUNCTION walq.group_counts(group_name text, partitions integer DEFAULT 1,
                                             part integer DEFAULT 0)
RETURNS TABLE (queued bigint, running bigint, scheduled bigint, done bigint, dead bigint,
               cancelled bigint)
LANGUAGE sql STABLE AS $$
    SELECT s.queued, s.running, s.scheduled, s.done, s.dead, s.cancelled
      FROM walq.group_summary($1, $2, $3) s
$$;
