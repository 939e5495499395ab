#!/usr/bin/env bash
# The test command: installs what is missing, starts a throwaway PostgreSQL cluster, runs every Swift test
# (unit and integration: real libpq against that cluster, real libcurl against a local HTTP server), then checks
# the Helm chart. Exits non-zero on any failure. Usage: Ops/test.sh [swift test arguments…]
set -euo pipefail
cd "$(dirname "$0")/.."
# Stop at the first failure and say which step failed.
step="installing what is missing (Ops/setup.sh)"
trap 'echo "Ops/test.sh: FAILED while $step (exit $?); the output above says why" >&2' ERR
Ops/setup.sh
source Ops/env.sh

work="$PWD/.tmp/test"
Ops/pg.sh remove "$work/pg" 2>/dev/null || true
rm -rf "$work"
mkdir -p "$work"
step="starting the throwaway PostgreSQL cluster (Ops/pg.sh start $work/pg)"
BITFLEET_TEST_DATABASE_URL=$(Ops/pg.sh start "$work/pg")
export BITFLEET_TEST_DATABASE_URL
trap 'Ops/pg.sh remove "$work/pg" || true' EXIT
echo "throwaway PostgreSQL: $BITFLEET_TEST_DATABASE_URL"

step="building the tests"
swift build --build-tests "${BITFLEET_TEST_FLAGS[@]}"
step="running the Swift tests"
swift test --skip-build "${BITFLEET_TEST_FLAGS[@]}" "$@"

if [ $# -eq 0 ]; then
  step="fuzzing the decoders (Ops/fuzz/run.sh)"
  Ops/fuzz/run.sh 30   # a bounded libFuzzer pass over the input decoders; a crash fails the run
  # A short chaos run with real worker processes: kill -9, terminated sessions, a PostgreSQL restart, a flaky
  # input server; fails unless every job ends final with exactly one result and cost row and nothing is lost.
  step="the chaos run (Ops/chaos/run.sh)"
  Ops/chaos/run.sh --jobs 1500 --kills 6 --terminations 4 --lease 5
  # The model tools for users' own data and PyTorch models: the torch exporter bit-exact against reference.py, fit.py
  # end to end on small real Fashion-MNIST subsets (CSV, npz, PNG folder; the engine built above runs the last)
  # and its errors on bad input.
  step="testing the model tools (Ops/models/test_models.py)"
  BITFLEET_BIN="$(swift build --show-bin-path "${BITFLEET_TEST_FLAGS[@]}")/bitfleet" python3 Ops/models/test_models.py
  step="checking the Helm chart (Ops/helm/check_chart.py)"
  python3 -m pip install -q -r Ops/helm/requirements.txt
  python3 Ops/helm/check_chart.py
  step="checking the Grafana dashboards (Ops/grafana/check_dashboards.py)"
  python3 Ops/grafana/check_dashboards.py --database-url "$BITFLEET_TEST_DATABASE_URL"
  # The peer benchmarks' own logic (best-peer choice, JSON keys, euro arithmetic, SQL quoting) and a tiny real
  # ONNX Runtime run on the CPU provider; no timing is judged.
  step="self-testing the peer benchmarks (Ops/bench/peers.py, Ops/bench/gpu_baseline.py)"
  python3 Ops/bench/peers.py --selftest
  python3 Ops/bench/gpu_baseline.py --selftest
fi
echo "Ops/test.sh: all passed"
