-- walq schema, version 10: roles and least privilege.
--
-- `walq init` makes three NOLOGIN roles, which users GRANT to their login
-- roles: walq_producer (publish, insert jobs, read their status),
-- walq_consumer (what `walq consume` and `walq audit` need, beside the
-- REPLICATION attribute of the login role) and walq_admin (job retry and
-- cancel, the retention, group administration).  Nothing of walq's is
-- granted to PUBLIC.  The roles and the grants are made by
-- sql/repeatable/90_privileges.sql on every init, since roles belong to the
-- cluster and a database may be restored into one that lacks them; this
-- file changes what only a migration can.
--
-- The reader fence.  Until now a reader was held by a session-level
-- advisory lock, which any role able to connect could take (and keep a
-- group's consumers standing by forever), and whose key pg_locks shows to
-- everyone.  Now the fence is the reader's row in walq.readers, which only
-- walq_consumer may write: its holder is the backend named by holder_pid
-- and holder_started, or, through a pooler, whoever holds its lease
-- (lease_until).  A claimant takes a reader over at once when the holder's
-- backend is gone (walq.lock_reader, which looks in pg_stat_activity), and
-- after the lease runs out for a holder through a pooler.  Every write of
-- the holder still checks the reader's epoch in its own transaction.
-- Applied by `walq init` inside one transaction; can also be run with psql.

ALTER TABLE walq.readers ADD COLUMN holder_pid integer,
                         ADD COLUMN holder_started timestamptz;

COMMENT ON COLUMN walq.readers.holder_pid IS
    'The backend (on the primary) of the process holding the reader, while it lives; NULL for '
    'a holder through a pooler, which holds it by lease_until.';
COMMENT ON COLUMN walq.readers.holder_started IS
    'When that backend started: a pid used again by a later backend is not the holder.';
COMMENT ON COLUMN walq.readers.lease_until IS
    'Until when a holder without a session of its own (through a pooler) holds the reader; '
    'NULL: the backend of holder_pid holds it, while it lives.';

-- Nothing for PUBLIC: the schemas were never granted to it, but a database
-- may have been given rights by hand.
REVOKE ALL ON SCHEMA walq, walq_jobs, walq_outcomes, walq_batches FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA walq FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA walq FROM PUBLIC;
