#!/usr/bin/env bash
# A throwaway PostgreSQL cluster on loopback, for tests and benchmarks.
#
#   eval "$(scripts/pg.sh start DIR)"   # exports WEIR_TEST_PG (a URL) and WEIR_PG_DIR
#   scripts/pg.sh ctl DIR ARGS...          # pg_ctl ARGS on it (restart -m fast, stop, start)
#   scripts/pg.sh stop DIR
#
# PG_SSL_DIR=DIR (holding server.crt and server.key) starts it with TLS on.
#
# Runs the Debian packages' initdb and pg_ctl (PostgreSQL 15 or later) into
# DIR, as the unprivileged `postgres` user when started as root (PostgreSQL
# refuses to run as root). Listens on 127.0.0.1 only, on a free port, with
# trust authentication for the local user `weir`: it holds test data only.
set -euo pipefail

cmd=${1:?usage: pg.sh start|stop DIR}
dir=${2:?usage: pg.sh start|stop DIR}

bin=${PG_BIN:-}
if [ -z "$bin" ]; then
  for v in 17 16 15; do
    if [ -x "/usr/lib/postgresql/$v/bin/pg_ctl" ]; then bin=/usr/lib/postgresql/$v/bin; break; fi
  done
fi
if [ -z "$bin" ] || [ ! -x "$bin/pg_ctl" ]; then
  echo "pg.sh: no PostgreSQL found (install the Debian postgresql package, or set PG_BIN)" >&2
  exit 1
fi

as_owner() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

case "$cmd" in
  start)
    mkdir -p "$dir"
    if [ "$(id -u)" = 0 ]; then chown postgres "$dir"; fi
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    as_owner "$bin/initdb" -D "$dir/data" -U weir --auth=trust --encoding=UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 \
      || { cat "$dir/initdb.log" >&2; exit 1; }
    # Many connections: several nodes, each with a pool. fsync stays on: the
    # crash tests check durability.
    cat >>"$dir/data/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$dir'
max_connections = 400
shared_buffers = 256MB
EOF
    if [ -n "${PG_SSL_DIR:-}" ]; then
      cp "$PG_SSL_DIR/server.crt" "$PG_SSL_DIR/server.key" "$dir/data/"
      chmod 600 "$dir/data/server.key"
      if [ "$(id -u)" = 0 ]; then chown postgres "$dir/data/server.crt" "$dir/data/server.key"; fi
      printf "ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n" >>"$dir/data/postgresql.conf"
    fi
    as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w start >/dev/null \
      || { cat "$dir/server.log" >&2; exit 1; }
    echo "export WEIR_TEST_PG=postgres://weir@127.0.0.1:$port/postgres WEIR_PG_DIR=$dir"
    ;;
  ctl)
    shift 2
    as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w "$@" >/dev/null
    ;;
  stop)
    if [ -d "$dir/data" ]; then as_owner "$bin/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true; fi
    rm -rf "$dir"
    ;;
  *)
    echo "usage: pg.sh start|ctl|stop DIR" >&2
    exit 2
    ;;
esac
