"""The compute ledger counts FLOPs by measurement and adds them up the way docs/DESIGN.md says."""

import pytest
import torch
from torch import nn

from winnow.ledger import Costs, flop_ratios, forward_flops_per_example, policy_costs


def test_forward_flops_are_measured_not_estimated():
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 5))
    per_example = forward_flops_per_example(model, lambda m, x, y: m(x.float()), torch.zeros(8, 3, 2, 2), torch.zeros(8))
    assert per_example == 2 * 12 * 5  # one multiply-add per weight


def test_each_policy_pays_for_what_it_uses():
    kw = dict(
        reference_forward=10.0,
        reference_score_forward=10.0,
        reference_steps=100,
        reference_batch=8,
        pool_size=1000,
        learner_forward=40.0,
        learner_super_forward=40.0,
        batch=8,
        super_batch=16,
    )
    uniform = policy_costs("uniform", **kw)
    assert (uniform.one_off, uniform.per_step) == (0.0, 3 * 40 * 8)  # backward counts twice the forward
    easy = policy_costs("easy_reference", **kw)
    assert (
        easy.one_off == 3 * 10 * 8 * 100 + 10 * 1000 and easy.per_step == uniform.per_step
    )  # precomputed scores cost nothing per step
    learn = policy_costs("learnability", **kw)
    assert learn.per_step == uniform.per_step + 40 * 16 and learn.one_off == easy.one_off
    hard = policy_costs("hard_learner", **kw)
    assert hard.one_off == 0.0 and hard.per_step == learn.per_step


def test_flop_ratios_count_the_reference_in_full_or_amortised():
    uniform = Costs(0.0, 0.0, 0.0, 3.0)
    learn = Costs(reference_training=100.0, pool_scoring=50.0, learner_scoring_per_step=2.0, learner_training_per_step=3.0)
    ratios = flop_ratios(learn, steps_to_target=40, uniform=uniform, uniform_steps=100, amortise_over=10)
    assert ratios["flop_ratio_full"] == pytest.approx((150 + 40 * 5) / 300)
    assert ratios["flop_ratio_amortised"] == pytest.approx((15 + 40 * 5) / 300)
    assert flop_ratios(learn, None, uniform, 100, 10)["flop_ratio_full"] is None  # never reached: no ratio, not a number
