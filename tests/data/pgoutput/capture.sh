#!/usr/bin/env bash
# Captures the pgoutput messages of tests/data/pgoutput/ from a throwaway
# PostgreSQL (tests/lib/pgtest.sh: a new cluster in a temporary directory, on
# a unix socket only, gone when the script exits however it exits):
#
#   bash tests/data/pgoutput/capture.sh [OUTDIR]
#
# Each scenario's changes are read with pg_logical_slot_get_binary_changes
# (proto_version 1, messages on), which ends a decoding session: every file
# starts as a new replication session does, with the Relation messages its
# changes need.  A file has one message a line: the LSN the server gave it,
# a space, and the message's bytes in hex.  The setup of a scenario is read
# and thrown away, so a file holds only the scenario.
set -Eeuo pipefail

out=$(cd "${1:-$(dirname "$0")}" && pwd)
TEST_NAME=capture-pgoutput
# shellcheck source=SCRIPTDIR/../../lib/pgtest.sh
. "$(dirname "$0")/../../lib/pgtest.sh"
# The commit timestamps let a reader of the files check the decoded times.
# synchronous_commit: decoding reads only WAL that is flushed, and pgtest.sh turns it off.
pg_start "track_commit_timestamp = on" "timezone = 'UTC'" "synchronous_commit = on"

sql() { pg_psql -c "$1" >/dev/null; }

changes() {
    pg_psql -F ' ' -c "SELECT lsn, encode(data, 'hex') FROM pg_logical_slot_get_binary_changes(
        's', NULL, NULL, 'proto_version', '1', 'publication_names', 'p', 'messages', 'true')"
}

# capture NAME: the changes since the last capture, into NAME.hex.
capture() {
    changes >"$out/$1.hex"
    echo "capture: $1.hex: $(wc -l <"$out/$1.hex") messages"
}

sql "CREATE TABLE t (id bigint PRIMARY KEY, q text, p jsonb, n numeric, b boolean,
       f double precision, ts timestamptz, s smallint, i integer, o oid, r real, nul text)"
sql "CREATE TABLE tfull (a integer, b text)"
sql "ALTER TABLE tfull REPLICA IDENTITY FULL"
sql "CREATE TABLE doc (id integer PRIMARY KEY, title text, body text)"
# EXTERNAL: out of line and uncompressed, so the body is a TOAST pointer.
sql "ALTER TABLE doc ALTER COLUMN body SET STORAGE EXTERNAL"
sql "CREATE TABLE pt (id integer, k text) PARTITION BY LIST (k)"
sql "CREATE TABLE pt_a PARTITION OF pt FOR VALUES IN ('a')"
sql "CREATE TABLE pt_b PARTITION OF pt FOR VALUES IN ('b')"
sql "CREATE TYPE mood AS ENUM ('ok', 'sad')"
sql "CREATE TABLE tm (id integer PRIMARY KEY, m mood)"
sql "CREATE TABLE alt (id integer PRIMARY KEY)"
sql "CREATE PUBLICATION p FOR TABLE t, tfull, doc, pt, tm, alt"
sql "SELECT pg_create_logical_replication_slot('s', 'pgoutput')"

# Two rows of every kind of value, in one transaction.
sql "BEGIN;
INSERT INTO t VALUES (1, E'\u00e9\u4e2d\u20ac \U0001F600', '{\"x\": \"\u00e9\\\\n\\\"q\"}', 1.5,
    true, NULL, '2026-11-24 20:25:07.989324+00', -32768, 2147483647, 4294967295, 1.25, NULL);
INSERT INTO t VALUES (-9223372036854775808, '', '[]', 'NaN', false, 'Infinity', 'infinity',
    32767, -2147483648, 0, -0.5, NULL);
COMMIT"
capture insert

sql "INSERT INTO tfull VALUES (1, 'one')"
sql "INSERT INTO doc SELECT 1, 'first', string_agg(md5(g::text), '') FROM generate_series(1, 200) g"
changes >/dev/null
# An update that leaves the key alone, one that changes it (the old key, K),
# one that leaves the TOASTed body unchanged (u) and one under replica
# identity full (the old row, O).
sql "UPDATE t SET q = 'changed' WHERE id = 1"
sql "UPDATE t SET id = 2 WHERE id = 1"
sql "UPDATE doc SET title = 'second' WHERE id = 1"
sql "UPDATE tfull SET b = 'uno' WHERE a = 1"
capture update

sql "DELETE FROM t WHERE id = 2"
sql "DELETE FROM tfull WHERE a = 1"
sql "DELETE FROM doc WHERE id = 1"
capture delete

sql "TRUNCATE t, tfull RESTART IDENTITY"
capture truncate

sql "BEGIN;
SELECT pg_logical_emit_message(true, 'walq', E'wake \"up\"\\n');
SELECT pg_logical_emit_message(true, 'walq.bin', '\\x00ff00'::bytea);
COMMIT"
sql "SELECT pg_logical_emit_message(false, 'walq.notice', '')"
capture message

# Without publish_via_partition_root each partition is a relation of its own.
sql "INSERT INTO pt VALUES (1, 'a'), (2, 'b'), (3, 'a')"
capture partition

# A type that is not built in is described by a Type message.
sql "INSERT INTO tm VALUES (1, 'sad')"
capture type

# A new Relation message for the same OID after ALTER TABLE, in one session.
sql "INSERT INTO alt VALUES (1)"
sql "ALTER TABLE alt ADD COLUMN extra text"
sql "INSERT INTO alt VALUES (2, 'x')"
capture alter

# A transaction replayed from another server carries its origin.
sql "SELECT pg_replication_origin_create('upstream')"
sql "SELECT pg_replication_origin_session_setup('upstream');
BEGIN;
SELECT pg_replication_origin_xact_setup('0/ABCDEF0', '2026-01-02 03:04:05+00');
INSERT INTO tfull VALUES (7, 'from upstream');
COMMIT"
capture origin

# What the files hold, to check the decoder's output against.
pg_psql -c "SELECT 'relation ' || c.relname || ' ' || c.oid FROM pg_class c
            WHERE c.relname IN ('t', 'tfull', 'doc', 'pt_a', 'pt_b', 'tm', 'alt') ORDER BY 1"
pg_psql -c "SELECT 'type mood ' || 'mood'::regtype::oid"
