#!/usr/bin/env python3
"""PyTorch layers for BitFleet binary mixture-of-experts models, and a bit-exact exporter to bitfleet.bmoe v1.

Build a model from these layers, train it like any torch module, calibrate, export:

    import torch
    from bitfleet_torch import Adam, BinaryMoE, calibrate, export_model
    model = BinaryMoE(input_features=784, classes=10, stem=512, experts=8, top_k=2, hidden=[128], planes=4)
    opt = Adam(model.parameters(), 1e-3)      # or torch.optim.Adam
    for xb, yb in loader:                          # xb: uint8 (or integer-valued) [B, 784], 0..255
        logits, aux = model(xb)
        loss = torch.nn.functional.cross_entropy(logits, yb) + 0.05 * aux
        opt.zero_grad(); loss.backward(); opt.step(); model.clip_latent()
    calibrate(model, x_train_u8)                   # optional: population batch-norm statistics, layer by layer
    export_model(model, "my-model", name="my-model", classes=["a", "b", ...], input_scale=255.0)

    out = model.forward_exact(x_u8)                # the engine's integer semantics; equals reference.py on the export

Layers (docs/MODEL_FORMAT.md):
  BinaryStem        input bit planes q = x >> (8-P), sign(W) with the straight-through estimator (STE), batch-norm,
                    sign activation (hardtanh STE).  Exported: packed sign(W) rows + integer thresholds.
  BinaryLinear      XNOR layer u in {+-1}^K -> sign(bn(sign(W) u)); exported like the stem.
  BinaryScaledLinear  z = scale * (sign(W) u) + bias, float32 scale/bias per output (router, expert output).
  Router            BinaryScaledLinear to E scores, top-k (ties to the lower index), gates = softmax of the k
                    selected scores, Switch-style load-balancing loss E * sum_e f_e P_e.
  BinaryMoE         stem -> router -> experts (BinaryLinear... -> BinaryScaledLinear) -> gate-weighted logits.

`binary=False` builds the float twin of the same architecture (float weights, ReLU, input x/255, batch-norm folded
into the linear layers at export: `float_arrays`), which Ops/models/fit.py exports to ONNX.

Batch-norm folding (exactly train.py's, in float64): y = k (a - mu) + beta >= 0 with k = gamma / sqrt(var + eps),
c = mu - beta / k:  k > 0 -> a >= ceil(c);  k < 0 -> weight row negated, -a >= -floor(c);  k = 0 -> the constant
sign(beta): threshold -2^30 (always +1, beta >= 0) or 2^30 (never).  sign(0) = +1 for weights and activations.

The exporter reads only the state_dict (`export_state_dict(state_dict, directory, config)`), so a model trained
elsewhere with the same parameter names exports too.  The state_dict keys are:
    stem.weight [S, D], stem.bn.{weight,bias,running_mean,running_var} [S]
    router.weight [E, S], router.scale [E], router.bias [E]
    experts.{e}.hidden.{l}.weight [H_{l+1}, H_l], experts.{e}.hidden.{l}.bn.* [H_{l+1}]
    experts.{e}.out.weight [C, H_n], experts.{e}.out.scale [C], experts.{e}.out.bias [C]
"""
from __future__ import annotations

import math
import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
BIG_T = 1 << 30


# ----------------------------------------------------------------------------------------------- quantisers (STE)

class _SignWeight(torch.autograd.Function):
    """sign with sign(0) = +1; gradient passed where |w| <= 1 (latent weights are clipped to [-1, 1])."""

    @staticmethod
    def forward(ctx, w):
        ctx.save_for_backward(w)
        return torch.where(w >= 0, torch.ones_like(w), -torch.ones_like(w))

    @staticmethod
    def backward(ctx, g):
        (w,) = ctx.saved_tensors
        return g * (w.abs() <= 1).to(g.dtype)


sign_ste = _SignWeight.apply  # the same hardtanh STE serves activations: gradient where |y| <= 1


def sign(x):
    return torch.where(x >= 0, torch.ones_like(x), -torch.ones_like(x))


def _bn(a, bn: nn.BatchNorm1d):
    """Batch-norm that falls back to running statistics for a group of fewer than 2 rows (an expert that got one
    sample in a batch) instead of failing."""
    use_batch = bn.training and a.shape[0] > 1
    return F.batch_norm(a, bn.running_mean, bn.running_var, bn.weight, bn.bias, training=use_batch,
                        momentum=bn.momentum if bn.momentum is not None else 0.1, eps=bn.eps)


