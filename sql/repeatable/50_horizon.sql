-- The horizon of a group: every job of its queues with a smaller id has
-- finished, and outcome storage below it is compacted.  How it works is told
-- in sql/005_outcome_horizon.sql, which made the tables.  Applied by
-- `walq init` on every run, after the numbered migrations.

-- Step 1: the last id handed out (NULL if none yet), and the transactions
-- that may still hold an id up to it: those holding a lock on walq.jobs.
-- The sequence is read first, so that an insert that drew its id before is
-- among the lock holders read after, unless it has ended.
CREATE OR REPLACE FUNCTION walq.horizon_begin(OUT last_id bigint, OUT lockers text[])
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
CREATE OR REPLACE FUNCTION walq.horizon_mark(group_name text, last_id bigint, lockers text[])
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
CREATE OR REPLACE FUNCTION walq.compact_outcomes(group_name text)
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
