"""The training loop shared by the reference model and the learner.

One function, top to bottom: draw a super-batch, score it, keep a batch, step,
log, evaluate, checkpoint. The reference is the same loop with policy "uniform"
on the curated set. A checkpoint holds model, optimiser, RNG states and the log,
so a killed run resumes where it stopped and ends with the same weights.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from winnow.config import OptimConfig
from winnow.data import Split
from winnow.losses import per_example_loss
from winnow.selection import NEEDS_LEARNER_LOSS, NEEDS_REFERENCE_LOSS, policy_scores, select

log = logging.getLogger("winnow")


def lr_at(step: int, steps: int, lr: float, warmup: int) -> float:
    """Linear warm-up, then cosine decay to zero at the last step."""
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return lr * 0.5 * (1.0 + math.cos(math.pi * progress))


def state_hash(model: nn.Module) -> str:
    """Content hash of a model's weights: what a scorer in the store is keyed on."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def atomic_save(obj, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | Path) -> dict:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no checkpoint here; run the stage that writes it first")
    return torch.load(path, map_location="cpu", weights_only=False)


def write_csv(rows: list[dict], path: Path) -> None:
    if not rows:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fields = list(dict.fromkeys(k for row in rows for k in row))
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


def train(
    model: nn.Module,
    data: Split,
    opt: OptimConfig,
    *,
    seed: int,
    policy: str = "uniform",
    keep_fraction: float = 1.0,
    selection: str = "topk",
    temperature: float = 1.0,
    reference_loss: torch.Tensor | None = None,
    targets: torch.Tensor | None = None,
    loss_fn: Callable = per_example_loss,
    evaluate: Callable[[nn.Module], dict] | None = None,
    eval_every: int = 100,
    checkpoint_path: Path | None = None,
    checkpoint_every: int = 500,
    pathology: np.ndarray | None = None,
    meta: dict | None = None,
    on_step: Callable[[int], None] | None = None,
    desc: str = "train",
) -> dict:
    """Train `model` on `data` for opt.steps steps; returns the checkpoint dict (with the logs).

    targets (labels, or caption tokens for CLIP; default data.labels) and reference_loss (float)
    are indexed by row of `data`; loss_fn(model, images, targets) gives per-example losses. `meta` (model name, classes...) is
    stored in the checkpoint so that later stages can rebuild the model from it alone.
    pathology (strings per row, analysis only) is counted in each kept batch, never read by selection.
    """
    device = next(model.parameters()).device
    batch = opt.batch_size
    super_batch = batch if policy == "uniform" else int(round(batch / keep_fraction))
    if super_batch > len(data):
        raise ValueError(f"super-batch of {super_batch} is larger than the {len(data)} training examples")
    if NEEDS_REFERENCE_LOSS[policy] and reference_loss is None:
        raise ValueError(f"policy {policy!r} needs reference losses for every training example")
    targets = torch.as_tensor(data.labels) if targets is None else targets
    kinds, codes = np.unique(pathology, return_inverse=True) if pathology is not None else (np.array([]), None)
    fingerprint = json.dumps({"opt": dataclasses.asdict(opt), "policy": policy, "keep_fraction": keep_fraction, "selection": selection, "temperature": temperature,
                              "seed": seed, "n": len(data)}, sort_keys=True, default=str)

    optimizer = torch.optim.AdamW(model.parameters(), lr=opt.lr, weight_decay=opt.weight_decay)
    rng = np.random.default_rng(seed)
    torch_gen = torch.Generator().manual_seed(seed)
    state = {"step": 0, "steps_log": [], "eval_log": [], "seconds": 0.0}
    if checkpoint_path is not None and Path(checkpoint_path).exists():
        ckpt = load_checkpoint(checkpoint_path)
        if ckpt.get("fingerprint") == fingerprint:
            model.load_state_dict(ckpt["model"])
            optimizer.load_state_dict(ckpt["optimizer"])
            rng.bit_generator.state = ckpt["numpy_rng"]
            torch_gen.set_state(ckpt["torch_rng"])
            state = {k: ckpt[k] for k in state}
            if state["step"] < opt.steps:
                log.info("%s: resuming from step %d of %d (%s)", desc, state["step"], opt.steps, checkpoint_path)
        else:
            log.warning("%s: %s was written with other settings; starting afresh", desc, checkpoint_path)

    def checkpoint():
        if checkpoint_path is not None:
            atomic_save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "numpy_rng": rng.bit_generator.state,
                         "torch_rng": torch_gen.get_state(), "fingerprint": fingerprint, "policy": policy,
                         "meta": meta or {}, "complete": state["step"] >= opt.steps, **state}, Path(checkpoint_path))

    model.train()
    bar = tqdm(total=opt.steps, initial=state["step"], desc=desc, unit="step", leave=False, disable=None, mininterval=2.0)
    while state["step"] < opt.steps:
        step, started = state["step"], time.perf_counter()
        lr = lr_at(step, opt.steps, opt.lr, opt.warmup_steps)
        for group in optimizer.param_groups:
            group["lr"] = lr

        rows = torch.from_numpy(rng.choice(len(data), size=super_batch, replace=False))
        images, batch_targets = data.images[rows].to(device), targets[rows].to(device)
        if policy != "uniform":
            learner_loss = None
            if NEEDS_LEARNER_LOSS[policy]:
                with torch.no_grad():
                    learner_loss = loss_fn(model, images, batch_targets).float().cpu()
            ref = reference_loss[rows] if NEEDS_REFERENCE_LOSS[policy] else None
            keep = select(policy_scores(policy, learner_loss, ref), batch, selection, temperature, torch_gen)
            rows, images, batch_targets = rows[keep], images[keep.to(device)], batch_targets[keep.to(device)]

        loss = loss_fn(model, images, batch_targets).mean()
        if not torch.isfinite(loss):
            raise FloatingPointError(f"{desc}: loss is {loss.item()} at step {step} (lr {lr:.2e}); lower the learning rate")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

        state["step"] = step = step + 1
        state["seconds"] += time.perf_counter() - started
        row = {"step": step, "loss": round(loss.item(), 5), "lr": lr}
        if codes is not None:
            counts = np.bincount(codes[rows.numpy()], minlength=len(kinds))
            row.update({f"selected_{k}": c / len(rows) for k, c in zip(kinds, counts)})
        state["steps_log"].append(row)
        if evaluate is not None and (step % eval_every == 0 or step == opt.steps):
            metrics = evaluate(model)
            model.train()
            state["eval_log"].append({"step": step, "examples_seen": step * batch, **metrics})
            bar.set_postfix(loss=f"{loss.item():.3f}", **{k: f"{v:.3f}" for k, v in metrics.items()})
        if step % checkpoint_every == 0 or step == opt.steps:
            checkpoint()
        bar.update(1)
        if on_step is not None:
            on_step(step)
    bar.close()
    checkpoint()
    return {"model": model.state_dict(), **state, "complete": True}
