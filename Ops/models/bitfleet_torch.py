#!/usr/bin/env python3
"""PyTorch layers for BitFleet binary mixture-of-experts models, and a bit-exact exporter to bitfleet.bmoe v1/v2.

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
  BinaryConv        format-v2 conv front on a one-channel [H, W] image: q = x >> (8-P), C binary k x k filters
                    (STE; F.unfold + matmul), batch-norm, sign, max-pool (= OR-pooling), flattened (c, y, x).
                    Exported: packed filters + integer thresholds (conv.weight/conv.threshold), the next layer's
                    columns permuted to the format's (y, x, c) feature order, format_version 2.
  BinaryConv2       format-v4 second conv over BinaryConv's pooled +-1 map [B, C1, Hp, Wp]: C2 binary k x k x C1
                    filters (weight [C2, k*k*C1], taps (ky*k + kx)*C1 + c), stride s, no padding, batch-norm, sign,
                    max-pool, flattened (c, y, x).  Exported: conv2.weight/conv2.threshold, format_version 4, the
                    next layer's columns permuted to (y, x, c) as for the first conv.
  BinaryMoE         [conv [-> conv2] ->] stem -> router -> experts (BinaryLinear... -> BinaryScaledLinear) -> gate-weighted
                    logits.  BinaryMoE(conv=dict(channels=32, kernel=5, stride=1, padding=2, pool=4),
                    input_shape=(28, 28), stem=0 or S, ...): with a conv front the stem is a BinaryLinear over the
                    pooled conv features, and stem=0 means no stem (router and experts read the features);
                    conv2=dict(channels=48, kernel=3, stride=1, pool=1) adds the second conv, whose features then
                    take the first conv's place.

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
    (a 2-level layer, format v6, config "expert_hidden_levels": also experts.{e}.hidden.{l}.offset [H_{l+1}], and
    the layer after it reads 2 H_{l+1} inputs)
    experts.{e}.out.weight [C, H_n], experts.{e}.out.scale [C], experts.{e}.out.bias [C]
    with a conv front: conv.weight [channels, k*k] (or [channels, 1, k, k]), conv.bn.* [channels]; with a conv2
    block: conv2.weight [C2, k2*k2*C1] (taps (ky*k2 + kx)*C1 + c), conv2.bn.* [C2]; the layer reading
    the conv features (stem, or with stem 0 the router and the experts' first layer) has its columns in torch's
    (c, y, x) flatten order; config (bmoe_config) carries "conv" (and "conv2") and "input_shape".
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


def two_bit_levels(w):
    """2-bit weights of a conv front (format v5, "weight_bits": 2), row by row: level = 2 floor(w / m) + 1 clamped to
    {-3, -1, 1, 3}, m = the row's mean |w| (so |w| >= m gives +-3). Torch or numpy; the exporter's integers."""
    if isinstance(w, torch.Tensor):
        m = w.abs().mean(-1, keepdim=True).clamp_min(1e-8)
        return (2 * torch.floor(w / m) + 1).clamp(-3, 3)
    w = np.asarray(w, np.float32)
    m = np.maximum(np.abs(w).mean(-1, keepdims=True, dtype=np.float32), np.float32(1e-8))
    return np.clip(2 * np.floor(w / m) + 1, -3, 3).astype(np.int8)


class _TwoBitWeight(torch.autograd.Function):
    """two_bit_levels with the straight-through gradient of _SignWeight (passed where |w| <= 1)."""

    @staticmethod
    def forward(ctx, w):
        ctx.save_for_backward(w)
        return two_bit_levels(w)

    @staticmethod
    def backward(ctx, g):
        (w,) = ctx.saved_tensors
        return g * (w.abs() <= 1).to(g.dtype)


two_bit_ste = _TwoBitWeight.apply


def _quantised(layer, w):
    """What a binary layer computes with in place of its latent weights: sign(W), or a 2-bit conv's levels."""
    return two_bit_ste(w) if getattr(layer, "weight_bits", 1) == 2 else sign_ste(w)


def weight_levels_np(layer_or_weight, bits=1):
    """The exported integer weights of latent weights (numpy): signs (+-1), or with bits 2 the levels -3..3."""
    w = _np(getattr(layer_or_weight, "weight", layer_or_weight))
    w = w.reshape(w.shape[0], -1)
    return two_bit_levels(w) if bits == 2 else _sign_np(w)


def sign(x):
    return torch.where(x >= 0, torch.ones_like(x), -torch.ones_like(x))


def _weight(layer):
    """The weight a layer computes with: sign(W) with the STE for a binary layer, W for the float twin, and W as well
    for a binary layer in its real-weight warm-up (BinaryMoE.set_real_weights: binary activations, real weights)."""
    if layer.binary and not getattr(layer, "real_weights", False):
        return _quantised(layer, layer.weight)
    lam = getattr(layer, "binarise", 0.0) if layer.binary else 0.0
    if lam > 0:
        # gradual binarisation (BinaryMoE.set_binarise): part way from W to mean|W| * sign(W), row by row; at 1 this
        # equals what set_real_weights(False) gives under batch statistics (the scaled layers take mean |W| into their
        # scale on that switch; the layers followed by batch-norm have it normalised away)
        w = layer.weight
        q = _quantised(layer, w)
        a = w.detach().abs().mean(1, keepdim=True) / q.detach().abs().mean(1, keepdim=True)
        return lam * a * q + (1 - lam) * w
    return layer.weight


def _bn(a, bn: nn.BatchNorm1d):
    """Batch-norm that falls back to running statistics for a group of fewer than 2 rows (an expert that got one
    sample in a batch) instead of failing."""
    use_batch = bn.training and a.shape[0] > 1
    return F.batch_norm(a, bn.running_mean, bn.running_var, bn.weight, bn.bias, training=use_batch,
                        momentum=bn.momentum if bn.momentum is not None else 0.1, eps=bn.eps)


def _glorot(shape, fan_in, fan_out, gen):
    lim = math.sqrt(6.0 / (fan_in + fan_out))
    return (torch.rand(shape, generator=gen) * 2 - 1) * lim


