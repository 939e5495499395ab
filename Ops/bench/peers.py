#!/usr/bin/env python3
"""BitFleet against its peers (fp32, int8 and bf16 CPU runtimes), on this machine, in one run.

    python3 Ops/bench/peers.py [--bitfleet .build/release/bitfleet] [--model Ops/models/fashion]
                               [--float-model Ops/models/fashion-float] [--seconds 3] [--skip-accuracy] [--json]
    python3 Ops/bench/peers.py --selftest      # pure checks on synthetic figures: no timing, no peer packages
    python3 Ops/bench/peers.py --record [--quick] [--database-url URL] [--price-per-core-hour 0.05]
                               [--fleet-model fashion]
                               # also write the measured rows into bitfleet.alternatives (see "Recording" below)

(a) kernel: numpy/OpenBLAS fp32 GEMM, M x N x K = 1024 x 1024 x 4096, with 1 and 2 OpenBLAS threads, each in
    its own subprocess (OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE removed from that subprocess's environment only, so
    OpenBLAS picks its own kernel for this CPU; threadpoolctl reports which one it used), against the binary
    XNOR-popcount kernel's MAC/s from `bitfleet bench --json`.
(b) model: the float twin of the same architecture (Ops/models/fashion-float/model.onnx: sparse top-k dispatch;
    and the dense variant -- all experts, gated -- rebuilt from its weights) run by every peer, all on 1 thread,
    at batch 1 and batch 256 on real Fashion-MNIST test images, against the binary model's samples/s from
    `bitfleet bench --json --inputs` on the same test images (random bytes would route unlike real data):
      - ONNX Runtime fp32 (1 intra-op thread, sequential), sparse and dense;
      - ONNX Runtime int8: onnxruntime.quantization.quantize_dynamic of both graphs, QInt8 and QUInt8 weights;
      - OpenVINO CPU (INFERENCE_NUM_THREADS 1, NUM_STREAMS 1, PERFORMANCE_HINT LATENCY, the input reshaped to a
        static [batch, 784]) with INFERENCE_PRECISION_HINT f32, and bf16 when /proc/cpuinfo reports amx_bf16 or
        avx512_bf16; sparse and dense.
    The best peer per batch size is the one with the most samples/s; a plain 784-1024-1024-10 fp32 MLP on ONNX
    Runtime is shown for reference only (a different model, never the best peer). A peer that cannot be built or
    compiled is recorded with its error and the run goes on.
Accuracy (binary via Ops/models/reference.py, float via ONNX Runtime, and each peer's own compiled model) is
measured on the 10 000 test images.

Recording (--record): after the run, one row per peer family (ONNX Runtime fp32, ONNX Runtime int8, OpenVINO fp32,
OpenVINO bf16 where the CPU has it; the fastest graph / weight type of the family) and batch size (1 and 256) goes
into bitfleet.alternatives through bitfleet.record_alternative (kind cpu-peer, source measured, measured_at now):
the fleet model it is compared with (--fleet-model, default the --model directory's name), the float twin, the
runtime and its version, the CPU model, 1 core, samples per CPU-second of the measuring process (the same basis as
the fleet's metered CPU seconds; wall-clock samples/s is in the note) and --price-per-core-hour (default
$BITFLEET_PRICE_PER_CORE_HOUR, else 0.05, the worker's default). It runs `psql` against --database-url (default
$DATABASE_URL, else libpq's PG* variables) as a role that may execute the function (the schema owner, or a login in
bitfleet_bench). --quick measures only what is recorded (the sparse graph; QInt8 weights; no GEMM, no dense graph,
no accuracy, no bitfleet bench): with --seconds 1 it takes a few seconds per peer, for the demo.

If onnxruntime, openvino, onnx or threadpoolctl is missing, the script first runs
`python3 -m pip install -q -r Ops/bench/requirements.txt` (as Ops/setup.sh does for Ops/requirements.txt).

If the bitfleet binary is missing or its bench fails, the numpy / peer side still runs and is printed;
the script then exits with status 2 and says why (the JSON line carries "bitfleet_error").

With --json the last line of stdout is ONE JSON object: kernel_vs_fp32 (1 and 2 threads), model_vs_onnxruntime
(batch 1 and batch 256, against the best ONNX Runtime fp32 float model), peers (every peer: samples/s, samples
per CPU-second, CPU utilisation, accuracy, or its error), best_peer and model_vs_best_peer (batch1, batch256;
also per CPU-second), cpu (lscpu model name and the SIMD flags that matter here), kernel_paths (passed through
from `bitfleet bench --json` when it reports them), accuracy (binary, float, int8, openvino_f32, openvino_bf16),
weights_ratio, and the raw figures. Every throughput is also given per CPU-second the measured process actually
got (kernel_vs_fp32_per_cpu_s, model_vs_onnxruntime_per_cpu_s, model_vs_best_peer_per_cpu_s): on a machine shared
with other work the wall-clock figures of both sides are depressed by however much CPU the neighbours took at
that moment, the per-CPU-second ones much less so.
"""
import argparse
import importlib
import importlib.util
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "Ops", "models"))
from train import cpu_name  # noqa: E402  (the model tools' helper: one definition for both)

GEMM_M, GEMM_N, GEMM_K = 1024, 1024, 4096
BATCHES = ("batch1", "batch256")
REQUIREMENTS = os.path.join(ROOT, "Ops", "bench", "requirements.txt")
PEER_MODULES = ("onnxruntime", "openvino", "onnx", "threadpoolctl")
# SIMD / matrix flags that decide which kernels the peers (and bitfleet) can use
CPU_FLAGS = ("avx2", "avx512f", "avx512_vpopcntdq", "avx512_bitalg", "avx512vbmi", "avx512_vnni", "avx_vnni",
             "amx_int8", "amx_bf16", "avx512_bf16")

GEMM_CHILD = r"""
import json, sys, time
import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits
threads, seconds, M, N, K = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
rng = np.random.default_rng(0)
a = rng.standard_normal((M, K), dtype=np.float32)
b = rng.standard_normal((K, N), dtype=np.float32)
c = np.empty((M, N), np.float32)
with threadpool_limits(limits=threads, user_api="blas"):
    info = [i for i in threadpool_info() if i.get("user_api") == "blas"]
    np.matmul(a, b, out=c)
    times = []
    t_end = time.perf_counter() + seconds
    c0 = time.process_time()
    while time.perf_counter() < t_end or len(times) < 3:
        t0 = time.perf_counter()
        np.matmul(a, b, out=c)
        times.append(time.perf_counter() - t0)
    cpu = time.process_time() - c0
macs = M * N * K
runs = len(times)
wall = sum(times)
times.sort()
print(json.dumps(dict(threads=threads, best_macs_per_s=macs / times[0], median_macs_per_s=macs / times[len(times) // 2],
                      macs_per_cpu_s=macs * runs / cpu, cpu_utilisation=cpu / wall / threads,
                      runs=runs, blas=[dict(internal_api=i.get("internal_api"), version=i.get("version"),
                      architecture=i.get("architecture"), num_threads=i.get("num_threads"),
                      filepath=i.get("filepath")) for i in info])))
"""


def numpy_gemm(threads, seconds):
    env = dict(os.environ)
    removed = {k: env.pop(k) for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE") if k in env}
    for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env[k] = str(threads)
    out = subprocess.run([sys.executable, "-c", GEMM_CHILD, str(threads), str(seconds),
                          str(GEMM_M), str(GEMM_N), str(GEMM_K)], env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"numpy GEMM subprocess failed: {out.stderr.strip()[-2000:]}")
    res = json.loads(out.stdout.strip().splitlines()[-1])
    res["env_removed"] = removed
    return res


def load_test():
    from train import load_fashion
    _, _, xte, yte = load_fashion()
    return xte, yte


def ort_session(path_or_model, threads=1):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    src = path_or_model if isinstance(path_or_model, str) else path_or_model.SerializeToString()
    return ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])


def time_fn(run, x, batch, seconds):
    """(samples/s, samples per CPU-second) for back-to-back run(chunk) calls of `batch` rows, cycling through x.
    The same loop times every peer."""
    n = len(x) // batch
    chunks = [np.ascontiguousarray(x[i * batch:(i + 1) * batch]) for i in range(min(n, 64))]
    for c in chunks[:3]:
        run(c)
    done = 0
    i = 0
    t0 = time.perf_counter()
    c0 = time.process_time()
    while True:
        run(chunks[i % len(chunks)])
        done += batch
        i += 1
        el = time.perf_counter() - t0
        if el >= seconds and i >= 3:
            cpu = time.process_time() - c0
            return done / el, done / cpu


