#!/usr/bin/env bash
# A throwaway PostgreSQL 15 cluster for the demo, the tests and the benchmarks.
#   Ops/pg.sh start DIR   → initdb (if needed) and start on a free loopback port; prints the libpq URL
#   Ops/pg.sh stop DIR    → stop it (fast shutdown)
#   Ops/pg.sh restart DIR → stop and start on the same port (chaos tests: "the database restarted")
#   Ops/pg.sh url DIR     → print the URL of a running cluster
#   Ops/pg.sh remove DIR  → stop it and delete it (DIR and wherever its data lives)
# Postgres refuses to run as root, so as root the cluster runs as the `postgres` user. Its data must be somewhere that
# user can reach: DIR itself when it can, else (a clone under /root, or any directory it cannot enter) a directory
# of its own under ${BITFLEET_PG_SPARE:-/var/tmp}, which DIR/location names. DIR keeps the port and the logs either way.
set -euo pipefail
cmd=${1:?usage: Ops/pg.sh start|stop|restart|url|remove DIR}
dir=${2:?usage: Ops/pg.sh start|stop|restart|url|remove DIR}
bin=${PG_BIN:-/usr/lib/postgresql/15/bin}
if [ -d "$dir" ]; then dir=$(cd "$dir" && pwd); fi

fail() { echo "Ops/pg.sh: $*" >&2; exit 1; }
[ -x "$bin/initdb" ] || fail "no PostgreSQL server at $bin: run Ops/setup.sh (or apt-get install postgresql-15)"

as_root() { [ "$(id -u)" = 0 ]; }
# As root, from / (the caller's directory may be one the postgres user cannot enter); every path here is absolute.
as_owner() { if as_root; then (cd / && runuser -u postgres -- "$@"); else "$@"; fi; }

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# Where the cluster's data, socket and server log live.
home() { if [ -f "$dir/location" ]; then cat "$dir/location"; else echo "$dir"; fi; }

url() {
  [ -f "$dir/port" ] || fail "no cluster in $dir (run: Ops/pg.sh start $dir)"
  echo "postgresql://postgres@127.0.0.1:$(cat "$dir/port")/postgres?sslmode=disable"
}

# As root: make sure the postgres user can reach the cluster's home, or give it one under /var/tmp.
place() {
  as_root || return 0
  id postgres >/dev/null 2>&1 || fail "there is no 'postgres' user to run the cluster as: run Ops/setup.sh (apt-get install postgresql-15)"
  if [ -f "$dir/location" ]; then
    [ -d "$(cat "$dir/location")" ] && return 0
    rm -f "$dir/location"
  fi
  chown postgres "$dir"
  if runuser -u postgres -- test -x "$dir" -a -w "$dir"; then return 0; fi
  local spare=${BITFLEET_PG_SPARE:-/var/tmp}
  local home; home=$(mktemp -d "$spare/bitfleet-pg.XXXXXX") || fail "cannot create a cluster directory under $spare"
  chown postgres "$home"
  runuser -u postgres -- test -x "$home" -a -w "$home" \
    || fail "the postgres user can reach neither $dir nor $home; set BITFLEET_PG_SPARE to a directory it can enter"
  echo "$home" >"$dir/location"
}

# The server outlives this script: it must not hold a descriptor it inherited from the caller (a pipe the caller
# reads to the end would then never end).
close_inherited() {
  local fd
  for fd in /proc/$$/fd/*; do
    fd=${fd##*/}
    if [ "$fd" -gt 2 ] 2>/dev/null; then eval "exec $fd>&-" 2>/dev/null || true; fi
  done
}

start() {
  close_inherited
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  place
  local home; home=$(home)
  if [ ! -f "$home/data/PG_VERSION" ]; then
    as_owner "$bin/initdb" -D "$home/data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 \
      || { cat "$dir/initdb.log" >&2; fail "initdb failed in $home/data (log above, also in $dir/initdb.log)"; }
  fi
  [ -f "$dir/port" ] || free_port >"$dir/port"
  local port; port=$(cat "$dir/port")
  # Settings for a disposable cluster: fast, not durable across a machine crash, enough connections for chaos runs.
  as_owner "$bin/pg_ctl" -D "$home/data" -l "$home/server.log" -w -t 60 start -o \
    "-p $port -k $home -c listen_addresses=127.0.0.1 -c max_connections=300 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c shared_buffers=256MB" \
    >/dev/null || { tail -20 "$home/server.log" >&2 || true; fail "the cluster in $home/data did not start (server log above: $home/server.log)"; }
  url
}

stop() {
  [ -d "$dir" ] || return 0
  local home; home=$(home)
  [ -f "$home/data/postmaster.pid" ] || return 0
  as_owner "$bin/pg_ctl" -D "$home/data" -m fast -w stop >/dev/null
}

remove() {
  [ -d "$dir" ] || return 0
  stop || true
  if [ -f "$dir/location" ]; then
    local home; home=$(cat "$dir/location")
    case "$home" in */bitfleet-pg.*) rm -rf "$home" ;; esac
  fi
  rm -rf "$dir"
}

case "$cmd" in
  start) start ;;
  stop) stop ;;
  restart) stop; start ;;
  url) url ;;
  remove) remove ;;
  *) echo "usage: Ops/pg.sh start|stop|restart|url|remove DIR" >&2; exit 2 ;;
esac
