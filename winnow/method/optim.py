"""The optimiser every model trains with: torch's AdamW (foreach), with an embedding table's update kept to the rows
that can move.

A CLIP's token embedding has 49,408 rows, and the captions of a pool reach a few hundred of them. The dense AdamW
update reads and writes every row's weight, gradient and two moments each step: on a CPU that is most of a small
model's optimiser step (8.5 of 9.3 ms for clip-pico, the default actor and CLIP reference, on 2 cores). A row that
has never had a gradient has both moments at zero, and AdamW moves it by its weight decay alone (its Adam term is
0 / (0 + eps) = 0). So this update decays the whole table, then runs torch's own AdamW arithmetic (with the decay
already applied) on the rows that have ever been looked up while a gradient was kept, gathered, and writes them
back: the same numbers, bit for bit (tests/test_optim.py, against the dense update over hundreds of steps), with the
same state (a resumed run's optimiser state is the dense one's, in the same format).

The rows looked up are recorded by a forward pre-hook on each trainable nn.Embedding (its token ids, only while
autograd records); a gradient whose rows were not recorded (a table used outside its module's forward) is scanned
for its non-zero rows instead, which is also exact, only slower.

What the ledger charges for it: method/flops.py measures a training step with the dense update (`lazy_rows=False`):
the same arithmetic on every row, zeros included, so skipping the zero rows makes a step faster on the clock and
changes no FLOP figure.
"""

from __future__ import annotations

from typing import Iterable

import torch
from torch import nn
from torch.optim.adam import adam as adam_arithmetic

ROWS = "_winnow_rows_looked_up"  # the ids an embedding looked up since the optimiser's last step


def _record_rows(module: nn.Embedding, args: tuple) -> None:
    """Forward pre-hook: keep the ids of a lookup whose gradient autograd will compute."""
    if torch.is_grad_enabled():
        getattr(module, ROWS).append(args[0].detach().reshape(-1))


def lazy_tables(model: nn.Module) -> list[nn.Embedding]:
    """The model's trainable dense embedding tables, each recording the rows it looks up (hooked once)."""
    tables = [m for m in model.modules() if isinstance(m, nn.Embedding) and m.weight.requires_grad and not m.sparse]
    for table in tables:
        if not hasattr(table, ROWS):
            setattr(table, ROWS, [])
            table.register_forward_pre_hook(_record_rows)
    return tables


class AdamW(torch.optim.AdamW):
    """torch.optim.AdamW (foreach) whose update of each table in `tables` touches only the rows ever looked up
    (besides the weight decay of every row): see the module's docstring."""

    def __init__(self, params: Iterable[nn.Parameter], tables: list[nn.Embedding], **kwargs):
        super().__init__(params, foreach=True, **kwargs)
        self.tables = {id(t.weight): t for t in tables}
        self.active: dict[int, torch.Tensor] = {}  # table weight id -> bool per row: ever had a gradient

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
        for table in self.tables.values():
            getattr(table, ROWS).clear()

    def _rows(self, p: nn.Parameter, grad: torch.Tensor) -> torch.Tensor:
        """The rows of p that have ever had a gradient (or a non-zero moment), this step's included."""
        state, table = self.state[p], self.tables[id(p)]
        active = self.active.get(id(p))
        if active is None:  # first step, or after a resume: what the moments remember
            active = state["exp_avg"].ne(0).any(1) | state["exp_avg_sq"].ne(0).any(1)
            self.active[id(p)] = active
        looked_up = getattr(table, ROWS)
        if looked_up:
            active[torch.cat(looked_up).to(active.device)] = True
        else:  # the table was used outside its module's forward: find the rows from the gradient itself
            active |= grad.ne(0).any(1)
        return active.nonzero().squeeze(1)

    def _table_step(self, group: dict, p: nn.Parameter, grad: torch.Tensor) -> None:
        state = self.state[p]
        if not state:  # as torch's AdamW starts a parameter's state
            state["step"] = torch.tensor(0.0, dtype=torch.get_default_dtype())
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
    return AdamW(params, lazy_tables(model), lr=lr, weight_decay=weight_decay)
