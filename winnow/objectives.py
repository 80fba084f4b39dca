"""What differs between the two objectives, as plain functions: the stages call these.

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

from models import CLASSIFIERS, CLIPS, build_classifier, build_clip, clip_tokenizer

from winnow.data import Split, decode_table, read_shard
from winnow.evaluation import accuracy, class_embeddings, encode, probe_task, retrieval_recall, zero_shot_accuracy
from winnow.losses import per_example_contrastive, per_example_loss

# Zero-shot prompts: several templates, averaged per class (as CLIP does).
PROMPTS = ("a photo of a {}.", "a {}.", "there is a {}.", "a small {}.", "a large {}.")


@dataclass(frozen=True)
class Objective:
    name: str
    metric: str  # the target metric in the eval log: what "reaches uniform's final value" is about
    noise: str  # the pathology that hurts this objective, reported as its fraction selected
    headline: str  # the key of evaluate_model's main held-out metric
    models: tuple[str, ...]  # model names it can build
    loss: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


OBJECTIVES = {
    "classification": Objective("classification", "accuracy", "noisy_label", "test_accuracy", tuple(CLASSIFIERS), per_example_loss),
    "contrastive": Objective("contrastive", "zero_shot_accuracy", "mismatched_caption", "zero_shot_accuracy", tuple(CLIPS), per_example_contrastive),
}


def build_model(objective: str, name: str, num_classes: int, image_size: int) -> nn.Module:
    return build_clip(name) if objective == "contrastive" else build_classifier(name, num_classes, image_size)


def usable(objective: str, split: Split) -> Split:
    """The rows this objective can train on; the others are listed in split.skipped with why."""
    if objective == "contrastive":
        captions = split.columns["caption"]
        bad = np.array([c is None or not str(c).strip() for c in captions], dtype=bool)
        reason = "empty caption"
    else:
        bad = split.labels < 0
        reason = "no label"
    if not bad.any():
        return split
    kept = split.subset(np.flatnonzero(~bad))
    kept.skipped = split.skipped + [{"file": "", "id": int(i), "reason": reason} for i in split.ids[bad]]
    return kept


def decode_shard(objective: str, model_name: str, path: Path, size: int, num_classes: int | None,
                 metadata: tuple[str, ...] = ("caption", "pathology")) -> tuple[Split, torch.Tensor]:
    """One pool shard decoded: the rows this objective can use and their targets; split.skipped
    lists the others (undecodable image, no label, empty caption) with the file and why."""
    ids, images, labels, meta, skipped = decode_table(read_shard(path), path, size, num_classes, metadata)
    split = usable(objective, Split(ids, images, labels, meta, skipped))
    for s in split.skipped:
        s["file"] = str(path)
    return split, targets(objective, model_name, split)


def targets(objective: str, model_name: str, split: Split) -> torch.Tensor:
    """Labels (N,) for classification; caption tokens (N, context) for CLIP."""
    if objective == "contrastive":
        return clip_tokenizer(model_name)([str(c) for c in split.columns["caption"]])
    return torch.as_tensor(split.labels)


def target_metric(objective: str, model_name: str, test: Split, class_names: list[str]) -> Callable[[nn.Module], dict]:
    """The metric tracked during training, on the held-out test set."""
    if objective == "contrastive":
        tokenizer = clip_tokenizer(model_name)
        return lambda model: {"zero_shot_accuracy": zero_shot_accuracy(
            encode(model, images=test.images), class_embeddings(model, tokenizer, class_names, PROMPTS), test.labels)}
    return lambda model: {"accuracy": accuracy(model, test)}


def evaluate_model(objective: str, model: nn.Module, model_name: str, test: Split, texture: Split, tasks: dict,
                   probe_steps: int, probe_lr: float, seed: int) -> dict:
    """Every transfer metric of one trained model."""
    out = {"texture_probe_accuracy": probe_task(model, texture, probe_steps, probe_lr, seed) if texture is not None else None}
    if objective == "classification":
        out["test_accuracy"] = accuracy(model, test)
        return out
    tokenizer = clip_tokenizer(model_name)
    image_features = encode(model, images=test.images)
    out["zero_shot_accuracy"] = zero_shot_accuracy(image_features, class_embeddings(model, tokenizer, tasks["test"]["class_names"], PROMPTS), test.labels)
    if texture is not None:
        out["texture_zero_shot_accuracy"] = zero_shot_accuracy(
            encode(model, images=texture.images), class_embeddings(model, tokenizer, tasks["texture"]["prompt_names"], PROMPTS), texture.labels)
    out.update(retrieval_recall(image_features, encode(model, tokens=tokenizer([str(c) for c in test.columns["caption"]]))))
    return out