def _init_weight(out_features, in_features, binary, gen):
    """Latent weights of a binary layer (Glorot uniform: their signs are the weights), or He normal for the float twin."""
    if binary:
        return _glorot((out_features, in_features), in_features, out_features, gen)
    return torch.randn((out_features, in_features), generator=gen) * math.sqrt(2.0 / in_features)


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
        self.weight = nn.Parameter(_init_weight(out_features, in_features, binary, gen))
        self.bn = nn.BatchNorm1d(out_features, eps=1e-5)

    def inputs(self, x):
        """The stem's input: exact small integers q = x >> (8-P) as float32 (binary), or x/255 (float twin)."""
        if self.binary:
            return (torch.as_tensor(x).to(torch.int64) >> (8 - self.planes)).to(torch.float32)
        return torch.as_tensor(x).to(torch.float32) / 255.0

    def preact(self, x):
        return F.linear(self.inputs(x), _weight(self))

    def forward(self, x):
        y = _bn(self.preact(x), self.bn)
        return sign_ste(y) if self.binary else F.relu(y)


def conv_geometry(input_shape, kernel, stride=1, padding=0, pool=1):
    """(Ho, Wo, Hp, Wp) of the conv front (docs/MODEL_FORMAT.md "Conv front"): integer division, pooled positions
    past Hp * pool dropped."""
    H, W = (int(v) for v in input_shape)
    Ho, Wo = (H + 2 * padding - kernel) // stride + 1, (W + 2 * padding - kernel) // stride + 1
    return Ho, Wo, Ho // pool, Wo // pool


def _bn2d(a, bn: nn.BatchNorm2d):
    use_batch = bn.training and a.shape[0] * a.shape[2] * a.shape[3] > 1
    return F.batch_norm(a, bn.running_mean, bn.running_var, bn.weight, bn.bias, training=use_batch,
                        momentum=bn.momentum if bn.momentum is not None else 0.1, eps=bn.eps)


class BinaryConv(nn.Module):
    """Format-v2 conv front on a one-channel [H, W] image: q = x >> (8-P) (zero padding), C binary k x k filters
    sign(W) with the STE, per-channel batch-norm, sign activation, max-pool (= OR-pooling of +-1), flattened the torch
    way, (c, y, x) (the exporter permutes the next layer's columns to the format's (y, x, c)).  Float twin: x/255,
    float filters, batch-norm, ReLU, max-pool.  The conv is F.unfold + one matmul (much faster on CPU than F.conv2d
    with one input channel).  Parameters conv.weight [C, k*k] (window row by row, ky*k + kx), conv.bn.* [C].
    weight_bits=2 (format v5): the filters compute with two_bit_levels(W) in {-3, -1, 1, 3} instead of sign(W)."""

    def __init__(self, input_shape, channels, kernel, stride=1, padding=0, pool=1, planes=8, binary=True, gen=None,
                 weight_bits=1):
        super().__init__()
        if weight_bits not in (1, 2):
            raise ValueError(f"conv: weight_bits must be 1 or 2 (got {weight_bits})")
        self.weight_bits = int(weight_bits)
        self.input_shape = tuple(int(v) for v in input_shape)
        self.channels, self.kernel, self.stride = int(channels), int(kernel), int(stride)
        self.padding, self.pool, self.planes, self.binary = int(padding), int(pool), int(planes), bool(binary)
        if len(self.input_shape) != 2:
            raise ValueError("the conv front takes one-channel images: input_shape (H, W)")
        if not (1 <= self.channels <= 64 and 1 <= self.kernel <= 15 and 1 <= self.stride <= self.kernel
                and 0 <= self.padding < self.kernel and self.pool >= 1):
            raise ValueError("conv: need 1 <= channels <= 64, 1 <= kernel <= 15, 1 <= stride <= kernel, "
                             "0 <= padding < kernel, pool >= 1")
        self.out_hw = conv_geometry(self.input_shape, self.kernel, self.stride, self.padding, self.pool)
        if min(self.out_hw) < 1:
            raise ValueError(f"conv: no output position left for input {self.input_shape}")
        Hp, Wp = self.out_hw[2], self.out_hw[3]
        self.features = Hp * Wp * self.channels
        kk = self.kernel * self.kernel
        self.weight = nn.Parameter(_init_weight(self.channels, kk, binary, gen))
        self.bn = nn.BatchNorm2d(self.channels, eps=1e-5)

    def inputs(self, x):
        """[B, 1, H, W]: exact integers q = x >> (8-P) as float32 (binary), or x/255 (float twin)."""
        x = torch.as_tensor(x)
        if self.binary:
            x = (x.to(torch.int64) >> (8 - self.planes)).to(torch.float32)
        else:
            x = x.to(torch.float32) / 255.0
        return x.reshape(x.shape[0], 1, *self.input_shape)

    def preact(self, x, weight=None):
        """Pre-activations [B, C, Ho, Wo] (exact integers in float32 for the binary layer)."""
        if weight is None:
            weight = _weight(self)
        cols = F.unfold(self.inputs(x), self.kernel, padding=self.padding, stride=self.stride)   # [B, k*k, L]
        a = torch.matmul(weight, cols)                                                            # [B, C, L]
        return a.reshape(a.shape[0], self.channels, self.out_hw[0], self.out_hw[1])

    def forward_map(self, x):
        """The pooled map [B, C, Hp, Wp] (+-1 for the binary layer), what a second conv (BinaryConv2) reads."""
        y = _bn2d(self.preact(x), self.bn)
        y = sign_ste(y) if self.binary else F.relu(y)
        if self.pool > 1:
            y = F.max_pool2d(y, self.pool)
        else:
            y = y[:, :, :self.out_hw[2], :self.out_hw[3]]
        return y

    def forward(self, x):
        return self.forward_map(x).flatten(1)                                                     # (c, y, x)


def conv2_geometry(in_hw, kernel, stride=1, pool=1):
    """(Ho2, Wo2, Hp2, Wp2) of the second conv (docs/MODEL_FORMAT.md "Second conv layer"): no padding, integer
    division, pooled positions past Hp2 * pool dropped."""
    Hp, Wp = (int(v) for v in in_hw)
    Ho, Wo = (Hp - kernel) // stride + 1, (Wp - kernel) // stride + 1
    if Hp < kernel or Wp < kernel:
        Ho = Wo = 0
    return Ho, Wo, Ho // pool, Wo // pool


def conv2_torch_weight(w, kernel, in_channels):
    """[C2, k*k*C1] in the format's tap order (ky*k + kx)*C1 + c -> a conv2d weight [C2, C1, k, k]."""
    return w.reshape(w.shape[0], kernel, kernel, in_channels).permute(0, 3, 1, 2)