def ort_runner(sess):
    name = sess.get_inputs()[0].name
    return lambda c: sess.run(None, {name: c})[0]


def time_ort(sess, x, batch, seconds):
    """samples/s for back-to-back calls of `batch` rows, cycling through x."""
    return time_fn(ort_runner(sess), x, batch, seconds)


def ort_rows(sess, x, seconds):
    wall, cpu = {}, {}
    for b in (1, 256):
        wall[f"batch{b}"], cpu[f"batch{b}"] = time_ort(sess, x, b, seconds)
    return wall, cpu


def plain_mlp():
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(0)
    dims = [784, 1024, 1024, 10]
    nodes, inits, cur = [], [], "x"
    for l in range(3):
        inits.append(numpy_helper.from_array(
            (rng.standard_normal((dims[l], dims[l + 1])) / np.sqrt(dims[l])).astype(np.float32), f"W{l}"))
        inits.append(numpy_helper.from_array(np.zeros(dims[l + 1], np.float32), f"b{l}"))
        nodes.append(helper.make_node("Gemm", [cur, f"W{l}", f"b{l}"], [f"g{l}"]))
        cur = f"g{l}"
        if l < 2:
            nodes.append(helper.make_node("Relu", [cur], [f"r{l}"]))
            cur = f"r{l}"
    nodes.append(helper.make_node("Identity", [cur], ["logits"]))
    g = helper.make_graph(nodes, "mlp_784_1024_1024_10",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 784])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    m.ir_version = 9
    return m


def dense_from_sparse(path, out_path):
    """Rebuild the dense-dispatch ONNX graph (train.export_onnx mode "dense") from model.onnx's initializers,
    so only the sparse graph needs to be committed. A float twin with a conv front (bitfleet_torch's
    export_float_onnx: Conv, Relu, MaxPool, Flatten before the stem or the router, with a second Conv, Relu, MaxPool
    for a conv2 block) keeps that front."""
    import onnx
    from onnx import helper, numpy_helper
    from train import export_onnx
    m = onnx.load(path)
    w = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    E = sum(1 for k in w if k.startswith("Wo_"))
    L = sum(1 for k in w if k.startswith("W") and k.endswith("_0") and not k.startswith("Wo_"))
    k = int(w["k"][0])
    stem = "stem_Wt" in w
    fl = dict(stem_W=w["stem_Wt"].T if stem else None, stem_b=w["stem_b"] if stem else None,
              router_W=w["router_Wt"].T, router_b=w["router_b"],
              hid_W=[np.stack([w[f"W{l}_{e}"].T for e in range(E)]) for l in range(L)],
              hid_b=[np.stack([w[f"b{l}_{e}"] for e in range(E)]) for l in range(L)],
              out_W=np.stack([w[f"Wo_{e}"].T for e in range(E)]), out_b=np.stack([w[f"bo_{e}"] for e in range(E)]))
    if "conv_W" not in w:
        export_onnx(fl, k, out_path, "dense")
        return out_path
    from bitfleet_torch import export_float_onnx

    def attrs(op, output):
        node = next((n for n in m.graph.node if n.op_type == op and output in n.output), None)
        return None if node is None else {a.name: helper.get_attribute_value(a) for a in node.attribute}
    conv, pool = attrs("Conv", "conv_pre"), attrs("MaxPool", "conv_pool")
    _, _, H, W = (int(v) for v in w["conv_in_shape"])
    fl.update(conv_W=w["conv_W"], conv_b=w["conv_b"], input_shape=[H, W],
              conv=dict(channels=int(w["conv_W"].shape[0]), kernel=int(conv["kernel_shape"][0]),
                        stride=int(conv["strides"][0]), padding=int(conv["pads"][0]),
                        pool=int(pool["kernel_shape"][0]) if pool else 1))
    if "conv2_W" in w:   # a second conv (format v4 float twin): Conv -> Relu [-> MaxPool] after the first
        conv2, pool2 = attrs("Conv", "conv2_pre"), attrs("MaxPool", "conv2_pool")
        fl.update(conv2_W=w["conv2_W"], conv2_b=w["conv2_b"],
                  conv2=dict(channels=int(w["conv2_W"].shape[0]), kernel=int(conv2["kernel_shape"][0]),
                             stride=int(conv2["strides"][0]), pool=int(pool2["kernel_shape"][0]) if pool2 else 1))
    export_float_onnx(fl, k, out_path, H * W, "dense")
    return out_path


def onnx_weight_bytes(path):
    import onnx
    m = onnx.load(path)
    return sum(int(np.prod(t.dims)) * 4 for t in m.graph.initializer if t.data_type == 1 and np.prod(t.dims) > 1)


def find_number(obj, *needles, exclude=()):
    """First numeric leaf whose dotted key path contains all needles (case-insensitive) and no excluded word."""
    def walk(o, path):
        if isinstance(o, dict):
            for k, v in o.items():
                yield from walk(v, path + [str(k)])
        elif isinstance(o, list):
            for i, v in enumerate(o):
                if isinstance(v, dict):
                    # lists of {batch: n, ...} records: put the batch into the path
                    tag = next((f"batch{v[k]}" for k in ("batch", "batch_size") if k in v), str(i))
                    yield from walk(v, path + [tag])
                else:
                    yield from walk(v, path + [str(i)])
        elif isinstance(o, (int, float)) and not isinstance(o, bool):
            yield ".".join(path).lower(), float(o)
    for key, val in walk(obj, []):
        if all(n.lower() in key for n in needles) and not any(x.lower() in key for x in exclude):
            return key, val
    return None, None


def figures_from_bench(bj):
    """Pick the figures out of `bitfleet bench --json` (BenchCommand.Report: kernel[] rows with threads and
    macsPerSecond, models[] rows with batch, threads and samplesPerSecond); other layouts by key search."""
    figs = {}
    for row in bj.get("kernel", []) if isinstance(bj.get("kernel"), list) else []:
        t = row.get("threads")
        if t in (1, 2) and "macsPerSecond" in row:
            figs[f"kernel_macs_per_s_{t}thread{'s' if t > 1 else ''}"] = float(row["macsPerSecond"])
            figs[f"kernel_macs_per_s_{t}thread{'s' if t > 1 else ''}_key"] = f"kernel[threads={t}].macsPerSecond"
            if "macsPerCPUCycle" in row and bj.get("clockHz"):
                figs[f"kernel_macs_per_cpu_s_{t}thread{'s' if t > 1 else ''}"] = \
                    float(row["macsPerCPUCycle"]) * float(bj["clockHz"])
    for row in bj.get("models", []) if isinstance(bj.get("models"), list) else []:
        b, t = row.get("batch"), row.get("threads")
        if "samplesPerSecond" not in row:
            continue
        lab = f"model_samples_per_s_batch{b}" + ("" if t == 1 else f"_{t}threads")
        figs[lab] = float(row["samplesPerSecond"])
        if "samplesPerCPUSecond" in row and t == 1:
            figs[f"model_samples_per_cpu_s_batch{b}"] = float(row["samplesPerCPUSecond"])
        figs[lab + "_key"] = f"models[batch={b},threads={t}].samplesPerSecond"
    paired = bj.get("threadScalingPaired")
    if isinstance(paired, dict) and "median" in paired:
        # 2 threads ÷ 1 thread at batch 256 from interleaved rounds (robust to the host's drift)
        figs["model_thread_scaling_batch256_paired"] = float(paired["median"])
        figs["model_thread_scaling_batch256_paired_range"] = [float(paired["low"]), float(paired["high"])]
    for label, needles, exclude in (
            ("kernel_macs_per_s_1thread", ("kernel", "mac", "1"), ("2",)),
            ("kernel_macs_per_s_2threads", ("kernel", "mac", "2"), ()),
            ("model_samples_per_s_batch1", ("sample", "batch1"), ("batch1024", "batch128", "batch16")),
            ("model_samples_per_s_batch256", ("sample", "256"), ())):
        if label not in figs:
            key, val = find_number(bj, *needles, exclude=exclude)
            if val is not None:
                figs[label], figs[label + "_key"] = val, key
    return figs


def ensure_packages():
    """Install the peer runtimes like Ops/setup.sh does: only when one is missing; never fatal here (a peer that
    still cannot be imported is reported as failed)."""
    missing = [m for m in PEER_MODULES if importlib.util.find_spec(m) is None]
    if not missing:
        return None
    print(f"peers.py: missing {', '.join(missing)}; python3 -m pip install -q -r {os.path.relpath(REQUIREMENTS)}",
          file=sys.stderr)
    out = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-r", REQUIREMENTS],
                         capture_output=True, text=True)
    importlib.invalidate_caches()
    if out.returncode != 0:
        msg = f"pip install -r {REQUIREMENTS} failed ({out.returncode}): {out.stderr.strip()[-800:]}"
        print(f"peers.py: {msg}", file=sys.stderr)
        return msg
    return None


