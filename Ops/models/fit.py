#!/usr/bin/env python3
"""Train a BitFleet binary mixture-of-experts on your own data and write a model directory for `bitfleet model add`.

    python3 Ops/models/fit.py --data DATA --out MODEL_DIR [options]

DATA is one of
  * a .npz with arrays X [N, ...] and y [N] (also accepted: x / labels),
  * X.npy (y.npy next to it, or --labels PATH), or a folder holding X.npy and y.npy,
  * a .csv: one label column plus numeric feature columns, comma separated (--delimiter), a header row optional.
    The label column is --label (a name or a 0-based index); by default the column named label/class/target/y
    when there is a header, else the LAST column.  Labels may be numbers or strings.
  * a folder of images with one sub-folder per class (PNG, JPEG, PGM/PPM, BMP, GIF; decoded with Pillow):
    resized to --size (default: the median width and height, each capped at 64), grayscale unless some image has
    color (--color), features laid out row-major as [H, W] or [H, W, 3].

Inputs to a bitfleet.bmoe v1 model are 8-bit: the worker turns a float input into x_u8 = round(x * input_scale),
which must land in 0..255 (uint8 .npy inputs are used as they are).  --scaling chooses input_scale from the data:
  auto    (default) uint8 data -> as is, input_scale 255 (send uint8, or floats x/255);
          integer data in 0..255 -> as is, input_scale 1 (send the same numbers);
          other data >= 0 -> input_scale = 255 / max over the training data (send the same raw numbers;
          values above that max are rejected by the worker);  data with negative values -> refused, use minmax.
  global  input_scale = 255 / max (data must be >= 0).
  minmax  per feature x' = clip((x - min) / (max - min), 0, 1) with min/max of the training data, input_scale 255.
          The format has no offset, so YOU apply this to new inputs before enqueueing: the values are in
          MODEL_DIR/preprocess.json and `fit.py --prepare MODEL_DIR --data new.csv --to x.npy` does it.

Image data (an image folder, an X.npy shaped [N, H, W], or features with --shape H,W) may get a binary
convolution front (bitfleet.bmoe format v2): --conv channels,kernel,stride,padding,pool, e.g. --conv 32,5,1,2,4:
that many binary k x k filters over the image (zero padding), integer thresholds, OR-pooling (max-pool of +-1);
the pooled features then feed the stem, or with --stem 0 (the default with --conv) the router and the experts.
One-channel images only (--color gray for color images).  --conv2 channels,kernel,stride,pool (e.g. 48,3,1,1) adds
a second binary conv over the first's pooled map (format v4, no padding); its features take the first conv's place.
--conv-bits 2 gives the first conv 2-bit weights (-3, -1, 1, 3 per tap, format v5): two binary convs added, 2*h + l.
--hidden-levels 2 gives the binary experts' hidden layers two thresholds per unit (format v6): two bits per unit,
sign(y + a) and sign(y - a) with a learnt offset a, so the layer after reads 2 H bits; the float twin is unchanged.

It trains the float twin first (same architecture, float weights, ReLU; the accuracy peer, exported to
MODEL_DIR/float/model.onnx and its ONNX Runtime int8 twin model_int8.onnx; --teacher DIR takes an earlier run's
instead), then the binary model (--real-weights N: its first N epochs with real weights), distilled from
the float twin (--kd), with batch-norm statistics for the last --finetune epochs frozen to the population ones
(re-estimated each epoch) so training sees the exported forward pass; exports it, evaluates the exported
exact-integer model on the held-out split with Ops/models/reference.py, measures samples/s (ONNX Runtime for the
twins, `bitfleet bench` for the binary model when a built binary is found) and writes MODEL_DIR/MODEL_CARD.md and
MODEL_DIR/fit_metrics.json.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import shutil
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
from train import cpu_name  # noqa: E402  (shared with Ops/bench/peers.py)

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".pgm", ".ppm", ".pbm", ".pnm", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


class FitError(Exception):
    """Bad input or options: printed as one line, exit status 2."""


# ----------------------------------------------------------------------------------------------------- loading

def _labels_to_ints(raw, names=None):
    """Labels (numbers or strings) -> (int64 ids, class names). Numbers sort numerically, strings lexically."""
    raw = np.asarray(raw)
    if raw.ndim != 1:
        raw = raw.reshape(len(raw), -1)
        if raw.shape[1] != 1:
            raise FitError(f"labels must be one value per sample, got shape {list(raw.shape)}")
        raw = raw[:, 0]
    if raw.dtype.kind == "f":
        if not np.all(np.isfinite(raw)):
            bad = int(np.argwhere(~np.isfinite(raw))[0][0])
            raise FitError(f"label of sample {bad} is missing or not a number")
        if np.all(raw == np.round(raw)):
            raw = raw.astype(np.int64)
    if raw.dtype.kind in "iub":
        values = np.unique(raw)
        classes = [str(int(v)) for v in values]
    else:
        raw = raw.astype(str)
        if np.any(np.char.strip(raw) == ""):
            bad = int(np.nonzero(np.char.strip(raw) == "")[0][0])
            raise FitError(f"label of sample {bad} is empty")
        values = np.unique(raw)
        classes = [str(v) for v in values]
    y = np.searchsorted(values, raw).astype(np.int64)
    if names:
        if len(names) != len(classes):
            raise FitError(f"--classes names {len(names)} classes but the labels hold {len(classes)}: {classes}")
        classes = list(names)
    return y, classes


def load_arrays(path, labels_path):
    if path.endswith(".npz"):
        z = np.load(path, allow_pickle=False)
        xk = next((k for k in ("X", "x", "features", "data") if k in z.files), None)
        yk = next((k for k in ("y", "Y", "labels", "label", "target") if k in z.files), None)
        if xk is None:
            raise FitError(f"{path}: no features array (expected a key X or x; found {z.files})")
        if yk is None:
            raise FitError(f"{path}: no labels array (expected a key y or labels; found {z.files})")
        return z[xk], z[yk]
    if os.path.isdir(path):
        xp, yp = os.path.join(path, "X.npy"), labels_path or os.path.join(path, "y.npy")
    else:
        xp = path
        yp = labels_path or os.path.join(os.path.dirname(os.path.abspath(path)), "y.npy")
    if not os.path.exists(yp):
        raise FitError(f"no labels: expected {yp} (y.npy next to the features) or --labels PATH")
    try:
        return np.load(xp, allow_pickle=False), np.load(yp, allow_pickle=False)
    except ValueError as e:
        raise FitError(f"{xp}: cannot read as .npy ({e})")


def _is_number(s):
    try:
        float(s)
        return True
    except ValueError:
        return False


def load_csv(path, label, delimiter):
    with open(path, newline="", encoding="utf-8-sig") as f:
        rows = [r for r in csv.reader(f, delimiter=delimiter)]
    rows = [(i + 1, r) for i, r in enumerate(rows) if any(c.strip() for c in r)]
    if not rows:
        raise FitError(f"{path}: no rows")
    first = rows[0][1]
    header = None
    if not all(_is_number(c) for c in first) and len(rows) > 1 and sum(_is_number(c) for c in rows[1][1]) >= 1 \
            and sum(_is_number(c) for c in first) < sum(_is_number(c) for c in rows[1][1]):
        header = [c.strip() for c in first]
        rows = rows[1:]
    if not rows:
        raise FitError(f"{path}: a header but no data rows")
    width = len(rows[0][1])
    for line, r in rows:
        if len(r) != width:
            raise FitError(f"{path} line {line}: {len(r)} columns, but the first data row has {width} (ragged CSV)")
    if width < 2:
        raise FitError(f"{path}: need a label column and at least one feature column, found {width} column")
    if label is None:
        li = width - 1
        if header:
            for cand in ("label", "class", "target", "y"):
                hits = [i for i, h in enumerate(header) if h.lower() == cand]
                if hits:
                    li = hits[0]
                    break
    elif label.lstrip("-").isdigit():
        li = int(label) % width
    else:
        if not header or label not in header:
            raise FitError(f"{path}: no column named {label!r}" + (f" (columns: {header})" if header else
                                                                    " (the file has no header row)"))
        li = header.index(label)
    labels = [r[li].strip() for _, r in rows]
    X = np.zeros((len(rows), width - 1), np.float64)
    cols = [j for j in range(width) if j != li]
    for n, (line, r) in enumerate(rows):
        for k, j in enumerate(cols):
            c = r[j].strip()
            try:
                X[n, k] = float(c)
            except ValueError:
                name = f" ({header[j]!r})" if header else ""
                what = "an empty cell (missing value)" if c == "" else f"{c!r} is not a number"
                raise FitError(f"{path} line {line} column {j + 1}{name}: {what}")
    lab = np.array(labels)
    if all(_is_number(v) for v in labels if v):
        lab = np.array([float(v) if v else np.nan for v in labels])
    return X, lab


def _image_size_default(sizes, cap=64):
    w = int(np.median([s[0] for s in sizes]))
    h = int(np.median([s[1] for s in sizes]))
    return max(1, min(cap, w)), max(1, min(cap, h))


def load_images(path, size, color):
    try:
        from PIL import Image
    except ImportError:
        raise FitError("reading an image folder needs Pillow: python3 -m pip install pillow")
    classes = sorted(d for d in os.listdir(path) if os.path.isdir(os.path.join(path, d)) and not d.startswith("."))
    if not classes:
        raise FitError(f"{path}: no class sub-folders (expected {path}/<class name>/<image files>)")
    files, labels = [], []
    for ci, c in enumerate(classes):
        fs = sorted(f for f in os.listdir(os.path.join(path, c)) if os.path.splitext(f)[1].lower() in IMAGE_EXTS)
        if not fs:
            raise FitError(f"{os.path.join(path, c)}: no images (PNG, JPEG, PGM, BMP, ...) in this class folder")
        files += [os.path.join(path, c, f) for f in fs]
        labels += [ci] * len(fs)
    sizes = []
    for f in files:
        try:
            with Image.open(f) as im:
                sizes.append(im.size)
        except Exception as e:
            raise FitError(f"{f}: unreadable image ({e.__class__.__name__}: {e})")
    W, H = size if size else _image_size_default(sizes)
    arrs = np.zeros((len(files), H, W, 3), np.uint8)
    for i, f in enumerate(files):
        try:
            with Image.open(f) as im:
                im = im.convert("RGB")
                if im.size != (W, H):
                    im = im.resize((W, H), Image.BILINEAR)
                arrs[i] = np.asarray(im, np.uint8)
        except Exception as e:
            raise FitError(f"{f}: unreadable image ({e.__class__.__name__}: {e})")
        if (i + 1) % 10000 == 0:
            print(f"  decoded {i + 1}/{len(files)} images", flush=True)
    gray = bool(np.all(arrs[..., 0] == arrs[..., 1]) and np.all(arrs[..., 1] == arrs[..., 2]))
    rgb = color == "rgb" or (color == "auto" and not gray)
    if rgb:
        X, shape = arrs.reshape(len(files), -1), [H, W, 3]
    else:
        g = arrs[..., 0] if gray else np.round(arrs @ np.array([0.299, 0.587, 0.114])).clip(0, 255).astype(np.uint8)
        X, shape = g.reshape(len(files), -1), [H, W]
    return X, np.array(labels, np.int64), classes, shape


def quantise_features(X, scaling, input_scale=None):
    """Raw features -> (uint8 X, input_scale, note for the card, preprocess dict or None)."""
    X = np.asarray(X)
    if X.dtype.kind not in "biuf":
        raise FitError(f"features must be numbers, got dtype {X.dtype}")
    if X.dtype.kind == "f" and not np.all(np.isfinite(X)):
        bad = np.argwhere(~np.isfinite(X))[0]
        raise FitError(f"sample {bad[0]} feature {bad[1]}: NaN or infinity (fill or drop missing values first)")
    if input_scale is not None:
        q = np.round(X.astype(np.float32) * np.float32(input_scale))
        if q.min() < 0 or q.max() > 255:
            raise FitError(f"--input-scale {input_scale}: round(x * input_scale) leaves 0...255 "
                           f"(data range {X.min()}...{X.max()})")
        return q.astype(np.uint8), float(input_scale), f"input_scale {input_scale} (--input-scale)", None
    if scaling == "minmax":
        lo, hi = X.min(0).astype(np.float64), X.max(0).astype(np.float64)
        span = np.where(hi > lo, hi - lo, 1.0)
        xs = np.clip((X - lo) / span, 0, 1).astype(np.float32)
        q = np.round(xs * np.float32(255)).astype(np.uint8)
        pre = {"kind": "minmax", "min": lo.tolist(), "max": hi.tolist(),
               "formula": "x' = clip((x - min) / (max - min), 0, 1) per feature (max = min: x' = clip(x - min, 0, 1)); "
                          "send x' as float32 (input_scale 255)"}
        return q, 255.0, ("per-feature min-max to 0...1 (preprocess.json), then input_scale 255: new inputs must "
                          "be transformed the same way before enqueueing"), pre
    if X.dtype == np.uint8 and scaling == "auto":
        return X, 255.0, "uint8 data used as is; input_scale 255 (send uint8 .npy, or floats x / 255)", None
    lo, hi = float(X.min()), float(X.max())
    if lo < 0:
        j = int(np.argmin(X.min(0)))
        raise FitError(f"feature {j} has negative values (min {X[:, j].min()}): the bitfleet.bmoe v1 format scales "
                       f"inputs (x_u8 = round(x * input_scale)) but has no offset, so raw inputs must be >= 0. "
                       f"Use --scaling minmax (per-feature min-max, written to preprocess.json, that you apply "
                       f"before enqueueing), or shift your features yourself")
    if scaling == "auto" and np.all(X == np.round(X)) and hi <= 255:
        return X.astype(np.uint8), 1.0, "integer data in 0...255 used as is; input_scale 1 (send the same numbers)", None
    if hi <= 0:
        raise FitError("every feature is 0: nothing to learn from")
    scale = np.float32(255.0) / np.float32(hi)
    while np.round(np.float32(hi) * scale) > 255:
        scale = np.nextafter(scale, np.float32(0))
    q = np.round(X.astype(np.float32) * scale).astype(np.uint8)
    note = (f"input_scale {float(scale):.9g} = 255 / {hi:.9g} (the largest training value): send the raw features; "
            f"values above {hi:.9g} are rejected by the worker")
    fmax = X.max(0)
    small = int(np.sum(fmax < hi / 16))
    if small:
        note += (f". {small} of {X.shape[1]} features never exceed 1/16 of that maximum and keep < 4 bits of "
                 f"resolution; --scaling minmax would use all 8")
        print(f"note: {small} features use less than 1/16 of the 0...255 range under one global scale; "
              f"consider --scaling minmax", flush=True)
    return q, float(scale), note, None


def load_data(args):
    path = args.data
    if not os.path.exists(path):
        raise FitError(f"{path}: no such file or folder")
    shape, classes = None, None
    if os.path.isdir(path) and not os.path.exists(os.path.join(path, "X.npy")):
        if args.scaling not in ("auto",) or args.input_scale is not None:
            raise FitError("--scaling/--input-scale apply to feature data; images are uint8 (input_scale 255)")
        if args.shape:
            raise FitError("--shape is for .npy/.csv features; an image folder has its own shape (--size WxH)")
        X, y, classes, shape = load_images(path, args.size, args.color)
        kind = f"image folder ({len(classes)} classes, {'x'.join(map(str, shape))})"
        Xq, scale, note, pre = X, 255.0, "8-bit pixels; input_scale 255 (send uint8 .npy, or floats pixel / 255)", None
        if args.classes:
            raise FitError("--classes: an image folder names its classes by its sub-folders")
    else:
        if path.lower().endswith((".csv", ".tsv", ".txt")):
            X, yraw = load_csv(path, args.label, "\t" if path.lower().endswith(".tsv") else args.delimiter)
            kind = "CSV"
        elif path.endswith((".npy", ".npz")) or os.path.isdir(path):
            X, yraw = load_arrays(path, args.labels)
            kind = "npz" if path.endswith(".npz") else "npy"
        else:
            raise FitError(f"{path}: unknown data kind (expected .npz, .npy, .csv, a folder with X.npy + y.npy, "
                           f"or a folder of class sub-folders of images)")
        if len(X) != len(yraw):
            raise FitError(f"{len(X)} samples but {len(yraw)} labels")
        if len(X) == 0:
            raise FitError(f"{path}: no samples")
        if X.ndim > 2:
            shape = list(X.shape[1:])
        X = X.reshape(len(X), -1)
        if args.shape:
            if args.shape[0] * args.shape[1] != X.shape[1]:
                raise FitError(f"--shape {args.shape[0]},{args.shape[1]}: {args.shape[0] * args.shape[1]} pixels, "
                               f"but the data has {X.shape[1]} features per sample")
            shape = list(args.shape)
        y, classes = _labels_to_ints(yraw, args.classes.split(",") if args.classes else None)
        Xq, scale, note, pre = quantise_features(X, args.scaling, args.input_scale)
    counts = np.bincount(y, minlength=len(classes))
    if len(classes) < 2:
        raise FitError(f"only one class ({classes[0]!r}) in the labels: a classifier needs at least 2")
    return dict(X=np.ascontiguousarray(Xq), y=y, classes=classes, input_scale=scale, input_shape=shape, kind=kind,
                scaling_note=note, preprocess=pre, counts=counts.tolist())


def split(y, frac, seed):
    """Stratified held-out split: about `frac` of each class (at least one sample of a class with >= 2)."""
    rng = np.random.default_rng(seed)
    tr, va = [], []
    for c in range(int(y.max()) + 1):
        idx = rng.permutation(np.nonzero(y == c)[0])
        nv = int(round(frac * len(idx)))
        if frac > 0 and len(idx) >= 2:
            nv = min(max(nv, 1), len(idx) - 1)
        va.append(idx[:nv])
        tr.append(idx[nv:])
    return rng.permutation(np.concatenate(tr)), np.sort(np.concatenate(va))


# ---------------------------------------------------------------------------------------------------- training

class Clock:
    """Progress over all phases: elapsed, and time left from the seconds per epoch so far (per phase weight)."""

    def __init__(self, plan):
        self.plan = plan          # [(phase, epochs, relative cost per epoch)]
        self.t0 = time.time()
        self.done = {p: 0 for p, _, _ in plan}
        self.secs = {p: 0.0 for p, _, _ in plan}

    def tick(self, phase, seconds):
        self.done[phase] += 1
        self.secs[phase] += seconds

    def left(self):
        known = [(self.secs[p] / self.done[p]) / w for p, _, w in self.plan if self.done[p]]
        unit = np.mean(known) if known else 0.0
        rest = 0.0
        for p, n, w in self.plan:
            per = self.secs[p] / self.done[p] if self.done[p] else unit * w
            rest += per * (n - self.done[p])
        return rest


def fmt_time(s):
    s = int(round(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def predict(model, X, chunk=4096):
    import torch
    if getattr(model, "conv_cfg", None) is not None:
        chunk = 512          # the conv's unfolded windows and maps: ~100 MB per 512 28x28 images at 32 channels
    model.eval()
    with torch.no_grad():
        return np.concatenate([model(torch.from_numpy(X[i:i + chunk]))[0].numpy() for i in range(0, len(X), chunk)])


def float_text(a):
    """The model card's words on how the float twin was trained."""
    if a.get("teacher"):
        return (f"Float twin: taken from the earlier fit `{a['teacher']}` (its card says how it was trained; "
                f"`--shift` {a['shift']})."
                + (f" **The held-out figures on this card are optimistic**: that twin may have trained on some of "
                   f"the held-out samples ({a['teacher_overlap']})." if a.get("teacher_overlap") else ""))
    return f"Float twin: {a['epochs'] + a['finetune']} epochs."


