"""JEST's joint selection for the contrastive loss (Evans et al. 2024; docs/DESIGN.md, Selection).

An example's contrastive loss depends on the rest of its batch, so the batch is drawn in chunks,
each later chunk scored conditionally on the examples already chosen (`conditional_losses`).
Plain functions over (N, N) image-text logits.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from winnow.method.policies import Policy
from winnow.method.sampling import gumbel


def pair_losses(logits: torch.Tensor) -> torch.Tensor:
    """Each pair's contrastive loss against the whole batch, from its (N, N) image-text logits: the
    mean of its row's and its column's cross-entropy (losses.contrastive_losses, from logits)."""
    target = torch.arange(len(logits), device=logits.device)
    return (F.cross_entropy(logits, target, reduction="none") + F.cross_entropy(logits.T, target, reduction="none")) / 2


def conditional_losses(logits: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
    """For every candidate c, L(S + c) - L(S): how much the summed contrastive loss of the chosen set S
    (a bool mask, not empty) grows when c joins it, from the super-batch's (N, N) logits Z.

    Two parts, both exact for the softmax (CLIP) loss:
    - c's own pair: -Z_cc + (logsumexp of its row over S + c + logsumexp of its column over S + c) / 2;
    - every chosen pair i, whose row now also contrasts with text c and whose column with image c:
      (softplus(Z_ic - R_i) + softplus(Z_ci - C_i)) / 2, R_i and C_i its row's and column's logsumexp over S.
    Chosen examples get -inf (they are not candidates)."""
    z = logits.double()
    inside = z[chosen][:, chosen]
    rows, cols = torch.logsumexp(inside, dim=1), torch.logsumexp(inside, dim=0)  # R_i, C_i for i in S
    diagonal = z.diagonal()
    own = -diagonal + 0.5 * (
        torch.logaddexp(torch.logsumexp(z[:, chosen], dim=1), diagonal)  # c's row: image c against texts S + c
        + torch.logaddexp(torch.logsumexp(z[chosen, :], dim=0), diagonal)  # c's column: text c against images S + c
    )
    others = 0.5 * (
        F.softplus(z[chosen, :] - rows[:, None]).sum(0)  # text c joins each chosen image's row
        + F.softplus(z[:, chosen] - cols[None, :]).sum(1)  # image c joins each chosen text's column
    )
    return (own + others).masked_fill(chosen, float("-inf"))


def jest_select(
    policy: Policy,
    actor_logits: torch.Tensor | None,
    reference_logits: torch.Tensor | None,
    k: int,
    chunks: int,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Indices of k examples of a super-batch chosen jointly, in `chunks` chunks (JEST).

    The first chunk is sampled from the per-example scores (the policy's, from each pair's loss
    against the whole super-batch); each later chunk from the policy's score of each candidate's
    conditional loss given the examples already chosen (conditional_losses), actor minus reference
    for learnability. Within a chunk, without replacement from softmax(score / temperature).
    With one chunk this is per-example selection by softmax sampling."""
    n = len(actor_logits if actor_logits is not None else reference_logits)
    if not 0 < k <= n:
        raise ValueError(f"cannot keep {k} of {n} examples")
    if not 0 < chunks <= k:
        raise ValueError(f"cannot draw {k} examples in {chunks} chunks")

    def scores(of: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        return policy.scores(
            of(actor_logits) if policy.actor_loss else None, of(reference_logits) if policy.reference_loss else None
        ).double()

    chosen = torch.zeros(n, dtype=torch.bool)
    picked = []
    for i, size in enumerate(len(c) for c in torch.arange(k).tensor_split(chunks)):
        score = scores(pair_losses) if i == 0 else scores(lambda z: conditional_losses(z, chosen))
        key = (score / temperature + gumbel(n, generator)).masked_fill(chosen, float("-inf"))
        pick = torch.topk(key, size).indices
        chosen[pick] = True
        picked.append(pick)
    return torch.cat(picked)


def jest_select_per_group(
    policy: Policy,
    actor_logits: torch.Tensor | None,
    reference_logits: torch.Tensor | None,
    k: int,
    groups: int,
    chunks: int,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """jest_select within each of `groups` equal consecutive slices of the super-batch (what DDP
    ranks do, each from its own examples: the logits of a slice are its block on the diagonal)."""
    n = len(actor_logits if actor_logits is not None else reference_logits)
    if n % groups or k % groups:
        raise ValueError(f"{n} examples and k={k} must split evenly into {groups} groups")
    size = n // groups

    def block(z, g):
        return z[g * size : (g + 1) * size, g * size : (g + 1) * size] if z is not None else None

    return torch.cat(
        [
            jest_select(policy, block(actor_logits, g), block(reference_logits, g), k // groups, chunks, temperature, generator)
            + g * size
            for g in range(groups)
        ]
    )


def reference_logits(image: torch.Tensor, text: torch.Tensor, scale: float) -> torch.Tensor:
    """The reference's (N, N) logits of a super-batch from its stored features: no reference forward per step."""
    return scale * image @ text.T
