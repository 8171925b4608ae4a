#!/usr/bin/env bash
# A throwaway PostgreSQL server for tests and benchmarks, listening only on a Unix socket in its own folder.
#
#   tools/postgres_server.sh start [DB]   initdb into a new folder /tmp/tfcourse-pg.XXXXXX, start the server
#                                         there, create database DB (default: gradebook) and print two lines:
#                                         the folder, then the SQLAlchemy URL of the database
#   tools/postgres_server.sh stop DIR     stop the server of folder DIR and delete the folder
#   tools/postgres_server.sh bindir       print the folder of the server's programs (fails if none)
#
# PostgreSQL refuses to run as root: as root, the server runs as Debian's `postgres` system user (created
# by the postgresql package, see tools/setup_postgres.sh) through setpriv; otherwise as the calling user.
# There is no TCP listener and no password (trust on the socket only); fsync is off, since nothing in it
# needs to survive. Any failure exits non-zero with the reason on stderr (the tests then skip with it).
set -euo pipefail

bindir() {
    if command -v pg_ctl >/dev/null 2>&1 && command -v initdb >/dev/null 2>&1; then
        dirname "$(readlink -f "$(command -v pg_ctl)")"
        return
    fi
    local found
    found=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
    if [ -n "$found" ] && [ -x "$found/pg_ctl" ] && [ -x "$found/initdb" ]; then
        echo "$found"
        return
    fi
    echo "no PostgreSQL server programs (initdb, pg_ctl): install Debian's postgresql package" >&2
    return 1
}

# Run a command as the server's user.
as_server() {
    if [ "$(id -u)" = 0 ]; then
        setpriv --reuid=postgres --regid=postgres --init-groups -- "$@"
    else
        "$@"
    fi
}

start() {
    local db=${1:-gradebook} bin dir
    bin=$(bindir)
    if [ "$(id -u)" = 0 ]; then
        if ! id postgres >/dev/null 2>&1; then
            echo "running as root and there is no 'postgres' user to run the server as" >&2
            return 1
        fi
        command -v setpriv >/dev/null 2>&1 || { echo "setpriv (util-linux) is missing" >&2; return 1; }
    fi
    dir=$(mktemp -d /tmp/tfcourse-pg.XXXXXX)  # short: a socket path has at most 107 characters
    [ "$(id -u)" = 0 ] && chown postgres:postgres "$dir"
    chmod 700 "$dir"
    if ! as_server "$bin/initdb" -D "$dir/data" -U tfcourse -A trust -E UTF8 --locale=C --no-sync \
        >"$dir/initdb.log" 2>&1; then
        echo "initdb failed: $(tail -n 5 "$dir/initdb.log")" >&2
        rm -rf "$dir"
        return 1
    fi
    if ! as_server "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
        -o "-c listen_addresses='' -k $dir -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
        start >/dev/null 2>&1; then
        echo "the server did not start: $(tail -n 5 "$dir/server.log" 2>/dev/null)" >&2
        rm -rf "$dir"
        return 1
    fi
    if ! as_server "$bin/psql" -h "$dir" -U tfcourse -d postgres -q -v ON_ERROR_STOP=1 \
        -c "CREATE DATABASE \"$db\"" >/dev/null 2>"$dir/psql.log"; then
        echo "could not create database $db: $(cat "$dir/psql.log")" >&2
        stop "$dir"
        return 1
    fi
    echo "$dir"
    echo "postgresql+psycopg2://tfcourse@/$db?host=$dir"
}

stop() {
    local dir=${1:?usage: postgres_server.sh stop DIR}
    case "$dir" in /tmp/tfcourse-pg.*) ;; *) echo "not a folder made by this script: $dir" >&2; return 1 ;; esac
    if [ -d "$dir/data" ]; then
        as_server "$(bindir)/pg_ctl" -D "$dir/data" -m fast -w -t 30 stop >/dev/null 2>&1 \
            || as_server "$(bindir)/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true
    fi
    rm -rf "$dir"
}

case "${1:-}" in
    start) shift; start "$@" ;;
    stop) shift; stop "$@" ;;
    bindir) bindir ;;
    *) echo "usage: $0 start [DB] | stop DIR | bindir" >&2; exit 2 ;;
esac
