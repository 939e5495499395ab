#!/usr/bin/env python3
"""A measured GPU row: the float twin of the BitFleet model on a GPU, with the euros it costs per million inferences.

    python3 Ops/bench/gpu_baseline.py --price-per-hour 1.10 --instance "AWS g5.xlarge"     # on the GPU machine
    python3 Ops/bench/gpu_baseline.py [--provider cuda|cpu|auto] [--batches 1,16,256,1024,4096,16384]
                                      [--seconds 2] [--price-per-hour EUR] [--instance NAME] [--threads N]
                                      [--device-id 0] [--images N] [--float-model Ops/models/fashion-float] [--json]
                                      [--runtime onnxruntime|torch] [--precision fp32|tf32|bf16] [--input-on-device]
                                      [--test-images NPZ]
    python3 Ops/bench/gpu_baseline.py --selftest   # synthetic checks + a tiny CPU-provider run, well under 30 s

What it runs: Ops/models/fashion-float/model.onnx (input "x", float32 [batch, 784] = uint8 pixels / 255, output
"logits" [batch, 10]) with ONNX Runtime on real Fashion-MNIST test images (Debian's dataset-fashion-mnist package,
loaded by Ops/bench/peers.py's load_test()). Batches bigger than the 10 000 test images repeat them.

--provider: cuda = CUDAExecutionProvider (fails if onnxruntime cannot load it); cpu = CPUExecutionProvider;
auto (default) = CUDA when onnxruntime.get_available_providers() lists it and the session really gets it, else
the CPU provider -- and then every figure is a CPU figure, NOT a GPU figure: it is said loudly, kind = 'cpu' and
the label ends in "measured on CPU provider (not a GPU)".

Batch sweep: the --batches sizes in order, each timed for --seconds (2 warm-up runs, then back-to-back
session.run calls for at least --seconds and at least 3 runs). Growing stops when a batch size improves samples/s
by less than 5 % over the previous one (saturated), or when a batch size fails (out of memory or any other
error: recorded, never fatal once one size has been measured). The best batch is the measured size with the most
samples/s; accuracy on the test images is computed at that batch size.

What is timed: session.run from a host float32 array to host logits, so on a GPU the host-to-device copy of the
input and the copy of the logits back are included (the serving path from host memory); the uint8 -> float32
conversion is done beforehand and not timed.

--runtime torch: the same ONNX graph run node by node with PyTorch (Ops/bench/onnx_torch.py; exact against ONNX
Runtime in fp32, checked by --selftest), for a GPU machine whose onnxruntime has no CUDA provider; --precision fp32,
tf32 or bf16. --input-on-device (torch only) times the model alone: the batches are copied to the device before
the clock starts and each timed run ends with the logits on the device (synchronised), so no host copies are timed:
the GPU's ceiling, not the serving path; the label says so. Accuracy is always taken through the host path.

Cost: euros per million inferences = price_per_hour / 3600 / samples_per_s * 1e6, with --price-per-hour the
euros per GPU-instance hour the user gives (on-demand, reserved, spot: the caller decides; --instance names it).
Without --price-per-hour the throughput is printed but no euro figure and no SQL row.

The SQL (printed as text, never executed: this script connects to no database) records the measured row in
bitfleet.alternatives (Migrations/0009) through the function the bench role may call, e.g.

    SELECT bitfleet.record_alternative(kind => 'gpu', model => 'fashion', twin => 'fashion-float',
        label => 'AWS g5.xlarge: NVIDIA A10G, ...', runtime => 'onnxruntime 1.32.0 CUDAExecutionProvider',
        device => 'NVIDIA A10G', batch => 4096, cores => NULL, samples_per_second => 812345.6,
        price_per_hour => 1.2, tool => 'Ops/bench/gpu_baseline.py', note => 'measured at ...; accuracy ...');

run it with psql as the schema owner or a login in bitfleet_bench (`--fleet-model` names the binary model the row
is compared with; default the float model's directory name without "-float"). A CPU-provider run (no GPU) records
kind 'cpu-peer' with cores => the intra-op threads (or the CPUs visible) and price_per_hour => the price per core-hour
(the instance price divided by those cores), labelled as not a GPU. Strings are quoted the standard SQL way (a single
quote doubled; standard_conforming_strings, so a backslash is an ordinary character).

--json: the last line of stdout is ONE JSON object (provider, kind, device, runtime, sweep rows, best, accuracy,
euros_per_million, label, record_sql, ...).

If onnxruntime is missing the script first runs `python3 -m pip install -q -r Ops/bench/requirements.txt`, which
installs the CPU build; on a GPU machine install onnxruntime-gpu instead (see the comment in that file).

Exit status: 0 ok; 2 when the run could not measure anything (no CUDA provider with --provider cuda, the first
batch size failed, no test images); 1 when --selftest has a failure.
"""
import argparse
import datetime
import importlib
import importlib.util
import json
import math
import os
import platform
import re
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
REQUIREMENTS = os.path.join(ROOT, "Ops", "bench", "requirements.txt")
DEFAULT_MODEL = os.path.join(ROOT, "Ops", "models", "fashion-float")
DEFAULT_BATCHES = "1,16,256,1024,4096,16384"
SATURATION = 0.05  # stop growing when samples/s improves by less than this fraction
SOURCE = "Ops/bench/gpu_baseline.py"
FUNCTION = "bitfleet.record_alternative"
sys.path.insert(0, HERE)
from peers import RECORD_ARGS, sql_literal  # noqa: E402  (the same call and quoting as peers.py --record)
CPU_LABEL = "measured on CPU provider (not a GPU)"
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
WARM_UP_RUNS = 2
MIN_RUNS = 3


