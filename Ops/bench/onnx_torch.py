"""Run an ONNX graph with PyTorch, node by node, on any torch device (CUDA for the GPU row of gpu_baseline.py).

    runner = OnnxTorch("Ops/models/fashion-float/model.onnx", device="cuda", precision="bf16")
    logits = runner(x_float32_numpy)          # numpy float32 [N, classes]

Why by hand: the float twins that fit.py exports are plain ONNX graphs of a few dozen operator kinds (a conv front,
a router with TopK, per-expert sparse dispatch through NonZero / Gather / ScatterND), and where a GPU is lent here
ONNX Runtime comes as its CPU package (`onnxruntime`, not `onnxruntime-gpu`) with no network to fetch the other;
PyTorch with CUDA is there.
onnx2torch, the library for this, imports torchvision at load time for an operator these graphs never use.

Exactly the graph: every node is executed in the graph's order with the ONNX semantics of the operators listed in
OPS (opset 13-18 forms: axes as inputs). An operator outside that list is a clear error naming it, never a guess.
precision: 'fp32' (TF32 off for matmul and convolutions), 'tf32' (TF32 on: the default of convolutions in PyTorch on
NVIDIA GPUs from Ampere on) or 'bf16' (weights, input and float intermediates in bfloat16; the logits come back as
float32). Shape-like tensors (Shape, and the initializers that feed shape and axis inputs) stay on the CPU.
"""
import numpy as np
import onnx
from onnx import numpy_helper
import torch
import torch.nn.functional as F

PRECISIONS = ("fp32", "tf32", "bf16")

# ONNX TensorProto data types -> torch (the float ones follow the run's precision)
_FLOAT_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16}
_INT_TYPES = {onnx.TensorProto.INT64: torch.int64, onnx.TensorProto.INT32: torch.int32,
              onnx.TensorProto.INT8: torch.int8, onnx.TensorProto.UINT8: torch.uint8, onnx.TensorProto.BOOL: torch.bool}


def _attrs(node):
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


class OnnxTorch:
    def __init__(self, model_path, device="cpu", precision="fp32"):
        if precision not in PRECISIONS:
            raise ValueError(f"precision {precision!r}: one of {PRECISIONS}")
        self.device = torch.device(device)
        if self.device.type == "cuda" and self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())
        self.precision = precision
        self.float = torch.bfloat16 if precision == "bf16" else torch.float32
        if self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
            torch.backends.cudnn.allow_tf32 = precision == "tf32"
        model = onnx.load(model_path)
        g = model.graph
        self.input_name = g.input[0].name
        self.output_name = g.output[0].name
        self.nodes = [(n.op_type, list(n.input), list(n.output), _attrs(n)) for n in g.node]
        unknown = sorted({op for op, _, _, _ in self.nodes if op not in OPS})
        if unknown:
            raise NotImplementedError(f"{model_path}: ONNX operators not supported by onnx_torch.py: {unknown}")
        self.consts = {}  # name -> (device tensor, cpu tensor)
        for init in g.initializer:
            a = numpy_helper.to_array(init)
            cpu = torch.from_numpy(np.array(a))
            dev = cpu.to(self.device, dtype=self.float if cpu.is_floating_point() else cpu.dtype)
            self.consts[init.name] = (dev, cpu)

    def __call__(self, x):
        with torch.inference_mode():
            out = self.forward(torch.from_numpy(np.ascontiguousarray(x)))
            return out.float().cpu().numpy()

    def forward(self, x):
        env = {self.input_name: x.to(self.device, dtype=self.float, non_blocking=True)}
        for op, ins, outs, at in self.nodes:
            res = OPS[op](self, env, ins, at)
            if not isinstance(res, tuple):
                res = (res,)
            for name, v in zip(outs, res):
                if name:
                    env[name] = v
        return env[self.output_name]

    # an input as a tensor on the device (the initializers' device copy; a shape computed on the CPU is moved)
    def get(self, env, name):
        if name in env:
            v = env[name]
            return v if v.device == self.device else v.to(self.device)
        return self.consts[name][0]

    # a shape-like input as a list of Python ints
    def ints(self, env, name):
        v = env[name] if name in env else self.consts[name][1]
        return [int(i) for i in v.reshape(-1).tolist()]

    def cpu(self, env, name):
        return env[name].cpu() if name in env else self.consts[name][1]


