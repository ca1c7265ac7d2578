# Sourced by .ci/run (and usable by hand: `source .ci/postgres.sh`): makes
# sure PostgreSQL is installed (Debian's `postgresql` package), starts a
# throwaway cluster on a free loopback port, owned by an unprivileged user
# (initdb refuses root), and exports TRIBUTARY_TEST_POSTGRES naming it. The
# cluster is stopped and removed when the calling shell exits.

pg_bin() {
    ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1
}

if [ -z "$(pg_bin)" ] || [ ! -x "$(pg_bin)/initdb" ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # The package would start a system-wide cluster; policy-rc.d stops it.
    made_policy=
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod +x /usr/sbin/policy-rc.d
        made_policy=1
    fi
    apt-get install -y -qq postgresql >/dev/null
    [ -z "$made_policy" ] || rm -f /usr/sbin/policy-rc.d
fi
PG_BIN="$(pg_bin)"

# The Debian package creates the `postgres` user; make one if it is absent.
PG_USER=postgres
id -u "$PG_USER" >/dev/null 2>&1 || useradd --system --no-create-home "$PG_USER"
as_pg() {
    if [ "$(id -u)" = 0 ]; then
        runuser -u "$PG_USER" -- "$@"
    else
        "$@"
    fi
}

PG_DIR="$(mktemp -d /tmp/tributary-pg.XXXXXX)"
chown "$PG_USER" "$PG_DIR" 2>/dev/null || true
PG_PORT="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
as_pg "$PG_BIN/initdb" -D "$PG_DIR/data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >/dev/null
as_pg "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/log" -w \
    -o "-h 127.0.0.1 -p $PG_PORT -k $PG_DIR -c fsync=off -c max_connections=300" start >/dev/null

stop_postgres() {
    as_pg "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$PG_DIR"
}
trap stop_postgres EXIT

export TRIBUTARY_TEST_POSTGRES="postgres://postgres@127.0.0.1:$PG_PORT/postgres"
