#!/usr/bin/env python3
"""numpy reference forward pass for BitFleet binary MoE models (docs/MODEL_FORMAT.md, format v1 to v6; v5: a conv front with 2-bit weights; v6: two-level expert hidden layers).

    python3 Ops/models/reference.py MODEL_DIR INPUT.npy OUT.npz

INPUT.npy is uint8 [M, D] (used as is) or float [M, D] (quantized with round(x * input_scale), must land in 0..255).
OUT.npz holds:
    conv_bits     uint8   [M, F]   v2 models with a "conv" block: the pooled conv features (1 = +1), in stem input order
                                   (v4 with a "conv2" block: the second conv's pooled features)
    stem_pre      int64   [M, S]   stem pre-activations a_i
    stem_bits     uint8   [M, S]   1 where h_i = +1
    router_scores float32 [M, E]   (v3 with router_groups: -inf outside the chosen group)
    router_group_scores float32 [M, G], router_groups int64 [M]   v3 with router_groups: group scores, chosen group
    experts       int64   [M, K]   selected experts, best first
    gates         float32 [M, K]
    logits        float32 [M, C]
    probabilities float32 [M, C]

Integer arithmetic is int64; float arithmetic is float32 in the spec's operation order.
"""
from __future__ import annotations

import json
import os
import sys

import numpy as np