class BinaryConv2(nn.Module):
    """Format-v4 second conv on the first conv's pooled +-1 map [B, C1, Hp, Wp]: C2 binary k x k x C1 filters sign(W)
    with the STE, stride s, no padding, per-channel batch-norm, sign activation, max-pool (= OR-pooling),
    flattened the torch way (c, y, x).  Float twin: float filters over the float map, batch-norm, ReLU, max-pool.
    Parameters conv2.weight [C2, k*k*C1] (taps in the format's order (ky*k + kx)*C1 + c), conv2.bn.* [C2]."""

    def __init__(self, in_shape, channels, kernel, stride=1, pool=1, binary=True, gen=None):
        super().__init__()
        self.in_shape = tuple(int(v) for v in in_shape)            # (Hp, Wp, C1)
        self.channels, self.kernel, self.stride, self.pool = int(channels), int(kernel), int(stride), int(pool)
        self.binary = bool(binary)
        if not (1 <= self.channels <= 256 and 1 <= self.kernel <= 7 and 1 <= self.stride <= self.kernel
                and self.pool >= 1):
            raise ValueError("conv2: need 1 <= channels <= 256, 1 <= kernel <= 7, 1 <= stride <= kernel, pool >= 1")
        self.out_hw = conv2_geometry(self.in_shape[:2], self.kernel, self.stride, self.pool)
        if min(self.out_hw) < 1:
            raise ValueError(f"conv2: no pooled position left on the first conv's {self.in_shape[0]}x"
                             f"{self.in_shape[1]} map")
        self.features = self.out_hw[2] * self.out_hw[3] * self.channels
        taps = self.kernel * self.kernel * self.in_shape[2]
        self.weight = nn.Parameter(_init_weight(self.channels, taps, binary, gen))
        self.bn = nn.BatchNorm2d(self.channels, eps=1e-5)

    def preact(self, u, weight=None):
        """Pre-activations [B, C2, Ho2, Wo2] of the map u [B, C1, Hp, Wp] (exact integers for +-1 inputs)."""
        if weight is None:
            weight = _weight(self)
        w = conv2_torch_weight(weight, self.kernel, self.in_shape[2])
        return F.conv2d(u.to(w.dtype), w, stride=self.stride)

    def forward(self, u):
        y = _bn2d(self.preact(u), self.bn)
        y = sign_ste(y) if self.binary else F.relu(y)
        if self.pool > 1:
            y = F.max_pool2d(y, self.pool)
        else:
            y = y[:, :, :self.out_hw[2], :self.out_hw[3]]
        return y.flatten(1)                                                                       # (c, y, x)


class BinaryLinear(nn.Module):
    """u in {+-1}^K -> sign(bn(sign(W) u)) (binary), or relu(bn(W u)) (float twin).

    levels=2 (binary only; format v6 "expert_hidden_levels"): two bits per unit, [sign(y + a), sign(y - a)] for
    y = bn(sign(W) u) and a learnt offset a per unit (parameter `offset`): two integer thresholds on the same
    pre-activation, 2 H outputs (all units' first bits, then their second)."""

    def __init__(self, in_features, out_features, binary=True, gen=None, levels=1):
        super().__init__()
        if levels not in (1, 2) or (levels == 2 and not binary):
            raise ValueError(f"levels {levels}: 1, or 2 for a binary layer")
        self.binary, self.levels = binary, int(levels)
        self.weight = nn.Parameter(_init_weight(out_features, in_features, binary, gen))
        self.bn = nn.BatchNorm1d(out_features, eps=1e-5)
        if self.levels == 2:
            self.offset = nn.Parameter(torch.full((out_features,), 0.5))

    def preact(self, u):
        return F.linear(u, _weight(self))

    def forward(self, u):
        y = _bn(self.preact(u), self.bn)
        if self.levels == 2:
            return torch.cat([sign_ste(y + self.offset), sign_ste(y - self.offset)], dim=1)
        return sign_ste(y) if self.binary else F.relu(y)

    def level_biases(self, beta):
        """The batch-norm bias of each level's sign, numpy [levels, H] (level_biases below)."""
        return level_biases(beta, _np(self.offset) if self.levels == 2 else None)


def level_biases(beta, offset=None):
    """The batch-norm bias of each level's sign, numpy [levels, H]: beta (one level), or beta + offset and
    beta - offset (a 2-level layer, format v6): what each level's threshold folds from."""
    beta = np.asarray(beta)
    return beta[None, :] if offset is None else np.stack([beta + offset, beta - offset])


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
        d = F.linear(u, _weight(self))
        return self.scale * d + self.bias


class Router(BinaryScaledLinear):
    """Scores r = scale * (sign(R) h) + bias; the top-k experts (ties to the lower index); gates = softmax(r[top-k]);
    aux = E * sum_e f_e * P_e (f_e: fraction of the top-k slots routed to e, P_e: mean full softmax probability).
    Parameters router.weight [E, S], router.scale [E], router.bias [E].

    With top-1 the gate is softmax of one score, the constant 1, so the task loss would never reach the router (only
    the load-balancing loss would train it). There the gate is p / p.detach() for the chosen expert's full softmax
    probability p: exactly 1 in the forward pass (the exported semantics are unchanged), and in the backward pass
    the gradient of log p times the loss's gradient with respect to the gate, as in Switch Transformer's gate p."""

    def __init__(self, in_features, experts, top_k, binary=True, gen=None):
        if not 1 <= top_k <= experts:
            raise ValueError("need 1 <= top_k <= experts")
        super().__init__(in_features, experts, binary, gen)
        self.experts, self.top_k = experts, top_k

    def forward(self, h):
        r = super().forward(h)
        idx = torch.sort(-r.detach(), dim=1, stable=True).indices[:, :self.top_k]
        if self.top_k == 1:
            p = torch.gather(torch.softmax(r, dim=1), 1, idx)
            gates = p / p.detach()
        else:
            gates = torch.softmax(torch.gather(r, 1, idx), dim=1)
        f = torch.bincount(idx.reshape(-1), minlength=self.experts).to(r.dtype) / idx.numel()
        aux = self.experts * (f * torch.softmax(r, dim=1).mean(0)).sum()
        return r, idx, gates, aux


class Expert(nn.Module):
    def __init__(self, widths, classes, binary=True, gen=None, levels=None):
        super().__init__()
        levels = [1] * (len(widths) - 1) if levels is None else list(levels)
        ins = [widths[0]] + [lv * w for lv, w in zip(levels, widths[1:])]   # a 2-level layer gives 2 H bits
        self.hidden = nn.ModuleList(BinaryLinear(ins[l], widths[l + 1], binary, gen, levels[l])
                                    for l in range(len(widths) - 1))
        self.out = BinaryScaledLinear(ins[-1], classes, binary, gen)

    def forward(self, u):
        for layer in self.hidden:
            u = layer(u)
        return self.out(u)


