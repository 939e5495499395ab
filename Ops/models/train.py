#!/usr/bin/env python3
"""Train the BitFleet reference binary mixture-of-experts on Fashion-MNIST, numpy only.

The architecture is exactly docs/MODEL_FORMAT.md (format bitfleet.bmoe v1):

    x (uint8, D) --stem: q = x >> (8-P), a = sign(W0) q, h = +1 if a >= t else -1--> h (S bits)
    h --router: r = scale * (sign(R) h) + bias--> top-k experts, gates = softmax(r[selected])
    h --expert e: binary hidden layers (a >= t) ... --> z = out.scale * (sign(Wo) u) + out.bias
    logits = sum_i g_i z_{e_i}

Training uses latent float weights with the straight-through estimator (sign in the forward pass, identity
gradient clipped to |w| <= 1, latent weights clipped to [-1, 1]); sign activations use the hardtanh STE
(gradient passes where |y| <= 1).  Every stem / hidden layer is followed by batch-norm in training; at export
the batch-norm statistics are re-estimated over the training set in inference mode (layer by layer, each
layer seeing the already-binarised output of the one before) and folded into an integer threshold:

    y = k (a - mu) + beta >= 0,  k = gamma / sqrt(var + eps),  c = mu - beta / k
    k > 0:  a >= ceil(c)                       -> threshold = ceil(c)
    k < 0:  a <= c  <=>  -a >= -floor(c)       -> weight row negated, threshold = -floor(c)
    k = 0:  constant sign(beta)                -> threshold = -2^30 (always +1) or 2^30 (never)

The evaluation this script reports ("exported-semantics eval") is computed from those folded integer
parameters with the engine's integer arithmetic (a_i = sum_j w_ij q_j exactly, a >= t, float32 multiply then
add for router and output scale/bias, stable top-k ties to the lower index), so it must equal what
Ops/models/reference.py reports on the exported directory; the script checks that when reference.py exists.

The router is trained with the spec's gates (softmax over the top-k scores) plus the Switch-Transformer
load-balancing loss  aux = E * sum_e f_e * P_e  (f_e: fraction of top-k slots routed to e, P_e: mean full
softmax probability of e), weighted by --aux.

--float trains the same architecture with float weights and ReLU activations (input x/255, batch-norm folded
into the linear layers) as the accuracy / speed baseline and writes model.onnx (see export_onnx for the two
graphs: per-expert sparse dispatch and dense) plus metrics.json.

Usage:
    python3 Ops/models/train.py --planes 8 --stem 1024 --experts 16 --top-k 2 --hidden 256 \
        --epochs 20 --seed 1 --out Ops/models/fashion-v2
    python3 Ops/models/train.py --float --stem 1024 --experts 16 --top-k 2 --hidden 256 \
        --epochs 20 --seed 1 --out Ops/models/fashion-v2-float
"""
import argparse
import gzip
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
DATA_DIR = "/usr/share/datasets/fashion-mnist"
CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
           "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
BIG_T = 1 << 30
EPS = 1e-5
F32 = np.float32


# ----------------------------------------------------------------------------------------------------------- data