def real_text(a):
    """The model card's words on --real-weights ("" when off)."""
    n = a.get("real_weights") or 0
    return (f"first {n} epochs with real-valued weights and binary activations (two-step training), then "
            if n else "")


def augmentation(a):
    """The model card's sentence on --shift / --binary-shift ("" when neither moved images; fit() has already made
    an absent --binary-shift equal to --shift)."""
    f, b = a["shift"], a["binary_shift"]
    if not f and not b:
        return ""
    say = lambda n: f"moved at random by up to {n} pixels per direction (zero filled)" if n else "not moved"
    if f == b:
        return f" Augmentation: training images {say(f)} in the batch-statistics epochs of both models."
    return (f" Augmentation, in the batch-statistics epochs: the float twin's training images {say(f)}, the binary "
            f"model's {say(b)}.")


def shifted(xb, shape, n, gen):
    """Each image of the batch (rows of H·W features) moved by its own random (dy, dx) in [-n, n]², zero filled."""
    import torch
    H, W = shape
    B = xb.shape[0]
    padded = torch.nn.functional.pad(xb.reshape(B, H, W), (n, n, n, n))
    dy = torch.randint(0, 2 * n + 1, (B, 1, 1), generator=gen)
    dx = torch.randint(0, 2 * n + 1, (B, 1, 1), generator=gen)
    rows = torch.arange(H).reshape(1, H, 1) + dy
    cols = torch.arange(W).reshape(1, 1, W) + dx
    return padded[torch.arange(B).reshape(B, 1, 1), rows, cols].reshape(B, H * W)


