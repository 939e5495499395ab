#!/usr/bin/env bash
# Checks Ops/systemd/bitfleet-worker.service offline with systemd-analyze (Debian 12: apt package systemd):
#   1. `systemd-analyze verify` in a scratch root (stub /usr/local/bin/bitfleet, the example env file,
#      the host's unit library), failing on ANY diagnostic: verify exits 0 on unknown keys or bad values
#      and only prints them, so its output must be empty;
#   2. `systemd-analyze security --offline=yes`, failing when the exposure score is above MAX_EXPOSURE.
# Nothing is installed on the host and no service is started.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
unit=bitfleet-worker.service
max_exposure="${MAX_EXPOSURE:-2.0}"

if ! command -v systemd-analyze >/dev/null 2>&1; then
  echo "systemd-analyze not found (apt-get install systemd); unit not verified" >&2
  exit 2
fi

root="$(mktemp -d)"
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/usr/local/bin" "$root/etc/bitfleet" "$root/etc/systemd/system" "$root/usr/lib/systemd"
printf '#!/bin/sh\nexit 0\n' > "$root/usr/local/bin/bitfleet"
chmod 0755 "$root/usr/local/bin/bitfleet"
cp "$here/worker.env.example" "$root/etc/bitfleet/worker.env"
cp "$here/$unit" "$root/etc/systemd/system/$unit"
cp -a /lib/systemd/system "$root/usr/lib/systemd/"

passed=0; failed=0
out="$(systemd-analyze verify --root="$root" "$unit" 2>&1)" && rc=0 || rc=$?
if [ "$rc" = 0 ] && [ -z "$out" ]; then
  echo "ok    systemd-analyze verify $unit: no diagnostics"; passed=$((passed + 1))
else
  echo "FAIL  systemd-analyze verify $unit (rc=$rc):"; echo "$out" | sed 's/^/      /'; failed=$((failed + 1))
fi

sec="$(systemd-analyze security --offline=yes --root="$root" "$unit" 2>&1 || true)"
score="$(echo "$sec" | sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p' | tail -1)"
if [ -n "$score" ] && awk -v s="$score" -v m="$max_exposure" 'BEGIN { exit !(s <= m) }'; then
  echo "ok    systemd-analyze security: exposure $score (<= $max_exposure)"; passed=$((passed + 1))
else
  echo "FAIL  systemd-analyze security: exposure '${score:-?}' (max $max_exposure)"; echo "$sec" | tail -20; failed=$((failed + 1))
fi

# The stop timeout must leave the worker its grace period.
grace="$(sed -n 's/^BITFLEET_GRACE_PERIOD=\([0-9]*\)$/\1/p' "$here/worker.env.example")"
stop="$(sed -n 's/^TimeoutStopSec=\([0-9]*\)s\{0,1\}$/\1/p' "$here/$unit")"
if [ -n "$grace" ] && [ -n "$stop" ] && [ "$stop" -gt "$grace" ]; then
  echo "ok    TimeoutStopSec=$stop > BITFLEET_GRACE_PERIOD=$grace"; passed=$((passed + 1))
else
  echo "FAIL  TimeoutStopSec (${stop:-?}) must exceed BITFLEET_GRACE_PERIOD (${grace:-?})"; failed=$((failed + 1))
fi

echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
