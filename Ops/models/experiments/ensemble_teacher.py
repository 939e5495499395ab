#!/usr/bin/env python3
"""Experiment, not a product path: one distillation teacher from several float twins.

Writes one ONNX classifier whose logits are the mean of the given models' logits, for `fit.py --kd-teacher`. Each
input must be a fit.py float twin (or anything shaped like one): input `x`, float32 [N, features] (the 8-bit inputs
/ 255), output `logits` [N, classes]; all of the same features and classes.

    python3 Ops/models/experiments/ensemble_teacher.py OUT.onnx TWIN1/model.onnx TWIN2/model.onnx ...

docs/TRAINING.md (twenty-seventh session) has what this gave: five conv twins (92.10-92.64 % each) made a 93.26 %
teacher, and the binary students it taught did no better than with the best single twin.
"""
import argparse
import sys

import onnx
from onnx import TensorProto, compose, helper, version_converter


def dims(value_info):
    return [d.dim_value or d.dim_param for d in value_info.type.tensor_type.shape.dim]


def opset(model):
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def ensemble(paths):
    models = [onnx.load(p) for p in paths]
    for p, m in zip(paths, models):
        ins, outs = [i.name for i in m.graph.input], [o.name for o in m.graph.output]
        if ins != ["x"] or outs != ["logits"]:
            raise SystemExit(f"{p}: inputs {ins} and outputs {outs}; a fit.py float twin has x and logits")
    features, classes = dims(models[0].graph.input[0])[-1], dims(models[0].graph.output[0])[-1]
    for p, m in zip(paths, models):
        if dims(m.graph.input[0])[-1] != features or dims(m.graph.output[0])[-1] != classes:
            raise SystemExit(f"{p}: {dims(m.graph.input[0])} → {dims(m.graph.output[0])}, the first model "
                             f"{features} features → {classes} classes")
    target = max(opset(m) for m in models)
    nodes, inits, infos = [], [], []
    for i, m in enumerate(models):
        if opset(m) != target:
            m = version_converter.convert_version(m, target)
        m = compose.add_prefix(m, f"m{i}_")
        for n in m.graph.node:   # every member reads the one shared input
            n.input[:] = ["x" if s == f"m{i}_x" else s for s in n.input]
        nodes += m.graph.node
        inits += m.graph.initializer
        infos += m.graph.value_info
    nodes.append(helper.make_node("Sum", [f"m{i}_logits" for i in range(len(models))], ["ensemble_sum"]))
    inits.append(helper.make_tensor("ensemble_scale", TensorProto.FLOAT, [], [1.0 / len(models)]))
    nodes.append(helper.make_node("Mul", ["ensemble_sum", "ensemble_scale"], ["logits"]))
    graph = helper.make_graph(nodes, "ensemble_teacher",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", features])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", classes])],
                              inits, value_info=infos)
    out = helper.make_model(graph, opset_imports=[helper.make_opsetid("", target)])
    out.ir_version = min(m.ir_version for m in models)
    onnx.checker.check_model(out)
    return out


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("twins", nargs="+", help="float twins (ONNX), at least two")
    a = ap.parse_args(argv)
    if len(a.twins) < 2:
        ap.error("an ensemble needs at least two models")
    onnx.save(ensemble(a.twins), a.out)
    print(f"wrote {a.out}: the mean logits of {len(a.twins)} models")


if __name__ == "__main__":
    main(sys.argv[1:])
