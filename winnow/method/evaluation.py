"""Transfer evaluation: held-out accuracy, and a linear probe on frozen features."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from winnow.datasets.contract import Split, to_input
from winnow.method.losses import eval_mode


def accuracy(model: nn.Module, data: Split, batch_size: int = 250) -> float:
    """Top-1 accuracy of the model's own head on `data`."""
    device = next(model.parameters()).device
    correct = 0
    with eval_mode(model):
        for i in range(0, len(data), batch_size):
            logits = model(to_input(data.images[i : i + batch_size].to(device), model))
            correct += (logits.argmax(1).cpu() == torch.as_tensor(data.labels[i : i + batch_size])).sum().item()
    return correct / max(1, len(data))


def features(model: nn.Module, images: torch.Tensor, batch_size: int = 250) -> torch.Tensor:
    """Frozen image features (a classifier's penultimate layer, CLIP's image tower), float32 (N, D)."""
    device = next(model.parameters()).device
    embed = getattr(model, "encode_image", None) or model.embed  # CLIP towers, or a classifier's penultimate layer
    with eval_mode(model):
        batches = (images[i : i + batch_size].to(device) for i in range(0, len(images), batch_size))
        return torch.cat([embed(to_input(batch, model)).float().cpu() for batch in batches])


def linear_probe(
    train_x: torch.Tensor,
    train_y: np.ndarray,
    test_x: torch.Tensor,
    test_y: np.ndarray,
    steps: int = 300,
    lr: float = 1e-2,
    weight_decay: float = 1e-4,
    seed: int = 0,
) -> float:
    """Fit a logistic-regression head on standardised features (full batch, Adam); test accuracy."""
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    train_x, test_x = (train_x - mean) / std, (test_x - mean) / std
    train_y, test_y = torch.as_tensor(train_y), torch.as_tensor(test_y)
    num_classes = int(max(train_y.max(), test_y.max())) + 1
    gen = torch.Generator().manual_seed(seed)
    head = nn.Linear(train_x.shape[1], num_classes)
    with torch.no_grad():
        head.weight.copy_(torch.randn(head.weight.shape, generator=gen) * 0.01)
        head.bias.zero_()
    opt = torch.optim.Adam(head.parameters(), lr=lr, weight_decay=weight_decay)
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(head(train_x), train_y).backward()
        opt.step()
    with torch.no_grad():
        return (head(test_x).argmax(1) == test_y).float().mean().item()


def probe_task(model: nn.Module, task: Split, steps: int, lr: float, seed: int = 0) -> float:
    """Linear-probe accuracy on a task whose rows carry fold = train | test."""
    fold = task.columns["fold"]
    train_rows, test_rows = np.flatnonzero(fold == "train"), np.flatnonzero(fold == "test")
    x = features(model, task.images)
    return linear_probe(x[train_rows], task.labels[train_rows], x[test_rows], task.labels[test_rows], steps, lr, seed=seed)


def encode(
    model: nn.Module, images: torch.Tensor | None = None, tokens: torch.Tensor | None = None, batch_size: int = 250
) -> torch.Tensor:
    """L2-normalised CLIP embeddings of images or of tokenised texts, float32 (N, D) on the CPU."""
    device = next(model.parameters()).device
    with eval_mode(model):
        if images is not None:
            out = [
                model.encode_image(to_input(images[i : i + batch_size].to(device), model), normalize=True)
                for i in range(0, len(images), batch_size)
            ]
        else:
            out = [
                model.encode_text(tokens[i : i + batch_size].to(device), normalize=True)
                for i in range(0, len(tokens), batch_size)
            ]
    return torch.cat(out).float().cpu()


def class_embeddings(model: nn.Module, tokenizer, class_names: list[str], templates: tuple[str, ...]) -> torch.Tensor:
    """One text embedding per class: the normalised mean over prompt templates."""
    per_template = torch.stack([encode(model, tokens=tokenizer([t.format(c) for c in class_names])) for t in templates])
    return F.normalize(per_template.mean(0), dim=-1)


def zero_shot_accuracy(image_features: torch.Tensor, class_features: torch.Tensor, labels) -> float:
    """Top-1 accuracy of nearest class embedding (cosine), features already normalised."""
    predicted = (image_features @ class_features.T).argmax(1)
    return (predicted == torch.as_tensor(labels)).float().mean().item()


def retrieval_recall(image_features: torch.Tensor, text_features: torch.Tensor, ks=(1, 5, 10)) -> dict:
    """Recall@k both ways for aligned pairs (row i of each is one pair): the fraction of queries
    whose own partner ranks in the top k."""
    similarity = image_features @ text_features.T
    own = similarity.diagonal()
    # rank of the true partner = how many candidates score strictly higher
    image_to_text_rank = (similarity > own[:, None]).sum(1)
    text_to_image_rank = (similarity > own[None, :]).sum(0)
    out = {}
    for k in ks:
        out[f"image_to_text_R@{k}"] = (image_to_text_rank < k).float().mean().item()
        out[f"text_to_image_R@{k}"] = (text_to_image_rank < k).float().mean().item()
    return out


def class_probabilities(model: torch.nn.Module, images: torch.Tensor, batch_size: int) -> torch.Tensor:
    """A classifier's softmax probabilities, no gradient, in batches."""
    device = next(model.parameters()).device
    with eval_mode(model):
        out = [
            torch.softmax(model(to_input(images[i : i + batch_size].to(device), model)).float(), dim=1).cpu()
            for i in range(0, len(images), batch_size)
        ]
    return torch.cat(out) if out else torch.zeros(0, 0)
