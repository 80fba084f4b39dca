"""The selection policies (docs/DESIGN.md, Selection): which losses each reads, and how it scores examples.

A policy turns the online model's per-example loss and the reference's into a score (higher: keep).
Adding a policy is one entry in POLICIES; the loop, the ledger, the config and the CLI read it from here.
"""

from __future__ import annotations

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

    @property
    def selects(self) -> bool:
        """False for the baseline, which trains on a uniform batch and draws no super-batch."""
        return self.score is not None

    def scores(self, actor_loss: torch.Tensor | None, reference_loss: torch.Tensor | None) -> torch.Tensor:
        if self.score is None:
            raise ValueError(f"policy {self.name!r} has no scores (it keeps a uniform batch)")
        return self.score(actor_loss, reference_loss)


POLICIES: dict[str, Policy] = {
    p.name: p
    for p in (
        Policy("uniform", None),
        Policy("easy_reference", lambda actor, reference: -reference, reference_loss=True),
        Policy("hard_learner", lambda actor, reference: actor, actor_loss=True),
        Policy("learnability", lambda actor, reference: actor - reference, actor_loss=True, reference_loss=True),
    )
}
