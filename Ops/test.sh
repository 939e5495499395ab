#!/usr/bin/env bash
# The test command: installs what is missing, starts a throwaway PostgreSQL cluster, runs every Swift test
# (unit and integration: real libpq against that cluster, real libcurl against a local HTTP server), then checks
# the Helm chart. Exits non-zero on any failure. Usage: Ops/test.sh [swift test arguments…]
set -euo pipefail
cd "$(dirname "$0")/.."
Ops/setup.sh
source Ops/env.sh

work="$PWD/.tmp/test"
Ops/pg.sh stop "$work/pg" 2>/dev/null || true
rm -rf "$work"
mkdir -p "$work"
BITFLEET_TEST_DATABASE_URL=$(Ops/pg.sh start "$work/pg")
export BITFLEET_TEST_DATABASE_URL
trap 'Ops/pg.sh stop "$work/pg" || true' EXIT
echo "throwaway PostgreSQL: $BITFLEET_TEST_DATABASE_URL"

swift build --build-tests "${BITFLEET_TEST_FLAGS[@]}"
swift test --skip-build "${BITFLEET_TEST_FLAGS[@]}" "$@"

if [ $# -eq 0 ]; then
  Ops/fuzz/run.sh 30   # a bounded libFuzzer pass over the input decoders; a crash fails the run
  # A short chaos run with real worker processes: kill -9, terminated sessions, a PostgreSQL restart, a flaky
  # input server; fails unless every job ends final with exactly one result and cost row and nothing is lost.
  Ops/chaos/run.sh --jobs 1500 --kills 6 --terminations 4 --lease 5
  python3 -m pip install -q -r Ops/helm/requirements.txt
  python3 Ops/helm/check_chart.py
  python3 Ops/grafana/check_dashboards.py --database-url "$BITFLEET_TEST_DATABASE_URL"
fi
