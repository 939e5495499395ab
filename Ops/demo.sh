#!/usr/bin/env bash
# The demo: on a fresh machine, installs what is missing, builds the release binary, starts a throwaway PostgreSQL
# cluster and a local HTTP server with real Fashion-MNIST test images, registers the trained binary MoE model,
# enqueues a batch, runs two worker processes until the queue drains, and prints predictions and the cost summary.
set -euo pipefail
cd "$(dirname "$0")/.."
# Stop at the first failure and say where, with what to do next.
step="installing what is missing (Ops/setup.sh)"
trap 'echo "Ops/demo.sh: failed while $step (exit $?). Fix the error above and run Ops/demo.sh again; logs: .tmp/demo/" >&2' ERR
Ops/setup.sh
source Ops/env.sh

files=${BITFLEET_DEMO_FILES:-100}
per_file=${BITFLEET_DEMO_PER_FILE:-100}
# the model directory registered as "fashion" (another trained Fashion-MNIST model is scored the same way end to end)
model_dir=${BITFLEET_DEMO_MODEL:-Ops/models/fashion}
work="$PWD/.tmp/demo"
Ops/pg.sh remove "$work/pg" 2>/dev/null || true
rm -rf "$work"
mkdir -p "$work"

echo "== building (release, x86-64-v2; kernels chosen at run time)"
step="building the release binary (Ops/build.sh)"
bitfleet=$(Ops/build.sh)

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  Ops/pg.sh stop "$work/pg" || true
}
trap cleanup EXIT

echo "== starting a throwaway PostgreSQL cluster and the input server"
step="starting the throwaway PostgreSQL cluster (Ops/pg.sh start $work/pg)"
# Assigned apart from `export`, so that a cluster that does not start stops the demo here (never libpq's default socket).
DATABASE_URL=$(Ops/pg.sh start "$work/pg")
export DATABASE_URL
step="starting the input server"
python3 Ops/demo/make_inputs.py "$work" --files "$files" --per-file "$per_file"
python3 Ops/testing/http_fixture.py --root "$work" --port 0 --ignore-stdin >"$work/http.out" 2>"$work/http.log" &
pids+=($!)
for _ in $(seq 50); do grep -q '^PORT ' "$work/http.out" 2>/dev/null && break; sleep 0.1; done
port=$(awk '/^PORT /{print $2; exit}' "$work/http.out")
[ -n "$port" ] || { echo "Ops/demo.sh: the input server did not start (see $work/http.log)" >&2; exit 1; }
echo "database: $DATABASE_URL"
echo "inputs:   http://127.0.0.1:$port/inputs/ ($files files × $per_file images)"

echo "== migrate, register the model, enqueue a batch"
step="migrating, registering the model and enqueuing"
"$bitfleet" migrate
"$bitfleet" model add --name fashion --path "$model_dir"
sed "s#\"url\": \"/#\"url\": \"http://127.0.0.1:$port/#" "$work/batch.jsonl" >"$work/batch-urls.jsonl"
batch=$("$bitfleet" batch create --model fashion --inputs "$work/batch-urls.jsonl" --top-k 3 --tenant demo)
echo "batch $batch created; also one job enqueued from SQL:"
psql "$DATABASE_URL" -Atc "select bitfleet.enqueue(model => 'fashion', input_url => 'http://127.0.0.1:$port/inputs/test-0000.npy', tenant => 'demo-sql')"

echo "== running 2 worker processes until the queue drains"
step="running the workers (logs: $work/worker-*.log)"
start=$(date +%s.%N)
for i in 1 2; do
  "$bitfleet" worker --concurrency 1 --exit-when-drained --allow-networks 127.0.0.1 --poll-seconds 0.5 --health-port 0 \
    2>"$work/worker-$i.log" &
  pids+=($!)
done
"$bitfleet" batch wait "$batch"
wait "${pids[@]:1}"
end=$(date +%s.%N)

echo "== predictions"
step="reading the results"
"$bitfleet" batch results "$batch" | python3 Ops/demo/score.py "$work/labels.json"
"$bitfleet" batch status "$batch"
jobs=$(psql "$DATABASE_URL" -Atc "select count(*) from bitfleet.jobs where state = 'succeeded'")
samples=$(psql "$DATABASE_URL" -Atc "select coalesce(sum(samples), 0) from bitfleet.results")
python3 -c "import sys; s=float(sys.argv[3])-float(sys.argv[2]); print(f'throughput: {int(sys.argv[1])} jobs in {s:.2f} s = {int(sys.argv[1])/s:.1f} jobs/s, {int(sys.argv[4])/s:.0f} samples/s (2 workers, wall clock incl. start-up)')" "$jobs" "$start" "$end" "$samples"

echo "== measured alternatives: the float twin on this server's CPU (ONNX Runtime fp32/int8, OpenVINO), a short run"
step="measuring the CPU peers (Ops/bench/peers.py --record --quick)"
# The operator's price per core-hour for this server (the workers' default) and the database server as a shared
# cost: the dashboard then shows measured CPU-peer rows next to the stated GPU row, and the shared line.
python3 Ops/bench/peers.py --record --quick --seconds "${BITFLEET_DEMO_PEER_SECONDS:-0.5}" \
  --database-url "$DATABASE_URL" --price-per-core-hour 0.05 --fleet-model fashion
psql "$DATABASE_URL" -Atqc "insert into bitfleet.shared_costs (name, euros_per_month, valid_from, note)
  values ('demo postgres server', 30, '$(date -u -d @"${start%.*}" '+%Y-%m-%d %H:%M:%S')+00',
          'stated for the demo: a small database server at EUR 30 per month, shared by every job')"

echo "== cost by model and day (bitfleet cost)"
"$bitfleet" cost
psql "$DATABASE_URL" -P pager=off -c "
  select count(*) as jobs, sum(samples) as inferences, round(sum(cpu_seconds)::numeric, 3) as cpu_seconds,
         round(avg(fetch_seconds * 1000)::numeric, 2) as fetch_ms, round(avg(infer_seconds * 1000)::numeric, 2) as infer_ms,
         round(avg(write_seconds * 1000)::numeric, 2) as write_ms,
         to_char(sum(euros) / sum(samples) * 1000, 'FM0.000000000') as euros_per_1000_inferences,
         max(price_per_core_hour) as eur_per_core_hour
  from bitfleet.job_costs"
echo "== where each job's CPU went (thread CPU ms per job, by phase; they sum to cpu_ms)"
psql "$DATABASE_URL" -P pager=off -c "
  select round(avg(cpu_seconds * 1000)::numeric, 3) as cpu_ms, round(avg(fetch_cpu_seconds * 1000)::numeric, 3) as fetch,
         round(avg(decode_cpu_seconds * 1000)::numeric, 3) as decode, round(avg(infer_cpu_seconds * 1000)::numeric, 3) as infer,
         round(avg(encode_cpu_seconds * 1000)::numeric, 3) as encode, round(avg(write_cpu_seconds * 1000)::numeric, 3) as write,
         round((sum(samples) / sum(cpu_seconds))::numeric) as samples_per_cpu_second
  from bitfleet.job_costs"

echo "== the binary model's cost per million inferences next to each alternative (bitfleet cost --view savings)"
"$bitfleet" cost --view savings

echo "== cost dashboard (bitfleet cost dashboard)"
"$bitfleet" cost dashboard
