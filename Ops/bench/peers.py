#!/usr/bin/env python3
"""BitFleet against its fp32 peers, on this machine, in one run.

    python3 Ops/bench/peers.py [--bitfleet .build/release/bitfleet] [--model Ops/models/fashion]
                               [--float-model Ops/models/fashion-float] [--seconds 3] [--json]

(a) kernel: numpy/OpenBLAS fp32 GEMM, M x N x K = 1024 x 1024 x 4096, with 1 and 2 OpenBLAS threads, each in
    its own subprocess (OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE removed from that subprocess's environment only, so
    OpenBLAS picks its own kernel for this CPU; threadpoolctl reports which one it used), against the binary
    XNOR-popcount kernel's MAC/s from `bitfleet bench --json`.
(b) model: ONNX Runtime (1 intra-op thread, sequential) running the float model of the same architecture
    (Ops/models/fashion-float/model.onnx: sparse top-k dispatch; and the dense variant -- all experts, gated --
    rebuilt from its weights; the faster of the two is the peer figure) at batch 1
    and batch 256 on real Fashion-MNIST test images, plus a plain 784-1024-1024-10 fp32 MLP for reference,
    against the binary model's samples/s from `bitfleet bench --json`.
Accuracy (binary via Ops/models/reference.py, float via ONNX Runtime) is measured on the 10 000 test images.

If the bitfleet binary is missing or its bench fails, the numpy / ONNX Runtime side still runs and is printed;
the script then exits with status 2 and says why (the JSON line carries "bitfleet_error").

With --json the last line of stdout is ONE JSON object: kernel_vs_fp32 (1 and 2 threads), model_vs_onnxruntime
(batch 1 and batch 256), accuracy (binary, float), weights_ratio, and the raw figures. Every throughput is also
given per CPU-second the measured process actually got (kernel_vs_fp32_per_cpu_s, model_vs_onnxruntime_per_cpu_s):
on a machine shared with other work the wall-clock figures of both sides are depressed by however much CPU the
neighbours took at that moment, the per-CPU-second ones much less so.
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "Ops", "models"))

GEMM_M, GEMM_N, GEMM_K = 1024, 1024, 4096

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


def time_ort(sess, x, batch, seconds):
    """samples/s for back-to-back calls of `batch` rows, cycling through x."""
    name = sess.get_inputs()[0].name
    n = len(x) // batch
    chunks = [np.ascontiguousarray(x[i * batch:(i + 1) * batch]) for i in range(min(n, 64))]
    for c in chunks[:3]:
        sess.run(None, {name: c})
    done = 0
    i = 0
    t0 = time.perf_counter()
    c0 = time.process_time()
    while True:
        sess.run(None, {name: chunks[i % len(chunks)]})
        done += batch
        i += 1
        el = time.perf_counter() - t0
        if el >= seconds and i >= 3:
            cpu = time.process_time() - c0
            return done / el, done / cpu


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
    so only the sparse graph needs to be committed."""
    import onnx
    from onnx import numpy_helper
    from train import export_onnx
    m = onnx.load(path)
    w = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    E = sum(1 for k in w if k.startswith("Wo_"))
    L = sum(1 for k in w if k.startswith("W") and k.endswith("_0") and not k.startswith("Wo_"))
    k = int(w["k"][0])
    fl = dict(stem_W=w["stem_Wt"].T, stem_b=w["stem_b"], router_W=w["router_Wt"].T, router_b=w["router_b"],
              hid_W=[np.stack([w[f"W{l}_{e}"].T for e in range(E)]) for l in range(L)],
              hid_b=[np.stack([w[f"b{l}_{e}"] for e in range(E)]) for l in range(L)],
              out_W=np.stack([w[f"Wo_{e}"].T for e in range(E)]), out_b=np.stack([w[f"bo_{e}"] for e in range(E)]))
    export_onnx(fl, k, out_path, "dense")
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


