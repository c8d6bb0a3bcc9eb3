-- The sql handler: a statement run for each job inside the consumer's ack
-- transaction, so that its effects commit exactly once, with the outcome.
-- Applied by `walq init` on every run, after the numbered migrations.

-- Runs stmt once per job with $1 = payload and $2 = job id, each in its own
-- subtransaction so that one job's error fails that job alone.  Returns one
-- row per job, in order, with the error message of a failed one.  A job that
-- already has a final outcome in the group (a row, or in one of its batches)
-- is not run again, and its row says which in "recorded": after a crash, or
-- an ack whose answer was lost, the consumer may hand it over twice; the
-- effects must not happen twice, nor another outcome be written over the one
-- that stands (a job recorded dead is not done because it was skipped).
--
-- The first walq.run_sql returned (job_id, error); a function's result type
-- cannot be replaced, so that one is dropped first.  Consumers built for it
-- select the two columns by name and go on working with this one.
DO $$
DECLARE
    f regprocedure := to_regprocedure('walq.run_sql(text, text, bigint[], jsonb[])');
BEGIN
    IF f IS NOT NULL
       AND pg_get_function_result(f) <> 'TABLE(job_id bigint, error text, recorded text)' THEN
        DROP FUNCTION walq.run_sql(text, text, bigint[], jsonb[]);
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION walq.run_sql(group_name text, stmt text, job_ids bigint[],
                                        payloads jsonb[])
RETURNS TABLE (job_id bigint, error text, recorded text)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    n integer := coalesce(array_length(job_ids, 1), 0);
BEGIN
    -- The stream brings a transaction once its commit is in the WAL, which
    -- is a moment before other sessions see it: a statement run now might
    -- not see what the producer wrote with its jobs.  Each try of this loop
    -- takes a new snapshot (READ COMMITTED); it waits until the jobs are
    -- there, 5 s at most (a job deleted by hand never is).
    FOR k IN 1 .. 5000 LOOP
        EXIT WHEN (SELECT count(*) FROM walq.jobs j WHERE j.id = ANY (run_sql.job_ids)) >= n;
        PERFORM pg_sleep(0.001);
    END LOOP;
    FOR i IN 1 .. n LOOP
        job_id := job_ids[i];
        error := NULL;
        recorded := walq.status_in(run_sql.group_name, job_ids[i]);
        IF recorded IN ('done', 'dead', 'cancelled') THEN
            NULL;
        ELSE
            recorded := NULL;
            BEGIN
                EXECUTE stmt USING payloads[i], job_ids[i];
            EXCEPTION WHEN OTHERS THEN
                error := SQLERRM || ' (SQLSTATE ' || SQLSTATE || ')';
            END;
        END IF;
        RETURN NEXT;
    END LOOP;
END
$$;
