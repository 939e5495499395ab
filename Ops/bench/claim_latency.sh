#!/usr/bin/env bash
# Claim latency with and without millions of finished jobs in bitfleet.jobs, and the retention function's cost.
#
#   Ops/bench/claim_latency.sh [--finished 3000000] [--queued 10000] [--seconds 10] [--results] [--json]
#
# In a throwaway cluster (Ops/pg.sh): migrate (bitfleet migrate), insert --queued due jobs, VACUUM ANALYZE,
# measure the worker's claim statement (copied from Sources/BitFleetWorker/JobQueue.swift `claim`, LIMIT 8 as the
# default --claim-batch) with pgbench, one client, each claim inside BEGIN … ROLLBACK so the queue stays the same
# between runs; then, in a fresh table, --finished succeeded jobs (finished_at spread over 30 days, with --results
# one result row each) followed by the same --queued jobs, and measure again; then time bitfleet.prune_finished(7 days, 10000) a few times.
# Prints median / p95 / p99 ms per claim and ms per 10 000 pruned rows; --json ends with one JSON line.
set -euo pipefail
cd "$(dirname "$0")/../.."
finished=3000000 queued=10000 seconds=10 results=0 json=0 prunes=5
while [ $# -gt 0 ]; do
  case "$1" in
    --finished) finished=$2; shift 2 ;;
    --queued) queued=$2; shift 2 ;;
    --seconds) seconds=$2; shift 2 ;;
    --results) results=1; shift ;;
    --prunes) prunes=$2; shift 2 ;;
    --json) json=1; shift ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
Ops/setup.sh >&2
for tool in psql pgbench python3; do
  command -v "$tool" >/dev/null || { echo "claim_latency.sh: $tool is missing (Ops/setup.sh installs it)" >&2; exit 1; }
done

# The migrations run through `bitfleet migrate` (they record themselves in its table); BITFLEET_BIN skips the build.
bitfleet=${BITFLEET_BIN:-$(Ops/build.sh)}
work="$PWD/.tmp/bench-claim-latency"
Ops/pg.sh remove "$work/pg" 2>/dev/null || true
rm -rf "$work"; mkdir -p "$work"
cleanup() { Ops/pg.sh remove "$work/pg" >/dev/null 2>&1 || true; }
trap cleanup EXIT
trap 'exit 130' INT TERM
url=$(Ops/pg.sh start "$work/pg")
chmod 755 "$work"   # pgbench log files are written here by root; the server is not involved
q() { psql "$url" -qAtX -v ON_ERROR_STOP=1 "$@"; }
now() { date +%s.%N; }
elapsed() { python3 -c "import sys; print(round(float(sys.argv[2]) - float(sys.argv[1]), 1))" "$1" "$(now)"; }

"$bitfleet" migrate --database-url "$url" >/dev/null
echo "cluster $url, migrated, PostgreSQL $(q -c 'SHOW server_version')" >&2

# The claim exactly as JobQueue.claim sends it; $1 lease owner, $2 limit, $3 lease seconds (pgbench variables).
cat >"$work/claim.sql" <<'SQL'
BEGIN;
WITH due AS (
    SELECT id FROM bitfleet.jobs
    WHERE state IN ('queued', 'failed') AND run_after <= now()
    ORDER BY priority DESC, run_after, id
    LIMIT :limit
    FOR UPDATE SKIP LOCKED
)
UPDATE bitfleet.jobs j
SET state = 'running', attempt = j.attempt + 1, lease_owner = :owner,
    lease_expires_at = now() + make_interval(secs => :lease), started_at = coalesce(j.started_at, now())
FROM due WHERE j.id = due.id
RETURNING j.id, j.attempt, j.max_attempts, j.batch_id, j.custom_id, j.model, j.model_version, j.input_url,
          j.input_format, j.top_k, j.tenant, extract(epoch FROM now() - j.run_after)::float8 AS queue_wait;
ROLLBACK;
SQL

# measure LABEL → "median p95 p99 count" (ms) of BEGIN; claim; ROLLBACK round trips over the Unix socket.
measure() {
  local label=$1
  rm -f "$work"/lat.*
  # -M prepared: the worker sends the claim with parameters (PQexecParams), so it is planned with them as well.
  pgbench -n -M prepared -c 1 -j 1 -T "$seconds" -D limit=8 -D owner=bench-owner -D lease=30 \
    -l --log-prefix="$work/lat" -f "$work/claim.sql" "$url" >"$work/pgbench-$label.out" 2>&1 \
    || { cat "$work/pgbench-$label.out" >&2; exit 1; }
  cat "$work"/lat.* | python3 -c '
import sys, statistics
lat = sorted(int(line.split()[2]) / 1000.0 for line in sys.stdin if line.strip())
pick = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))]
print(f"{statistics.median(lat):.3f} {pick(0.95):.3f} {pick(0.99):.3f} {len(lat)}")'
}