def bitfleet_bench(binary, model, timeout, seconds):
    if not os.path.exists(binary):
        raise RuntimeError(f"bitfleet binary not found at {binary} (build it: Ops/build.sh, or pass --bitfleet)")
    cmd = [binary, "bench", "--json", "--model", model, "--m", str(GEMM_M), "--n", str(GEMM_N), "--k", str(GEMM_K),
           "--threads", "1,2", "--seconds", str(seconds)]
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
    ap.add_argument("--json", action="store_true", help="end with one JSON line")
    a = ap.parse_args()

    res = dict(machine=dict(cpu=cpu_name(), cores=os.cpu_count(), python=platform.python_version(),
                            numpy=np.__version__))
    # ---------------------------------------------------------------- numpy GEMM
    res["numpy_gemm"] = {}
    for t in (1, 2):
        r = numpy_gemm(t, a.seconds)
        res["numpy_gemm"][f"threads{t}"] = r
    # ---------------------------------------------------------------- ONNX Runtime
    import onnxruntime as ort
    res["machine"]["onnxruntime"] = ort.__version__
    xte, yte = load_test()
    xf = (xte.astype(np.float32) / np.float32(255.0))
    ortres, ortcpu = {}, {}
    tmp = tempfile.TemporaryDirectory()
    sparse = os.path.join(a.float_model, "model.onnx")
    if os.path.exists(sparse):
        for fname, path in (("model.onnx", sparse),
                            ("model_dense.onnx", dense_from_sparse(sparse, os.path.join(tmp.name, "dense.onnx")))):
            s = ort_session(path)
            ortres[fname], ortcpu[fname] = ort_rows(s, xf, a.seconds)
    else:
        print(f"peers.py: no float model at {sparse} (train.py --float --out {a.float_model})", file=sys.stderr)
    s = ort_session(plain_mlp())
    ortres["mlp_784_1024_1024_10"], ortcpu["mlp_784_1024_1024_10"] = ort_rows(s, xf, a.seconds)
    res["onnxruntime_samples_per_s"] = ortres
    res["onnxruntime_samples_per_cpu_s"] = ortcpu
    moe = {k: v for k, v in ortres.items() if k.startswith("model")}
    best = {b: max((v[b] for v in moe.values()), default=None) for b in ("batch1", "batch256")}
    res["onnxruntime_float_moe_best"] = best
    moec = {k: v for k, v in ortcpu.items() if k.startswith("model")}
    bestc = {b: max((v[b] for v in moec.values()), default=None) for b in ("batch1", "batch256")}
    res["onnxruntime_float_moe_best_per_cpu_s"] = bestc
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
        cmd, bj = bitfleet_bench(a.bitfleet, a.model, a.bench_timeout, a.seconds)
        res["bitfleet_command"] = cmd
        res["bitfleet_bench"] = bj
        figs = figures_from_bench(bj)
        res["bitfleet_figures"] = figs
    except Exception as e:  # noqa: BLE001 - report and keep the peer side
        err = str(e)
        res["bitfleet_error"] = err
        figs = {}
    # ---------------------------------------------------------------- ratios
    g = res["numpy_gemm"]
    kv = {}
    for t, lab in ((1, "kernel_macs_per_s_1thread"), (2, "kernel_macs_per_s_2threads")):
        if lab in figs:
            kv[f"threads{t}"] = figs[lab] / g[f"threads{t}"]["best_macs_per_s"]
    res["kernel_vs_fp32"] = kv
    mv = {}
    for b in ("batch1", "batch256"):
        lab = f"model_samples_per_s_{b}"
        if lab in figs and best[b]:
            mv[b] = figs[lab] / best[b]
            mv[b + "_vs_mlp"] = figs[lab] / ortres["mlp_784_1024_1024_10"][b]
    res["model_vs_onnxruntime"] = mv
    # the same ratios per CPU-second actually used (robust when other processes share the cores)
    kc = {}
    for t, lab in ((1, "kernel_macs_per_cpu_s_1thread"), (2, "kernel_macs_per_cpu_s_2threads")):
        if lab in figs:
            kc[f"threads{t}"] = figs[lab] / g[f"threads{t}"]["macs_per_cpu_s"]
    res["kernel_vs_fp32_per_cpu_s"] = kc
    mc = {}
    for b in ("batch1", "batch256"):
        lab = f"model_samples_per_cpu_s_{b}"
        if lab in figs and bestc[b]:
            mc[b] = figs[lab] / bestc[b]
    res["model_vs_onnxruntime_per_cpu_s"] = mc

    print_table(res, figs)
    if a.json:
        print(json.dumps(res, separators=(",", ":")))
    if err:
        print(f"peers.py: bitfleet side missing: {err}", file=sys.stderr)
        return 2
    return 0


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def fmt(v, unit=""):
    if v is None:
        return "-"
    for s, d in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(v) >= d:
            return f"{v / d:.2f} {s}{unit}"
    return f"{v:.1f} {unit}"


def print_table(res, figs):
    g = res["numpy_gemm"]
    print(f"machine: {res['machine']['cpu']}, {res['machine']['cores']} cores, numpy {res['machine']['numpy']}, "
          f"onnxruntime {res['machine'].get('onnxruntime')}")
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
    print()
    acc = res.get("accuracy", {})
    if acc:
        print(f"test accuracy: binary {acc.get('binary', float('nan')) * 100:.2f}%  "
              f"float {acc.get('float', float('nan')) * 100:.2f}%")
    if "weights_ratio" in res:
        print(f"weights: binary {res['binary_model_bytes']} bytes, float fp32 {res['float_weight_bytes']} bytes "
              f"-> {res['weights_ratio']:.1f}x smaller")
    if figs:
        print("bitfleet figures read from: " + ", ".join(f"{k[:-4]} <- {v}" for k, v in figs.items()
                                                         if k.endswith("_key")))
    if "bitfleet_error" in res:
        print(f"bitfleet: NOT MEASURED -- {res['bitfleet_error']}")


if __name__ == "__main__":
    sys.exit(main())
