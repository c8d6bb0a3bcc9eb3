-- pgbench: a PgQ consumer loop, one batch per script run: next_batch,
-- get_batch_events (the events go to the client), finish_batch.  No batch
-- yet (the ticker has not ticked): sleep 10 ms.
SELECT coalesce(pgq.next_batch('bench', 'bench_consumer'), 0) AS batch_id
\gset
\if :batch_id > 0
SELECT ev_id, ev_type, ev_data FROM pgq.get_batch_events(:batch_id);
SELECT pgq.finish_batch(:batch_id);
\else
\sleep 10 ms
\endif
