-- Readers: a group is read by one process per partition, each with its own
-- slot and cursor.  A group that is not partitioned has one reader,
-- partition 0 of 1.  The group keeps what its readers share (the name the
-- outcomes are recorded under, the queues); the reader keeps where it is.
-- Applied by `walq init` inside one transaction; can also be run with psql.
-- The readers' functions are in sql/repeatable/40_readers.sql.

CREATE TABLE walq.readers (
    group_name  text        NOT NULL REFERENCES walq.groups (name) ON DELETE CASCADE,
    partition   integer     NOT NULL,
    partitions  integer     NOT NULL,
    slot_name   text        NOT NULL UNIQUE,
    -- The queues the reader's slot was synchronized for.
    queues      text[]      NOT NULL,
    -- End LSN of the last transaction all of whose jobs (of this partition)
    -- have an outcome.  An LSN of the source server.
    cursor_lsn  pg_lsn      NOT NULL DEFAULT '0/0',
    -- Consistent point of the slot the reader last synchronized from.
    sync_lsn    pg_lsn,
    -- System identifier of the source server the LSNs above belong to: a
    -- logical subscriber has LSNs of its own, so a reader moved to another
    -- source starts its cursor afresh.
    source_id   text,
    -- Bumped by every process that takes the reader over, so that one that
    -- lost it (to a network partition, say) can tell on its return.
    epoch       bigint      NOT NULL DEFAULT 0,
    -- The process that took the reader last: "host pid N".
    holder      text,
    held_since  timestamptz,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (group_name, partition),
    CHECK (partitions BETWEEN 1 AND 1024 AND partition >= 0 AND partition < partitions)
);

INSERT INTO walq.readers (group_name, partition, partitions, slot_name, queues, cursor_lsn,
                          sync_lsn)
SELECT name, 0, 1, slot_name, queues, cursor_lsn, sync_lsn FROM walq.groups;

ALTER TABLE walq.groups DROP COLUMN slot_name, DROP COLUMN cursor_lsn, DROP COLUMN sync_lsn;
ALTER TABLE walq.groups ADD CHECK (partitions BETWEEN 1 AND 1024);

COMMENT ON TABLE walq.readers IS
    'One row per reader of a consumer group (one per partition): its slot and cursor.';
