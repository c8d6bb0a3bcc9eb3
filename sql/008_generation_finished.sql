-- walq schema, version 8: the retention of a generation counts from when
-- its last job finished, not from its seal.  A job that finishes long after
-- its generation was sealed (one scheduled far ahead, one retried for
-- hours) is then kept for the retention after it finished, as every other.
-- walq.maintain() sets finished_at once a sealed generation is done in
-- every group, clears it if a job of it runs again (`walq job retry`), and
-- retires the generation once finished_at is older than the retention.
-- Generations sealed before this migration get their time at the next
-- round, and are kept one more retention.
-- Applied by `walq init` inside one transaction; can also be run with psql.

ALTER TABLE walq.generations ADD COLUMN finished_at timestamptz;

COMMENT ON COLUMN walq.generations.finished_at IS
    'When walq.maintain() first saw every job of the sealed generation finished in every group; '
    'the retention counts from here.';
