-- Generations: how finished jobs and their records are removed, a
-- partition at a time, after the retention period.  How it works is told in
-- sql/007_generations.sql, which made the tables.  Applied by `walq init` on
-- every run, after the numbered migrations.

-- How long finished jobs are kept; returns the new setting.
CREATE OR REPLACE FUNCTION walq.set_retention(retention interval)
RETURNS interval
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF set_retention.retention IS NULL OR set_retention.retention < interval '1 second' THEN
        RAISE EXCEPTION 'retention "%" is too short', set_retention.retention
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Give an interval of at least one second, such as ''24 hours''.';
    END IF;
    UPDATE walq.settings SET retention = set_retention.retention, updated_at = now();
    RETURN set_retention.retention;
END
$$;

-- The relations of walq.jobs: the table and its partitions.
CREATE OR REPLACE FUNCTION walq.jobs_relations()
RETURNS SETOF oid
LANGUAGE sql STABLE AS $$
    SELECT 'walq.jobs'::regclass::oid
    UNION ALL
    SELECT i.inhrelid FROM pg_inherits i WHERE i.inhparent = 'walq.jobs'::regclass
$$;

-- The transactions that hold walq.jobs for writing now, but this one: some
-- may insert rows of the generation current when they began.
CREATE OR REPLACE FUNCTION walq.jobs_lockers()
RETURNS text[]
LANGUAGE sql VOLATILE AS $$
    SELECT coalesce(array_agg(DISTINCT l.virtualtransaction), '{}')
      FROM pg_locks l
     WHERE l.locktype = 'relation' AND l.relation IN (SELECT walq.jobs_relations())
       AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
       AND l.mode = 'RowExclusiveLock' AND l.pid IS DISTINCT FROM pg_backend_pid()
$$;

-- Is one of those transactions still there?  A transaction that PREPAREs
-- (two-phase commit) keeps its locks under another name and no backend: any
-- prepared one holding walq.jobs counts as one of them.
CREATE OR REPLACE FUNCTION walq.jobs_lockers_remain(lockers text[])
RETURNS boolean
LANGUAGE sql VOLATILE AS $$
    SELECT EXISTS (SELECT 1 FROM pg_locks l
                    WHERE l.locktype = 'relation' AND l.relation IN (SELECT walq.jobs_relations())
                      AND l.database = (SELECT oid FROM pg_database
                                         WHERE datname = current_database())
                      AND (l.virtualtransaction = ANY ($1) OR l.pid IS NULL))
$$;

-- Makes the partitions of a generation, empty, unless they exist.  ATTACH
-- takes a lock on the tables that inserts do not wait for.
CREATE OR REPLACE FUNCTION walq.make_partitions(generation integer)
RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    part text := 'g' || make_partitions.generation;
    t record;
BEGIN
    FOR t IN SELECT * FROM (VALUES ('walq_jobs', 'walq.jobs'), ('walq_outcomes', 'walq.outcomes'),
                                   ('walq_batches', 'walq.outcome_batches')) AS x (nsp, parent)
    LOOP
        CONTINUE WHEN to_regclass(format('%I.%I', t.nsp, part)) IS NOT NULL;
        EXECUTE format('CREATE TABLE %I.%I (LIKE %s INCLUDING DEFAULTS INCLUDING CONSTRAINTS'
                       ' INCLUDING STORAGE INCLUDING COMPRESSION)', t.nsp, part, t.parent);
        -- The partition's constraint, known to hold, so that ATTACH reads nothing.
        EXECUTE format('ALTER TABLE %I.%I ADD CONSTRAINT %I CHECK (generation = %s)',
                       t.nsp, part, part || '_generation', make_partitions.generation);
        EXECUTE format('ALTER TABLE %s ATTACH PARTITION %I.%I FOR VALUES IN (%s)',
                       t.parent, t.nsp, part, make_partitions.generation);
        EXECUTE format('ALTER TABLE %I.%I DROP CONSTRAINT %I', t.nsp, part, part || '_generation');
    END LOOP;
END
$$;

-- Drops the partitions of a generation that exist.  DROP TABLE of a
-- partition locks the partitioned table briefly.
CREATE OR REPLACE FUNCTION walq.drop_partitions(generation integer)
RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    part text := 'g' || drop_partitions.generation;
BEGIN
    EXECUTE format('DROP TABLE IF EXISTS walq_jobs.%I, walq_outcomes.%I, walq_batches.%I',
                   part, part, part);
END
$$;

-- The next generation, made before it opens.
CREATE OR REPLACE FUNCTION walq.make_generation(generation integer)
RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM walq.make_partitions(make_generation.generation);
    INSERT INTO walq.generations (generation) VALUES (make_generation.generation);
END
$$;

-- Can a sealed generation go?  Every queue of its jobs is read by a group;
-- every such group has all its readers, and each of them has passed the
-- generation's seal (so it recorded every job of it); and no job of it is
-- unfinished in any group.
CREATE OR REPLACE FUNCTION walq.generation_done(g walq.generations)
RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT NOT EXISTS (SELECT 1 FROM unnest(g.queues) AS q (name)
                        WHERE NOT EXISTS (SELECT 1 FROM walq.groups gr
                                           WHERE q.name = ANY (gr.queues)))
       AND NOT EXISTS (SELECT 1 FROM walq.groups gr
                        WHERE gr.queues && g.queues
                          AND (SELECT count(*) FROM walq.readers r
                                WHERE r.group_name = gr.name AND r.partitions = gr.partitions
                                  AND r.sealed_through >= g.generation) < gr.partitions)
       AND NOT EXISTS (SELECT 1 FROM walq.outcomes o
                        WHERE o.generation = g.generation
                          AND o.status IN ('queued', 'running', 'scheduled'))
