"""The training loop shared by the reference model and the learner.

One function, top to bottom: draw a super-batch, score it, keep a batch, step,
log, evaluate, checkpoint. The reference is the same loop with policy "uniform"
on the curated set. A checkpoint holds model, optimiser, RNG states and the log,
so a killed run resumes where it stopped and ends with the same weights.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import pickle
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from winnow.config import OptimConfig
from winnow.data import Split
from winnow.devices import autocast, rank_and_world
from winnow.errors import CheckpointError, DataError, MissingInput, StaleInput, TrainingDiverged
from winnow.files import atomic_path
from winnow.losses import per_example_loss
from winnow.selection import POLICIES, select_per_group
from winnow.stream import Draw, InMemory, ShardStream

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
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def load_checkpoint(path: str | Path) -> dict:
    path = Path(path)
    if not path.exists():
        raise MissingInput(f"{path}: no checkpoint here; run the stage that writes it first")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError) as e:  # a file cut short or overwritten
        raise CheckpointError(
            f"{path}: not a readable checkpoint ({type(e).__name__}: {str(e)[:200]}); "
            f"delete it and rerun the stage that writes it"
        ) from e
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise CheckpointError(f"{path}: not a winnow checkpoint; delete it and rerun the stage that writes it")
    return ckpt


@dataclass
class TrainState:
    """What a run has done so far, saved in every checkpoint beside the weights, the optimiser and each
    rank's sampler and RNG state (which live in their own objects)."""

    step: int = 0
    steps_log: list[dict] = field(default_factory=list)  # one row per step: loss, lr, pathology mix of the kept batch
    eval_log: list[dict] = field(default_factory=list)  # one row per evaluation: step, examples seen, the target metric
    seconds: float = 0.0  # training time, summed over runs (a resumed run adds to it)


