#!/usr/bin/env bash
# The fleet's own overhead: metered samples per CPU-second of the demo's jobs against the engine alone, in one run.
#
#   Ops/bench/overhead.sh [--rounds 3] [--files 100] [--per-file 100] [--workers 2] [--perf] [--json]
#
# One throwaway cluster (Ops/pg.sh) and input server with the demo's inputs (Ops/demo/make_inputs.py: real
# Fashion-MNIST images, 9 in 10 files .npy, 1 in 10 JSON floats), the `fashion` model registered. Each round, back to
# back on the same machine: `bitfleet bench --json` (the engine alone: batch 256, 1 thread, samples per CPU-second, on
# 1 024 real test images;
# run right before and right after the workers, the mean of the two is the round's engine figure), then a batch of
# --files jobs drained by --workers worker processes (one slot each, as in Ops/demo.sh), then the
# batch's cost rows: samples / metered CPU seconds, and the per-phase CPU seconds (fetch, decode, infer, encode, write:
# bitfleet.job_costs.*_cpu_seconds) per job. The ratio metered / engine is the figure issue 15 asks for (goal ≥ 0.70).
# --perf records the first worker of each round with `perf record -e cpu-clock -g` (.tmp/bench-overhead/perf-N.data;
# read it with `perf report -i … --no-children`). Nothing here is judged by a test: the machine is shared and
# timings move; run it several times and read the ranges.
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds=3 files=100 per_file=100 workers=2 perf=0 json=0
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) rounds=$2; shift 2 ;;
    --files) files=$2; shift 2 ;;
    --per-file) per_file=$2; shift 2 ;;
    --workers) workers=$2; shift 2 ;;
    --perf) perf=1; shift ;;
    --json) json=1; shift ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
Ops/setup.sh >&2
source Ops/env.sh
bitfleet=${BITFLEET_BIN:-$(Ops/build.sh)}
work="$PWD/.tmp/bench-overhead"
Ops/pg.sh remove "$work/pg" 2>/dev/null || true
rm -rf "$work"; mkdir -p "$work"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  Ops/pg.sh remove "$work/pg" >/dev/null 2>&1 || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

DATABASE_URL=$(Ops/pg.sh start "$work/pg")
export DATABASE_URL
python3 Ops/demo/make_inputs.py "$work" --files "$files" --per-file "$per_file"
python3 Ops/testing/http_fixture.py --root "$work" --port 0 --ignore-stdin >"$work/http.out" 2>"$work/http.log" &
pids+=($!)
for _ in $(seq 50); do grep -q '^PORT ' "$work/http.out" 2>/dev/null && break; sleep 0.1; done
port=$(awk '/^PORT /{print $2; exit}' "$work/http.out")
[ -n "$port" ] || { echo "overhead.sh: the input server did not start" >&2; exit 1; }
"$bitfleet" migrate >/dev/null
"$bitfleet" model add --name fashion --path Ops/models/fashion >/dev/null
sed "s#\"url\": \"/#\"url\": \"http://127.0.0.1:$port/#" "$work/batch.jsonl" >"$work/batch-urls.jsonl"
q() { psql "$DATABASE_URL" -qAtX -v ON_ERROR_STOP=1 "$@"; }

for round in $(seq "$rounds"); do
  # the engine alone right before and right after the workers: the host's speed drifts by tens of percent within a
  # minute, so the round's engine figure is the mean of the two
  "$bitfleet" bench --json --skip-kernel --threads 1 --inputs "$work/engine-inputs.npy" >"$work/bench-$round.json" 2>/dev/null
  batch=$("$bitfleet" batch create --model fashion --inputs "$work/batch-urls.jsonl" --top-k 3 --tenant bench)
  wpids=()
  for i in $(seq "$workers"); do
    cmd=("$bitfleet" worker --concurrency 1 --exit-when-drained --allow-networks 127.0.0.1 --poll-seconds 0.5 --health-port 0)
    if [ "$perf" = 1 ] && [ "$i" = 1 ]; then
      cmd=(perf record -q -e cpu-clock -F 2999 -g -o "$work/perf-$round.data" -- "${cmd[@]}")
    fi
    "${cmd[@]}" 2>"$work/worker-$round-$i.log" &
    wpids+=($!)
  done
  "$bitfleet" batch wait "$batch" >/dev/null
  wait "${wpids[@]}"
  "$bitfleet" bench --json --skip-kernel --threads 1 --inputs "$work/engine-inputs.npy" >"$work/bench-after-$round.json" 2>/dev/null
  q -c "select row_to_json(t) from (
          select count(*) as jobs, sum(samples) as samples, sum(cpu_seconds) as cpu_seconds,
                 sum((to_jsonb(c) ->> 'fetch_cpu_seconds')::float8) as fetch,
                 sum((to_jsonb(c) ->> 'decode_cpu_seconds')::float8) as decode,
                 sum((to_jsonb(c) ->> 'infer_cpu_seconds')::float8) as infer,
                 sum((to_jsonb(c) ->> 'encode_cpu_seconds')::float8) as encode,
                 sum((to_jsonb(c) ->> 'write_cpu_seconds')::float8) as write
          from bitfleet.job_costs c where batch_id = $batch) t" >"$work/costs-$round.json"
  # The same by input format (the URL's suffix): the JSON inputs cost far more to fetch and decode than .npy.
  q -c "select json_object_agg(fmt, row_to_json(t)) from (
          select substring(j.input_url from '\.([a-z]+)$') as fmt, count(*) as jobs,
                 avg(c.fetch_cpu_seconds) * 1000 as fetch_ms, avg(c.decode_cpu_seconds) * 1000 as decode_ms,
                 avg(c.infer_cpu_seconds) * 1000 as infer_ms, avg(c.encode_cpu_seconds) * 1000 as encode_ms,
                 avg(c.write_cpu_seconds) * 1000 as write_ms
          from bitfleet.job_costs c join bitfleet.jobs j on j.id = c.job_id where c.batch_id = $batch group by 1) t" \
    >"$work/formats-$round.json"