def _glorot(shape, fan_in, fan_out, gen):
    lim = math.sqrt(6.0 / (fan_in + fan_out))
    return (torch.rand(shape, generator=gen) * 2 - 1) * lim


class Adam:
    """torch.optim.Adam's update (no weight decay, no amsgrad) without importing torch._dynamo, which every
    torch.optim optimiser does on construction and which costs seconds at start-up on a small machine."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8):
        self.params = [p for p in params if p.requires_grad]
        self.lr, (self.b1, self.b2), self.eps, self.t = lr, betas, eps, 0
        self.m = [torch.zeros_like(p) for p in self.params]
        self.v = [torch.zeros_like(p) for p in self.params]

    def zero_grad(self):
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self):
        self.t += 1
        c1, c2 = 1 - self.b1 ** self.t, 1 - self.b2 ** self.t
        for p, m, v in zip(self.params, self.m, self.v):
            if p.grad is None:
                continue
            m.mul_(self.b1).add_(p.grad, alpha=1 - self.b1)
            v.mul_(self.b2).addcmul_(p.grad, p.grad, value=1 - self.b2)
            p.addcdiv_(m, (v / c2).sqrt_().add_(self.eps), value=-self.lr / c1)


# ------------------------------------------------------------------------------------------------------- layers

class BinaryStem(nn.Module):
    """x (0..255) -> q = x >> (8-P) -> a = sign(W) q -> batch-norm -> sign.  Float twin: x/255 -> W x -> bn -> ReLU."""

    def __init__(self, in_features, out_features, planes=8, binary=True, gen=None):
        super().__init__()
        if not 1 <= planes <= 8:
            raise ValueError("planes must be in 1...8")
        self.in_features, self.out_features, self.planes, self.binary = in_features, out_features, planes, binary
        if binary:
            w = _glorot((out_features, in_features), in_features, out_features, gen)
        else:
            w = torch.randn((out_features, in_features), generator=gen) * math.sqrt(2.0 / in_features)
        self.weight = nn.Parameter(w)
        self.bn = nn.BatchNorm1d(out_features, eps=1e-5)

    def inputs(self, x):
        """The stem's input: exact small integers q = x >> (8-P) as float32 (binary), or x/255 (float twin)."""
        if self.binary:
            return (torch.as_tensor(x).to(torch.int64) >> (8 - self.planes)).to(torch.float32)
        return torch.as_tensor(x).to(torch.float32) / 255.0

    def preact(self, x):
        return F.linear(self.inputs(x), sign_ste(self.weight) if self.binary else self.weight)

    def forward(self, x):
        y = _bn(self.preact(x), self.bn)
        return sign_ste(y) if self.binary else F.relu(y)


class BinaryLinear(nn.Module):
    """u in {+-1}^K -> sign(bn(sign(W) u)) (binary), or relu(bn(W u)) (float twin)."""

    def __init__(self, in_features, out_features, binary=True, gen=None):
        super().__init__()
        self.binary = binary
        if binary:
            w = _glorot((out_features, in_features), in_features, out_features, gen)
        else:
            w = torch.randn((out_features, in_features), generator=gen) * math.sqrt(2.0 / in_features)
        self.weight = nn.Parameter(w)
        self.bn = nn.BatchNorm1d(out_features, eps=1e-5)

    def preact(self, u):
        return F.linear(u, sign_ste(self.weight) if self.binary else self.weight)

    def forward(self, u):
        y = _bn(self.preact(u), self.bn)
        return sign_ste(y) if self.binary else F.relu(y)


class BinaryScaledLinear(nn.Module):
    """z = scale * (sign(W) u) + bias with a float scale and bias per output (router scores, expert logits)."""

    def __init__(self, in_features, out_features, binary=True, gen=None):
        super().__init__()
        self.binary = binary
        if binary:
            w = _glorot((out_features, in_features), in_features, out_features, gen)
            s = 1.0 / math.sqrt(in_features)
        else:
            w = torch.randn((out_features, in_features), generator=gen) * math.sqrt(1.0 / in_features)
            s = 1.0
        self.weight = nn.Parameter(w)
        self.scale = nn.Parameter(torch.full((out_features,), s))
        self.bias = nn.Parameter(torch.zeros(out_features))

    def forward(self, u):
        d = F.linear(u, sign_ste(self.weight) if self.binary else self.weight)
        return self.scale * d + self.bias


