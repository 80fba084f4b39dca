"""The optimiser every model trains with: torch's AdamW (foreach), with an embedding table's update kept to the rows
that can move.

A CLIP's token embedding has 49,408 rows, and the captions of a pool reach a few hundred of them. The dense AdamW
update reads and writes every row's weight, gradient and two moments each step: on a CPU that is most of a small
model's optimiser step (8.5 of 9.3 ms for clip-pico, the default actor and CLIP reference, on 2 cores). A row that
has never had a gradient has both moments at zero, and AdamW moves it by its weight decay alone (its Adam term is
0 / (0 + eps) = 0). So this update decays the whole table, then runs torch's own AdamW arithmetic (with the decay
already applied) on the rows that have ever been looked up while a gradient was kept, gathered, and writes them
back: the same numbers, bit for bit (tests/test_optim.py, against the dense update over tens of steps), with the
same state (a resumed run's optimiser state is the dense one's, in the same format).

The rows looked up are recorded by a forward pre-hook on each trainable nn.Embedding (its token ids, only while
autograd records). Where a gradient can reach rows this process did not look up, the gradient itself is scanned for
its non-zero rows instead, which is also exact, only slower: under DDP (the all-reduce brings the other ranks'
rows), for a weight another module also holds (a tied head), and for a table whose first gradient held a row no
lookup recorded (a weight also read outside its module's forward: checked once, at the table's first step).

The equality rests on torch's element-wise kernels giving an element the same result wherever it sits in a tensor
(the gathered rows sit elsewhere than in the table, and a CPU kernel runs a tensor's last few elements through
its scalar code rather than its vector code); tests/test_optim.py checks it on the machine that runs the tests,
with a few rows and with more than one thread's share of them.

What the ledger charges for it: method/flops.py measures a training step with the dense update (`lazy_rows=False`):
the same arithmetic on every row, zeros included, so skipping the zero rows makes a step faster on the clock and
changes no FLOP figure.
"""

from __future__ import annotations

from typing import Iterable

import torch
from torch import nn
from torch.optim.adam import adam as adam_arithmetic
from torch.optim.optimizer import _get_scalar_dtype

ROWS = "_winnow_rows_looked_up"  # the ids an embedding looked up since the optimiser's last step


def _record_rows(module: nn.Embedding, args: tuple, kwargs: dict) -> None:
    """Forward pre-hook: keep the ids of a lookup whose gradient autograd will compute (folded into their distinct
    ids now and then, so forwards that no optimiser step follows keep a bounded list)."""
    if torch.is_grad_enabled():
        looked_up = getattr(module, ROWS)
        looked_up.append((args[0] if args else kwargs["input"]).detach().reshape(-1))
        if len(looked_up) > 64:
            looked_up[:] = [torch.unique(torch.cat(looked_up))]


def lazy_tables(model: nn.Module) -> list[nn.Embedding]:
    """The model's trainable dense embedding tables, each recording the rows it looks up (hooked once)."""
    tables = [m for m in model.modules() if isinstance(m, nn.Embedding) and m.weight.requires_grad and not m.sparse]
    for table in tables:
        if not hasattr(table, ROWS):
            setattr(table, ROWS, [])
            table.register_forward_pre_hook(_record_rows, with_kwargs=True)
    return tables


def _rows_of(grad: torch.Tensor) -> torch.Tensor:
    """The rows of a table's gradient that are not all zeros."""
    return grad.ne(0).any(1)


def _holders(model: nn.Module, weight: nn.Parameter) -> list[nn.Module]:
    """Every module of the model that holds this weight as its own parameter."""
    return [m for m in model.modules() if any(p is weight for p in m.parameters(recurse=False))]