done

python3 - "$work" "$rounds" "$json" <<'PY'
import json, subprocess, sys
work, rounds, as_json = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
cpu = next((l.split(":", 1)[1].strip() for l in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines()
            if l.startswith("Model name")), "unknown")
out = []
for r in range(1, rounds + 1):
    rows = [next(m for m in json.load(open(f"{work}/{name}-{r}.json"))["models"] if m["batch"] == 256 and m["threads"] == 1)
            for name in ("bench", "bench-after")]
    engine = {k: sum(row[k] for row in rows) / 2 for k in ("samplesPerCPUSecond", "samplesPerSecond")}
    engine_range = [row["samplesPerCPUSecond"] for row in rows]
    costs = json.loads(open(f"{work}/costs-{r}.json").read())
    metered = costs["samples"] / costs["cpu_seconds"]
    try:
        formats = json.loads(open(f"{work}/formats-{r}.json").read() or "{}") or {}
    except ValueError:
        formats = {}
    phases = {k: (costs[k] or 0) / costs["jobs"] * 1000 for k in ("fetch", "decode", "infer", "encode", "write")}
    out.append({"round": r, "jobs": costs["jobs"], "samples": costs["samples"],
                "metered_samples_per_cpu_s": metered, "cpu_ms_per_job": costs["cpu_seconds"] / costs["jobs"] * 1000,
                "phase_cpu_ms_per_job": phases, "phase_cpu_ms_per_job_by_format": formats,
                "engine_samples_per_cpu_s": engine["samplesPerCPUSecond"], "engine_samples_per_s": engine["samplesPerSecond"],
                "engine_samples_per_cpu_s_before_after": engine_range,
                "ratio_cpu": metered / engine["samplesPerCPUSecond"], "ratio_wall": metered / engine["samplesPerSecond"]})
if as_json:
    print(json.dumps({"cpu": cpu, "rounds": out}))
else:
    print(f"CPU: {cpu}")
    print("round  metered/CPU-s  engine b256/CPU-s  engine b256/s  ratio(CPU)  ratio(wall)  CPU ms/job  fetch  decode  infer  encode  write (CPU ms/job)")
    for o in out:
        p = o["phase_cpu_ms_per_job"]
        print(f"{o['round']:5d}  {o['metered_samples_per_cpu_s']:13.0f}  {o['engine_samples_per_cpu_s']:17.0f}  {o['engine_samples_per_s']:13.0f}"
              f"  {o['ratio_cpu']:10.2f}  {o['ratio_wall']:11.2f}  {o['cpu_ms_per_job']:10.3f}  {p['fetch']:5.3f}  {p['decode']:6.3f}"
              f"  {p['infer']:5.3f}  {p['encode']:6.3f}  {p['write']:5.3f}")
    print("by input format (CPU ms per job): " + "; ".join(
        f"round {o['round']} " + ", ".join(
            f"{fmt} ×{v['jobs']}: fetch {v['fetch_ms'] or 0:.3f} decode {v['decode_ms'] or 0:.3f} infer {v['infer_ms'] or 0:.3f}"
            for fmt, v in sorted(o["phase_cpu_ms_per_job_by_format"].items()))
        for o in out))
    print("engine b256 per CPU-s before / after the workers: " + "; ".join(
        f"round {o['round']} {o['engine_samples_per_cpu_s_before_after'][0]:.0f} / {o['engine_samples_per_cpu_s_before_after'][1]:.0f}" for o in out))
    rc = sorted(o["ratio_cpu"] for o in out)
    print(f"ratio metered / engine (CPU-s): {rc[0]:.2f}–{rc[-1]:.2f} over {len(rc)} rounds, median {rc[len(rc) // 2]:.2f}")
PY
