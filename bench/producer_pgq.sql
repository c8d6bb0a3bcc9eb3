-- pgbench: one producer transaction of 1000 PgQ events (the same payloads).
SELECT count(pgq.insert_event('bench', 'job',
                              jsonb_build_object('to', 'user' || g || '@example.com', 'n', g)::text))
  FROM generate_series(1, 1000) g;