def train(model, X, y, Xv, yv, args, clock, phase, epochs, finetune=0, teacher=None, shape=None, lr=None, swa=0,
          ramp=0):
    """`swa` N > 0: at the end, every parameter (latent weights included) is set to its mean over the ends of the
    last N epochs (stochastic weight averaging); the caller re-estimates the batch-norm statistics.
    `ramp` N > 0 (a binary model in the real-weight state): its first N epochs move the weights from real to their
    signs step by step (set_binarise from 0 to 1, linear per batch); then the model leaves the real-weight state and
    the remaining epochs compute with sign(W)."""
    import torch
    import torch.nn.functional as F
    from bitfleet_torch import Adam, calibrate
    gen = torch.Generator().manual_seed(args.seed + (1 if model.binary else 0))

    lr0 = args.lr if lr is None else lr
    opt = Adam(model.parameters(), lr=lr0)
    n = len(X)
    nb = max(1, math.ceil(n / args.batch))
    rng = np.random.default_rng(args.seed + (1 if model.binary else 0))
    Xt = torch.from_numpy(X)
    yt = torch.from_numpy(y)
    T = 4.0
    shift = args.binary_shift if model.binary else args.shift
    history = []
    swa_sum, swa_count = None, 0
    if ramp and not (model.binary and 0 < ramp <= epochs):
        raise ValueError(f"ramp {ramp}: for a binary model, at most its {epochs} batch-statistics epochs")
    for ep in range(epochs + finetune):
        t_ep = time.time()
        frozen = ep >= epochs
        if frozen:
            calibrate(model, X[rng.permutation(n)[:20000]])
        model.train()
        if frozen:
            for mod in model.modules():
                if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm):   # the conv front's BatchNorm2d too
                    mod.eval()
        perm = torch.from_numpy(rng.permutation(n))
        tl = tc = 0.0
        for b in range(nb):
            if frozen:
                lr = 0.5 * lr0 * 0.3 * (1 + math.cos(math.pi * ((ep - epochs) * nb + b) / (finetune * nb)))
            else:
                lr = 0.5 * lr0 * (1 + math.cos(math.pi * (ep * nb + b) / (epochs * nb)))
            opt.lr = lr
            if ramp and ep < ramp:
                model.set_binarise(min(1.0, (ep * nb + b + 1) / (ramp * nb)))
            ids = perm[b * args.batch:(b + 1) * args.batch]
            if len(ids) < 2:
                continue
            xb, yb = Xt[ids], yt[ids]
            if shift and not frozen:
                xb = shifted(xb, shape, shift, gen)
            logits, aux = model(xb)
            loss = F.cross_entropy(logits, yb)
            if teacher is not None and args.kd > 0:
                with torch.no_grad():
                    tz = teacher(xb)[0]
                kd = F.kl_div(F.log_softmax(logits / T, 1), F.softmax(tz / T, 1), reduction="batchmean") * T * T
                loss = (1 - args.kd) * loss + args.kd * kd
            loss = loss + args.aux * aux
            opt.zero_grad()
            loss.backward()
            opt.step()
            model.clip_latent()
            tl += float(loss.detach()) * len(ids)
            tc += float((logits.argmax(1) == yb).sum())
        secs = time.time() - t_ep
        clock.tick(phase, secs)
        va = float((predict(model, Xv).argmax(1) == yv).mean()) if len(Xv) else float("nan")
        rec = dict(epoch=ep + 1, loss=tl / n, train_acc=tc / n, heldout_acc=va, seconds=round(secs, 2))
        history.append(rec)
        tag = "+frozen-bn" if frozen else (f"+binarising (to {min(1.0, (ep + 1) / ramp):.2f})" if ramp and ep < ramp
                                           else "")
        print(f"[{phase}] epoch {ep + 1}/{epochs + finetune}{tag}  loss {tl / n:.4f}  train acc {tc / n * 100:.2f}%  "
              f"held-out acc {va * 100:.2f}%  ({secs:.1f}s)  elapsed {fmt_time(time.time() - clock.t0)}  "
              f"left ~{fmt_time(clock.left())}", flush=True)
        if ramp and ep == ramp - 1:     # t reached 1: the same outputs from here on with sign(W)
            model.set_binarise(0.0)
            model.set_real_weights(False)
        if swa and ep >= epochs + finetune - swa:
            snap = [p.detach().clone() for p in model.parameters()]
            swa_sum = snap if swa_sum is None else [a + b for a, b in zip(swa_sum, snap)]
            swa_count += 1
    if swa_count:
        with torch.no_grad():
            for p, total in zip(model.parameters(), swa_sum):
                p.copy_(total / swa_count)
        print(f"[{phase}] parameters averaged over the last {swa_count} epochs (--swa)", flush=True)
    return history


# ------------------------------------------------------------------------------------------------ measurement

