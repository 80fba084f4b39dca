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
from winnow.datasets.contract import Split
from winnow.datasets.stream import Draw, InMemory, ShardStream
from winnow.errors import CheckpointError, DataError, MissingInput, StaleInput, TrainingDiverged
from winnow.files import atomic_path
from winnow.method.devices import autocast, rank_and_world
from winnow.method.losses import contrastive_logits, per_example_loss
from winnow.method.selection import POLICIES, jest_select_per_group, select_per_group

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
    seconds: float = 0.0  # training time, summed over runs (a resumed run adds to it); evaluation not included
    clock: list[list[float]] = field(default_factory=list)  # [step, seconds so far] at each evaluation: time to a target


class Online:
    """A model trained in the loop, with its own optimiser: the learner, or the actor beside it.
    Under torchrun its forward runs through DDP, so its gradients are averaged over ranks."""

    def __init__(self, model: nn.Module, opt: OptimConfig, world: int):
        device = next(model.parameters()).device
        self.model = model
        self.net = (
            torch.nn.parallel.DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
            if world > 1
            else model
        )
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=opt.lr, weight_decay=opt.weight_decay)

    def losses(self, batch: Draw, loss_fn: Callable, precision: str) -> torch.Tensor:
        """Per-example losses of a batch, no gradient (how the actor scores a super-batch)."""
        with torch.no_grad(), autocast(batch.images.device, precision):
            return loss_fn(self.model, batch.images, batch.targets).float().cpu()

    def logits(self, batch: Draw, precision: str) -> torch.Tensor:
        """The (N, N) image-text logits of a contrastive batch, no gradient (how the actor scores for JEST)."""
        with torch.no_grad(), autocast(batch.images.device, precision):
            return contrastive_logits(self.model, batch.images, batch.targets).float().cpu()

    def step(self, batch: Draw, loss_fn: Callable, lr: float, precision: str, what: str, step: int) -> float:
        """One optimiser step on the batch's mean loss; returns that loss."""
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        with autocast(batch.images.device, precision):
            loss = loss_fn(self.net, batch.images, batch.targets).float().mean()
        if not torch.isfinite(loss):
            raise TrainingDiverged(f"{what}: loss is {loss.item()} at step {step} (lr {lr:.2e}); lower the learning rate")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss.item()


