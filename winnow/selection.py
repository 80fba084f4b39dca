"""Which examples of a super-batch the learner trains on (DESIGN.md, Selection).

Plain functions over tensors: a policy turns losses into scores, `select` keeps k.
"""

from __future__ import annotations

import torch

# Which losses each policy needs: the learner's (a forward pass per step) and/or the reference's (precomputed).
NEEDS_LEARNER_LOSS = {"uniform": False, "easy_reference": False, "hard_learner": True, "learnability": True}
NEEDS_REFERENCE_LOSS = {"uniform": False, "easy_reference": True, "hard_learner": False, "learnability": True}


def policy_scores(policy: str, learner_loss: torch.Tensor | None, reference_loss: torch.Tensor | None) -> torch.Tensor:
    """Higher is more worth training on."""
    if policy == "easy_reference":
        return -reference_loss
    if policy == "hard_learner":
        return learner_loss
    if policy == "learnability":
        return learner_loss - reference_loss
    raise ValueError(f"policy {policy!r} has no scores (uniform keeps a random batch)")


def select(scores: torch.Tensor, k: int, method: str = "topk", temperature: float = 1.0, generator: torch.Generator | None = None) -> torch.Tensor:
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


def select_per_group(scores: torch.Tensor, k: int, groups: int, method: str = "topk", temperature: float = 1.0,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """Indices of k kept examples, k / groups from each of `groups` equal consecutive slices.

    This is what DDP ranks do, each selecting from its own share of the super-batch; with
    groups > 1 one process reproduces their choice (topk exactly; softmax draws differ, each
    rank has its own random stream)."""
    if groups == 1:
        return select(scores, k, method, temperature, generator)
    if len(scores) % groups or k % groups:
        raise ValueError(f"{len(scores)} scores and k={k} must split evenly into {groups} groups")
    size = len(scores) // groups
    return torch.cat([select(part, k // groups, method, temperature, generator) + g * size for g, part in enumerate(scores.split(size))])
