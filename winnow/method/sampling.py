"""Keep k of n examples by their scores: the k highest, or k sampled without replacement from a softmax; with a
floor, a share of the k drawn uniformly first. Or keep all n, weighted by a softmax of the scores."""

from __future__ import annotations

import torch


def select(
    scores: torch.Tensor,
    k: int,
    method: str = "topk",
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
    floor: float = 0.0,
) -> torch.Tensor:
    """Indices of the k kept examples.

    topk keeps the k highest scores. softmax samples k without replacement from
    softmax(scores / temperature), by the Gumbel-top-k trick (exact for that law).
    floor: round(k * floor) of the k are drawn uniformly (without replacement) before the rest are chosen by score
    from what is left, so every example keeps a chance whatever its score.
    """
    if not 0 < k <= len(scores):
        raise ValueError(f"cannot keep {k} of {len(scores)} examples")
    uniform = int(round(k * floor))
    if uniform:
        order = torch.randperm(len(scores), generator=generator)
        if uniform >= k:
            return order[:k]
        rest = order[uniform:]
        return torch.cat([order[:uniform], rest[select(scores[rest], k - uniform, method, temperature, generator)]])
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
    floor: float = 0.0,
) -> torch.Tensor:
    """Indices of k kept examples, k / groups from each of `groups` equal consecutive slices.

    This is what DDP ranks do, each selecting from its own share of the super-batch; with
    groups > 1 one process reproduces their choice (topk exactly; softmax draws differ, each
    rank has its own random stream)."""
    if groups == 1:
        return select(scores, k, method, temperature, generator, floor)
    if len(scores) % groups or k % groups:
        raise ValueError(f"{len(scores)} scores and k={k} must split evenly into {groups} groups")
    size = len(scores) // groups
    return torch.cat(
        [select(part, k // groups, method, temperature, generator, floor) + g * size for g, part in enumerate(scores.split(size))]
    )


def gumbel(n: int, generator: torch.Generator | None) -> torch.Tensor:
    """n Gumbel(0, 1) draws: adding them to scores / T and keeping the top k samples k without
    replacement from softmax(scores / T)."""
    u = torch.rand(n, generator=generator, dtype=torch.float64).clamp_(1e-12, 1 - 1e-12)
    return -torch.log(-torch.log(u))


def soft_weights(scores: torch.Tensor, temperature: float = 1.0, floor: float = 0.0) -> torch.Tensor:
    """Per-example weights of a batch trained on whole (soft selection, as DRRho-CLIP weighs by learner loss minus
    reference loss instead of dropping examples): n * softmax(scores / temperature), mixed with a `floor` share of
    uniform weight; they average 1, so a step's size matches an unweighted one's."""
    w = torch.softmax(scores.double() / temperature, dim=0) * len(scores)
    return ((1.0 - floor) * w + floor).float()


def effective_sample_size(weights: torch.Tensor) -> float:
    """(sum w)^2 / sum w^2 over n: 1 when every weight is equal, 1/n when one example takes all of it."""
    w = weights.double()
    return float(w.sum() ** 2 / (w * w).sum() / len(w))
