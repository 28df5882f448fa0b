#!/usr/bin/env bash
# The PostgreSQL server the tests use, printed as a URL (tests create and drop their own
# databases on it):
#   1. DATABASE_URL, when it is a postgres:// URL;
#   2. else the local server on 127.0.0.1:5432, when it answers;
#   3. else a throw-away server started here (Debian's postgresql is installed when missing),
#      stopped by `tools/test-pg.sh stop`.
# AQUEDUCT_TEST_PG_TEMP=1 skips 1 and 2 (to exercise 3).
set -euo pipefail
state=${TMPDIR:-/tmp}/aqueduct-test-pg.$(id -u)

stop() {
    if [ -f "$state/dir" ]; then
        dir=$(cat "$state/dir")
        as_pg "$(pg_bin)/pg_ctl" -D "$dir" -m immediate stop >/dev/null 2>&1 || true
        rm -rf "$dir" "$state"
    fi
}

pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }

as_pg() {
    # initdb and postgres refuse to run as root.
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

if [ "${1:-}" = stop ]; then stop; exit 0; fi

if [ "${AQUEDUCT_TEST_PG_TEMP:-}" != 1 ]; then
    case "${DATABASE_URL:-}" in postgres://*|postgresql://*) echo "$DATABASE_URL"; exit 0 ;; esac
    if (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null; then
        echo "postgres://postgres@127.0.0.1:5432/postgres"
        exit 0
    fi
fi

if [ -z "$(pg_bin)" ]; then
    echo "test-pg: installing Debian's postgresql" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >&2
fi
stop
mkdir -p "$state"
dir=$(mktemp -d "${TMPDIR:-/tmp}/aqueduct-pg.XXXXXX")
[ "$(id -u)" = 0 ] && chown postgres "$dir"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
as_pg "$(pg_bin)/initdb" -D "$dir" -U postgres --auth=trust >/dev/null
as_pg "$(pg_bin)/pg_ctl" -D "$dir" -w -l "$dir/log" -o "-p $port -k $dir -h 127.0.0.1" start >/dev/null
echo "$dir" > "$state/dir"
echo "postgres://postgres@127.0.0.1:$port/postgres"
