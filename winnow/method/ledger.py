"""The compute ledger (docs/DESIGN.md): every line measured (method/flops.py), none modelled.

A training step is measured whole, forward, backward and the optimiser's update, on a real batch
of the size the model runs at (a contrastive loss grows with its batch); scoring is measured as the
loop scores. Five lines: reference training (its measured step x its steps) and pool scoring (its
measured forward x the pool), one-off; and per step the actor's scoring of the super-batch, the
actor's training step and the learner's training step (and for JEST a sixth, the reference's
super-batch logits from its stored embeddings). A scorer at a lower resolution is measured there.
Beside the FLOPs, the seconds each stage measured: users pay for hours, so every FLOP ratio has
its wall-clock twin. FLOPs are what torch counts (matmuls and convolutions) plus one per element
of each pointwise op; they are not the seconds, which the ledger reports beside them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from winnow.method.losses import eval_mode
from winnow.method.policies import POLICIES

# What the summary shows per policy, beside steps: compute and wall-clock to the target, and their ratios to uniform.
HEADLINE = (
    "flops_to_target",
    "flop_ratio_full",
    "flop_ratio_amortised",
    "seconds_to_target",
    "time_ratio_full",
    "time_ratio_amortised",
)


def forward_flops_per_example(model: nn.Module, loss_fn: Callable, images: torch.Tensor, targets: torch.Tensor) -> float:
    """FLOPs of one forward pass of loss_fn over this batch, divided by its size."""
    device = next(model.parameters()).device
    with eval_mode(model), FlopCounterMode(display=False) as counter:
        loss_fn(model, images.to(device), targets.to(device))
    return counter.get_total_flops() / len(images)


# learners that share one reference and its scores (a sweep, a size ladder, next month's rerun): each verdict
# against the best baseline is also read with the one-off paid once for this many (README, reports: the same N)
SHARED = (1, 3, 10)


def shared_over_best(vs_best: float | None, full: float | None, amortised: float | None, amortise_over: int, n: int):
    """An arm's FLOPs to the target over the best baseline's with its reference's one-off cost paid once for n
    learners, from one run's committed ratios: `vs_best` (over the best baseline, the one-off in full), `full` and
    `amortised` (over uniform's, the one-off in full and split over `amortise_over` runs). The baselines read no
    reference, so only the arm's FLOPs move: its one-off share of them is (full - amortised) / (full (1 - 1/A))."""
    if vs_best is None or full is None or amortised is None:
        return None
    if amortise_over == 1:
        raise ValueError("amortise_over = 1 splits nothing: the one-off share cannot be read from the ratios")
    one_off_share = (full - amortised) / (full * (1 - 1 / amortise_over))
    return vs_best * (1 - one_off_share * (1 - 1 / n))


@dataclass(frozen=True)
class Costs:
    """FLOPs of each line of the ledger for one policy's run."""

    reference_training: float  # one-off: reference steps x its measured training step
    pool_scoring: float  # one-off: pool size x reference forward
    actor_scoring_per_step: float  # the actor's measured scoring of a super-batch (the learner's own when train.actor is learner)
    actor_training_per_step: float  # the actor's measured training step (none when the learner scores itself)
    learner_training_per_step: float  # the learner's measured training step
    reference_logits_per_step: float = 0.0  # JEST: the reference's super-batch logits, from its stored embeddings
    selecting_steps: float | None = None  # a schedule that anneals: steps after this one train on uniform batches
    reference_refresh_per_step: float = 0.0  # a refreshed reference: its online scoring of the super-batch and its step
    # a replayed training sequence (datasets/replay.py): its recording's one-off and per-step selection FLOPs, each
    # divided by the learners that share the recording (train.replay_users)
    replayed_one_off: float = 0.0
    replayed_selection_per_step: float = 0.0

    @property
    def one_off(self) -> float:
        return self.reference_training + self.pool_scoring + self.replayed_one_off

    @property
    def per_step(self) -> float:
        return (
            self.actor_scoring_per_step
            + self.actor_training_per_step
            + self.learner_training_per_step
            + self.reference_logits_per_step
            + self.reference_refresh_per_step
            + self.replayed_selection_per_step
        )

    def at_step(self, step: float, amortise_over: int = 1) -> float:
        """Total FLOPs after `step` learner steps, the reference's one-off cost split over `amortise_over` runs; steps
        past `selecting_steps` (an annealed schedule) cost the learner's step alone, as uniform's do."""
        selecting = step if self.selecting_steps is None else min(step, self.selecting_steps)
        return self.one_off / amortise_over + selecting * self.per_step + (step - selecting) * self.learner_training_per_step

    def as_dict(self) -> dict:
        optional = {  # left out when unused: older records
            "selecting_steps": None,
            "reference_refresh_per_step": 0.0,
            "replayed_one_off": 0.0,
            "replayed_selection_per_step": 0.0,
        }
        lines = {k: v for k, v in asdict(self).items() if k not in optional or v != optional[k]}
        return {**lines, "one_off": self.one_off, "per_step": self.per_step}

    @classmethod
    def from_dict(cls, lines: dict) -> Costs:
        """The costs as_dict() wrote (a summary's ledger), for reading FLOPs at any step."""
        return cls(**{k: v for k, v in lines.items() if k not in ("one_off", "per_step")})


@dataclass(frozen=True)
class ReferenceSpend:
    """What the reference costs once, for every policy that reads its scores: its training and the pool's scoring."""

    train_step: float  # FLOPs of one measured training step at its batch
    score_forward: float  # FLOPs per example of its forward at the scoring batch (a contrastive loss grows with it)
    steps: int
    pool_size: int  # examples scored

    @property
    def training(self) -> float:
        return self.train_step * self.steps

    @property
    def scoring(self) -> float:
        return self.score_forward * self.pool_size


def policy_costs(
    policy: str,
    reference: ReferenceSpend,
    *,
    learner_step: float,
    actor_scoring: float = 0.0,
    actor_step: float = 0.0,
    reference_logits: float = 0.0,
    selecting_steps: float | None = None,
    reference_refresh: float = 0.0,
    replayed: tuple[float, float, int] | None = None,
) -> Costs:
    """The ledger lines for one policy, each measured per step: the learner's training step, the actor's scoring of a
    super-batch and its training step (0 when the learner scores itself: its scoring is then the learner's forward,
    `actor_scoring`, and its training is already the learner's line), and for JEST the reference's logits over the
    super-batch from its stored embeddings. A policy that reads no reference pays none of its one-off cost.
    `selecting_steps`: a schedule that anneals to uniform batches after this many steps. `reference_refresh`: a
    refreshed reference's scoring and training per step (its one-off training and the pool's scoring still paid).
    `replayed`: a replay's recording (its one-off FLOPs, its selection FLOPs per step, the learners sharing it): the
    replay pays the learner's step, and its share of the recording's selection for the steps that selected."""
    rule = POLICIES[policy]
    if rule.replays:
        one_off, selection, users = replayed or (0.0, 0.0, 1)
        return Costs(0.0, 0.0, 0.0, 0.0, learner_step, 0.0, selecting_steps, 0.0, one_off / users, selection / users)
    return Costs(
        reference_training=reference.training if rule.reference_loss else 0.0,
        pool_scoring=reference.scoring if rule.reference_loss else 0.0,
        actor_scoring_per_step=actor_scoring if rule.actor_loss else 0.0,
        actor_training_per_step=actor_step if rule.actor_loss else 0.0,
        learner_training_per_step=learner_step,
        reference_logits_per_step=reference_logits if rule.reference_loss else 0.0,
        selecting_steps=selecting_steps if rule.selects else None,
        reference_refresh_per_step=reference_refresh if rule.reference_loss else 0.0,
    )


def flop_ratios(costs: Costs, steps_to_target: float | None, uniform: Costs, uniform_steps: float, amortise_over: int) -> dict:
    """FLOPs to reach the target over uniform's FLOPs to reach it (both read at their own crossing, method/stopping.py):
    the reference in full, and amortised over N runs."""
    uniform_total = uniform.at_step(uniform_steps)
    if steps_to_target is None:
        return {"flops_to_target": None, "flop_ratio_full": None, "flop_ratio_amortised": None}
    return {
        "flops_to_target": costs.at_step(steps_to_target),
        "flop_ratio_full": costs.at_step(steps_to_target) / uniform_total,
        "flop_ratio_amortised": costs.at_step(steps_to_target, amortise_over) / uniform_total,
    }


def time_ratios(one_off_seconds: float, seconds_to_target: float | None, uniform_seconds: float, amortise_over: int) -> dict:
    """Wall-clock to reach the target over uniform's seconds to reach it: the one-off reference training and pool
    scoring counted in full, and amortised over N runs. Measured seconds, not FLOPs: what a user pays for."""
    if seconds_to_target is None:
        return {"seconds_to_target": None, "time_ratio_full": None, "time_ratio_amortised": None}
    return {
        "seconds_to_target": one_off_seconds + seconds_to_target,
        "time_ratio_full": (one_off_seconds + seconds_to_target) / uniform_seconds,
        "time_ratio_amortised": (one_off_seconds / amortise_over + seconds_to_target) / uniform_seconds,
    }
