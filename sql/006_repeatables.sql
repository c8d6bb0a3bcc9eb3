-- walq schema, version 6: the functions, views and triggers are made by the
-- files in sql/repeatable/ instead of the numbered migrations.  `walq init`
-- applies those files again on every run, after the migrations, in name
-- order, and records here each set of them it applied.  A program checks
-- that its own set is among them: otherwise the database's functions are
-- older than the program, and `walq init` brings them up to date.
-- Applied by `walq init` inside one transaction; can also be run with psql.

CREATE TABLE walq.repeatables (
    -- SHA-256 (hex) of what `sha256sum *.sql` prints in sql/repeatable/ with
    -- the files in name order (LC_ALL=C): the checksum of every file and its
    -- name, so that a change to any file, or a new one, is a new set.
    checksum    text        PRIMARY KEY,
    -- When `walq init` first applied this set.
    applied_at  timestamptz NOT NULL DEFAULT now()
);

COMMENT ON TABLE walq.repeatables IS
    'The sets of function, view and trigger definitions (sql/repeatable/) walq init has applied, '
    'by checksum.';
