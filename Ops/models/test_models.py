#!/usr/bin/env python3
"""Tests of the model tools for users' own models and data (run by Ops/test.sh; ~30-40 s on 2 cores).

    python3 Ops/models/test_models.py [-k NAME]

1. PyTorch export (bitfleet_torch.py): a tiny BinaryMoE trained a few steps on 2 000 real Fashion-MNIST images,
   with batch-norm scales forced negative and zero and some latent weights exactly 0 (every folding case and
   sign(0) = +1), calibrated and exported; reference.py on the exported directory must equal the torch model's own
   exact-integer eval bit for bit (stem pre-activations, bits, router scores, experts, gates, logits,
   probabilities); the folded thresholds must agree with torch's batch-norm eval wherever |bn(a)| is not ~0; and
   the exporter fed only a saved state_dict writes the same bytes.
1b. The conv front (format v2) the same way: tiny BinaryMoE(conv=...) models trained a few steps on real
   Fashion-MNIST (stem 0 with hidden layers, stem > 0 with stride 2 / padding 0 / a dropped pooled row, stem 0
   with no hidden layer so the experts' output layer reads the conv features), conv batch-norm scales forced
   negative and zero and zero latent filter taps; reference.py on the export equals forward_exact bit for bit
   (conv_bits, stem_pre/bits, router scores, experts, gates, logits); the folded conv thresholds agree with torch's
   batch-norm eval off the boundary; a saved state_dict exports the same bytes; the float twin's ONNX export
   (Conv/Relu/MaxPool/Flatten front) gives torch's float logits.
1c. A second conv (format v4, conv2) the same way on 12 x 12 crops (stem 0, a stem, no hidden layer): bit for bit,
   thresholds against torch's batch-norm eval, feature order, the reading layers' columns, state_dict bytes, and the
   float twin's ONNX export (sparse and peers.py's dense rebuild) against torch.
1d. Two thresholds per expert hidden unit (format v6): a 2-bit conv front with a 2-level layer, and a stem with a
   2-level layer of 12 units read by a 1-level one, trained a few steps, scales and offsets forced to every folding
   case; bit for bit against reference.py, each level's thresholds against torch's sign(bn(a) +- offset), state_dict
   bytes, and export.py's and reference.py's refusals.
2. fit.py end to end, small: (a) a CSV with a header and string labels and (b) an .npz written from real
   Fashion-MNIST images, (c) a folder of PNG images; each writes a model directory that reference.py loads with
   the card's accuracy, an ONNX float twin and int8 twin; with $BITFLEET_BIN (a built `bitfleet`) the engine
   loads and runs it (`bitfleet bench --model`); (d) the PNG folder again with --conv (the card names the front),
   and with --conv-bits 2 and --hidden-levels 2 (formats v5 and v6);
   (e) an .npz of 12 x 12 crops with --conv and --conv2 (a v4 model, the card and MAC count, --conv2's errors).
0. Format v3 (two-level router): reference.py's grouped routing against a per-sample loop; export.py's checks.
3. fit.py's errors on bad input: missing labels, ragged CSV, one class, NaN, negative features, empty folder,
   unreadable image, no such path.
4. The committed models with $BITFLEET_BIN: v4, v3, fashion-c64 and fashion-c48b2 (conv fronts) and v2 (stem) run
   in `bitfleet bench --compare-paths`, which names the conv models' conv kernel per stem kernel (table-…/direct-…/windows-…; the
   lookup kernel's on the table and the direct kernel) and v2's stem kernels.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
FASHION = "/usr/share/datasets/fashion-mnist"
NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]

_cache = {}


def fashion(n=2000):
    if "x" not in _cache:
        from train import load_fashion
        xtr, ytr, _, _ = load_fashion(FASHION)
        _cache["x"], _cache["y"] = xtr[:5000].copy(), ytr[:5000].copy()
    return _cache["x"][:n], _cache["y"][:n]


def check(cond, msg):
    if not cond:
        raise AssertionError(msg)


# ---------------------------------------------------------------------------------------------- torch export

def test_torch_export_bit_exact():
    import torch
    import torch.nn.functional as F
    import bitfleet_torch as bt
    import reference

    torch.set_num_threads(1)
    x, y = fashion(2000)
    model = bt.BinaryMoE(784, 10, stem=96, experts=4, top_k=2, hidden=[40, 24], planes=4, seed=3)
    loss = _train_steps(model, x, y, 16, 125)   # 16 × 125 = the 2000 images, each once
    check(loss < 2.2, f"training did not reduce the loss ({loss:.3f})")
    bt.calibrate(model, x)
    with torch.no_grad():  # every folding case: negative scale (rows negated), zero scale (constant), sign(0)
        model.stem.bn.weight[:20] *= -1
        model.stem.bn.weight[20] = 0
        model.stem.bn.bias[20] = -0.5
        model.stem.bn.weight[21] = 0
        model.experts[1].hidden[0].bn.weight[:10] *= -1
        model.experts[2].hidden[1].bn.weight[3] = 0
        model.stem.weight[:, :50] = 0.0
        model.experts[0].out.weight[:, :5] = 0.0
        model.router.weight[:, 7] = 0.0
    xe = fashion(5000)[0][2000:3000]
    mine = model.forward_exact(xe)
    with tempfile.TemporaryDirectory() as td:
        cfg = bt.export_model(model, td, "torch-test", NAMES, 255.0, input_shape=[28, 28])
        check(cfg["input_bit_planes"] == 4 and cfg["expert_hidden"] == [40, 24], f"config {cfg}")
        ref = reference.forward(reference.load_model(td), xe)
        for k in ref:
            check(ref[k].shape == mine[k].shape, f"{k}: shape {ref[k].shape} vs {mine[k].shape}")
            diff = np.argwhere(ref[k] != mine[k])
            check(diff.size == 0, f"{k}: reference.py on the export differs from the torch exact eval at "
                                  f"{len(diff)} places, first {diff[:3].tolist()}")
        check(len(np.unique(ref["experts"])) > 1, "degenerate routing: one expert only")
        # the same file from a state_dict alone (torch.save / torch.load round trip)
        buf = io.BytesIO()
        torch.save(model.state_dict(), buf)
        buf.seek(0)
        sd = torch.load(buf)
        with tempfile.TemporaryDirectory() as td2:
            bt.export_state_dict(sd, td2, cfg)
            a = open(os.path.join(td, "model.safetensors"), "rb").read()
            b = open(os.path.join(td2, "model.safetensors"), "rb").read()
            check(a == b, "export_state_dict wrote different bytes from export_model")
    # folding agrees with torch's own batch-norm eval wherever the decision is not on the boundary
    model.eval()
    with torch.no_grad():
        a = model.stem.preact(torch.from_numpy(xe))
        bn = model.stem.bn
        yb = F.batch_norm(a, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)
    ex = model.fold()
    folded = mine["stem_bits"].astype(bool)
    check(np.array_equal(mine["stem_pre"] * np.where(ex["stem_weight"][:, 0] == np.sign(
        np.where(model.stem.weight[:, 0].detach().numpy() >= 0, 1, -1)), 1, -1), a.numpy().astype(np.int64)),
        "torch's stem pre-activations differ from the exact ones (negated rows aside)")
    bn_bits = (yb >= 0).numpy()
    far = np.abs(yb.numpy()) > 1e-3
    bad = np.argwhere((bn_bits != folded) & far)
    check(bad.size == 0, f"folded thresholds disagree with torch's batch-norm eval at {len(bad)} places "
                         f"(first sample/channel {bad[:3].tolist()})")
    acc = float((mine["logits"].argmax(1) == fashion(5000)[1][2000:3000]).mean())
    check(len(np.unique(mine["logits"].argmax(1))) > 2, "the tampered model predicts fewer than 3 classes")
    return f"bit-exact on 1000 images (accuracy of the deliberately tampered model {acc * 100:.1f}%)"


def _train_steps(model, x, y, steps, batch):
    import torch
    import torch.nn.functional as F
    import bitfleet_torch as bt
    opt = bt.Adam(model.parameters(), 3e-3)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y).long()
    for step in range(steps):
        ids = torch.arange(step * batch, (step + 1) * batch) % len(xt)
        logits, aux = model(xt[ids])
        loss = F.cross_entropy(logits, yt[ids]) + 0.05 * aux
        opt.zero_grad()
        loss.backward()
        opt.step()
        model.clip_latent()
    return float(loss.detach())


CONV_CASES = [  # (conv, stem, hidden): the layer(s) reading the conv features differ in each
    (dict(channels=8, kernel=5, stride=1, padding=2, pool=4), 0, [24]),     # router + hidden[0] read 7x7x8
    (dict(channels=6, kernel=4, stride=2, padding=0, pool=2), 40, [16]),    # 13x13 -> 6x6 (row/col 13 dropped)
    (dict(channels=4, kernel=3, stride=3, padding=1, pool=3), 0, []),       # 10x10 -> 3x3: out layer reads them
    # format v5: 2-bit filters (-3, -1, 1, 3), 14x14 -> 7x7
    (dict(channels=6, kernel=4, stride=2, padding=1, pool=2, weight_bits=2), 0, [16]),
]


def check_feature_readers(model, mdl, bits, f_t, stem, hidden, label):
    """Every layer reading a conv front's features: the exported rows × the format-order features (`bits`, 1 = +1)
    equal torch's sign(latent) rows × the torch-order features `f_t` (±1), rows negated where the batch-norm scale is
    negative."""
    import numpy as np
    f_fmt = 2 * bits.astype(np.int64) - 1
    sgn = lambda w: np.where(w.detach().numpy() >= 0, 1, -1).astype(np.int64)
    neg = lambda layer: np.where(layer.bn.weight.detach().numpy() < 0, -1, 1)
    if stem:
        readers = [("stem", mdl["stem_w"], model.stem.weight, neg(model.stem))]
    else:
        readers = [("router", mdl["router_w"], model.router.weight, 1)]
        for e in range(model.n_experts):
            if hidden:
                readers.append((f"expert {e} hidden 0", mdl["hidden_w"][0][e], model.experts[e].hidden[0].weight,
                                neg(model.experts[e].hidden[0])))
            else:
                readers.append((f"expert {e} out", mdl["out_w"][e], model.experts[e].out.weight, 1))
    for what, w_exp, w_lat, rows in readers:
        got, want = f_fmt @ w_exp.T, (f_t @ sgn(w_lat).T) * rows
        check(np.array_equal(got, want), f"{label}: {what}: the exported weights read the conv features differently "
                                         f"from the torch layer ({int((got != want).sum())} pre-activations differ): "
                                         f"column order?")


def check_state_dict_export(model, cfg, td, label):
    """A state_dict alone (saved and loaded by torch) exports the same bytes as export_model wrote into `td`."""
    import torch
    import bitfleet_torch as bt
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    buf.seek(0)
    with tempfile.TemporaryDirectory() as td2:
        bt.export_state_dict(torch.load(buf), td2, cfg)
        check(open(os.path.join(td, "model.safetensors"), "rb").read()
              == open(os.path.join(td2, "model.safetensors"), "rb").read(),
              f"{label}export_state_dict wrote different bytes from export_model")


def float_onnx_error(fm, images, features):
    """The largest difference from the float twin `fm`'s torch logits on `images` (uint8 [N, features]) of its
    exported sparse ONNX graph and of the dense graph that Ops/bench/peers.py rebuilds from it (every expert, gated;
    ONNX Runtime, 1 thread)."""
    import numpy as np
    import onnxruntime as ort
    import torch
    import bitfleet_torch as bt
    sys.path.insert(0, os.path.join(HERE, "..", "bench"))
    from peers import dense_from_sparse
    with torch.no_grad():
        want = fm.eval()(torch.from_numpy(images))[0].numpy()
    err = 0.0
    with tempfile.TemporaryDirectory() as td:
        path = bt.export_float_onnx(bt.float_arrays(fm), 2, os.path.join(td, "f.onnx"), features)
        for p in (path, dense_from_sparse(path, os.path.join(td, "dense.onnx"))):
            so = ort.SessionOptions()
            so.intra_op_num_threads = 1
            got = ort.InferenceSession(p, so, providers=["CPUExecutionProvider"]).run(
                None, {"x": images.astype(np.float32) / np.float32(255)})[0]
            err = max(err, float(np.abs(got - want).max()))
    return err


def test_torch_conv_export_bit_exact():
    import torch
    import torch.nn.functional as F
    import bitfleet_torch as bt
    import reference

    torch.set_num_threads(1)
    x, y = fashion(2000)
    xe = fashion(5000)[0][2000:2600]
    notes = []
    for ci, (conv, stem, hidden) in enumerate(CONV_CASES):
        model = bt.BinaryMoE(conv=conv, input_shape=(28, 28), classes=10, stem=stem, experts=4, top_k=2,
                             hidden=hidden, planes=4, seed=5 + ci)
        loss = _train_steps(model, x, y, 8, 250)
        check(loss < (2.25 if ci != 2 else 2.6), f"case {ci}: training did not reduce the loss ({loss:.3f})")
        bt.calibrate(model, x[:1000])
        with torch.no_grad():  # every folding case on the conv: negative scale, zero scale both ways, sign(0)
            bn = model.conv.bn
            bn.weight[: conv["channels"] // 2] *= -1
            bn.weight[-1] = 0
            bn.bias[-1] = -0.5 if ci % 2 else 0.25
            model.conv.weight[:, :3] = 0.0
            if stem:
                model.stem.bn.weight[:7] *= -1
                model.stem.bn.weight[8] = 0
        mine = model.forward_exact(xe)
        ones = float(mine["conv_bits"].mean())
        check(0.03 < ones < 0.97, f"case {ci}: degenerate conv features ({ones * 100:.0f}% ones)")
        with tempfile.TemporaryDirectory() as td:
            cfg = bt.export_model(model, td, "conv-test", NAMES, 255.0)
            two = conv.get("weight_bits", 1) == 2
            check(cfg["format_version"] == (5 if two else 2) and cfg["conv"] == conv and cfg["stem_width"] == stem
                  and cfg["input_shape"] == [28, 28], f"case {ci}: config {cfg}")
            ref = reference.forward(reference.load_model(td), xe)
            check(set(ref) == set(mine), f"case {ci}: keys {sorted(ref)} vs {sorted(mine)}")
            for k in ref:
                check(ref[k].shape == mine[k].shape, f"case {ci} {k}: shape {ref[k].shape} vs {mine[k].shape}")
                diff = np.argwhere(ref[k] != mine[k])
                check(diff.size == 0, f"case {ci} {k}: reference.py on the export differs from forward_exact at "
                                      f"{len(diff)} places, first {diff[:3].tolist()}")
            check(len(np.unique(ref["experts"])) > 1, f"case {ci}: degenerate routing")
            # forward_exact reads the same folded arrays as the exporter, so the checks below tie the export to the
            # torch model itself: (1) the exported filters and thresholds decide like torch's batch-norm eval
            # (before pooling) wherever |bn(a)| is not ~0
            mdl = reference.load_model(td)
            model.eval()
            with torch.no_grad():
                a = model.conv.preact(torch.from_numpy(xe[:200]))
                yb = F.batch_norm(a, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)
            q = torch.from_numpy(xe).to(torch.int64) >> 4
            k, s, p = conv["kernel"], conv["stride"], conv["padding"]
            cols = F.unfold(q[:200].to(torch.float64).reshape(-1, 1, 28, 28), k, padding=p, stride=s)
            ae = torch.matmul(torch.from_numpy(mdl["conv_w"].astype(np.float64)), cols).reshape(a.shape).numpy()
            far = np.abs(yb.numpy()) > 1e-3
            bad = np.argwhere(((yb >= 0).numpy() != (ae >= mdl["conv_t"][None, :, None, None])) & far)
            check(bad.size == 0, f"case {ci}: exported conv thresholds disagree with torch's batch-norm eval at "
                                 f"{len(bad)} places, first {bad[:3].tolist()}")
            # (2) reference.py's features, read back in torch's (c, y, x) flatten order, are the exported conv's
            geo = dict(conv, input_shape=(28, 28))
            f_t = bt.exact_conv_bits(q, mdl["conv_w"], mdl["conv_t"], geo, order="torch").numpy()
            Hp, Wp = reference.conv_geometry(cfg)["pooled"]
            C = conv["channels"]
            f_ref = ref["conv_bits"].reshape(-1, Hp, Wp, C).transpose(0, 3, 1, 2).reshape(len(xe), -1)
            check(np.array_equal(f_ref, (f_t > 0).astype(np.uint8)), f"case {ci}: conv feature order")
            # (3) every layer reading the features: exported rows x format-order features = torch's sign(latent)
            # rows x torch-order features (rows negated where the batch-norm scale is negative)
            check_feature_readers(model, mdl, ref["conv_bits"], f_t, stem, hidden, f"case {ci}")
            if ci == 1:   # a state_dict alone exports the same bytes
                check_state_dict_export(model, cfg, td, "")
        notes.append(f"stem {stem}: {mine['conv_bits'].shape[1]} features, {ones * 100:.0f}% ones")
    # the float twin's ONNX export gives torch's float logits on 300 test images (ONNX Runtime, 1 thread)
    # with the conv front (stem 0 and stem > 0)
    for conv, stem, hidden in CONV_CASES[:2]:
        fm = bt.BinaryMoE(conv=conv, input_shape=(28, 28), classes=10, stem=stem, experts=4, top_k=2,
                          hidden=hidden, planes=4, binary=False, seed=2)
        _train_steps(fm, x, y, 3, 250)
        bt.calibrate(fm, x[:1000])
        err = float_onnx_error(fm, xe[:300], 784)
        check(err < 1e-3, f"float twin ONNX (stem {stem}) differs from torch by {err}")
    # more than 20 experts: node names stay unique (expert 20's gate once collided with expert 0's)
    fm = bt.BinaryMoE(input_features=784, classes=10, stem=32, experts=24, top_k=2, hidden=[8, 8], planes=4,
                      binary=False, seed=3)
    bt.calibrate(fm, x[:500])
    err = float_onnx_error(fm, xe[:300], 784)
    check(err < 1e-3, f"float twin ONNX with 24 experts differs from torch by {err}")
    return "bit-exact on 600 images: " + "; ".join(notes) + "; float twin ONNX (sparse, and the dense graph peers.py rebuilds) = torch (also with 24 experts)"


CONV2_CASES = [  # (conv, conv2, stem, hidden) on 12 x 12 crops: stem 0 (router + hidden[0] read the conv2 features),
    # a stem, and stem 0 with no hidden layer (the experts' output layer reads them)
    (dict(channels=8, kernel=3, stride=1, padding=1, pool=2), dict(channels=16, kernel=3, stride=1, pool=1), 0, [16]),
    (dict(channels=8, kernel=3, stride=1, padding=1, pool=2), dict(channels=12, kernel=2, stride=2, pool=1), 24, [8]),
    (dict(channels=6, kernel=3, stride=1, padding=0, pool=1), dict(channels=10, kernel=3, stride=2, pool=2), 0, []),
]


def crops12(x):
    """The central 12 x 12 of 28 x 28 images, flattened: small conv2 models stay fast."""
    return np.ascontiguousarray(x.reshape(-1, 28, 28)[:, 8:20, 8:20].reshape(len(x), 144))


def test_torch_conv2_export_bit_exact():
    """A second conv (format v4): small BinaryMoE(conv=..., conv2=...) models on 12 x 12 crops of real images,
    trained a few steps, conv2 batch-norm scales forced negative and zero and zero latent taps; reference.py on the
    export equals forward_exact bit for bit; the exported conv2 decides like torch's batch-norm eval off the
    boundary; reference.py's conv2 features, read back in torch's (c, y, x) order, are torch's; the layers reading
    them read them alike; a state_dict exports the same bytes; the float twin's ONNX export equals torch."""
    import torch
    import torch.nn.functional as F
    import bitfleet_torch as bt
    import reference

    torch.set_num_threads(1)
    x, y = fashion(2000)
    x = crops12(x)
    xe = crops12(fashion(5000)[0][2000:2600])
    notes = []
    for ci, (conv, conv2, stem, hidden) in enumerate(CONV2_CASES):
        model = bt.BinaryMoE(conv=conv, conv2=conv2, input_shape=(12, 12), classes=10, stem=stem, experts=4,
                             top_k=2, hidden=hidden, planes=4, seed=7 + ci)
        loss = _train_steps(model, x, y, 8, 250)
        check(loss < 2.6, f"conv2 case {ci}: training did not reduce the loss ({loss:.3f})")
        bt.calibrate(model, x[:1000])
        with torch.no_grad():   # every folding case on conv2: negative scale, zero scale both ways, sign(0)
            bn = model.conv2.bn
            bn.weight[: conv2["channels"] // 2] *= -1
            bn.weight[-1] = 0
            bn.bias[-1] = -0.5 if ci % 2 else 0.25
            model.conv2.weight[:, :5] = 0.0
        mine = model.forward_exact(xe)
        ones = float(mine["conv_bits"].mean())
        check(0.03 < ones < 0.97, f"conv2 case {ci}: degenerate conv2 features ({ones * 100:.0f}% ones)")
        with tempfile.TemporaryDirectory() as td:
            cfg = bt.export_model(model, td, "conv2-test", NAMES, 255.0)
            check(cfg["format_version"] == 4 and cfg["conv"] == conv and cfg["conv2"] == conv2
                  and cfg["stem_width"] == stem and cfg["input_shape"] == [12, 12], f"conv2 case {ci}: config {cfg}")
            mdl = reference.load_model(td)
            ref = reference.forward(mdl, xe)
            check(set(ref) == set(mine), f"conv2 case {ci}: keys {sorted(ref)} vs {sorted(mine)}")
            for k in ref:
                check(ref[k].shape == mine[k].shape, f"conv2 case {ci} {k}: shape {ref[k].shape} vs {mine[k].shape}")
                diff = np.argwhere(ref[k] != mine[k])
                check(diff.size == 0, f"conv2 case {ci} {k}: reference.py on the export differs from forward_exact "
                                      f"at {len(diff)} places, first {diff[:3].tolist()}")
            check(len(np.unique(ref["experts"])) > 1, f"conv2 case {ci}: degenerate routing")
            # the torch model itself (eval mode, batch-norm unfolded) predicts what the export predicts
            model.eval()
            with torch.no_grad():
                lt = model(torch.from_numpy(xe))[0].numpy()
            agree = float((lt.argmax(1) == ref["logits"].argmax(1)).mean())
            check(agree > 0.98, f"conv2 case {ci}: torch eval and the export agree on {agree * 100:.1f}% only")
            # (1) the exported conv2 filters and thresholds decide like torch's batch-norm eval on the exported
            # first-conv map wherever |bn(a)| is not ~0
            q = torch.from_numpy(xe).to(torch.int64) >> 4
            geo = dict(conv, input_shape=(12, 12))
            f1 = bt.exact_conv_bits(q, mdl["conv_w"], mdl["conv_t"], geo, order="torch")
            Hp, Wp, C1 = model.conv2.in_shape
            with torch.no_grad():
                a = model.conv2.preact(f1.to(torch.float32).reshape(-1, C1, Hp, Wp))
                yb = F.batch_norm(a, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)
            k2 = conv2["kernel"]
            w2 = bt.conv2_torch_weight(torch.from_numpy(mdl["conv2_w"].astype(np.float64)), k2, C1)
            ae = F.conv2d(f1.to(torch.float64).reshape(-1, C1, Hp, Wp), w2, stride=conv2["stride"]).numpy()
            far = np.abs(yb.numpy()) > 1e-3
            bad = np.argwhere(((yb >= 0).numpy() != (ae >= mdl["conv2_t"][None, :, None, None])) & far)
            check(bad.size == 0, f"conv2 case {ci}: exported conv2 thresholds disagree with torch's batch-norm eval "
                                 f"at {len(bad)} places, first {bad[:3].tolist()}")
            check(np.array_equal(2 * mine["conv_bits"].astype(np.int64) - 1, reference.conv2_features(
                mdl, bt.exact_conv_bits(q, mdl["conv_w"], mdl["conv_t"], geo).numpy())),
                f"conv2 case {ci}: reference.conv2_features on the format-order first-conv map")
            # (2) reference.py's features, read back in torch's (c, y, x) order, are torch's exact conv2 bits
            f_t = bt.exact_conv2_bits(f1, mdl["conv2_w"], mdl["conv2_t"], conv2, (Hp, Wp, C1), order="torch").numpy()
            H2, W2 = reference.conv2_geometry(cfg)["pooled"]
            C2 = conv2["channels"]
            f_ref = ref["conv_bits"].reshape(-1, H2, W2, C2).transpose(0, 3, 1, 2).reshape(len(xe), -1)
            check(np.array_equal(f_ref, (f_t > 0).astype(np.uint8)), f"conv2 case {ci}: conv2 feature order")
            # (3) every layer reading the conv2 features: exported rows x format-order features = torch's
            # sign(latent) rows x torch-order features (rows negated where the batch-norm scale is negative)
            check_feature_readers(model, mdl, ref["conv_bits"], f_t, stem, hidden, f"conv2 case {ci}")
            if ci == 1:   # a state_dict alone exports the same bytes
                check_state_dict_export(model, cfg, td, "conv2: ")
        notes.append(f"stem {stem}: {mine['conv_bits'].shape[1]} features, {ones * 100:.0f}% ones")
    # the float twin's ONNX export (a second Conv/Relu[/MaxPool] before Flatten) gives torch's float logits, also
    # as the dense graph Ops/bench/peers.py rebuilds from it
    for conv, conv2, stem, hidden in CONV2_CASES:
        fm = bt.BinaryMoE(conv=conv, conv2=conv2, input_shape=(12, 12), classes=10, stem=stem, experts=4, top_k=2,
                          hidden=hidden, planes=4, binary=False, seed=2)
        _train_steps(fm, x, y, 3, 250)
        bt.calibrate(fm, x[:1000])
        err = float_onnx_error(fm, xe[:300], 144)
        check(err < 1e-3, f"conv2 float twin ONNX (stem {stem}) differs from torch by {err}")
    return "bit-exact on 600 crops: " + "; ".join(notes) + "; float twin ONNX (sparse and dense) = torch"


# ---------------------------------------------------------------------------------------------------- fit.py

FIT_SMALL = ["--epochs", "3", "--finetune", "1", "--stem", "64", "--experts", "4", "--hidden", "32",
             "--threads", "1", "--bench-seconds", "0.05", "--batch", "128"]


def run_fit(argv):
    import fit
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = fit.main(argv)
        except SystemExit as e:   # argparse's usage errors exit 2, as the command line does
            rc = e.code
    return rc, out.getvalue(), err.getvalue()


def check_model_dir(d, n_classes, features, heldout_x=None, heldout_y=None):
    import reference
    for f in ("config.json", "model.safetensors", "MODEL_CARD.md", "fit_metrics.json", "float/model.onnx",
              "float/model_int8.onnx"):
        check(os.path.exists(os.path.join(d, f)), f"{d}: {f} missing")
    m = json.load(open(os.path.join(d, "fit_metrics.json")))
    cfg = json.load(open(os.path.join(d, "config.json")))
    check(cfg["input_features"] == features and len(cfg["classes"]) == n_classes, f"config {cfg}")
    check(m["exact_logits_identical"], "fit.py: exported model differs from the torch exact eval")
    for k in ("binary_heldout_acc", "float_onnx_acc", "int8_acc"):
        check(m[k] > 1.5 / n_classes, f"{k} = {m[k]} (no better than chance)")
    check(m["float_samples_per_s"] > 0 and m["int8_samples_per_s"] > 0, "ONNX Runtime speeds missing")
    card = open(os.path.join(d, "MODEL_CARD.md")).read()
    for s in ("held-out accuracy", "float twin", "int8 twin", "samples/s", "Reproduce"):
        check(s in card, f"MODEL_CARD.md lacks {s!r}")
    model = reference.load_model(d)
    if heldout_x is not None:
        out = reference.forward(model, heldout_x)
        acc = float((out["logits"].argmax(1) == heldout_y).mean())
        check(abs(acc - m["binary_heldout_acc"]) < 1e-12, f"reference.py {acc} vs card {m['binary_heldout_acc']}")
    return m


def heldout(y, frac=0.1, seed=1):
    import fit
    return fit.split(y, frac, seed)[1]


def test_fit_csv():
    x, y = fashion(600)
    with tempfile.TemporaryDirectory() as td:
        path = os.path.join(td, "clothes.csv")
        with open(path, "w") as f:  # header, the label column first (by name), string labels, pixel values 0..255
            f.write("garment," + ",".join(f"p{i}" for i in range(784)) + "\n")
            for xi, yi in zip(x, y):
                f.write(NAMES[yi] + "," + ",".join(map(str, xi.tolist())) + "\n")
        out = os.path.join(td, "model")
        rc, so, se = run_fit(["--data", path, "--out", out, "--label", "garment", "--bitfleet", "none"] + FIT_SMALL)
        check(rc == 0, f"fit.py rc {rc}: {se[-2000:]}{so[-2000:]}")
        check("epoch 4/4" in so and "left ~" in so and "held-out acc" in so, "progress lines missing")
        classes = sorted(NAMES)
        yy = np.array([classes.index(NAMES[v]) for v in y])
        va = heldout(yy)
        m = check_model_dir(out, 10, 784, x[va].astype(np.float32), yy[va])
        cfg = json.load(open(os.path.join(out, "config.json")))
        check(cfg["classes"] == classes, f"classes {cfg['classes']}")
        check(cfg["input_scale"] == 1.0 and cfg["input_bit_planes"] == 4, f"integer 0..255 CSV data: {cfg}")
        return f"held-out binary {m['binary_heldout_acc'] * 100:.1f}% float {m['float_onnx_acc'] * 100:.1f}% " \
               f"int8 {m['int8_acc'] * 100:.1f}%"


def test_fit_npz_scaled_features():
    # real features that are neither uint8 nor 0..255 integers: pixels / 40 + row means, as float64 -> global scale
    x, y = fashion(500)
    xf = x.astype(np.float64) / 40.0
    with tempfile.TemporaryDirectory() as td:
        np.savez(os.path.join(td, "d.npz"), X=xf, y=y)
        out = os.path.join(td, "model")
        rc, so, se = run_fit(["--data", os.path.join(td, "d.npz"), "--out", out, "--bitfleet", "none"] + FIT_SMALL)
        check(rc == 0, f"fit.py rc {rc}: {se[-2000:]}")
        cfg = json.load(open(os.path.join(out, "config.json")))
        check(abs(cfg["input_scale"] - 40.0) < 1e-4, f"input_scale {cfg['input_scale']} (expected 255 / (255/40))")
        va = heldout(y)
        check_model_dir(out, 10, 784, xf[va].astype(np.float32), y[va])  # the raw floats go in unchanged
        # negative features: refused by default, accepted with --scaling minmax + preprocess.json + --prepare
        xn = xf - 3.0
        np.save(os.path.join(td, "X.npy"), xn)
        np.save(os.path.join(td, "y.npy"), y)
        rc, so, se = run_fit(["--data", os.path.join(td, "X.npy"), "--out", out + "2", "--bitfleet", "none"] + FIT_SMALL)
        check(rc == 2 and "negative values" in se and "--scaling minmax" in se, f"negatives: rc {rc} {se}")
        rc, so, se = run_fit(["--data", td, "--out", out + "3", "--scaling", "minmax", "--bitfleet", "none"]
                             + FIT_SMALL)
        check(rc == 0, f"minmax rc {rc}: {se[-2000:]}")
        check(os.path.exists(os.path.join(out + "3", "preprocess.json")), "preprocess.json missing")
        rc, so, se = run_fit(["--prepare", out + "3", "--data", os.path.join(td, "X.npy"),
                              "--to", os.path.join(td, "ready.npy")])
        check(rc is None or rc == 0, f"--prepare rc {rc} {se}")
        import reference
        ready = np.load(os.path.join(td, "ready.npy"))
        out3 = reference.forward(reference.load_model(out + "3"), ready[va])
        acc = float((out3["logits"].argmax(1) == y[va]).mean())
        m3 = json.load(open(os.path.join(out + "3", "fit_metrics.json")))
        check(abs(acc - m3["binary_heldout_acc"]) < 1e-12, f"--prepare'd inputs give {acc}, card {m3['binary_heldout_acc']}")
    return "global scale and minmax + --prepare"


def png_folder(td, n):
    """n real Fashion-MNIST images as PNGs in td/images/<class>/ (one sub-folder per class); returns the folder and
    the images and labels written."""
    from PIL import Image
    x, y = fashion(n)
    root = os.path.join(td, "images")
    for i, (xi, yi) in enumerate(zip(x, y)):
        d = os.path.join(root, NAMES[yi].replace("/", "-"))
        os.makedirs(d, exist_ok=True)
        Image.fromarray(xi.reshape(28, 28)).save(os.path.join(d, f"{i:04d}.png"))
    return root, x, y


def test_fit_image_folder():
    with tempfile.TemporaryDirectory() as td:
        root, _, _ = png_folder(td, 400)
        os.makedirs(os.path.join(root, ".cache"))  # hidden folders are not classes
        out = os.path.join(td, "model")
        binary = os.environ.get("BITFLEET_BIN")
        check(not binary or os.path.exists(binary), f"$BITFLEET_BIN={binary}: no such file")
        rc, so, se = run_fit(["--data", root, "--out", out, "--size", "20x24",
                              "--bitfleet", binary if binary else "none"] + FIT_SMALL)
        check(rc == 0, f"fit.py rc {rc}: {se[-2000:]}{so[-2000:]}")
        cfg = json.load(open(os.path.join(out, "config.json")))
        check(cfg["input_shape"] == [24, 20] and cfg["input_features"] == 480, f"resized shape {cfg}")
        m = check_model_dir(out, 10, 480)
        if binary:
            check(m["engine"] and m["engine"]["samples_per_s"] > 0, f"the engine did not run the model: {so[-1500:]}")
            return f"engine loaded and ran it: {m['engine']['samples_per_s']:.0f} samples/s"
        return "engine not run ($BITFLEET_BIN unset)"


def test_fit_image_folder_conv():
    with tempfile.TemporaryDirectory() as td:
        root, x, y = png_folder(td, 400)
        out = os.path.join(td, "model")
        binary = os.environ.get("BITFLEET_BIN")
        check(not binary or os.path.exists(binary), f"$BITFLEET_BIN={binary}: no such file")
        small = [a for a in FIT_SMALL]
        small[small.index("--stem") + 1] = "0"
        rc, so, se = run_fit(["--data", root, "--out", out, "--conv", "8,5,1,2,4", "--shift", "2",
                              "--bitfleet", binary if binary else "none"] + small)
        check(rc == 0, f"fit.py rc {rc}: {se[-2000:]}{so[-2000:]}")
        check("conv front: 8 binary 5x5 filters" in so, f"no conv front line: {so[:1500]}")
        cfg = json.load(open(os.path.join(out, "config.json")))
        check(cfg["format_version"] == 2 and cfg["conv"] == dict(channels=8, kernel=5, stride=1, padding=2, pool=4)
              and cfg["stem_width"] == 0 and cfg["input_shape"] == [28, 28], f"config {cfg}")
        # fit.py reads the folder class by class (sorted names), each class's files in name order
        folders = sorted(n.replace("/", "-") for n in NAMES)
        yf = np.array([folders.index(NAMES[v].replace("/", "-")) for v in y])
        order = np.argsort(yf, kind="stable")
        va = heldout(yf[order])
        m = check_model_dir(out, 10, 784, x[order][va], yf[order][va])
        card = open(os.path.join(out, "MODEL_CARD.md")).read()
        check("binary convolution" in card and "8 binary 5×5 filters" in card and "7×7×8 = 392" in card
              and "no stem" in card, "MODEL_CARD.md does not say which front was used")
        check("moved at random by up to 2 pixels per direction (zero filled) in the batch-statistics epochs of both"
              in card, "MODEL_CARD.md does not say how the training images were augmented (--shift 2)")
        # --conv without image-shaped data, and a --shape that does not fit, are refused
        np.save(os.path.join(td, "X.npy"), x[:50])
        np.save(os.path.join(td, "y.npy"), y[:50])
        rc, _, se = run_fit(["--data", os.path.join(td, "X.npy"), "--out", out + "2", "--conv", "4,3,1,1,2"])
        check(rc == 2 and "--conv needs one-channel image data" in se, f"--conv on flat features: rc {rc} {se}")
        rc, _, se = run_fit(["--data", os.path.join(td, "X.npy"), "--out", out + "2", "--conv", "4,3,1,1,2",
                             "--shape", "27,28"])
        check(rc == 2 and "--shape 27,28" in se, f"bad --shape: rc {rc} {se}")
        rc, _, se = run_fit(["--data", os.path.join(td, "X.npy"), "--out", out + "2", "--shift", "1"])
        check(rc == 2 and "--shift moves one-channel images" in se, f"--shift on flat features: rc {rc} {se}")
        check(not os.path.exists(out + "2"), "a model directory was written for bad input")
        note = f"held-out binary {m['binary_heldout_acc'] * 100:.1f}% float {m['float_onnx_acc'] * 100:.1f}%"
        # 2-bit filters (--conv-bits 2, format v5): trained, exported, evaluated, named in the card, run by the engine;
        # the 1-bit run's float twin is its twin too (--teacher: the same float network)
        out2 = os.path.join(td, "model-2bit")
        rc, so2, se = run_fit(["--data", root, "--out", out2, "--conv", "8,5,1,2,4", "--conv-bits", "2", "--shift", "2",
                               "--teacher", out, "--bitfleet", binary if binary else "none"] + small)
        check(rc == 0, f"fit.py --conv-bits 2 rc {rc}: {se[-2000:]}{so2[-2000:]}")
        check("conv front: 8 2-bit 5x5 filters" in so2 and "no float phase" in so2, f"no 2-bit conv front line or "
              f"float phase run: {so2[:1500]}")
        cfg = json.load(open(os.path.join(out2, "config.json")))
        check(cfg["format_version"] == 5 and cfg["conv"] == dict(channels=8, kernel=5, stride=1, padding=2, pool=4,
                                                                 weight_bits=2), f"config {cfg}")
        m2 = check_model_dir(out2, 10, 784, x[order][va], yf[order][va])
        card = open(os.path.join(out2, "MODEL_CARD.md")).read()
        check("--conv-bits 2" in card and "8 2-bit (weights −3, −1, 1, 3) 5×5 filters" in card,
              "MODEL_CARD.md does not name the 2-bit filters")
        note += f"; 2-bit filters: held-out {m2['binary_heldout_acc'] * 100:.1f}%"
        # two bits per expert hidden unit (--hidden-levels 2, format v6): the same, with the same twin
        out3 = os.path.join(td, "model-levels")
        rc, so3, se = run_fit(["--data", root, "--out", out3, "--conv", "8,5,1,2,4", "--hidden-levels", "2",
                               "--shift", "2", "--teacher", out, "--bitfleet", binary if binary else "none"] + small)
        check(rc == 0, f"fit.py --hidden-levels 2 rc {rc}: {se[-2000:]}{so3[-2000:]}")
        cfg = json.load(open(os.path.join(out3, "config.json")))
        check(cfg["format_version"] == 6 and cfg["expert_hidden_levels"] == [2] * len(cfg["expert_hidden"]),
              f"config {cfg}")
        m3 = check_model_dir(out3, 10, 784, x[order][va], yf[order][va])
        check("two thresholds per hidden unit" in open(os.path.join(out3, "MODEL_CARD.md")).read(),
              "MODEL_CARD.md does not name the two-level hidden layers")
        note += f"; two-level hidden units: held-out {m3['binary_heldout_acc'] * 100:.1f}%"
        if binary:
            check(m["engine"] and m["engine"]["samples_per_s"] > 0, f"the engine did not run the model: {so[-1500:]}")
            check(m2["engine"] and m2["engine"]["samples_per_s"] > 0, f"the engine did not run the 2-bit model: {so2[-1500:]}")
            check(m3["engine"] and m3["engine"]["samples_per_s"] > 0, f"the engine did not run the v6 model: {so3[-1500:]}")
            return note + (f"; engine loaded and ran all three: {m['engine']['samples_per_s']:.0f}, "
                           f"{m2['engine']['samples_per_s']:.0f} and {m3['engine']['samples_per_s']:.0f} samples/s")
        return note + "; engine not run ($BITFLEET_BIN unset)"


def test_fit_conv2():
    """fit.py --conv --conv2 on a small .npz of 12 x 12 crops: a format-v4 model that reference.py loads with the
    card's accuracy, the card naming both convs and counting conv2's MACs; --conv2's errors."""
    x, y = fashion(600)
    x = crops12(x).reshape(-1, 12, 12)
    binary = os.environ.get("BITFLEET_BIN")
    check(not binary or os.path.exists(binary), f"$BITFLEET_BIN={binary}: no such file")
    with tempfile.TemporaryDirectory() as td:
        np.savez(os.path.join(td, "d.npz"), X=x, y=y)
        out = os.path.join(td, "model")
        small = [a for a in FIT_SMALL]
        small[small.index("--stem") + 1] = "0"
        rc, so, se = run_fit(["--data", os.path.join(td, "d.npz"), "--out", out, "--conv", "8,3,1,1,2",
                              "--conv2", "16,3,1,1", "--real-weights", "1",
                              "--bitfleet", binary if binary else "none"] + small)
        check(rc == 0, f"fit.py rc {rc}: {se[-2000:]}{so[-2000:]}")
        check("conv2: 16 binary 3x3x8 filters" in so and "-> 256 features" in so, f"no conv2 line: {so[:1500]}")
        cfg = json.load(open(os.path.join(out, "config.json")))
        check(cfg["format_version"] == 4 and cfg["conv2"] == dict(channels=16, kernel=3, stride=1, pool=1)
              and cfg["stem_width"] == 0 and cfg["input_shape"] == [12, 12], f"config {cfg}")
        va = heldout(y)
        m = check_model_dir(out, 10, 144, x.reshape(-1, 144)[va], y[va])
        card = open(os.path.join(out, "MODEL_CARD.md")).read()
        check("second binary convolution" in card and "16 binary 3×3×8 filters" in card and "4×4×16 = 256" in card,
              "MODEL_CARD.md does not name the second conv")
        # conv1 8 planes (fewer than 256 features) * 9 * 8 * 12*12, conv2 4*4*16 * 9*8, router 4*256, top-2 experts
        want = 8 * 9 * 8 * 144 + 16 * 16 * 9 * 8 + 4 * 256 + 2 * (256 * 32 + 32 * 10)
        check(m["binary_macs"] == want, f"binary MACs {m['binary_macs']}, expected {want}")
        bad = [(["--conv2", "16,3,1,1"], "--conv2: a second conv needs the first one (--conv)"),
               (["--conv", "8,3,1,1,2", "--conv2", "16,3,1"], "--conv2: channels,kernel,stride,pool"),
               (["--conv", "8,3,1,1,2", "--conv2", "257,3,1,1"], "1 <= channels <= 256"),
               (["--conv", "8,3,1,1,2", "--conv2", "16,8,1,1"], "1 <= kernel <= 7"),
               (["--conv", "8,3,1,1,2", "--conv2", "16,3,4,1"], "1 <= stride <= kernel"),
               (["--conv", "8,3,1,1,2", "--conv2", "16,3,1,0"], "pool >= 1")]
        import fit
        for extra, msg in bad:
            with contextlib.redirect_stderr(io.StringIO()) as err:
                try:
                    rc = fit.main(["--data", os.path.join(td, "d.npz"), "--out", out + "2"] + extra)
                except SystemExit as e:   # argparse's ap.error
                    rc = e.code
            check(rc == 2 and msg in err.getvalue(), f"{extra}: rc {rc} {err.getvalue()[-500:]}")
        rc, _, se = run_fit(["--data", os.path.join(td, "d.npz"), "--out", out + "2", "--conv", "8,3,1,1,2",
                             "--conv2", "16,7,1,1"])
        check(rc == 2 and "no pooled position left" in se, f"--conv2 larger than the map: rc {rc} {se}")
        check(not os.path.exists(out + "2"), "a model directory was written for bad --conv2")
        note = f"held-out binary {m['binary_heldout_acc'] * 100:.1f}% float {m['float_onnx_acc'] * 100:.1f}%"
        if binary:
            check(m["engine"] and m["engine"]["samples_per_s"] > 0, f"the engine did not run the model: {so[-1500:]}")
            return note + f"; engine loaded and ran it: {m['engine']['samples_per_s']:.0f} samples/s"
        return note + "; engine not run ($BITFLEET_BIN unset)"


def test_fit_errors():
    from PIL import Image
    cases = []
    with tempfile.TemporaryDirectory() as td:
        p = lambda n: os.path.join(td, n)
        np.save(p("X.npy"), np.zeros((10, 3), np.float32))
        cases.append((["--data", p("X.npy")], "no labels"))
        open(p("ragged.csv"), "w").write("a,b,label\n1,2,x\n3,4\n")
        cases.append((["--data", p("ragged.csv")], "ragged CSV"))
        open(p("one.csv"), "w").write("1,2,x\n3,4,x\n5,6,x\n")
        cases.append((["--data", p("one.csv")], "only one class"))
        open(p("nan.csv"), "w").write("a,b,label\n1,,x\n3,4,y\n")
        cases.append((["--data", p("nan.csv")], "missing value"))
        open(p("text.csv"), "w").write("a,b,label\n1,hello,x\n3,4,y\n")
        cases.append((["--data", p("text.csv")], "'hello' is not a number"))
        np.savez(p("nan.npz"), X=np.array([[1.0, np.nan], [2.0, 3.0]]), y=np.array([0, 1]))
        cases.append((["--data", p("nan.npz")], "NaN"))
        np.savez(p("nolab.npz"), X=np.ones((4, 2)))
        cases.append((["--data", p("nolab.npz")], "no labels array"))
        np.savez(p("count.npz"), X=np.ones((4, 2)), y=np.array([0, 1, 0]))
        cases.append((["--data", p("count.npz")], "4 samples but 3 labels"))
        os.makedirs(p("empty"))
        cases.append((["--data", p("empty")], "no class sub-folders"))
        os.makedirs(p("emptyclass/a"))
        os.makedirs(p("emptyclass/b"))
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(p("emptyclass/a/1.png"))
        cases.append((["--data", p("emptyclass")], "no images"))
        os.makedirs(p("broken/a"))
        os.makedirs(p("broken/b"))
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(p("broken/a/1.png"))
        open(p("broken/b/2.png"), "wb").write(b"\x89PNG\r\n\x1a\nnot really")
        cases.append((["--data", p("broken")], "broken/b/2.png: unreadable image"))
        cases.append((["--data", p("nothing.csv")], "no such file"))
        np.savez(p("img.npz"), X=np.zeros((20, 6, 6), np.uint8), y=np.arange(20) % 2)
        cases.append((["--data", p("img.npz"), "--binary-shift", "-1"], "--binary-shift -1: a number of pixels"))
        cases.append((["--data", p("img.npz"), "--real-weights", "-1"], "--real-weights -1: a number of epochs"))
        cases.append((["--data", p("img.npz"), "--conv-bits", "2"], "--conv-bits: needs --conv"))
        cases.append((["--data", p("img.npz"), "--conv", "4,3,1,1,2", "--conv-bits", "3"], "invalid choice: 3"))
        for argv, want in cases:
            rc, so, se = run_fit(argv + ["--out", p("m")])
            check(rc == 2 and want in se, f"{argv[1]}: expected rc 2 and {want!r}, got rc {rc}: {se.strip()}")
            check(not os.path.exists(p("m")), f"{argv[1]}: a model directory was written for bad input")
    return f"{len(cases)} bad inputs refused with a clear message"


def check_reference_refuses(directory, config, want, what):
    """reference.py refuses `directory` with `config` written as its config.json, naming `want`."""
    import reference
    json.dump(config, open(os.path.join(directory, "config.json"), "w"))
    try:
        reference.load_model(directory)
        check(False, f"reference.py loaded {what}")
    except ValueError as e:
        check(want in str(e), f"reference.py: {e}")


def test_two_bit_conv_format():
    """Format v5: export.py writes 2-bit conv weights as two sign planes that reference.py adds back (every level),
    and both refuse what the format does not allow."""
    import export
    import reference
    w = np.array([[-3, -1, 1, 3] * 4, [3, 3, -1, -3] * 4], dtype=np.int64)
    planes = export.split_two_bit(w)
    check(planes.shape == (2, 2, 16) and set(np.unique(planes)) == {-1, 1} and np.array_equal(2 * planes[0] + planes[1], w),
          "split_two_bit: planes")
    refused = 0
    for bad in (np.zeros((2, 16)), np.full((2, 16), 2), np.full((2, 16), 1.5), np.full((2, 16), -5)):
        try:
            export.split_two_bit(bad)
        except export.ExportError as e:
            check("-3, -1, 1" in str(e), f"split_two_bit: message {e}")
            refused += 1
    check(refused == 4, "split_two_bit accepted a weight that is not -3, -1, 1 or 3")
    rng = np.random.default_rng(3)
    conv = {"channels": 2, "kernel": 4, "stride": 2, "padding": 1, "pool": 2, "weight_bits": 2}
    base = {"name": "t", "version": "1", "input_features": 64, "input_shape": [8, 8], "input_bit_planes": 8,
            "input_scale": 255.0, "stem_width": 0, "experts": 2, "top_k": 1, "expert_hidden": [],
            "classes": ["a", "b"], "conv": conv}
    F = 4 * 4 * 2 // 4   # 8x8, k4/2 p1 -> 4x4 -> pool 2 -> 2x2 x 2 channels
    arrays = dict(stem_weight=None, stem_threshold=None, router_weight=rng.choice([-1, 1], (2, F)),
                  router_scale=np.ones(2, np.float32), router_bias=np.zeros(2, np.float32), hidden_weights=[],
                  hidden_thresholds=[], out_weight=rng.choice([-1, 1], (2, 2, F)), out_scale=np.ones((2, 2), np.float32),
                  out_bias=np.zeros((2, 2), np.float32), conv_weight=w, conv_threshold=np.array([5, -7]))
    with tempfile.TemporaryDirectory() as td:
        cfg = export.export_model(td, base, **arrays)
        check(cfg["format_version"] == 5 and cfg["conv"]["weight_bits"] == 2, f"config {cfg}")
        from safetensors.numpy import load_file
        check(load_file(os.path.join(td, "model.safetensors"))["conv.weight"].shape == (2, 2, 2), "conv.weight shape")
        m = reference.load_model(td)
        check(np.array_equal(m["conv_w"], w), "reference.py: 2 * plane 0 + plane 1 is not the exported weight")
        x = rng.integers(0, 256, (5, 64), dtype=np.uint8)
        bits = reference.forward(m, x)["conv_bits"]
        check(bits.shape == (5, F), f"conv bits {bits.shape}")
        # reference.py refuses weight_bits before v5 and other bit counts
        for version, bits_value, want in ((4, 2, "needs format_version 5"), (5, 3, "must be 1 or 2")):
            c = json.load(open(os.path.join(td, "config.json")))
            c["format_version"], c["conv"]["weight_bits"] = version, bits_value
            check_reference_refuses(td, c, want, f"weight_bits {bits_value} in format v{version}")
    for cfg_edit, want in ((dict(format_version=4), "needs format_version 5"),
                           (dict(conv=dict(conv, weight_bits=3)), "must be 1 or 2")):
        try:
            with tempfile.TemporaryDirectory() as td:
                export.export_model(td, dict(base, **cfg_edit), **arrays)
            check(False, f"export accepted {cfg_edit}")
        except export.ExportError as e:
            check(want in str(e), f"export: {e}")
    return "2-bit conv weights: planes round-trip through export.py and reference.py; bad weights and configs refused"


def test_hidden_levels():
    """Format v6, two thresholds per expert hidden unit: small BinaryMoE models with 2-level hidden layers (a conv
    front with 2-bit filters and one 2-level layer; a dense stem with a 2-level layer of 12 units read by a 1-level
    layer, so 24 bits cross a word boundary at no multiple of 8), trained a few steps on real Fashion-MNIST, with
    batch-norm scales forced negative and zero and offsets of both signs; reference.py on the export equals
    forward_exact bit for bit; each level's exported thresholds decide like torch's eval sign(bn(a) +- offset)
    off the boundary; a saved state_dict exports the same bytes; export.py and reference.py refuse bad levels."""
    import torch
    import torch.nn.functional as F
    import bitfleet_torch as bt
    import export
    import reference

    torch.set_num_threads(1)
    x, y = fashion(2000)
    xe = fashion(5000)[0][2000:2400]
    cases = [dict(conv=dict(channels=6, kernel=4, stride=2, padding=1, pool=2, weight_bits=2), input_shape=(28, 28),
                  stem=0, hidden=[16], hidden_levels=[2]),
             dict(input_features=784, stem=40, hidden=[12, 8], hidden_levels=[2, 1])]
    notes = []
    for ci, arch in enumerate(cases):
        model = bt.BinaryMoE(classes=10, experts=4, top_k=2, planes=4, seed=11 + ci, **arch)
        loss = _train_steps(model, x, y, 8, 250)
        check(loss < 2.3, f"case {ci}: training did not reduce the loss ({loss:.3f})")
        first = [e.hidden[0] for e in model.experts]
        check(all(h.levels == 2 and h.offset.requires_grad for h in first), f"case {ci}: no 2-level layer")
        check(float(torch.stack([h.offset.detach() for h in first]).sub(0.5).abs().max()) > 0,
              f"case {ci}: the offsets did not train")
        bt.calibrate(model, x[:1000])
        with torch.no_grad():   # folding cases: negative and zero scales, offsets of both signs and zero
            for h in first:
                h.bn.weight[:3] *= -1
                h.bn.weight[4] = 0
                h.bn.bias[4] = 0.3
                h.offset[5] = -0.4
                h.offset[6] = 0.0
        mine = model.forward_exact(xe)
        with tempfile.TemporaryDirectory() as td:
            cfg = bt.export_model(model, td, "levels-test", NAMES, 255.0)
            check(cfg["format_version"] == 6 and cfg["expert_hidden_levels"] == arch["hidden_levels"], f"config {cfg}")
            ref = reference.forward(reference.load_model(td), xe)
            for k in ref:
                diff = np.argwhere(ref[k] != mine[k])
                check(ref[k].shape == mine[k].shape and diff.size == 0,
                      f"case {ci} {k}: reference.py on the export differs from forward_exact at {len(diff)} places")
            check(len(np.unique(ref["experts"])) > 1, f"case {ci}: degenerate routing")
            mdl = reference.load_model(td)
            check(mdl["hidden_t"][0].shape == (4, 2, arch["hidden"][0]), f"thresholds {mdl['hidden_t'][0].shape}")
            # each level's thresholds on the exported rows decide like torch's sign(bn(a) + offset), sign(bn(a) -
            # offset) wherever the value is not ~0 (inputs: the features each expert's first layer reads)
            model.eval()
            with torch.no_grad():
                h0 = model.features(torch.from_numpy(xe))
                for e, layer in enumerate(first):
                    a = layer.preact(h0)
                    yb = F.batch_norm(a, layer.bn.running_mean, layer.bn.running_var, layer.bn.weight, layer.bn.bias,
                                      False, 0.0, layer.bn.eps).numpy()
                    pre = h0.numpy().astype(np.int64) @ (mdl["hidden_w"][0][e].T if ci else
                                                         mdl["hidden_w"][0][e].T[bt_perm(model)])
                    for v, sgn in enumerate((1, -1)):
                        z = yb + sgn * layer.offset.numpy()[None, :]
                        bad = ((z >= 0) != (pre >= mdl["hidden_t"][0][e][v][None, :])) & (np.abs(z) > 1e-3)
                        check(not bad.any(), f"case {ci} expert {e} level {v}: exported thresholds disagree with "
                                             f"torch at {int(bad.sum())} places")
            check_state_dict_export(model, cfg, td, f"case {ci}: ")
            # reference.py refuses levels before v6 and levels other than 1 or 2
            for edit, want in ((dict(format_version=5), "needs format_version 6"),
                               (dict(expert_hidden_levels=[3] * len(arch["hidden"])), "must list 1 or 2"),
                               (dict(expert_hidden_levels=[2] * (len(arch["hidden"]) + 1)), "must list 1 or 2")):
                c = dict(cfg, **edit)
                check_reference_refuses(td, c, want, str(edit))
                try:
                    with tempfile.TemporaryDirectory() as td2:
                        export.export_model(td2, c, **model.fold())
                    check(False, f"export accepted {edit}")
                except export.ExportError as e:
                    check(want in str(e), f"export: {e}")
        notes.append(f"case {ci}: {arch['hidden']} levels {arch['hidden_levels']}")
    return "bit-exact on 400 images, thresholds = torch's sign(bn +- offset): " + "; ".join(notes)


def bt_perm(model):
    """The format's feature order -> torch's (c, y, x) order of a conv front's features (as fold_state_dict)."""
    c = model.conv
    ch, Hp, Wp = c.channels, c.out_hw[2], c.out_hw[3]
    return np.arange(ch * Hp * Wp).reshape(Hp * Wp, ch).T.reshape(-1)


def test_export_router_groups():
    """Format v3: export.py refuses bad router_groups; reference.py's grouped router equals a plain per-sample loop
    (best group by the router rule, then the top k of its experts only)."""
    import random_model
    import reference
    from export import ExportError, export_model
    with tempfile.TemporaryDirectory() as td:
        out = random_model.build(td, 30, 40, 12, 2, [16], 5, 4, 5, 64, router_groups=4)
        m = reference.load_model(td)
        check(m["config"]["format_version"] == 3 and m["config"]["router_groups"] == 4, "v3 config")
        x = np.load(os.path.join(td, "inputs.npy"))
        q = x.astype(np.int64) >> 4
        h = np.where(q @ m["stem_w"].T >= m["stem_t"][None, :], 1, -1)
        for i in range(len(x)):
            gs = [np.float32(np.float32(m["group_scale"][j]) * np.float32(h[i] @ m["group_w"][j]))
                  + np.float32(m["group_bias"][j]) for j in range(4)]
            j = max(range(4), key=lambda g: (gs[g], -g))
            rs = {e: np.float32(np.float32(m["router_scale"][e]) * np.float32(h[i] @ m["router_w"][e]))
                  + np.float32(m["router_bias"][e]) for e in range(3 * j, 3 * j + 3)}
            top = sorted(rs, key=lambda e: (-rs[e], e))[:2]
            check(int(out["router_groups"][i]) == j, f"sample {i}: group {out['router_groups'][i]}, loop {j}")
            check(list(out["experts"][i]) == top, f"sample {i}: experts {list(out['experts'][i])}, loop {top}")
            check(all(np.isneginf(out["router_scores"][i][e]) == (e // 3 != j) for e in range(12)), "-inf outside")
        check(len(set(out["router_groups"].tolist())) > 1, "the samples chose one group only")
        cfg = json.load(open(os.path.join(td, "config.json")))
        args = [None] * 11
        for bad, want in [(dict(router_groups=5), "router_groups"), (dict(router_groups=12), "top_k <= experts"),
                          (dict(router_groups=4, format_version=2), "needs format_version 3")]:
            c = dict(cfg, **bad)
            c.pop("format_version", None) if "format_version" not in bad else None
            try:
                export_model(os.path.join(td, "bad"), c, *args)
                raise AssertionError(f"{bad}: accepted")
            except ExportError as e:
                check(want in str(e), f"{bad}: {e}")
    return "grouped routing equals a per-sample loop on 64 samples; 3 bad configs refused"


def test_shift_augmentation():
    # every image moved as a whole by its own offset within [-n, n]², zero filled; offsets differ across a batch
    import torch
    import fit
    x, _ = fashion(64)
    xb = torch.from_numpy(x.reshape(64, 784).copy())
    out = fit.shifted(xb, (28, 28), 2, torch.Generator().manual_seed(3)).numpy().reshape(64, 28, 28)
    src = x.reshape(64, 28, 28)
    seen = set()
    for i in range(64):
        found = None
        for dy in range(-2, 3):
            for dx in range(-2, 3):
                want = np.zeros((28, 28), np.uint8)
                ys, yd = (slice(dy, 28), slice(0, 28 - dy)) if dy >= 0 else (slice(0, 28 + dy), slice(-dy, 28))
                xs, xd = (slice(dx, 28), slice(0, 28 - dx)) if dx >= 0 else (slice(0, 28 + dx), slice(-dx, 28))
                want[yd, xd] = src[i][ys, xs]
                if np.array_equal(out[i], want):
                    found = (dy, dx)
        check(found is not None, f"image {i} is not a shift of its source by at most 2 pixels")
        seen.add(found)
    check(len(seen) >= 10, f"only {len(seen)} distinct offsets in 64 images")
    # --binary-shift: each model trains with its own shift (here the float twin shifted, the binary model not)
    import argparse
    import bitfleet_torch as bt
    calls = []
    real = fit.shifted
    fit.shifted = lambda xb, shape, n, gen: calls.append(n) or real(xb, shape, n, gen)
    try:
        args = argparse.Namespace(seed=1, lr=2e-3, batch=128, kd=0.5, aux=0.05, shift=2, binary_shift=0)
        y = np.arange(256, dtype=np.int64) % 10
        xs = np.repeat(x.reshape(64, 784), 4, axis=0)
        for binary, want in ((False, 2), (True, None)):
            calls.clear()
            model = bt.BinaryMoE(conv=dict(channels=4, kernel=5, stride=2, padding=2, pool=2), input_shape=(28, 28),
                                 classes=10, stem=0, experts=2, top_k=1, hidden=[8], planes=4, binary=binary, seed=1)
            fit.train(model, xs, y, xs[:0], y[:0], args, fit.Clock([("p", 1, 1.0)]), "p", 1, shape=(28, 28))
            check(calls == ([want] * 2 if want else []), f"binary={binary}: shifts {calls}, want {want} per batch")
    finally:
        fit.shifted = real
    return f"64 images each moved by one offset within ±2 ({len(seen)} distinct); --binary-shift used by the binary model"


def test_top1_router_gradient():
    # top-1: the gate is exactly 1 in the forward pass (the exported semantics), yet the task loss trains the
    # router (gradient of log p of the chosen expert); top-2 gates stay the softmax of the two scores
    import torch
    import bitfleet_torch as bt
    torch.manual_seed(3)
    h = torch.sign(torch.randn(6, 32))
    r1 = bt.Router(32, 4, 1, binary=True)
    scores, idx, gates, _ = r1(h)
    check(gates.shape == (6, 1) and bool((gates == 1).all()), f"top-1 gates {gates.flatten().tolist()}, want all 1")
    (gates * torch.arange(1.0, 7.0).unsqueeze(1)).sum().backward()
    grad = r1.scale.grad
    check(grad is not None and float(grad.abs().sum()) > 0, "top-1: the task loss does not reach the router")
    r2 = bt.Router(32, 4, 2, binary=True)
    s2, i2, g2, _ = r2(h)
    check(torch.allclose(g2, torch.softmax(s2.gather(1, i2), dim=1)), "top-2 gates changed")
    return "top-1 gates exactly 1, router gradient nonzero; top-2 gates the softmax of the two scores"


def tiny_conv_moe(top_k):
    """The small binary conv MoE the training tests run fit.train on (4 filters, stem 16, 2 experts of 8)."""
    import bitfleet_torch as bt
    return bt.BinaryMoE(conv=dict(channels=4, kernel=4, stride=2, padding=1, pool=2), input_shape=(28, 28),
                        classes=10, stem=16, experts=2, top_k=top_k, hidden=[8], planes=4, binary=True, seed=1)


def train_args():
    """fit.train's arguments for those tests: no distillation, no shift."""
    import argparse
    return argparse.Namespace(seed=1, lr=2e-3, batch=128, kd=0.0, aux=0.05, shift=0, binary_shift=0)


def test_real_weights():
    # two-step training (--real-weights): in the warm-up every binary layer computes with its real latent weights
    # (activations stay binary), the scaled layers are rescaled by mean |W| each way, and switching back restores
    # sign(W); fit.train trains the latent weights through the warm-up
    import torch
    import torch.nn.functional as F
    import bitfleet_torch as bt
    import fit
    x, y = fashion(256)
    xs = x.reshape(256, 784)
    model = tiny_conv_moe(top_k=1)
    layers = [model.conv, model.stem, model.router, model.experts[0].hidden[0], model.experts[0].out]
    scale0 = model.router.scale.detach().clone()
    with torch.no_grad():
        want_sign = model.conv.preact(xs[:8]).clone()
        model.set_real_weights(True)
        got = model.conv.preact(xs[:8])
        check(torch.allclose(got, model.conv.preact(xs[:8], weight=model.conv.weight)), "conv: real weights not used")
        check(not torch.allclose(got, want_sign), "conv: the warm-up computes with sign(W)")
        u = torch.sign(torch.randn(3, 16))
        r = model.router.scale * F.linear(u, model.router.weight) + model.router.bias
        check(torch.allclose(model.router(u)[0], r), "router: real weights not used")
        a = model.router.weight.abs().mean(1)
        check(torch.allclose(model.router.scale * a, scale0), "router scale not divided by mean |W|")
        check(all(getattr(m, "real_weights", False) for m in layers), "a layer kept its binary weights")
    args = train_args()
    w0 = model.experts[0].hidden[0].weight.detach().clone()
    fit.train(model, xs, y, xs[:0], y[:0], args, fit.Clock([("p", 1, 1.0)]), "p", 1, shape=(28, 28))
    check(not torch.equal(w0, model.experts[0].hidden[0].weight), "the warm-up did not train the latent weights")
    with torch.no_grad():
        a = model.router.weight.abs().mean(1)
        s_real = model.router.scale.detach().clone()
        model.set_real_weights(False)
        check(torch.allclose(model.router.scale, s_real * a), "router scale not multiplied back by mean |W|")
        check(not any(getattr(m, "real_weights", False) for m in layers), "a layer kept its real weights")
        got = model.conv.preact(xs[:8])
        check(torch.equal(got, model.conv.preact(xs[:8], weight=bt.sign(model.conv.weight))), "conv: not sign(W) after")
    float_model = bt.BinaryMoE(input_features=784, classes=10, stem=16, experts=2, binary=False)
    try:
        float_model.set_real_weights(True)
        check(False, "set_real_weights accepted a float model")
    except ValueError:
        pass
    return "warm-up on real weights (conv, stem, router, experts), rescaled both ways, signs after"


def test_binarise_ramp():
    # --binarise-ramp N: fit.train moves every binary layer from W to mean|W| sign(W) over the first N epochs; at the
    # end of the ramp the model leaves the real-weight state without changing its outputs, and computes with sign(W)
    import torch
    import bitfleet_torch as bt
    import fit
    x, y = fashion(256)
    xs = x.reshape(256, 784)
    model = tiny_conv_moe(top_k=2)
    layers = [model.conv, model.stem, model.router, model.experts[0].hidden[0], model.experts[0].out]
    model.train()   # batch statistics, as in training: the batch-norm layers see the row scale mean|W| normalised away
    with torch.no_grad():
        model.set_real_weights(True)
        real = model(xs[:32])[0].clone()
        model.set_binarise(0.0)
        check(torch.equal(model(xs[:32])[0], real), "t = 0 is not the real-weight model")
        model.set_binarise(0.5)
        half = model(xs[:32])[0].clone()
        check(not torch.allclose(half, real), "t = 0.5 computes as the real weights")
        model.set_binarise(1.0)
        full = model(xs[:32])[0].clone()
        model.set_binarise(0.0)
        model.set_real_weights(False)
        signs = model(xs[:32])[0]
        check(torch.allclose(full, signs, atol=1e-5), f"t = 1 differs from sign(W): {float((full - signs).abs().max())}")
        for bad in (-0.1, 1.5):
            try:
                model.set_binarise(bad)
                check(False, f"set_binarise accepted {bad}")
            except ValueError:
                pass
        try:
            model.set_binarise(0.5)     # not in the real-weight state
            check(False, "set_binarise accepted a model with sign weights")
        except ValueError:
            pass
    model.set_real_weights(True)
    seen = []
    orig = model.set_binarise
    model.set_binarise = lambda t: (seen.append(t), orig(t))
    args = train_args()
    fit.train(model, xs, y, xs[:0], y[:0], args, fit.Clock([("p", 3, 1.0)]), "p", 3, shape=(28, 28), ramp=2)
    check(seen[:4] == [0.25, 0.5, 0.75, 1.0], f"the ramp's steps: {seen}")
    check(not any(getattr(m, "real_weights", False) or getattr(m, "binarise", 0.0) for m in layers),
          "after the ramp a layer still computes with real or mixed weights")
    try:
        fit.train(model, xs, y, xs[:0], y[:0], args, fit.Clock([("p", 1, 1.0)]), "p", 1, shape=(28, 28), ramp=2)
        check(False, "a ramp longer than the epochs was accepted")
    except ValueError:
        pass
    x2, y2 = fashion(300)
    with tempfile.TemporaryDirectory() as td:
        np.savez(os.path.join(td, "d.npz"), X=x2, y=y2)
        for ramp, want in (("4", "--binarise-ramp 4: a number of epochs from 0 to the binary model's 3"),
                           ("-1", "--binarise-ramp -1: a number of epochs from 0")):
            rc, so, se = run_fit(["--data", os.path.join(td, "d.npz"), "--out", os.path.join(td, "m"), "--bitfleet",
                                  "none", "--binarise-ramp", ramp] + FIT_SMALL)
            check(rc == 2 and want in se, f"--binarise-ramp {ramp}: rc {rc}: {se.strip()[-500:]}")
        rc, so, se = run_fit(["--data", os.path.join(td, "d.npz"), "--out", os.path.join(td, "m"), "--bitfleet",
                              "none", "--real-weights", "1", "--binarise-ramp", "2"] + FIT_SMALL)
        check(rc == 0 and "epoch 2/4+binarising (to 1.00)" in so and "exact eval in torch identical to reference.py: "
              "True" in so, f"fit.py --binarise-ramp 2: rc {rc}: {se[-1500:]}{so[-1500:]}")
        card = open(os.path.join(td, "m", "MODEL_CARD.md")).read()
        check("the first 2 of them moving the weights gradually from real to their signs" in card,
              "the card does not name --binarise-ramp")
    return "t = 0 real, t = 1 identical to sign(W), linear per batch, real-weight state left at the ramp's end; " \
           "fit.py refuses a ramp beyond the schedule, exports exactly after one, names it in the card"


def test_swa():
    # --swa N: fit.train sets every parameter to the mean of its values at the ends of the last N epochs (snapshots
    # taken where the epoch's held-out accuracy is measured); more than the binary-weight epochs, or < 0, is refused
    import torch
    import bitfleet_torch as bt
    import fit
    x, y = fashion(256)
    xs = x.reshape(256, 784)
    model = tiny_conv_moe(top_k=1)
    args = train_args()
    ends = []
    predict = fit.predict

    def spy(m, X):   # called once at the end of every epoch, after its last step
        ends.append([p.detach().clone() for p in m.parameters()])
        return predict(m, X)
    fit.predict = spy
    try:
        fit.train(model, xs, y, xs[:16], y[:16], args, fit.Clock([("p", 3, 1.0)]), "p", 3, swa=2)
    finally:
        fit.predict = predict
    check(len(ends) == 3, f"{len(ends)} epoch ends")
    got = list(model.parameters())
    check(all(torch.allclose(g, (a + b) / 2) for g, a, b in zip(got, ends[1], ends[2])),
          "the parameters are not the mean of the last 2 epochs' ends")
    check(not all(torch.equal(g, b) for g, b in zip(got, ends[2])), "averaging changed nothing")
    x2, y2 = fashion(300)
    with tempfile.TemporaryDirectory() as td:
        np.savez(os.path.join(td, "d.npz"), X=x2, y=y2)
        for swa, want in (("5", "--swa 5: more than the binary model's 4 binary-weight epochs"),
                          ("-1", "--swa -1: a number of epochs >= 0")):
            rc, so, se = run_fit(["--data", os.path.join(td, "d.npz"), "--out", os.path.join(td, "m"), "--bitfleet",
                                  "none", "--swa", swa] + FIT_SMALL)
            check(rc == 2 and want in se, f"--swa {swa}: rc {rc}: {se.strip()[-500:]}")
        rc, so, se = run_fit(["--data", os.path.join(td, "d.npz"), "--out", os.path.join(td, "m"), "--bitfleet",
                              "none", "--swa", "2"] + FIT_SMALL)
        check(rc == 0 and "[binary] parameters averaged over the last 2 epochs (--swa)" in so,
              f"fit.py --swa 2: rc {rc}: {se[-1500:]}{so[-1500:]}")
        card = open(os.path.join(td, "m", "MODEL_CARD.md")).read()
        check("averaged over the ends of the last 2 of those epochs (`--swa`)" in card, "the card does not name --swa")
    return "the last epochs' mean, refused beyond the schedule, named in the card"


def test_fit_heldout_set():
    # a separate held-out set (--heldout): every --data sample is trained on, the card's accuracy is on the held-out
    # set (checked with reference.py); a held-out set with other classes or scaling is refused
    x, y = fashion(600)
    with tempfile.TemporaryDirectory() as td:
        np.savez(os.path.join(td, "train.npz"), X=x[:480], y=y[:480])
        np.savez(os.path.join(td, "test.npz"), X=x[480:], y=y[480:])
        out = os.path.join(td, "model")
        rc, so, se = run_fit(["--data", os.path.join(td, "train.npz"), "--heldout", os.path.join(td, "test.npz"),
                              "--out", out, "--bitfleet", "none", "--real-weights", "1"] + FIT_SMALL)
        check(rc == 0, f"fit.py --heldout rc {rc}: {se[-2000:]}{so[-2000:]}")
        m = check_model_dir(out, 10, 784, x[480:], y[480:])
        check(m["data"]["train"] == 480 and m["data"]["heldout"] == 120, f"split {m['data']}")
        card = open(os.path.join(out, "MODEL_CARD.md")).read()
        check("held-out set `" in card, "the card does not name the held-out set")
        # --real-weights 1: one warm-up epoch before the binary schedule, named in the card and the history
        check(len(m["history"]["binary_real"]) == 1 and len(m["history"]["binary"]) == 4, f"history {m['history']}")
        check("first 1 epochs with real-valued weights" in card, "the card does not name the real-weight warm-up")
        # --binary-lr: the binary-weight epochs alone get another learning rate (the real-weight warm-up is the same
        # epoch for epoch, the binary epochs are not), and the card says so; 0 is refused
        out_l = os.path.join(td, "binary_lr")
        rc, so, se = run_fit(["--data", os.path.join(td, "train.npz"), "--heldout", os.path.join(td, "test.npz"),
                              "--out", out_l, "--bitfleet", "none", "--real-weights", "1", "--binary-lr", "2e-4"]
                             + FIT_SMALL)
        check(rc == 0, f"fit.py --binary-lr rc {rc}: {se[-2000:]}{so[-2000:]}")
        ml = json.load(open(os.path.join(out_l, "fit_metrics.json")))
        same = lambda h: [(e["loss"], e["train_acc"]) for e in h]
        check(same(ml["history"]["binary_real"]) == same(m["history"]["binary_real"]),
              "--binary-lr changed the real-weight epochs")
        check(same(ml["history"]["binary"]) != same(m["history"]["binary"]), "--binary-lr did not change the binary epochs")
        check("(0.0002 in the binary-weight epochs)" in open(os.path.join(out_l, "MODEL_CARD.md")).read(),
              "the card does not name the binary-weight learning rate")
        import fit
        with contextlib.redirect_stderr(io.StringIO()) as err:
            try:
                rc = fit.main(["--data", os.path.join(td, "train.npz"), "--out", out_l + "2", "--binary-lr", "0"])
            except SystemExit as e:   # argparse's ap.error
                rc = e.code
        check(rc == 2 and "--binary-lr must be > 0" in err.getvalue(), f"--binary-lr 0: rc {rc} {err.getvalue()[-300:]}")
        # --teacher: a second fit distils from this one's float twin instead of training its own; the twins are
        # copied; a teacher of another architecture or a folder that is no fit output is refused before training
        out_t = os.path.join(td, "student")
        rc, so, se = run_fit(["--data", os.path.join(td, "train.npz"), "--heldout", os.path.join(td, "test.npz"),
                              "--out", out_t, "--bitfleet", "none", "--teacher", out, "--planes", "8",
                              "--shape", "28,28", "--shift", "1"] + FIT_SMALL)
        check(rc == 0, f"fit.py --teacher rc {rc}: {se[-2000:]}{so[-2000:]}")
        # the summary line names the teacher's --shift (0), which replaces this run's, and the binary model's own (1)
        check("shift 0 (binary 1)" in so, f"the model line does not name the teacher's shift: {so[:1500]}")
        mt = check_model_dir(out_t, 10, 784, x[480:], y[480:])
        for f in ("model.onnx", "model_int8.onnx"):
            check(open(os.path.join(out, "float", f), "rb").read() == open(os.path.join(out_t, "float", f), "rb").read(),
                  f"float/{f} is not the teacher's")
        check(mt["history"]["float"] == [] and "[float]" not in so, "a float twin was trained despite --teacher")
        check(mt["float_onnx_acc"] == m["float_onnx_acc"], f"twin accuracy {mt['float_onnx_acc']} != {m['float_onnx_acc']}")
        card_t = open(os.path.join(out_t, "MODEL_CARD.md")).read()
        check(f"taken from the earlier fit `{out}`" in card_t, "the card does not name the teacher")
        # the teacher never saw test.npz, the student's --heldout set: no warning, no caution on the card
        check("warning" not in se and "optimistic" not in card_t, f"a clean teacher was flagged: {se[-1500:]}")
        # a student judged on a split of train.npz, all of which the teacher trained on: warned, and its card says so
        out_v = os.path.join(td, "student_split")
        rc, so, se = run_fit(["--data", os.path.join(td, "train.npz"), "--out", out_v, "--bitfleet", "none",
                              "--teacher", out, "--epochs", "1", "--finetune", "0"] + FIT_SMALL[4:])
        check(rc == 0, f"fit.py --teacher with a split rc {rc}: {se[-2000:]}{so[-2000:]}")
        check("warning" in se and f"it trained on all of `{os.path.join(td, 'train.npz')}`" in se,
              f"no warning that the teacher trained on the held-out split: {se[-1500:]}")
        check("**The held-out figures on this card are optimistic**" in open(os.path.join(out_v, "MODEL_CARD.md")).read(),
              "the card does not say its held-out figures are optimistic")
        # --kd-teacher ONNX: distilled from that float model while its own float twin is still trained; with the
        # student's options and the teacher's float twin as the ONNX, the binary model is the --teacher student's,
        # byte for byte (the binary phase does not depend on the float phase)
        out_k = os.path.join(td, "student_kd")
        onnx = os.path.join(out, "float", "model.onnx")
        rc, so, se = run_fit(["--data", os.path.join(td, "train.npz"), "--heldout", os.path.join(td, "test.npz"),
                              "--out", out_k, "--bitfleet", "none", "--kd-teacher", onnx, "--planes", "8",
                              "--shape", "28,28", "--shift", "0", "--binary-shift", "1"] + FIT_SMALL)
        check(rc == 0, f"fit.py --kd-teacher rc {rc}: {se[-2000:]}{so[-2000:]}")
        mk = check_model_dir(out_k, 10, 784, x[480:], y[480:])
        check(len(mk["history"]["float"]) == 4 and "[float]" in so, "no float twin was trained with --kd-teacher")
        check(mk["kd_teacher_acc"] == m["float_onnx_acc"],
              f"the teacher's held-out accuracy {mk['kd_teacher_acc']} is not its ONNX accuracy {m['float_onnx_acc']}")
        check(mk["sha256"] == mt["sha256"], "the binary model distilled with --kd-teacher differs from the --teacher "
                                            "student's (same options, same teacher)")
        card_k = open(os.path.join(out_k, "MODEL_CARD.md")).read()
        check(f"distilled from `{onnx}`" in card_k and "not from its own float twin" in card_k,
              "the card does not name the --kd-teacher")
        # both: the float twin copied from --teacher (no float phase), distilled from --kd-teacher; the binary model
        # is the --kd-teacher student's (same options, same distillation teacher)
        out_b = os.path.join(td, "student_both")
        rc, so, se = run_fit(["--data", os.path.join(td, "train.npz"), "--heldout", os.path.join(td, "test.npz"),
                              "--out", out_b, "--bitfleet", "none", "--kd-teacher", onnx, "--teacher", out,
                              "--planes", "8", "--shape", "28,28", "--binary-shift", "1"] + FIT_SMALL)
        check(rc == 0, f"fit.py --kd-teacher --teacher rc {rc}: {se[-2000:]}{so[-2000:]}")
        mb = check_model_dir(out_b, 10, 784, x[480:], y[480:])
        check(mb["history"]["float"] == [] and "[float]" not in so, "a float twin was trained despite --teacher")
        check(mb["sha256"] == mk["sha256"], "--kd-teacher with --teacher gave another binary model than --kd-teacher")
        card_b = open(os.path.join(out_b, "MODEL_CARD.md")).read()
        check(f"taken from the earlier fit `{out}`" in card_b and f"distilled from `{onnx}`" in card_b,
              "the card does not name both the twin's fit and the --kd-teacher")
        for bad, why in ((["--teacher", out, "--experts", "8"], "experts 4 (this run: 8)"),
                         (["--teacher", td], "not a fit.py output folder"),
                         (["--kd-teacher", onnx + ".missing"], "no such file"),
                         (["--kd-teacher", onnx, "--kd", "0"], "needs distillation")):
            rc, so, se = run_fit(["--data", os.path.join(td, "train.npz"), "--out", out + "3", "--bitfleet", "none"]
                                 + FIT_SMALL + bad)
            check(rc == 2 and bad[0] in se and why in se, f"{bad}: rc {rc}: {se.strip()}")
            check(not os.path.exists(out + "3"), f"{bad}: a model directory was written")
        keep = y[480:] < 5
        np.savez(os.path.join(td, "five.npz"), X=x[480:][keep], y=y[480:][keep])
        # a teacher of ten classes for data of five
        rc, so, se = run_fit(["--data", os.path.join(td, "five.npz"), "--out", out + "4", "--bitfleet", "none",
                              "--kd-teacher", onnx] + FIT_SMALL)
        check(rc == 2 and "--kd-teacher" in se and "this data has 5 classes" in se, f"five classes: rc {rc}: {se.strip()}")
        check(not os.path.exists(out + "4"), "five classes: a model directory was written")
        np.savez(os.path.join(td, "floats.npz"), X=x[480:].astype(np.float64) / 40.0, y=y[480:])
        for bad, why in (("five.npz", "classes"), ("floats.npz", "input_scale")):
            rc, so, se = run_fit(["--data", os.path.join(td, "train.npz"), "--heldout", os.path.join(td, bad),
                                  "--out", out + "2", "--bitfleet", "none"] + FIT_SMALL)
            check(rc == 2 and "--heldout" in se and why in se, f"{bad}: rc {rc}: {se.strip()}")
            check(not os.path.exists(out + "2"), f"{bad}: a model directory was written")
    return ("trained on all 480 samples (a real-weight warm-up epoch first; --binary-lr changes only the epochs "
            "after it), accuracy on the 120 held out equals "
            "reference.py's; 2 mismatched sets refused; a second fit distilled from its float twin (--teacher), "
            "the same binary model from its ONNX with a twin of its own (--kd-teacher) and with the first fit's twin "
            "(--kd-teacher with --teacher), 5 bad teachers refused; a "
            "teacher that trained on the student's held-out split is flagged")


def test_teacher_overlap():
    # fit.teacher_overlap: when a --teacher's float twin trained on some of this run's held-out samples (pure)
    import argparse
    import fit
    with tempfile.TemporaryDirectory() as td:
        a, b = os.path.join(td, "a.npz"), os.path.join(td, "b.npz")   # compared by path: no files needed
        run = argparse.Namespace(data=a, heldout=None, val_split=0.1, split_seed=3)
        same = dict(data=os.path.join(td, ".", "a.npz"), heldout=None, val_split=0.1, seed=3)
        cases = [(run, same, None),                                              # same file, same split: clean
                 (run, {**same, "seed": 4, "split_seed": 3}, None),              # other seed, same split seed
                 (run, {**same, "seed": 4}, "another split"),                    # old teacher: its split seed is --seed
                 (run, {**same, "val_split": 0.2}, "another split"),
                 (run, {**same, "heldout": b}, "all of"),
                 (run, {**same, "data": b}, "not of this run's"),
                 (argparse.Namespace(**{**vars(run), "heldout": b}), {**same, "heldout": b}, None),
                 (argparse.Namespace(**{**vars(run), "heldout": b}), {**same, "data": b}, "--heldout set")]
        for args, t, want in cases:
            got = fit.teacher_overlap(args, t)
            check((got is None) if want is None else (got is not None and want in got), f"{t}: {got!r}, want {want!r}")
    return f"{len(cases)} teacher/held-out combinations"


def test_ensemble_teacher():
    # experiments/ensemble_teacher.py: the ensemble's logits are the mean of its members' (two committed float twins
    # of different architectures), and it refuses a model that is not shaped like a fit.py twin
    import onnx
    import onnxruntime as ort
    sys.path.insert(0, os.path.join(HERE, "experiments"))
    import ensemble_teacher
    twins = [os.path.join(HERE, d, "model.onnx") for d in ("fashion-float", "fashion-v2-float")]
    x = np.random.default_rng(7).random((64, 784), dtype=np.float32)
    run = lambda m: ort.InferenceSession(m, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    with tempfile.TemporaryDirectory() as td:
        out = os.path.join(td, "teacher.onnx")
        ensemble_teacher.main([out] + twins)
        got, want = run(out), (run(twins[0]) + run(twins[1])) / 2
        check(got.shape == (64, 10), f"ensemble logits {got.shape}")
        check(np.abs(got - want).max() < 1e-5, f"ensemble logits differ from the mean by {np.abs(got - want).max()}")
        bad = onnx.load(twins[0])
        bad.graph.output[0].name = "probs"
        bad.graph.node[-1].output[0] = "probs"
        onnx.save(bad, os.path.join(td, "bad.onnx"))
        try:
            ensemble_teacher.ensemble([twins[0], os.path.join(td, "bad.onnx")])
            check(False, "a model without `logits` was accepted")
        except SystemExit as e:
            check("a fit.py float twin has x and logits" in str(e), f"error: {e}")
    return "mean of 2 twins' logits, max |diff| %.1e; a non-twin refused" % np.abs(got - want).max()


def test_reference_models_and_bench_paths():
    """The committed models: v4 (2-bit conv filters and two-level expert hidden layers, format v6), v3 (conv front),
    v2 (stem), fashion-c64 (a 64-filter conv front) and fashion-c48b2 (2-bit conv filters, format v5) load in the
    engine,
    and `bitfleet bench --compare-paths` names for the conv models the conv kernel each stem kernel stands for, for v2
    the stem kernels."""
    binary = os.environ.get("BITFLEET_BIN")
    if not binary:
        return "engine not run ($BITFLEET_BIN unset)"
    check(os.path.exists(binary), f"$BITFLEET_BIN={binary}: no such file")
    notes = []
    # directory, the name its config.json gives, whether it has a conv front
    for name, config_name, conv in (("fashion", "fashion", True), ("fashion-v3", "fashion", True),
                                    ("fashion-v2", "fashion", False), ("fashion-c64", "fashion-c64", True),
                                    ("fashion-c48b2", "fashion-c48b2", True)):
        d = os.path.join(HERE, name)
        cfg = json.load(open(os.path.join(d, "config.json")))
        check(("conv" in cfg) == conv and cfg["name"] == config_name,
              f"{name}: config {cfg.get('name')} conv {'conv' in cfg}")
        r = subprocess.run([binary, "bench", "--model", d, "--compare-paths", "--skip-kernel", "--seconds", "0.05",
                            "--json"], capture_output=True, text=True, timeout=600)
        check(r.returncode == 0, f"bench on {name}: rc {r.returncode} {r.stderr[-1500:]}")
        out = json.loads(r.stdout)
        paths = out["kernelPaths"]
        rows = [row for row in out["pathComparison"] if row["kind"] != "xnor-gemm"]
        stems = paths["stemSupported"]
        check(all(row["figure"] > 0 for row in rows), f"{name}: model rows {rows} for {stems}")
        if conv:
            check(all(row["kind"] == "model-conv" for row in rows), f"{name}: {rows}")
            names = [row["path"] for row in rows]
            # one row per stem kernel, and for the lookup kernel whose conv runs on the table kernel a second one
            # on the direct kernel (the committed conv models have the table kernel's shape: 4x4, stride 2, pool 2)
            want = [sk for sk in stems for _ in range(2 if sk == "lookup" else 1)]
            check([n.split(" (stem kernel ")[1].rstrip(")") for n in names] == want, f"{name}: {names} for {stems}")
            check(all(n.startswith(("direct-", "windows-", "table-")) for n in names)
                  and "windows-bit-planes (stem kernel bit-planes)" in names, f"{name}: conv path names {names}")
            if "lookup" in stems:
                check("table-avx2 (stem kernel lookup)" in names and "direct-avx2 (stem kernel lookup)" in names,
                      f"{name}: the lookup kernel's conv should run on the table and the direct kernel: {names}")
            check(any(n.split(" ")[0] == paths["conv"] for n in names), f"{name}: the conv kernel in use "
                  f"{paths['conv']} is not among the compared ones {names}")
        else:
            check("conv" not in paths or paths["conv"] is None, f"{name}: a conv kernel without a conv front: {paths}")
            check([(row["kind"], row["path"]) for row in rows] == [("model-stem", sk) for sk in stems], f"{name}: {rows}")
        notes.append(f"{name}: " + ", ".join(row["path"].split(" ")[0] for row in rows))
    return "; ".join(notes)


TESTS = [test_reference_models_and_bench_paths, test_ensemble_teacher, test_teacher_overlap, test_export_router_groups, test_two_bit_conv_format, test_hidden_levels, test_shift_augmentation, test_top1_router_gradient, test_real_weights, test_binarise_ramp, test_swa, test_fit_heldout_set, test_fit_errors, test_torch_export_bit_exact, test_torch_conv_export_bit_exact,
         test_torch_conv2_export_bit_exact, test_fit_csv, test_fit_npz_scaled_features, test_fit_image_folder,
         test_fit_image_folder_conv, test_fit_conv2]


def main(argv):
    only = argv[argv.index("-k") + 1] if "-k" in argv else None
    failed = 0
    t_all = time.time()
    for t in TESTS:
        if only and only not in t.__name__:
            continue
        t0 = time.time()
        try:
            note = t()
            print(f"ok    {t.__name__}  ({time.time() - t0:.1f}s)  {note or ''}", flush=True)
        except Exception:
            failed += 1
            print(f"FAIL  {t.__name__}  ({time.time() - t0:.1f}s)", flush=True)
            traceback.print_exc()
    print(f"{'FAILED' if failed else 'passed'}: model tool tests ({time.time() - t_all:.1f}s)", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
