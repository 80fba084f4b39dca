"""The optimiser (winnow/method/optim.py): AdamW whose token-table update skips the rows no caption has reached, with
the dense update's numbers bit for bit, its state, and its FLOP charge."""

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from models import build_clip, clip_tokenizer
from winnow.config import OptimConfig
from winnow.datasets.stream import Draw
from winnow.method import optim
from winnow.method.flops import counted, training_step_flops
from winnow.method.losses import per_example_contrastive
from winnow.method.training import Trainee, lr_at

pytestmark = pytest.mark.filterwarnings("ignore:No pretrained weights")


def _batches(n: int = 6, size: int = 32) -> list[Draw]:
    """Caption batches that reach a few dozen of the 49,408 token rows, different rows in different batches."""
    tokenize = clip_tokenizer("clip-pico")
    words = ["circle", "square", "red", "blue", "striped", "small", "large", "green", "dotted", "a", "photo", "of"]
    rng = np.random.default_rng(0)
    batches = []
    for i in range(n):
        captions = [" ".join(rng.choice(words[: 6 + i], 4)) for _ in range(size)]
        images = torch.randint(0, 256, (size, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(i))
        batches.append(Draw(np.arange(size), images, tokenize(captions), None))
    return batches


def _train(trainee: Trainee, batches: list[Draw], steps: int, start: int = 0, stop: int | None = None) -> None:
    """Steps start..stop of a run of `steps` (its warm-up and cosine schedule)."""
    for step in range(start, steps if stop is None else stop):
        lr = lr_at(step, steps, 1e-2, 5)
        trainee.step(batches[step % len(batches)], per_example_contrastive, lr, "fp32", "test", step)


def _state(trainee: Trainee) -> list[torch.Tensor]:
    """Every weight, and every parameter's AdamW step count and moments, in parameter order."""
    opt = trainee.optimizer
    moments = [t for p in trainee.model.parameters() if p.requires_grad for t in opt.state[p].values()]
    return [*trainee.model.state_dict().values(), *moments]


def _dense(trainee: Trainee) -> Trainee:
    trainee.optimizer = optim.adamw(trainee.model, 1e-2, 0.05, lazy_rows=False)
    return trainee


def test_the_lazy_update_gives_the_dense_updates_weights_and_moments_bit_for_bit():
    """Over a warm-up and a cosine decay, batches reaching new rows as training goes: every weight and every moment
    of every parameter (the 49,408-row token table included) equals the dense AdamW's."""
    torch.manual_seed(0)
    model, batches = build_clip("clip-pico", 32), _batches()
    lazy = Trainee(copy.deepcopy(model), OptimConfig(lr=1e-2), 1)
    dense = _dense(Trainee(copy.deepcopy(model), OptimConfig(lr=1e-2), 1))
    assert isinstance(lazy.optimizer, optim.AdamW) and list(lazy.optimizer.tables)
    _train(lazy, batches, 40)
    _train(dense, batches, 40)
    for a, b in zip(_state(lazy), _state(dense), strict=True):
        assert torch.equal(a, b)
    table = lazy.model.token_embedding.weight
    active = lazy.optimizer.active[id(table)]
    assert 0 < int(active.sum()) < 200  # it updated a few dozen rows of 49,408, not the table
    assert not torch.equal(table, model.token_embedding.weight)  # the untouched rows still decayed


def test_a_resumed_optimiser_continues_bit_for_bit():
    """A checkpoint holds the dense update's state in its format; loaded into a fresh optimiser (which rebuilds the
    rows it must update from the moments), training goes on exactly as the run that never stopped."""
    torch.manual_seed(0)
    model, batches = build_clip("clip-pico", 32), _batches()
    whole = Trainee(copy.deepcopy(model), OptimConfig(lr=1e-2), 1)
    _train(whole, batches, 30)
    half = Trainee(copy.deepcopy(model), OptimConfig(lr=1e-2), 1)  # the same run, stopped after step 12
    _train(half, batches, 30, stop=12)
    saved = copy.deepcopy({"model": half.model.state_dict(), "optimizer": half.optimizer.state_dict()})
    dense_format = _dense(Trainee(copy.deepcopy(model), OptimConfig(lr=1e-2), 1))
    _train(dense_format, batches, 30, stop=12)
    assert saved["optimizer"].keys() == dense_format.optimizer.state_dict().keys()
    resumed = Trainee(copy.deepcopy(model), OptimConfig(lr=1e-2), 1)
    resumed.model.load_state_dict(saved["model"])
    resumed.optimizer.load_state_dict(saved["optimizer"])
    _train(resumed, batches, 30, start=12)
    for a, b in zip(_state(resumed), _state(whole), strict=True):
        assert torch.equal(a, b)


def _lazy_and_dense(model: nn.Module, steps: int, ids_at) -> tuple[nn.Module, nn.Module]:
    lazy, dense = copy.deepcopy(model), copy.deepcopy(model)
    optimisers = [optim.adamw(lazy, 1e-2, 0.05), optim.adamw(dense, 1e-2, 0.05, lazy_rows=False)]
    for step in range(steps):
        for net, opt in zip((lazy, dense), optimisers):
            opt.zero_grad(set_to_none=True)
            net(ids_at(step)).backward()
            opt.step()
    return lazy, dense


class _Outside(nn.Module):
    """A table read with F.embedding on its weight: its module's forward (and its hook) never runs."""

    def __init__(self):
        super().__init__()
        self.table = nn.Embedding(1000, 8)
        self.head = nn.Linear(8, 1)

    def forward(self, ids):
        return self.head(F.embedding(ids, self.table.weight)).mean()


def test_a_table_used_outside_its_forward_is_updated_from_its_gradients_rows():
    torch.manual_seed(0)

    def ids_at(step):
        return torch.randint(0, 50 + 10 * step, (16,), generator=torch.Generator().manual_seed(step))

    lazy, dense = _lazy_and_dense(_Outside(), 20, ids_at)
    for a, b in zip(lazy.state_dict().values(), dense.state_dict().values(), strict=True):
        assert torch.equal(a, b)


class _Both(nn.Module):
    """A table looked up through its forward and read again outside it (a tied head, or F.embedding on its weight)."""

    def __init__(self, tied: bool):
        super().__init__()
        self.tied = tied
        self.table = nn.Embedding(1000, 8)
        self.head = nn.Linear(8, 1000, bias=False)
        if tied:
            self.head.weight = self.table.weight

    def forward(self, ids):
        out = self.table(ids).sum()
        if self.tied:
            return out + self.head(torch.ones(1, 8)).logsumexp(1).sum()
        return out + F.embedding(ids + 500, self.table.weight).sum()


@pytest.mark.parametrize("tied", [True, False], ids=["a tied head", "read outside its forward"])
def test_a_weight_also_used_outside_its_lookups_still_gets_every_rows_update(tied):
    """A tied head's weight is found when the optimiser is built, a weight read outside its module's forward at its
    first step (its gradient holds rows no lookup recorded): both are then updated from their gradient's rows."""
    torch.manual_seed(0)
    lazy, dense = _lazy_and_dense(_Both(tied), 8, lambda step: torch.arange(step, step + 5))
    for a, b in zip(lazy.state_dict().values(), dense.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_more_rows_than_one_threads_share_still_match_the_dense_update():
    """An odd number of rows (a CPU kernel's scalar tail) and more than one thread's share of elements (torch splits
    an element-wise op over threads from 32,768 elements): still the dense update's numbers, on this machine."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(49408, 48), nn.Flatten(0), nn.Linear(48 * 701, 1))
    ids = torch.randperm(49408, generator=torch.Generator().manual_seed(1))
    lazy, dense = _lazy_and_dense(model, 6, lambda step: ids[step * 701 : (step + 1) * 701])
    for a, b in zip(lazy.state_dict().values(), dense.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_under_ddp_the_rows_come_from_the_gradient_which_holds_every_ranks(monkeypatch):
    """DDP's all-reduce brings into this rank's gradient the rows other ranks looked up; with the process group up,
    the update reads its rows from the gradient, so each rank updates what the dense update would."""
    torch.manual_seed(0)
    lazy_table, dense_table = nn.Embedding(1000, 8), nn.Embedding(1000, 8)
    dense_table.load_state_dict(lazy_table.state_dict())
    lazy, dense = optim.adamw(lazy_table, 1e-2, 0.05), optim.adamw(dense_table, 1e-2, 0.05, lazy_rows=False)
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    for step in range(10):
        mine, theirs = torch.arange(step, step + 5), torch.arange(500 + step, 505 + step)  # theirs: another rank's
        for table, opt in ((lazy_table, lazy), (dense_table, dense)):
            opt.zero_grad(set_to_none=True)
            table(mine).sum().backward()
            table.weight.grad[theirs] += 1.0  # what the all-reduce adds
            opt.step()
    assert torch.equal(lazy_table.weight, dense_table.weight)


def test_forwards_no_step_follows_keep_a_bounded_list_of_rows():
    table = nn.Embedding(100, 4)
    optim.lazy_tables(table)
    for i in range(500):
        table(torch.tensor([i % 100]))
    assert len(getattr(table, optim.ROWS)) <= 65


def test_a_frozen_table_is_left_to_torch_and_a_classifier_has_none():
    """clip-tiny keeps its token table fixed (models/__init__.py): nothing to update lazily; a CNN has no table."""
    from models import build_classifier

    assert optim.lazy_tables(build_clip("clip-tiny", 32)) == []
    assert optim.lazy_tables(build_classifier("cnn-nano", 10)) == []
    assert len(optim.lazy_tables(build_clip("clip-pico", 32))) == 1


def test_the_ledger_charges_the_dense_update_which_is_more_than_the_lazy_one_runs():
    """FLOPs measured on the dense update: the committed FLOP figures stay what they were, and the rows skipped are
    charged (an over-charge of the arithmetic on zeros, never an under-charge)."""
    torch.manual_seed(0)
    model, batch = build_clip("clip-pico", 32), _batches(1)[0]
    opt = OptimConfig(lr=1e-2)
    charged = training_step_flops(model, opt, per_example_contrastive, batch)
    lazy = Trainee(copy.deepcopy(model), opt, 1)
    lazy.step(batch, per_example_contrastive, 1e-2, "fp32", "test", 0)
    run = counted(lambda: lazy.step(batch, per_example_contrastive, 1e-2, "fp32", "test", 1))
    table = model.token_embedding.weight.numel()
    assert run < charged
    assert charged - run > 5 * table  # the moments' arithmetic on the rows no caption reached
