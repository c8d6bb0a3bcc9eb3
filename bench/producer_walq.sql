-- pgbench: one producer transaction of 1000 jobs into walq.jobs (queue :queue).
INSERT INTO walq.jobs (queue, payload)
SELECT :queue, jsonb_build_object('to', 'user' || g || '@example.com', 'n', g)
  FROM generate_series(1, 1000) g;
