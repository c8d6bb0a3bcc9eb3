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
-- the same reader then takes.
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