class Router(BinaryScaledLinear):
    """Scores r = scale * (sign(R) h) + bias; the top-k experts (ties to the lower index); gates = softmax(r[top-k]);
    aux = E * sum_e f_e * P_e (f_e: fraction of the top-k slots routed to e, P_e: mean full softmax probability).
    Parameters router.weight [E, S], router.scale [E], router.bias [E]."""

    def __init__(self, in_features, experts, top_k, binary=True, gen=None):
        if not 1 <= top_k <= experts:
            raise ValueError("need 1 <= top_k <= experts")
        super().__init__(in_features, experts, binary, gen)
        self.experts, self.top_k = experts, top_k

    def forward(self, h):
        r = super().forward(h)
        idx = torch.sort(-r.detach(), dim=1, stable=True).indices[:, :self.top_k]
        gates = torch.softmax(torch.gather(r, 1, idx), dim=1)
        f = torch.bincount(idx.reshape(-1), minlength=self.experts).to(r.dtype) / idx.numel()
        aux = self.experts * (f * torch.softmax(r, dim=1).mean(0)).sum()
        return r, idx, gates, aux


class Expert(nn.Module):
    def __init__(self, widths, classes, binary=True, gen=None):
        super().__init__()
        self.hidden = nn.ModuleList(BinaryLinear(widths[l], widths[l + 1], binary, gen) for l in range(len(widths) - 1))
        self.out = BinaryScaledLinear(widths[-1], classes, binary, gen)

    def forward(self, u):
        for layer in self.hidden:
            u = layer(u)
        return self.out(u)


class BinaryMoE(nn.Module):
    """The bitfleet.bmoe v1 architecture. forward(x) takes inputs 0..255 (uint8 or integer-valued) [B, D] and
    returns (logits [B, C], aux load-balancing loss)."""

    def __init__(self, input_features, classes, stem=512, experts=8, top_k=2, hidden=(128,), planes=8, binary=True,
                 seed=0):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.input_features, self.classes, self.stem_width = int(input_features), int(classes), int(stem)
        self.n_experts, self.top_k, self.hidden_widths = int(experts), int(top_k), [int(h) for h in hidden]
        self.planes, self.binary = int(planes), bool(binary)
        self.stem = BinaryStem(self.input_features, self.stem_width, self.planes, binary, gen)
        self.router = Router(self.stem_width, self.n_experts, self.top_k, binary, gen)
        widths = [self.stem_width] + self.hidden_widths
        self.experts = nn.ModuleList(Expert(widths, self.classes, binary, gen) for _ in range(self.n_experts))

    def export_state_dict(self):
        return {k: v.detach().cpu() for k, v in self.state_dict().items()}

    def features(self, x):
        return self.stem(x)

    def forward(self, x):
        h = self.stem(x)
        r, idx, gates, aux = self.router(h)
        logits = torch.zeros((h.shape[0], self.classes), dtype=h.dtype)
        for e in range(self.n_experts):
            rows, slots = torch.nonzero(idx == e, as_tuple=True)
            if rows.numel() == 0:
                continue
            z = self.experts[e](h[rows])
            logits = logits.index_add(0, rows, gates[rows, slots].unsqueeze(1) * z)
        return logits, aux

    @torch.no_grad()
    def clip_latent(self):
        """Clip the latent weights of binary layers to [-1, 1] (call after each optimiser step)."""
        if not self.binary:
            return
        for name, p in self.named_parameters():
            if name.endswith("weight") and p.dim() == 2:
                p.clamp_(-1, 1)

    def bmoe_config(self, name, classes, input_scale, version="1", input_shape=None):
        cfg = {"format": "bitfleet.bmoe", "format_version": 1, "name": name, "version": str(version),
               "input_features": self.input_features, "input_bit_planes": self.planes,
               "input_scale": float(input_scale), "stem_width": self.stem_width, "experts": self.n_experts,
               "top_k": self.top_k, "expert_hidden": list(self.hidden_widths), "classes": [str(c) for c in classes]}
        if input_shape is not None:
            cfg["input_shape"] = [int(s) for s in input_shape]
        return cfg

    def fold(self):
        """The folded export arrays (unpacked +-1 int8 weights, int32 thresholds, float32 scales/biases)."""
        if not self.binary:
            raise ValueError("fold() is for binary models; the float twin folds with float_arrays()")
        return fold_state_dict(self.export_state_dict(), self.bmoe_config("m", range(self.classes), 1.0))

    @torch.no_grad()
    def forward_exact(self, x_u8, arrays=None):
        """The exported model's forward pass with the engine's exact integer semantics, in torch."""
        return exact_forward(arrays if arrays is not None else self.fold(), torch.as_tensor(np.asarray(x_u8)),
                             self.planes, self.top_k)


