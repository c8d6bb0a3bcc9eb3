#!/bin/sh
# Run once by the postgres image's entrypoint when it creates the primary's
# cluster (/docker-entrypoint-initdb.d): lets the standby connect for
# replication, with the password, from the compose network.
set -eu
echo "host replication all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
