"""What each training step logs: its row of the step log (losses, lr, the pathology mix of the kept batch, summed
over ranks) and the run's count of kept rows per label."""

from __future__ import annotations

import numpy as np
import torch

from winnow.datasets.stream import Draw
from winnow.method.checkpoints import TrainState, gathered


def count_classes(state: TrainState, kept: Draw, world: int) -> None:
    """Add the kept batch's rows per label (by weight under soft selection; over every rank) to the run's count: the
    class mix beside the pathology mix, so a report can tell cleaning labels from rebalancing classes."""
    if kept.labels is None:
        return
    labelled = kept.labels >= 0
    weight = kept.weights.double().cpu().numpy()[labelled] if kept.weights is not None else None
    counts = np.bincount(kept.labels[labelled], weights=weight) if labelled.any() else np.zeros(0)
    for part in gathered(counts, world)[1:] if world > 1 else ():
        counts = np.pad(counts, (0, max(0, len(part) - len(counts)))) + np.pad(part, (0, max(0, len(counts) - len(part))))
    total = np.pad(np.asarray(state.kept_classes, dtype=np.float64), (0, max(0, len(counts) - len(state.kept_classes))))
    total[: len(counts)] += counts
    state.kept_classes = total.tolist()


def log_row(step: int, lr: float, loss: float, actor_loss: float | None, kept: Draw, kinds, world: int) -> dict:
    """The step's log row: loss (mean over ranks; the actor's too when there is one), lr, and the share
    of each pathology in the kept batch."""
    kinds = list(kinds)
    weight = kept.weights.double().cpu().numpy() if kept.weights is not None else None  # soft selection: the mix by weight
    counts = (
        []
        if kept.pathology is None
        else [float(np.sum(kept.pathology == k)) if weight is None else float(weight[kept.pathology == k].sum()) for k in kinds]
    )
    actor = [actor_loss / world] if actor_loss is not None else []
    logged = _summed([loss / world, len(kept.ids) if weight is None else float(weight.sum())] + actor + counts, world)
    row = {"step": step, "loss": round(logged[0], 5), "lr": lr}
    if actor:
        row["actor_loss"] = round(logged[2], 5)
    row.update({f"selected_{k}": c / logged[1] for k, c in zip(kinds, logged[2 + len(actor) :], strict=False)})
    return row


def _summed(values: list[float], world: int) -> list[float]:
    """Sum over ranks of a few numbers for the step log (loss, kept count, pathology counts)."""
    if world == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64)
    torch.distributed.all_reduce(t)
    return t.tolist()
