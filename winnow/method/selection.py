"""Which examples of a super-batch the learner trains on (docs/DESIGN.md, Selection).

Plain functions over tensors: a policy turns losses into scores, `select` keeps k.
The online loss a policy reads is the actor's: a small model trained alongside the
learner (train.actor), or the learner itself (train.actor: learner, the RHO-LOSS set-up,
whose scoring forward costs as much as the learner's).

`jest_select` is JEST's joint selection (Evans et al. 2024) for the contrastive loss, where
an example's loss depends on the rest of its batch: the batch is drawn in chunks, each later
chunk scored conditionally on the examples already chosen (`conditional_losses`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F


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
        return torch.topk(scores.double() / temperature + _gumbel(len(scores), generator), k).indices
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


def _gumbel(n: int, generator: torch.Generator | None) -> torch.Tensor:
    """n Gumbel(0, 1) draws: adding them to scores / T and keeping the top k samples k without
    replacement from softmax(scores / T)."""
    u = torch.rand(n, generator=generator, dtype=torch.float64).clamp_(1e-12, 1 - 1e-12)
    return -torch.log(-torch.log(u))


# ---------------------------------------------------------------- JEST: joint selection for the contrastive loss


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
    rule: Policy,
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
        return rule.scores(
            of(actor_logits) if rule.actor_loss else None, of(reference_logits) if rule.reference_loss else None
        ).double()

    chosen = torch.zeros(n, dtype=torch.bool)
    picked = []
    for i, size in enumerate(len(c) for c in torch.arange(k).tensor_split(chunks)):
        score = scores(pair_losses) if i == 0 else scores(lambda z: conditional_losses(z, chosen))
        key = (score / temperature + _gumbel(n, generator)).masked_fill(chosen, float("-inf"))
        pick = torch.topk(key, size).indices
        chosen[pick] = True
        picked.append(pick)
    return torch.cat(picked)


def jest_select_per_group(
    rule: Policy,
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
            jest_select(rule, block(actor_logits, g), block(reference_logits, g), k // groups, chunks, temperature, generator)
            + g * size
            for g in range(groups)
        ]
    )
