-- pgbench: the SKIP LOCKED worker that claims with a committed UPDATE (the
-- job is visibly running while its handler runs) and acks with a DELETE in
-- a second transaction.  100 jobs per claim; an empty claim sleeps 10 ms.
WITH c AS (
    UPDATE bench.skip_jobs_u
       SET status = 'running', attempts = attempts + 1, locked_at = now()
     WHERE id = ANY (ARRAY(SELECT id FROM bench.skip_jobs_u
                           WHERE queue = 'bench' AND status = 'queued' AND run_at <= now()
                           ORDER BY priority, id
                           LIMIT 100
                             FOR UPDATE SKIP LOCKED))
    RETURNING id, payload)
SELECT count(*) AS got, coalesce(array_agg(c.id), '{}') AS ids, json_agg(c.payload) AS payloads
  FROM c
\gset
\if :got > 0
DELETE FROM bench.skip_jobs_u WHERE id = ANY (CAST(:ids AS bigint[]));
\else
\sleep 10 ms
\endif
