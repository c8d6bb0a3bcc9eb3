-- walq schema, version 9: a reader held through a connection pooler.  A
-- consumer whose primary connection goes through a pooler in transaction
-- mode (PgBouncer's pool_mode = transaction) has no server session of its
-- own, so it cannot hold the reader's advisory lock (walq.lock_reader): it
-- holds the reader until lease_until instead, and moves it on with every
-- ack and, when idle, every few seconds.  NULL: the holder, if any, holds
-- the reader by the advisory lock of its session.  Every write of the
-- holder checks the reader's epoch in its own transaction, so one that lost
-- the reader records nothing.
-- Applied by `walq init` inside one transaction; can also be run with psql.

ALTER TABLE walq.readers ADD COLUMN lease_until timestamptz;

COMMENT ON COLUMN walq.readers.lease_until IS
    'Until when a holder without a session of its own (through a pooler) holds the reader; '
    'NULL: whoever holds the advisory lock of walq.lock_reader().';
