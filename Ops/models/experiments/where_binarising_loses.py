#!/usr/bin/env python3
"""Diagnostic, not a product path: where does binarising the weights lose accuracy?

Runs Ops/models/fit.py with its arguments, but changes what one group of binary layers computes with in the
binary-weight epochs:

  conv-real     the conv front keeps its real-valued weights
  hidden-real   the experts' hidden layers keep their real-valued weights
  conv-2bit     the conv front's weights are quantised to 2 bits, {-3, -1, 1, 3} * s per filter (s = mean|W| / 2,
                straight-through gradient): 2*b1 + b0 with two sign bits, i.e. two binary convs added

Judge a run by the torch held-out accuracy that fit.py prints at the last binary-weight epoch. The exporter, the
batch-norm re-estimation (calibrate) of the conv front and reference.py all use sign(W), so the exported model and
its reference.py figure do not describe the model trained here.

    python3 Ops/models/experiments/where_binarising_loses.py conv-2bit --data ... (fit.py's arguments)

docs/TRAINING.md (twenty-fourth session) has the figures this gave for the 48-filter recipe.
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import torch  # noqa: E402

import bitfleet_torch as bt  # noqa: E402
import fit  # noqa: E402

MODES = ("conv-real", "hidden-real", "conv-2bit")


class _TwoBit(torch.autograd.Function):
    """The levels of fit.py --conv-bits 2 (bitfleet_torch.two_bit_levels) times s, with a plain pass-through."""

    @staticmethod
    def forward(ctx, w):
        s = w.abs().mean(1, keepdim=True).clamp_min(1e-8) / 2
        return bt.two_bit_levels(w) * s

    @staticmethod
    def backward(ctx, g):
        return g


def install(mode):
    if mode == "conv-2bit":
        plain = bt._weight

        def weight(layer):
            if isinstance(layer, bt.BinaryConv) and layer.binary and not getattr(layer, "real_weights", False):
                return _TwoBit.apply(layer.weight)
            return plain(layer)
        bt._weight = weight
        return
    plain_switch = bt.BinaryMoE.set_real_weights

    def switch(self, on):
        plain_switch(self, on)
        if not on:   # layers followed by batch-norm: no scale to carry over
            mods = [self.conv] if mode == "conv-real" else [h for e in self.experts for h in e.hidden]
            for m in mods:
                m.real_weights = True
    bt.BinaryMoE.set_real_weights = switch


def main(argv):
    if not argv or argv[0] not in MODES:
        print(f"usage: {os.path.basename(__file__)} {{{'|'.join(MODES)}}} FIT_PY_ARGUMENTS...", file=sys.stderr)
        return 2
    install(argv[0])
    print(f"where_binarising_loses: {argv[0]} (diagnostic; judge by the last epoch's torch held-out accuracy)",
          flush=True)
    return fit.main(argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
