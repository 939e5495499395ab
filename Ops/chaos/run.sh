#!/usr/bin/env bash
# Builds the release binary and runs the chaos harness (see Ops/chaos/chaos.py for options).
set -euo pipefail
cd "$(dirname "$0")/../.."
Ops/setup.sh >&2
bitfleet=$(Ops/build.sh)
exec python3 Ops/chaos/chaos.py --bitfleet "$bitfleet" "$@"
