#!/usr/bin/env python3
"""Write a BitFleet binary mixture-of-experts model directory (docs/MODEL_FORMAT.md, format v1, v2 with a conv front,
or v3 with a two-level router: config "router_groups" G and group_weight [G, S], group_scale/group_bias [G]).

Library use (the trainer imports this):

    from export import export_model
    export_model("Ops/models/fashion", config, stem_weight, stem_threshold, router_weight, router_scale,
                 router_bias, hidden_weights, hidden_thresholds, out_weight, out_scale, out_bias)

Weights are numpy arrays in *unpacked* shape whose sign is the bit (value >= 0 -> +1 -> bit 1):
    stem_weight        [S, D]
    router_weight      [E, S]
    hidden_weights[l]  [E, H_{l+1}, H_l]   (H_0 = S)
    out_weight         [E, C, H_n]         (H_n = S when there are no hidden layers)
Thresholds are integers (stem_threshold [S], hidden_thresholds[l] [E, H_{l+1}]); scales and biases are float32
(router_scale/router_bias [E], out_scale/out_bias [E, C]).

A v2 model (config has a "conv" block, format_version 2) also takes conv_weight [channels, kernel * kernel] (window
row by row) and conv_threshold [channels]; its stem reads the F pooled conv features (stem_weight [S, F], feature
order (y, x, channel)), and with stem_width 0 it has no stem (stem_weight/stem_threshold None; the router and the
experts read the F features: H_0 = F).

A v5 model's conv block may say "weight_bits": 2: conv_weight then holds the integers -3, -1, 1, 3 (w = 2*h + l with
two sign bits, h = +1 for w > 0), written as conv.weight [2, channels, ceil(kernel^2 / 8)]: plane 0 the bits h,
plane 1 the bits l.

A v6 model may say "expert_hidden_levels" [L_0, ...] (1 or 2 per expert hidden layer): a layer with 2 levels takes
hidden_thresholds[l] [E, 2, H] and gives 2 H bits (its units against the first thresholds, then the second), so the
next layer reads 2 H inputs (hidden_weights[l + 1] [E, H', 2 H], or out_weight [E, C, 2 H]).
"""
from __future__ import annotations

import json
import os

import numpy as np

FORMAT = "bitfleet.bmoe"
FORMAT_VERSION = 1
CONV_FORMAT_VERSION = 2
GROUPS_FORMAT_VERSION = 3   # a two-level router ("router_groups"); a conv front may come with it
CONV2_FORMAT_VERSION = 4   # a second, binary conv layer after the conv front ("conv2")
WEIGHT_BITS_FORMAT_VERSION = 5   # a conv front with 2-bit weights ("conv": {"weight_bits": 2})
LEVELS_FORMAT_VERSION = 6   # expert hidden layers with two thresholds per unit ("expert_hidden_levels")
LATEST_FORMAT_VERSION = LEVELS_FORMAT_VERSION


class ExportError(ValueError):
    pass


def pack_bits(weight: np.ndarray) -> np.ndarray:
    """Pack the sign of `weight` along the last axis: bit 1 for >= 0, little bit order, zero padding."""
    bits = (np.asarray(weight) >= 0).astype(np.uint8)
    return np.packbits(bits, axis=-1, bitorder="little")


def split_two_bit(weight) -> np.ndarray:
    """2-bit weights w in {-3, -1, 1, 3} [..., K] as the sign planes (h, l) of w = 2*h + l, stacked on a new first
    axis: [2, ..., K] of +-1 (h = +1 where w > 0, l = w - 2*h)."""
    w = np.asarray(weight)
    if w.dtype.kind == "f" and not np.all(w == np.floor(w)):
        raise ExportError("conv_weight: 2-bit weights must be the integers -3, -1, 1 or 3")
    w = w.astype(np.int64)
    if not np.all(np.isin(w, (-3, -1, 1, 3))):
        bad = sorted(set(np.unique(w).tolist()) - {-3, -1, 1, 3})[:4]
        raise ExportError(f"conv_weight: 2-bit weights must be -3, -1, 1 or 3 (got {bad})")
    h = np.where(w > 0, 1, -1)
    return np.stack([h, w - 2 * h])


