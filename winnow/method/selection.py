"""Which examples of a super-batch the learner trains on (docs/DESIGN.md, Selection).

A `Selector` is the whole of the method's choice, usable in any PyTorch loop: draw
`selector.super_batch(B)` examples, score them with a small online model (the actor), and
`selector.keep(ids, B, actor_loss)` returns the rows to train on. The reference's side comes
precomputed, indexed by example id (winnow.scores.store.load_losses): nothing of it runs per step.
docs/selector.md shows it in a loop of twenty lines.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np
import torch

from winnow.errors import StaleInput
from winnow.method.jest import jest_select_per_group, reference_logits
from winnow.method.policies import POLICIES, Policy
from winnow.method.sampling import effective_sample_size, select_per_group, soft_weights
from winnow.method.schedules import Schedule

# jest: joint selection in chunks, for a contrastive loss (winnow.method.jest); weighted: the whole draw, weighted
METHODS = ("topk", "softmax", "jest", "weighted")


@dataclass(frozen=True)
class Choice:
    """What a selector chose from a super-batch: the rows to train on, their weights (soft selection; None: equal),
    and what the step log reports of the scores (the plateau alarm: the share with negative learnability)."""

    rows: torch.Tensor
    weights: torch.Tensor | None = None
    logged: dict = field(default_factory=dict)


@dataclass
class Selector:
    """Keep a fraction of each super-batch by a policy's scores.

    policy: a name in POLICIES (uniform keeps the draw as it is: no super-batch, no scores).
    keep_fraction: rho, the batch over the super-batch. method: topk keeps the highest scores;
    softmax samples without replacement from softmax(score / temperature); jest draws the batch
    jointly in `chunks` chunks from the (N, N) logits of a contrastive batch; weighted keeps the whole
    draw (no super-batch: keep_fraction does not apply) weighted by n * softmax(score / temperature).
    schedule: how selection changes over the run (method/schedules.py: anneal to uniform, a floor, a
    relaxing temperature); `at(step, steps)` is the selector of one step.
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
    schedule: Schedule = field(default_factory=Schedule)
    online_reference: bool = False  # the reference's losses come with each super-batch (a refreshed reference), not stored

    def __post_init__(self):
        if self.policy not in POLICIES:
            raise ValueError(f"unknown policy {self.policy!r}; choose one of {list(POLICIES)}")
        if self.method not in METHODS:
            raise ValueError(f"unknown selection method {self.method!r}; choose one of {list(METHODS)}")
        if (
            self.spec.reference_loss
            and not self.online_reference
            and (self.reference_embeddings if self.joint else self.reference_loss) is None
        ):
            what = "embeddings (selection jest)" if self.joint else "losses"
            raise ValueError(f"policy {self.policy!r} needs reference {what} for every training example")
        if self.joint and self.online_reference:
            raise ValueError("a refreshed reference scores per example; jest reads the stored reference embeddings")
        if self.joint and (self.schedule.floor or self.method == "weighted"):
            raise ValueError("a floor is for per-example selection (topk, softmax, weighted), not jest")

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
        """How many examples to draw to keep batch_size of them: batch_size / rho (batch_size for uniform, and for
        weighted selection, which trains on its whole draw)."""
        return int(round(batch_size / self.keep_fraction)) if self.selects and self.method != "weighted" else batch_size

    def at(self, step: int, steps: int) -> Selector:
        """The selector of step `step` of `steps`: uniform once the schedule anneals, its temperature relaxed."""
        if self.schedule.constant or not self.selects:
            return self
        if not self.schedule.selecting(step, steps):
            return _UNIFORM
        return dataclasses.replace(self, temperature=self.schedule.temperature(self.temperature, step, steps))

    def keep(self, ids: np.ndarray, k: int, actor: torch.Tensor | None = None, name: str = "select") -> torch.Tensor:
        """Indices into the super-batch (whose example ids are `ids`) of the k rows to train on. `actor`: the
        online model's per-example losses (N,), or for jest its (N, N) logits; None for policies that read none."""
        return self.choose(ids, k, actor, name).rows

    def choose(
        self,
        ids: np.ndarray,
        k: int,
        actor: torch.Tensor | None = None,
        name: str = "select",
        reference: torch.Tensor | None = None,
    ) -> Choice:
        """keep(), with the kept rows' weights (weighted selection) and what the step log reports of the scores.
        `reference`: the reference's losses of these rows scored online (a refreshed reference), instead of the stored."""
        if not self.selects:
            return Choice(torch.arange(k))
        if self.needs_actor and actor is None:
            raise ValueError(f"policy {self.policy!r} scores the super-batch with an online model's loss: pass `actor`")
        online = actor if self.needs_actor else None
        if self.joint:
            reference = self._reference_logits(ids, name) if self.spec.reference_loss else None
            rows = jest_select_per_group(
                self.spec, online, reference, k, self.groups, self.chunks, self.temperature, self.generator
            )
            return Choice(rows)
        if reference is None and self.spec.reference_loss:
            reference = self._reference_loss(ids, name)
        scores = self.spec.scores(online, reference if self.spec.reference_loss else None)
        logged = {"negative_learnability": float((scores < 0).float().mean())} if self.policy == "learnability" else {}
        if self.method == "weighted":
            weights = soft_weights(scores, self.temperature, self.schedule.floor)
            return Choice(torch.arange(len(scores)), weights, {**logged, "weights_ess": effective_sample_size(weights)})
        floor = self.schedule.floor
        return Choice(
            select_per_group(scores, k, self.groups, self.method, self.temperature, self.generator, floor), None, logged
        )

    def fingerprint(self) -> dict:
        """What makes two runs' selections the same (a checkpoint resumes only into the very same run)."""
        return {
            "policy": self.policy,
            "keep_fraction": self.keep_fraction,
            "selection": self.method,
            "temperature": self.temperature,
            **({"jest_chunks": self.chunks} if self.joint else {}),
            "groups": self.groups,
            **({} if self.schedule.constant else {"schedule": dataclasses.asdict(self.schedule)}),
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


_UNIFORM = Selector()  # what an annealed step trains with: its draw as it is
