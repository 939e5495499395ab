#!/usr/bin/env bash
# A throwaway PostgreSQL 15 cluster for the demo, the tests and the benchmarks.
#   Ops/pg.sh start DIR   → initdb (if needed) and start on a free loopback port; prints the libpq URL
#   Ops/pg.sh stop DIR    → stop it (fast shutdown)
#   Ops/pg.sh restart DIR → stop and start on the same port (chaos tests: "the database restarted")
#   Ops/pg.sh url DIR     → print the URL of a running cluster
# Postgres refuses to run as root, so as root the cluster runs as the `postgres` user in a directory it owns.
set -euo pipefail
cmd=${1:?usage: Ops/pg.sh start|stop|restart|url DIR}
dir=${2:?usage: Ops/pg.sh start|stop|restart|url DIR}
bin=${PG_BIN:-/usr/lib/postgresql/15/bin}
[ -x "$bin/initdb" ] || { echo "Ops/pg.sh: no PostgreSQL server at $bin (apt-get install postgresql-15)" >&2; exit 1; }

as_owner() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

url() { echo "postgresql://postgres@127.0.0.1:$(cat "$dir/port")/postgres?sslmode=disable"; }

start() {
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  [ "$(id -u)" = 0 ] && chown postgres "$dir"
  if [ ! -f "$dir/data/PG_VERSION" ]; then
    as_owner "$bin/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 \
      || { cat "$dir/initdb.log" >&2; exit 1; }
  fi
  [ -f "$dir/port" ] || free_port >"$dir/port"
  local port; port=$(cat "$dir/port")
  # Settings for a disposable cluster: fast, not durable across a machine crash, enough connections for chaos runs.
  as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start -o \
    "-p $port -k $dir -c listen_addresses=127.0.0.1 -c max_connections=300 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c shared_buffers=256MB" \
    >/dev/null || { tail -20 "$dir/server.log" >&2; exit 1; }
  url
}

stop() {
  [ -f "$dir/data/postmaster.pid" ] || return 0
  as_owner "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null
}

case "$cmd" in
  start) start ;;
  stop) stop ;;
  restart) stop; start ;;
  url) url ;;
  *) echo "usage: Ops/pg.sh start|stop|restart|url DIR" >&2; exit 2 ;;
esac