# ---------------------------------------------------------------- pure parts (checked by --selftest)

def euros_per_million(price_per_hour, samples_per_s):
    """Euros per million inferences on an instance costing price_per_hour euros per hour, fully busy."""
    return price_per_hour / 3600.0 / samples_per_s * 1e6


def record_sql(row):
    """The statement that records one row (a dict with exactly RECORD_ARGS) through bitfleet.record_alternative."""
    if set(row) != set(RECORD_ARGS):
        raise ValueError(f"row arguments {sorted(row)} != {sorted(RECORD_ARGS)}")
    return f"SELECT {FUNCTION}(" + ", ".join(f"{k} => {sql_literal(row[k])}" for k in RECORD_ARGS) + ");"


def fleet_model_name(float_model_name):
    """The binary model a float twin belongs to: 'fashion-float' -> 'fashion'."""
    return float_model_name[:-len("-float")] if float_model_name.endswith("-float") else float_model_name


def is_memory_error(e):
    text = f"{type(e).__name__}: {e}".lower()
    return isinstance(e, MemoryError) or any(k in text for k in (
        "out of memory", "failed to allocate", "bad_alloc", "cudaerrormemoryallocation", "memoryerror",
        "cuda_error_out_of_memory", "allocat"))


def sweep(batches, measure, threshold=SATURATION, log=None):
    """Time batch sizes in order with measure(batch) -> dict(samples_per_s, ...) until samples/s improves by less
    than `threshold` over the previous size (saturated) or measure raises (recorded). Returns (rows, best, reason):
    rows = one dict per size tried (with "error" for the failed one), best = the measured row with the most
    samples/s (None if none), reason = why the sweep stopped."""
    rows = []
    prev = None
    reason = f"last batch size in the list ({batches[-1]}) reached without saturating"
    for b in batches:
        try:
            m = dict(measure(b))
        except Exception as e:  # noqa: BLE001 -- an OOM or any runtime failure ends the sweep, recorded
            kind = "memory" if is_memory_error(e) else "error"
            msg = f"{type(e).__name__}: {str(e).strip()}"[:1000]
            rows.append(dict(batch=b, error=msg, error_kind=kind))
            reason = f"batch {b} failed ({'out of memory' if kind == 'memory' else 'error'}): {msg[:200]}"
            if log:
                log(rows[-1])
            break
        m["batch"] = b
        m["gain"] = None if prev is None else m["samples_per_s"] / prev["samples_per_s"] - 1.0
        rows.append(m)
        if log:
            log(m)
        if prev is not None and m["gain"] < threshold:
            reason = (f"saturated: batch {b} gives {m['gain'] * 100:+.1f} % samples/s over batch {prev['batch']} "
                      f"(< {threshold * 100:.0f} %)")
            break
        prev = m
    ok = [r for r in rows if "error" not in r]
    best = max(ok, key=lambda r: r["samples_per_s"]) if ok else None
    return rows, best, reason


def make_label(instance, device, runtime_short, model, batch, kind, precision="fp32", note=""):
    head = f"{instance}: {device}" if instance else device
    label = f"{head}, {runtime_short}, {model} {precision}, batch {batch}{note}"
    if kind == "cpu":
        label += f" -- {CPU_LABEL}"
    return label


# ---------------------------------------------------------------- environment

def import_onnxruntime():
    try:
        return importlib.import_module("onnxruntime")
    except ImportError:
        print(f"onnxruntime missing: python3 -m pip install -q -r {os.path.relpath(REQUIREMENTS)}", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-r", REQUIREMENTS], check=True)
        importlib.invalidate_caches()
        return importlib.import_module("onnxruntime")


def load_test_images(limit=None, path=None):
    """(x float32 [N, 784] = pixels / 255, y int64 [N]) from Ops/bench/peers.py's load_test() (Debian's package), or
    from `path`, an .npz with X (uint8 [N, 784] or [N, 28, 28]) and y, for a machine without that package."""
    if path:
        with np.load(path) as d:
            if "X" not in d or "y" not in d:
                raise SystemExit(f"--test-images {path}: an .npz with arrays X and y (has {sorted(d.files)})")
            xte, yte = d["X"], d["y"]
        if xte.dtype != np.uint8 or xte.reshape(len(xte), -1).shape[1] != 784 or len(yte) != len(xte):
            raise SystemExit(f"--test-images {path}: X must be uint8 [N, 784] or [N, 28, 28] with N labels in y "
                             f"(X {xte.dtype} {list(xte.shape)}, y {list(yte.shape)})")
    else:
        spec = importlib.util.spec_from_file_location("bitfleet_bench_peers", os.path.join(HERE, "peers.py"))
        peers = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(peers)
        xte, yte = peers.load_test()
    if limit:
        xte, yte = xte[:limit], yte[:limit]
    x = np.ascontiguousarray(xte.reshape(-1, 784).astype(np.float32) / np.float32(255.0))
    return x, np.asarray(yte, dtype=np.int64)


def cpu_model():
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            if line.strip().lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def visible_cpus():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def gpu_info(device_id):
    """nvidia-smi's name, memory and driver for CUDA device `device_id` (through CUDA_VISIBLE_DEVICES), or None."""
    index = str(device_id)
    vis = os.environ.get("CUDA_VISIBLE_DEVICES", "").strip()
    if vis:
        ids = [v.strip() for v in vis.split(",") if v.strip()]
        if device_id < len(ids):
            index = ids[device_id]
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader",
                              "-i", index], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    lines = [l for l in out.stdout.splitlines() if l.strip()]
    if out.returncode != 0 or not lines:
        return None
    parts = [p.strip() for p in lines[0].split(",")]
    return dict(name=parts[0], memory_total=parts[1] if len(parts) > 1 else None,
                driver=parts[2] if len(parts) > 2 else None, nvidia_smi_index=index)


