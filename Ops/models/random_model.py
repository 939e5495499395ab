#!/usr/bin/env python3
"""Write a random BitFleet model plus test inputs and the reference outputs.

    python3 Ops/models/random_model.py OUT_DIR --features D --stem S --experts E --top-k K --hidden 64,32 \
        --classes C --planes P --seed N --samples M [--router-ties] [--router-groups G]

OUT_DIR gets config.json, model.safetensors, inputs.npy (uint8 [M, D]) and expected.npz (reference.py's outputs).
Thresholds are set at the median pre-activation of each channel over the inputs, so about half of the bits fire
(otherwise every layer saturates and a comparison proves nothing). --router-ties sets router scale 1 and bias 0, so
many router scores tie and the tie-break rule (lower expert index first) is exercised.
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from export import export_model  # noqa: E402
import reference  # noqa: E402


def signs(rng, shape):
    return np.where(rng.random(shape) < 0.5, -1, 1).astype(np.int8)


def median_threshold(pre):
    """pre: [N, width] integer pre-activations -> int thresholds [width] at the (upper) median."""
    return np.ceil(np.median(pre, axis=0)).astype(np.int64)


def build(out_dir, D, S, E, K, hidden, C, P, seed, M, router_ties=False, conv=None, shape=None, router_groups=None,
          conv2=None, levels=None):
    """conv: None, or (channels, kernel, stride, padding, pool[, weight_bits]) with shape (H, W): a format-v2 model
    whose stem (or, with S = 0, whose router and experts) reads the pooled conv features; weight_bits 2 gives the
    filters the weights -3, -1, 1, 3 (format v5). conv2: None, or (channels, kernel, stride,
    pool): a format-v4 second binary conv over the first one's pooled map, whose features the stem reads instead.
    levels: None, or 1 or 2 per hidden layer (format v6): a 2-level layer has a second threshold per unit (at the
    upper quartile, the first at the median) and gives the next layer 2 H bits."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, size=(M, D), dtype=np.uint8)
    # a few constant columns / extreme samples so edge values occur
    if M > 2:
        x[0, :] = 255
        x[1, :] = 0
    q = (x.astype(np.int64) >> (8 - P))

    conv_w = conv_t = None
    conv_cfg = None
    if conv:
        ch, k, stride, pad, pool = conv[:5]
        conv_bits = conv[5] if len(conv) > 5 else 1
        conv_cfg = {"channels": ch, "kernel": k, "stride": stride, "padding": pad, "pool": pool}
        cfg = {"input_features": D, "input_shape": list(shape), "conv": conv_cfg}
        g = reference.conv_geometry(cfg)
        conv_w = signs(rng, (ch, k * k)).astype(np.int64)
        if conv_bits == 2:
            conv_cfg["weight_bits"] = 2
            conv_w = 2 * conv_w + signs(rng, (ch, k * k)).astype(np.int64)       # -3, -1, 1, 3
        # thresholds at the quantile that makes about half of the pooled features fire (OR-pooling of bits that
        # fire half the time would saturate)
        probe = {"config": cfg, "conv_w": conv_w, "conv_t": None}
        pre = np.stack([conv_pre(probe, q, c) for c in range(ch)], axis=-1)     # [M, Ho, Wo, ch]
        conv_t = np.ceil(np.quantile(pre.reshape(-1, ch), 0.5 ** (1 / (pool * pool)), axis=0)).astype(np.int64)
        probe["conv_t"] = conv_t
        q = reference.conv_features(probe, q)                                   # [M, F] +-1
        D = g["features"]
    conv2_w = conv2_t = None
    conv2_cfg = None
    if conv2:
        ch2, k2, s2, pool2 = conv2
        conv2_cfg = {"channels": ch2, "kernel": k2, "stride": s2, "pool": pool2}
        cfg2 = dict(cfg, format_version=4, conv2=conv2_cfg)
        g2 = reference.conv2_geometry(cfg2)
        conv2_w = signs(rng, (ch2, g2["taps"])).astype(np.int64)
        Hp, Wp, C1 = g2["input"]
        Ho2, Wo2 = g2["out"]
        img = q.reshape(M, Hp, Wp, C1)
        wins = np.stack([img[:, ky:ky + s2 * (Ho2 - 1) + 1:s2, kx:kx + s2 * (Wo2 - 1) + 1:s2, :]
                         for ky in range(k2) for kx in range(k2)], axis=3).reshape(M, Ho2, Wo2, -1)
        pre2 = wins @ conv2_w.T                                                 # [M, Ho2, Wo2, ch2]
        conv2_t = np.ceil(np.quantile(pre2.reshape(-1, ch2), 0.5 ** (1 / (pool2 * pool2)), axis=0)).astype(np.int64)
        q = reference.conv2_features({"config": cfg2, "conv2_w": conv2_w, "conv2_t": conv2_t}, q)
        D = g2["features"]
    if S:
        stem_w = signs(rng, (S, D))
        stem_pre = q @ stem_w.T.astype(np.int64)
        stem_t = median_threshold(stem_pre)
        h = np.where(stem_pre >= stem_t, 1, -1)
    else:
        stem_w = stem_t = None
        S, h = D, q

    def router_rows(n):
        """n router rows over h: weights, scales and biases (scale 1 and bias 0 with --router-ties)."""
        w = signs(rng, (n, S))
        if router_ties:
            return w, np.ones(n, dtype=np.float32), np.zeros(n, dtype=np.float32)
        return w, rng.uniform(0.01, 0.2, size=n).astype(np.float32), rng.normal(0, 0.5, size=n).astype(np.float32)

    router_w, router_scale, router_bias = router_rows(E)
    group_w, group_scale, group_bias = router_rows(router_groups) if router_groups else (None, None, None)

    levels = [1] * len(hidden) if levels is None else list(levels)
    widths = [S] + [lv * w for lv, w in zip(levels, hidden)]   # the bits each layer gives the next
    hidden_w, hidden_t = [], []
    u = np.broadcast_to(h, (E,) + h.shape)  # every expert sees every sample for threshold calibration
    for l in range(len(hidden)):
        w = signs(rng, (E, hidden[l], widths[l]))
        pre = np.einsum("emk,ehk->emh", u, w.astype(np.int64))
        t = np.stack([median_threshold(pre[e]) for e in range(E)])
        if levels[l] == 2:   # [E, 2, H]: the median, then the upper quartile
            t = np.stack([t, np.stack([np.ceil(np.quantile(pre[e], 0.75, axis=0)).astype(np.int64)
                                       for e in range(E)])], axis=1)
            u = np.concatenate([np.where(pre >= t[:, v, None, :], 1, -1) for v in range(2)], axis=2)
        else:
            u = np.where(pre >= t[:, None, :], 1, -1)
        hidden_w.append(w)
        hidden_t.append(t)
    out_w = signs(rng, (E, C, widths[-1]))
    out_scale = rng.uniform(0.02, 0.1, size=(E, C)).astype(np.float32)
    out_bias = rng.normal(0, 0.3, size=(E, C)).astype(np.float32)

    config = {
        "format": "bitfleet.bmoe",
        "format_version": (6 if any(v != 1 for v in levels) else 5 if conv and conv_cfg.get("weight_bits", 1) == 2 else 4 if conv2 else 3 if router_groups
                           else 2 if conv else 1),
        "name": f"random-{seed}",
        "version": "1",
        "input_features": x.shape[1],
        "input_shape": list(shape) if conv else [D],
        "input_bit_planes": P,
        "input_scale": 255.0,
        "stem_width": 0 if stem_w is None else S,
        "experts": E,
        "top_k": K,
        "expert_hidden": list(hidden),
        "classes": [f"class{c}" for c in range(C)],
    }
    if conv:
        config["conv"] = conv_cfg
    if conv2:
        config["conv2"] = conv2_cfg
    if router_groups:
        config["router_groups"] = router_groups
    if any(v != 1 for v in levels):
        config["expert_hidden_levels"] = levels
    export_model(out_dir, config, stem_w, stem_t, router_w, router_scale, router_bias, hidden_w, hidden_t,
                 out_w, out_scale, out_bias, conv_weight=conv_w, conv_threshold=conv_t,
                 group_weight=group_w, group_scale=group_scale, group_bias=group_bias,
                 conv2_weight=conv2_w, conv2_threshold=conv2_t)
    np.save(os.path.join(out_dir, "inputs.npy"), x)
    model = reference.load_model(out_dir)
    out = reference.forward(model, x)
    np.savez(os.path.join(out_dir, "expected.npz"), **out)
    return out