explain() {
  q -c "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF, TIMING OFF)
        WITH due AS (SELECT id FROM bitfleet.jobs WHERE state IN ('queued', 'failed') AND run_after <= now()
                     ORDER BY priority DESC, run_after, id LIMIT 8 FOR UPDATE SKIP LOCKED)
        UPDATE bitfleet.jobs j SET state = 'running', attempt = j.attempt + 1, lease_owner = 'explain',
            lease_expires_at = now() + make_interval(secs => 30), started_at = coalesce(j.started_at, now())
        FROM due WHERE j.id = due.id RETURNING j.id" >"$work/explain-$1.txt"
  # EXPLAIN ANALYZE executes the update: give the eight jobs back.
  q -c "UPDATE bitfleet.jobs SET state = 'queued', attempt = 0, lease_owner = NULL, lease_expires_at = NULL,
               started_at = NULL WHERE lease_owner = 'explain'" >/dev/null
}

# timed SQL → median ms of 5 runs (psql \timing, client side) of one statement.
timed() {
  { echo '\timing on'; for _ in 1 2 3 4 5; do echo "$1;"; done; } | psql "$url" -qAtX -v ON_ERROR_STOP=1 2>&1 \
    | awk '/^Time: /{print $2}' | python3 -c 'import sys, statistics; print(f"{statistics.median(float(x) for x in sys.stdin):.2f}")'
}
# Other statements that read the jobs table: the dashboards' queue depth and the workers' --exit-when-drained check.
depth_sql="SELECT * FROM bitfleet.queue_depth"
# The Helm chart's KEDA scaler query (Helm/bitfleet/values.yaml keda.query).
keda_sql="SELECT count(*) FROM bitfleet.jobs WHERE state = 'running' OR (state IN ('queued', 'failed') AND run_after <= now())"
drained_sql="SELECT NOT EXISTS (SELECT 1 FROM bitfleet.jobs WHERE state IN ('queued', 'failed', 'running')) AS drained"

size() { q -c "SELECT pg_size_pretty(pg_total_relation_size('bitfleet.jobs'))"; }

# 1. Only the queue: --queued due jobs.
t=$(now)
q -c "INSERT INTO bitfleet.jobs (model, input_url, created_at, run_after)
      SELECT 'bench', 'http://inputs.example/' || n || '.npy', now() - interval '1 minute', now() - interval '1 minute'
      FROM generate_series(1, $queued) n" -c "VACUUM ANALYZE bitfleet.jobs"
echo "inserted $queued queued jobs in $(elapsed "$t") s; jobs table $(size)" >&2
explain small
read -r small_med small_p95 small_p99 small_n <<<"$(measure small)"
echo "claim, $queued queued only:                 median $small_med ms, p95 $small_p95 ms, p99 $small_p99 ms ($small_n claims)" >&2
small_depth=$(timed "$depth_sql"); small_drained=$(timed "$drained_sql"); small_keda=$(timed "$keda_sql")

# 2. Millions of finished jobs (succeeded, finished over the last 30 days; optionally with their results), then the
#    same queued jobs again: in this order the heap looks like a real queue's, old finished rows first.
t=$(now)
q -c "TRUNCATE bitfleet.jobs CASCADE"
q -c "INSERT INTO bitfleet.jobs (model, input_url, state, attempt, created_at, run_after, started_at, finished_at)
      SELECT 'bench', 'http://inputs.example/done-' || n || '.npy', 'succeeded', 1,
             f - interval '2 seconds', f - interval '2 seconds', f - interval '1 second', f
      FROM generate_series(1, $finished) n,
           LATERAL (SELECT now() - interval '30 days' * (n::float8 / $finished) AS f) t"
if [ "$results" = 1 ]; then
  q -c "INSERT INTO bitfleet.results (job_id, attempt, model, model_version, samples, output)
        SELECT id, 1, 'bench', '1', 64, '{\"predictions\": [{\"sample\": 0, \"top\": [{\"class\": 3, \"p\": 0.9}]}]}'
        FROM bitfleet.jobs WHERE state = 'succeeded'"
fi
q -c "INSERT INTO bitfleet.jobs (model, input_url, created_at, run_after)
      SELECT 'bench', 'http://inputs.example/' || n || '.npy', now() - interval '1 minute', now() - interval '1 minute'
      FROM generate_series(1, $queued) n"
