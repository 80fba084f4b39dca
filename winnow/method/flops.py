"""FLOPs measured, not modelled: what the ledger (method/ledger.py) charges each line of a step.

`counted(fn)` runs fn under torch's FlopCounterMode (matrix multiplies and convolutions, forward and
backward, as torch counts them) and a dispatch mode that adds one FLOP per output element of every
pointwise op (activations, normalisation, the loss, the optimiser's update: AdamW's moments, its
weight decay and its step are pointwise) and of every `_foreach_` op (a fused optimiser's). Copies
and views count nothing. So a training step is measured whole: forward, backward and optimiser step,
on copies of the model and its optimiser that are thrown away (the run itself is not touched).
"""

from __future__ import annotations

import copy
from typing import Callable

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.flop_counter import FlopCounterMode

from winnow.config import OptimConfig
from winnow.datasets.stream import Draw


class _Pointwise(TorchDispatchMode):
    """One FLOP per output element of each pointwise (or _foreach_) aten op."""

    def __init__(self):
        super().__init__()
        self.flops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if torch.Tag.pointwise in func.tags or func.__name__.startswith("_foreach_"):
            # in-place ops return their input; _foreach_ ops a list (or, in place, None: count their first argument)
            counted = out if out is not None else args[0]
            self.flops += sum(t.numel() for t in tree_leaves(counted) if isinstance(t, torch.Tensor))
        return out


def counted(fn: Callable[[], object]) -> float:
    """FLOPs of running fn: FlopCounterMode's (matmuls, convolutions) plus one per pointwise output element."""
    with FlopCounterMode(display=False) as matmuls, _Pointwise() as pointwise:
        fn()
    return float(matmuls.get_total_flops() + pointwise.flops)


def training_step_flops(model: nn.Module, opt: OptimConfig, loss_fn: Callable, batch: Draw, precision: str = "fp32") -> float:
    """FLOPs of one real optimiser step on `batch` (forward, backward, AdamW's update), on a copy of the model.
    The optimiser's first step is measured after one unmeasured step, as every later step runs. The update is the
    dense AdamW's, every row of an embedding table included: the loop's own (method/optim.py) gives the same numbers
    and skips the rows no lookup has reached, whose arithmetic is on zeros; they are charged all the same, so that
    makes a step faster on the clock and moves no FLOP figure (an over-charge, never an under-charge)."""
    from winnow.method.training import Trainee  # the loop's own step, not a re-implementation of it

    trainee = Trainee(copy.deepcopy(model), opt, 1, lazy_rows=False)
    trainee.model.train()
    trainee.step(batch, loss_fn, opt.lr, precision, "measuring FLOPs", 0)
    return counted(lambda: trainee.step(batch, loss_fn, opt.lr, precision, "measuring FLOPs", 1))


def scoring_flops(model: nn.Module, loss_fn: Callable, batch: Draw, precision: str = "fp32", joint: bool = False) -> float:
    """FLOPs of scoring `batch` as the loop does, no gradient: per-example losses, or for JEST (`joint`) the batch's
    image-text logits."""
    from winnow.method.training import Trainee

    trainee = Trainee(copy.deepcopy(model), OptimConfig(), 1)
    trainee.model.train()  # the loop scores in train mode, as the actor is between its steps
    if joint:
        return counted(lambda: trainee.logits(batch, precision))
    return counted(lambda: trainee.losses(batch, loss_fn, precision))
