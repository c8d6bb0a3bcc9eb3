-- pgbench: one producer transaction of 1000 jobs for the UPDATE-claim worker.
INSERT INTO bench.skip_jobs_u (queue, payload)
SELECT 'bench', jsonb_build_object('to', 'user' || g || '@example.com', 'n', g)
  FROM generate_series(1, 1000) g;