class BinaryMoE(nn.Module):
    """The bitfleet.bmoe architecture. forward(x) takes inputs 0..255 (uint8 or integer-valued) [B, D] and
    returns (logits [B, C], aux load-balancing loss).

    conv=dict(channels, kernel, stride=1, padding=0, pool=1) with input_shape=(H, W) puts a BinaryConv front before
    the stem (format v2): the stem is then a BinaryLinear over the F pooled conv features, and stem=0 means no stem
    (the router and the experts read the F features)."""

    def __init__(self, input_features=None, classes=None, stem=512, experts=8, top_k=2, hidden=(128,), planes=8,
                 binary=True, seed=0, conv=None, input_shape=None, conv2=None, hidden_levels=None):
        super().__init__()
        if classes is None:
            raise ValueError("BinaryMoE: classes (the number of outputs) is required")
        gen = torch.Generator().manual_seed(seed)
        if conv is not None:
            if input_shape is None or len(input_shape) != 2:
                raise ValueError("a conv front needs input_shape (H, W)")
            if input_features is not None and int(input_features) != input_shape[0] * input_shape[1]:
                raise ValueError(f"input_features {input_features} != H*W of input_shape {tuple(input_shape)}")
            input_features = input_shape[0] * input_shape[1]
        elif input_features is None:
            raise ValueError("BinaryMoE: input_features is required")
        self.input_features, self.classes, self.stem_width = int(input_features), int(classes), int(stem)
        self.n_experts, self.top_k, self.hidden_widths = int(experts), int(top_k), [int(h) for h in hidden]
        self.planes, self.binary = int(planes), bool(binary)
        # format v6: two thresholds per unit in the binary experts' hidden layers (the float twin has none)
        levels = [1] * len(self.hidden_widths) if hidden_levels is None else [int(v) for v in hidden_levels]
        if len(levels) != len(self.hidden_widths) or any(v not in (1, 2) for v in levels):
            raise ValueError(f"hidden_levels {hidden_levels}: 1 or 2 for each of the {len(self.hidden_widths)} "
                             f"expert hidden layers")
        self.hidden_levels = levels if binary else [1] * len(levels)
        self.input_shape = None if input_shape is None else [int(v) for v in input_shape]
        self.conv_cfg = self.conv2_cfg = None
        if conv2 is not None and conv is None:
            raise ValueError("a second conv (conv2) needs a conv front (conv)")
        if conv is not None:
            c = {k: int(conv[k]) if d is None else int(conv.get(k, d)) for k, d in
                 [("channels", None), ("kernel", None), ("stride", 1), ("padding", 0), ("pool", 1)]}
            if int(conv.get("weight_bits", 1)) != 1:
                c["weight_bits"] = int(conv["weight_bits"])
            self.conv_cfg = c
            self.conv = BinaryConv(self.input_shape, c["channels"], c["kernel"], c["stride"], c["padding"], c["pool"],
                                   self.planes, binary, gen, weight_bits=c.get("weight_bits", 1))
            F_ = self.conv.features
            if conv2 is not None:
                c2 = {k: int(conv2[k]) if d is None else int(conv2.get(k, d)) for k, d in
                      [("channels", None), ("kernel", None), ("stride", 1), ("pool", 1)]}
                self.conv2_cfg = c2
                self.conv2 = BinaryConv2((self.conv.out_hw[2], self.conv.out_hw[3], c["channels"]), c2["channels"],
                                         c2["kernel"], c2["stride"], c2["pool"], binary, gen)
                F_ = self.conv2.features
            if self.stem_width < 0:
                raise ValueError("stem must be >= 0 (0: no stem, the conv features feed the router and experts)")
            self.stem = BinaryLinear(F_, self.stem_width, binary, gen) if self.stem_width > 0 else None
            width = self.stem_width or F_
        else:
            if self.stem_width < 1:
                raise ValueError("stem must be >= 1 (stem 0 needs a conv front)")
            self.stem = BinaryStem(self.input_features, self.stem_width, self.planes, binary, gen)
            width = self.stem_width
        self.router = Router(width, self.n_experts, self.top_k, binary, gen)
        widths = [width] + self.hidden_widths
        self.experts = nn.ModuleList(Expert(widths, self.classes, binary, gen, self.hidden_levels)
                                     for _ in range(self.n_experts))

    def export_state_dict(self):
        return {k: v.detach().cpu() for k, v in self.state_dict().items()}

    def features(self, x):
        if self.conv_cfg is not None:
            f = self.conv(x) if self.conv2_cfg is None else self.conv2(self.conv.forward_map(x))
            return f if self.stem is None else self.stem(f)
        return self.stem(x)

    def forward(self, x):
        h = self.features(x)
        r, idx, gates, aux = self.router(h)
        logits = torch.zeros((h.shape[0], self.classes), dtype=h.dtype)
        for e in range(self.n_experts):
            rows, slots = torch.nonzero(idx == e, as_tuple=True)
            if rows.numel() == 0:
                continue
            z = self.experts[e](h[rows])
            logits = logits.index_add(0, rows, gates[rows, slots].unsqueeze(1) * z)
        return logits, aux

    def binary_layers(self):
        """Every layer with latent weights that the binary model computes with as signs (conv fronts, stem, router,
        expert layers): the layers that set_real_weights and set_binarise switch."""
        return [m for m in self.modules()
                if isinstance(m, (BinaryStem, BinaryConv, BinaryConv2, BinaryLinear, BinaryScaledLinear))]

    @torch.no_grad()
    def set_real_weights(self, on):
        """Two-step training (as in ReActNet): with on=True every binary layer computes with its real latent weights
        while activations stay binary; with on=False (the default state) with their signs again. Each switch rescales the
        scaled layers (router, expert outputs) by their rows' mean |W| (divide when turning real weights on, multiply
        when turning them off), so that scale * sign(W) u and scale * W u start near each other; layers followed by
        batch-norm need nothing."""
        if not self.binary:
            raise ValueError("set_real_weights is for binary models")
        for m in self.binary_layers():
            was = getattr(m, "real_weights", False)
            if was != bool(on) and isinstance(m, BinaryScaledLinear):
                a = m.weight.abs().mean(1).clamp_min(1e-8)
                if was:
                    m.scale.mul_(a)
                else:
                    m.scale.div_(a)
            m.real_weights = bool(on)

    def set_binarise(self, lam):
        """Gradual binarisation (fit.py --binarise-ramp), in the real-weight state only: every binary layer computes
        with (1 - lam) W + lam mean|W| sign(W) (mean per output row), lam in [0, 1]. Under batch statistics (training
        mode, where each batch-norm divides the row scale mean|W| away) lam = 1 computes what the model computes after
        set_real_weights(False); lam = 0 is the plain real-weight state."""
        if not self.binary:
            raise ValueError("set_binarise is for binary models")
        lam = float(lam)
        if not 0.0 <= lam <= 1.0:
            raise ValueError(f"binarise {lam}: must be in [0, 1]")
        layers = self.binary_layers()
        if lam > 0 and not all(getattr(m, "real_weights", False) for m in layers):
            raise ValueError("set_binarise needs the real-weight state (set_real_weights(True))")
        for m in layers:
            m.binarise = lam

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
        if self.conv_cfg is not None:
            if input_shape is not None and [int(s) for s in input_shape] != self.input_shape:
                raise ValueError(f"input_shape {list(input_shape)} differs from the conv model's {self.input_shape}")
            input_shape = self.input_shape
            cfg["format_version"] = 2
            cfg["conv"] = dict(self.conv_cfg)
            if self.conv2_cfg is not None:
                cfg["format_version"] = 4
                cfg["conv2"] = dict(self.conv2_cfg)
            if self.conv_cfg.get("weight_bits", 1) == 2:
                cfg["format_version"] = 5
        if any(v != 1 for v in self.hidden_levels):
            cfg["format_version"] = 6
            cfg["expert_hidden_levels"] = list(self.hidden_levels)
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
        conv = None if self.conv_cfg is None else dict(self.conv_cfg, input_shape=self.input_shape)
        if self.conv2_cfg is not None:
            conv["conv2"] = dict(self.conv2_cfg)
        return exact_forward(arrays if arrays is not None else self.fold(), torch.as_tensor(np.asarray(x_u8)),
                             self.planes, self.top_k, conv=conv)