def make_session(ort, model_path, provider, threads, device_id):
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        so.intra_op_num_threads = threads
    if provider == CUDA:
        if hasattr(ort, "preload_dlls"):  # CUDA/cuDNN from pip's nvidia-* wheels, when that is where they are
            try:
                ort.preload_dlls()
            except Exception:  # noqa: BLE001 -- the system's libraries may still do
                pass
        providers = [(CUDA, {"device_id": device_id}), CPU]
    else:
        providers = [CPU]
    sess = ort.InferenceSession(model_path, so, providers=providers)
    if provider == CUDA and CUDA not in sess.get_providers():
        raise RuntimeError(f"onnxruntime lists {CUDA} but the session did not get it (session providers: "
                           f"{sess.get_providers()}; see onnxruntime's messages above: CUDA / cuDNN libraries?)")
    return sess


def time_batch(run, x, batch, seconds, prepare=None):
    """samples/s of back-to-back run(chunk) calls of `batch` rows cycling through distinct chunks of x (x repeated
    when batch > len(x)); prepare(chunk), untimed, turns each chunk into what run takes (e.g. a device tensor)."""
    n = len(x)
    k = max(1, min(8, n // batch))
    chunks = [np.ascontiguousarray(x[(i * batch + np.arange(batch)) % n]) for i in range(k)]
    if prepare is not None:
        chunks = [prepare(c) for c in chunks]
    for i in range(WARM_UP_RUNS):
        run(chunks[i % k])
    runs = 0
    t0 = time.perf_counter()
    while True:
        run(chunks[runs % k])
        runs += 1
        el = time.perf_counter() - t0
        if el >= seconds and runs >= MIN_RUNS:
            return dict(samples_per_s=runs * batch / el, ms_per_batch=el / runs * 1e3, runs=runs)


def accuracy(run, x, y, batch):
    correct = 0
    for i in range(0, len(x), batch):
        correct += int((np.argmax(run(x[i:i + batch]), axis=1) == y[i:i + batch]).sum())
    return correct / len(x)


# ---------------------------------------------------------------- the run

def shout(msg):
    bar = "!" * 100
    print(f"{bar}\n{msg}\n{bar}", file=sys.stderr, flush=True)
    print(f"{bar}\n{msg}\n{bar}", flush=True)


def open_onnxruntime(args, model_path):
    """The ONNX Runtime backend: (backend dict, None) or (None, (rc, result)) when it cannot run as asked."""
    ort = import_onnxruntime()
    available = list(ort.get_available_providers())
    cpu_reason = None
    sess = None
    if args.provider == "cpu":
        cpu_reason = "--provider cpu"
    elif CUDA not in available:
        if args.provider == "cuda":
            print(f"gpu_baseline.py: --provider cuda but onnxruntime {ort.__version__} lists only {available}. "
                  "Install the GPU build (see Ops/bench/requirements.txt): python3 -m pip uninstall -y onnxruntime "
                  "&& python3 -m pip install onnxruntime-gpu, or run PyTorch's CUDA: --runtime torch",
                  file=sys.stderr)
            return None, (2, dict(error=f"no {CUDA} in {available}", kind=None))
        cpu_reason = f"--provider auto and onnxruntime {ort.__version__} does not list {CUDA} ({available})"
    else:
        try:
            sess = make_session(ort, model_path, CUDA, args.threads, args.device_id)
        except Exception as e:  # noqa: BLE001
            if args.provider == "cuda":
                print(f"gpu_baseline.py: --provider cuda failed: {type(e).__name__}: {e}", file=sys.stderr)
                return None, (2, dict(error=f"{CUDA} failed: {type(e).__name__}: {e}"[:1000], kind=None))
            cpu_reason = f"--provider auto: {CUDA} is listed but failed to load: {type(e).__name__}: {e}"
    if sess is None:
        sess = make_session(ort, model_path, CPU, args.threads, args.device_id)
    provider = sess.get_providers()[0]
    kind = "gpu" if provider == CUDA else "cpu"
    in_name = sess.get_inputs()[0].name
    out_name = sess.get_outputs()[0].name
    return dict(run=lambda chunk: sess.run([out_name], {in_name: chunk})[0], timed=None, prepare=None, label_note="",
                precision="fp32", kind=kind, provider=provider,
                cpu_reason=cpu_reason, runtime=f"onnxruntime {ort.__version__} {provider}",
                runtime_short=f"ONNX Runtime {ort.__version__} {'CUDA' if kind == 'gpu' else 'CPU'}",
                info=dict(onnxruntime_version=ort.__version__, available_providers=available,
                          session_providers=sess.get_providers()),
                describe=f"onnxruntime {ort.__version__} {provider}; available providers {available}; session "
                         f"providers {sess.get_providers()}" + (f"; intra-op threads {args.threads}" if args.threads
                                                                else "; intra-op threads: onnxruntime default")), None


def open_torch(args, model_path):
    """The PyTorch backend (Ops/bench/onnx_torch.py runs the ONNX graph node by node on a torch device)."""
    import torch
    from onnx_torch import OnnxTorch
    cuda = torch.cuda.is_available()
    cpu_reason = None
    if args.provider == "cpu":
        cpu_reason = "--provider cpu"
    elif not cuda:
        if args.provider == "cuda":
            print(f"gpu_baseline.py: --provider cuda but torch {torch.__version__} sees no CUDA device",
                  file=sys.stderr)
            return None, (2, dict(error=f"torch {torch.__version__}: no CUDA device", kind=None))
        cpu_reason = f"--provider auto and torch {torch.__version__} sees no CUDA device"
    if args.threads:
        torch.set_num_threads(args.threads)
    device = f"cuda:{args.device_id}" if cpu_reason is None else "cpu"
    runner = OnnxTorch(model_path, device=device, precision=args.precision)
    kind = "gpu" if cpu_reason is None else "cpu"
    where = f"CUDA {torch.version.cuda}" if kind == "gpu" else "CPU"
    timed = prepare = None
    if args.input_on_device:
        def prepare(chunk):
            return torch.from_numpy(chunk).to(runner.device, dtype=runner.float)

        def timed(t):
            with torch.inference_mode():
                out = runner.forward(t)
            if runner.device.type == "cuda":
                torch.cuda.synchronize(runner.device)
            return out
    resident = ", input on the device (no host copies timed)" if args.input_on_device else ""
    backend = dict(run=runner, timed=timed, prepare=prepare, precision=args.precision, kind=kind,
                   provider=f"torch {device}",
                   cpu_reason=cpu_reason, label_note=resident,
                   runtime=f"torch {torch.__version__} {where} {args.precision}{resident} (Ops/bench/onnx_torch.py)",
                   runtime_short=f"PyTorch {torch.__version__.split('+')[0]} {'CUDA' if kind == 'gpu' else 'CPU'} "
                                 f"{args.precision}",
                   info=dict(torch_version=torch.__version__, torch_cuda=torch.version.cuda, precision=args.precision,
                             input_on_device=bool(args.input_on_device)),
                   describe=f"torch {torch.__version__} on {device}, {args.precision}, the ONNX graph run node by node "
                            f"(Ops/bench/onnx_torch.py){resident}" + (f"; threads {args.threads}" if args.threads else ""))
    return backend, None


def run_benchmark(args):
    model_dir = os.path.abspath(args.float_model)
    model_path = model_dir if model_dir.endswith(".onnx") else os.path.join(model_dir, "model.onnx")
    model_name = os.path.basename(os.path.dirname(model_path))
    batches = [int(b) for b in args.batches.split(",") if b.strip()]
    if not batches or any(b <= 0 for b in batches):
        raise SystemExit(f"--batches: positive integers, got {args.batches!r}")

    backend, failed = (open_torch if args.runtime == "torch" else open_onnxruntime)(args, model_path)
    if failed:
        return failed
    kind, cpu_reason, run = backend["kind"], backend["cpu_reason"], backend["run"]
    if kind == "cpu":
        shout(f"gpu_baseline.py: running on the CPU ({cpu_reason}).\n"
              f"THESE ARE CPU FIGURES, NOT A GPU FIGURE. kind = 'cpu' and the row is labelled "
              f"'{CPU_LABEL}'.")
    gpu = gpu_info(args.device_id) if kind == "gpu" else None
    cpu = cpu_model()
    if kind == "gpu":
        device = gpu["name"] if gpu else f"CUDA device {args.device_id} (nvidia-smi not found)"
    else:
        device = f"{cpu} ({visible_cpus()} CPUs visible)"
    runtime, runtime_short = backend["runtime"], backend["runtime_short"]

    x, y = load_test_images(args.images, args.test_images)
    if len(x) == 0:
        print("gpu_baseline.py: no test images", file=sys.stderr)
        return 2, dict(error="no test images", kind=kind)

    print(f"gpu_baseline.py: {model_path}")
    print(f"  device   : {device}" + (f" ({gpu['memory_total']}, driver {gpu['driver']})" if gpu else ""))
    print(f"  host CPU : {cpu}, {visible_cpus()} CPUs visible")
    print(f"  runtime  : {backend['describe']}")
    print(f"  images   : {len(x)} Fashion-MNIST test images; {args.seconds:g} s per batch size; "
          f"stop when samples/s gains < {SATURATION * 100:.0f} %")
    print(f"\n  {'batch':>7}  {'samples/s':>14}  {'ms/batch':>10}  {'runs':>6}  {'vs previous':>11}")

    def log(r):
        if "error" in r:
            print(f"  {r['batch']:>7}  FAILED ({r['error_kind']}): {r['error'][:300]}", flush=True)
        else:
            gain = "" if r["gain"] is None else f"{r['gain'] * 100:+.1f} %"
            print(f"  {r['batch']:>7}  {r['samples_per_s']:>14,.0f}  {r['ms_per_batch']:>10.3f}  {r['runs']:>6}  "
                  f"{gain:>11}", flush=True)

    timed = backend["timed"] or run
    rows, best, reason = sweep(batches, lambda b: time_batch(timed, x, b, args.seconds, backend["prepare"]), log=log)
    measured_at = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    print(f"\n  sweep stopped: {reason}")
    res = dict(provider=backend["provider"], kind=kind, device=device, gpu=gpu, cpu_model=cpu,
               cpus_visible=visible_cpus(), runtime=runtime, runtime_kind=args.runtime, **backend["info"],
               threads=args.threads or None, model=model_name,
               model_path=os.path.relpath(model_path, ROOT), images=len(x), seconds=args.seconds,
               saturation_threshold=SATURATION, sweep=rows, stop_reason=reason, best=None, accuracy=None,
               accuracy_batch=None, price_per_hour=args.price_per_hour, instance=args.instance,
               euros_per_million=None, label=None, record_sql=None, measured_at=measured_at, source=SOURCE,
               warning=None if kind == "gpu" else f"{CPU_LABEL}: {cpu_reason}")
    if best is None:
        print("gpu_baseline.py: no batch size could be measured", file=sys.stderr)
        return 2, res
    res["best"] = dict(batch=best["batch"], samples_per_s=best["samples_per_s"])
    try:
        res["accuracy"] = accuracy(run, x, y, best["batch"])
        res["accuracy_batch"] = best["batch"]
    except Exception as e:  # noqa: BLE001
        res["accuracy_error"] = f"{type(e).__name__}: {e}"[:1000]
    label = make_label(args.instance, device, runtime_short, model_name, best["batch"], kind, backend["precision"],
                       backend["label_note"])
    res["label"] = label
    print(f"  best     : batch {best['batch']}, {best['samples_per_s']:,.0f} samples/s "
          f"({'GPU' if kind == 'gpu' else 'CPU provider, NOT a GPU'})")
    if res["accuracy"] is not None:
        print(f"  accuracy : {res['accuracy'] * 100:.2f} % on {len(x)} test images at batch {best['batch']}")
    else:
        print(f"  accuracy : failed: {res['accuracy_error'][:300]}")
    if args.price_per_hour is None:
        print("  cost     : no --price-per-hour given: no euros per million inferences and no SQL row")
    else:
        res["euros_per_million"] = euros_per_million(args.price_per_hour, best["samples_per_s"])
        print(f"  cost     : EUR {args.price_per_hour:g} per instance-hour"
              + (f" ({args.instance})" if args.instance else "")
              + f" / 3600 / {best['samples_per_s']:,.1f} samples/s x 1e6 = "
              f"EUR {res['euros_per_million']:.6g} per million inferences (instance fully busy)")
        cores = None if kind == "gpu" else float(args.threads or visible_cpus() or 1)
        note = f"measured at {measured_at}"
        if res["accuracy"] is not None:
            note += f"; accuracy {res['accuracy'] * 100:.2f} % on {len(x)} test images"
        row = dict(kind="gpu" if kind == "gpu" else "cpu-peer", model=args.fleet_model or fleet_model_name(model_name),
                   twin=model_name, label=label, runtime=runtime, device=device, batch=best["batch"], cores=cores,
                   samples_per_second=round(best["samples_per_s"], 3),
                   price_per_hour=args.price_per_hour if cores is None else args.price_per_hour / cores,
                   tool=SOURCE, note=note)
        res["record_sql"] = record_sql(row)
        print(f"\n-- the row this run would record (run it with psql as the schema owner or a bitfleet_bench login; "
              "nothing was executed):")
        print(res["record_sql"])
    if kind == "cpu":
        print(f"\n  NOTE: {CPU_LABEL} -- {cpu_reason}")
    return 0, res


# ---------------------------------------------------------------- self-test

def selftest():
    passed, failed = [0], [0]

    def check(cond, what):
        if cond:
            passed[0] += 1
        else:
            failed[0] += 1
            print(f"FAIL: {what}")

    def fake(table):
        def measure(b):
            v = table[b]
            if isinstance(v, Exception):
                raise v
            return dict(samples_per_s=float(v), ms_per_batch=b / v * 1e3, runs=10)
        return measure

    # saturation rule
    rows, best, reason = sweep([1, 16, 256, 1024, 4096], fake({1: 1000, 16: 10000, 256: 50000, 1024: 52000,
                                                                 4096: 99999}))
    check([r["batch"] for r in rows] == [1, 16, 256, 1024], "sweep stops at the first gain < 5 % (1024: +4 %)")
    check(best["batch"] == 1024 and best["samples_per_s"] == 52000, "best = most samples/s (1024)")
    check(reason.startswith("saturated") and "+4.0 %" in reason, f"saturation reason: {reason}")
    rows, best, _ = sweep([1, 16, 256], fake({1: 1000, 16: 1040, 256: 5000}))
    check([r["batch"] for r in rows] == [1, 16] and best["batch"] == 16, "gain of exactly +4 % at 16 stops")
    rows, best, _ = sweep([1, 16, 256], fake({1: 1000, 16: 1050.0001, 256: 1000}))
    check([r["batch"] for r in rows] == [1, 16, 256] and best["batch"] == 16,
          "a gain >= 5 % goes on; a drop stops and best stays the previous size")
    rows, best, reason = sweep([1, 16], fake({1: 1000, 16: 20000}))
    check(len(rows) == 2 and best["batch"] == 16 and reason.startswith("last batch size"), "list exhausted")
    oom = RuntimeError("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : CUDA failure 2: out of memory")
    rows, best, reason = sweep([1, 16, 256, 1024], fake({1: 1000, 16: 9000, 256: oom, 1024: 1}))
    check(len(rows) == 3 and rows[-1]["error_kind"] == "memory" and "out of memory" in rows[-1]["error"]
          and best["batch"] == 16 and "out of memory" in reason, "an OOM is recorded, ends the sweep, keeps best")
    rows, best, reason = sweep([1, 16], fake({1: ValueError("bad shape"), 16: 5}))
    check(best is None and rows[0]["error_kind"] == "error" and len(rows) == 1, "first size failing: no best")
    check(is_memory_error(MemoryError()) and is_memory_error(RuntimeError("Failed to allocate memory for "
          "requested buffer of size 123")) and not is_memory_error(ValueError("bad shape")), "memory error text")

    # euro arithmetic
    check(abs(euros_per_million(3.6, 1000.0) - 1.0) < 1e-12, "EUR 3.60/h at 1000 samples/s = EUR 1 per million")
    check(abs(euros_per_million(0.85, 250000.0) - 0.85 / 3600 / 250000 * 1e6) < 1e-15
          and abs(euros_per_million(0.85, 250000.0) - 0.000944444444) < 1e-12, "EUR 0.85/h at 250k/s")
    check(abs(euros_per_million(3.0, 1e6) - 1.0 / 1200) < 1e-15, "COSTS.md seed: EUR 3/h at 1e6/s = 0.000833")

    # SQL quoting
    check(sql_literal("O'Brien's g5") == "'O''Brien''s g5'", "single quotes doubled")
    check(sql_literal("''") == "''''''", "two quotes -> four inside quotes")
    check(sql_literal('a\\b "c"') == "'a\\b \"c\"'", "backslash and double quotes left as they are")
    check(sql_literal(None) == "NULL" and sql_literal(16384) == "16384" and sql_literal(1.5) == "1.5",
          "NULL, integer, float")
    for bad in (float("nan"), float("inf"), "a\x00b"):
        try:
            sql_literal(bad)
            check(False, f"{bad!r} must be refused")
        except ValueError:
            check(True, "")
    label = make_label("Bob's box", "Xeon", "ONNX Runtime 1 CPU", "fashion-float", 8, "cpu")
    row = dict(kind="cpu-peer", model="fashion", twin="fashion-float", label=label,
               runtime="onnxruntime 1 CPUExecutionProvider", device="Xeon", batch=8, cores=2.0,
               samples_per_second=1234.5, price_per_hour=0.25, tool=SOURCE, note="measured at 2026-12-01T12:00:00Z")
    sql = record_sql(row)
    check(sql.startswith("SELECT bitfleet.record_alternative(kind => 'cpu-peer', model => 'fashion', "
                         "twin => 'fashion-float', label => "), "record_alternative call, named arguments in order")
    check("label => 'Bob''s box: Xeon, ONNX Runtime 1 CPU, fashion-float fp32, batch 8 -- measured on CPU provider "
          "(not a GPU)'" in sql and "batch => 8, cores => 2.0, samples_per_second => 1234.5, price_per_hour => 0.25, "
          "tool => 'Ops/bench/gpu_baseline.py', note => 'measured at 2026-12-01T12:00:00Z');" in sql,
          "record values, quoted label")
    check(sql.replace("''", "").count("'") == 2 * 8, "8 string literals, balanced quotes")
    check("cores => NULL" in record_sql(dict(row, kind="gpu", cores=None)), "a GPU row passes cores => NULL")
    check(fleet_model_name("fashion-float") == "fashion" and fleet_model_name("mine") == "mine", "fleet model name")
    try:
        record_sql({k: v for k, v in row.items() if k != "note"})
        check(False, "a row without every argument must be refused")
    except ValueError:
        check(True, "")
    check("not a GPU" not in make_label(None, "H100", "ONNX Runtime 1 CUDA", "m", 1, "gpu"), "a GPU row has no note")

    # a tiny real run on the CPU provider, through the command line
    inst = "O'Brien's test box"
    cmd = [sys.executable, os.path.abspath(__file__), "--provider", "cpu", "--batches", "1,8", "--seconds", "0.05",
           "--images", "64", "--threads", "1", "--price-per-hour", "0.5", "--instance", inst, "--json"]
    t0 = time.perf_counter()
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        rc, stdout, stderr = out.returncode, out.stdout, out.stderr
    except subprocess.TimeoutExpired as e:
        rc, stdout, stderr = None, e.stdout or "", f"timed out after 120 s\n{e.stderr or ''}"
    took = time.perf_counter() - t0
    check(rc == 0, f"tiny CPU run exits 0 (rc {rc}): {stderr.strip()[-1500:]}")
    res = None
    try:
        res = json.loads(stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        check(False, f"tiny CPU run: last stdout line is JSON: {stdout[-500:]!r}")
    if res is not None:
        ok_rows = [r for r in res["sweep"] if "error" not in r]
        check([r["batch"] for r in res["sweep"]] == [1, 8] and len(ok_rows) == 2
              and all(r["samples_per_s"] > 0 for r in ok_rows), "tiny CPU run: batches 1 and 8, samples/s > 0")
        check(res["best"] is not None and res["best"]["samples_per_s"] > 0, "tiny CPU run: best samples/s > 0")
        check(res["kind"] == "cpu" and res["provider"] == CPU and res["images"] == 64, "tiny CPU run: kind cpu")
        check(res["label"] is not None and res["label"].endswith(CPU_LABEL) and res["label"].startswith(inst),
              f"tiny CPU run: label says CPU: {res['label']!r}")
        check(res["accuracy"] is not None and 0.0 <= res["accuracy"] <= 1.0 and res["accuracy"] > 0.5,
              f"tiny CPU run: accuracy on 64 images {res['accuracy']}")
        check(res["euros_per_million"] is not None and abs(res["euros_per_million"] - euros_per_million(
            0.5, res["best"]["samples_per_s"])) < 1e-12, "tiny CPU run: euros per million from price and best")
        sql = res["record_sql"] or ""
        check(sql.startswith(f"SELECT {FUNCTION}(kind => 'cpu-peer', model => 'fashion', twin => 'fashion-float'")
              and "'O''Brien''s test box: " in sql and "cores => 1.0" in sql and "price_per_hour => 0.5," in sql
              and CPU_LABEL in sql and f"tool => '{SOURCE}'" in sql,
              "tiny CPU run: record call quotes the instance, says cpu-peer, 1 core, price per core-hour")
        check("NOT A GPU FIGURE" in stdout and "NOT A GPU FIGURE" in stderr, "tiny CPU run: says so loudly")
        check(re.search(r"SELECT bitfleet\.record_alternative\(", stdout) is not None,
              "tiny CPU run: record call printed")
    print(f"  (tiny CPU-provider run: {took:.1f} s)")

    # the PyTorch runtime (Ops/bench/onnx_torch.py) on the CPU: the same logits as ONNX Runtime, then through the CLI
    t0 = time.perf_counter()
    try:
        import torch  # noqa: F401  (Ops/setup.sh installs the CPU build; fit.py needs it too)
        from onnx_torch import OnnxTorch
    except ImportError as e:
        check(False, f"torch runtime: import failed ({e}); run Ops/setup.sh")
        OnnxTorch = None
    if OnnxTorch is not None:
        import onnx
        ort = import_onnxruntime()
        x64, y64 = load_test_images(64)
        model_path = os.path.join(DEFAULT_MODEL, "model.onnx")
        want = make_session(ort, model_path, CPU, 1, 0).run(None, {"x": x64})[0]
        got = OnnxTorch(model_path, "cpu", "fp32")(x64)
        check(got.shape == want.shape and float(np.abs(got - want).max()) < 1e-3
              and (got.argmax(1) == want.argmax(1)).all(),
              f"torch runtime: fp32 logits of {DEFAULT_MODEL} equal ONNX Runtime's "
              f"(max |diff| {float(np.abs(got - want).max()) if got.shape == want.shape else got.shape})")
        got16 = OnnxTorch(model_path, "cpu", "bf16")(x64)
        check(got16.dtype == np.float32 and (got16.argmax(1) == want.argmax(1)).mean() >= 0.9,
              "torch runtime: bf16 logits come back as float32 and mostly agree")
        sin = onnx.helper.make_model(onnx.helper.make_graph(
            [onnx.helper.make_node("Sin", ["x"], ["y"])], "g",
            [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
            [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])]))
        import tempfile
        with tempfile.TemporaryDirectory() as tmp:
            bad = os.path.join(tmp, "sin.onnx")
            onnx.save(sin, bad)
            try:
                OnnxTorch(bad)
                check(False, "torch runtime: an operator it lacks must be refused")
            except NotImplementedError as e:
                check("Sin" in str(e), f"torch runtime: the refusal names the operator: {e}")
            npz = os.path.join(tmp, "test.npz")
            np.savez(npz, X=np.round(x64 * 255).astype(np.uint8), y=y64)
            cmd = [sys.executable, os.path.abspath(__file__), "--runtime", "torch", "--provider", "cpu",
                   "--precision", "bf16", "--batches", "1,8", "--seconds", "0.05", "--threads", "1",
                   "--test-images", npz, "--price-per-hour", "0.5", "--input-on-device", "--json"]
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
            res = None
            try:
                res = json.loads(out.stdout.strip().splitlines()[-1])
            except (ValueError, IndexError):
                check(False, f"torch CPU run: last stdout line is JSON (rc {out.returncode}): "
                             f"{out.stderr.strip()[-1500:]}")
            if res is not None:
                check(out.returncode == 0 and res["kind"] == "cpu" and res["images"] == 64
                      and res["runtime_kind"] == "torch" and res["precision"] == "bf16"
                      and [r["batch"] for r in res["sweep"]] == [1, 8], "torch CPU run: kind cpu, 64 images, bf16")
                check(res["label"] is not None and "PyTorch" in res["label"] and "fashion-float bf16" in res["label"]
                      and "input on the device" in res["label"] and res["input_on_device"]
                      and res["label"].endswith(CPU_LABEL), f"torch CPU run: label {res['label']!r}")
                check(res["accuracy"] is not None and res["accuracy"] > 0.5 and "cpu-peer" in (res["record_sql"] or ""),
                      f"torch CPU run: accuracy {res['accuracy']}, a cpu-peer row")
                check("NOT A GPU FIGURE" in out.stdout, "torch CPU run: says so loudly")
        out = subprocess.run([sys.executable, os.path.abspath(__file__), "--precision", "bf16"], capture_output=True,
                             text=True, timeout=60)
        check(out.returncode == 2 and "--runtime torch" in out.stderr, "--precision bf16 without --runtime torch: usage error")
        out = subprocess.run([sys.executable, os.path.abspath(__file__), "--input-on-device"], capture_output=True,
                             text=True, timeout=60)
        check(out.returncode == 2 and "--runtime torch" in out.stderr, "--input-on-device without --runtime torch: usage error")
        print(f"  (torch runtime checks: {time.perf_counter() - t0:.1f} s)")
    print(f"gpu_baseline.py self-test: {passed[0]} passed, {failed[0]} failed")
    return 0 if failed[0] == 0 else 1


# ---------------------------------------------------------------- main

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--provider", choices=("cuda", "cpu", "auto"), default="auto",
                    help="auto (default): CUDA if the runtime has it (onnxruntime lists and loads it; torch sees a "
                         "device), else CPU (NOT a GPU figure)")
    ap.add_argument("--runtime", choices=("onnxruntime", "torch"), default="onnxruntime",
                    help="onnxruntime (default), or torch: the ONNX graph run node by node with PyTorch "
                         "(Ops/bench/onnx_torch.py), for a GPU machine whose onnxruntime has no CUDA provider")
    ap.add_argument("--precision", choices=("fp32", "tf32", "bf16"), default="fp32",
                    help="--runtime torch: fp32 (default), tf32 (TF32 matmul and convolutions) or bf16")
    ap.add_argument("--input-on-device", action="store_true",
                    help="--runtime torch: time the model alone, its input already on the device (the GPU's "
                         "ceiling, not the serving path from host memory)")
    ap.add_argument("--test-images", metavar="NPZ", default=None,
                    help="test images from an .npz (X uint8 [N, 784], y) instead of Debian's dataset-fashion-mnist")
    ap.add_argument("--batches", default=DEFAULT_BATCHES, help=f"batch sizes in order (default {DEFAULT_BATCHES})")
    ap.add_argument("--seconds", type=float, default=2.0, help="seconds per measurement (default 2)")
    ap.add_argument("--price-per-hour", type=float, default=None,
                    help="euros per GPU-instance hour; required for the euro figure and the SQL row")
    ap.add_argument("--instance", default=None, help='the instance priced, e.g. "AWS g5.xlarge"')
    ap.add_argument("--fleet-model", default=None,
                    help="the binary model the row is compared with (default: the float model's name without -float)")
    ap.add_argument("--float-model", default=DEFAULT_MODEL,
                    help="directory holding model.onnx, or the .onnx file (default Ops/models/fashion-float)")
    ap.add_argument("--images", type=int, default=None, help="use only the first N test images (default all 10 000)")
    ap.add_argument("--threads", type=int, default=0, help="intra-op threads (default 0: onnxruntime's default)")
    ap.add_argument("--device-id", type=int, default=0, help="CUDA device id (default 0)")
    ap.add_argument("--json", action="store_true", help="end stdout with one JSON line")
    ap.add_argument("--selftest", action="store_true", help="synthetic checks and a tiny CPU-provider run")
    args = ap.parse_args(argv)
    if args.selftest:
        return selftest()
    if args.price_per_hour is not None and not (math.isfinite(args.price_per_hour) and args.price_per_hour >= 0):
        ap.error("--price-per-hour must be a finite number >= 0")
    if not args.seconds > 0:
        ap.error("--seconds must be > 0")
    if args.precision != "fp32" and args.runtime != "torch":
        ap.error("--precision tf32 / bf16 needs --runtime torch (ONNX Runtime runs the fp32 graph)")
    if args.input_on_device and args.runtime != "torch":
        ap.error("--input-on-device needs --runtime torch")
    rc, res = run_benchmark(args)
    if args.json:
        print(json.dumps(res))
    return rc


if __name__ == "__main__":
    sys.exit(main())
