-- Publishing, and the dedup keys every insert with a key takes.  Applied by
-- `walq init` on every run, after the numbered migrations; the keys' table,
-- walq.dedup_keys, is made by sql/002_lifecycle.sql.
--
-- A producer (walq_producer) may insert into walq.jobs and nothing more:
-- the trigger and walq.publish() read outcomes and groups and write
-- walq.dedup_keys with the rights of walq's owner (SECURITY DEFINER, with a
-- search_path that no caller can put a table or function of its own on), so
-- a producer gets a key only by inserting the job that holds it.

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
CREATE OR REPLACE FUNCTION walq.claim_dedup_key(queue text, dedup_key text, job_id bigint)
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
CREATE OR REPLACE FUNCTION walq.jobs_dedup()
RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF walq.claim_dedup_key(NEW.queue, NEW.dedup_key, NEW.id) = NEW.id THEN
        RETURN NEW;
    END IF;
    RETURN NULL;
END
$$;

CREATE OR REPLACE TRIGGER jobs_dedup BEFORE INSERT ON walq.jobs
    FOR EACH ROW WHEN (NEW.dedup_key IS NOT NULL) EXECUTE FUNCTION walq.jobs_dedup();

-- Inserts a job and returns its id.  A duplicate returns the id of the job
-- holding the key.  The trigger skips the row; the holder is then looked up.
-- If it finished and let the key go in between, the insert is tried again
-- and this time succeeds.
CREATE OR REPLACE FUNCTION walq.publish(queue text,
                                        payload jsonb DEFAULT '{}',
                                        run_at timestamptz DEFAULT now(),
                                        priority integer DEFAULT 0,
                                        max_attempts integer DEFAULT 25,
                                        dedup_key text DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    new_id bigint;
BEGIN
    -- What the table's CHECK jobs_run_at_range refuses, said plainly.
    IF publish.run_at IS NULL OR NOT (publish.run_at >= '0001-01-01 00:00:00+00'
                                      AND publish.run_at < '10000-01-01 00:00:00+00') THEN
        RAISE EXCEPTION 'run_at "%" is out of range for a job', publish.run_at
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Give a time between the years 1 and 9999, or leave run_at out to '
                         'run the job at once.';
    END IF;
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
