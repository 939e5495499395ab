#!/usr/bin/env bash
# Multi-host test with Linux network namespaces (as root): PostgreSQL, the input server and three worker hosts on a
# bridge; throughput with 1, 2 and 3 worker hosts, then a partition of host 3 mid-job. See Ops/multihost/multihost.py.
#   Ops/multihost/run.sh [--jobs N] [--samples S] [--rate 1gbit] [--delay 1ms] [--lease 5] [--json]
# Set BITFLEET_BIN to use an already built binary instead of Ops/build.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."
[ "$(id -u)" = 0 ] || { echo "Ops/multihost/run.sh: needs root (ip netns)" >&2; exit 1; }
command -v ip >/dev/null || apt-get install -y iproute2 >&2
command -v tc >/dev/null || apt-get install -y iproute2 >&2
if [ -z "${BITFLEET_BIN:-}" ]; then
  Ops/setup.sh >&2
  BITFLEET_BIN=$(Ops/build.sh)
fi
# Whatever happens to the harness, no namespace, worker or server outlives this script.
cleanup() {
  local code=$?
  if [ -n "${harness:-}" ] && kill -0 "$harness" 2>/dev/null; then
    kill -TERM "$harness" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$harness" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$harness" 2>/dev/null || true
  fi
  # Anything still inside one of our namespaces (the harness stops them itself; this is the safety net).
  for ns in bfmh-w1 bfmh-w2 bfmh-w3 bfmh-http bfmh-pg; do
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null || true; done
  done
  Ops/multihost/net.sh down || true
  exit "$code"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
python3 Ops/multihost/multihost.py --bitfleet "$BITFLEET_BIN" "$@" &
harness=$!
wait "$harness"