def parse_cpu(lscpu_text, cpuinfo_text):
    """CPU model name (lscpu "Model name", else /proc/cpuinfo "model name") and the CPU_FLAGS it reports."""
    model, flags = None, None
    for line in (lscpu_text or "").splitlines():
        key, _, val = line.partition(":")
        if key.strip() == "Model name" and model is None:
            model = val.strip()
        elif key.strip() == "Flags" and flags is None:
            flags = set(val.split())
    for line in (cpuinfo_text or "").splitlines():
        key, _, val = line.partition(":")
        if key.strip() == "model name" and model is None:
            model = val.strip()
        elif key.strip() in ("flags", "Features") and flags is None:
            flags = set(val.split())
    flags = flags or set()
    have = {f: f in flags for f in CPU_FLAGS}
    return dict(model=model or platform.processor() or "unknown", flags=have,
                present=[f for f in CPU_FLAGS if have[f]], bf16=have["amx_bf16"] or have["avx512_bf16"])


def cpu_info():
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=20,
                               env=dict(os.environ, LC_ALL="C")).stdout
    except (OSError, subprocess.SubprocessError):
        lscpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            cpuinfo = f.read()
    except OSError:
        cpuinfo = ""
    return parse_cpu(lscpu, cpuinfo)


def find_kernel_paths(bj):
    """(dotted key, value) of the kernel paths `bitfleet bench --json` reports, passed through as is: a key named
    kernel_paths / kernelPaths (preferred), else paths / kernels; (None, None) when the bench does not report them.
    ("kernel", the list of GEMM rows, is not it.)"""
    found = {}

    def walk(o, path):
        if isinstance(o, dict):
            for k, v in o.items():
                norm = str(k).lower().replace("_", "").replace("-", "")
                if norm in ("kernelpaths", "paths", "kernels") and norm not in found:
                    found[norm] = (".".join(path + [str(k)]), v)
                walk(v, path + [str(k)])
        elif isinstance(o, list):
            for i, v in enumerate(o):
                walk(v, path + [str(i)])
    walk(bj, [])
    for norm in ("kernelpaths", "paths", "kernels"):
        if norm in found:
            return found[norm]
    return None, None


def peer_record(label, engine, precision, graph):
    return dict(label=label, engine=engine, precision=precision, graph=graph,
                samples_per_s={}, samples_per_cpu_s={}, cpu_utilisation={})


def measure_peer(rec, make_run, x, seconds):
    """Time one peer at batch 1 and 256; make_run(batch) returns run(chunk) -> logits. Errors are recorded per
    batch size (rec["errors"]) and never raised. Returns {batch: run} for the batch sizes that worked."""
    runs = {}
    for b in (1, 256):
        key = f"batch{b}"
        try:
            run = make_run(b)
            wall, cpu = time_fn(run, x, b, seconds)
            rec["samples_per_s"][key], rec["samples_per_cpu_s"][key] = wall, cpu
            rec["cpu_utilisation"][key] = wall / cpu if cpu else None  # CPU-seconds per wall second: ~1 on 1 thread
            runs[key] = (b, run)
        except Exception as e:  # noqa: BLE001 - record and go on
            rec.setdefault("errors", {})[key] = f"{type(e).__name__}: {str(e).strip()[:1500]}"
    return runs


def peer_accuracy(rec, runs, x, y):
    """Accuracy of the peer's own compiled model (the batch-256 one; static shapes are padded)."""
    if not runs:
        return
    b, run = runs.get("batch256") or runs.get("batch1")
    try:
        preds = []
        for i in range(0, len(x), b):
            c = x[i:i + b]
            n = len(c)
            if n < b:
                c = np.concatenate([c, np.zeros((b - n, c.shape[1]), c.dtype)])
            preds.append(np.asarray(run(np.ascontiguousarray(c)))[:n].argmax(1))
        rec["accuracy"] = float((np.concatenate(preds) == y).mean())
    except Exception as e:  # noqa: BLE001
        rec.setdefault("errors", {})["accuracy"] = f"{type(e).__name__}: {str(e).strip()[:1500]}"


def quantize_int8(src, dst, weight_type):
    from onnxruntime.quantization import QuantType, quantize_dynamic
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # quantize_dynamic logs a "consider pre-processing" warning on every call
    try:
        quantize_dynamic(src, dst, weight_type=getattr(QuantType, weight_type))
    finally:
        root.setLevel(level)
    return dst


def openvino_maker(core, path, precision):
    """make_run(batch) for OpenVINO: read the ONNX model, reshape its input to a static [batch, 784] (the dense
    graph does not compile with a dynamic batch), compile for CPU on 1 thread, 1 stream."""
    def make_run(batch):
        m = core.read_model(path)
        m.reshape({m.inputs[0].get_any_name(): [batch, 784]})
        cm = core.compile_model(m, "CPU", {"INFERENCE_NUM_THREADS": 1, "NUM_STREAMS": 1,
                                           "PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": precision})
        req = cm.create_infer_request()
        return lambda c: req.infer({0: c}, share_inputs=True)[0]
    return make_run


def summarize_peers(peers, figs):
    """best_peer / model_vs_best_peer from the measured peers (pure: used by --selftest).
    peers: {name: {samples_per_s: {batch1, batch256}, samples_per_cpu_s: {...}, ...}} (missing or None figures,
    e.g. of a failed peer, are ignored); figs: figures_from_bench()."""
    out = dict(best_peer={}, model_vs_best_peer={}, best_peer_per_cpu_s={}, model_vs_best_peer_per_cpu_s={})
    for field, best_key, ratio_key, fig in (
            ("samples_per_s", "best_peer", "model_vs_best_peer", "model_samples_per_s_{}"),
            ("samples_per_cpu_s", "best_peer_per_cpu_s", "model_vs_best_peer_per_cpu_s",
             "model_samples_per_cpu_s_{}")):
        for b in BATCHES:
            cands = [(rec[field][b], name) for name, rec in peers.items()
                     if isinstance(rec.get(field), dict) and isinstance(rec[field].get(b), (int, float))
                     and rec[field][b] > 0]
            if not cands:
                out[best_key][b] = None
                continue
            val, name = max(cands)
            out[best_key][b] = {"name": name, field: val}
            if fig.format(b) in figs:
                out[ratio_key][b] = figs[fig.format(b)] / val
    return out