def conv_weight_bits(cfg) -> int:
    """A conv block's weight bits (1 without the key)."""
    return int((cfg.get("conv") or {}).get("weight_bits", 1))


def _check_shape(name: str, array, shape: tuple) -> np.ndarray:
    array = np.asarray(array)
    if tuple(array.shape) != tuple(shape):
        raise ExportError(f"{name}: expected shape {list(shape)}, got {list(array.shape)}")
    if array.dtype.kind not in "biuf":
        raise ExportError(f"{name}: expected a numeric array, got dtype {array.dtype}")
    if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
        raise ExportError(f"{name}: contains NaN or infinity")
    return array


def _int32(name: str, array) -> np.ndarray:
    array = np.asarray(array)
    if array.dtype.kind == "f":
        if not np.all(array == np.floor(array)):
            raise ExportError(f"{name}: thresholds must be integers")
    wide = array.astype(np.int64)
    if wide.size and (wide.min() < np.iinfo(np.int32).min or wide.max() > np.iinfo(np.int32).max):
        raise ExportError(f"{name}: threshold out of int32 range")
    return wide.astype(np.int32)


def normalized_config(config: dict) -> dict:
    """Validate `config` (per MODEL_FORMAT.md) and return the dict written to config.json."""
    cfg = dict(config)
    cfg.setdefault("format", FORMAT)
    conv = cfg.get("conv")
    conv2 = cfg.get("conv2")
    groups = cfg.get("router_groups")
    two_bit = conv_weight_bits(cfg) != 1
    levels = cfg.get("expert_hidden_levels")
    cfg.setdefault("format_version", LEVELS_FORMAT_VERSION if levels is not None
                   else WEIGHT_BITS_FORMAT_VERSION if two_bit else CONV2_FORMAT_VERSION if conv2
                   else GROUPS_FORMAT_VERSION if groups else CONV_FORMAT_VERSION if conv else FORMAT_VERSION)
    if cfg["format"] != FORMAT:
        raise ExportError(f"config.format must be {FORMAT!r}")
    if cfg["format_version"] not in range(FORMAT_VERSION, LATEST_FORMAT_VERSION + 1):
        raise ExportError(f"config.format_version must be {FORMAT_VERSION} to {LATEST_FORMAT_VERSION}")
    if conv and cfg["format_version"] < CONV_FORMAT_VERSION:
        raise ExportError(f"config: a conv block needs format_version {CONV_FORMAT_VERSION} or later")
    if groups is not None and cfg["format_version"] < GROUPS_FORMAT_VERSION:
        raise ExportError(f"config: router_groups needs format_version {GROUPS_FORMAT_VERSION} or later")
    if conv2 is not None and (cfg["format_version"] < CONV2_FORMAT_VERSION or not conv):
        raise ExportError(f"config: a conv2 block needs a conv block and format_version {CONV2_FORMAT_VERSION}")
    required = ["name", "version", "input_features", "input_bit_planes", "input_scale", "stem_width", "experts",
                "top_k", "expert_hidden", "classes"]
    for key in required:
        if key not in cfg:
            raise ExportError(f"config: missing required key {key!r}")
    cfg["version"] = str(cfg["version"])
    for key in ["input_features", "stem_width", "experts", "top_k", "input_bit_planes"]:
        cfg[key] = int(cfg[key])
        if cfg[key] < (0 if key == "stem_width" and conv else 1):
            raise ExportError(f"config.{key} must be >= 1 (stem_width >= 0 with a conv front)")
    if conv:
        cfg["conv"] = {k: int(conv[k]) if d is None else int(conv.get(k, d)) for k, d in
                       [("channels", None), ("kernel", None), ("stride", 1), ("padding", 0), ("pool", 1)]}
        bits = conv_weight_bits(config)
        if bits not in (1, 2):
            raise ExportError(f"config.conv.weight_bits must be 1 or 2 (got {bits})")
        if bits == 2:
            if cfg["format_version"] < WEIGHT_BITS_FORMAT_VERSION:
                raise ExportError(f"config: conv.weight_bits 2 needs format_version {WEIGHT_BITS_FORMAT_VERSION}")
            cfg["conv"]["weight_bits"] = 2
    if conv2:
        cfg["conv2"] = {k: int(conv2[k]) if d is None else int(conv2.get(k, d)) for k, d in
                        [("channels", None), ("kernel", None), ("stride", 1), ("pool", 1)]}
    if not 1 <= cfg["input_bit_planes"] <= 8:
        raise ExportError("config.input_bit_planes must be in 1...8")
    if not 1 <= cfg["top_k"] <= cfg["experts"] <= 4096:
        raise ExportError("config: need 1 <= top_k <= experts <= 4096")
    if groups is not None:
        G = cfg["router_groups"] = int(groups)
        E = cfg["experts"]
        if G < 2 or E % G != 0 or cfg["top_k"] > E // G:
            raise ExportError("config.router_groups: need 2 <= router_groups, experts a multiple of it, and "
                              "top_k <= experts / router_groups")
    cfg["expert_hidden"] = [int(h) for h in cfg["expert_hidden"]]
    if any(h < 1 for h in cfg["expert_hidden"]):
        raise ExportError("config.expert_hidden widths must be >= 1")
    if levels is not None:   # reference.py's rule for the format, as the exporter's error
        import reference
        try:
            cfg["expert_hidden_levels"] = reference.hidden_levels(
                dict(cfg, expert_hidden_levels=list(levels) if isinstance(levels, tuple) else levels))
        except ValueError as e:
            raise ExportError(str(e)) from None
    cfg["classes"] = [str(c) for c in cfg["classes"]]
    if not cfg["classes"]:
        raise ExportError("config.classes must be non-empty")
    cfg["input_scale"] = float(cfg["input_scale"])
    if not np.isfinite(cfg["input_scale"]):
        raise ExportError("config.input_scale must be finite")
    if "input_shape" in cfg and cfg["input_shape"] is not None:
        cfg["input_shape"] = [int(s) for s in cfg["input_shape"]]
        if int(np.prod(cfg["input_shape"])) != cfg["input_features"]:
            raise ExportError("config.input_shape: product must equal input_features")
    if conv:
        import reference
        try:
            reference.conv_geometry(cfg)
        except ValueError as e:
            raise ExportError(str(e)) from None
        if not 1 <= cfg["conv"]["channels"] <= 64:
            raise ExportError("config.conv.channels must be in 1...64")
    return cfg


