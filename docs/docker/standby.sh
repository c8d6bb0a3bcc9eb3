#!/bin/sh
# The standby container's command: clones the primary with pg_basebackup on
# the first start (-R writes primary_conninfo and standby.signal; -C -S gives
# it a physical slot, so that the primary keeps honouring hot_standby_feedback
# while the standby is disconnected), then runs PostgreSQL 16 as a hot standby
# that logical decoding can read.
set -eu

if [ ! -s "$PGDATA/PG_VERSION" ]; then
    until pg_isready -q -h primary -U postgres; do sleep 1; done
    mkdir -p "$PGDATA"
    chown postgres:postgres "$PGDATA"
    chmod 0700 "$PGDATA"
    gosu postgres pg_basebackup -h primary -U postgres -D "$PGDATA" \
        -R -X stream -C -S standby1 -c fast
fi

exec gosu postgres postgres \
    -c hot_standby=on \
    -c hot_standby_feedback=on \
    -c wal_level=logical \
    -c max_replication_slots=20 \
    -c max_wal_senders=20