def ort_session(path, threads):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def ort_accuracy(sess, Xv, yv):
    """Held-out accuracy of an ONNX float classifier whose input x is the 8-bit inputs / 255 (chunks of 4096)."""
    xf = Xv.astype(np.float32) / np.float32(255)
    logits = np.concatenate([sess.run(None, {"x": xf[i:i + 4096]})[0] for i in range(0, len(xf), 4096)])
    return float((logits.argmax(1) == yv).mean())


def ort_eval(path, Xv, yv, threads, bench_seconds, batch=256):
    """(held-out accuracy, samples/s at `batch`) of an ONNX float classifier."""
    sess = ort_session(path, threads)
    acc = ort_accuracy(sess, Xv, yv)
    xb = np.resize(Xv, (batch, Xv.shape[1])).astype(np.float32) / np.float32(255)
    sess.run(None, {"x": xb})
    n, t0 = 0, time.perf_counter()
    while True:
        sess.run(None, {"x": xb})
        n += batch
        if time.perf_counter() - t0 >= bench_seconds:
            break
    return acc, n / (time.perf_counter() - t0)


class OnnxTeacher:
    """A --teacher's float twin (ONNX Runtime) as the distillation teacher, called like the torch twin:
    teacher(xb)[0] is the logits of the uint8 batch xb."""

    def __init__(self, path, threads):
        self.sess = ort_session(path, threads)

    def __call__(self, xb):
        import torch
        x = np.asarray(xb, dtype=np.float32) / np.float32(255)
        return (torch.from_numpy(self.sess.run(None, {"x": x})[0]),)

    def accuracy(self, Xv, yv):
        return ort_accuracy(self.sess, Xv, yv)


def check_teacher(args, arch, classes, input_scale):
    """--teacher DIR: an earlier fit.py output whose model has this run's classes, inputs and architecture, so that
    its float twin is this model's twin too. Sets args.shift to the shift the teacher's float twin was trained with
    (the card's augmentation sentence speaks of it). Returns the path of its float/model.onnx; FitError naming what
    is missing or differs otherwise."""
    d = args.teacher
    onnx_path = os.path.join(d, "float", "model.onnx")
    need = [os.path.join(d, "config.json"), os.path.join(d, "fit_metrics.json"), onnx_path,
            os.path.join(d, "float", "model_int8.onnx")]
    missing = [p for p in need if not os.path.isfile(p)]
    if missing:
        raise FitError(f"--teacher {d}: not a fit.py output folder (missing {', '.join(missing)})")
    try:
        with open(need[0]) as f:
            cfg = json.load(f)
        with open(need[1]) as f:
            targs = json.load(f)["args"]
        shift = int(targs.get("shift") or 0)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise FitError(f"--teacher {d}: config.json or fit_metrics.json unreadable: {e}")
    # the conv's weight bits are the binary model's, not the float twin's: a 1-bit run's twin serves a 2-bit run
    def twin_conv(c):
        return None if not c else {k: v for k, v in c.items() if k != "weight_bits"}

    want = dict(classes=list(classes), input_features=arch["input_features"], input_scale=float(input_scale),
                stem_width=arch["stem"], experts=arch["experts"], top_k=arch["top_k"],
                expert_hidden=list(arch["hidden"]), conv=twin_conv(arch["conv"]), conv2=arch.get("conv2"))
    if arch["conv"]:
        want["input_shape"] = list(arch["input_shape"])
    got = dict(cfg, conv=twin_conv(cfg.get("conv")))
    diff = [f"{k} {got.get(k)!r} (this run: {want[k]!r})" for k in want if got.get(k) != want[k]]
    if diff:
        raise FitError(f"--teacher {d}: its model differs from this run's, so its float twin is not this model's "
                       f"twin: {'; '.join(diff)}")
    args.shift = shift
    args.teacher_overlap = teacher_overlap(args, targs)
    return onnx_path


def teacher_overlap(args, t):
    """Why the float twin of a --teacher whose fit.py arguments were `t` may have trained on some of this run's
    held-out samples (which makes every held-out figure of this run optimistic), or None when it did not: it held
    out the same split of the same file, or this run's --heldout set is not its training file."""
    def same(a, b):
        return bool(a) and bool(b) and os.path.realpath(a) == os.path.realpath(b)
    if args.heldout:
        return f"it trained on `{t.get('data')}`, this run's --heldout set" if same(t.get("data"), args.heldout) else None
    if t.get("heldout"):
        return f"it trained on all of `{t.get('data')}` (judged on its --heldout `{t['heldout']}`)"
    if not same(t.get("data"), args.data):
        return f"it trained on a split of `{t.get('data')}`, not of this run's `{args.data}`"
    tseed = t.get("split_seed", t.get("seed"))
    if t.get("val_split") != args.val_split or tseed != args.split_seed:
        return (f"it held out another split (--val-split {t.get('val_split')}, split seed {tseed}; this run: "
                f"--val-split {args.val_split}, split seed {args.split_seed})")
    return None


def check_kd_teacher(args, X, n_classes):
    """--kd-teacher ONNX: a float classifier of this run's inputs (input `x`: float32 [N, features] = the 8-bit inputs
    / 255, as fit.py's float twins take them; output: logits [N, classes]) to distil the binary model from. Returns
    an OnnxTeacher; FitError saying what does not fit otherwise."""
    path = args.kd_teacher
    if args.kd <= 0:
        raise FitError(f"--kd-teacher needs distillation (--kd > 0, this run: {args.kd})")
    if not os.path.isfile(path):
        raise FitError(f"--kd-teacher {path}: no such file")
    try:
        teacher = OnnxTeacher(path, args.threads)
        out = teacher(X[:8])[0]
    except Exception as e:   # onnxruntime raises its own exception types for a bad file or a wrong input shape
        raise FitError(f"--kd-teacher {path}: cannot run it on this data's inputs ({X.shape[1]} features as float32 "
                       f"input `x`): {str(e).splitlines()[0]}")
    if tuple(out.shape) != (min(8, len(X)), n_classes):
        raise FitError(f"--kd-teacher {path}: its output has shape {tuple(out.shape)} for {min(8, len(X))} samples; "
                       f"this data has {n_classes} classes")
    return teacher


def find_bitfleet(explicit):
    if explicit:
        return explicit if os.path.exists(explicit) else None
    for cand in (os.environ.get("BITFLEET_BIN"), os.path.join(REPO, ".build", "release", "bitfleet"),
                 shutil.which("bitfleet")):
        if cand and os.path.exists(cand):
            return cand
    return None


def engine_bench(binary, model_dir):
    """samples/s of the binary model in the engine, batch 256, 1 thread (`bitfleet bench --model DIR --json`)."""
    try:
        p = subprocess.run([binary, "bench", "--model", model_dir, "--json", "--m", "64", "--n", "64", "--k", "512"],
                           capture_output=True, text=True, timeout=300)
        j = json.loads(p.stdout)
        row = next(r for r in j["models"] if r["batch"] == 256 and r["threads"] == 1)
        one = next((r for r in j["models"] if r["batch"] == 1 and r["threads"] == 1), None)
        return dict(samples_per_s=row["samplesPerSecond"], batch1_samples_per_s=one and one["samplesPerSecond"],
                    stem_kernel=j.get("stemKernel"), cpu=j.get("cpu"), binary=binary)
    except Exception as e:  # a missing or failing binary must not lose a trained model
        print(f"note: bitfleet bench failed ({e.__class__.__name__}: {e}); binary samples/s not measured", flush=True)
        return None


# ------------------------------------------------------------------------------------------------------ output

def conv_width(cfg):
    import reference
    return reference.conv_geometry(cfg)["features"] if cfg.get("conv") else None


def args_conv_text(c):
    """--conv's five numbers of a conv block."""
    return ",".join(str(c[k]) for k in ("channels", "kernel", "stride", "padding", "pool"))


def front_text(cfg):
    """The card's sentence on the model's front: the dense binary stem (v1) or the conv front (v2)."""
    P, S = cfg["input_bit_planes"], cfg["stem_width"]
    if not cfg.get("conv"):
        return (f"Front: dense binary stem {cfg['input_features']} → {S} (binary weights, {P} input bit planes, "
                f"integer thresholds)")
    import reference
    c, g = cfg["conv"], reference.conv1_geometry(cfg)
    (H, W), (Hp, Wp), F = g["input"], g["pooled"], g["features"]
    c2 = cfg.get("conv2") if cfg.get("format_version", 2) >= 4 else None
    two = c.get("weight_bits", 1) == 2 and cfg.get("format_version", 2) >= 5
    text = (f"Front: binary convolution (format v{5 if two else 4 if c2 else 2}, `--conv {c['channels']},{c['kernel']},"
            f"{c['stride']},{c['padding']},{c['pool']}{' --conv-bits 2' if two else ''}`): {c['channels']} "
            f"{'2-bit (weights −3, −1, 1, 3)' if two else 'binary'} {c['kernel']}×{c['kernel']} filters over the "
            f"{H}×{W} image ({P} input bit planes), stride {c['stride']}, padding {c['padding']}, integer thresholds, "
            f"OR-pooling {c['pool']}×{c['pool']} → {Hp}×{Wp}×{c['channels']} = {F} binary features; ")
    if c2:
        g2 = reference.conv2_geometry(cfg)
        (Hp2, Wp2), F = g2["pooled"], g2["features"]
        text += (f"then a second binary convolution (`--conv2 {c2['channels']},{c2['kernel']},{c2['stride']},"
                 f"{c2['pool']}`): {c2['channels']} binary {c2['kernel']}×{c2['kernel']}×{c['channels']} filters over "
                 f"that map, stride {c2['stride']}, no padding, integer thresholds, OR-pooling "
                 f"{c2['pool']}×{c2['pool']} → {Hp2}×{Wp2}×{c2['channels']} = {F} binary features; ")
    return text + ("no stem (the conv features feed the router and the experts)" if S == 0 else
                   f"then a binary stem {F} → {S} (integer thresholds)")


