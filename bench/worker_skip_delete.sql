-- pgbench: the classic SKIP LOCKED worker, claiming by DELETE.  One
-- transaction claims 100 jobs, runs them (here: nothing, like walq's --noop)
-- and commits, which acks them.  The payloads go to the client.  An empty
-- claim sleeps 10 ms, as a worker backs off on an empty queue.
WITH c AS (
    DELETE FROM bench.skip_jobs
     WHERE id = ANY (ARRAY(SELECT id FROM bench.skip_jobs
                           WHERE queue = 'bench' AND run_at <= now()
                           ORDER BY priority, id
                           LIMIT 100
                             FOR UPDATE SKIP LOCKED))
    RETURNING id, payload)
SELECT count(*) AS got, json_agg(c.payload) AS payloads FROM c
\gset
\if :got = 0
\sleep 10 ms
\endif