$$;

-- Retires a generation: drops its partitions, unless a producer's
-- transaction holds walq.jobs for more than a moment (then false: next
-- time); inserts wait that long at most.
CREATE OR REPLACE FUNCTION walq.retire_generation(generation integer)
RETURNS boolean
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    part text := 'g' || retire_generation.generation;
BEGIN
    PERFORM set_config('lock_timeout', '100ms', true);
    -- Keys left behind by a race between two groups finishing a job.
    EXECUTE format('DELETE FROM walq.dedup_keys d USING walq_jobs.%I j WHERE d.job_id = j.id',
                   part);
    PERFORM walq.drop_partitions(retire_generation.generation);
    DELETE FROM walq.commands c
     WHERE c.action = 'seal' AND c.job_id = retire_generation.generation;
    UPDATE walq.generations x SET retired_at = now()
     WHERE x.generation = retire_generation.generation;
    RETURN true;
EXCEPTION WHEN lock_not_available THEN
    RETURN false;
END
$$;

-- One round of the generations' upkeep, which consumers run every so often:
-- makes the next generation's partitions ahead of time; every third of the
-- retention (at most an hour) closes the current generation and opens the
-- next; seals the closed ones whose inserting transactions have ended,
-- sending their seal to every group; notes when every job of a sealed one
-- has finished; and retires those whose last job finished more than the
-- retention ago.  Returns the seconds until the next round is due.  Of
-- consumers that call it at once, one takes the lock and does the work;
-- the others skip the round.
--
-- It makes and drops partitions, which takes ownership of the tables: it
-- runs with the rights of walq's owner (SECURITY DEFINER), so a consumer
-- (walq_consumer) that does not own them keeps its generations.  The lock
-- is the row of walq.settings, which no role but walq's owner may lock: an
-- advisory lock could be taken by any role that connects, and held to stop
-- every round.
CREATE OR REPLACE FUNCTION walq.maintain()
RETURNS double precision
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    s walq.settings;
    period interval;
    cur integer;
    g walq.generations;
BEGIN
    SELECT * INTO s FROM walq.settings FOR NO KEY UPDATE SKIP LOCKED;
    IF NOT FOUND THEN
        RETURN 1;
    END IF;
    period := least(greatest(s.retention / 3, interval '1 second'), interval '1 hour');
    cur := pg_sequence_last_value('walq.generation_seq');

    -- Ahead: committed before the rotation lets any insert go there.
    IF NOT EXISTS (SELECT 1 FROM walq.generations x WHERE x.generation = cur + 1) THEN
        PERFORM walq.make_generation(cur + 1);
        RETURN 0;
    END IF;

    IF (SELECT x.opened_at FROM walq.generations x WHERE x.generation = cur) <= now() - period THEN
        UPDATE walq.generations x SET closed_at = now(), lockers = walq.jobs_lockers()
         WHERE x.generation = cur;
        UPDATE walq.generations x SET opened_at = now() WHERE x.generation = cur + 1;
        -- Last, so that nothing can undo it: a sequence is not transactional.
        PERFORM setval('walq.generation_seq', cur + 1, true);
        cur := cur + 1;
    END IF;

    -- Seals go out in order: a reader's sealed_through means "up to".
    FOR g IN SELECT * FROM walq.generations x
              WHERE x.closed_at IS NOT NULL AND x.sealed_at IS NULL ORDER BY x.generation
    LOOP
        EXIT WHEN walq.jobs_lockers_remain(g.lockers);
        UPDATE walq.generations x
           SET sealed_at = now(), lockers = NULL,
               queues = (SELECT coalesce(array_agg(DISTINCT j.queue), '{}') FROM walq.jobs j
                          WHERE j.generation = g.generation)
         WHERE x.generation = g.generation;
        INSERT INTO walq.commands (group_name, job_id, action)
        SELECT gr.name, g.generation, 'seal' FROM walq.groups gr;
    END LOOP;

    -- The retention counts from when the last job of a generation finished;
    -- a job run again (`walq job retry`) starts it over.
    FOR g IN SELECT * FROM walq.generations x
              WHERE x.sealed_at IS NOT NULL AND x.retired_at IS NULL AND x.generation < cur
              ORDER BY x.generation
    LOOP
        IF NOT walq.generation_done(g) THEN
            IF g.finished_at IS NOT NULL THEN
                UPDATE walq.generations x SET finished_at = NULL
                 WHERE x.generation = g.generation;
            END IF;
        ELSIF g.finished_at IS NULL THEN
            UPDATE walq.generations x SET finished_at = now() WHERE x.generation = g.generation;
        ELSIF g.finished_at <= now() - s.retention THEN
            PERFORM walq.retire_generation(g.generation);
        END IF;
    END LOOP;
    RETURN least(extract(epoch FROM period) / 4, 10);
END
$$;