# --------------------------------------------------------------------------------------------------- folding

def fold_batchnorm(w_sign, gamma, beta, mean, var, eps):
    """Fold y = gamma (a - mean) / sqrt(var + eps) + beta >= 0 into a' >= t on a possibly negated weight row.

    w_sign: +-1 int [N, K]; the others [N].  Returns (weights int8 [N, K], thresholds int32 [N]): train.py's fold,
    so the numpy trainer and the PyTorch path export the same thresholds."""
    sys.path.insert(0, HERE)
    from train import fold_threshold

    return fold_threshold(np.asarray(w_sign, dtype=np.int8), gamma, beta, mean, var, eps)


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

    def folded(prefix, w, beta=None):   # beta: a level's bias in place of the batch-norm's (level_biases)
        return fold_batchnorm(_sign_np(w), need(prefix + ".bn.weight"), need(prefix + ".bn.bias") if beta is None
                              else beta, need(prefix + ".bn.running_mean"), need(prefix + ".bn.running_var"), eps)

    conv = config.get("conv")
    extra, perm = {}, None
    if conv:
        # the conv front: its batch-norm folds like the stem's; torch flattens the pooled [C, Hp, Wp] features
        # channel slowest (c, y, x), the format orders them (y, x, c), so the next layer's columns are permuted:
        # format column (py * Wp + px) * C + c  <-  torch column c * Hp * Wp + py * Wp + px
        ch, k = int(conv["channels"]), int(conv["kernel"])
        cw = need("conv.weight").reshape(ch, -1)
        if cw.shape[1] != k * k:
            raise ValueError(f"state_dict: conv.weight has {cw.shape[1]} taps per filter, config kernel {k} needs {k * k}")
        bits = int(conv.get("weight_bits", 1))
        extra["conv_weight"], extra["conv_threshold"] = fold_batchnorm(
            weight_levels_np(cw, bits), need("conv.bn.weight"), need("conv.bn.bias"), need("conv.bn.running_mean"),
            need("conv.bn.running_var"), eps)
        _, _, Hp, Wp = conv_geometry(config["input_shape"], k, int(conv.get("stride", 1)),
                                     int(conv.get("padding", 0)), int(conv.get("pool", 1)))
        conv2 = config.get("conv2")
        if conv2:
            # the second conv reads the first's map through its own filters, whose taps are already in the
            # format's (ky, kx, c) order: no permutation there; the layer after it reads conv2's features
            c2, k2 = int(conv2["channels"]), int(conv2["kernel"])
            cw2 = need("conv2.weight").reshape(c2, -1)
            if cw2.shape[1] != k2 * k2 * ch:
                raise ValueError(f"state_dict: conv2.weight has {cw2.shape[1]} taps per filter, config kernel {k2} "
                                 f"over {ch} channels needs {k2 * k2 * ch}")
            extra["conv2_weight"], extra["conv2_threshold"] = folded("conv2", cw2)
            _, _, Hp, Wp = conv2_geometry((Hp, Wp), k2, int(conv2.get("stride", 1)), int(conv2.get("pool", 1)))
            ch = c2
        perm = np.arange(ch * Hp * Wp).reshape(ch, Hp * Wp).T.reshape(-1)

    def first(w):  # the layer that reads the conv features gets its columns in the format's order
        return w if perm is None else np.ascontiguousarray(w[..., perm])

    if int(config["stem_width"]) > 0:
        stem_w, stem_t = folded("stem", first(need("stem.weight")))
        first_reader = lambda w: w
    else:
        if not conv:
            raise ValueError("stem_width 0 needs a conv front")
        stem_w = stem_t = None
        first_reader = first
    levels = config.get("expert_hidden_levels") or [1] * len(hidden)
    hw, ht = [], []
    for l in range(len(hidden)):
        ws, ts = [], []
        for e in range(E):
            prefix = f"experts.{e}.hidden.{l}"
            w = first_reader(need(prefix + ".weight")) if l == 0 else need(prefix + ".weight")
            # one weight row per unit and one threshold per level (a 2-level layer: [2, H], the bias moved by +-offset)
            pairs = [folded(prefix, w, b) for b in level_biases(need(prefix + ".bn.bias"),
                                                                need(prefix + ".offset") if levels[l] == 2 else None)]
            ws.append(pairs[0][0])
            ts.append(pairs[0][1] if levels[l] == 1 else np.stack([t for _, t in pairs]))
        hw.append(np.stack(ws))
        ht.append(np.stack(ts))
    out_reader = first_reader if not hidden else (lambda w: w)
    return dict(
        stem_weight=stem_w, stem_threshold=stem_t,
        router_weight=_sign_np(first_reader(need("router.weight"))),
        router_scale=need("router.scale").astype(np.float32), router_bias=need("router.bias").astype(np.float32),
        hidden_weights=hw, hidden_thresholds=ht,
        out_weight=np.stack([_sign_np(out_reader(need(f"experts.{e}.out.weight"))) for e in range(E)]),
        out_scale=np.stack([need(f"experts.{e}.out.scale") for e in range(E)]).astype(np.float32),
        out_bias=np.stack([need(f"experts.{e}.out.bias") for e in range(E)]).astype(np.float32),
        **extra,
    )


