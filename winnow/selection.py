"""Which examples of a super-batch the learner trains on (docs/DESIGN.md, Selection).

Plain functions over tensors: a policy turns losses into scores, `select` keeps k.
The online loss a policy reads is the actor's: a small model trained alongside the
learner (train.actor), or the learner itself (train.actor: learner, the RHO-LOSS set-up,
whose scoring forward costs as much as the learner's).
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


def select(
    scores: torch.Tensor, k: int, method: str = "topk", temperature: float = 1.0, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Indices of the k kept examples.

    topk keeps the k highest scores. softmax samples k without replacement from
    softmax(scores / temperature), by the Gumbel-top-k trick (exact for that law).
    """
    if not 0 < k <= len(scores):
        raise ValueError(f"cannot keep {k} of {len(scores)} examples")
    if method == "topk":
        return torch.topk(scores, k).indices
    if method == "softmax":
        u = torch.rand(scores.shape, generator=generator, dtype=torch.float64).clamp_(1e-12, 1 - 1e-12)
        gumbel = -torch.log(-torch.log(u))
        return torch.topk(scores.double() / temperature + gumbel, k).indices
    raise ValueError(f"unknown selection method {method!r}; use 'topk' or 'softmax'")


def select_per_group(
    scores: torch.Tensor,
    k: int,
    groups: int,
    method: str = "topk",
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Indices of k kept examples, k / groups from each of `groups` equal consecutive slices.

    This is what DDP ranks do, each selecting from its own share of the super-batch; with
    groups > 1 one process reproduces their choice (topk exactly; softmax draws differ, each
    rank has its own random stream)."""
    if groups == 1:
        return select(scores, k, method, temperature, generator)
    if len(scores) % groups or k % groups:
        raise ValueError(f"{len(scores)} scores and k={k} must split evenly into {groups} groups")
    size = len(scores) // groups
    return torch.cat(
        [select(part, k // groups, method, temperature, generator) + g * size for g, part in enumerate(scores.split(size))]
    )
