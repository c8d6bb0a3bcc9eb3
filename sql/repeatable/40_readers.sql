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

-- Each reader is held by one process at a time: the one whose session holds
-- this advisory lock (the key is the reader's slot name).  A consumer that
-- dies loses its session and with it the lock, which a waiting consumer of
-- the same reader then takes.  A consumer whose primary connection goes
-- through a pooler holds a lease instead (walq.readers.lease_until).
CREATE OR REPLACE FUNCTION walq.lock_reader(slot_name text)
RETURNS boolean
LANGUAGE sql VOLATILE STRICT AS $$
    SELECT pg_try_advisory_lock(2037741434, hashtext(slot_name))
$$;

-- The backend holding a reader, or NULL when no process holds it.
CREATE OR REPLACE FUNCTION walq.reader_lock_pid(slot_name text)
RETURNS integer
LANGUAGE sql STABLE STRICT AS $$
    SELECT l.pid FROM pg_locks l
     WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
       AND l.classid = 2037741434::bigint::oid
       AND l.objid = (hashtext(slot_name)::bigint & 4294967295)::oid
       AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
     LIMIT 1
$$;

-- Whether a process holds the reader: by its session's advisory lock, or,
-- through a pooler, by a lease that has not run out.
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
