"""What differs between the objectives, one Objective each: the stages ask OBJECTIVES[name].

classification (ClassAct): a classifier, labels as targets, cross-entropy, held-out accuracy.
contrastive (ActiveCLIP): an open_clip CLIP model, tokenised captions as targets, the
per-pair contrastive loss, zero-shot accuracy from class-name prompts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from models import CLASSIFIERS, CLIPS, build_classifier, build_clip, clip_context_length, clip_tokenizer
from winnow.datasets.contract import Split, decode_file
from winnow.datasets.tokens import tokenised
from winnow.method.evaluation import accuracy, class_embeddings, encode, probe_task, retrieval_recall, zero_shot_accuracy
from winnow.method.losses import per_example_contrastive, per_example_loss

# Zero-shot prompts: several templates, averaged per class (as CLIP does).
PROMPTS = ("a photo of a {}.", "a {}.", "there is a {}.", "a small {}.", "a large {}.")


@dataclass(frozen=True)
class Objective:
    """What one objective is: its models, targets, loss and metrics. Adding an objective is one
    subclass and one entry in OBJECTIVES; the stages never compare objective names."""

    name: str
    metric: str  # the target metric in the eval log: what "reaches uniform's final value" is about
    noise: str  # the pathology that hurts this objective, reported as its fraction selected
    headline: str  # the key of evaluate_model's main held-out metric
    models: tuple[str, ...]  # model names it can build (params are checked against them)
    loss: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]  # per-example losses (N,)
    joint: bool = False  # an example's loss depends on the rest of its batch (contrastive): JEST selection applies
    ladder: tuple[str, ...] = ()  # --study ladder's learners where bench.ladder is unset: small to large, one family

    def build_model(self, name: str, num_classes: int, image_size: int) -> nn.Module:
        raise NotImplementedError

    def unusable(self, split: Split) -> tuple[np.ndarray, str]:
        """Which rows it cannot train on (bool (N,)), and why."""
        raise NotImplementedError

    def targets(self, model_name: str, split: Split) -> torch.Tensor:
        raise NotImplementedError

    def target_metric(self, model_name: str, test: Split, class_names: list[str]) -> Callable[[nn.Module], dict]:
        """The metric tracked during training, on the held-out test set."""
        raise NotImplementedError

    def evaluate_model(
        self,
        model: nn.Module,
        model_name: str,
        test: Split,
        transfer: dict[str, Split],
        tasks: dict,
        probe_steps: int,
        probe_lr: float,
        seed: int,
    ) -> dict:
        """Every transfer metric of one trained model."""
        raise NotImplementedError

    def shares_targets(self, model_a: str, model_b: str) -> bool:
        """Whether two models read the same targets tensor (the actor scores the learner's batches)."""
        return True

    def usable(self, split: Split) -> Split:
        """The rows this objective can train on; the others are listed in split.skipped with why."""
        bad, reason = self.unusable(split)
        if not bad.any():
            return split
        kept = split.subset(np.flatnonzero(~bad))
        kept.skipped = split.skipped + [{"file": "", "id": int(i), "reason": reason} for i in split.ids[bad]]
        return kept


def _probe(model, transfer, probe_steps, probe_lr, seed) -> dict:
    """<task>_probe_accuracy for every transfer task (eval/<task>/ with train and test folds)."""
    return {f"{name}_probe_accuracy": probe_task(model, task, probe_steps, probe_lr, seed) for name, task in transfer.items()}


class Classification(Objective):
    """ClassAct: a classifier, labels as targets, cross-entropy, held-out accuracy."""

    def build_model(self, name, num_classes, image_size):
        return build_classifier(name, num_classes, image_size)

    def unusable(self, split):
        return split.labels < 0, "no label"

    def targets(self, model_name, split):
        return torch.as_tensor(split.labels)

    def target_metric(self, model_name, test, class_names):
        return lambda model: {"accuracy": accuracy(model, test)}

    def evaluate_model(self, model, model_name, test, transfer, tasks, probe_steps, probe_lr, seed):
        return {**_probe(model, transfer, probe_steps, probe_lr, seed), "test_accuracy": accuracy(model, test)}


class Contrastive(Objective):
    """ActiveCLIP: an open_clip CLIP model, tokenised captions as targets, the per-pair contrastive loss,
    zero-shot accuracy from class-name prompts."""

    def build_model(self, name, num_classes, image_size):
        return build_clip(name, image_size)

    def unusable(self, split):
        return np.array([c is None or not str(c).strip() for c in split.columns["caption"]], dtype=bool), "empty caption"

    def targets(self, model_name, split):
        return tokenised(clip_tokenizer(model_name), [str(c) for c in split.columns["caption"]])

    def shares_targets(self, model_a, model_b):
        return clip_context_length(model_a) == clip_context_length(model_b)

    def target_metric(self, model_name, test, class_names):
        tokenizer = clip_tokenizer(model_name)
        return lambda model: {
            "zero_shot_accuracy": zero_shot_accuracy(
                encode(model, images=test.images), class_embeddings(model, tokenizer, class_names, PROMPTS), test.labels
            )
        }

    def evaluate_model(self, model, model_name, test, transfer, tasks, probe_steps, probe_lr, seed):
        out = _probe(model, transfer, probe_steps, probe_lr, seed)
        tokenizer = clip_tokenizer(model_name)
        image_features = encode(model, images=test.images)
        out["zero_shot_accuracy"] = zero_shot_accuracy(
            image_features, class_embeddings(model, tokenizer, tasks["test"]["class_names"], PROMPTS), test.labels
        )
        for name, task in transfer.items():  # zero-shot from the task's prompt names ("class 3" says nothing: none)
            names = tasks[name].get("prompt_names")
            if not names:
                continue
            out[f"{name}_zero_shot_accuracy"] = zero_shot_accuracy(
                encode(model, images=task.images), class_embeddings(model, tokenizer, names, PROMPTS), task.labels
            )
        captions = tokenised(tokenizer, [str(c) for c in test.columns["caption"]])
        out.update(retrieval_recall(image_features, encode(model, tokens=captions)))
        return out


OBJECTIVES: dict[str, Objective] = {
    o.name: o
    for o in (
        Classification(
            "classification",
            "accuracy",
            "noisy_label",
            "test_accuracy",
            tuple(CLASSIFIERS),
            per_example_loss,
            ladder=("cnn-small", "cnn-medium", "cnn-base"),
        ),
        Contrastive(
            "contrastive",
            "zero_shot_accuracy",
            "mismatched_caption",
            "zero_shot_accuracy",
            tuple(CLIPS),
            per_example_contrastive,
            joint=True,
            ladder=("clip-nano", "clip-tiny", "clip-small"),
        ),
    )
}


def decode_shard(
    objective: str,
    model_name: str,
    path: Path,
    size: int,
    num_classes: int | None,
    metadata: tuple[str, ...] = ("caption", "pathology"),
    fit: str = "squash",
) -> tuple[Split, torch.Tensor]:
    """One pool shard decoded: the rows this objective can use and their targets; split.skipped
    lists the others (undecodable image, no label, empty caption) with the file and why."""
    ids, images, labels, meta, skipped = decode_file(path, size, num_classes, metadata, fit)
    split = OBJECTIVES[objective].usable(Split(ids, images, labels, meta, skipped))
    for s in split.skipped:
        s["file"] = str(path)
    return split, OBJECTIVES[objective].targets(model_name, split)
