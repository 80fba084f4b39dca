"""Curation rules (docs/DESIGN.md, Curate): plain functions from what the store holds to kept example ids.

The offline twin of online selection, as DataComp's filtering baselines do it: score once, keep a
list of ids. RULES is the one place a rule's name lives: the config's choices and checks, the CLI's
help, the curate stage and the reports read it. A new rule is a function and one entry.

- easy_reference: the reference's lowest losses (what the curated set taught it to expect);
- learnability: a trained checkpoint's loss (the actor of a train run, or its learner) minus the
  reference's, highest first (the paper's online score, frozen at the end of a run);
- clip_score (contrastive): DataComp's CLIP-score filter, the reference's image-text cosine
  similarity, highest first, from the features the store keeps;
- cleanlab (classification): what cleanlab's find_label_issues does not flag on the reference's
  predicted probabilities for the pool (out of sample: it learned from the curated set only).
  The fraction is cleanlab's to decide.

With `balance`, each class keeps the same fraction of its examples (a loss filter otherwise
drains the hard classes first). Unscored examples (undecodable) are never kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np


@dataclass
class RuleInputs:
    """What a rule may read, each indexed by pool example id (NaN, or label -1, where unscored)."""

    reference_loss: np.ndarray
    labels: np.ndarray
    model_loss: np.ndarray | None = None  # needs "model_loss": a finished checkpoint's loss (one pass over the pool)
    similarity: np.ndarray | None = None  # needs "similarity": the reference's image-text cosine, from the store
    probs: np.ndarray | None = None  # needs "probs": the reference's softmax probabilities (one pass over the pool)


@dataclass(frozen=True)
class Rule:
    """A curation rule: what it reads, the score it shows per example (higher: kept first), and for a rule that
    decides for itself (cleanlab) which ids it keeps; a ranking rule keeps the top fraction of its scores."""

    name: str
    describe: str  # how it ranks, in words (reports, CLI help)
    score: Callable[[RuleInputs], np.ndarray]
    needs: str | None = None  # the input it reads beyond the reference's losses: model_loss | similarity | probs
    objective: str | None = None  # the one objective it applies to (None: both)...
    purpose: str = ""  # ... and why, in the error that refuses it for the other
    decide: Callable[[RuleInputs], np.ndarray] | None = None  # keeps its own ids (the fraction is not used)

    @property
    def ranks(self) -> bool:
        return self.decide is None

    def scores(self, inputs: RuleInputs) -> np.ndarray:
        """Each example's score (NaN where it cannot be scored), after checking the rule got what it reads."""
        if self.needs and getattr(inputs, self.needs) is None:
            raise ValueError(f"rule {self.name!r} reads {self.needs} for every pool example; none was given")
        return self.score(inputs)

    def keep(self, inputs: RuleInputs, fraction: float, balance: bool) -> np.ndarray:
        """The kept ids, sorted."""
        if self.decide is not None:
            self.scores(inputs)  # checks what it reads
            return self.decide(inputs)
        return keep_top(self.scores(inputs), fraction, inputs.labels if balance else None)


def keep_top(scores: np.ndarray, fraction: float, groups: np.ndarray | None = None) -> np.ndarray:
    """The ids (indices of `scores`) of the best round(fraction x n) examples, sorted; n is the pool's
    row count, or each group's with `groups` (class-balanced). NaN scores are never kept; ties go to
    the lower id, so the choice is the same on every machine."""
    scores = np.asarray(scores, dtype=np.float64)
    groups = np.zeros(len(scores), dtype=np.int64) if groups is None else np.asarray(groups)
    kept = []
    for group in np.unique(groups):
        members = np.flatnonzero(groups == group)
        quota = int(round(fraction * len(members)))
        members = members[~np.isnan(scores[members])]
        order = np.lexsort((members, -scores[members]))  # by score, highest first; then by id
        kept.append(members[order[:quota]])
    return np.sort(np.concatenate(kept)) if kept else np.zeros(0, dtype=np.int64)


def cleanlab_keep(labels: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """The ids cleanlab's find_label_issues does not flag, given out-of-sample predicted probabilities
    (rows of NaN, or a label of -1: unscored, never kept). Sorted."""
    from cleanlab.filter import find_label_issues

    scored = np.flatnonzero(~np.isnan(probs).any(axis=1) & (labels >= 0))
    if not len(scored):
        return np.zeros(0, dtype=np.int64)
    # n_jobs=1: cleanlab's default opens a fork-based multiprocessing pool, and forking a process that
    # already runs torch and Prefect threads can deadlock a worker on a lock held at fork time (seen hanging)
    issues = find_label_issues(labels[scored], probs[scored].astype(np.float64), n_jobs=1)
    return np.sort(scored[~issues])


def image_text_similarity(image: np.ndarray, text: np.ndarray) -> np.ndarray:
    """Cosine similarity of each pair's stored (L2-normalised) features: DataComp's CLIP score."""
    return np.einsum("nd,nd->n", image, text)


def label_probability(inputs: RuleInputs) -> np.ndarray:
    """The reference's probability of each example's given label (NaN where it has none): what cleanlab's grid shows."""
    shown = np.full(len(inputs.labels), np.nan)
    rows = np.flatnonzero(inputs.labels >= 0)
    shown[rows] = inputs.probs[rows, inputs.labels[rows]]
    return shown


RULES: dict[str, Rule] = {
    rule.name: rule
    for rule in (
        Rule(
            "easy_reference",
            "the reference's lowest losses (score: minus the reference's loss)",
            lambda x: -x.reference_loss,
        ),
        Rule(
            "learnability",
            "the highest learnability (score: the checkpoint's loss minus the reference's)",
            lambda x: x.model_loss - x.reference_loss,
            needs="model_loss",
        ),
        Rule(
            "clip_score",
            "DataComp's CLIP-score filter (score: the reference's image-text cosine similarity)",
            lambda x: x.similarity,
            needs="similarity",
            objective="contrastive",
            purpose="ranks image-text pairs by similarity",
        ),
        Rule(
            "cleanlab",
            "what cleanlab's find_label_issues does not flag on the reference's predicted probabilities "
            "(score: the reference's probability of the given label)",
            label_probability,
            needs="probs",
            objective="classification",
            purpose="finds wrong labels",
            decide=lambda x: cleanlab_keep(x.labels, x.probs),
        ),
    )
}
