#!/usr/bin/env bash
# Start (or reuse) a throwaway PostgreSQL server for the tests marked `postgres`, and print the
# line that points them at it. Idempotent and quick when the server already runs:
#
#   eval "$(.ci/postgres.sh)"     # sets NAS_TEST_POSTGRES_URL
#
# Installs Debian's `postgresql` package if no server binaries are found (needs root), keeps
# its cluster in $NAS_PG_DIR (default /tmp/nas-pg-<port>), listens on 127.0.0.1:$NAS_PG_PORT
# (default 5433) only, and creates the role `nas` (password `nas`) and database `nas_test`.
# Only the `export ...` line goes to stdout; progress goes to stderr.
set -euo pipefail

PORT="${NAS_PG_PORT:-5433}"
DATA="${NAS_PG_DIR:-/tmp/nas-pg-$PORT}"
ROLE=nas
PASSWORD=nas
DBNAME=nas_test
URL="postgresql+psycopg2://$ROLE:$PASSWORD@127.0.0.1:$PORT/$DBNAME"

log() { echo "postgres.sh: $*" >&2; }

find_bin() {
    local d
    if command -v pg_ctl >/dev/null 2>&1 && command -v initdb >/dev/null 2>&1; then
        dirname "$(readlink -f "$(command -v pg_ctl)")"
        return 0
    fi
    for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
        if [ -x "$d/pg_ctl" ] && [ -x "$d/initdb" ]; then
            echo "$d"
            return 0
        fi
    done
    return 1
}

BIN="$(find_bin || true)"
if [ -z "$BIN" ]; then
    if [ "$(id -u)" != 0 ]; then
        log "PostgreSQL is not installed and installing it needs root (apt-get install postgresql)"
        exit 1
    fi
    log "installing postgresql (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq postgresql >&2
    BIN="$(find_bin)"
fi

# The server refuses to run as root: run it as `postgres` when we are root.
as_owner() {
    if [ "$(id -u)" = 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

if "$BIN/pg_isready" -q -h 127.0.0.1 -p "$PORT"; then
    log "server already running on 127.0.0.1:$PORT"
else
    if [ ! -f "$DATA/PG_VERSION" ]; then
        log "creating a cluster in $DATA"
        mkdir -p "$DATA"
        chmod 700 "$DATA"
        [ "$(id -u)" = 0 ] && chown postgres:postgres "$DATA"
        as_owner "$BIN/initdb" -D "$DATA" -U postgres --auth=trust -E UTF8 --no-locale >/dev/null
    fi
    log "starting the server on 127.0.0.1:$PORT"
    # fsync off: the data are throwaway and the tests should not wait for the disk.
    as_owner "$BIN/pg_ctl" -D "$DATA" -l "$DATA/server.log" -w -t 60 start \
        -o "-p $PORT -k $DATA -c listen_addresses=127.0.0.1 -c fsync=off" >/dev/null
fi

psql_admin() { "$BIN/psql" -h 127.0.0.1 -p "$PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 -qtA "$@"; }

if [ "$(psql_admin -c "SELECT 1 FROM pg_roles WHERE rolname = '$ROLE'")" != 1 ]; then
    log "creating role $ROLE"
    psql_admin -c "CREATE ROLE $ROLE LOGIN PASSWORD '$PASSWORD'" >/dev/null
fi
if [ "$(psql_admin -c "SELECT 1 FROM pg_database WHERE datname = '$DBNAME'")" != 1 ]; then
    log "creating database $DBNAME"
    psql_admin -c "CREATE DATABASE $DBNAME OWNER $ROLE" >/dev/null
fi

echo "export NAS_TEST_POSTGRES_URL=$URL"