def train(
    model: nn.Module,
    data: Split | InMemory | ShardStream,
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
    on_batch: Callable[[int, np.ndarray], None] | None = None,
    groups: int = 1,
    precision: str = "auto",
    desc: str = "train",
    inputs: str | None = None,
) -> dict:
    """Train `model` for opt.steps steps on super-batches from `data`; returns the checkpoint dict (with the logs).

    `data` is a sampler (winnow.stream), or a Split to hold in memory with its targets (labels, or
    caption tokens for CLIP; default data.labels) and pathology indexed by row. reference_loss is
    indexed by example id. loss_fn(model, images, targets) gives per-example losses. `meta` (model
    name, classes...) is stored in the checkpoint so that later stages can rebuild the model from it.
    pathology is counted in each kept batch for the log, never read by selection. on_batch(step, ids)
    sees the example ids each step trained on (audits, tests). `inputs` identifies what the run
    reads (its stage's lineage key: data, params, code); it is stored in the checkpoint, and a
    checkpoint with other inputs is never resumed from.

    Under torchrun (a process group is initialised) the model is wrapped in DDP; each rank
    draws its share of the super-batch and keeps its share of the batch, chosen from its own
    examples (no communication for selection); gradients are averaged by DDP as usual. One
    process with groups=world makes the same choice (selection.select_per_group).
    """
    device = next(model.parameters()).device
    rank, world = rank_and_world()
    rule = POLICIES[policy]
    batch = opt.batch_size
    super_batch = int(round(batch / keep_fraction)) if rule.selects else batch
    sampler = (
        data
        if not isinstance(data, Split)
        else InMemory(data, torch.as_tensor(data.labels) if targets is None else targets, seed, pathology, rank, world)
    )
    _check_sizes(batch, super_batch, sampler.size, world, desc)
    if rule.reference_loss and reference_loss is None:
        raise ValueError(f"policy {policy!r} needs reference losses for every training example")
    fingerprint = json.dumps(
        {
            "opt": opt.model_dump(exclude={"policies"}),
            "policy": policy,
            "keep_fraction": keep_fraction,
            "selection": selection,
            "temperature": temperature,
            "seed": seed,
            "n": sampler.size,
            "sampler": type(sampler).__name__,
            "world": world,
            "groups": groups,
            "inputs": inputs,
        },
        sort_keys=True,
        default=str,
    )  # a checkpoint resumes only into the very same run
    net = (
        torch.nn.parallel.DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
        if world > 1
        else model
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=opt.lr, weight_decay=opt.weight_decay)
    torch_gen = torch.Generator().manual_seed(seed + 7919 * rank)  # selection's own random stream (softmax sampling)
    state = _resume(checkpoint_path, fingerprint, model, optimizer, sampler, torch_gen, desc, rank, opt.steps)

    def checkpoint():
        samplers, generators = _gathered(sampler.state(), world), _gathered(torch_gen.get_state(), world)
        if checkpoint_path is not None and rank == 0:
            atomic_save(
                {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "sampler": samplers,
                    "torch_rng": generators,
                    "fingerprint": fingerprint,
                    "inputs": inputs,
                    "policy": policy,
                    "meta": meta or {},
                    "complete": state.step >= opt.steps,
                    **dataclasses.asdict(state),
                },
                Path(checkpoint_path),
            )

    model.train()
    bar = tqdm(
        total=opt.steps,
        initial=state.step,
        desc=desc,
        unit="step",
        leave=False,
        disable=None if rank == 0 else True,
        mininterval=2.0,
    )
    while state.step < opt.steps:
        step, started = state.step, time.perf_counter()
        # set the learning rate for this step: linear warm-up, then cosine decay
        lr = lr_at(step, opt.steps, opt.lr, opt.warmup_steps)
        for group in optimizer.param_groups:
            group["lr"] = lr

        # draw a super-batch and keep the batch the policy chooses (uniform: the draw is the batch)
        drawn = sampler.draw(super_batch)
        kept = Draw(drawn.ids, drawn.images.to(device), drawn.targets.to(device), drawn.pathology)
        if rule.selects:
            kept = _select(
                rule,
                kept,
                model,
                loss_fn,
                reference_loss,
                batch // world,
                groups,
                selection,
                temperature,
                torch_gen,
                precision,
                desc,
            )

        # one optimiser step on the kept batch
        with autocast(device, precision):
            loss = loss_fn(net, kept.images, kept.targets).float().mean()
        if not torch.isfinite(loss):
            raise TrainingDiverged(f"{desc}: loss is {loss.item()} at step {step} (lr {lr:.2e}); lower the learning rate")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if on_batch is not None:
            on_batch(step + 1, kept.ids)

        # log the step (summed over ranks), evaluate and checkpoint on their schedules
        state.step = step = step + 1
        state.seconds += time.perf_counter() - started
        row = _log_row(step, lr, loss.item(), kept, sampler.kinds, world)
        state.steps_log.append(row)
        if evaluate is not None and (step % eval_every == 0 or step == opt.steps) and rank == 0:
            metrics = evaluate(model)
            model.train()
            state.eval_log.append({"step": step, "examples_seen": step * batch, **metrics})
            bar.set_postfix(loss=f"{row['loss']:.3f}", **{k: f"{v:.3f}" for k, v in metrics.items()})
        if step % checkpoint_every == 0 or step == opt.steps:
            checkpoint()
        bar.update(1)
        if on_step is not None:
            on_step(step)
    bar.close()
    checkpoint()
    return {"model": model.state_dict(), **dataclasses.asdict(state), "complete": True}


def _check_sizes(batch: int, super_batch: int, examples: int, world: int, desc: str) -> None:
    if batch % world or super_batch % world:
        raise ValueError(f"batch {batch} and super-batch {super_batch} must divide evenly over {world} ranks")
    if super_batch > examples:
        what = (
            f"batch_size ({batch})" if super_batch == batch else f"the super-batch of {super_batch} (batch_size / keep_fraction)"
        )
        raise DataError(f"{desc}: {what} is larger than the {examples} examples it trains on; lower it or add data")