def conv_pre(m, q, c):
    """Pre-activations of conv channel c at every output position: [M, Ho, Wo] (for threshold calibration)."""
    cfg = m["config"]
    g = reference.conv_geometry(cfg)
    H, W = g["input"]
    Ho, Wo = g["out"]
    k, s, p = cfg["conv"]["kernel"], cfg["conv"]["stride"], cfg["conv"]["padding"]
    M = q.shape[0]
    img = np.zeros((M, H + 2 * p, W + 2 * p), dtype=np.int64)
    img[:, p:p + H, p:p + W] = q.reshape(M, H, W)
    w = m["conv_w"][c].reshape(k, k)
    pre = np.zeros((M, Ho, Wo), dtype=np.int64)
    for ky in range(k):
        for kx in range(k):
            pre += img[:, ky:ky + s * (Ho - 1) + 1:s, kx:kx + s * (Wo - 1) + 1:s] * w[ky, kx]
    return pre


def main():
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("out_dir")
    p.add_argument("--features", type=int, default=784)
    p.add_argument("--stem", type=int, default=512)
    p.add_argument("--experts", type=int, default=16)
    p.add_argument("--top-k", type=int, default=2)
    p.add_argument("--hidden", default="256", help="comma-separated hidden widths; empty for none")
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--planes", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--samples", type=int, default=64)
    p.add_argument("--router-ties", action="store_true")
    p.add_argument("--conv", default="", help="format v2 conv front: channels,kernel,stride,padding,pool[,weight_bits] "
                                              "(weight_bits 2: format v5)")
    p.add_argument("--shape", default="", help="input height,width (with --conv)")
    p.add_argument("--conv2", default="", help="format v4 second conv (after --conv): channels,kernel,stride,pool")
    p.add_argument("--router-groups", type=int, default=0,
                   help="format v3 two-level router: this many groups of experts (0: one flat router)")
    p.add_argument("--hidden-levels", default="", help="format v6: 1 or 2 per hidden layer, comma separated "
                                                        "(default: 1 each)")
    a = p.parse_args()
    hidden = [int(s) for s in a.hidden.split(",") if s.strip()]
    conv = tuple(int(v) for v in a.conv.split(",")) if a.conv else None
    shape = tuple(int(v) for v in a.shape.split(",")) if a.shape else None
    conv2 = tuple(int(v) for v in a.conv2.split(",")) if a.conv2 else None
    if conv2 and (len(conv2) != 4 or not conv):
        p.error("--conv2 needs channels,kernel,stride,pool and --conv")
    if conv and (len(conv) not in (5, 6) or conv[5:] not in ((), (1,), (2,)) or not shape or len(shape) != 2):
        p.error("--conv needs channels,kernel,stride,padding,pool[,weight_bits 1 or 2] and --shape height,width")
    out = build(a.out_dir, a.features, a.stem, a.experts, a.top_k, hidden, a.classes, a.planes, a.seed, a.samples,
                a.router_ties, conv, shape, a.router_groups or None, conv2,
                [int(v) for v in a.hidden_levels.split(",")] if a.hidden_levels else None)
    bits = out["stem_bits"].mean()
    print(f"wrote {a.out_dir}: stem bits on {bits:.2f}, experts used {len(np.unique(out['experts']))}/{a.experts}")


if __name__ == "__main__":
    main()
