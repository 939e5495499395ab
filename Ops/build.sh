#!/usr/bin/env bash
# Release build with the CPU flags the kernels need; prints the path of the binary.
set -euo pipefail
cd "$(dirname "$0")/.."
source Ops/env.sh
swift build "${BITFLEET_RELEASE_FLAGS[@]}" --product bitfleet >&2
echo "$(swift build "${BITFLEET_RELEASE_FLAGS[@]}" --show-bin-path)/bitfleet"
