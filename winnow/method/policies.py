"""The selection policies (docs/DESIGN.md, Selection): which losses each reads, and how it scores examples;
and the baselines a user would try without winnow, as arms beside them.

A policy turns the online model's per-example loss and the reference's into a score (higher: keep).
A baseline selects nothing: it trains on a uniform batch of the data it names (the pool, the curated set
alone, both, or the pool after model-free filters). Adding either is one entry in POLICIES; the loop, the
ledger, the config, the CLI and the reports read it from here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable

import torch


@dataclass(frozen=True)
class Policy:
    """A selection policy: which losses it reads, and how it scores a super-batch (higher: keep).
    Adding a policy is one entry in POLICIES; the loop, the ledger and the config read it from here."""

    name: str
    score: Callable[[torch.Tensor | None, torch.Tensor | None], torch.Tensor] | None  # (actor loss, reference loss) -> scores
    actor_loss: bool = False  # needs the online model's loss over the super-batch every step (train.actor)
    reference_loss: bool = False  # needs the precomputed reference losses (free per step)
    data: str = "pool"  # what it draws from: pool | curated | curated+pool | filtered (the pool after curation/filters.py)
    # | balanced (the pool, rows weighted inverse to their label's frequency)
    blend: bool = False  # train.curated_share of every batch from the curated set (upsampled), beside the pool's rows
    replays: bool = False  # trains on a recorded training sequence (train.replay): selection paid once, by its recording

    @property
    def selects(self) -> bool:
        """False for the baseline, which trains on a uniform batch and draws no super-batch."""
        return self.score is not None

    def scores(self, actor_loss: torch.Tensor | None, reference_loss: torch.Tensor | None) -> torch.Tensor:
        if self.score is None:
            raise ValueError(f"policy {self.name!r} has no scores (it keeps a uniform batch)")
        return self.score(actor_loss, reference_loss)


_POLICIES = (
    Policy("uniform", None),
    Policy("curated_only", None, data="curated"),  # the learner on the curated set alone
    Policy("curated_plus_pool", None, data="curated+pool"),  # uniform over both
    Policy("filtered", None, data="filtered"),  # what a user does before any model: drop duplicates, flat images
    Policy("balanced", None, data="balanced"),  # uniform, each row weighted inverse to its label's frequency
    Policy("curated_mix", None, blend=True),  # train.curated_share of each batch curated, the rest uniform from the pool
    Policy("easy_reference", lambda actor, reference: -reference, reference_loss=True),
    Policy("hard_learner", lambda actor, reference: actor, actor_loss=True),
    Policy("learnability", lambda actor, reference: actor - reference, actor_loss=True, reference_loss=True),
    Policy("replay", None, data="replay", replays=True),  # the rows a selecting run kept, step by step (train.replay)
)
# each selecting policy also on top of the curated set: train.curated_share of every batch curated, the rest what the
# policy keeps of a super-batch from the pool (compared with curated_mix, where the curated set alone would win)
POLICIES: dict[str, Policy] = {
    p.name: p
    for p in (
        *_POLICIES,
        *(dataclasses.replace(p, name=f"{p.name}_mix", blend=True) for p in _POLICIES if p.score is not None),
    )
}

BASELINES = tuple(
    name for name, p in POLICIES.items() if not p.selects and not p.replays
)  # the arms a selection policy must beat
