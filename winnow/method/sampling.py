"""Keep k of n examples by their scores: the k highest, or k sampled without replacement from a softmax."""

from __future__ import annotations

import torch


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
        return torch.topk(scores.double() / temperature + gumbel(len(scores), generator), k).indices
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


def gumbel(n: int, generator: torch.Generator | None) -> torch.Tensor:
    """n Gumbel(0, 1) draws: adding them to scores / T and keeping the top k samples k without
    replacement from softmax(scores / T)."""
    u = torch.rand(n, generator=generator, dtype=torch.float64).clamp_(1e-12, 1 - 1e-12)
    return -torch.log(-torch.log(u))
