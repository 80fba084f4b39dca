"""The ledger's per-step FLOPs are what a real train() step spends, measured (method/flops.py), not modelled: with
the dense AdamW update it charges (a CLIP's token table: every row), the loop's own skipping the rows that are zero."""

import copy

import numpy as np
import pytest
import torch

from winnow.config import params_from_dict
from winnow.datasets.contract import Split
from winnow.datasets.stream import InMemory
from winnow.method import ledger, optim
from winnow.method.flops import counted
from winnow.method.objectives import OBJECTIVES
from winnow.method.selection import Selector
from winnow.method.training import Actor, train
from winnow.stages.train import _measured_flops

N, SIZE = 256, 32
NO_REFERENCE = ledger.ReferenceSpend(train_step=0.0, score_forward=0.0, steps=0, pool_size=0)


def _pool(objective) -> tuple[Split, torch.Tensor]:
    rng = np.random.default_rng(0)
    images = torch.from_numpy(rng.integers(0, 256, size=(N, 3, SIZE, SIZE), dtype=np.uint8))
    split = Split(np.arange(N), images, rng.integers(0, 10, N), {"caption": np.array([f"a photo of {i % 10}" for i in range(N)])})
    return split, OBJECTIVES[objective].targets("clip-pico" if objective == "contrastive" else "cnn-nano", split)


CASES = {
    "uniform": ("classification", "uniform", "topk"),
    "learnability with an actor": ("classification", "learnability", "topk"),
    "jest": ("contrastive", "learnability", "jest"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_the_ledgers_step_is_what_a_real_train_step_spends(case, monkeypatch):
    objective_name, policy, method = CASES[case]
    model_name = "clip-pico" if objective_name == "contrastive" else "cnn-nano"
    params = params_from_dict(
        {
            "objective": objective_name,
            "train": {
                "model": model_name,
                "actor": model_name,
                "steps": 1,
                "batch_size": 16,
                "warmup_steps": 0,
                "selection": method,
            },
        }
    )
    objective = OBJECTIVES[objective_name]
    split, targets = _pool(objective_name)
    torch.manual_seed(0)
    model = objective.build_model(model_name, 10, SIZE)
    actor = objective.build_model(model_name, 10, SIZE) if policy != "uniform" else None
    embeddings = (torch.randn(N, 32), torch.randn(N, 32), 10.0) if method == "jest" else None
    selector = Selector(
        policy,
        keep_fraction=params.train.keep_fraction,
        method=method,
        reference_loss=torch.randn(N) if policy != "uniform" and method != "jest" else None,
        reference_embeddings=embeddings,
    )
    sampler = InMemory(split, targets, seed=0)
    super_batch = selector.super_batch(params.train.batch_size)  # what the stage measures on: its first draw
    first = sampler.peek(max(super_batch, params.train.batch_size))
    measured = _measured_flops(params, selector, model, actor, params.train.batch_size, first, super_batch, world=1)
    costs = ledger.policy_costs(
        policy,
        NO_REFERENCE,
        learner_step=measured["learner_step_flops"],
        actor_scoring=measured.get("actor_scoring_flops_per_step", 0.0),
        actor_step=measured.get("actor_step_flops", 0.0),
        reference_logits=measured.get("reference_logits_flops_per_step", 0.0),
    )

    def one_real_step():
        train(
            copy.deepcopy(model),
            InMemory(split, targets, seed=0),
            params.train,
            seed=0,
            selector=selector,
            actor=Actor(copy.deepcopy(actor)) if actor is not None else None,
            loss_fn=objective.loss,
        )

    spent = counted(one_real_step)  # the loop as it runs (method/optim.py: a token table's update on its rows looked up)
    loops_own = optim.adamw
    monkeypatch.setattr(optim, "adamw", lambda model, lr, wd, lazy_rows=True: loops_own(model, lr, wd, lazy_rows=False))
    dense = counted(one_real_step)  # the same step with the dense update the ledger charges
    assert dense == pytest.approx(costs.per_step, rel=0.03), measured
    assert spent <= dense  # an over-charge where a table trains (clip-pico here), never an under-charge
    assert (spent < dense * 0.97) == (objective_name == "contrastive")
    if policy != "uniform":  # the selecting step pays more than the learner's training alone, and the ledger says so
        assert costs.per_step > costs.learner_training_per_step * 1.05