def _reshape(r, env, ins, at):
    x = r.get(env, ins[0])
    shape = r.ints(env, ins[1])
    if not at.get("allowzero", 0):
        shape = [x.shape[i] if s == 0 else s for i, s in enumerate(shape)]
    return x.reshape(shape)


def _pads2d(at):
    pads = list(at.get("pads", [0, 0, 0, 0]))
    if at.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        raise NotImplementedError(f"auto_pad {at['auto_pad']!r}")
    return pads


def _conv(r, env, ins, at):
    x, w = r.get(env, ins[0]), r.get(env, ins[1])
    b = r.get(env, ins[2]) if len(ins) > 2 and ins[2] else None
    if x.dim() != 4:
        raise NotImplementedError("Conv: 2-D convolutions only")
    t, l, bt, rt = _pads2d(at)
    if (t, l) != (bt, rt):
        x, t, l = F.pad(x, (l, rt, t, bt)), 0, 0
    return F.conv2d(x, w, b, stride=tuple(at.get("strides", [1, 1])), padding=(t, l),
                    dilation=tuple(at.get("dilations", [1, 1])), groups=at.get("group", 1))


def _maxpool(r, env, ins, at):
    x = r.get(env, ins[0])
    t, l, bt, rt = _pads2d(at)
    if (t, l) != (bt, rt):
        raise NotImplementedError("MaxPool: asymmetric pads")
    k = tuple(at["kernel_shape"])
    return F.max_pool2d(x, k, stride=tuple(at.get("strides", k)), padding=(t, l),
                        dilation=tuple(at.get("dilations", [1, 1])), ceil_mode=bool(at.get("ceil_mode", 0)))


def _flatten(r, env, ins, at):
    x = r.get(env, ins[0])
    axis = at.get("axis", 1) % max(x.dim(), 1)
    return x.reshape(int(np.prod(x.shape[:axis])), -1)


def _topk(r, env, ins, at):
    x = r.get(env, ins[0])
    k = r.ints(env, ins[1])[0]
    v, i = torch.topk(x, k, dim=at.get("axis", -1), largest=bool(at.get("largest", 1)),
                      sorted=bool(at.get("sorted", 1)))
    return v, i


def _reduce(fn):
    def op(r, env, ins, at):
        x = r.get(env, ins[0])
        axes = r.ints(env, ins[1]) if len(ins) > 1 and ins[1] else at.get("axes")
        if not axes:
            if at.get("noop_with_empty_axes", 0):
                return x
            axes = list(range(x.dim()))
        return fn(x, [a % x.dim() for a in axes], bool(at.get("keepdims", 1)))
    return op


def _reduce_max(x, axes, keep):
    for a in sorted(axes, reverse=True):
        x = x.amax(dim=a, keepdim=keep)
    return x


def _shape(r, env, ins, at):
    x = r.get(env, ins[0])
    s = torch.tensor(list(x.shape), dtype=torch.int64)
    return s[at.get("start", 0):at["end"]] if "end" in at else s[at.get("start", 0):]


def _slice(r, env, ins, at):
    x = r.get(env, ins[0])
    starts, ends = r.ints(env, ins[1]), r.ints(env, ins[2])
    axes = r.ints(env, ins[3]) if len(ins) > 3 and ins[3] else list(range(len(starts)))
    steps = r.ints(env, ins[4]) if len(ins) > 4 and ins[4] else [1] * len(starts)
    idx = [slice(None)] * x.dim()
    for s, e, a, st in zip(starts, ends, axes, steps):
        if st != 1:
            raise NotImplementedError("Slice: steps other than 1")
        n = x.shape[a]
        s, e = max(0, min(n, s + n if s < 0 else s)), max(0, min(n, e + n if e < 0 else e))
        idx[a] = slice(s, e)
    return x[tuple(idx)]