def export_state_dict(sd, directory, config):
    """Write `directory` (config.json + model.safetensors) from a BinaryMoE state_dict. Returns the config."""
    sys.path.insert(0, HERE)
    from export import export_model as write_model

    arrays = fold_state_dict(sd, config)
    # export.export_model packs "value >= 0" as bit 1: the +-1 int8 weights pack exactly
    return write_model(directory, config, **arrays)


def export_model(model: BinaryMoE, directory, name, classes, input_scale, version="1", input_shape=None):
    """Export a binary BinaryMoE to a bitfleet.bmoe directory (config.json + model.safetensors): format v1, v2 with
    a conv front, or v4 with a second conv (conv2)."""
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
def exact_conv_bits(q, conv_w, conv_t, conv, order="format"):
    """The conv front with the format's exact semantics: q int64 [B, H*W] (already x >> (8-P)), folded +-1 filters
    [C, k*k] and integer thresholds [C]; a = sum of w * q over each k x k window (zero padding), bit = a >= t,
    OR over pool x pool (positions past Hp * pool dropped).  Returns +-1 int64 features [B, F] in the format's
    (y, x, c) order, or torch's (c, y, x) with order="torch"."""
    H, W = conv["input_shape"]
    k, s, p, pool = int(conv["kernel"]), int(conv.get("stride", 1)), int(conv.get("padding", 0)), int(conv.get("pool", 1))
    Ho, Wo, Hp, Wp = conv_geometry((H, W), k, s, p, pool)
    w = torch.as_tensor(np.asarray(conv_w, np.int64)).to(torch.float64)
    t = torch.as_tensor(np.asarray(conv_t, np.int64))
    C = w.shape[0]
    cols = F.unfold(q.to(torch.float64).reshape(q.shape[0], 1, H, W), k, padding=p, stride=s)     # [B, k*k, L]
    a = torch.round(torch.matmul(w, cols)).to(torch.int64).reshape(q.shape[0], C, Ho, Wo)         # exact integers
    bits = a >= t[None, :, None, None]
    bits = bits[:, :, :Hp * pool, :Wp * pool].reshape(q.shape[0], C, Hp, pool, Wp, pool).any(dim=5).any(dim=3)
    if order == "format":
        bits = bits.permute(0, 2, 3, 1)                                                          # [B, Hp, Wp, C]
    return torch.where(bits.reshape(q.shape[0], -1), 1, -1).to(torch.int64)


@torch.no_grad()
def exact_conv2_bits(f, conv2_w, conv2_t, conv2, in_shape, order="format"):
    """The second conv with the format's exact semantics: f the first conv's +-1 features [B, C1*Hp*Wp] in torch's
    (c, y, x) order, folded +-1 filters [C2, k*k*C1] (taps (ky*k + kx)*C1 + c) and integer thresholds [C2],
    in_shape (Hp, Wp, C1); a = sum of w * f over each k x k x C1 window (no padding), bit = a >= t, OR over
    pool x pool.  Returns +-1 int64 features [B, F2] in the format's (y, x, c) order, or torch's (c, y, x)."""
    Hp, Wp, C1 = (int(v) for v in in_shape)
    k, s, pool = int(conv2["kernel"]), int(conv2.get("stride", 1)), int(conv2.get("pool", 1))
    Ho, Wo, H2, W2 = conv2_geometry((Hp, Wp), k, s, pool)
    w = conv2_torch_weight(torch.as_tensor(np.asarray(conv2_w, np.int64)).to(torch.float64), k, C1)
    t = torch.as_tensor(np.asarray(conv2_t, np.int64))
    B, C2 = f.shape[0], w.shape[0]
    a = torch.round(F.conv2d(f.to(torch.float64).reshape(B, C1, Hp, Wp), w, stride=s)).to(torch.int64)
    bits = a >= t[None, :, None, None]
    bits = bits[:, :, :H2 * pool, :W2 * pool].reshape(B, C2, H2, pool, W2, pool).any(dim=5).any(dim=3)
    if order == "format":
        bits = bits.permute(0, 2, 3, 1)                                                          # [B, Hp2, Wp2, C2]
    return torch.where(bits.reshape(B, -1), 1, -1).to(torch.int64)


def _conv1_shape(conv):
    """(Hp, Wp, C1): the first conv's pooled map, what a conv2 block reads."""
    _, _, Hp, Wp = conv_geometry(conv["input_shape"], int(conv["kernel"]), int(conv.get("stride", 1)),
                                 int(conv.get("padding", 0)), int(conv.get("pool", 1)))
    return Hp, Wp, int(conv["channels"])


