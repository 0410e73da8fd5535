#!/usr/bin/env bash
# Make sure the PostgreSQL 15 server binaries the tests start (initdb, pg_ctl) are installed.
# The tests run their own throwaway cluster (unless EVENTBANK_TEST_PG_URL names a server);
# nothing here starts or configures one.
set -euo pipefail

PG_BIN=/usr/lib/postgresql/15/bin

if [[ -n ${EVENTBANK_TEST_PG_URL:-} || ( -x $PG_BIN/initdb && -x $PG_BIN/pg_ctl ) ]]; then
    exit 0
fi
if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null; then
    echo "ensure-postgres: $PG_BIN/initdb not found. Install PostgreSQL 15 as root:" >&2
    echo "    apt-get update && apt-get install -y postgresql-15" >&2
    echo "or point the tests at a server: EVENTBANK_TEST_PG_URL=postgresql://user@host:port/db" >&2
    exit 1
fi
echo "ensure-postgres: installing postgresql-15 with apt-get" >&2
export DEBIAN_FRONTEND=noninteractive
if ! { apt-get update -q && apt-get install -y -q postgresql-15; }; then
    echo "ensure-postgres: apt-get could not install postgresql-15; on releases without it," >&2
    echo "add the PGDG repository (https://www.postgresql.org/download/linux/) and retry" >&2
    exit 1
fi
test -x "$PG_BIN/initdb" || { echo "ensure-postgres: $PG_BIN/initdb still missing" >&2; exit 1; }