def export_model(directory, config: dict, stem_weight, stem_threshold, router_weight, router_scale, router_bias,
                 hidden_weights: list, hidden_thresholds: list, out_weight, out_scale, out_bias,
                 conv_weight=None, conv_threshold=None, group_weight=None, group_scale=None, group_bias=None,
                 conv2_weight=None, conv2_threshold=None) -> dict:
    """Validate shapes against `config`, pack the bits and write config.json + model.safetensors.

    Returns the normalized config dict that was written."""
    from safetensors.numpy import save_file

    cfg = normalized_config(config)
    D, S, E = cfg["input_features"], cfg["stem_width"], cfg["experts"]
    C = len(cfg["classes"])
    tensors = {}
    if cfg.get("conv"):
        import reference
        ch, k = cfg["conv"]["channels"], cfg["conv"]["kernel"]
        cw = _check_shape("conv_weight", conv_weight, (ch, k * k))
        tensors["conv.weight"] = pack_bits(split_two_bit(cw) if conv_weight_bits(cfg) == 2 else cw)
        tensors["conv.threshold"] = _int32("conv_threshold", _check_shape("conv_threshold", conv_threshold, (ch,)))
        if cfg.get("conv2"):
            ch2, taps = cfg["conv2"]["channels"], reference.conv2_geometry(cfg)["taps"]
            tensors["conv2.weight"] = pack_bits(_check_shape("conv2_weight", conv2_weight, (ch2, taps)))
            tensors["conv2.threshold"] = _int32("conv2_threshold", _check_shape("conv2_threshold", conv2_threshold, (ch2,)))
        elif conv2_weight is not None or conv2_threshold is not None:
            raise ExportError("conv2_weight/conv2_threshold given, but config has no conv2 block")
        D = reference.conv_geometry(cfg)["features"]
        if S == 0:
            S = D
            if stem_weight is not None or stem_threshold is not None:
                raise ExportError("stem_width 0: the model has no stem, so stem_weight and stem_threshold must be None")
    elif conv_weight is not None or conv_threshold is not None:
        raise ExportError("conv_weight/conv_threshold given, but config has no conv block")
    hidden = cfg["expert_hidden"]
    if len(hidden_weights) != len(hidden) or len(hidden_thresholds) != len(hidden):
        raise ExportError(f"expert_hidden has {len(hidden)} layers but got {len(hidden_weights)} weights and "
                          f"{len(hidden_thresholds)} thresholds")
    levels = cfg.get("expert_hidden_levels", [1] * len(hidden))
    widths = [S] + [lv * h for lv, h in zip(levels, hidden)]   # the bits each layer gives the next
    if cfg["stem_width"] > 0:
        tensors["stem.weight"] = pack_bits(_check_shape("stem_weight", stem_weight, (S, D)))
        tensors["stem.threshold"] = _int32("stem_threshold", _check_shape("stem_threshold", stem_threshold, (S,)))
    tensors["router.weight"] = pack_bits(_check_shape("router_weight", router_weight, (E, S)))
    tensors["router.scale"] = _check_shape("router_scale", router_scale, (E,)).astype(np.float32)
    tensors["router.bias"] = _check_shape("router_bias", router_bias, (E,)).astype(np.float32)
    if cfg.get("router_groups"):
        G = cfg["router_groups"]
        tensors["router.group.weight"] = pack_bits(_check_shape("group_weight", group_weight, (G, S)))
        tensors["router.group.scale"] = _check_shape("group_scale", group_scale, (G,)).astype(np.float32)
        tensors["router.group.bias"] = _check_shape("group_bias", group_bias, (G,)).astype(np.float32)
    elif group_weight is not None or group_scale is not None or group_bias is not None:
        raise ExportError("group_weight/group_scale/group_bias given, but config has no router_groups")
    for l in range(len(hidden)):
        w = _check_shape(f"hidden_weights[{l}]", hidden_weights[l], (E, hidden[l], widths[l]))
        t = _check_shape(f"hidden_thresholds[{l}]", hidden_thresholds[l],
                         (E, hidden[l]) if levels[l] == 1 else (E, levels[l], hidden[l]))
        tensors[f"experts.hidden.{l}.weight"] = pack_bits(w)
        tensors[f"experts.hidden.{l}.threshold"] = _int32(f"hidden_thresholds[{l}]", t)
    tensors["experts.out.weight"] = pack_bits(_check_shape("out_weight", out_weight, (E, C, widths[-1])))
    tensors["experts.out.scale"] = _check_shape("out_scale", out_scale, (E, C)).astype(np.float32)
    tensors["experts.out.bias"] = _check_shape("out_bias", out_bias, (E, C)).astype(np.float32)
    tensors = {k: np.ascontiguousarray(v) for k, v in tensors.items()}

    os.makedirs(directory, exist_ok=True)
    weights_path = os.path.join(directory, "model.safetensors")
    tmp = weights_path + ".tmp"
    save_file(tensors, tmp, metadata={"format": FORMAT})
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # readable by worker processes of other users, like config.json
    os.replace(tmp, weights_path)
    config_path = os.path.join(directory, "config.json")
    with open(config_path + ".tmp", "w", encoding="utf-8") as f:
        json.dump(cfg, f, indent=2, ensure_ascii=False)
        f.write("\n")
    os.replace(config_path + ".tmp", config_path)
    return cfg


def sha256_file(path) -> str:
    import hashlib
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


if __name__ == "__main__":
    import sys
    if len(sys.argv) == 2:
        print(sha256_file(os.path.join(sys.argv[1], "model.safetensors")))
    else:
        print("usage: export.py MODEL_DIR   (prints the sha256 of MODEL_DIR/model.safetensors)", file=sys.stderr)
        sys.exit(2)