def _concat(r, env, ins, at):
    if all(n not in env or env[n].device.type == "cpu" for n in ins):
        vals = [r.cpu(env, n) for n in ins]  # a shape computation (Shape's outputs, initializers): on the CPU
    else:
        vals = [r.get(env, n) for n in ins]
    return torch.cat(vals, dim=at.get("axis", 0))


def _constant_of_shape(r, env, ins, at):
    shape = r.ints(env, ins[0])
    value = at.get("value")
    if value is None:
        return torch.zeros(shape, dtype=r.float, device=r.device)
    a = numpy_helper.to_array(value).reshape(-1)
    dt = r.float if np.issubdtype(a.dtype, np.floating) else torch.from_numpy(a).dtype
    return torch.full(shape, a[0].item(), dtype=dt, device=r.device)


def _cast(r, env, ins, at):
    x = r.get(env, ins[0])
    to = at["to"]
    if to in _FLOAT_TYPES:
        return x.to(r.float)
    if to in _INT_TYPES:
        return x.to(_INT_TYPES[to])
    raise NotImplementedError(f"Cast to ONNX type {to}")


def _gather(r, env, ins, at):
    x = r.get(env, ins[0])
    i = r.get(env, ins[1])
    axis = at.get("axis", 0) % x.dim()
    i = torch.where(i < 0, i + x.shape[axis], i)
    out = x.index_select(axis, i.reshape(-1))
    return out.reshape(tuple(x.shape[:axis]) + tuple(i.shape) + tuple(x.shape[axis + 1:]))


def _unsqueeze(r, env, ins, at):
    x = r.get(env, ins[0])
    axes = r.ints(env, ins[1]) if len(ins) > 1 else at["axes"]
    rank = x.dim() + len(axes)
    for a in sorted(a % rank for a in axes):
        x = x.unsqueeze(a)
    return x


def _scatter_nd(r, env, ins, at):
    data, idx, upd = r.get(env, ins[0]), r.get(env, ins[1]), r.get(env, ins[2])
    red = at.get("reduction", b"none")
    red = red.decode() if isinstance(red, bytes) else red
    if red not in ("none", "add"):
        raise NotImplementedError(f"ScatterND reduction {red!r}")
    key = tuple(idx[..., j] for j in range(idx.shape[-1]))
    out = data.clone()
    out.index_put_(key, upd.to(out.dtype), accumulate=red == "add")
    return out


def _transpose(r, env, ins, at):
    x = r.get(env, ins[0])
    return x.permute(at.get("perm", list(range(x.dim()))[::-1]))


def _binary(fn):
    return lambda r, env, ins, at: fn(r.get(env, ins[0]), r.get(env, ins[1]))


OPS = {
    "Reshape": _reshape,
    "Conv": _conv,
    "MaxPool": _maxpool,
    "Flatten": _flatten,
    "Relu": lambda r, env, ins, at: torch.relu(r.get(env, ins[0])),
    "MatMul": _binary(torch.matmul),
    "Add": _binary(torch.add),
    "Sub": _binary(torch.sub),
    "Mul": _binary(torch.mul),
    "Equal": _binary(torch.eq),
    "TopK": _topk,
    "Softmax": lambda r, env, ins, at: torch.softmax(r.get(env, ins[0]), dim=at.get("axis", -1)),
    "ReduceSum": _reduce(lambda x, axes, keep: x.sum(dim=axes, keepdim=keep)),
    "ReduceMax": _reduce(_reduce_max),
    "NonZero": lambda r, env, ins, at: torch.nonzero(r.get(env, ins[0])).T.contiguous(),
    "Transpose": _transpose,
    "Gather": _gather,
    "Unsqueeze": _unsqueeze,
    "ScatterND": _scatter_nd,
    "Shape": _shape,
    "Slice": _slice,
    "Concat": _concat,
    "ConstantOfShape": _constant_of_shape,
    "Cast": _cast,
}