# --------------------------------------------------------------------------------------------------- folding

def fold_batchnorm(w_sign, gamma, beta, mean, var, eps):
    """Fold y = gamma (a - mean) / sqrt(var + eps) + beta >= 0 into a' >= t on a possibly negated weight row.

    w_sign: +-1 int [N, K]; the others [N].  Returns (weights int8 [N, K], thresholds int32 [N])."""
    k = np.asarray(gamma, np.float64) / np.sqrt(np.asarray(var, np.float64) + float(eps))
    mean = np.asarray(mean, np.float64)
    beta = np.asarray(beta, np.float64)
    w = np.array(w_sign, dtype=np.int8, copy=True)
    t = np.zeros(k.shape, np.int64)
    with np.errstate(divide="ignore", invalid="ignore"):
        c = mean - beta / k
    pos, neg, zer = k > 0, k < 0, k == 0
    t[pos] = np.ceil(np.clip(c[pos], -BIG_T, BIG_T))
    t[neg] = -np.floor(np.clip(c[neg], -BIG_T, BIG_T))
    w[neg] = -w[neg]
    t[zer & (beta >= 0)] = -BIG_T
    t[zer & (beta < 0)] = BIG_T
    return w, t.astype(np.int32)


def _np(t):
    return t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)


def _sign_np(w):
    return np.where(_np(w) >= 0, 1, -1).astype(np.int8)


def fold_state_dict(sd, config, eps=1e-5):
    """Fold a BinaryMoE state_dict (the documented key names) into export.export_model's arrays."""
    E, hidden = int(config["experts"]), list(config["expert_hidden"])

    def need(key):
        if key not in sd:
            raise KeyError(f"state_dict: missing {key!r} (see bitfleet_torch's docstring for the key names)")
        return _np(sd[key])

    def folded(prefix, w):
        return fold_batchnorm(_sign_np(w), need(prefix + ".bn.weight"), need(prefix + ".bn.bias"),
                              need(prefix + ".bn.running_mean"), need(prefix + ".bn.running_var"), eps)

    stem_w, stem_t = folded("stem", need("stem.weight"))
    hw, ht = [], []
    for l in range(len(hidden)):
        ws, ts = zip(*(folded(f"experts.{e}.hidden.{l}", need(f"experts.{e}.hidden.{l}.weight")) for e in range(E)))
        hw.append(np.stack(ws))
        ht.append(np.stack(ts))
    return dict(
        stem_weight=stem_w, stem_threshold=stem_t,
        router_weight=_sign_np(need("router.weight")),
        router_scale=need("router.scale").astype(np.float32), router_bias=need("router.bias").astype(np.float32),
        hidden_weights=hw, hidden_thresholds=ht,
        out_weight=np.stack([_sign_np(need(f"experts.{e}.out.weight")) for e in range(E)]),
        out_scale=np.stack([need(f"experts.{e}.out.scale") for e in range(E)]).astype(np.float32),
        out_bias=np.stack([need(f"experts.{e}.out.bias") for e in range(E)]).astype(np.float32),
    )


def export_state_dict(sd, directory, config):
    """Write `directory` (config.json + model.safetensors) from a BinaryMoE state_dict. Returns the config."""
    sys.path.insert(0, HERE)
    from export import export_model as write_model

    arrays = fold_state_dict(sd, config)
    # export.export_model packs "value >= 0" as bit 1: the +-1 int8 weights pack exactly
    return write_model(directory, config, **arrays)


def export_model(model: BinaryMoE, directory, name, classes, input_scale, version="1", input_shape=None):
    """Export a binary BinaryMoE to a bitfleet.bmoe v1 directory (config.json + model.safetensors)."""
    if not model.binary:
        raise ValueError("export_model writes binary models; the float twin goes to ONNX (fit.py)")
    if len(classes) != model.classes:
        raise ValueError(f"{len(classes)} class names for a model with {model.classes} outputs")
    cfg = model.bmoe_config(name, classes, input_scale, version, input_shape)
    return export_state_dict(model.export_state_dict(), directory, cfg)