ACTOR_DATA = ("kept", "super_batch")  # what the actor trains on each step: the learner's batch, or all it scored


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
    jest_chunks: int = 1,
    reference_loss: torch.Tensor | None = None,
    reference_embeddings: tuple[torch.Tensor, torch.Tensor, float] | None = None,
    actor: nn.Module | None = None,
    actor_trains_on: str = "kept",
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

    `data` is a sampler (winnow.stream), or a Split to hold in memory with its targets (labels, or caption
    tokens for CLIP; default data.labels) and pathology indexed by row. reference_loss is indexed by example
    id. selection "jest" (contrastive) keeps the batch jointly in `jest_chunks` chunks
    (selection.jest_select) from the actor's logits over the super-batch and the reference's, rebuilt from
    `reference_embeddings` (image and text features indexed by example id, and the logit scale). `actor` is
    the small online model whose loss scores the super-batch for policies that read an online loss; it
    trains alongside the learner with its own optimiser (same schedule) on the kept batch or the whole
    super-batch (`actor_trains_on`). None: the learner scores itself. loss_fn(model, images, targets) gives
    per-example losses. `meta` (model name, classes...) is stored in the checkpoint so that later stages can
    rebuild the model from it. pathology is counted in each kept batch for the log, never read by selection.
    on_batch(step, ids) sees the example ids each step trained on (audits, tests). `inputs` identifies what
    the run reads (its stage's lineage key: data, params, code); it is stored in the checkpoint, and a
    checkpoint with other inputs is never resumed from.

    Under torchrun (a process group is initialised) the learner and the actor are wrapped in DDP;
    each rank draws its share of the super-batch and keeps its share of the batch, chosen from its
    own examples (no communication for selection); gradients are averaged by DDP as usual. One
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
    jest = rule.selects and selection == "jest"
    if rule.reference_loss and (reference_embeddings if jest else reference_loss) is None:
        what = "embeddings (selection jest)" if jest else "losses"
        raise ValueError(f"policy {policy!r} needs reference {what} for every training example")
    if actor_trains_on not in ACTOR_DATA:
        raise ValueError(f"actor_trains_on must be one of {ACTOR_DATA}, got {actor_trains_on!r}")
    actor = actor if rule.actor_loss else None  # only policies that read an online loss pay for an actor
    fingerprint = json.dumps(
        {
            "opt": opt.model_dump(exclude={"policies"}),
            "policy": policy,
            "keep_fraction": keep_fraction,
            "selection": selection,
            "temperature": temperature,
            **({"jest_chunks": jest_chunks} if jest else {}),
            "seed": seed,
            "n": sampler.size,
            "sampler": type(sampler).__name__,
            "world": world,
            "groups": groups,
            "inputs": inputs,
            **({"actor": _signature(actor), "actor_trains_on": actor_trains_on} if actor is not None else {}),
        },
        sort_keys=True,
        default=str,
    )  # a checkpoint resumes only into the very same run
    learner = Online(model, opt, world)
    online = Online(actor, opt, world) if actor is not None else None
    torch_gen = torch.Generator().manual_seed(seed + 7919 * rank)  # selection's own random stream (softmax sampling)
    state = _resume(checkpoint_path, fingerprint, learner, online, sampler, torch_gen, desc, rank, opt.steps)
    finished_before = state.step >= opt.steps

    def checkpoint():
        samplers, generators = _gathered(sampler.state(), world), _gathered(torch_gen.get_state(), world)
        if checkpoint_path is not None and rank == 0:
            atomic_save(
                {
                    "model": model.state_dict(),
                    "optimizer": learner.optimizer.state_dict(),
                    **(
                        {"actor": actor.state_dict(), "actor_optimizer": online.optimizer.state_dict()}
                        if online is not None
                        else {}
                    ),
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
    if actor is not None:
        actor.train()
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
        # this step's learning rate (learner and actor alike): linear warm-up, then cosine decay
        lr = lr_at(step, opt.steps, opt.lr, opt.warmup_steps)

        # draw a super-batch and keep the batch the policy chooses (uniform: the draw is the batch)
        drawn = sampler.draw(super_batch)
        drawn = Draw(drawn.ids, drawn.images.to(device), drawn.targets.to(device), drawn.pathology)
        kept = drawn
        if jest:
            scored = (online or learner).logits(drawn, precision) if rule.actor_loss else None
            reference = _reference_logits(reference_embeddings, drawn.ids, desc) if rule.reference_loss else None
            keep = jest_select_per_group(rule, scored, reference, batch // world, groups, jest_chunks, temperature, torch_gen)
            kept = _kept(drawn, keep)
        elif rule.selects:
            scored = (online or learner).losses(drawn, loss_fn, precision) if rule.actor_loss else None
            kept = _select(rule, drawn, scored, reference_loss, batch // world, groups, selection, temperature, torch_gen, desc)

        # one optimiser step of the learner on the kept batch, and of the actor on what it trains on
        loss = learner.step(kept, loss_fn, lr, precision, desc, step)
        actor_loss = (
            online.step(kept if actor_trains_on == "kept" else drawn, loss_fn, lr, precision, f"{desc} (actor)", step)
            if online is not None
            else None
        )
        if on_batch is not None:
            on_batch(step + 1, kept.ids)

        # log the step (summed over ranks), evaluate and checkpoint on their schedules
        state.step = step = step + 1
        state.seconds += time.perf_counter() - started
        row = _log_row(step, lr, loss, actor_loss, kept, sampler.kinds, world)
        state.steps_log.append(row)
        if evaluate is not None and (step % eval_every == 0 or step == opt.steps) and rank == 0:
            metrics = evaluate(model)
            model.train()
            state.eval_log.append({"step": step, "examples_seen": step * batch, **metrics})
            state.clock.append([step, state.seconds])
            bar.set_postfix(loss=f"{row['loss']:.3f}", **{k: f"{v:.3f}" for k, v in metrics.items()})
        if step % checkpoint_every == 0 or step == opt.steps:
            checkpoint()
        bar.update(1)
        if on_step is not None:
            on_step(step)
    bar.close()
    if not finished_before:  # a run that was already finished is left as it was: later stages are keyed on its bytes
        checkpoint()
    out = {"model": model.state_dict(), **dataclasses.asdict(state), "complete": True}
    if actor is not None:
        out["actor"] = actor.state_dict()
    return out


def _signature(model: nn.Module) -> str:
    """Which architecture a model is (class and parameter shapes), for the checkpoint fingerprint."""
    shapes = ",".join("x".join(map(str, p.shape)) for p in model.parameters())
    return f"{type(model).__name__}:{hashlib.sha256(shapes.encode()).hexdigest()[:16]}"


def _check_sizes(batch: int, super_batch: int, examples: int, world: int, desc: str) -> None:
    if batch % world or super_batch % world:
        raise ValueError(f"batch {batch} and super-batch {super_batch} must divide evenly over {world} ranks")
    if super_batch > examples:
        what = (
            f"batch_size ({batch})" if super_batch == batch else f"the super-batch of {super_batch} (batch_size / keep_fraction)"
        )
        raise DataError(f"{desc}: {what} is larger than the {examples} examples it trains on; lower it or add data")


def _resume(
    path, fingerprint: str, learner: Online, actor: Online | None, sampler, torch_gen, desc: str, rank: int, steps: int
) -> TrainState:
    """The state to start from: the checkpoint's, restored into the learner (and actor), their optimisers,
    the sampler and the RNG, when it was written by this very run (same fingerprint); else a fresh start."""
    ckpt = _resumable(path, desc, rank)
    if ckpt is None:
        return TrainState()
    if ckpt.get("fingerprint") != fingerprint:
        if rank == 0:
            log.warning("%s: %s was written with other data, settings or code; starting afresh", desc, path)
        return TrainState()
    learner.model.load_state_dict(ckpt["model"])
    learner.optimizer.load_state_dict(ckpt["optimizer"])
    if actor is not None:
        actor.model.load_state_dict(ckpt["actor"])
        actor.optimizer.load_state_dict(ckpt["actor_optimizer"])
    sampler.restore(ckpt["sampler"][rank])
    torch_gen.set_state(ckpt["torch_rng"][rank])
    state = TrainState(**{f.name: ckpt[f.name] for f in dataclasses.fields(TrainState) if f.name in ckpt})
    if state.step < steps and rank == 0:
        log.info("%s: resuming from step %d of %d (%s)", desc, state.step, steps, path)
    return state


def _select(
    rule,
    drawn: Draw,
    online_loss: torch.Tensor | None,
    reference_loss: torch.Tensor | None,
    k: int,
    groups: int,
    method: str,
    temperature: float,
    generator,
    desc: str,
) -> Draw:
    """Keep k of the super-batch by the policy's scores: from the online loss (the actor's, or the
    learner's own) and the reference's, looked up by example id."""
    ref = reference_loss[torch.from_numpy(drawn.ids)] if rule.reference_loss else None
    if ref is not None and torch.isnan(ref).any():
        raise StaleInput(
            f"{desc}: no reference loss for example id {drawn.ids[torch.isnan(ref).numpy()][0]}; "
            "rerun `winnow score` on this pool"
        )
    return _kept(drawn, select_per_group(rule.scores(online_loss, ref), k, groups, method, temperature, generator))


def _kept(drawn: Draw, keep: torch.Tensor) -> Draw:
    """The rows `keep` (indices into the super-batch) of a draw."""
    rows, index = keep.numpy(), keep.to(drawn.images.device)
    return Draw(
        drawn.ids[rows], drawn.images[index], drawn.targets[index], drawn.pathology[rows] if drawn.pathology is not None else None
    )


def reference_logits(image: torch.Tensor, text: torch.Tensor, scale: float) -> torch.Tensor:
    """The reference's (N, N) logits of a super-batch from its stored features: no reference forward per step."""
    return scale * image @ text.T


def _reference_logits(embeddings: tuple[torch.Tensor, torch.Tensor, float], ids: np.ndarray, desc: str) -> torch.Tensor:
    image, text, scale = embeddings
    index = torch.from_numpy(ids)
    image, text = image[index], text[index]
    if torch.isnan(image).any():
        raise StaleInput(
            f"{desc}: no reference embedding for example id {ids[torch.isnan(image).any(1).numpy()][0]}; "
            "rerun `winnow score` on this pool"
        )
    return reference_logits(image, text, scale)


def _log_row(step: int, lr: float, loss: float, actor_loss: float | None, kept: Draw, kinds, world: int) -> dict:
    """The step's log row: loss (mean over ranks; the actor's too when there is one), lr, and the share
    of each pathology in the kept batch."""
    kinds = list(kinds)
    counts = [float(np.sum(kept.pathology == k)) for k in kinds] if kept.pathology is not None else []
    actor = [actor_loss / world] if actor_loss is not None else []
    logged = _summed([loss / world, len(kept.ids)] + actor + counts, world)
    row = {"step": step, "loss": round(logged[0], 5), "lr": lr}
    if actor:
        row["actor_loss"] = round(logged[2], 5)
    row.update({f"selected_{k}": c / logged[1] for k, c in zip(kinds, logged[2 + len(actor) :], strict=False)})
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