def write_card(out, m):
    a = m["args"]
    pct = lambda v: "n/a" if v is None else f"{v * 100:.2f} %"
    sps = lambda v: "not measured" if v is None else f"{v:,.0f}".replace(",", " ")
    eng = m.get("engine")
    rows = [
        ("**binary, exported** (this directory)", pct(m["binary_heldout_acc"]),
         sps(eng and eng["samples_per_s"]), f"{m['safetensors_bytes']:,}".replace(",", " "),
         "Ops/models/reference.py on the exported directory (exact integer semantics)"
         + ("; samples/s: `bitfleet bench`, 1 thread" if eng else "; samples/s: no built `bitfleet` binary found")),
        ("float twin (float/model.onnx)", pct(m["float_onnx_acc"]), sps(m["float_samples_per_s"]),
         f"{m['float_onnx_bytes']:,}".replace(",", " "), f"ONNX Runtime CPU, {a['threads']} thread(s)"),
        ("int8 twin (float/model_int8.onnx)", pct(m["int8_acc"]), sps(m["int8_samples_per_s"]),
         f"{m['int8_onnx_bytes']:,}".replace(",", " "),
         f"onnxruntime.quantization.quantize_dynamic (QInt8), ONNX Runtime CPU, {a['threads']} thread(s)"),
    ]
    cfg = m["config"]
    lines = [
        f"# {cfg['name']} v{cfg['version']} — binary mixture-of-experts trained by fit.py",
        "",
        f"Trained on {m['data']['kind']} `{a['data']}`: {m['data']['samples']} samples, {len(cfg['classes'])} classes "
        f"({', '.join(cfg['classes'][:20])}{', …' if len(cfg['classes']) > 20 else ''}); "
        + (f"held-out set `{a['heldout']}`: {m['data']['heldout']} samples (not trained on, no epoch chosen by it), "
           if a.get('heldout') else
           f"held-out split {m['data']['heldout']} samples ({a['val_split'] * 100:.0f} % of each class, split seed "
           f"{a.get('split_seed', a['seed'])}), ")
        + f"training {m['data']['train']}.",
        "",
        "## Accuracy and speed (held-out data)",
        "",
        "| model | held-out accuracy | samples/s, batch 256 | bytes | how measured |",
        "|---|---|---|---|---|",
    ] + [f"| {r[0]} | {r[1]} | {r[2]} | {r[3]} | {r[4]} |" for r in rows] + [
        "",
        f"Machine: {m['cpu']}. Training-time held-out accuracy of the binary model (torch, batch-norm in eval "
        f"mode) before export: {pct(m['binary_torch_acc'])}; the exported model agrees with its own exact eval in "
        f"torch on {pct(m['exact_agreement'])} of the held-out predictions (logits identical: "
        f"{m['exact_logits_identical']}).",
        "",
        "## Inputs",
        "",
        f"- `input_features` {cfg['input_features']}" + (f", `input_shape` {cfg['input_shape']}" if cfg.get("input_shape") else "")
        + f", `input_bit_planes` {cfg['input_bit_planes']}, `input_scale` {cfg['input_scale']}.",
        f"- {m['data']['scaling_note']}.",
    ]
    if m["data"].get("preprocess"):
        lines += ["- **Apply `preprocess.json` to new inputs before enqueueing**: "
                  "`python3 Ops/models/fit.py --prepare MODEL_DIR --data new.csv --to x.npy` writes float32 inputs "
                  "ready for `bitfleet enqueue` (a CSV or .npy of features only, or with the label column)."]
    lines += [
        "- The float and int8 twins take float32 `x_u8 / 255` (`x_u8` as the binary model sees it).",
        "",
        "## Architecture",
        "",
        front_text(cfg) + f", router over {cfg['experts']} experts (top-{cfg['top_k']}), each expert "
        f"{' → '.join(str(w) for w in [cfg['stem_width'] or conv_width(cfg)] + cfg['expert_hidden'] + [len(cfg['classes'])])} "
        f"binary{' (two thresholds per hidden unit, format v6: the layer after reads 2 bits per unit)' if any(v != 1 for v in cfg.get('expert_hidden_levels', [])) else ''}; {m['binary_macs']:,} binary MACs per sample.".replace(f"{m['binary_macs']:,}", f"{m['binary_macs']:,}".replace(",", " ")),
        "",
        "## Training",
        "",
        f"PyTorch {m['torch_version']} (CPU, {a['threads']} thread(s)), layers from `Ops/models/bitfleet_torch.py`. "
        f"Adam, cosine learning-rate decay from {a['lr']}"
        + (f" ({a['binary_lr']} in the binary-weight epochs)" if a.get("binary_lr") is not None else "")
        + f", batch {a['batch']}, load-balancing loss weight {a['aux']}. "
        + float_text(a) + f" Binary: {real_text(a)}{a['epochs']} epochs with batch statistics"
        + (f" then {a['finetune']} with batch-norm frozen to population statistics" if a["finetune"] else "")
        + (f", the first {a['binarise_ramp']} of them moving the weights gradually from real to their signs "
           f"(`--binarise-ramp`)" if a.get("binarise_ramp") else "")
        + ", straight-through estimator, "
        + (f"the parameters then averaged over the ends of the last {a['swa']} of those epochs (`--swa`), "
           if a.get("swa") else "")
        + (f"distilled from `{a['kd_teacher']}` (held-out accuracy {pct(m['kd_teacher_acc'])}), not from its "
           f"own float twin" if a.get("kd_teacher") else "distilled from the float twin")
        + f" (weight {a['kd']}, T = 4). Batch-norm re-estimated over the training split "
        f"and folded into integer thresholds at export.{augmentation(a)} "
        + ("" if a.get("teacher") else f"Float twin {fmt_time(m['float_seconds'])}, ")
        + f"binary {fmt_time(m['binary_seconds'])}.",
        "",
        "Reproduce:",
        "",
        "```sh",
        m["command"],
        "```",
        "",
        f"`model.safetensors` sha256 `{m['sha256']}`. Register it: `bitfleet model add --name {cfg['name']} "
        f"--version {cfg['version']} --path {out}`.",
        "",
    ]
    with open(os.path.join(out, "MODEL_CARD.md"), "w", encoding="utf-8") as f:
        f.write("\n".join(lines))


def prepare(args):
    """--prepare MODEL_DIR: turn new feature data into float32 inputs for that model (applies preprocess.json)."""
    with open(os.path.join(args.prepare, "config.json")) as f:
        cfg = json.load(f)
    if args.data.lower().endswith(".csv"):
        rows = [r for r in csv.reader(open(args.data, newline="", encoding="utf-8-sig"), delimiter=args.delimiter)
                if any(c.strip() for c in r)]
        if rows and not all(_is_number(c) for c in rows[0]):
            rows = rows[1:]
        try:
            X = np.array([[float(c) for c in r] for r in rows], np.float64)
        except ValueError as e:
            raise FitError(f"{args.data}: {e}")
    else:
        X = np.load(args.data, allow_pickle=False)
        X = X.reshape(len(X), -1).astype(np.float64)
    D = cfg["input_features"]
    if X.ndim != 2 or X.shape[1] not in (D, D + 1):
        raise FitError(f"{args.data}: {X.shape[1] if X.ndim == 2 else '?'} columns, model expects {D} features")
    if X.shape[1] == D + 1:
        li = int(args.label) if args.label and args.label.lstrip("-").isdigit() else D
        X = np.delete(X, li % (D + 1), axis=1)
    pp = os.path.join(args.prepare, "preprocess.json")
    if os.path.exists(pp):
        with open(pp) as f:
            pre = json.load(f)
        lo, hi = np.array(pre["min"]), np.array(pre["max"])
        X = np.clip((X - lo) / np.where(hi > lo, hi - lo, 1.0), 0, 1)
    np.save(args.to, X.astype(np.float32))
    print(f"wrote {args.to}: float32 {list(X.shape)} for model {cfg['name']} (input_scale {cfg['input_scale']})")