def load_model(directory):
    from safetensors.numpy import load_file

    with open(os.path.join(directory, "config.json"), encoding="utf-8") as f:
        cfg = json.load(f)
    if cfg.get("format") != "bitfleet.bmoe" or cfg.get("format_version") not in (1, 2, 3, 4, 5, 6):
        raise ValueError("config.json: not a bitfleet.bmoe v1 to v6 model")
    conv = cfg.get("conv") if cfg["format_version"] >= 2 else None
    conv2 = cfg.get("conv2") if cfg["format_version"] >= 4 else None
    if conv2 is not None and conv is None:
        raise ValueError("config.json: a conv2 block needs a conv block")
    G = cfg.get("router_groups") if cfg["format_version"] >= 3 else None
    conv_bits = int(conv.get("weight_bits", 1)) if conv is not None else 1
    if conv_bits != 1 and cfg["format_version"] < 5:
        raise ValueError("config.json: conv.weight_bits needs format_version 5")
    if conv_bits not in (1, 2):
        raise ValueError(f"config.json: conv.weight_bits must be 1 or 2 (got {conv_bits})")
    t = load_file(os.path.join(directory, "model.safetensors"))
    D, S, E = cfg["input_features"], cfg["stem_width"], cfg["experts"]
    if conv is not None:
        D = conv_geometry(cfg)["features"]   # the stem reads the pooled conv bits (the second conv's with conv2)
        if S == 0:                           # no stem: the router and experts read the conv bits
            S = D
    C = len(cfg["classes"])
    hidden = list(cfg["expert_hidden"])
    levels = hidden_levels(cfg)
    # a layer with two levels gives 2 H bits (its H units against the first thresholds, then the second)
    widths = [S] + [lv * h for lv, h in zip(levels, hidden)]

    def unpack(name, shape_prefix, k):
        packed = t[name]
        want = tuple(shape_prefix) + ((k + 7) // 8,)
        if packed.dtype != np.uint8 or packed.shape != want:
            raise ValueError(f"{name}: expected U8 {list(want)}, got {packed.dtype} {list(packed.shape)}")
        bits = np.unpackbits(packed, axis=-1, count=k, bitorder="little").astype(np.int64)
        return 2 * bits - 1  # {0,1} -> {-1,+1}

    def tensor(name, dtype, shape):
        a = t[name]
        if a.dtype != dtype or a.shape != tuple(shape):
            raise ValueError(f"{name}: expected {np.dtype(dtype)} {list(shape)}, got {a.dtype} {list(a.shape)}")
        return a

    conv_w = None
    if conv and conv_bits == 2:
        # v5: two sign planes [2, C, taps], w = 2 * plane 0 + plane 1, in {-3, -1, 1, 3}
        planes = unpack("conv.weight", (2, conv["channels"]), conv["kernel"] ** 2)
        conv_w = 2 * planes[0] + planes[1]
    elif conv:
        conv_w = unpack("conv.weight", (conv["channels"],), conv["kernel"] ** 2)
    m = {
        "config": cfg,
        "conv_w": conv_w,
        "conv_t": tensor("conv.threshold", np.int32, (conv["channels"],)).astype(np.int64) if conv else None,
        "conv2_w": unpack("conv2.weight", (conv2["channels"],), conv2_geometry(cfg)["taps"]) if conv2 else None,
        "conv2_t": tensor("conv2.threshold", np.int32, (conv2["channels"],)).astype(np.int64) if conv2 else None,
        "stem_w": unpack("stem.weight", (S,), D) if cfg["stem_width"] else None,
        "stem_t": tensor("stem.threshold", np.int32, (S,)).astype(np.int64) if cfg["stem_width"] else None,
        "router_w": unpack("router.weight", (E,), S),
        "router_scale": tensor("router.scale", np.float32, (E,)),
        "router_bias": tensor("router.bias", np.float32, (E,)),
        "group_w": unpack("router.group.weight", (G,), S) if G else None,
        "group_scale": tensor("router.group.scale", np.float32, (G,)) if G else None,
        "group_bias": tensor("router.group.bias", np.float32, (G,)) if G else None,
        "hidden_w": [unpack(f"experts.hidden.{l}.weight", (E, hidden[l]), widths[l]) for l in range(len(hidden))],
        # [E, levels, H]: level v's thresholds of the layer's H units
        "hidden_t": [tensor(f"experts.hidden.{l}.threshold", np.int32,
                            (E, hidden[l]) if levels[l] == 1 else (E, levels[l], hidden[l])
                            ).astype(np.int64).reshape(E, levels[l], hidden[l]) for l in range(len(hidden))],
        "out_w": unpack("experts.out.weight", (E, C), widths[-1]),
        "out_scale": tensor("experts.out.scale", np.float32, (E, C)),
        "out_bias": tensor("experts.out.bias", np.float32, (E, C)),
    }
    return m


def hidden_levels(cfg):
    """The levels of each expert hidden layer (format v6 "expert_hidden_levels"; 1 each when absent): a layer with
    2 levels compares each unit's pre-activation with two thresholds and gives 2 H bits."""
    hidden = list(cfg["expert_hidden"])
    levels = cfg.get("expert_hidden_levels")
    if levels is None:
        return [1] * len(hidden)
    if cfg["format_version"] < 6:
        raise ValueError("config.json: expert_hidden_levels needs format_version 6")
    if not isinstance(levels, list) or len(levels) != len(hidden) or any(v not in (1, 2) for v in levels):
        raise ValueError(f"config.json: expert_hidden_levels must list 1 or 2 for each of the {len(hidden)} expert "
                         f"hidden layers (got {levels!r})")
    return [int(v) for v in levels]


def conv_geometry(cfg):
    """Shapes of a v2 model's conv block: input [H, W], conv output [Ho, Wo], pooled [Hp, Wp], features F (with a
    v4 conv2 block, F is the second conv's: what the stem, or the router and experts, read)."""
    if cfg.get("conv2") is not None and cfg.get("format_version", 4) >= 4:
        g = conv1_geometry(cfg)
        return dict(g, features=conv2_geometry(cfg)["features"])
    return conv1_geometry(cfg)


def conv1_geometry(cfg):
    """The first (integer-input) conv block's shapes, whatever follows it."""
    c = cfg["conv"]
    shape = cfg.get("input_shape")
    if not shape or len(shape) != 2 or shape[0] * shape[1] != cfg["input_features"]:
        raise ValueError("config.json: a conv block needs input_shape [H, W] with H*W = input_features")
    H, W = shape
    k, s, p, m, ch = c["kernel"], c["stride"], c["padding"], c["pool"], c["channels"]
    Ho, Wo = (H + 2 * p - k) // s + 1, (W + 2 * p - k) // s + 1
    Hp, Wp = Ho // m, Wo // m
    if min(k, s, m, ch) < 1 or p < 0 or p >= k or Hp < 1 or Wp < 1:
        raise ValueError(f"config.json: invalid conv block {c} for input {shape}")
    return {"input": (H, W), "out": (Ho, Wo), "pooled": (Hp, Wp), "features": Hp * Wp * ch}


def conv2_geometry(cfg):
    """Shapes of a v4 model's conv2 block: its input is the first conv's pooled map [Hp, Wp, C1]; output [Ho2, Wo2],
    pooled [Hp2, Wp2], taps k*k*C1 per window, features Hp2 * Wp2 * channels."""
    c2 = cfg["conv2"]
    g = conv1_geometry(cfg)
    Hp, Wp = g["pooled"]
    C1 = cfg["conv"]["channels"]
    k, s, m, ch = c2["kernel"], c2["stride"], c2["pool"], c2["channels"]
    if min(k, s, m, ch) < 1 or s > k or ch > 256 or k > 7 or Hp < k or Wp < k:
        raise ValueError(f"config.json: invalid conv2 block {c2} for a {Hp}x{Wp}x{C1} input")
    Ho, Wo = (Hp - k) // s + 1, (Wp - k) // s + 1
    H2, W2 = Ho // m, Wo // m
    if H2 < 1 or W2 < 1:
        raise ValueError(f"config.json: conv2 block {c2} leaves no pooled position on a {Hp}x{Wp} input")
    return {"input": (Hp, Wp, C1), "out": (Ho, Wo), "pooled": (H2, W2), "taps": k * k * C1,
            "features": H2 * W2 * ch}


def conv2_features(m, f):
    """v4 conv2 block on the first conv's +-1 features f [M, Hp*Wp*C1] ((py, px, c) order): a = sum of w * f over
    the k x k x C1 window (no padding; tap order (ky*k + kx)*C1 + c), bit = a >= t, OR over pool x pool windows;
    returns the +-1 features [M, F2] in (py, px, c) order."""
    cfg = m["config"]
    c2 = cfg["conv2"]
    g = conv2_geometry(cfg)
    Hp, Wp, C1 = g["input"]
    Ho, Wo = g["out"]
    H2, W2 = g["pooled"]
    k, s, pool, ch = c2["kernel"], c2["stride"], c2["pool"], c2["channels"]
    M = f.shape[0]
    img = f.reshape(M, Hp, Wp, C1)
    w = m["conv2_w"].reshape(ch, k, k, C1)
    pre = np.zeros((M, Ho, Wo, ch), dtype=np.int64)
    for ky in range(k):
        for kx in range(k):
            win = img[:, ky:ky + s * (Ho - 1) + 1:s, kx:kx + s * (Wo - 1) + 1:s, :]    # [M, Ho, Wo, C1]
            pre += win @ w[:, ky, kx, :].T
    bits = pre >= m["conv2_t"][None, None, None, :]
    bits = bits[:, :H2 * pool, :W2 * pool, :].reshape(M, H2, pool, W2, pool, ch).any(axis=(2, 4))
    return np.where(bits.reshape(M, H2 * W2 * ch), 1, -1).astype(np.int64)


def conv_features(m, q):
    """v2 conv block: a = sum of w * q over the k x k window (q = 0 in the padding), bit = a >= t, OR over
    pool x pool windows; returns the +-1 features [M, F] in (py, px, c) order."""
    cfg = m["config"]
    c = cfg["conv"]
    g = conv1_geometry(cfg)
    H, W = g["input"]
    Ho, Wo = g["out"]
    Hp, Wp = g["pooled"]
    k, s, p, pool, ch = c["kernel"], c["stride"], c["padding"], c["pool"], c["channels"]
    M = q.shape[0]
    img = np.zeros((M, H + 2 * p, W + 2 * p), dtype=np.int64)
    img[:, p:p + H, p:p + W] = q.reshape(M, H, W)
    w = m["conv_w"].reshape(ch, k, k)
    pre = np.zeros((M, Ho, Wo, ch), dtype=np.int64)
    for ky in range(k):
        for kx in range(k):
            win = img[:, ky:ky + s * (Ho - 1) + 1:s, kx:kx + s * (Wo - 1) + 1:s]       # [M, Ho, Wo]
            pre += win[..., None] * w[None, None, None, :, ky, kx]
    bits = pre >= m["conv_t"][None, None, None, :]
    bits = bits[:, :Hp * pool, :Wp * pool, :].reshape(M, Hp, pool, Wp, pool, ch).any(axis=(2, 4))
    f = np.where(bits.reshape(M, Hp * Wp * ch), 1, -1).astype(np.int64)
    if m.get("conv2_w") is not None:
        f = conv2_features(m, f)
    return f


def quantize(x, scale):
    x = np.asarray(x)
    if x.dtype == np.uint8:
        return x
    xf = x.astype(np.float32)
    if not np.all(np.isfinite(xf)):
        bad = np.argwhere(~np.isfinite(xf))[0]
        raise ValueError(f"input sample {bad[0]} feature {bad[1]}: not finite")
    q = np.round(xf * np.float32(scale))
    if np.any(q < 0) or np.any(q > 255):
        bad = np.argwhere((q < 0) | (q > 255))[0]
        raise ValueError(f"input sample {bad[0]} feature {bad[1]}: round(x * input_scale) outside 0...255")
    return q.astype(np.uint8)


def softmax32(v):
    v = v.astype(np.float32)
    e = np.exp(v - v.max(axis=-1, keepdims=True)).astype(np.float32)
    return (e / e.sum(axis=-1, keepdims=True, dtype=np.float32)).astype(np.float32)


def forward(m, x):
    cfg = m["config"]
    P = cfg["input_bit_planes"]
    K = cfg["top_k"]
    x = quantize(x, cfg["input_scale"])
    if x.ndim != 2 or x.shape[1] != cfg["input_features"]:
        raise ValueError(f"input: expected [M, {cfg['input_features']}], got {list(x.shape)}")
    M = x.shape[0]
    q = (x.astype(np.int64) >> (8 - P))
    conv_bits = None
    if m["conv_w"] is not None:
        q = conv_features(m, q)                                    # the stem reads +-1 conv features
        conv_bits = (q > 0).astype(np.uint8)
    if m["stem_w"] is None:                                        # v2 without a stem: h = conv features
        stem_pre, h = q, q
    else:
        stem_pre = q @ m["stem_w"].T                               # exact integer a_i
        h = np.where(stem_pre >= m["stem_t"][None, :], 1, -1).astype(np.int64)

    d = h @ m["router_w"].T                                        # [M, E] integer
    scores = (m["router_scale"][None, :] * d.astype(np.float32)).astype(np.float32)
    scores = (scores + m["router_bias"][None, :]).astype(np.float32)
    extra = {}
    if m["group_w"] is None:
        order = np.argsort(-scores, axis=1, kind="stable")         # descending, ties -> lower index
        experts = order[:, :K].astype(np.int64)
    else:
        # two-level router: the best group (same score rule), then the top K of that group's experts only
        G = m["group_w"].shape[0]
        EG = scores.shape[1] // G
        dg = h @ m["group_w"].T                                    # [M, G] integer
        gs = (m["group_scale"][None, :] * dg.astype(np.float32)).astype(np.float32)
        gs = (gs + m["group_bias"][None, :]).astype(np.float32)
        group = np.argsort(-gs, axis=1, kind="stable")[:, 0].astype(np.int64)
        members = group[:, None] * EG + np.arange(EG)[None, :]     # [M, E/G] the group's experts
        sub = np.take_along_axis(scores, members, axis=1)
        order = np.argsort(-sub, axis=1, kind="stable")
        experts = (order[:, :K] + group[:, None] * EG).astype(np.int64)
        # only the chosen group's experts are scored; the others read -inf
        scored = np.zeros(scores.shape, dtype=bool)
        np.put_along_axis(scored, members, True, axis=1)
        scores = np.where(scored, scores, np.float32(-np.inf)).astype(np.float32)
        extra = {"router_group_scores": gs, "router_groups": group}
    sel = np.take_along_axis(scores, experts, axis=1)
    gates = softmax32(sel)

    C = len(cfg["classes"])
    logits = np.zeros((M, C), dtype=np.float32)
    for slot in range(K):
        z = np.zeros((M, C), dtype=np.float32)
        for e in np.unique(experts[:, slot]):
            rows = np.nonzero(experts[:, slot] == e)[0]
            u = h[rows]
            for l in range(len(m["hidden_w"])):
                pre = u @ m["hidden_w"][l][e].T
                u = np.concatenate([np.where(pre >= t[None, :], 1, -1) for t in m["hidden_t"][l][e]],
                                   axis=1).astype(np.int64)
            dd = (u @ m["out_w"][e].T).astype(np.float32)
            z[rows] = ((m["out_scale"][e][None, :] * dd).astype(np.float32) + m["out_bias"][e][None, :]).astype(np.float32)
        logits = (logits + (gates[:, slot:slot + 1] * z).astype(np.float32)).astype(np.float32)
    probs = softmax32(logits)
    out = ({} if conv_bits is None else {"conv_bits": conv_bits}) | extra
    return out | {
        "stem_pre": stem_pre.astype(np.int64),
        "stem_bits": (h > 0).astype(np.uint8),
        "router_scores": scores,
        "experts": experts,
        "gates": gates,
        "logits": logits,
        "probabilities": probs,
    }


def main(argv):
    if len(argv) != 4:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    model = load_model(argv[1])
    x = np.load(argv[2])
    out = forward(model, x)
    np.savez(argv[3], **out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
