"""Which examples of a super-batch the learner trains on (docs/DESIGN.md, Selection).

A `Selector` is the whole of the method's choice, usable in any PyTorch loop: draw
`selector.super_batch(B)` examples, score them with a small online model (the actor), and
`selector.keep(ids, B, actor_loss)` returns the rows to train on. The reference's side comes
precomputed, indexed by example id (winnow.scores.store.load_losses): nothing of it runs per step.
docs/selector.md shows it in a loop of twenty lines.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from winnow.errors import StaleInput
from winnow.method.jest import jest_select_per_group, reference_logits
from winnow.method.policies import POLICIES, Policy
from winnow.method.sampling import select_per_group

METHODS = ("topk", "softmax", "jest")  # jest: joint selection in chunks, for a contrastive loss (winnow.method.jest)


@dataclass
class Selector:
    """Keep a fraction of each super-batch by a policy's scores.

    policy: a name in POLICIES (uniform keeps the draw as it is: no super-batch, no scores).
    keep_fraction: rho, the batch over the super-batch. method: topk keeps the highest scores;
    softmax samples without replacement from softmax(score / temperature); jest draws the batch
    jointly in `chunks` chunks from the (N, N) logits of a contrastive batch.
    reference_loss: float (num_examples,), indexed by example id, NaN where unscored (per-example
    methods); reference_embeddings: (image features, text features, logit scale) indexed by id (jest).
    groups: select within this many equal slices of the super-batch, as DDP ranks do each from its own.
    generator: the random stream of softmax and jest sampling (seed it; a checkpoint saves its state).
    """

    policy: str = "uniform"
    keep_fraction: float = 1.0
    method: str = "topk"
    temperature: float = 1.0
    chunks: int = 1
    reference_loss: torch.Tensor | None = None
    reference_embeddings: tuple[torch.Tensor, torch.Tensor, float] | None = None
    groups: int = 1
    generator: torch.Generator = field(default_factory=torch.Generator)

    def __post_init__(self):
        if self.policy not in POLICIES:
            raise ValueError(f"unknown policy {self.policy!r}; choose one of {list(POLICIES)}")
        if self.method not in METHODS:
            raise ValueError(f"unknown selection method {self.method!r}; choose one of {list(METHODS)}")
        if self.spec.reference_loss and (self.reference_embeddings if self.joint else self.reference_loss) is None:
            what = "embeddings (selection jest)" if self.joint else "losses"
            raise ValueError(f"policy {self.policy!r} needs reference {what} for every training example")

    @property
    def spec(self) -> Policy:
        """The policy itself: which losses it reads and how it scores them."""
        return POLICIES[self.policy]

    @property
    def selects(self) -> bool:
        """False for uniform, which trains on its draw as it is."""
        return self.spec.selects

    @property
    def joint(self) -> bool:
        """The batch is chosen jointly (JEST), from the actor's (N, N) logits rather than per-example losses."""
        return self.selects and self.method == "jest"

    @property
    def needs_actor(self) -> bool:
        """Whether keep() reads an online model's scores of the super-batch (its losses, or its logits for jest)."""
        return self.spec.actor_loss

    def super_batch(self, batch_size: int) -> int:
        """How many examples to draw to keep batch_size of them: batch_size / rho (batch_size for uniform)."""
        return int(round(batch_size / self.keep_fraction)) if self.selects else batch_size

    def keep(self, ids: np.ndarray, k: int, actor: torch.Tensor | None = None, name: str = "select") -> torch.Tensor:
        """Indices into the super-batch (whose example ids are `ids`) of the k rows to train on. `actor`: the
        online model's per-example losses (N,), or for jest its (N, N) logits; None for policies that read none."""
        if not self.selects:
            return torch.arange(k)
        if self.needs_actor and actor is None:
            raise ValueError(f"policy {self.policy!r} scores the super-batch with an online model's loss: pass `actor`")
        online = actor if self.needs_actor else None
        if self.joint:
            reference = self._reference_logits(ids, name) if self.spec.reference_loss else None
            return jest_select_per_group(
                self.spec, online, reference, k, self.groups, self.chunks, self.temperature, self.generator
            )
        reference = self._reference_loss(ids, name) if self.spec.reference_loss else None
        scores = self.spec.scores(online, reference)
        return select_per_group(scores, k, self.groups, self.method, self.temperature, self.generator)

    def fingerprint(self) -> dict:
        """What makes two runs' selections the same (a checkpoint resumes only into the very same run)."""
        return {
            "policy": self.policy,
            "keep_fraction": self.keep_fraction,
            "selection": self.method,
            "temperature": self.temperature,
            **({"jest_chunks": self.chunks} if self.joint else {}),
            "groups": self.groups,
        }

    def _reference_loss(self, ids: np.ndarray, name: str) -> torch.Tensor:
        loss = self.reference_loss[torch.from_numpy(ids)]
        if torch.isnan(loss).any():
            raise StaleInput(
                f"{name}: no reference loss for example id {ids[torch.isnan(loss).numpy()][0]}; rerun `winnow score` on this pool"
            )
        return loss

    def _reference_logits(self, ids: np.ndarray, name: str) -> torch.Tensor:
        image, text, scale = self.reference_embeddings
        index = torch.from_numpy(ids)
        image, text = image[index], text[index]
        if torch.isnan(image).any():
            raise StaleInput(
                f"{name}: no reference embedding for example id {ids[torch.isnan(image).any(1).numpy()][0]}; "
                "rerun `winnow score` on this pool"
            )
        return reference_logits(image, text, scale)
