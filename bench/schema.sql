-- The baselines' tables, beside walq's schema (bench/run.sh loads this after
-- `walq init`).  Each queue table has walq.jobs's columns, so that a job
-- costs the same bytes everywhere; the UPDATE-claim worker needs a status.

CREATE SCHEMA bench;

-- The SKIP LOCKED worker that claims by deleting (claim, run, commit in one
-- transaction): one dead tuple per job.
CREATE TABLE bench.skip_jobs (LIKE walq.jobs INCLUDING DEFAULTS INCLUDING CONSTRAINTS
                              INCLUDING IDENTITY);
ALTER TABLE bench.skip_jobs ADD PRIMARY KEY (id);
CREATE INDEX skip_jobs_claim ON bench.skip_jobs (queue, priority, id);

-- The SKIP LOCKED worker that claims with an UPDATE (committed, so that the
-- claim is visible while the job runs) and acks with a DELETE: two dead
-- tuples per job.
CREATE TABLE bench.skip_jobs_u (LIKE walq.jobs INCLUDING DEFAULTS INCLUDING CONSTRAINTS
                                INCLUDING IDENTITY,
                                status    text        NOT NULL DEFAULT 'queued',
                                attempts  integer     NOT NULL DEFAULT 0,
                                locked_at timestamptz);
ALTER TABLE bench.skip_jobs_u ADD PRIMARY KEY (id);
CREATE INDEX skip_jobs_u_claim ON bench.skip_jobs_u (queue, priority, id) WHERE status = 'queued';

-- Latency baselines: a LISTEN/NOTIFY worker (a trigger notifies every
-- insert, as queue libraries do) and a worker polling every 100 ms.
CREATE TABLE bench.lat_notify (LIKE bench.skip_jobs INCLUDING ALL);
CREATE TABLE bench.lat_poll (LIKE bench.skip_jobs INCLUDING ALL);

CREATE FUNCTION bench.notify_job() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('bench_jobs', NEW.id::text);
    RETURN NULL;
END
$$;

CREATE TRIGGER lat_notify_notify AFTER INSERT ON bench.lat_notify
    FOR EACH ROW EXECUTE FUNCTION bench.notify_job();