insert_s=$(elapsed "$t")
t=$(now)
q -c "VACUUM ANALYZE bitfleet.jobs" -c "VACUUM ANALYZE bitfleet.results"
vacuum_s=$(elapsed "$t")
jobs_size=$(size)
db_size=$(q -c "SELECT pg_size_pretty(pg_database_size(current_database()))")
echo "inserted $finished finished jobs$([ "$results" = 1 ] && echo ' with results') in $insert_s s, VACUUM ANALYZE $vacuum_s s; jobs table $jobs_size, database $db_size" >&2
explain big
read -r big_med big_p95 big_p99 big_n <<<"$(measure big)"
echo "claim, $queued queued + $finished finished:  median $big_med ms, p95 $big_p95 ms, p99 $big_p99 ms ($big_n claims)" >&2
big_depth=$(timed "$depth_sql"); big_drained=$(timed "$drained_sql"); big_keda=$(timed "$keda_sql")

# 3. Retention: prune_finished(7 days, 10 000), a few calls, each timed on the server side.
prune_ms=()
for _ in $(seq "$prunes"); do
  ms=$(q <<'SQL'
SELECT clock_timestamp() AS t0 \gset
SELECT bitfleet.prune_finished(interval '7 days', 10000) AS n \gset
SELECT round((extract(epoch FROM clock_timestamp() - :'t0'::timestamptz) * 1000)::numeric, 1) || ' ' || :n;
SQL
)
  prune_ms+=("$ms")
done
read -r prune_med prune_max <<<"$(printf '%s\n' "${prune_ms[@]}" | python3 -c '
import sys, statistics
rows = [line.split() for line in sys.stdin if line.strip()]
ms = [float(r[0]) for r in rows if int(r[1]) == 10000]
print(f"{statistics.median(ms):.1f} {max(ms):.1f}" if ms else "nan nan")')"
echo "prune_finished(7 days, 10000): median $prune_med ms, max $prune_max ms per 10 000 rows ($prunes calls: ${prune_ms[*]})" >&2

echo
echo "== claim latency (claim of 8 due jobs, one client, BEGIN/claim/ROLLBACK round trip over a Unix socket)"
printf '%-44s %10s %10s %10s %8s\n' "jobs table" "median ms" "p95 ms" "p99 ms" "claims"
printf '%-44s %10s %10s %10s %8s\n' "$queued queued" "$small_med" "$small_p95" "$small_p99" "$small_n"
printf '%-44s %10s %10s %10s %8s\n' "$queued queued + $finished finished" "$big_med" "$big_p95" "$big_p99" "$big_n"
echo "same tables, other readers (median of 5, ms, queued only → with finished rows):"
echo "  bitfleet.queue_depth view (dashboards, bitfleet status): $small_depth → $big_depth"
echo "  Helm chart's KEDA scaler query:                          $small_keda → $big_keda"
echo "  drained check (--exit-when-drained):                     $small_drained → $big_drained"
echo "prune_finished(7 days, 10000): median $prune_med ms per 10 000 rows$([ "$results" = 1 ] && echo ' (with their results)') (max $prune_max)"
echo "insert of $finished finished rows: $insert_s s; VACUUM ANALYZE: $vacuum_s s; jobs table $jobs_size; database $db_size"
echo "load average $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) cores (the machine is shared: tails are scheduling noise)"
echo "plan with finished rows (EXPLAIN ANALYZE, BUFFERS):"
sed 's/^/  /' "$work/explain-big.txt"
if [ "$json" = 1 ]; then
  printf '{"queued": %s, "finished": %s, "results": %s, "claim_ms": {"queued_only": {"median": %s, "p95": %s, "p99": %s, "n": %s}, "with_finished": {"median": %s, "p95": %s, "p99": %s, "n": %s}}, "prune_ms_per_10000": {"median": %s, "max": %s}, "queue_depth_ms": [%s, %s], "drained_check_ms": [%s, %s], "keda_query_ms": [%s, %s], "insert_s": %s, "vacuum_s": %s}\n' \
    "$queued" "$finished" "$([ "$results" = 1 ] && echo true || echo false)" "$small_med" "$small_p95" "$small_p99" "$small_n" \
    "$big_med" "$big_p95" "$big_p99" "$big_n" "$prune_med" "$prune_max" "$small_depth" "$big_depth" "$small_drained" "$big_drained" "$small_keda" "$big_keda" "$insert_s" "$vacuum_s"
fi