class AdamW(torch.optim.AdamW):
    """torch.optim.AdamW (foreach) whose update of each table in `tables` touches only the rows ever looked up
    (besides the weight decay of every row): see the module's docstring."""

    def __init__(self, params: Iterable[nn.Parameter], tables: list[nn.Embedding], scan: set[int] = frozenset(), **kwargs):
        super().__init__(params, foreach=True, **kwargs)
        unsupported = [k for k in ("amsgrad", "capturable", "differentiable") if self.defaults[k]]
        if unsupported or isinstance(self.defaults["lr"], torch.Tensor):
            raise ValueError(f"winnow's AdamW runs none of {unsupported or ['a tensor lr']}; use torch.optim.AdamW")
        self.tables: dict[int, list[nn.Embedding]] = {}  # weight id -> the tables that look it up (one, unless shared)
        for table in tables:
            self.tables.setdefault(id(table.weight), []).append(table)
        self.scan = set(scan)  # weight ids whose rows are read from the gradient (see the module's docstring)
        self.active: dict[int, torch.Tensor] = {}  # weight id -> bool per row: ever had a gradient

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        self.active = {}  # rebuilt from the loaded moments at the next step

    @torch.no_grad()
    def step(self, closure=None):
        if closure is not None:
            raise ValueError("winnow's AdamW takes no closure")
        held = []  # the tables' gradients, hidden from torch's own step, then updated here
        for group in self.param_groups:
            for p in group["params"]:
                if id(p) in self.tables and p.grad is not None:
                    held.append((group, p, p.grad))
                    p.grad = None
        try:
            super().step()
        finally:
            for _, p, grad in held:
                p.grad = grad
        for group, p, grad in held:
            self._table_step(group, p, grad)
        for tables in self.tables.values():
            for table in tables:
                getattr(table, ROWS).clear()

    def _rows(self, p: nn.Parameter, grad: torch.Tensor) -> torch.Tensor:
        """The rows of p that have ever had a gradient (or a non-zero moment), this step's included."""
        state = self.state[p]
        active = self.active.get(id(p))
        first = active is None
        if first:  # first step, or after a resume: what the moments remember
            active = state["exp_avg"].ne(0).any(1) | state["exp_avg_sq"].ne(0).any(1)
            self.active[id(p)] = active
        looked_up = [ids for table in self.tables[id(p)] for ids in getattr(table, ROWS)]
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        ids = torch.cat(looked_up).to(active.device) if looked_up and not distributed and id(p) not in self.scan else None
        if ids is not None and first and bool(_rows_of(grad).index_fill_(0, ids, False).any()):
            self.scan.add(id(p))  # a gradient row no lookup recorded: read this table's rows from its gradient from now on
            ids = None
        if ids is None:  # other ranks' rows all-reduced in, or a weight used outside the forwards hooked
            active |= _rows_of(grad)
        else:
            active[ids] = True
        return active.nonzero().squeeze(1)

    def _table_step(self, group: dict, p: nn.Parameter, grad: torch.Tensor) -> None:
        state = self.state[p]
        if not state:  # as torch's AdamW starts a parameter's state (neither capturable nor fused)
            state["step"] = torch.tensor(0.0, dtype=_get_scalar_dtype(), device="cpu")
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        lr, weight_decay = group["lr"], group["weight_decay"]
        if weight_decay != 0:  # torch's decoupled decay, on every row, before the Adam term
            p.mul_(1 - lr * weight_decay)
        rows = self._rows(p, grad)
        weights, moments = p.index_select(0, rows), state["exp_avg"].index_select(0, rows)
        squares, grads = state["exp_avg_sq"].index_select(0, rows), grad.index_select(0, rows)
        beta1, beta2 = group["betas"]
        adam_arithmetic(
            [weights],
            [grads],
            [moments],
            [squares],
            [],
            [state["step"]],
            foreach=True,
            amsgrad=False,
            beta1=beta1,
            beta2=beta2,
            lr=lr,
            weight_decay=0.0,
            eps=group["eps"],
            maximize=group["maximize"],
            decoupled_weight_decay=True,
        )
        p.index_copy_(0, rows, weights)
        state["exp_avg"].index_copy_(0, rows, moments)
        state["exp_avg_sq"].index_copy_(0, rows, squares)


def adamw(model: nn.Module, lr: float, weight_decay: float, lazy_rows: bool = True) -> torch.optim.AdamW:
    """The optimiser of one model: AdamW over its parameters, foreach (one kernel per op over every tensor: the same
    numbers as the for-loop, 0.6x its seconds on a CPU); with lazy_rows, its embedding tables updated as above."""
    params = model.parameters()
    if not lazy_rows:
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, foreach=True)
    tables = lazy_tables(model)
    tied = {id(t.weight) for t in tables if any(not isinstance(m, nn.Embedding) for m in _holders(model, t.weight))}
    return AdamW(params, tables, scan=tied, lr=lr, weight_decay=weight_decay)