@torch.no_grad()
def exact_forward(arrays, x_u8, planes, top_k, chunk=8192, conv=None):
    """docs/MODEL_FORMAT.md's forward pass on folded arrays: exact integers, float32 multiply-then-add for scales,
    stable top-k (ties to the lower index), logits summed in selection order. Returns reference.forward's keys.
    conv: the config's conv block plus "input_shape" (H, W) for a v2 model (arrays then hold conv_weight and
    conv_threshold, and stem_weight None for stem width 0); with conv["conv2"] (a v4 conv2 block) also conv2_weight
    and conv2_threshold, and conv_bits are the second conv's features."""
    x = torch.as_tensor(x_u8)
    if x.dtype != torch.uint8:
        raise ValueError("exact_forward takes uint8 inputs (quantise float inputs with round(x * input_scale) first)")
    if conv is not None:
        chunk = min(chunk, 512)
    has_stem = arrays.get("stem_weight") is not None
    W0 = torch.from_numpy(np.asarray(arrays["stem_weight"], np.int64)) if has_stem else None
    t0 = torch.from_numpy(np.asarray(arrays["stem_threshold"], np.int64)) if has_stem else None
    R = torch.from_numpy(np.asarray(arrays["router_weight"], np.int64))
    rs = torch.from_numpy(np.asarray(arrays["router_scale"], np.float32))
    rb = torch.from_numpy(np.asarray(arrays["router_bias"], np.float32))
    HW = [torch.from_numpy(np.asarray(w, np.int64)) for w in arrays["hidden_weights"]]
    HT = [torch.from_numpy(np.asarray(t, np.int64)) for t in arrays["hidden_thresholds"]]
    OW = torch.from_numpy(np.asarray(arrays["out_weight"], np.int64))
    OS = torch.from_numpy(np.asarray(arrays["out_scale"], np.float32))
    OB = torch.from_numpy(np.asarray(arrays["out_bias"], np.float32))
    E, C = OW.shape[0], OW.shape[1]
    keys = ("stem_pre", "stem_bits", "router_scores", "experts", "gates", "logits", "probabilities")
    outs = {k: [] for k in (("conv_bits",) if conv is not None else ()) + keys}
    for i in range(0, x.shape[0], chunk):
        q = x[i:i + chunk].to(torch.int64) >> (8 - planes)
        if conv is not None and conv.get("conv2"):
            q = exact_conv_bits(q, arrays["conv_weight"], arrays["conv_threshold"], conv, order="torch")
            q = exact_conv2_bits(q, arrays["conv2_weight"], arrays["conv2_threshold"], conv["conv2"],
                                 _conv1_shape(conv))
            outs["conv_bits"].append((q > 0).to(torch.uint8))
        elif conv is not None:
            q = exact_conv_bits(q, arrays["conv_weight"], arrays["conv_threshold"], conv)
            outs["conv_bits"].append((q > 0).to(torch.uint8))
        if has_stem:
            a = _idot(q, W0)
            h = torch.where(a >= t0, 1, -1).to(torch.int64)
        else:                                       # no stem: the router and experts read the conv features
            a = h = q
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
                    d = _idot(u, w[e])
                    te = t[e] if t[e].dim() == 2 else t[e][None]   # [levels, H]: a 2-level layer gives 2 H bits
                    u = torch.cat([torch.where(d >= tv, 1, -1) for tv in te], dim=1).to(torch.int64)
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

    def folded(layer):
        w, t = fold_batchnorm(weight_levels_np(layer, getattr(layer, "weight_bits", 1)), *(_np(v) for v in (
            layer.bn.weight, layer.bn.bias, layer.bn.running_mean, layer.bn.running_var)), layer.bn.eps)
        return w.astype(np.int64), t.astype(np.int64)

    if model.conv_cfg is not None:
        conv = model.conv
        Ho, Wo = conv.out_hw[0], conv.out_hw[1]
        cchunk = max(1, min(chunk, (1 << 22) // (conv.channels * Ho * Wo)))   # ~32 MiB of float64 per chunk
        s1, s2 = np.zeros(conv.channels), np.zeros(conv.channels)
        for i in range(0, n, cchunk):
            a = conv.preact(x[i:i + cchunk]).to(torch.float64)
            s1 += a.sum((0, 2, 3)).numpy()
            s2 += (a * a).sum((0, 2, 3)).numpy()
        _set_stats(conv.bn, s1, s2, n * Ho * Wo)
        if model.binary:   # the exported (thresholded, OR-pooled) features, torch's (c, y, x) order
            w, t = folded(conv)
            geo = dict(model.conv_cfg, input_shape=model.input_shape)
            u0 = torch.cat([exact_conv_bits(torch.as_tensor(x[i:i + cchunk]).to(torch.int64) >> (8 - model.planes),
                                            w, t, geo, order="torch").to(torch.int8) for i in range(0, n, cchunk)])
        else:
            u0 = torch.cat([conv(x[i:i + cchunk]) for i in range(0, n, cchunk)])
        if model.conv2_cfg is not None:   # the second conv reads the first's exported map, the stem reads its own
            conv2 = model.conv2
            Hp, Wp, C1 = conv2.in_shape
            Ho2, Wo2 = conv2.out_hw[0], conv2.out_hw[1]
            c2chunk = max(1, min(chunk, (1 << 22) // max(1, conv2.channels * Ho2 * Wo2, C1 * Hp * Wp)))
            m1 = lambda i: u0[i:i + c2chunk].to(torch.float32).reshape(-1, C1, Hp, Wp)
            s1, s2 = np.zeros(conv2.channels), np.zeros(conv2.channels)
            for i in range(0, n, c2chunk):
                a = conv2.preact(m1(i)).to(torch.float64)
                s1 += a.sum((0, 2, 3)).numpy()
                s2 += (a * a).sum((0, 2, 3)).numpy()
            _set_stats(conv2.bn, s1, s2, n * Ho2 * Wo2)
            if model.binary:
                w2, t2 = folded(conv2)
                u0 = torch.cat([exact_conv2_bits(u0[i:i + c2chunk].to(torch.int64), w2, t2, model.conv2_cfg,
                                                 conv2.in_shape, order="torch").to(torch.int8)
                                for i in range(0, n, c2chunk)])
            else:
                u0 = torch.cat([conv2(m1(i)) for i in range(0, n, c2chunk)])
        stem_in = lambda i: u0[i:i + chunk].to(torch.float32)
        stem_in_int = lambda i: u0[i:i + chunk].to(torch.int64)
    else:
        stem_in = lambda i: x[i:i + chunk]
        stem_in_int = lambda i: model.stem.inputs(x[i:i + chunk]).to(torch.int64)
    if model.stem is None:
        h = u0
    else:
        S = model.stem_width
        s1, s2 = np.zeros(S), np.zeros(S)
        for i in range(0, n, chunk):
            a = model.stem.preact(stem_in(i)).to(torch.float64).numpy()
            s1 += a.sum(0)
            s2 += (a * a).sum(0)
        _set_stats(model.stem.bn, s1, s2, n)
        if model.binary:
            w, t = folded(model.stem)
            W0, T0 = torch.from_numpy(w), torch.from_numpy(t)
            h = torch.cat([torch.where(_idot(stem_in_int(i), W0) >= T0, 1, -1).to(torch.int8)
                           for i in range(0, n, chunk)])
        else:
            h = torch.cat([model.stem(stem_in(i)) for i in range(0, n, chunk)])
    idx = torch.cat([model.router(h[i:i + chunk].to(torch.float32))[1] for i in range(0, n, chunk)])
    for e in range(model.n_experts):
        rows = torch.nonzero((idx == e).any(1), as_tuple=True)[0]
        u = h[rows].to(torch.float32)
        for layer in model.experts[e].hidden:
            a = layer.preact(u).to(torch.float64).numpy()
            _set_stats(layer.bn, a.sum(0), (a * a).sum(0), len(rows))
            if model.binary:
                d = None
                bits = []
                for beta in layer.level_biases(_np(layer.bn.bias)):
                    w, t = fold_batchnorm(_sign_np(layer.weight), _np(layer.bn.weight), beta,
                                          _np(layer.bn.running_mean), _np(layer.bn.running_var), layer.bn.eps)
                    if d is None:   # the levels share one weight row (fold_batchnorm negates it by gamma's sign)
                        d = _idot(u.to(torch.int64), torch.from_numpy(w.astype(np.int64)))
                    bits.append(torch.where(d >= torch.from_numpy(t.astype(np.int64)), 1.0, -1.0))
                u = torch.cat(bits, dim=1)
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

    extra = {}
    if model.conv_cfg is not None:
        cw, cb = fold(model.conv)   # [C, k*k]: ONNX Conv weight [C, 1, k, k]
        k = model.conv.kernel
        extra = dict(conv_W=cw.reshape(-1, 1, k, k), conv_b=cb, conv=dict(model.conv_cfg),
                     input_shape=list(model.input_shape))
        if model.conv2_cfg is not None:   # [C2, k*k*C1] in the format's tap order: ONNX Conv weight [C2, C1, k, k]
            c2 = model.conv2
            w2, b2 = fold(c2)
            extra.update(conv2_W=np.ascontiguousarray(conv2_torch_weight(torch.from_numpy(w2), c2.kernel,
                                                                         c2.in_shape[2]).numpy()),
                         conv2_b=b2, conv2=dict(model.conv2_cfg))
    stem_W, stem_b = fold(model.stem) if model.stem is not None else (None, None)
    L = len(model.hidden_widths)
    hid = [[fold(model.experts[e].hidden[l]) for e in range(model.n_experts)] for l in range(L)]
    r = model.router
    return dict(
        **extra,
        stem_W=stem_W, stem_b=stem_b,
        router_W=(r.weight * r.scale[:, None]).numpy().astype(np.float32), router_b=r.bias.numpy().astype(np.float32),
        hid_W=[np.stack([w for w, _ in hid[l]]) for l in range(L)],
        hid_b=[np.stack([b for _, b in hid[l]]) for l in range(L)],
        out_W=np.stack([(x.out.weight * x.out.scale[:, None]).numpy() for x in model.experts]).astype(np.float32),
        out_b=np.stack([x.out.bias.numpy() for x in model.experts]).astype(np.float32),
    )


def export_float_onnx(fl, top_k, path, input_features, mode="sparse"):
    """Write the float twin (float_arrays' output) as ONNX with train.py's export_onnx: input "x" float32
    [N, input_features] = x_u8 / 255, output "logits".  With a conv front the graph starts with Reshape
    [N, 1, H, W] -> Conv (batch-norm folded) -> Relu -> MaxPool [-> the conv2 block's Conv -> Relu -> MaxPool] ->
    Flatten (torch's (c, y, x) order, as the float twin was trained), feeding the stem's MatMul, or, with no stem,
    the router and the experts directly."""
    sys.path.insert(0, HERE)
    import onnx
    from onnx import helper, numpy_helper
    from train import export_onnx

    conv = fl.get("conv")
    arrays = dict(fl)
    if conv is not None and fl["stem_W"] is None:   # a placeholder stem, removed below
        arrays["stem_W"] = np.zeros((fl["router_W"].shape[1], 1), np.float32)
        arrays["stem_b"] = np.zeros(fl["router_W"].shape[1], np.float32)
    export_onnx(arrays, top_k, path, mode)
    om = onnx.load(path)
    g = om.graph
    if conv is not None:
        H, W = fl["input_shape"]
        k, s, p, pool = conv["kernel"], conv["stride"], conv["padding"], conv["pool"]
        no_stem = fl["stem_W"] is None
        feat = "h" if no_stem else "conv_feat"
        if no_stem:   # drop the placeholder stem: the conv features are h
            keep = [n for n in g.node if not set(n.output) & {"stem_mm", "stem_pre", "h"}]
            del g.node[:]
            g.node.extend(keep)
            keep_i = [t for t in g.initializer if t.name not in ("stem_Wt", "stem_b")]
            del g.initializer[:]
            g.initializer.extend(keep_i)
        else:         # the stem reads the conv features instead of x
            for n in g.node:
                n.input[:] = [feat if v == "x" and n.op_type == "MatMul" else v for v in n.input]
        _, _, Hp, Wp = conv_geometry((H, W), k, s, p, pool)
        if pool == 1 and (Hp, Wp) != conv_geometry((H, W), k, s, p, 1)[:2]:
            raise ValueError("unreachable: pool 1 keeps every position")

        def conv_block(name, source, kernel, stride, pad, pooling):
            """`name`_W/_b (batch-norm folded) as a Conv -> Relu [-> MaxPool] on `source`; returns its nodes and
            output (`name`_act, or `name`_pool with pooling: the names Ops/bench/peers.py reads back)."""
            g.initializer.extend([
                numpy_helper.from_array(np.ascontiguousarray(fl[f"{name}_W"], np.float32), f"{name}_W"),
                numpy_helper.from_array(np.ascontiguousarray(fl[f"{name}_b"], np.float32), f"{name}_b")])
            nodes = [helper.make_node("Conv", [source, f"{name}_W", f"{name}_b"], [f"{name}_pre"],
                                      kernel_shape=[kernel, kernel], strides=[stride, stride], pads=[pad] * 4),
                     helper.make_node("Relu", [f"{name}_pre"], [f"{name}_act"])]
            if pooling == 1:
                return nodes, f"{name}_act"
            nodes.append(helper.make_node("MaxPool", [f"{name}_act"], [f"{name}_pool"], kernel_shape=[pooling, pooling],
                                          strides=[pooling, pooling]))
            return nodes, f"{name}_pool"

        g.initializer.append(numpy_helper.from_array(np.array([-1, 1, H, W], np.int64), "conv_in_shape"))
        front, last = conv_block("conv", "conv_img", k, s, p, pool)
        front.insert(0, helper.make_node("Reshape", ["x", "conv_in_shape"], ["conv_img"]))
        conv2 = fl.get("conv2")
        if conv2 is not None:   # the second conv (batch-norm folded, no padding) on that map
            nodes2, last = conv_block("conv2", last, conv2["kernel"], conv2["stride"], 0, conv2["pool"])
            front += nodes2
        front.append(helper.make_node("Flatten", [last], [feat], axis=1))
        nodes = front + list(g.node)
        del g.node[:]
        g.node.extend(nodes)
    g.input[0].type.tensor_type.shape.dim[1].dim_value = int(input_features)
    onnx.checker.check_model(om)
    onnx.save(om, path)
    return path
