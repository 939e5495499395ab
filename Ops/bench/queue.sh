#!/usr/bin/env bash
# Queue throughput on this machine, in one run: no-op jobs drained by real `bitfleet worker` processes, against
# pgbench running the workers' own claim/complete statements (Ops/bench/queue_claim_complete.sql) on the same
# cluster. Prints jobs/s for both and the ratio; --json ends with one JSON line.
#   Ops/bench/queue.sh [--jobs N] [--workers W] [--concurrency C] [--claim-batch B] [--json]
set -euo pipefail
cd "$(dirname "$0")/../.."
jobs=100000 workers=2 concurrency=2 batch=100 json=0
while [ $# -gt 0 ]; do
  case "$1" in
    --jobs) jobs=$2; shift 2 ;;
    --workers) workers=$2; shift 2 ;;
    --concurrency) concurrency=$2; shift 2 ;;
    --claim-batch) batch=$2; shift 2 ;;
    --json) json=1; shift ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
Ops/setup.sh >&2
source Ops/env.sh
bitfleet=$(Ops/build.sh)
work="$PWD/.tmp/bench-queue"
Ops/pg.sh remove "$work/pg" 2>/dev/null || true
rm -rf "$work"; mkdir -p "$work"
export DATABASE_URL=$(Ops/pg.sh start "$work/pg")
trap 'Ops/pg.sh remove "$work/pg" || true' EXIT
"$bitfleet" migrate >/dev/null

fill() {
  PGOPTIONS="-c client_min_messages=warning" psql "$DATABASE_URL" -qAt -c "TRUNCATE bitfleet.jobs CASCADE" \
    -c "INSERT INTO bitfleet.jobs (model, input_url) SELECT 'bitfleet.noop', 'noop:' FROM generate_series(1, $1)" \
    -c "VACUUM ANALYZE bitfleet.jobs"
}

# 1. Real worker processes.
fill "$jobs"
start=$(date +%s.%N)
pids=()
for i in $(seq "$workers"); do
  BITFLEET_LOG_LEVEL=warning "$bitfleet" worker --concurrency "$concurrency" --claim-batch "$batch" --exit-when-drained \
    --poll-seconds 0.2 --health-port 0 2>>"$work/worker.log" &
  pids+=($!)
done
wait "${pids[@]}"
end=$(date +%s.%N)
done_jobs=$(psql "$DATABASE_URL" -qAt -c "SELECT count(*) FROM bitfleet.results")
worker_rate=$(python3 -c "print(round($done_jobs / ($end - $start), 1))")

# 2. pgbench with the same statements, same cluster, same number of connections, for a fixed time.
fill "$jobs"
clients=$((workers * concurrency))
seconds=$(python3 -c "print(max(3, min(20, int($jobs / max($worker_rate, 1) * 0.8))))")
pgbench -n -M simple -c "$clients" -j "$clients" -T "$seconds" -D batch="$batch" -f Ops/bench/queue_claim_complete.sql \
  "$DATABASE_URL" >"$work/pgbench.out" 2>&1 || { cat "$work/pgbench.out" >&2; exit 1; }
pg_jobs=$(psql "$DATABASE_URL" -qAt -c "SELECT count(*) FROM bitfleet.results")
pgbench_rate=$(python3 -c "print(round($pg_jobs / $seconds, 1))")
ratio=$(python3 -c "print(round($worker_rate / $pgbench_rate, 3))")

printf '%-44s %12s\n' "no-op jobs through $workers worker processes × $concurrency slots" "$worker_rate jobs/s"
printf '%-44s %12s\n' "pgbench, same SQL, $clients clients, ${seconds}s" "$pgbench_rate jobs/s"
printf '%-44s %12s\n' "workers / pgbench" "$ratio"
printf '(%s jobs, claim batch %s, %s cores)\n' "$done_jobs" "$batch" "$(nproc)"
if [ "$json" = 1 ]; then
  echo "{\"jobs\": $done_jobs, \"workers\": $workers, \"concurrency\": $concurrency, \"claim_batch\": $batch, \"worker_jobs_per_s\": $worker_rate, \"pgbench_jobs_per_s\": $pgbench_rate, \"ratio\": $ratio}"
fi