def _resume(path, fingerprint: str, model, optimizer, sampler, torch_gen, desc: str, rank: int, steps: int) -> TrainState:
    """The state to start from: the checkpoint's, restored into model, optimiser, sampler and RNG, when it
    was written by this very run (same fingerprint); else a fresh start."""
    ckpt = _resumable(path, desc, rank)
    if ckpt is None:
        return TrainState()
    if ckpt.get("fingerprint") != fingerprint:
        if rank == 0:
            log.warning("%s: %s was written with other data, settings or code; starting afresh", desc, path)
        return TrainState()
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    sampler.restore(ckpt["sampler"][rank])
    torch_gen.set_state(ckpt["torch_rng"][rank])
    state = TrainState(**{f.name: ckpt[f.name] for f in dataclasses.fields(TrainState)})
    if state.step < steps and rank == 0:
        log.info("%s: resuming from step %d of %d (%s)", desc, state.step, steps, path)
    return state


def _select(
    rule,
    drawn: Draw,
    model,
    loss_fn,
    reference_loss,
    k: int,
    groups: int,
    method: str,
    temperature: float,
    generator,
    precision: str,
    desc: str,
) -> Draw:
    """Score the super-batch as the policy says (the learner's loss: a no-grad forward; the reference's:
    looked up by id) and keep k of it."""
    learner_loss = None
    if rule.learner_loss:
        with torch.no_grad(), autocast(drawn.images.device, precision):
            learner_loss = loss_fn(model, drawn.images, drawn.targets).float().cpu()
    ref = reference_loss[torch.from_numpy(drawn.ids)] if rule.reference_loss else None
    if ref is not None and torch.isnan(ref).any():
        raise StaleInput(
            f"{desc}: no reference loss for example id {drawn.ids[torch.isnan(ref).numpy()][0]}; "
            "rerun `winnow score` on this pool"
        )
    keep = select_per_group(rule.scores(learner_loss, ref), k, groups, method, temperature, generator)
    rows, index = keep.numpy(), keep.to(drawn.images.device)
    return Draw(
        drawn.ids[rows], drawn.images[index], drawn.targets[index], drawn.pathology[rows] if drawn.pathology is not None else None
    )


def _log_row(step: int, lr: float, loss: float, kept: Draw, kinds, world: int) -> dict:
    """The step's log row: loss (mean over ranks), lr, and the share of each pathology in the kept batch."""
    kinds = list(kinds)
    counts = [float(np.sum(kept.pathology == k)) for k in kinds] if kept.pathology is not None else []
    logged = _summed([loss / world, len(kept.ids)] + counts, world)
    row = {"step": step, "loss": round(logged[0], 5), "lr": lr}
    row.update({f"selected_{k}": c / logged[1] for k, c in zip(kinds, logged[2:], strict=False)})
    return row


def _resumable(path: Path | None, desc: str, rank: int) -> dict | None:
    """The checkpoint to resume from, if any. One that cannot be read (cut short by a crash or a bad
    copy) is set aside as <name>.corrupt, never deleted, and the run starts afresh."""
    if path is None or not Path(path).exists():
        return None
    try:
        return load_checkpoint(path)
    except CheckpointError as e:
        if rank == 0:
            os.replace(path, Path(path).with_name(Path(path).name + ".corrupt"))
            log.warning("%s: %s; moved aside to %s.corrupt, starting afresh", desc, e, Path(path).name)
        return None


def _gathered(obj, world: int) -> list:
    """obj from every rank, in rank order (a checkpoint holds each rank's sampler and RNG)."""
    if world == 1:
        return [obj]
    out = [None] * world
    torch.distributed.all_gather_object(out, obj)
    return out


def _summed(values: list[float], world: int) -> list[float]:
    """Sum over ranks of a few numbers for the step log (loss, kept count, pathology counts)."""
    if world == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64)
    torch.distributed.all_reduce(t)
    return t.tolist()