def paired_summary(ratios):
    """median, low and high of per-round ratios (pure: used by --selftest)."""
    r = sorted(ratios)
    n = len(r)
    if n == 0:
        return None
    median = r[n // 2] if n % 2 else (r[n // 2 - 1] + r[n // 2]) / 2
    return {"median": median, "low": r[0], "high": r[-1], "rounds": n}


def paired_vs_best_peer(a, best, peer_runs, x, inputs, rounds, seconds):
    """BitFleet against the best peer of each batch size in interleaved rounds: each round times `bitfleet bench`
    (model only, 1 thread) and the peer back to back, alternating which goes first, so both see the same moment
    of a host whose speed drifts by tens of percent within a minute. One ratio per round; the median is the
    figure. Returns {batch: {peer, median, low, high, rounds, ratios}}."""
    out = {}
    todo = [(b, best[b]["name"]) for b in BATCHES if best.get(b) and best[b]["name"] in peer_runs
            and b in peer_runs[best[b]["name"]]]
    if not todo or rounds <= 0:
        return out
    per = {b: [] for b, _ in todo}
    for r in range(rounds):
        def ours():
            _, bj = bitfleet_bench(a.bitfleet, a.model, a.bench_timeout, seconds, inputs=inputs, model_only=True)
            return figures_from_bench(bj)
        def theirs():
            return {b: time_fn(peer_runs[name][b][1], x, peer_runs[name][b][0], seconds)[0] for b, name in todo}
        if r % 2 == 0:
            figs, peer = ours(), theirs()
        else:
            peer, figs = theirs(), ours()
        for b, _ in todo:
            mine = figs.get(f"model_samples_per_s_{b}")
            if mine and peer.get(b):
                per[b].append(mine / peer[b])
    for b, name in todo:
        summary = paired_summary(per[b])
        if summary:
            out[b] = dict(summary, peer=name, ratios=per[b], seconds_per_measurement=seconds)
    return out


def bitfleet_bench(binary, model, timeout, seconds, inputs=None, model_only=False):
    """`bitfleet bench --json`; `inputs` (uint8 samples × 784) are the real test images the peers run on, written
    to a temporary .npy for `--inputs` (random bytes route to a few experts only, which would flatter the engine)."""
    if not os.path.exists(binary):
        raise RuntimeError(f"bitfleet binary not found at {binary} (build it: Ops/build.sh, or pass --bitfleet)")
    cmd = [binary, "bench", "--json", "--model", model, "--m", str(GEMM_M), "--n", str(GEMM_N), "--k", str(GEMM_K),
           "--threads", "1" if model_only else "1,2", "--seconds", str(seconds)] + (["--skip-kernel"] if model_only else [])
    with tempfile.TemporaryDirectory(prefix="peers-inputs-") as tmp:
        if inputs is not None:
            path = os.path.join(tmp, "test-images.npy")
            np.save(path, np.ascontiguousarray(inputs, dtype=np.uint8))
            cmd += ["--inputs", path]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError(f"`{' '.join(cmd)}` failed ({out.returncode}): {out.stderr.strip()[-1500:]}")
    text = out.stdout.strip()
    try:
        return " ".join(cmd), json.loads(text[text.index("{"):])  # pretty-printed JSON object
    except ValueError:
        lines = [l for l in text.splitlines() if l.strip().startswith("{")]
        if not lines:
            raise RuntimeError(f"`{' '.join(cmd)}` printed no JSON object")
        return " ".join(cmd), json.loads(lines[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bitfleet", default=os.path.join(ROOT, ".build", "release", "bitfleet"))
    ap.add_argument("--model", default=os.path.join(ROOT, "Ops", "models", "fashion"))
    ap.add_argument("--float-model", default=os.path.join(ROOT, "Ops", "models", "fashion-float"))
    ap.add_argument("--seconds", type=float, default=3.0, help="time per measurement")
    ap.add_argument("--bench-timeout", type=float, default=900)
    ap.add_argument("--skip-accuracy", action="store_true")
    ap.add_argument("--paired-rounds", type=int, default=7,
                    help="rounds of BitFleet against the best peer back to back, per batch size (0 skips)")
    ap.add_argument("--json", action="store_true", help="end with one JSON line")
    ap.add_argument("--selftest", "--self-test", action="store_true",
                    help="check best-peer selection and the JSON keys on synthetic figures (no timing) and exit")
    ap.add_argument("--record", action="store_true",
                    help="write the measured rows into bitfleet.alternatives (psql, --database-url)")
    ap.add_argument("--quick", action="store_true",
                    help="with --record: measure only the recorded peers (sparse graph, QInt8), nothing else")
    ap.add_argument("--database-url", default=os.environ.get("DATABASE_URL"),
                    help="where --record writes (default $DATABASE_URL, else libpq's PG* variables)")
    ap.add_argument("--price-per-core-hour", type=float,
                    default=float(os.environ.get("BITFLEET_PRICE_PER_CORE_HOUR") or 0.05),
                    help="euros per core-hour of this server, for the recorded rows (default 0.05)")
    ap.add_argument("--fleet-model", default=None,
                    help="the fleet's name of the binary model the rows compare with (default: --model's directory name)")
    a = ap.parse_args()
    if a.selftest:
        return selftest()
    if a.quick and not a.record:
        ap.error("--quick only applies with --record")
    if a.price_per_core_hour <= 0:
        ap.error("--price-per-core-hour must be positive")
    if a.record and a.quick:
        return quick_record(a)

    install_error = ensure_packages()
    cpu = cpu_info()
    res = dict(machine=dict(cpu=cpu_name(), cores=os.cpu_count(), python=platform.python_version(),
                            numpy=np.__version__), cpu=cpu)
    if install_error:
        res["install_error"] = install_error
    # ---------------------------------------------------------------- numpy GEMM
    res["numpy_gemm"] = {}
    for t in (1, 2):
        r = numpy_gemm(t, a.seconds)
        res["numpy_gemm"][f"threads{t}"] = r
    # ---------------------------------------------------------------- ONNX Runtime fp32
    import onnxruntime as ort
    res["machine"]["onnxruntime"] = ort.__version__
    xte, yte = load_test()
    xf = (xte.astype(np.float32) / np.float32(255.0))
    ortres, ortcpu = {}, {}
    tmp = tempfile.TemporaryDirectory()
    sparse = os.path.join(a.float_model, "model.onnx")
    graphs = {}  # "sparse" / "dense" -> float ONNX path
    peers = {}
    peer_runs = {}
    if os.path.exists(sparse):
        graphs["sparse"] = sparse
        try:
            graphs["dense"] = dense_from_sparse(sparse, os.path.join(tmp.name, "dense.onnx"))
        except Exception as e:  # noqa: BLE001
            peers["ort_fp32_dense"] = dict(peer_record("ORT fp32 MoE, dense", "onnxruntime", "fp32", "dense"),
                                           errors={"build": f"{type(e).__name__}: {e}"})
        for graph, fname in (("sparse", "model.onnx"), ("dense", "model_dense.onnx")):
            if graph not in graphs:
                continue
            name = f"ort_fp32_{graph}"
            rec = peers[name] = peer_record(f"ORT fp32 MoE, {graph}", "onnxruntime", "fp32", graph)
            s = ort_session(graphs[graph])
            peer_runs[name] = measure_peer(rec, lambda b, s=s: ort_runner(s), xf, a.seconds)
            if rec["samples_per_s"].keys() >= set(BATCHES):
                ortres[fname], ortcpu[fname] = rec["samples_per_s"], rec["samples_per_cpu_s"]
    else:
        print(f"peers.py: no float model at {sparse} (train.py --float --out {a.float_model})", file=sys.stderr)
    s = ort_session(plain_mlp())
    ortres["mlp_784_1024_1024_10"], ortcpu["mlp_784_1024_1024_10"] = ort_rows(s, xf, a.seconds)
    res["onnxruntime_samples_per_s"] = ortres
    res["onnxruntime_samples_per_cpu_s"] = ortcpu
    moe = {k: v for k, v in ortres.items() if k.startswith("model")}
    best = {b: max((v[b] for v in moe.values()), default=None) for b in BATCHES}
    res["onnxruntime_float_moe_best"] = best
    moec = {k: v for k, v in ortcpu.items() if k.startswith("model")}
    bestc = {b: max((v[b] for v in moec.values()), default=None) for b in BATCHES}
    res["onnxruntime_float_moe_best_per_cpu_s"] = bestc
    # ---------------------------------------------------------------- ONNX Runtime int8 (dynamic quantization)
    for wt in ("QInt8", "QUInt8"):
        for graph, path in graphs.items():
            name = f"ort_int8_{wt.lower()}_{graph}"
            rec = peers[name] = peer_record(f"ORT int8 ({wt} weights) MoE, {graph}", "onnxruntime",
                                            f"int8 dynamic ({wt} weights, uint8 activations)", graph)
            try:
                q = quantize_int8(path, os.path.join(tmp.name, f"{graph}_{wt}.onnx"), wt)
                s = ort_session(q)
            except Exception as e:  # noqa: BLE001
                rec["errors"] = {"build": f"{type(e).__name__}: {str(e).strip()[:1500]}"}
                continue
            peer_runs[name] = measure_peer(rec, lambda b, s=s: ort_runner(s), xf, a.seconds)
    # ---------------------------------------------------------------- OpenVINO (f32; bf16 where the CPU has it)
    precisions = ["f32"] + (["bf16"] if cpu["bf16"] else [])
    if not cpu["bf16"]:
        res["openvino_bf16_skipped"] = "the CPU reports neither amx_bf16 nor avx512_bf16"
    try:
        import openvino as ov
        core = ov.Core()
        res["machine"]["openvino"] = ov.__version__
        try:
            res["machine"]["openvino_cpu_capabilities"] = list(core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
        except Exception:  # noqa: BLE001
            pass
        ov_error = None
    except Exception as e:  # noqa: BLE001
        core, ov_error = None, f"{type(e).__name__}: {e}"
    for prec in precisions:
        for graph, path in graphs.items():
            name = f"openvino_{prec}_{graph}"
            rec = peers[name] = peer_record(f"OpenVINO {prec} MoE, {graph}", "openvino", prec, graph)
            if core is None:
                rec["errors"] = {"build": ov_error}
                continue
            peer_runs[name] = measure_peer(rec, openvino_maker(core, path, prec), xf, a.seconds)
    res["peers"] = peers
    res["peer_errors"] = {k: v["errors"] for k, v in peers.items() if v.get("errors")}
    # ---------------------------------------------------------------- accuracy + sizes
    acc = {}
    if not a.skip_accuracy:
        from reference import forward, load_model
        m = load_model(a.model)
        logits = np.concatenate([forward(m, xte[i:i + 2000])["logits"] for i in range(0, len(xte), 2000)])
        acc["binary"] = float((logits.argmax(1) == yte).mean())
        fpath = os.path.join(a.float_model, "model.onnx")
        if os.path.exists(fpath):
            fl = ort_session(fpath, 2).run(None, {"x": xf})[0]
            acc["float"] = float((fl.argmax(1) == yte).mean())
        for name, runs in peer_runs.items():
            peer_accuracy(peers[name], runs, xf, yte)
        # one figure per kind: the accuracy of that kind's fastest peer (batch 256)
        for kind, prefix in (("int8", "ort_int8_"), ("openvino_f32", "openvino_f32_"),
                             ("openvino_bf16", "openvino_bf16_")):
            cands = [(v["samples_per_s"].get("batch256", 0), k) for k, v in peers.items()
                     if k.startswith(prefix) and "accuracy" in v]
            if cands:
                k = max(cands)[1]
                acc[kind], acc[kind + "_peer"] = peers[k]["accuracy"], k
    res["accuracy"] = acc
    st = os.path.join(a.model, "model.safetensors")
    fpath = os.path.join(a.float_model, "model.onnx")
    if os.path.exists(st) and os.path.exists(fpath):
        res["binary_model_bytes"] = os.path.getsize(st)
        res["float_weight_bytes"] = onnx_weight_bytes(fpath)
        res["weights_ratio"] = res["float_weight_bytes"] / res["binary_model_bytes"]
    # ---------------------------------------------------------------- bitfleet
    err = None
    try:
        cmd, bj = bitfleet_bench(a.bitfleet, a.model, a.bench_timeout, a.seconds, inputs=xte[:1024])
        res["bitfleet_command"] = cmd
        res["bitfleet_bench"] = bj
        figs = figures_from_bench(bj)
        res["bitfleet_figures"] = figs
    except Exception as e:  # noqa: BLE001 - report and keep the peer side
        err = str(e)
        res["bitfleet_error"] = err
        bj, figs = {}, {}
    key, paths = find_kernel_paths(bj)
    res["kernel_paths"] = paths
    res["kernel_paths_key"] = key
    # ---------------------------------------------------------------- ratios
    res.update(ratios(res, figs))
    res.update(summarize_peers(peers, figs))
    if figs and a.paired_rounds > 0:
        try:
            res["paired_vs_best_peer"] = paired_vs_best_peer(a, res["best_peer"], peer_runs, xf, xte[:1024],
                                                             a.paired_rounds, max(0.25, a.seconds / 4))
        except Exception as e:  # noqa: BLE001 - the single-shot figures stand
            res["paired_vs_best_peer_error"] = str(e)

    print_table(res, figs)
    record_error = None
    if a.record:
        try:
            res["recorded"] = record(a, peers, cpu, res["machine"])
        except Exception as e:  # noqa: BLE001 - the measurement is still printed
            record_error = res["record_error"] = str(e)
    if a.json:
        print(json.dumps(res, separators=(",", ":")))
    if record_error:
        print(f"peers.py: --record failed: {record_error}", file=sys.stderr)
        return 2
    if err:
        print(f"peers.py: bitfleet side missing: {err}", file=sys.stderr)
        return 2
    return 0


def ratios(res, figs):
    """kernel_vs_fp32 and model_vs_onnxruntime (fp32 float MoE on ONNX Runtime), wall clock and per CPU-second."""
    g = res["numpy_gemm"]
    best, bestc = res["onnxruntime_float_moe_best"], res["onnxruntime_float_moe_best_per_cpu_s"]
    mlp = res["onnxruntime_samples_per_s"].get("mlp_784_1024_1024_10", {})
    out = {}
    kv = {}
    for t, lab in ((1, "kernel_macs_per_s_1thread"), (2, "kernel_macs_per_s_2threads")):
        if lab in figs:
            kv[f"threads{t}"] = figs[lab] / g[f"threads{t}"]["best_macs_per_s"]
    out["kernel_vs_fp32"] = kv
    mv = {}
    for b in BATCHES:
        lab = f"model_samples_per_s_{b}"
        if lab in figs and best.get(b):
            mv[b] = figs[lab] / best[b]
            if mlp.get(b):
                mv[b + "_vs_mlp"] = figs[lab] / mlp[b]
    out["model_vs_onnxruntime"] = mv
    # the same ratios per CPU-second actually used (robust when other processes share the cores)
    kc = {}
    for t, lab in ((1, "kernel_macs_per_cpu_s_1thread"), (2, "kernel_macs_per_cpu_s_2threads")):
        if lab in figs:
            kc[f"threads{t}"] = figs[lab] / g[f"threads{t}"]["macs_per_cpu_s"]
    out["kernel_vs_fp32_per_cpu_s"] = kc
    mc = {}
    for b in BATCHES:
        lab = f"model_samples_per_cpu_s_{b}"
        if lab in figs and bestc.get(b):
            mc[b] = figs[lab] / bestc[b]
    out["model_vs_onnxruntime_per_cpu_s"] = mc
    return out


def fmt(v, unit=""):
    if v is None:
        return "-"
    for s, d in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(v) >= d:
            return f"{v / d:.2f} {s}{unit}"
    return f"{v:.1f} {unit}"


def print_table(res, figs):
    g = res["numpy_gemm"]
    cpu = res.get("cpu", {})
    print(f"CPU: {cpu.get('model', res['machine']['cpu'])}")
    print(f"  flags: {' '.join(f if cpu.get('flags', {}).get(f) else '-' + f for f in CPU_FLAGS)}")
    print(f"machine: {res['machine']['cores']} cores, numpy {res['machine']['numpy']}, "
          f"onnxruntime {res['machine'].get('onnxruntime')}, openvino {res['machine'].get('openvino')}")
    for t in (1, 2):
        b = g[f"threads{t}"]["blas"]
        b0 = b[0] if b else {}
        print(f"  numpy BLAS ({t} thread{'s' if t > 1 else ''}): {b0.get('internal_api')} {b0.get('version')} "
              f"kernel={b0.get('architecture')} num_threads={b0.get('num_threads')} "
              f"(removed from env: {list(g[f'threads{t}']['env_removed']) or 'nothing'})")
    print()
    print(f"{'kernel (1024x1024x4096)':40s} {'1 thread':>14s} {'2 threads':>14s}")
    print(f"{'numpy/OpenBLAS fp32 GEMM MAC/s':40s} {fmt(g['threads1']['best_macs_per_s']):>14s} "
          f"{fmt(g['threads2']['best_macs_per_s']):>14s}")
    print(f"{'numpy/OpenBLAS fp32 MAC per CPU-second':40s} {fmt(g['threads1']['macs_per_cpu_s']):>14s} "
          f"{fmt(g['threads2']['macs_per_cpu_s']):>14s}")
    print(f"{'bitfleet binary GEMM MAC/s':40s} {fmt(figs.get('kernel_macs_per_s_1thread')):>14s} "
          f"{fmt(figs.get('kernel_macs_per_s_2threads')):>14s}")
    print(f"{'bitfleet binary MAC per CPU-second':40s} {fmt(figs.get('kernel_macs_per_cpu_s_1thread')):>14s} "
          f"{fmt(figs.get('kernel_macs_per_cpu_s_2threads')):>14s}")
    kv = res["kernel_vs_fp32"]
    print(f"{'ratio (bitfleet / fp32), wall clock':40s} {kv.get('threads1', float('nan')):>13.1f}x "
          f"{kv.get('threads2', float('nan')):>13.1f}x")
    kc = res["kernel_vs_fp32_per_cpu_s"]
    print(f"{'ratio (bitfleet / fp32), per CPU-second':40s} {kc.get('threads1', float('nan')):>13.1f}x "
          f"{kc.get('threads2', float('nan')):>13.1f}x")
    print()
    print(f"{'model samples/s':40s} {'batch 1':>14s} {'batch 256':>14s}")
    names = {"model.onnx": "ORT float MoE, sparse top-k (1 thr)", "model_dense.onnx": "ORT float MoE, dense (1 thr)",
             "mlp_784_1024_1024_10": "ORT fp32 MLP 784-1024-1024-10 (1 thr)"}
    for k, v in res["onnxruntime_samples_per_s"].items():
        print(f"{names.get(k, k):40s} {v['batch1']:>14.0f} {v['batch256']:>14.0f}")
    print(f"{'bitfleet binary MoE':40s} {figs.get('model_samples_per_s_batch1', float('nan')):>14.0f} "
          f"{figs.get('model_samples_per_s_batch256', float('nan')):>14.0f}")
    mv = res["model_vs_onnxruntime"]
    print(f"{'ratio (bitfleet / best ORT float MoE)':40s} {mv.get('batch1', float('nan')):>13.2f}x "
          f"{mv.get('batch256', float('nan')):>13.2f}x")
    cpu = res["onnxruntime_samples_per_cpu_s"]
    for k, v in cpu.items():
        short = {"model.onnx": "ORT MoE sparse", "model_dense.onnx": "ORT MoE dense", "mlp_784_1024_1024_10": "ORT MLP"}
        print(f"{short.get(k, k) + ' samples per CPU-second':40s} {v['batch1']:>14.0f} {v['batch256']:>14.0f}")
    print(f"{'bitfleet MoE samples per CPU-second':40s} {figs.get('model_samples_per_cpu_s_batch1', float('nan')):>14.0f} "
          f"{figs.get('model_samples_per_cpu_s_batch256', float('nan')):>14.0f}")
    mc = res["model_vs_onnxruntime_per_cpu_s"]
    print(f"{'ratio per CPU-second':40s} {mc.get('batch1', float('nan')):>13.2f}x "
          f"{mc.get('batch256', float('nan')):>13.2f}x")
    if "model_thread_scaling_batch256_paired" in figs:
        lo, hi = figs["model_thread_scaling_batch256_paired_range"]
        print(f"bitfleet batch 256, 2 threads / 1 thread (interleaved rounds): median "
              f"{figs['model_thread_scaling_batch256_paired']:.2f}x (rounds {lo:.2f}-{hi:.2f}x)")
    print()
    print_peers(res, figs)
    print()
    acc = res.get("accuracy", {})
    if acc:
        print(f"test accuracy: binary {acc.get('binary', float('nan')) * 100:.2f}%  "
              f"float {acc.get('float', float('nan')) * 100:.2f}%  "
              + "  ".join(f"{k} {acc[k] * 100:.2f}%" for k in ("int8", "openvino_f32", "openvino_bf16") if k in acc))
    if "weights_ratio" in res:
        print(f"weights: binary {res['binary_model_bytes']} bytes, float fp32 {res['float_weight_bytes']} bytes "
              f"-> {res['weights_ratio']:.1f}x smaller")
    if figs:
        print("bitfleet figures read from: " + ", ".join(f"{k[:-4]} <- {v}" for k, v in figs.items()
                                                         if k.endswith("_key")))
    if res.get("kernel_paths_key"):
        print(f"bitfleet kernel paths ({res['kernel_paths_key']}): {json.dumps(res.get('kernel_paths'))}")
    elif "bitfleet_bench" in res:
        print("bitfleet kernel paths: not reported by this bitfleet build (no kernel_paths key in its bench JSON)")
    if "bitfleet_error" in res:
        print(f"bitfleet: NOT MEASURED -- {res['bitfleet_error']}")


def print_peers(res, figs):
    """Every peer (1 thread) at batch 1 and 256 with its accuracy, the best peer and bitfleet's ratio to it."""
    cpu = res.get("cpu", {})
    print(f"peers on {cpu.get('model', res['machine']['cpu'])}, all 1 thread "
          f"(CPU-s per s = CPU time the peer used per wall second)")
    print(f"{'model samples/s':40s} {'batch 1':>14s} {'batch 256':>14s} {'accuracy':>9s} {'CPU-s per s':>12s}")

    def cell(d, b, f="{:>14.0f}"):
        v = d.get(b)
        return f.format(v) if isinstance(v, (int, float)) else f"{'-':>14s}"
    for name, rec in res.get("peers", {}).items():
        accs = f"{rec['accuracy'] * 100:8.2f}%" if "accuracy" in rec else f"{'-':>9s}"
        util = "/".join(f"{rec['cpu_utilisation'][b]:.2f}" for b in BATCHES
                        if isinstance(rec.get("cpu_utilisation", {}).get(b), (int, float)))
        print(f"{rec['label']:40s} {cell(rec['samples_per_s'], 'batch1')} {cell(rec['samples_per_s'], 'batch256')} "
              f"{accs} {util or '-':>12s}")
        for what, e in rec.get("errors", {}).items():
            print(f"{'':4s}FAILED ({what}): {e.splitlines()[0][:150] if e else e}")
    acc = res.get("accuracy", {})
    accs = f"{acc['binary'] * 100:8.2f}%" if "binary" in acc else f"{'-':>9s}"
    print(f"{'bitfleet binary MoE':40s} {cell(figs, 'model_samples_per_s_batch1')} "
          f"{cell(figs, 'model_samples_per_s_batch256')} {accs}")
    bp = res.get("best_peer", {})
    peers = res.get("peers", {})
    for b in BATCHES:
        p = bp.get(b)
        if p:
            print(f"best peer at batch {b[5:]:>3s}: {peers.get(p['name'], {}).get('label', p['name'])} "
                  f"({p['name']}, {p['samples_per_s']:.0f} samples/s)")
        else:
            print(f"best peer at batch {b[5:]:>3s}: none measured")
    mv = res.get("model_vs_best_peer", {})
    print(f"{'ratio (bitfleet / best peer)':40s} " + " ".join(
        f"{mv[b]:>13.2f}x" if b in mv else f"{'-':>14s}" for b in BATCHES))
    mc = res.get("model_vs_best_peer_per_cpu_s", {})
    print(f"{'ratio per CPU-s (best peer per CPU-s)':40s} " + " ".join(
        f"{mc[b]:>13.2f}x" if b in mc else f"{'-':>14s}" for b in BATCHES))
    pv = res.get("paired_vs_best_peer") or {}
    for b in BATCHES:
        if b in pv:
            p = pv[b]
            print(f"ratio at {b}, {p['rounds']} interleaved rounds of {p['seconds_per_measurement']:.2f} s against "
                  f"{p['peer']}: median {p['median']:.2f}x (rounds {p['low']:.2f}-{p['high']:.2f}x)")
    if res.get("paired_vs_best_peer_error"):
        print(f"interleaved rounds against the best peer failed: {res['paired_vs_best_peer_error']}")


# ---------------------------------------------------------------- recording into bitfleet.alternatives

RECORD_TOOL = "Ops/bench/peers.py"
FAMILIES = {("onnxruntime", "fp32"): "ONNX Runtime fp32", ("onnxruntime", "int8"): "ONNX Runtime int8 (dynamic)",
            ("openvino", "fp32"): "OpenVINO fp32", ("openvino", "bf16"): "OpenVINO bf16"}


def family(rec):
    """(engine, fp32 | int8 | bf16) of a peer record."""
    p = rec["precision"].lower()
    return rec["engine"], "int8" if p.startswith("int8") else "bf16" if p.startswith("bf16") else "fp32"


def record_rows(peers, cpu_model, versions, fleet_model, twin, price_per_core_hour, seconds):
    """The rows --record writes (pure: checked by --selftest): per peer family and batch size, the peer with the most
    samples per CPU-second. versions: {engine: version}. A family or batch size that was not measured has no row."""
    rows = []
    for (engine, prec), label in FAMILIES.items():
        for b in BATCHES:
            cands = [(rec["samples_per_cpu_s"][b], name) for name, rec in peers.items()
                     if family(rec) == (engine, prec)
                     and isinstance(rec.get("samples_per_cpu_s", {}).get(b), (int, float))
                     and rec["samples_per_cpu_s"][b] > 0]
            if not cands:
                continue
            per_cpu_s, name = max(cands)
            rec = peers[name]
            wall = rec.get("samples_per_s", {}).get(b)
            note = (f"{rec['label']} ({name}), 1 thread, {seconds:g} s per measurement: {per_cpu_s:.0f} samples per "
                    f"CPU-second" + (f", {wall:.0f} samples/s wall clock" if isinstance(wall, (int, float)) else "")
                    + (f"; test accuracy {rec['accuracy'] * 100:.2f} %" if "accuracy" in rec else ""))
            rows.append(dict(kind="cpu-peer", model=fleet_model, twin=twin, label=label,
                             runtime=f"{engine} {versions.get(engine) or '?'} {prec}", device=cpu_model,
                             batch=int(b[5:]), cores=1.0, samples_per_second=float(per_cpu_s),
                             price_per_hour=float(price_per_core_hour), tool=RECORD_TOOL, note=note))
    return rows


def sql_literal(v):
    """NULL, a number, or a string in single quotes with every single quote doubled (standard_conforming_strings)."""
    if v is None:
        return "NULL"
    if isinstance(v, bool):
        return "TRUE" if v else "FALSE"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if v != v or v in (float("inf"), float("-inf")):
            raise ValueError(f"not a finite number for SQL: {v!r}")
        return repr(v)
    s = str(v)
    if "\x00" in s:
        raise ValueError("a NUL character cannot be sent to PostgreSQL")
    return "'" + s.replace("'", "''") + "'"


RECORD_ARGS = ("kind", "model", "twin", "label", "runtime", "device", "batch", "cores", "samples_per_second",
               "price_per_hour", "tool", "note")


def record_sql(rows):
    """One statement per row, SELECT bitfleet.record_alternative(kind => ..., ...), all in one transaction."""
    calls = [("SELECT bitfleet.record_alternative(" + ", ".join(f"{k} => {sql_literal(r[k])}" for k in RECORD_ARGS)
              + ");") for r in rows]
    return "BEGIN;\n" + "\n".join(calls) + "\nCOMMIT;\n"


def record(a, peers, cpu, machine):
    """Write the rows with psql; returns them. Raises when there is nothing to record or psql fails."""
    # "2026.4.1-22982-e213a…-releases/2026/4" -> "2026.4.1"
    versions = {k: str(machine[k]).split("-")[0] for k in ("onnxruntime", "openvino") if machine.get(k)}
    fleet_model = a.fleet_model or os.path.basename(os.path.normpath(a.model))
    twin = os.path.basename(os.path.normpath(a.float_model))
    rows = record_rows(peers, cpu.get("model") or "unknown CPU", versions, fleet_model, twin, a.price_per_core_hour,
                       a.seconds)
    if not rows:
        raise RuntimeError("no peer was measured: nothing to record")
    cmd = ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1"] + ([a.database_url] if a.database_url else [])
    out = subprocess.run(cmd, input=record_sql(rows), capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        raise RuntimeError(f"psql failed ({out.returncode}): {out.stderr.strip()[-1500:]}")
    print(f"recorded {len(rows)} measured rows in bitfleet.alternatives (model {fleet_model}, "
          f"EUR {a.price_per_core_hour:g} per core-hour):")
    for r in rows:
        print(f"  {r['label']:30s} batch {r['batch']:>3d}: {r['samples_per_second']:>9.0f} samples per core-second"
              f" -> EUR {r['price_per_hour'] / 3600 / r['samples_per_second'] * 1e6:.6f} per million")
    return rows


def quick_record(a):
    """--record --quick: only the peers that are recorded, on the sparse graph, then record."""
    ensure_packages()
    cpu = cpu_info()
    import onnxruntime as ort
    machine = dict(onnxruntime=ort.__version__)
    sparse = os.path.join(a.float_model, "model.onnx")
    if not os.path.exists(sparse):
        print(f"peers.py: no float model at {sparse}", file=sys.stderr)
        return 2
    xte, _ = load_test()
    xf = (xte.astype(np.float32) / np.float32(255.0))[:4096]
    tmp = tempfile.TemporaryDirectory()
    peers = {}
    rec = peers["ort_fp32_sparse"] = peer_record("ORT fp32 MoE, sparse", "onnxruntime", "fp32", "sparse")
    s = ort_session(sparse)
    measure_peer(rec, lambda b, s=s: ort_runner(s), xf, a.seconds)
    rec = peers["ort_int8_qint8_sparse"] = peer_record("ORT int8 (QInt8 weights) MoE, sparse", "onnxruntime",
                                                       "int8 dynamic (QInt8 weights, uint8 activations)", "sparse")
    try:
        s = ort_session(quantize_int8(sparse, os.path.join(tmp.name, "sparse_QInt8.onnx"), "QInt8"))
        measure_peer(rec, lambda b, s=s: ort_runner(s), xf, a.seconds)
    except Exception as e:  # noqa: BLE001
        rec["errors"] = {"build": f"{type(e).__name__}: {str(e).strip()[:1500]}"}
    try:
        import openvino as ov
        core = ov.Core()
        machine["openvino"] = ov.__version__
        for prec in ["f32"] + (["bf16"] if cpu["bf16"] else []):
            rec = peers[f"openvino_{prec}_sparse"] = peer_record(f"OpenVINO {prec} MoE, sparse", "openvino", prec,
                                                                 "sparse")
            measure_peer(rec, openvino_maker(core, sparse, prec), xf, a.seconds)
    except Exception as e:  # noqa: BLE001
        print(f"peers.py: OpenVINO not measured: {type(e).__name__}: {e}", file=sys.stderr)
    for name, rec in peers.items():
        for what, e in rec.get("errors", {}).items():
            print(f"peers.py: {name} FAILED ({what}): {e.splitlines()[0][:200] if e else e}", file=sys.stderr)
    print(f"peers on {cpu.get('model')}, 1 thread, {a.seconds:g} s per measurement (samples per CPU-second):")
    for name, rec in peers.items():
        print(f"  {rec['label']:40s} " + "  ".join(
            f"{b}: {rec['samples_per_cpu_s'][b]:>9.0f}" for b in BATCHES if b in rec["samples_per_cpu_s"]))
    try:
        record(a, peers, cpu, machine)
    except Exception as e:  # noqa: BLE001
        print(f"peers.py: --record failed: {e}", file=sys.stderr)
        return 2
    return 0


def selftest():
    """Pure checks on synthetic figures (no timing, no peer packages): best-peer selection, ratios, JSON keys,
    CPU flag parsing and the kernel-paths pass-through. Exit status 0 when all hold."""
    checks = []

    def check(cond, what):
        checks.append(what)
        if not cond:
            raise AssertionError(f"peers.py self-test failed: {what}")

    def rec(b1, b256, c1=None, c256=None, errors=None):
        r = peer_record("x", "e", "p", "g")
        r["samples_per_s"] = {k: v for k, v in (("batch1", b1), ("batch256", b256)) if v is not None}
        r["samples_per_cpu_s"] = {k: v for k, v in (("batch1", c1 or b1), ("batch256", c256 or b256))
                                  if v is not None}
        if errors:
            r["errors"] = errors
        return r
    peers = {"ort_fp32_sparse": rec(4000.0, 30000.0), "ort_fp32_dense": rec(600.0, 6000.0),
             "ort_int8_qint8_sparse": rec(3000.0, 45000.0, c256=40000.0),
             "openvino_f32_sparse": rec(1500.0, 29000.0),
             "openvino_bf16_sparse": rec(1800.0, 117000.0, c256=50000.0),
             "openvino_bf16_dense": rec(None, None, errors={"batch1": "RuntimeError: x", "batch256": "RuntimeError: y"}),
             "openvino_f32_dense": rec(5000.0, None, errors={"batch256": "RuntimeError: z"})}
    bench = {"kernel": [{"threads": 1, "macsPerSecond": 3e11, "macsPerCPUCycle": 10.0},
                        {"threads": 2, "macsPerSecond": 5e11, "macsPerCPUCycle": 9.0}],
             "clockHz": 3e9,
             "models": [{"batch": 1, "threads": 1, "samplesPerSecond": 100000.0, "samplesPerCPUSecond": 110000.0},
                        {"batch": 256, "threads": 1, "samplesPerSecond": 234000.0, "samplesPerCPUSecond": 200000.0},
                        {"batch": 256, "threads": 2, "samplesPerSecond": 400000.0}],
             "kernelPaths": {"stem": "lookup", "hidden": "avx512-vpopcntdq"}}
    figs = figures_from_bench(bench)
    check(figs["model_samples_per_s_batch1"] == 100000.0 and figs["model_samples_per_s_batch256"] == 234000.0,
          "figures_from_bench reads models[batch, threads=1]")
    check(paired_summary([3.0, 1.0, 2.0]) == {"median": 2.0, "low": 1.0, "high": 3.0, "rounds": 3}
          and paired_summary([4.0, 1.0, 2.0, 3.0])["median"] == 2.5 and paired_summary([]) is None,
          "paired_summary: median of odd and even round counts, none without rounds")
    out = summarize_peers(peers, figs)
    check(set(out) == {"best_peer", "model_vs_best_peer", "best_peer_per_cpu_s", "model_vs_best_peer_per_cpu_s"},
          "summarize_peers keys")
    check(out["best_peer"]["batch1"] == {"name": "openvino_f32_dense", "samples_per_s": 5000.0},
          "best peer at batch 1 (a peer that failed only at batch 256 still counts at batch 1)")
    check(out["best_peer"]["batch256"] == {"name": "openvino_bf16_sparse", "samples_per_s": 117000.0},
          "best peer at batch 256")
    check(abs(out["model_vs_best_peer"]["batch1"] - 20.0) < 1e-9, "model_vs_best_peer batch1 = 100000 / 5000")
    check(abs(out["model_vs_best_peer"]["batch256"] - 2.0) < 1e-9, "model_vs_best_peer batch256 = 234000 / 117000")
    check(out["best_peer_per_cpu_s"]["batch256"]["name"] == "openvino_bf16_sparse"
          and abs(out["model_vs_best_peer_per_cpu_s"]["batch256"] - 4.0) < 1e-9,
          "per CPU-second best peer and ratio (200000 / 50000)")
    empty = summarize_peers({"a": rec(None, None, errors={"build": "x"})}, figs)
    check(empty["best_peer"] == {"batch1": None, "batch256": None} and empty["model_vs_best_peer"] == {},
          "no usable peer: best_peer null, no ratio")
    nofigs = summarize_peers(peers, {})
    check(nofigs["best_peer"]["batch256"]["name"] == "openvino_bf16_sparse" and nofigs["model_vs_best_peer"] == {},
          "no bitfleet figures: best peer still named, no ratio")
    check(find_kernel_paths(bench) == ("kernelPaths", {"stem": "lookup", "hidden": "avx512-vpopcntdq"}),
          "kernel paths passed through from kernelPaths")
    check(find_kernel_paths({"kernel": [{"threads": 1}], "x": {"kernel_paths": ["a"]}, "paths": "p"})
          == ("x.kernel_paths", ["a"]), "kernel_paths preferred over paths, found nested; 'kernel' rows ignored")
    check(find_kernel_paths({"kernel": [{"threads": 1}]}) == (None, None), "no kernel paths reported")
    lscpu = "Architecture: x86_64\nModel name:   Intel(R) Xeon(R) Platinum 8480+\nFlags: fpu avx2 avx512f amx_bf16\n"
    c = parse_cpu(lscpu, "model name\t: other\nflags\t\t: sse2\n")
    check(c["model"] == "Intel(R) Xeon(R) Platinum 8480+" and c["present"] == ["avx2", "avx512f", "amx_bf16"]
          and c["bf16"] and set(c["flags"]) == set(CPU_FLAGS), "parse_cpu from lscpu")
    c = parse_cpu("", "model name\t: AMD EPYC\nflags\t\t: avx2 avx512f avx512_vnni\n")
    check(c["model"] == "AMD EPYC" and c["flags"]["avx512_vnni"] and not c["bf16"], "parse_cpu from /proc/cpuinfo")
    # the JSON object main() assembles: every key the issue names is there and serialisable
    res = dict(machine=dict(cpu="x", cores=2, numpy=np.__version__), cpu=c,
               numpy_gemm={f"threads{t}": dict(best_macs_per_s=5e10 * t, macs_per_cpu_s=5e10, blas=[],
                                               env_removed={}) for t in (1, 2)},
               onnxruntime_samples_per_s={"model.onnx": peers["ort_fp32_sparse"]["samples_per_s"],
                                          "model_dense.onnx": peers["ort_fp32_dense"]["samples_per_s"],
                                          "mlp_784_1024_1024_10": {"batch1": 7000.0, "batch256": 23000.0}},
               onnxruntime_samples_per_cpu_s={}, onnxruntime_float_moe_best={"batch1": 4000.0, "batch256": 30000.0},
               onnxruntime_float_moe_best_per_cpu_s={"batch1": 4000.0, "batch256": 30000.0},
               peers=peers, accuracy={"binary": 0.88, "float": 0.90, "int8": 0.90}, kernel_paths_key="kernelPaths",
               kernel_paths=find_kernel_paths(bench)[1])
    res.update(ratios(res, figs))
    res.update(out)
    check(abs(res["model_vs_onnxruntime"]["batch1"] - 25.0) < 1e-9
          and abs(res["model_vs_onnxruntime"]["batch256"] - 7.8) < 1e-9,
          "model_vs_onnxruntime stays the fp32 float MoE ratio (100000 / 4000, 234000 / 30000)")
    check(abs(res["kernel_vs_fp32"]["threads1"] - 6.0) < 1e-9, "kernel_vs_fp32 threads1 = 3e11 / 5e10")
    back = json.loads(json.dumps(res))
    for k in ("model_vs_best_peer", "best_peer", "cpu", "kernel_paths", "model_vs_onnxruntime", "peers", "accuracy"):
        check(k in back, f"JSON key {k}")
    check(set(back["model_vs_best_peer"]) == set(BATCHES) and set(back["best_peer"]) == set(BATCHES)
          and set(back["best_peer"]["batch1"]) == {"name", "samples_per_s"}, "best_peer / model_vs_best_peer shape")
    check(set(back["cpu"]) >= {"model", "flags"} and set(back["cpu"]["flags"]) == set(CPU_FLAGS), "cpu shape")
    import contextlib
    import io
    with contextlib.redirect_stdout(io.StringIO()) as buf:
        print_peers(res, figs)
    text = buf.getvalue()
    check("best peer at batch 256: x (openvino_bf16_sparse, 117000 samples/s)" in text
          and "FAILED (batch256)" in text and "20.00x" in text,
          "peer table names the best peer, the failures and the ratio")
    # --record: the best peer of each family and batch size, per CPU-second, and the SQL that writes it
    peers["ort_int8_quint8_sparse"] = dict(rec(2000.0, 20000.0), engine="onnxruntime",
                                           precision="int8 dynamic (QUInt8 weights, uint8 activations)")
    peers["ort_int8_qint8_sparse"].update(engine="onnxruntime",
                                          precision="int8 dynamic (QInt8 weights, uint8 activations)")
    for k in ("ort_fp32_sparse", "ort_fp32_dense"):
        peers[k].update(engine="onnxruntime", precision="fp32")
    for k in ("openvino_f32_sparse", "openvino_f32_dense"):
        peers[k].update(engine="openvino", precision="f32")
    for k in ("openvino_bf16_sparse", "openvino_bf16_dense"):
        peers[k].update(engine="openvino", precision="bf16")
    rows = record_rows(peers, "Test CPU 'X'", {"onnxruntime": "1.2", "openvino": "2024"}, "fashion", "fashion-float",
                       0.05, 2.0)
    got = {(r["label"], r["batch"]): r for r in rows}
    check(set(got) == {("ONNX Runtime fp32", 1), ("ONNX Runtime fp32", 256), ("ONNX Runtime int8 (dynamic)", 1),
                       ("ONNX Runtime int8 (dynamic)", 256), ("OpenVINO fp32", 1), ("OpenVINO fp32", 256),
                       ("OpenVINO bf16", 1), ("OpenVINO bf16", 256)},
          "record_rows: one row per family and measured batch size")
    check(got[("ONNX Runtime int8 (dynamic)", 256)]["samples_per_second"] == 40000.0
          and "ort_int8_qint8_sparse" in got[("ONNX Runtime int8 (dynamic)", 256)]["note"],
          "record_rows: the per CPU-second figure of the best of QInt8/QUInt8")
    check(got[("OpenVINO fp32", 1)]["samples_per_second"] == 5000.0, "record_rows: the faster graph of a family")
    check(got[("OpenVINO bf16", 1)]["samples_per_second"] == 1800.0,
          "record_rows: a graph that failed is skipped, the other graph of the family counts")
    r = got[("ONNX Runtime fp32", 256)]
    check(r["kind"] == "cpu-peer" and r["cores"] == 1.0 and r["runtime"] == "onnxruntime 1.2 fp32"
          and r["model"] == "fashion" and r["twin"] == "fashion-float" and r["price_per_hour"] == 0.05,
          "record_rows: kind, cores, runtime, models, price")
    check(record_rows({"x": rec(None, None, errors={"build": "x"}) | dict(engine="onnxruntime", precision="fp32")},
                      "c", {}, "m", "t", 0.05, 1) == [], "record_rows: nothing measured, nothing recorded")
    sql = record_sql(rows)
    quoted = "device => 'Test CPU " + "''X''" + "'"
    check(sql.startswith("BEGIN;\n") and sql.endswith("COMMIT;\n") and sql.count("bitfleet.record_alternative(") == 8
          and quoted in sql and "batch => 256" in sql and "cores => 1.0" in sql,
          "record_sql: one call per row, in one transaction, strings quoted")
    print(f"peers.py self-test: ok ({len(checks)} checks)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
