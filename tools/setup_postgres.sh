#!/usr/bin/env bash
# Installs what the PostgreSQL gradebook tests need, when it is missing: Debian's PostgreSQL server (its
# initdb, pg_ctl and postgres, and the `postgres` system user that the server runs as when we are root).
# tools/postgres_server.sh starts a throwaway server from it; without it those tests skip, saying why.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! tools/postgres_server.sh bindir >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "installing postgresql (Debian package) for the PostgreSQL gradebook tests"
        apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null
    else
        echo "the PostgreSQL server is missing and cannot be installed here; its gradebook tests will be skipped" >&2
    fi
fi