# -------------------------------------------------------------------------------------------- exact evaluation

def _softmax32_numpy(v):
    """reference.py's softmax32 (numpy float32 exp and sum): torch's exp (Sleef) differs from numpy's in the last
    bit for a large share of inputs, so the gates are computed the way the reference computes them."""
    v = v.astype(np.float32)
    e = np.exp(v - v.max(axis=-1, keepdims=True)).astype(np.float32)
    return (e / e.sum(axis=-1, keepdims=True, dtype=np.float32)).astype(np.float32)


def _idot(a, b):
    """Exact integer a @ b.T: float64 products and sums of small integers are exact (|values| < 2^53)."""
    return torch.round(a.to(torch.float64) @ b.to(torch.float64).T).to(torch.int64)


@torch.no_grad()
def exact_forward(arrays, x_u8, planes, top_k, chunk=8192):
    """docs/MODEL_FORMAT.md's forward pass on folded arrays: exact integers, float32 multiply-then-add for scales,
    stable top-k (ties to the lower index), logits summed in selection order. Returns reference.forward's keys."""
    x = torch.as_tensor(x_u8)
    if x.dtype != torch.uint8:
        raise ValueError("exact_forward takes uint8 inputs (quantise float inputs with round(x * input_scale) first)")
    W0 = torch.from_numpy(np.asarray(arrays["stem_weight"], np.int64))
    t0 = torch.from_numpy(np.asarray(arrays["stem_threshold"], np.int64))
    R = torch.from_numpy(np.asarray(arrays["router_weight"], np.int64))
    rs = torch.from_numpy(np.asarray(arrays["router_scale"], np.float32))
    rb = torch.from_numpy(np.asarray(arrays["router_bias"], np.float32))
    HW = [torch.from_numpy(np.asarray(w, np.int64)) for w in arrays["hidden_weights"]]
    HT = [torch.from_numpy(np.asarray(t, np.int64)) for t in arrays["hidden_thresholds"]]
    OW = torch.from_numpy(np.asarray(arrays["out_weight"], np.int64))
    OS = torch.from_numpy(np.asarray(arrays["out_scale"], np.float32))
    OB = torch.from_numpy(np.asarray(arrays["out_bias"], np.float32))
    E, C = OW.shape[0], OW.shape[1]
    outs = {k: [] for k in ("stem_pre", "stem_bits", "router_scores", "experts", "gates", "logits", "probabilities")}
    for i in range(0, x.shape[0], chunk):
        q = x[i:i + chunk].to(torch.int64) >> (8 - planes)
        a = _idot(q, W0)
        h = torch.where(a >= t0, 1, -1).to(torch.int64)
        d = _idot(h, R)
        scores = rs * d.to(torch.float32)          # float32 multiply, then add (two roundings, no FMA)
        scores = scores + rb
        idx = torch.sort(-scores, dim=1, stable=True).indices[:, :top_k]
        sel = torch.gather(scores, 1, idx)
        gates = torch.from_numpy(_softmax32_numpy(sel.numpy()))
        logits = torch.zeros((h.shape[0], C), dtype=torch.float32)
        for slot in range(top_k):
            z = torch.zeros((h.shape[0], C), dtype=torch.float32)
            for e in torch.unique(idx[:, slot]).tolist():
                rows = torch.nonzero(idx[:, slot] == e, as_tuple=True)[0]
                u = h[rows]
                for w, t in zip(HW, HT):
                    u = torch.where(_idot(u, w[e]) >= t[e], 1, -1).to(torch.int64)
                zz = OS[e] * _idot(u, OW[e]).to(torch.float32)
                z[rows] = zz + OB[e]
            logits = logits + gates[:, slot:slot + 1] * z
        outs["stem_pre"].append(a)
        outs["stem_bits"].append((h > 0).to(torch.uint8))
        outs["router_scores"].append(scores)
        outs["experts"].append(idx)
        outs["gates"].append(gates)
        outs["logits"].append(logits)
        outs["probabilities"].append(torch.from_numpy(_softmax32_numpy(logits.numpy())))
    return {k: torch.cat(v).numpy() for k, v in outs.items()}


# ------------------------------------------------------------------------------------------------ calibration