# -------------------------------------------------------------------------------------------------------- main

def parse_args(argv):
    ap = argparse.ArgumentParser(prog="fit.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="training data: .npz, .npy, folder with X.npy+y.npy, .csv, or image folder")
    ap.add_argument("--out", help="model directory to write (config.json, model.safetensors, MODEL_CARD.md, float/)")
    ap.add_argument("--name", help="model name (default: the --out folder's name)")
    ap.add_argument("--version", default="1")
    g = ap.add_argument_group("data")
    g.add_argument("--labels", help="labels .npy when --data is an X.npy whose labels are not in y.npy beside it")
    g.add_argument("--label", help="CSV label column: a header name or 0-based index (default: label/class/target/y, else the last)")
    g.add_argument("--delimiter", default=",", help="CSV delimiter (default ',')")
    g.add_argument("--classes", help="comma-separated class names for integer labels 0..C-1 (in sorted label order)")
    g.add_argument("--scaling", choices=["auto", "global", "minmax"], default="auto", help="feature to uint8 convention (see above)")
    g.add_argument("--input-scale", type=float, help="force input_scale (features must map into 0..255)")
    g.add_argument("--size", help="image size WxH or N (default: median, capped at 64)")
    g.add_argument("--shape", help="H,W: the features of a .npy/.csv are row-major H x W images (for --conv)")
    g.add_argument("--color", choices=["auto", "gray", "rgb"], default="auto", help="image channels (default: rgb if any image has color)")
    g.add_argument("--val-split", type=float, default=0.1, help="held-out fraction of each class (default 0.1)")
    g.add_argument("--heldout", help="a separate held-out set (same kind, classes and scaling as --data, e.g. the data "
                   "set's test split): train on all of --data and report accuracy on this instead of --val-split")
    g = ap.add_argument_group("model")
    g.add_argument("--stem", type=int, help="stem width (default: 512, or 256 for fewer than 64 features; with "
                                            "--conv 0 = no stem, the conv features feed the router and experts)")
    g.add_argument("--conv", help="binary convolution front (format v2) for one-channel image data: "
                                  "channels,kernel,stride,padding,pool, e.g. 32,5,1,2,4 (limits: channels 1..64, "
                                  "kernel 1..15, 1 <= stride <= kernel, 0 <= padding < kernel, pool >= 1)")
    g.add_argument("--conv-bits", type=int, choices=[1, 2], default=1,
                   help="weight bits of the --conv filters: 1 (signs) or 2 (-3, -1, 1, 3: format v5)")
    g.add_argument("--conv2", help="a second binary convolution after --conv (format v4): channels,kernel,stride,pool, "
                                   "e.g. 48,3,1,1: that many binary kernel x kernel x C1 filters over the first conv's "
                                   "pooled map, no padding, integer thresholds, OR-pooling; its features replace the "
                                   "first conv's (limits: channels 1..256, kernel 1..7, 1 <= stride <= kernel, "
                                   "pool >= 1)")
    g.add_argument("--experts", type=int, default=8)
    g.add_argument("--top-k", type=int, default=2)
    g.add_argument("--hidden", default="128", help="expert hidden widths, comma separated ('' = none); default 128")
    g.add_argument("--hidden-levels", type=int, choices=[1, 2], default=1,
                   help="thresholds per unit of the binary experts' hidden layers: 1, or 2 (two bits per unit, "
                        "format v6; the layer after reads twice as many bits)")
    g.add_argument("--planes", type=int, help="input bit planes 1..8 (default: 4 for >= 256 features, e.g. images: the "
                                              "engine's fast stem; else 8)")
    g = ap.add_argument_group("training")
    g.add_argument("--epochs", type=int, help="epochs with batch statistics (default: from the data size, 8..40)")
    g.add_argument("--finetune", type=int, help="extra epochs with frozen population batch-norm (default epochs/2)")
    g.add_argument("--batch", type=int, default=256)
    g.add_argument("--lr", type=float, default=2e-3, help="Adam learning rate, cosine decay (default 2e-3)")
    g.add_argument("--aux", type=float, default=0.05, help="load-balancing loss weight")
    g.add_argument("--kd", type=float, default=0.5, help="distillation weight from the float twin (0 = off)")
    g.add_argument("--shift", type=int, default=0, help="augmentation for image data: move each training image by a "
                   "random offset of up to this many pixels in each direction, zero filled (not in the frozen "
                   "batch-norm epochs; default 0 = off)")
    g.add_argument("--binary-shift", type=int, help="--shift for the binary model alone (default: --shift); e.g. "
                   "--shift 2 --binary-shift 0 distils from a float twin that saw shifted images (less overfit, "
                   "softer targets) into a binary model trained on the images as they are")
    g.add_argument("--teacher", metavar="DIR", help="distil from the float twin of an earlier fit.py run (DIR: its "
                   "output folder, same data scaling, classes and architecture) instead of training one: its "
                   "float/model.onnx and model_int8.onnx are copied as this model's twins (saves the float phase when "
                   "only binary-side options change; the float twin's --shift is then the teacher's)")
    g.add_argument("--kd-teacher", metavar="ONNX", help="distil the binary model from this float ONNX classifier "
                   "(input x: float32 [N, features] = the 8-bit inputs / 255, output: logits [N, classes]; e.g. a "
                   "larger model's float/model.onnx) instead of its own float twin, which is still trained and "
                   "reported as the twin (with --teacher: that fit's twin, copied)")
    g.add_argument("--binary-lr", type=float, metavar="LR", help="the learning rate of the binary-weight epochs "
                   "(--epochs/--finetune of the binary model), e.g. lower than --lr after --real-weights so that "
                   "binarising keeps more of what the real-weight epochs learned (default: --lr)")
    g.add_argument("--swa", type=int, default=0, metavar="N",
                   help="average the binary model's parameters (latent weights included) over the ends of its last N "
                   "binary-weight epochs before the signs are taken, then re-estimate batch-norm (stochastic weight "
                   "averaging; default 0 = off)")
    g.add_argument("--real-weights", type=int, default=0, metavar="N",
                   help="two-step training of the binary model (as in ReActNet): first N epochs with real-valued "
                   "weights and binary activations, then the --epochs/--finetune schedule with binary weights "
                   "starting from those (default 0 = off)")
    g.add_argument("--binarise-ramp", type=int, default=0, metavar="N",
                   help="binarise the weights gradually: the first N binary-weight epochs compute with "
                   "(1 - t) W + t mean|W| sign(W), t rising from 0 to 1 batch by batch, starting from the real weights "
                   "(after --real-weights, or from the start); the rest with sign(W) (default 0 = at once)")
    g.add_argument("--seed", type=int, default=1)
    g.add_argument("--split-seed", type=int, help="seed of the held-out split (default: --seed); fix it to judge runs "
                                                  "with different --seed on the same held-out samples")
    g.add_argument("--threads", type=int, default=min(4, os.cpu_count() or 1), help="torch / ONNX Runtime threads")
    g.add_argument("--bench-seconds", type=float, default=2.0, help="seconds per ONNX Runtime speed measurement")
    g.add_argument("--bitfleet", help="bitfleet binary for the engine's samples/s (default: $BITFLEET_BIN, "
                                      ".build/release/bitfleet, or on PATH); 'none' skips")
    ap.add_argument("--prepare", metavar="MODEL_DIR", help="instead of training: write --data's features as float32 "
                                                           "inputs for MODEL_DIR (applying its preprocess.json) to --to")
    ap.add_argument("--to", help="output .npy for --prepare")
    args = ap.parse_args(argv)
    if args.prepare:
        if not args.to:
            ap.error("--prepare needs --to OUT.npy")
        return args
    if not args.out:
        ap.error("--out is required")
    if args.size:
        try:
            parts = [int(v) for v in args.size.lower().split("x")]
            args.size = (parts[0], parts[-1])
            assert len(parts) <= 2 and min(parts) >= 1 and max(parts) <= 512
        except (ValueError, AssertionError):
            ap.error("--size: WxH or N, 1..512")
    args.hidden = [int(v) for v in args.hidden.split(",") if v.strip()]
    if args.hidden_levels != 1 and not args.hidden:
        ap.error("--hidden-levels: needs expert hidden layers (--hidden)")
    if args.shape:
        try:
            args.shape = tuple(int(v) for v in args.shape.replace("x", ",").split(","))
            assert len(args.shape) == 2 and min(args.shape) >= 1
        except (ValueError, AssertionError):
            ap.error("--shape: H,W (two positive integers)")
    if args.conv:
        try:
            v = [int(t) for t in args.conv.split(",")]
            assert len(v) == 5
        except (ValueError, AssertionError):
            ap.error("--conv: channels,kernel,stride,padding,pool (five integers, e.g. 32,5,1,2,4)")
        ch, k, st, pad, pool = v
        if not (1 <= ch <= 64 and 1 <= k <= 15 and 1 <= st <= k and 0 <= pad < k and pool >= 1):
            ap.error("--conv: need 1 <= channels <= 64, 1 <= kernel <= 15, 1 <= stride <= kernel, "
                     "0 <= padding < kernel, pool >= 1")
        args.conv = dict(channels=ch, kernel=k, stride=st, padding=pad, pool=pool)
        if args.conv_bits == 2:
            args.conv["weight_bits"] = 2
    elif args.conv_bits != 1:
        ap.error("--conv-bits: needs --conv")
    if args.conv2:
        if not args.conv:
            ap.error("--conv2: a second conv needs the first one (--conv)")
        try:
            v = [int(t) for t in args.conv2.split(",")]
            assert len(v) == 4
        except (ValueError, AssertionError):
            ap.error("--conv2: channels,kernel,stride,pool (four integers, e.g. 48,3,1,1)")
        ch, k, st, pool = v
        if not (1 <= ch <= 256 and 1 <= k <= 7 and 1 <= st <= k and pool >= 1):
            ap.error("--conv2: need 1 <= channels <= 256, 1 <= kernel <= 7, 1 <= stride <= kernel, pool >= 1")
        args.conv2 = dict(channels=ch, kernel=k, stride=st, pool=pool)
    if args.stem is not None and (args.stem < 0 or (args.stem == 0 and not args.conv)):
        ap.error("--stem must be >= 1 (0 = no stem is for --conv only)")
    if not 0 < args.val_split < 1:
        ap.error("--val-split must be in (0, 1)")
    if args.planes is not None and not 1 <= args.planes <= 8:
        ap.error("--planes must be 1..8")
    if not 1 <= args.top_k <= args.experts:
        ap.error("need 1 <= --top-k <= --experts")
    if args.binary_lr is not None and not args.binary_lr > 0:
        ap.error("--binary-lr must be > 0")
    return args


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    try:
        if args.prepare:
            return prepare(args)
        return fit(args, argv)
    except FitError as e:
        print(f"fit.py: error: {e}", file=sys.stderr)
        return 2


def fit(args, argv):
    t_load = time.time()
    if args.split_seed is None:
        args.split_seed = args.seed
    data = load_data(args)
    X, y, classes = data["X"], data["y"], data["classes"]
    D = X.shape[1]
    if args.binary_shift is None:
        args.binary_shift = args.shift
    for flag, value in (("--shift", args.shift), ("--binary-shift", args.binary_shift)):
        if value < 0:
            raise FitError(f"{flag} {value}: a number of pixels >= 0")
    if args.real_weights < 0:
        raise FitError(f"--real-weights {args.real_weights}: a number of epochs >= 0")
    if args.swa < 0:
        raise FitError(f"--swa {args.swa}: a number of epochs >= 0")
    if (args.shift or args.binary_shift) and not (data["input_shape"] and len(data["input_shape"]) == 2):
        raise FitError("--shift moves one-channel images: it needs an image folder (gray), an X.npy shaped [N, H, W], "
                       "or --shape H,W")
    if args.heldout:
        # a held-out set of its own (e.g. a data set's official test split): train on all of --data
        held = load_data(argparse.Namespace(**{**vars(args), "data": args.heldout, "labels": None}))
        if held["classes"] != classes or held["X"].shape[1] != X.shape[1] or held["input_scale"] != data["input_scale"] \
                or held["preprocess"] or data["preprocess"]:
            raise FitError(f"--heldout {args.heldout}: it must have the training data's classes ({classes}), "
                           f"features ({X.shape[1]}) and scaling (input_scale {data['input_scale']}, no minmax); it has "
                           f"{held['classes']}, {held['X'].shape[1]} features, input_scale {held['input_scale']}")
        Xtr, ytr, Xva, yva = X, y, held["X"], held["y"]
        tr, va = np.arange(len(X)), np.arange(len(yva))
    else:
        tr, va = split(y, args.val_split, args.split_seed)
        if len(va) == 0:
            raise FitError("the held-out split is empty: need at least 2 samples of some class")
        Xtr, ytr, Xva, yva = X[tr], y[tr], X[va], y[va]
    args.planes = args.planes or (4 if D >= 256 else 8)
    conv_features = None
    if args.conv:
        shape = data["input_shape"]
        if not shape or len(shape) != 2:
            raise FitError("--conv needs one-channel image data: an image folder of grayscale images (--color gray "
                           "for color ones), an X.npy shaped [N, H, W], or --shape H,W for .npy/.csv features"
                           + (f" (this data's shape is {shape})" if shape else ""))
        from bitfleet_torch import conv_geometry
        c = args.conv
        _, _, Hp, Wp = conv_geometry(shape, c["kernel"], c["stride"], c["padding"], c["pool"])
        if min(Hp, Wp) < 1:
            raise FitError(f"--conv {args_conv_text(c)}: no pooled position left for "
                           f"{shape[0]}x{shape[1]} images")
        conv_features = Hp * Wp * c["channels"]
        if args.conv2:
            from bitfleet_torch import conv2_geometry
            c2 = args.conv2
            _, _, Hp2, Wp2 = conv2_geometry((Hp, Wp), c2["kernel"], c2["stride"], c2["pool"])
            if min(Hp2, Wp2) < 1:
                raise FitError(f"--conv2 {','.join(str(v) for v in c2.values())}: no pooled position left on the "
                               f"first conv's {Hp}x{Wp} map")
            conv1_features, conv_features = conv_features, Hp2 * Wp2 * c2["channels"]
        if args.stem is None:
            args.stem = 0
    elif args.stem is None:
        args.stem = 512 if D >= 64 else 256
    if args.epochs is None:
        args.epochs = int(min(40, max(8, round(300_000 / max(1, len(tr))))))
    if args.finetune is None:
        args.finetune = max(1, args.epochs // 2)
    if not 0 <= args.binarise_ramp <= args.epochs:
        raise FitError(f"--binarise-ramp {args.binarise_ramp}: a number of epochs from 0 to the binary model's "
                       f"{args.epochs} batch-statistics epochs")
    if args.swa > args.epochs + args.finetune:
        raise FitError(f"--swa {args.swa}: more than the binary model's {args.epochs + args.finetune} binary-weight epochs")
    name = args.name or os.path.basename(os.path.normpath(args.out))
    # the teacher's check before the summary lines: it sets --shift to the one its float twin was trained with
    arch = dict(input_features=D, classes=len(classes), stem=args.stem, experts=args.experts, top_k=args.top_k,
                hidden=args.hidden, planes=args.planes, seed=args.seed, conv=args.conv,
                input_shape=data["input_shape"] if args.conv else None, conv2=args.conv2 or None,
                hidden_levels=[args.hidden_levels] * len(args.hidden))
    teacher_onnx = None
    args.teacher_overlap = None
    if args.teacher:
        teacher_onnx = check_teacher(args, arch, classes, data["input_scale"])
        if args.teacher_overlap:
            print(f"fit.py: warning: the --teacher's float twin may have trained on some of this run's held-out "
                  f"samples ({args.teacher_overlap}), so every held-out accuracy below is optimistic; for a clean "
                  f"figure give the teacher the same --data, --val-split and --split-seed, or use --heldout",
                  file=sys.stderr, flush=True)
    kd_teacher = check_kd_teacher(args, Xtr, len(classes)) if args.kd_teacher else None
    print(f"data: {data['kind']} {args.data}: {len(X)} samples x {D} features, classes {classes} "
          f"(counts {data['counts']}); train {len(tr)}, held-out {len(va)}  [{time.time() - t_load:.1f}s]", flush=True)
    print(f"inputs: {data['scaling_note']}", flush=True)
    if args.conv:
        c = args.conv
        print(f"conv front: {c['channels']} {'2-bit' if c.get('weight_bits', 1) == 2 else 'binary'} "
              f"{c['kernel']}x{c['kernel']} filters, stride {c['stride']}, padding "
              f"{c['padding']}, OR-pool {c['pool']} -> {conv1_features if args.conv2 else conv_features} features",
              flush=True)
        if args.conv2:
            c2 = args.conv2
            print(f"conv2: {c2['channels']} binary {c2['kernel']}x{c2['kernel']}x{c['channels']} filters, stride "
                  f"{c2['stride']}, no padding, OR-pool {c2['pool']} -> {conv_features} features", flush=True)
    print(f"model: stem {args.stem}{' (none)' if args.stem == 0 else ''}, planes {args.planes}, experts {args.experts}, top-{args.top_k}, hidden "
          f"{args.hidden}; epochs {args.epochs} + {args.finetune} frozen-bn, batch {args.batch}, lr {args.lr}"
          f"{'' if args.binary_lr is None else f' (binary {args.binary_lr})'}, "
          f"kd {args.kd}, shift {args.shift} (binary {args.binary_shift}), real-weight epochs {args.real_weights}, threads {args.threads}", flush=True)
    if teacher_onnx:
        print(f"teacher: the float twin of {args.teacher} (trained with --shift {args.shift}); no float phase",
              flush=True)

    import torch
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    from bitfleet_torch import BinaryMoE, calibrate, export_model, float_arrays

    fl_epochs = 0 if teacher_onnx else args.epochs + args.finetune
    clock = Clock([("float", fl_epochs, 0.7), ("binary-real", args.real_weights, 1.0),
                   ("binary", args.epochs + args.finetune, 1.0)])
    os.makedirs(args.out, exist_ok=True)

    # float twin (or the --teacher's)
    t0 = time.time()
    if teacher_onnx:
        fmodel, fhist = None, []
        teacher = OnnxTeacher(teacher_onnx, args.threads) if args.kd > 0 else None
    else:
        fmodel = BinaryMoE(binary=False, **arch)
        fhist = train(fmodel, Xtr, ytr, Xva, yva, args, clock, "float", fl_epochs, shape=data["input_shape"])
        calibrate(fmodel, Xtr)
        teacher = fmodel.eval() if args.kd > 0 else None
    float_seconds = time.time() - t0
    kd_teacher_acc = None
    if kd_teacher:
        teacher = kd_teacher
        kd_teacher_acc = kd_teacher.accuracy(Xva, yva)
        print(f"teacher: {args.kd_teacher}, held-out acc {kd_teacher_acc * 100:.2f}% (not the float twin)", flush=True)

    # binary
    t0 = time.time()
    bmodel = BinaryMoE(binary=True, **arch)
    rhist = []
    if args.real_weights:
        bmodel.set_real_weights(True)
        rhist = train(bmodel, Xtr, ytr, Xva, yva, args, clock, "binary-real", args.real_weights, 0, teacher,
                      shape=data["input_shape"])
    if args.binarise_ramp:
        bmodel.set_real_weights(True)    # the ramp starts from the real weights (a no-op after --real-weights)
    else:
        bmodel.set_real_weights(False)
    bhist = train(bmodel, Xtr, ytr, Xva, yva, args, clock, "binary", args.epochs, args.finetune, teacher,
                  shape=data["input_shape"], lr=args.binary_lr, swa=args.swa, ramp=args.binarise_ramp)
    calibrate(bmodel, Xtr)
    binary_seconds = time.time() - t0
    torch_acc = float((predict(bmodel, Xva).argmax(1) == yva).mean())

    # export and check the binary model
    cfg = export_model(bmodel, args.out, name=name, classes=classes, input_scale=data["input_scale"],
                       version=args.version, input_shape=data["input_shape"])
    if data["preprocess"]:
        with open(os.path.join(args.out, "preprocess.json"), "w") as f:
            json.dump(data["preprocess"], f)
    import reference
    from export import sha256_file
    ref = reference.forward(reference.load_model(args.out), Xva)
    mine = bmodel.forward_exact(Xva)
    bin_acc = float((ref["logits"].argmax(1) == yva).mean())
    agree = float((ref["logits"].argmax(1) == mine["logits"].argmax(1)).mean())
    identical = all(np.array_equal(ref[k], mine[k]) for k in ref)
    print(f"exported {args.out}: reference.py held-out acc {bin_acc * 100:.2f}% (torch eval before export "
          f"{torch_acc * 100:.2f}%); exact eval in torch identical to reference.py: {identical}", flush=True)
    if not identical:
        print("WARNING: the exported model differs from the torch model's exact eval (exporter bug?)", flush=True)

    # float twin -> ONNX, int8 twin
    from bitfleet_torch import export_float_onnx
    fdir = os.path.join(args.out, "float")
    os.makedirs(fdir, exist_ok=True)
    onnx_path, int8_path = os.path.join(fdir, "model.onnx"), os.path.join(fdir, "model_int8.onnx")
    if teacher_onnx:
        shutil.copyfile(teacher_onnx, onnx_path)
        shutil.copyfile(os.path.join(os.path.dirname(teacher_onnx), "model_int8.onnx"), int8_path)
    else:
        export_float_onnx(float_arrays(fmodel), args.top_k, onnx_path, D, "sparse")
        import logging
        from onnxruntime.quantization import QuantType, quantize_dynamic
        logging.getLogger().setLevel(logging.ERROR)
        quantize_dynamic(onnx_path, int8_path, weight_type=QuantType.QInt8)
    facc, fsps = ort_eval(onnx_path, Xva, yva, args.threads, args.bench_seconds)
    iacc, isps = ort_eval(int8_path, Xva, yva, args.threads, args.bench_seconds)
    ftorch = None if fmodel is None else float((predict(fmodel, Xva).argmax(1) == yva).mean())
    print(f"float twin{' (from --teacher)' if teacher_onnx else ''}: ONNX held-out acc {facc * 100:.2f}% "
          + ("" if ftorch is None else f"(torch {ftorch * 100:.2f}%)") + f", {fsps:,.0f} samples/s; "
          f"int8 twin {iacc * 100:.2f}%, {isps:,.0f} samples/s (batch 256, {args.threads} thread(s))", flush=True)

    engine = None
    binary = None if args.bitfleet == "none" else find_bitfleet(args.bitfleet)
    if binary:
        engine = engine_bench(binary, args.out)
        if engine:
            print(f"binary model in the engine ({binary}): {engine['samples_per_s']:,.0f} samples/s at batch 256, "
                  f"1 thread", flush=True)
    else:
        print("no built bitfleet binary found (swift build -c release, or --bitfleet PATH): engine samples/s not "
              "measured", flush=True)

    S = args.stem or conv_features                   # the width the router and the experts read
    widths = [S] + args.hidden + [len(classes)]
    if args.conv:   # the conv runs on the input planes like the stem; the stem (if any) reads the conv bits
        c = args.conv
        Ho, Wo, _, _ = conv_geometry(data["input_shape"], c["kernel"], c["stride"], c["padding"], c["pool"])
        # a 2-bit conv is two binary convs added (2*h + l)
        front_macs = (args.planes * c["kernel"] ** 2 * c["channels"] * Ho * Wo * c.get("weight_bits", 1)
                      + conv_features * args.stem)
        if args.conv2:   # binary k x k x C1 windows at every conv2 output position
            c2 = args.conv2
            _, _, Hp, Wp = conv_geometry(data["input_shape"], c["kernel"], c["stride"], c["padding"], c["pool"])
            Ho2, Wo2, _, _ = conv2_geometry((Hp, Wp), c2["kernel"], c2["stride"], c2["pool"])
            front_macs += Ho2 * Wo2 * c2["channels"] * c2["kernel"] ** 2 * c["channels"]
    else:
        front_macs = args.planes * D * args.stem
    # a layer after a 2-level one reads 2 H bits (the 2-level layer itself costs one more compare per unit)
    reads = [widths[0]] + [args.hidden_levels * w for w in args.hidden]
    macs = front_macs + args.experts * S + \
        args.top_k * sum(reads[i] * widths[i + 1] for i in range(len(widths) - 1))
    st = os.path.join(args.out, "model.safetensors")
    metrics = dict(
        args={k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(args).items()},
        command="python3 Ops/models/fit.py " + " ".join(argv), config=cfg, cpu=cpu_name(),
        torch_version=torch.__version__,
        data=dict(kind=data["kind"], samples=len(X), train=len(tr), heldout=len(va), counts=data["counts"],
                  scaling_note=data["scaling_note"], preprocess=bool(data["preprocess"])),
        binary_heldout_acc=bin_acc, binary_torch_acc=torch_acc, exact_agreement=agree,
        exact_logits_identical=identical, float_onnx_acc=facc, float_torch_acc=ftorch, int8_acc=iacc,
        kd_teacher_acc=kd_teacher_acc,
        float_samples_per_s=fsps, int8_samples_per_s=isps, engine=engine,
        safetensors_bytes=os.path.getsize(st), sha256=sha256_file(st),
        float_onnx_bytes=os.path.getsize(onnx_path), int8_onnx_bytes=os.path.getsize(int8_path),
        binary_macs=int(macs), float_seconds=round(float_seconds, 1), binary_seconds=round(binary_seconds, 1),
        history=dict(float=fhist, binary_real=rhist, binary=bhist))
    with open(os.path.join(args.out, "fit_metrics.json"), "w") as f:
        json.dump(metrics, f, indent=2)
    write_card(args.out, metrics)
    print(f"wrote {args.out}/: config.json, model.safetensors, MODEL_CARD.md, fit_metrics.json, float/model.onnx, "
          f"float/model_int8.onnx  (total {fmt_time(time.time() - clock.t0)})", flush=True)
    print(f"register it: bitfleet model add --name {name} --version {args.version} --path {args.out}", flush=True)
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
