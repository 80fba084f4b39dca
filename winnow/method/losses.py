"""Per-example losses: the quantity every policy ranks examples by."""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn

from winnow.datasets.contract import to_input


@contextlib.contextmanager
def eval_mode(model: nn.Module):
    """Run in eval mode without gradients, then put the model back in the mode it was in."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield model
    finally:
        model.train(was_training)


def per_example_loss(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of each example, shape (N,), in nats. `images` are uint8 (N,3,H,W)."""
    return F.cross_entropy(model(to_input(images, model)), labels, reduction="none")


def score_examples(
    model: nn.Module, images: torch.Tensor, targets: torch.Tensor, batch_size: int = 128, loss_fn=per_example_loss
) -> torch.Tensor:
    """Per-example loss without gradient, in batches of batch_size (for CLIP, the batch is the
    set of pairs each loss is contrasted against); the model is put in eval mode."""
    device = next(model.parameters()).device
    with eval_mode(model):
        out = [
            loss_fn(model, images[i : i + batch_size].to(device), targets[i : i + batch_size].to(device)).float().cpu()
            for i in range(0, len(images), batch_size)
        ]
    return torch.cat(out) if out else torch.zeros(0)


def contrastive_losses(image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """Per-pair CLIP loss, shape (N,): the mean of pair i's image-to-text and text-to-image
    cross-entropies against the other pairs of the same batch. Its mean is open_clip's ClipLoss.

    Features must be L2-normalised; logit_scale is the already-exponentiated temperature.
    """
    logits = logit_scale * image_features @ text_features.T
    target = torch.arange(len(logits), device=logits.device)
    return (F.cross_entropy(logits, target, reduction="none") + F.cross_entropy(logits.T, target, reduction="none")) / 2


def contrastive_features(model: nn.Module, images: torch.Tensor, tokens: torch.Tensor):
    """L2-normalised image and text features (float32) and the exponentiated logit scale.
    Through the model's forward (not encode_*), so that a DDP wrapper sees the call."""
    image_features, text_features, logit_scale = model(to_input(images, model), tokens)[:3]
    return image_features.float(), text_features.float(), logit_scale.float()


def per_example_contrastive(model: nn.Module, images: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Contrastive loss of each pair against the others in this batch (super-batch when scoring)."""
    return contrastive_losses(*contrastive_features(model, images, tokens))


def contrastive_logits(model: nn.Module, images: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """The (N, N) image-text logits of a batch: logit_scale x cosine similarity (what JEST scores)."""
    image_features, text_features, logit_scale = contrastive_features(model, images, tokens)
    return logit_scale * image_features @ text_features.T


def embed_examples(model: nn.Module, images: torch.Tensor, tokens: torch.Tensor, batch_size: int = 128):
    """Per-pair contrastive loss (against its batch of batch_size) and the L2-normalised image and text
    features of every pair, no gradient: what offline scoring stores for JEST. Float32 on the CPU."""
    device = next(model.parameters()).device
    out = []
    with eval_mode(model):
        for i in range(0, len(images), batch_size):
            batch, targets = images[i : i + batch_size].to(device), tokens[i : i + batch_size].to(device)
            image, text, scale = contrastive_features(model, batch, targets)
            out.append((contrastive_losses(image, text, scale).cpu(), image.cpu(), text.cpu()))
    if not out:
        return torch.zeros(0), torch.zeros(0, 0), torch.zeros(0, 0)
    return tuple(torch.cat(parts) for parts in zip(*out))