def _set_stats(bn, s1, s2, n):
    if n >= 2:
        mean = s1 / n
        var = np.maximum(s2 / n - mean * mean, 0.0)
    else:  # an expert no sample reached: any consistent statistics
        mean, var = np.zeros_like(s1), np.ones_like(s1)
    bn.running_mean.copy_(torch.from_numpy(mean.astype(np.float32)))
    bn.running_var.copy_(torch.from_numpy(var.astype(np.float32)))


@torch.no_grad()
def calibrate(model: BinaryMoE, x_u8, chunk=4096):
    """Re-estimate every batch-norm's statistics over x_u8 in inference mode, layer by layer (population mean and
    biased variance, float64 sums), each layer seeing the exported (thresholded) output of the one before: what
    train.py does before folding. Leaves the model in eval mode."""
    model.eval()
    x = torch.as_tensor(np.asarray(x_u8))
    n = x.shape[0]
    S = model.stem_width
    s1, s2 = np.zeros(S), np.zeros(S)
    for i in range(0, n, chunk):
        a = model.stem.preact(x[i:i + chunk]).to(torch.float64).numpy()
        s1 += a.sum(0)
        s2 += (a * a).sum(0)
    _set_stats(model.stem.bn, s1, s2, n)
    if model.binary:
        w, t = fold_batchnorm(_sign_np(model.stem.weight), *(_np(v) for v in (
            model.stem.bn.weight, model.stem.bn.bias, model.stem.bn.running_mean, model.stem.bn.running_var)),
            model.stem.bn.eps)
        W0, T0 = torch.from_numpy(w.astype(np.int64)), torch.from_numpy(t.astype(np.int64))
        h = torch.cat([torch.where(_idot(model.stem.inputs(x[i:i + chunk]).to(torch.int64), W0) >= T0, 1, -1)
                       .to(torch.int8) for i in range(0, n, chunk)])
    else:
        h = torch.cat([model.stem(x[i:i + chunk]) for i in range(0, n, chunk)])
    idx = torch.cat([model.router(h[i:i + chunk].to(torch.float32))[1] for i in range(0, n, chunk)])
    for e in range(model.n_experts):
        rows = torch.nonzero((idx == e).any(1), as_tuple=True)[0]
        u = h[rows].to(torch.float32)
        for layer in model.experts[e].hidden:
            a = layer.preact(u).to(torch.float64).numpy()
            _set_stats(layer.bn, a.sum(0), (a * a).sum(0), len(rows))
            if model.binary:
                w, t = fold_batchnorm(_sign_np(layer.weight), *(_np(v) for v in (
                    layer.bn.weight, layer.bn.bias, layer.bn.running_mean, layer.bn.running_var)), layer.bn.eps)
                u = torch.where(_idot(u.to(torch.int64), torch.from_numpy(w.astype(np.int64)))
                                >= torch.from_numpy(t.astype(np.int64)), 1.0, -1.0)
            else:
                u = layer(u)
    return model


# ------------------------------------------------------------------------------------------------- float twin

@torch.no_grad()
def float_arrays(model: BinaryMoE):
    """The float twin with batch-norm folded into each linear layer: train.py's export_onnx input (its ONNX graph
    takes x/255)."""
    if model.binary:
        raise ValueError("float_arrays is for the float twin (binary=False)")

    def fold(layer):
        bn = layer.bn
        k = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        return (layer.weight * k[:, None]).numpy().astype(np.float32), \
            (bn.bias - k * bn.running_mean).numpy().astype(np.float32)

    stem_W, stem_b = fold(model.stem)
    L = len(model.hidden_widths)
    hid = [[fold(model.experts[e].hidden[l]) for e in range(model.n_experts)] for l in range(L)]
    r = model.router
    return dict(
        stem_W=stem_W, stem_b=stem_b,
        router_W=(r.weight * r.scale[:, None]).numpy().astype(np.float32), router_b=r.bias.numpy().astype(np.float32),
        hid_W=[np.stack([w for w, _ in hid[l]]) for l in range(L)],
        hid_b=[np.stack([b for _, b in hid[l]]) for l in range(L)],
        out_W=np.stack([(x.out.weight * x.out.scale[:, None]).numpy() for x in model.experts]).astype(np.float32),
        out_b=np.stack([x.out.bias.numpy() for x in model.experts]).astype(np.float32),
    )