def load_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def cpu_name():
    """The CPU model as /proc/cpuinfo names it (what every figure of the model tools and benchmarks is measured on)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform
    return platform.processor() or platform.machine()


def load_fashion(data_dir=DATA_DIR):
    xtr = load_idx(os.path.join(data_dir, "train-images-idx3-ubyte.gz")).reshape(-1, 784)
    ytr = load_idx(os.path.join(data_dir, "train-labels-idx1-ubyte.gz")).astype(np.int64)
    xte = load_idx(os.path.join(data_dir, "t10k-images-idx3-ubyte.gz")).reshape(-1, 784)
    yte = load_idx(os.path.join(data_dir, "t10k-labels-idx1-ubyte.gz")).astype(np.int64)
    return xtr, ytr, xte, yte


def stem_input(x_u8, planes, is_float):
    """What the stem multiplies: q = x >> (8-P) as exact small integers (binary), or x/255 (float baseline)."""
    if is_float:
        return x_u8.astype(F32) / F32(255.0)
    return (x_u8 >> (8 - planes)).astype(F32)


def augment(x_u8, rng, flip, shift):
    """Random horizontal flips and random shifts of up to `shift` pixels (zero fill) on a uint8 batch."""
    if not flip and not shift:
        return x_u8
    img = x_u8.reshape(-1, 28, 28).copy()
    if flip:
        m = rng.random(len(img)) < 0.5
        img[m] = img[m, :, ::-1]
    if shift:
        out = np.zeros_like(img)
        dy = rng.integers(-shift, shift + 1, len(img))
        dx = rng.integers(-shift, shift + 1, len(img))
        for sy in range(-shift, shift + 1):
            for sx in range(-shift, shift + 1):
                m = (dy == sy) & (dx == sx)
                if not m.any():
                    continue
                src = img[m]
                dst = np.zeros_like(src)
                ys, yd = (slice(0, 28 - sy), slice(sy, 28)) if sy >= 0 else (slice(-sy, 28), slice(0, 28 + sy))
                xs, xd = (slice(0, 28 - sx), slice(sx, 28)) if sx >= 0 else (slice(-sx, 28), slice(0, 28 + sx))
                dst[:, yd, xd] = src[:, ys, xs]
                out[m] = dst
        img = out
    return img.reshape(-1, 784)


# ---------------------------------------------------------------------------------------------------- primitives

def sgn(w):
    """sign with sign(0) = +1 (bit 1), as the exporter and engine read it."""
    return np.where(w >= 0, F32(1), F32(-1))


def softmax(z, axis=-1):
    z = z - z.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def bn_fwd(a, gamma, beta, frozen=None):
    """Batch-norm; with frozen = (mu, var) it uses those population statistics (inference mode)."""
    if frozen is None:
        mu = a.mean(0)
        var = a.var(0)
    else:
        mu, var = (v.astype(F32) for v in frozen)
    inv = F32(1.0) / np.sqrt(var + F32(EPS))
    xh = (a - mu) * inv
    return gamma * xh + beta, (xh, inv, gamma, frozen is not None)


def bn_bwd(dy, cache):
    xh, inv, gamma, frozen = cache
    n = dy.shape[0]
    dgamma = (dy * xh).sum(0)
    dbeta = dy.sum(0)
    dxh = dy * gamma
    if frozen:
        return dxh * inv, dgamma, dbeta
    dx = (inv / n) * (n * dxh - dxh.sum(0) - xh * (dxh * xh).sum(0))
    return dx, dgamma, dbeta


def topk_stable(r, k):
    """Indices of the k largest entries per row, best first, ties to the lower index."""
    return np.argsort(-r, axis=1, kind="stable")[:, :k]


# --------------------------------------------------------------------------------------------------------- model

class Model:
    def __init__(self, args, rng):
        self.a = args
        self.is_float = args.float
        D, S, E, C = 784, args.stem, args.experts, len(CLASSES)
        self.widths = [S] + list(args.hidden)
        H = self.widths
        p = {}

        def init(shape, fan_in, fan_out):
            lim = np.sqrt(6.0 / (fan_in + fan_out))
            return rng.uniform(-lim, lim, shape).astype(F32)

        p["stem.w"] = init((S, D), D, S)
        p["stem.g"] = np.ones(S, F32)
        p["stem.b"] = np.zeros(S, F32)
        p["router.w"] = init((E, S), S, E)
        p["router.s"] = np.full(E, 1.0 / np.sqrt(S), F32)
        p["router.b"] = np.zeros(E, F32)
        for l in range(len(H) - 1):
            p[f"h{l}.w"] = init((E, H[l + 1], H[l]), H[l], H[l + 1])
            p[f"h{l}.g"] = np.ones((E, H[l + 1]), F32)
            p[f"h{l}.b"] = np.zeros((E, H[l + 1]), F32)
        p["out.w"] = init((E, C, H[-1]), H[-1], C)
        p["out.s"] = np.full((E, C), 1.0 / np.sqrt(H[-1]), F32)
        p["out.b"] = np.zeros((E, C), F32)
        if self.is_float:
            # float baseline: plain linear scores (scale 1), weights He-initialised
            p["router.s"][:] = 1.0
            p["out.s"][:] = 1.0
            p["stem.w"] = (rng.standard_normal((S, D)) * np.sqrt(2.0 / D)).astype(F32)
            for l in range(len(H) - 1):
                p[f"h{l}.w"] = (rng.standard_normal((E, H[l + 1], H[l])) * np.sqrt(2.0 / H[l])).astype(F32)
            p["out.w"] = (rng.standard_normal((E, C, H[-1])) * np.sqrt(1.0 / H[-1])).astype(F32)
        self.p = p
        self.binary_keys = {k for k in p if k.endswith(".w")}
        self.m = {k: np.zeros_like(v) for k, v in p.items()}
        self.v = {k: np.zeros_like(v) for k, v in p.items()}
        self.t = 0

    # weight / activation quantisers
    def wq(self, w):
        return w if self.is_float else sgn(w)

    def act(self, y):
        if self.is_float:
            return np.maximum(y, 0), (y > 0).astype(F32)
        return sgn(y), (np.abs(y) <= 1).astype(F32)

    def wmask(self, w):
        return 1.0 if self.is_float else (np.abs(w) <= 1).astype(F32)

    def step(self, xb, yb, lr, aux_w, teacher=None, kd_w=0.0, kd_t=4.0, frozen=None):
        """One Adam step. frozen: population batch-norm statistics {"stem": (mu, var), "h{l}": [(mu, var)] * E}
        (fine-tuning in inference mode, so the forward pass is the exported model's up to threshold rounding)."""
        fz = frozen or {}
        p, E, K = self.p, self.a.experts, self.a.top_k
        L = len(self.widths) - 1
        B = xb.shape[0]
        C = len(CLASSES)
        W0 = self.wq(p["stem.w"])
        a0 = xb @ W0.T
        y0, c0 = bn_fwd(a0, p["stem.g"], p["stem.b"], fz.get("stem"))
        h, m0 = self.act(y0)
        R = self.wq(p["router.w"])
        dr_ = h @ R.T
        r = p["router.s"] * dr_ + p["router.b"]
        idx = topk_stable(r, K)
        gs = softmax(np.take_along_axis(r, idx, 1))
        logits = np.zeros((B, C), F32)
        caches = []
        for e in range(E):
            rows, slots = np.nonzero(idx == e)
            if rows.size == 0:
                caches.append(None)
                continue
            u = h[rows]
            lc = []
            for l in range(L):
                W = self.wq(p[f"h{l}.w"][e])
                a = u @ W.T
                y, c = bn_fwd(a, p[f"h{l}.g"][e], p[f"h{l}.b"][e], fz[f"h{l}"][e] if fz else None)
                un, m = self.act(y)
                lc.append((u, W, c, m))
                u = un
            Wo = self.wq(p["out.w"][e])
            d = u @ Wo.T
            z = p["out.s"][e] * d + p["out.b"][e]
            logits[rows] += gs[rows, slots][:, None] * z
            caches.append((rows, slots, lc, u, Wo, d, z))

        pr = softmax(logits)
        loss = float(-np.log(pr[np.arange(B), yb] + 1e-12).mean())
        dlog = pr.copy()
        dlog[np.arange(B), yb] -= 1
        dlog /= B
        if teacher is not None and kd_w > 0:
            # distillation: (1 - kd_w) * CE + kd_w * T^2 * KL(teacher_T || student_T)
            ps = softmax(logits / kd_t)
            pt = softmax(teacher / kd_t)
            dlog = (1 - kd_w) * dlog + kd_w * kd_t * (ps - pt) / B
        pfull = softmax(r)
        f = np.bincount(idx.ravel(), minlength=E).astype(F32) / (B * K)
        aux = float(E * (f * pfull.mean(0)).sum())

        g = {k: np.zeros_like(v) for k, v in p.items()}
        dh = np.zeros_like(h)
        dgs = np.zeros_like(gs)
        for e in range(E):
            if caches[e] is None:
                continue
            rows, slots, lc, u, Wo, d, z = caches[e]
            dl = dlog[rows]
            dgs[rows, slots] = (dl * z).sum(1)
            dz = dl * gs[rows, slots][:, None]
            g["out.s"][e] = (dz * d).sum(0)
            g["out.b"][e] = dz.sum(0)
            dd = dz * p["out.s"][e]
            g["out.w"][e] = (dd.T @ u) * self.wmask(p["out.w"][e])
            du = dd @ Wo
            for l in reversed(range(L)):
                u_in, W, c, m = lc[l]
                da, dgam, dbet = bn_bwd(du * m, c)
                g[f"h{l}.g"][e] = dgam
                g[f"h{l}.b"][e] = dbet
                g[f"h{l}.w"][e] = (da.T @ u_in) * self.wmask(p[f"h{l}.w"][e])
                du = da @ W
            dh[rows] += du
        dsel = gs * (dgs - (gs * dgs).sum(1, keepdims=True))
        dr = np.zeros_like(r)
        np.put_along_axis(dr, idx, dsel, 1)
        dP = F32(aux_w * E / B) * f
        dr += pfull * (dP - (pfull * dP).sum(1, keepdims=True))
        g["router.s"] = (dr * dr_).sum(0)
        g["router.b"] = dr.sum(0)
        ddr = dr * p["router.s"]
        g["router.w"] = (ddr.T @ h) * self.wmask(p["router.w"])
        dh += ddr @ R
        da0, g["stem.g"], g["stem.b"] = bn_bwd(dh * m0, c0)
        g["stem.w"] = (da0.T @ xb) * self.wmask(p["stem.w"])
        self.adam(g, lr)
        acc = float((logits.argmax(1) == yb).mean())
        return loss, aux, acc, f

    def adam(self, g, lr, b1=0.9, b2=0.999, eps=1e-8):
        self.t += 1
        c1 = 1 - b1 ** self.t
        c2 = 1 - b2 ** self.t
        for k, gk in g.items():
            m, v = self.m[k], self.v[k]
            m *= b1
            m += (1 - b1) * gk
            v *= b2
            v += (1 - b2) * gk * gk
            upd = (lr * (m / c1) / (np.sqrt(v / c2) + eps)).astype(F32)
            if self.is_float and k in self.binary_keys and self.a.weight_decay:
                upd += F32(lr * self.a.weight_decay) * self.p[k]
            self.p[k] -= upd
            if not self.is_float and k in self.binary_keys:
                np.clip(self.p[k], -1, 1, out=self.p[k])


# ------------------------------------------------------------------------- folding (binary) and exact evaluation

def fold_threshold(w_sign, gamma, beta, mu, var, eps=EPS):
    """Fold y = k(a - mu) + beta >= 0 into 'a' >= t' on a possibly negated weight row. Returns (rows, t)."""
    k = np.asarray(gamma, np.float64) / np.sqrt(np.asarray(var, np.float64) + float(eps))
    mu = np.asarray(mu, np.float64)
    beta = np.asarray(beta, np.float64)
    w = np.array(w_sign, copy=True)
    t = np.zeros(k.shape, np.int64)
    with np.errstate(divide="ignore", invalid="ignore"):
        c = mu - beta / k
    pos, neg, zer = k > 0, k < 0, k == 0
    t[pos] = np.ceil(np.clip(c[pos], -BIG_T, BIG_T))
    t[neg] = -np.floor(np.clip(c[neg], -BIG_T, BIG_T))
    w[neg] = -w[neg]
    t[zer & (beta >= 0)] = -BIG_T
    t[zer & (beta < 0)] = BIG_T
    return w, t.astype(np.int32)


def stats(a):
    a = a.astype(np.float64)
    return a.mean(0), a.var(0)


def calibrate_and_fold(model, x_u8, chunk=5000):
    """Re-estimate every batch-norm in inference mode over x_u8 and fold it.

    Returns the export arrays (all ±1 float32 weights, int32 thresholds, float32 scales/biases)."""
    p, a = model.p, model.a
    planes = a.planes
    E, K = a.experts, a.top_k
    L = len(model.widths) - 1
    n = len(x_u8)
    W0 = sgn(p["stem.w"])
    # stem statistics (exact integers; sums in float64)
    s1 = np.zeros(a.stem)
    s2 = np.zeros(a.stem)
    for i in range(0, n, chunk):
        a0 = (stem_input(x_u8[i:i + chunk], planes, False) @ W0.T).astype(np.float64)
        s1 += a0.sum(0)
        s2 += (a0 * a0).sum(0)
    mu = s1 / n
    var = np.maximum(s2 / n - mu * mu, 0)
    stem_w, stem_t = fold_threshold(W0, p["stem.g"], p["stem.b"], mu, var)
    st = {"stem": (mu, var)}
    for l in range(L):
        st[f"h{l}"] = [None] * E
    h = np.concatenate([
        np.where(stem_input(x_u8[i:i + chunk], planes, False) @ stem_w.T >= stem_t, 1, -1).astype(F32)
        for i in range(0, n, chunk)])
    router_w = sgn(p["router.w"])
    r = p["router.s"].astype(F32) * (h @ router_w.T) + p["router.b"].astype(F32)
    idx = topk_stable(r, K)
    hidden_w = [np.zeros_like(p[f"h{l}.w"]) for l in range(L)]
    hidden_t = [np.zeros(p[f"h{l}.g"].shape, np.int32) for l in range(L)]
    for e in range(E):
        rows = np.nonzero((idx == e).any(1))[0]
        u = h[rows]
        for l in range(L):
            W = sgn(p[f"h{l}.w"][e])
            if len(rows) >= 2:
                mu_l, var_l = stats(u @ W.T)
            else:  # unused expert: any consistent statistics
                mu_l, var_l = np.zeros(W.shape[0]), np.ones(W.shape[0])
            hidden_w[l][e], hidden_t[l][e] = fold_threshold(W, p[f"h{l}.g"][e], p[f"h{l}.b"][e], mu_l, var_l)
            st[f"h{l}"][e] = (mu_l, var_l)
            u = np.where(u @ hidden_w[l][e].T >= hidden_t[l][e], 1, -1).astype(F32)
    return dict(
        stem_weight=stem_w, stem_threshold=stem_t,
        router_weight=router_w, router_scale=p["router.s"].astype(F32), router_bias=p["router.b"].astype(F32),
        hidden_weights=hidden_w, hidden_thresholds=hidden_t,
        out_weight=sgn(p["out.w"]), out_scale=p["out.s"].astype(F32), out_bias=p["out.b"].astype(F32),
    ), np.bincount(idx.ravel(), minlength=E), st


def exact_forward(ex, x_u8, planes, top_k, chunk=5000):
    """The engine's semantics on the folded export arrays. Returns float32 logits and the expert use counts."""
    outs = []
    E = ex["router_weight"].shape[0]
    counts = np.zeros(E, np.int64)
    for i in range(0, len(x_u8), chunk):
        q = stem_input(x_u8[i:i + chunk], planes, False)
        h = np.where(q @ ex["stem_weight"].T >= ex["stem_threshold"], 1, -1).astype(F32)
        d = (h @ ex["router_weight"].T).astype(F32)
        r = ex["router_scale"] * d
        r = r + ex["router_bias"]
        idx = topk_stable(r, top_k)
        sel = np.take_along_axis(r, idx, 1)
        ez = np.exp(sel - sel[:, :1])
        g = (ez / ez.sum(1, keepdims=True)).astype(F32)
        logits = np.zeros((len(q), ex["out_weight"].shape[1]), F32)
        counts += np.bincount(idx.ravel(), minlength=E)
        for slot in range(top_k):
            for e in range(E):
                rows = np.nonzero(idx[:, slot] == e)[0]
                if rows.size == 0:
                    continue
                u = h[rows]
                for W, t in zip(ex["hidden_weights"], ex["hidden_thresholds"]):
                    u = np.where(u @ W[e].T >= t[e], 1, -1).astype(F32)
                z = ex["out_scale"][e] * (u @ ex["out_weight"][e].T).astype(F32)
                z = z + ex["out_bias"][e]
                logits[rows] = logits[rows] + g[rows, slot][:, None] * z
        outs.append(logits)
    return np.concatenate(outs), counts


# ------------------------------------------------------------------------------------------------- float baseline

def fold_float(model, x_u8, chunk=5000):
    """Inference-mode batch-norm statistics over x_u8, folded into (W, b) of each float linear layer."""
    p, a = model.p, model.a
    E, K = a.experts, a.top_k
    L = len(model.widths) - 1
    xs = [stem_input(x_u8[i:i + chunk], 0, True) for i in range(0, len(x_u8), chunk)]
    a0 = np.concatenate([x @ p["stem.w"].T for x in xs])
    mu, var = stats(a0)
    k = p["stem.g"] / np.sqrt(var + EPS)
    stem_W = (p["stem.w"] * k[:, None]).astype(F32)
    stem_b = (p["stem.b"] - k * mu).astype(F32)
    h = np.maximum(np.concatenate([x @ stem_W.T for x in xs]) + stem_b, 0)
    router_W = (p["router.w"] * p["router.s"][:, None]).astype(F32)
    router_b = p["router.b"].astype(F32)
    idx = topk_stable(h @ router_W.T + router_b, K)
    hid_W = [np.zeros_like(p[f"h{l}.w"]) for l in range(L)]
    hid_b = [np.zeros(p[f"h{l}.g"].shape, F32) for l in range(L)]
    for e in range(E):
        rows = np.nonzero((idx == e).any(1))[0]
        u = h[rows]
        for l in range(L):
            W = p[f"h{l}.w"][e]
            if len(rows) >= 2:
                mu_l, var_l = stats(u @ W.T)
            else:
                mu_l, var_l = np.zeros(W.shape[0]), np.ones(W.shape[0])
            k = p[f"h{l}.g"][e] / np.sqrt(var_l + EPS)
            hid_W[l][e] = W * k[:, None]
            hid_b[l][e] = p[f"h{l}.b"][e] - k * mu_l
            u = np.maximum(u @ hid_W[l][e].T + hid_b[l][e], 0)
    out_W = (p["out.w"] * p["out.s"][:, :, None]).astype(F32)
    out_b = p["out.b"].astype(F32)
    return dict(stem_W=stem_W, stem_b=stem_b, router_W=router_W, router_b=router_b,
                hid_W=hid_W, hid_b=hid_b, out_W=out_W, out_b=out_b)


def float_forward(fl, x_u8, top_k):
    x = stem_input(x_u8, 0, True)
    h = np.maximum(x @ fl["stem_W"].T + fl["stem_b"], 0)
    r = h @ fl["router_W"].T + fl["router_b"]
    idx = topk_stable(r, top_k)
    g = softmax(np.take_along_axis(r, idx, 1))
    E = fl["router_W"].shape[0]
    logits = np.zeros((len(x), fl["out_W"].shape[1]), F32)
    for e in range(E):
        rows, slots = np.nonzero(idx == e)
        if rows.size == 0:
            continue
        u = h[rows]
        for W, b in zip(fl["hid_W"], fl["hid_b"]):
            u = np.maximum(u @ W[e].T + b[e], 0)
        logits[rows] += g[rows, slots][:, None] * (u @ fl["out_W"][e].T + fl["out_b"][e])
    return logits


def export_onnx(fl, top_k, path, mode="sparse"):
    """Write the float MoE as ONNX (opset 18) with the onnx helper API.

    Input "x": float32 [N, 784] in 0..1 (x_u8 / 255); output "logits": float32 [N, 10].
    Router: MatMul + Add, TopK (k = top_k, largest, sorted), Softmax over the k selected scores.
    mode "sparse" (model.onnx): the graph is unrolled over the experts; expert e gathers only the rows that
      selected it (Equal/ReduceMax/NonZero/Gather), runs its MLP on that group and ScatterND-adds
      gate * z back into the logits -- the same work as the binary engine's grouped dispatch.
    mode "dense" (model_dense.onnx, checked but not kept; Ops/bench/peers.py rebuilds it): every expert runs on every row as one batched MatMul over [E, N, ·]
      and the logits are the gate-weighted sum with a dense [N, E] gate matrix (zeros for unselected experts);
      E/top_k times more expert FLOPs but no gathers -- often faster in ONNX Runtime at batch 1.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits = [], []
    E = fl["router_W"].shape[0]
    C = fl["out_W"].shape[1]

    def const(name, arr):
        inits.append(numpy_helper.from_array(np.asarray(arr), name))
        return name

    def node(op, ins, outs, **kw):
        nodes.append(helper.make_node(op, ins, outs, **kw))
        return outs[0]

    const("stem_Wt", fl["stem_W"].T.copy())
    const("stem_b", fl["stem_b"])
    const("router_Wt", fl["router_W"].T.copy())
    const("router_b", fl["router_b"])
    const("k", np.array([top_k], np.int64))
    node("MatMul", ["x", "stem_Wt"], ["stem_mm"])
    node("Add", ["stem_mm", "stem_b"], ["stem_pre"])
    node("Relu", ["stem_pre"], ["h"])
    node("MatMul", ["h", "router_Wt"], ["r_mm"])
    node("Add", ["r_mm", "router_b"], ["r"])
    node("TopK", ["r", "k"], ["top_v", "top_i"], axis=1, largest=1, sorted=1)
    node("Softmax", ["top_v"], ["gates"], axis=1)
    L = len(fl["hid_W"])
    if mode == "dense":
        # dense gate matrix G[n, e] = gate if e selected; ScatterElements into zeros of r's shape
        node("Mul", ["r", "zero_f"], ["zeros_ne"])
        const("zero_f", np.array(0, F32))
        node("ScatterElements", ["zeros_ne", "top_i", "gates"], ["G"], axis=1)
        cur = "h"
        for l in range(L):
            const(f"W{l}", np.ascontiguousarray(fl["hid_W"][l].transpose(0, 2, 1)))  # [E, in, out]
            const(f"b{l}", fl["hid_b"][l][:, None, :])  # [E, 1, out]
            node("MatMul", [cur, f"W{l}"], [f"mm{l}"])  # [N,in] x [E,in,out] -> [E,N,out]
            node("Add", [f"mm{l}", f"b{l}"], [f"pre{l}"])
            cur = node("Relu", [f"pre{l}"], [f"u{l}"])
        const("Wo", np.ascontiguousarray(fl["out_W"].transpose(0, 2, 1)))
        const("bo", fl["out_b"][:, None, :])
        node("MatMul", [cur, "Wo"], ["zmm"])
        node("Add", ["zmm", "bo"], ["z"])  # [E, N, C]
        node("Transpose", ["G"], ["Gt"], perm=[1, 0])  # [E, N]
        node("Unsqueeze", ["Gt", "ax2"], ["Gt3"])
        const("ax2", np.array([2], np.int64))
        node("Mul", ["z", "Gt3"], ["zg"])
        node("ReduceSum", ["zg", "ax0"], ["logits"], keepdims=0)
        const("ax0", np.array([0], np.int64))
    else:
        const("ax1", np.array([1], np.int64))
        const("ax_1", np.array([-1], np.int64))
        node("Shape", ["x"], ["xshape"])
        node("Slice", ["xshape", "s0", "s1"], ["n1"])
        const("s0", np.array([0], np.int64))
        const("s1", np.array([1], np.int64))
        const("C1", np.array([C], np.int64))
        node("Concat", ["n1", "C1"], ["nc"], axis=0)
        node("ConstantOfShape", ["nc"], ["logits0"],
             value=helper.make_tensor("v", TensorProto.FLOAT, [1], [0.0]))
        acc = "logits0"
        for e in range(E):
            const(f"e{e}", np.array(e, np.int64))
            node("Equal", ["top_i", f"e{e}"], [f"hit{e}"])  # [N, k] bool
            node("Cast", [f"hit{e}"], [f"hitf{e}"], to=TensorProto.FLOAT)
            node("Mul", [f"hitf{e}", "gates"], [f"gsel{e}"])
            node("ReduceSum", [f"gsel{e}", "ax1"], [f"g{e}"], keepdims=0)  # [N] gate of e (0 if unselected)
            node("ReduceMax", [f"hitf{e}", "ax1"], [f"any{e}"], keepdims=0)
            node("NonZero", [f"any{e}"], [f"nz{e}"])  # [1, n_e]
            node("Transpose", [f"nz{e}"], [f"rows{e}"], perm=[1, 0])  # [n_e, 1]
            node("Reshape", [f"rows{e}", "ax_1"], [f"rowv{e}"])  # [n_e]
            node("Gather", ["h", f"rowv{e}"], [f"he{e}"], axis=0)
            cur = f"he{e}"
            for l in range(L):
                const(f"W{l}_{e}", fl["hid_W"][l][e].T.copy())
                const(f"b{l}_{e}", fl["hid_b"][l][e])
                node("MatMul", [cur, f"W{l}_{e}"], [f"mm{l}_{e}"])
                node("Add", [f"mm{l}_{e}", f"b{l}_{e}"], [f"pre{l}_{e}"])
                cur = node("Relu", [f"pre{l}_{e}"], [f"u{l}_{e}"])
            const(f"Wo_{e}", fl["out_W"][e].T.copy())
            const(f"bo_{e}", fl["out_b"][e])
            node("MatMul", [cur, f"Wo_{e}"], [f"zmm{e}"])
            node("Add", [f"zmm{e}", f"bo_{e}"], [f"z{e}"])
            node("Gather", [f"g{e}", f"rowv{e}"], [f"ge{e}"], axis=0)
            node("Unsqueeze", [f"ge{e}", "ax1"], [f"geu{e}"])
            node("Mul", [f"z{e}", f"geu{e}"], [f"zg{e}"])
            acc = node("ScatterND", [acc, f"rows{e}", f"zg{e}"],
                       ["logits" if e == E - 1 else f"acc{e}"], reduction="add")
    graph = helper.make_graph(
        nodes, f"bitfleet_float_moe_{mode}",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 784])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", C])],
        inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], producer_name="bitfleet-train")
    m.ir_version = 9
    onnx.checker.check_model(m)
    onnx.save(m, path)


# ----------------------------------------------------------------------------------------------------------- main

def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for blk in iter(lambda: f.read(1 << 20), b""):
            h.update(blk)
    return h.hexdigest()


def run_reference(out_dir, x_te, y_te, ref_logits):
    """Run Ops/models/reference.py on the exported directory; compare with our exact-semantics eval."""
    ref = os.path.join(HERE, "reference.py")
    if not os.path.exists(ref):
        print("reference.py not present yet: exported model not cross-checked", flush=True)
        return None
    with tempfile.TemporaryDirectory() as td:
        inp = os.path.join(td, "x.npy")
        outp = os.path.join(td, "out.npz")
        np.save(inp, x_te)
        subprocess.run([sys.executable, ref, out_dir, inp, outp], check=True)
        z = np.load(outp)
        keys = list(z.keys())
        logits = z["logits"] if "logits" in keys else None
        if logits is not None:
            pred = logits.argmax(1)
        else:
            k = next(k for k in keys if k in ("predictions", "pred", "top_class", "classes", "labels"))
            pred = z[k] if z[k].ndim == 1 else z[k][:, 0]
    acc = float((pred == y_te).mean())
    agree = float((pred == ref_logits.argmax(1)).mean())
    maxdiff = float(np.abs(logits - ref_logits).max()) if logits is not None else None
    print(f"reference.py on exported model: test acc {acc * 100:.2f}%  agreement with training eval "
          f"{agree * 100:.3f}%  max |logit diff| {maxdiff}", flush=True)
    return dict(accuracy=acc, agreement=agree, max_logit_diff=maxdiff)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--planes", type=int, default=8, help="input bit planes P (1..8)")
    ap.add_argument("--stem", type=int, default=1024, help="stem width S")
    ap.add_argument("--experts", type=int, default=16)
    ap.add_argument("--top-k", type=int, default=2)
    ap.add_argument("--hidden", type=str, default="256", help="expert hidden widths, comma separated ('' = none)")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--lr", type=float, default=None, help="Adam lr (default 3e-3 binary, 1e-3 float), cosine decay")
    ap.add_argument("--aux", type=float, default=0.01, help="load-balancing loss weight")
    ap.add_argument("--flip", type=int, default=0,
                    help="random horizontal flip augmentation (0/1); off by default: Fashion-MNIST shoes all face one "
                         "way, and flipped copies cost the binary model 2–3 points (MODEL_CARD.md)")
    ap.add_argument("--shift", type=int, default=0, help="random shift augmentation in pixels")
    ap.add_argument("--weight-decay", type=float, default=0.0, help="float baseline only (decoupled)")
    ap.add_argument("--teacher", type=str, default=None, help="float model dir (model.onnx) to distil from")
    ap.add_argument("--kd", type=float, default=0.0, help="distillation weight (0 = off)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--float", action="store_true", help="float baseline (ReLU, float weights), exported to ONNX")
    ap.add_argument("--eval-every", type=int, default=5, help="epochs between exact test evaluations")
    ap.add_argument("--finetune", type=int, default=0,
                    help="extra epochs with batch-norm frozen to population statistics (re-estimated over 20k "
                         "training images at the start of each), so training sees the exported forward pass")
    ap.add_argument("--finetune-lr", type=float, default=3e-4, help="fine-tune Adam lr (cosine decay)")
    ap.add_argument("--init", type=str, default=None, help="latent.npz of an earlier run to start from")
    ap.add_argument("--out", required=True)
    ap.add_argument("--name", default="fashion")
    args = ap.parse_args()
    args.hidden = [int(v) for v in args.hidden.split(",") if v.strip()]
    if args.lr is None:
        args.lr = 1e-3 if args.float else 3e-3
    assert 1 <= args.planes <= 8 and 1 <= args.top_k <= args.experts

    rng = np.random.default_rng(args.seed)
    xtr, ytr, xte, yte = load_fashion()
    model = Model(args, rng)
    if args.init:
        z = np.load(args.init)
        for k in model.p:
            assert z[k].shape == model.p[k].shape, f"--init: {k} shape {z[k].shape} != {model.p[k].shape}"
            model.p[k] = z[k].astype(F32)
    teacher = None
    if args.teacher and args.kd > 0:
        import onnxruntime as ort
        sess = ort.InferenceSession(os.path.join(args.teacher, "model.onnx"), providers=["CPUExecutionProvider"])
        teacher_fn = lambda xb: sess.run(None, {"x": xb.astype(F32) / F32(255)})[0]
        teacher = True
    os.makedirs(args.out, exist_ok=True)
    n = len(xtr)
    steps = args.epochs * (n // args.batch)
    step = 0
    t_start = time.time()
    history = []
    print(f"training {'float' if args.float else 'binary'} MoE: planes={args.planes} stem={args.stem} "
          f"experts={args.experts} top_k={args.top_k} hidden={args.hidden} epochs={args.epochs} "
          f"batch={args.batch} lr={args.lr} aux={args.aux} flip={args.flip} shift={args.shift} "
          f"kd={args.kd} seed={args.seed}", flush=True)
    ft_steps = max(1, args.finetune * (n // args.batch))
    frozen = None
    for ep in range(args.epochs + args.finetune):
        te = time.time()
        if ep >= args.epochs and not args.float:
            _, _, frozen = calibrate_and_fold(model, xtr[:20000])
        perm = rng.permutation(n)
        tl = ta = tx = 0.0
        nb = 0
        use = np.zeros(args.experts)
        for bi in range(n // args.batch):
            ids = perm[bi * args.batch:(bi + 1) * args.batch]
            xb_u8 = augment(xtr[ids], rng, args.flip, args.shift)
            xb = stem_input(xb_u8, args.planes, args.float)
            if frozen is None:
                lr = 0.5 * args.lr * (1 + np.cos(np.pi * step / max(1, steps)))
            else:
                lr = 0.5 * args.finetune_lr * (1 + np.cos(np.pi * (step - steps) / ft_steps))
            tz = teacher_fn(xb_u8) if teacher else None
            loss, aux, acc, f = model.step(xb, ytr[ids], lr, args.aux, tz, args.kd, frozen=frozen)
            tl += loss
            ta += acc
            tx += aux
            use += f
            nb += 1
            step += 1
        line = (f"epoch {ep + 1:3d}/{args.epochs}{'+ft' if frozen else ''}  loss {tl / nb:.4f}  aux {tx / nb:.3f}  train acc "
                f"{ta / nb * 100:.2f}%  expert use min/max {use.min() / nb:.3f}/{use.max() / nb:.3f}  "
                f"{time.time() - te:.1f}s")
        rec = dict(epoch=ep + 1, loss=tl / nb, train_acc=ta / nb, seconds=time.time() - te)
        if (ep + 1) % args.eval_every == 0 or ep + 1 >= args.epochs:
            if args.float:
                fl = fold_float(model, xtr[:20000])
                acc = float((float_forward(fl, xte, args.top_k).argmax(1) == yte).mean())
            else:
                ex, _, _ = calibrate_and_fold(model, xtr[:20000])
                acc = float((exact_forward(ex, xte, args.planes, args.top_k)[0].argmax(1) == yte).mean())
                tr = float((exact_forward(ex, xtr[:10000], args.planes, args.top_k)[0].argmax(1) == ytr[:10000]).mean())
                line += f"  exact-eval train[:10k] {tr * 100:.2f}%"
            line += f"  test acc {acc * 100:.2f}% (calibrated on 20k)"
            rec["test_acc"] = acc
        history.append(rec)
        print(line, flush=True)
    train_seconds = time.time() - t_start
    np.savez(os.path.join(args.out, "latent.npz"), **model.p)  # latent weights, for --init (not committed)

    cmd = "python3 Ops/models/train.py " + " ".join(sys.argv[1:])
    metrics = dict(
        kind="float" if args.float else "binary", planes=args.planes, stem=args.stem, experts=args.experts,
        top_k=args.top_k, hidden=args.hidden, epochs=args.epochs, batch=args.batch, lr=args.lr, aux=args.aux,
        flip=args.flip, shift=args.shift, kd=args.kd, seed=args.seed, finetune=args.finetune,
        finetune_lr=args.finetune_lr, init=args.init, train_seconds=round(train_seconds, 1),
        command=cmd, history=history)

    if args.float:
        fl = fold_float(model, xtr)
        logits = float_forward(fl, xte, args.top_k)
        acc = float((logits.argmax(1) == yte).mean())
        print(f"float model test acc (numpy, BN folded over 60k): {acc * 100:.2f}%", flush=True)
        metrics["test_accuracy"] = acc
        import onnxruntime as ort
        tmpd = tempfile.TemporaryDirectory()  # the dense graph is only checked here; peers.py rebuilds it
        for mode, fname in (("sparse", "model.onnx"), ("dense", "model_dense.onnx")):
            path = os.path.join(args.out if mode == "sparse" else tmpd.name, fname)
            export_onnx(fl, args.top_k, path, mode)
            sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
            ol = sess.run(None, {"x": stem_input(xte, 0, True)})[0]
            oacc = float((ol.argmax(1) == yte).mean())
            print(f"ONNX ({mode}) {fname}: test acc {oacc * 100:.2f}%  max |logit diff| vs numpy "
                  f"{np.abs(ol - logits).max():.2e}  size {os.path.getsize(path)} bytes", flush=True)
            metrics[f"onnx_{mode}_test_accuracy"] = oacc
            metrics[f"onnx_{mode}_bytes"] = os.path.getsize(path)
        nparams = sum(v.size for k, v in fl.items() if not isinstance(v, list)) + \
            sum(w.size for lst in (fl["hid_W"], fl["hid_b"]) for w in lst)
        metrics["float_params"] = int(nparams)
        metrics["float_weight_bytes_fp32"] = int(nparams * 4)
        with open(os.path.join(args.out, "metrics.json"), "w") as f:
            json.dump(metrics, f, indent=2)
        return

    te = time.time()
    ex, use, _ = calibrate_and_fold(model, xtr)
    logits, counts = exact_forward(ex, xte, args.planes, args.top_k)
    acc = float((logits.argmax(1) == yte).mean())
    print(f"exported-semantics eval (BN re-estimated over 60k, folded to integer thresholds): test acc "
          f"{acc * 100:.2f}%  expert use (test) {counts.tolist()}  [{time.time() - te:.1f}s]", flush=True)
    metrics["test_accuracy_exact_eval"] = acc
    metrics["expert_use_test"] = counts.tolist()
    config = {
        "format": "bitfleet.bmoe", "format_version": 1, "name": args.name, "version": "1",
        "input_features": 784, "input_shape": [28, 28], "input_bit_planes": args.planes, "input_scale": 255.0,
        "stem_width": args.stem, "experts": args.experts, "top_k": args.top_k, "expert_hidden": args.hidden,
        "classes": CLASSES,
    }
    sys.path.insert(0, HERE)
    try:
        from export import export_model
    except ImportError:
        export_model = None
    if export_model is None:
        np.savez(os.path.join(args.out, "export_arrays.npz"), **{k: v for k, v in ex.items() if not isinstance(v, list)},
                 **{f"hidden_weights_{i}": w for i, w in enumerate(ex["hidden_weights"])},
                 **{f"hidden_thresholds_{i}": t for i, t in enumerate(ex["hidden_thresholds"])})
        print("export.py not present yet: folded arrays saved to export_arrays.npz", flush=True)
    else:
        export_model(args.out, config, **ex)
        st = os.path.join(args.out, "model.safetensors")
        metrics["safetensors_bytes"] = os.path.getsize(st)
        metrics["sha256"] = sha256_file(st)
        print(f"exported {args.out}: model.safetensors {metrics['safetensors_bytes']} bytes sha256 "
              f"{metrics['sha256']}", flush=True)
        chk = run_reference(args.out, xte, yte, logits)
        if chk:
            metrics["reference_py"] = chk
            if abs(chk["accuracy"] - acc) > 0:
                print("WARNING: exported accuracy differs from the training-time eval (folding bug?)", flush=True)
    with open(os.path.join(args.out, "train_metrics.json"), "w") as f:
        json.dump(metrics, f, indent=2)


if __name__ == "__main__":
    main()
