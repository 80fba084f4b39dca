"""Per-example losses: the quantity every policy ranks examples by."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from winnow.data import to_input


def per_example_loss(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of each example, shape (N,), in nats. `images` are uint8 (N,3,H,W)."""
    return F.cross_entropy(model(to_input(images)), labels, reduction="none")


@torch.no_grad()
def score_examples(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """Per-example loss without gradient, batched; the model is put in eval mode."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out = [per_example_loss(model, images[i : i + batch_size].to(device), labels[i : i + batch_size].to(device)).float().cpu() for i in range(0, len(images), batch_size)]
    model.train(was_training)
    return torch.cat(out) if out else torch.zeros(0)
