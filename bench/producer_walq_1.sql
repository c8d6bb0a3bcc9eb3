-- pgbench: one producer transaction of a single job into walq.jobs (queue
-- :queue), with a payload like producer_walq.sql's.
\set n random(1, 1000000)
INSERT INTO walq.jobs (queue, payload)
VALUES (:queue, jsonb_build_object('to', 'user' || :n::integer || '@example.com', 'n', :n::integer));
