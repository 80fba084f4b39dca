"""The training loop shared by the reference model and the learner.

One function, top to bottom: draw a super-batch, score it, keep a batch, step,
log, evaluate, checkpoint. The reference is the same loop with policy "uniform"
on the curated set. A checkpoint (winnow.method.checkpoints) holds model, optimiser,
RNG states and the log, so a killed run resumes where it stopped and ends with the
same weights.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from winnow.config import ACTOR_DATA, OptimConfig
from winnow.datasets.contract import Split
from winnow.datasets.prefetch import Prefetched
from winnow.datasets.stream import Draw, InMemory, ShardStream
from winnow.errors import DataError, TrainingDiverged
from winnow.method import optim
from winnow.method.checkpoints import (
    CheckpointPlan,
    TrainState,
    atomic_save,
    gathered,
    restored_state,
    resumable,
    signature,
)
from winnow.method.devices import autocast, rank_and_world, to_device
from winnow.method.host_memory import keep_freed_buffers
from winnow.method.losses import contrastive_logits, per_example_loss
from winnow.method.selection import Selector
from winnow.method.step_log import count_classes, log_row

log = logging.getLogger("winnow")


def lr_at(step: int, steps: int, lr: float, warmup: int) -> float:
    """Linear warm-up, then cosine decay to zero at the last step."""
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return lr * 0.5 * (1.0 + math.cos(math.pi * progress))


class Trainee:
    """A model trained in the loop together with its own optimiser: the learner, or the actor beside it.
    Under torchrun its forward runs through DDP, so its gradients are averaged over ranks."""

    def __init__(self, model: nn.Module, opt: OptimConfig, world: int, lazy_rows: bool = True):
        device = next(model.parameters()).device
        self.model = model
        self.net = (
            torch.nn.parallel.DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
            if world > 1
            else model
        )
        # AdamW, foreach, its embedding tables' update kept to the rows that can move (method/optim.py): the dense
        # update's numbers, bit for bit; lazy_rows=False is the dense update itself (what the ledger measures)
        self.optimizer = optim.adamw(model, opt.lr, opt.weight_decay, lazy_rows=lazy_rows)

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
            per_example = loss_fn(self.net, batch.images, batch.targets).float()
        if batch.weights is None:
            loss = per_example.mean()
        else:  # soft selection: the weights average 1, so the step's size is an unweighted one's
            weights = batch.weights.to(per_example.device)
            loss = (per_example * weights).sum() / weights.sum()
        if not torch.isfinite(loss):
            raise TrainingDiverged(f"{what}: loss is {loss.item()} at step {step} (lr {lr:.2e}); lower the learning rate")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss.item()


@dataclass(frozen=True)
class Refresh:
    """The reference refreshed during training (ClassAct-Online): a copy of the trained reference that scores each
    super-batch online (instead of its stored losses) and trains a step each step on a batch of the curated set
    and of the learner's kept rows, so its scores keep up with the learner."""

    model: nn.Module
    curated: InMemory  # the curated set it was trained on
    kept_share: float = 0.5  # of its batch, the share taken from the learner's kept rows (the rest curated)


@dataclass(frozen=True)
class Actor:
    """The small online model whose loss scores each super-batch, and what it trains on each step; with `refresh`,
    the reference's side is scored online too."""

    model: nn.Module
    trains_on: str = "kept"  # kept: the learner's batch | super_batch: everything it scored
    refresh: Refresh | None = None

    def __post_init__(self):
        if self.trains_on not in ACTOR_DATA:
            raise ValueError(f"actor_trains_on must be one of {ACTOR_DATA}, got {self.trains_on!r}")


@dataclass(frozen=True)
class Blend:
    """What a run draws from when a fixed share of every batch is curated rows (upsampled: drawn epoch after epoch)
    beside the pool's: the rest of the batch is what the selector keeps of a super-batch of the rest / keep_fraction
    (a uniform draw of it for the curated_mix baseline). Selection on top of the curated set, not instead of it."""

    pool: InMemory | ShardStream
    curated: InMemory
    share: float

    def rows(self, batch: int, world: int) -> int:
        """Curated rows in a global batch of `batch`: the share, rounded to a multiple of the world size, leaving the
        pool at least one row a rank."""
        return min(int(round(batch * self.share / world)), batch // world - 1) * world


@dataclass(frozen=True)
class Evaluation:
    """The metric tracked during training (model -> {name: value}), and every how many steps."""

    metric: Callable[[nn.Module], dict]
    every: int = 100
    keep_best: str | None = None  # early stopping: keep the weights of the evaluation highest on this metric


def train(
    model: nn.Module,
    data: Split | InMemory | ShardStream | Blend,
    opt: OptimConfig,
    *,
    seed: int,
    selector: Selector | None = None,
    actor: Actor | None = None,
    loss_fn: Callable = per_example_loss,
    evaluation: Evaluation | None = None,
    checkpoint: CheckpointPlan | None = None,
    on_step: Callable[[int, np.ndarray], None] | None = None,
    precision: str = "auto",
    name: str = "train",
) -> dict:
    """Train `model` for opt.steps steps on super-batches from `data`; returns the checkpoint dict (with the logs).

    `data` is a sampler (winnow.datasets.stream), or a Split drawn in memory with its labels as targets.
    `selector` keeps each batch (default: uniform, no super-batch); `actor` is the small online model whose
    loss scores the super-batch for policies that read one, trained alongside the learner with its own
    optimiser (same schedule); without one the learner scores itself. loss_fn(model, images, targets) gives
    per-example losses. on_step(step, ids) sees the example ids each step trained on (audits, tests). On CUDA each
    step's super-batch is drawn during the step before and copied meanwhile (datasets/prefetch.py: the same draws).
    Under torchrun the learner and the actor are wrapped in DDP; each rank draws its share of the super-batch
    and keeps its share of the batch from its own examples (no communication for selection). From a Blend, a fixed
    share of every batch is curated rows and the super-batch is drawn for the rest.
    """
    keep_freed_buffers()  # a step's buffers come back from the heap, not from fresh pages (method/host_memory.py)
    selector = selector or Selector()
    actor = actor if selector.needs_actor else None  # only policies that read an online loss pay for an actor
    run, batch, curated_rows = _setup(model, data, opt, seed, selector, actor, checkpoint or CheckpointPlan(), name)
    device = next(model.parameters()).device
    sampler, online, blend, rank, world = run.sampler, run.actor, run.blend, run.rank, run.world
    state = run.resume(name, opt.steps)
    finished_before = state.step >= opt.steps
    bar = tqdm(total=opt.steps, initial=state.step, desc=name, unit="step", leave=False, disable=rank or None, mininterval=2)
    try:
        while state.step < opt.steps:
            step, started = state.step, time.perf_counter()
            # this step's learning rate (learner and actor alike): linear warm-up, then cosine decay
            lr = lr_at(step, opt.steps, opt.lr, opt.warmup_steps)

            # draw a super-batch and keep the batch the policy chooses (uniform, or a step the schedule anneals: the
            # draw is the batch, and no actor scores or trains)
            phase = selector.at(step, opt.steps)
            drawn = _drawn(sampler, selector, step, opt.steps, batch, device)
            data_seconds = time.perf_counter() - started  # waiting for data: drawing (on CUDA: made ahead), decoding, the copy
            reference = run.reference.losses(drawn, loss_fn, precision) if run.reference and phase.selects else None
            kept, scored = _keep(phase, drawn, online or run.learner, batch // world, loss_fn, precision, name, reference)
            if selector.selects:  # the training sequence (datasets/replay.py): the pool ids kept, every rank's, in order
                state.sequence.append([int(i) for part in gathered(kept.ids, world) for i in part])
            if blend is not None:  # the curated share of the batch, beside what was kept of the pool's
                kept = _joined(kept, blend.curated.draw(curated_rows), device)

            # one optimiser step of the learner on the kept batch, and of the actor on what it trains on
            loss = run.learner.step(kept, loss_fn, lr, precision, name, step)
            actor_batch = kept if actor is None or actor.trains_on == "kept" else drawn
            training_actor = online is not None and phase.selects
            actor_loss = online.step(actor_batch, loss_fn, lr, precision, f"{name} (actor)", step) if training_actor else None
            if reference is not None:  # the refreshed reference: a step on curated rows and the learner's kept ones
                run.reference.step(kept, loss_fn, lr, precision, f"{name} (reference)", step, device)

            # log the step (summed over ranks), evaluate and checkpoint on their schedules
            state.step = step = step + 1
            spent = time.perf_counter() - started
            state.seconds += spent
            row = log_row(step, lr, loss, actor_loss, kept, sampler.kinds, world)
            count_classes(state, kept, world)
            state.steps_log.append({**row, **scored, "seconds": round(spent, 6), "data_seconds": round(data_seconds, 6)})
            _on_schedule(run, state, evaluation, model, opt, bar)
            if on_step is not None:
                on_step(step, kept.ids)
    finally:  # a run that ends, or dies, leaves no thread behind: a draw made ahead, a stream's shard decoding ahead
        bar.close()
        sampler.close()
    if not finished_before:  # a run that was already finished is left as it was: later stages are keyed on its bytes
        run.save(state, opt.steps)
    return {"model": model.state_dict(), **dataclasses.asdict(state), "complete": True} | (
        {"actor": actor.model.state_dict()} if actor is not None else {}
    )


def _setup(model, data, opt: OptimConfig, seed: int, selector: Selector, actor: Actor | None, plan, name: str):
    """The run (its sampler: a Split held in memory, a Blend's pool; the learner, the actor, the refreshed reference,
    the blend), with the pool's rows and the curated rows of each batch."""
    rank, world = rank_and_world()
    blend = data if isinstance(data, Blend) else None
    data = blend.pool if blend is not None else data
    sampler = data if not isinstance(data, Split) else InMemory(data, torch.as_tensor(data.labels), seed, None, rank, world)
    device = next(model.parameters()).device
    if device.type == "cuda" and not isinstance(sampler, Prefetched):  # the next draw made during each step
        sampler = Prefetched(sampler, device)
    curated_rows = blend.rows(opt.batch_size, world) if blend is not None else 0
    batch = opt.batch_size - curated_rows  # the pool's part of each batch
    _check_sizes(batch, selector.super_batch(batch), sampler.size, world, name)
    online = Trainee(actor.model, opt, world) if actor is not None else None
    refresh = actor.refresh if actor is not None and selector.spec.reference_loss else None
    selector.generator.manual_seed(seed + 7919 * rank)  # selection's own random stream (softmax sampling, JEST)
    run = _Run(Trainee(model, opt, world), online, sampler, selector.generator, plan, rank, world)
    run.reference = _Refreshed(refresh, opt, world) if refresh is not None else None
    run.blend = blend
    run.fingerprint = _fingerprint(opt, selector, seed, sampler, world, plan.lineage_key, actor, blend)
    model.train()
    if actor is not None:
        actor.model.train()
    return run, batch, curated_rows


def _drawn(sampler, selector: Selector, step: int, steps: int, batch: int, device) -> Draw:
    """This step's super-batch, on the device; a Prefetched sampler starts the next step's draw meanwhile."""
    drawn = sampler.draw(selector.at(step, steps).super_batch(batch))
    if isinstance(sampler, Prefetched) and step + 1 < steps:  # the next step's draw, made while this one trains
        sampler.ahead(selector.at(step + 1, steps).super_batch(batch))
    images, targets = to_device(drawn.images, device), to_device(drawn.targets, device)
    return Draw(drawn.ids, images, targets, drawn.pathology, labels=drawn.labels)


def _on_schedule(run: _Run, state: TrainState, evaluation: Evaluation | None, model, opt: OptimConfig, bar) -> None:
    """After a step: the evaluation (rank 0) and the checkpoint, each on its schedule; the progress bar."""
    step = state.step
    if evaluation is not None and (step % evaluation.every == 0 or step == opt.steps) and run.rank == 0:
        _evaluate(evaluation, model, state, opt.batch_size, bar)
    if step % run.plan.every == 0 or step == opt.steps:
        run.save(state, opt.steps)
    bar.update(1)


@dataclass
class _Run:
    """What one run trains and checkpoints together: the learner, the actor, the sampler and the selection RNG."""

    learner: Trainee
    actor: Trainee | None
    sampler: InMemory | ShardStream
    generator: torch.Generator
    plan: CheckpointPlan
    rank: int
    world: int
    fingerprint: str = ""
    reference: _Refreshed | None = None  # the reference refreshed online, when the run refreshes it
    blend: Blend | None = None  # the curated share of every batch, when the run blends one in

    def resume(self, name: str, steps: int) -> TrainState:
        """The state to start from: the checkpoint's, restored into every object of the run, when this very run
        wrote it (same fingerprint); else a fresh start."""
        ckpt = resumable(self.plan.path, self.fingerprint, name, self.rank)
        if ckpt is None:
            return TrainState()
        self.learner.model.load_state_dict(ckpt["model"])
        self.learner.optimizer.load_state_dict(ckpt["optimizer"])
        if self.actor is not None:
            self.actor.model.load_state_dict(ckpt["actor"])
            self.actor.optimizer.load_state_dict(ckpt["actor_optimizer"])
        self.sampler.restore(ckpt["sampler"][self.rank])
        self.generator.set_state(ckpt["torch_rng"][self.rank])
        if self.reference is not None:
            self.reference.restore(ckpt["reference"], self.rank)
        if self.blend is not None:
            self.blend.curated.restore(ckpt["blend"][self.rank])
        state = restored_state(ckpt)
        if state.step < steps and self.rank == 0:
            log.info("%s: resuming from step %d of %d (%s)", name, state.step, steps, self.plan.path)
        return state

    def save(self, state: TrainState, steps: int) -> None:
        samplers, generators = gathered(self.sampler.state(), self.world), gathered(self.generator.get_state(), self.world)
        reference = {"reference": self.reference.state(self.world)} if self.reference is not None else {}
        blend = {"blend": gathered(self.blend.curated.state(), self.world)} if self.blend is not None else {}
        if self.plan.path is None or self.rank != 0:
            return
        actor = (
            {"actor": self.actor.model.state_dict(), "actor_optimizer": self.actor.optimizer.state_dict()} if self.actor else {}
        )
        checkpoint = {
            "model": self.learner.model.state_dict(),
            "optimizer": self.learner.optimizer.state_dict(),
            **actor,
            **reference,
            **blend,
            "sampler": samplers,
            "torch_rng": generators,
            "fingerprint": self.fingerprint,
            "lineage_key": self.plan.lineage_key,
            "meta": self.plan.meta,
            "complete": state.step >= steps,
            **dataclasses.asdict(state),
        }
        atomic_save(checkpoint, Path(self.plan.path))


class _Refreshed:
    """The refreshed reference in the loop: it scores each super-batch, then takes a step on half curated rows and
    half the learner's kept rows (Refresh.kept_share), on the learner's schedule, with its own optimiser."""

    def __init__(self, refresh: Refresh, opt: OptimConfig, world: int):
        self.trainee, self.curated, self.kept_share = Trainee(refresh.model, opt, world), refresh.curated, refresh.kept_share
        refresh.model.train()

    def losses(self, drawn: Draw, loss_fn: Callable, precision: str) -> torch.Tensor:
        return self.trainee.losses(drawn, loss_fn, precision)

    def step(self, kept: Draw, loss_fn: Callable, lr: float, precision: str, what: str, step: int, device) -> float:
        n = len(kept.ids)
        from_kept = int(round(n * self.kept_share))
        curated = self.curated.draw(n - from_kept)
        images = torch.cat([curated.images.to(device), kept.images[:from_kept]])
        targets = torch.cat([curated.targets.to(device), kept.targets[:from_kept]])
        return self.trainee.step(
            Draw(np.concatenate([curated.ids, kept.ids[:from_kept]]), images, targets, None), loss_fn, lr, precision, what, step
        )

    def state(self, world: int) -> dict:
        return {
            "model": self.trainee.model.state_dict(),
            "optimizer": self.trainee.optimizer.state_dict(),
            "curated": gathered(self.curated.state(), world),
        }

    def restore(self, state: dict, rank: int) -> None:
        self.trainee.model.load_state_dict(state["model"])
        self.trainee.optimizer.load_state_dict(state["optimizer"])
        self.curated.restore(state["curated"][rank])


def _fingerprint(
    opt: OptimConfig, selector: Selector, seed: int, sampler, world: int, lineage_key, actor: Actor | None, blend: Blend | None
) -> str:
    """What makes a run this run: a checkpoint resumes only into the very same one."""
    return json.dumps(
        {
            "opt": opt.model_dump(exclude={"policies"}),
            **selector.fingerprint(),
            "seed": seed,
            "n": sampler.size,
            "sampler": type(getattr(sampler, "inner", sampler)).__name__,  # made ahead or not: the same draws
            "world": world,
            "lineage_key": lineage_key,
            **({"actor": signature(actor.model), "actor_trains_on": actor.trains_on} if actor is not None else {}),
            **(
                {"refresh": signature(actor.refresh.model), "refresh_kept_share": actor.refresh.kept_share}
                if actor is not None and actor.refresh is not None
                else {}
            ),
            **({"blend": blend.share, "curated": blend.curated.size} if blend is not None else {}),
        },
        sort_keys=True,
        default=str,
    )


def _keep(
    selector: Selector,
    drawn: Draw,
    scorer: Trainee,
    k: int,
    loss_fn: Callable,
    precision: str,
    name: str,
    reference: torch.Tensor | None = None,
) -> tuple[Draw, dict]:
    """The rows of the draw the learner trains on (weighted, for soft selection): all of it for uniform, else what
    the selector keeps from the online model's scores (the actor's, or the learner's own) and the reference's; and
    what the step log reports of those scores."""
    if not selector.selects:
        return drawn, {}
    scores = None
    if selector.needs_actor:
        scores = scorer.logits(drawn, precision) if selector.joint else scorer.losses(drawn, loss_fn, precision)
    choice = selector.choose(drawn.ids, k, scores, name, reference)
    rows, index = choice.rows.numpy(), choice.rows.to(drawn.images.device)
    pathology = drawn.pathology[rows] if drawn.pathology is not None else None
    labels = drawn.labels[rows] if drawn.labels is not None else None
    return Draw(drawn.ids[rows], drawn.images[index], drawn.targets[index], pathology, choice.weights, labels), {
        key: round(value, 6) for key, value in choice.logged.items()
    }


def _joined(kept: Draw, curated: Draw, device) -> Draw:
    """The kept rows of the pool and the curated rows, one batch (each curated row weighs 1 under soft selection)."""
    weights = None
    if kept.weights is not None:
        weights = torch.cat([kept.weights, torch.ones(len(curated.ids), dtype=kept.weights.dtype, device=kept.weights.device)])
    pathology, labels = (
        None
        if getattr(kept, key) is None or getattr(curated, key) is None
        else np.concatenate([getattr(kept, key), getattr(curated, key)])
        for key in ("pathology", "labels")
    )
    return Draw(
        np.concatenate([kept.ids, curated.ids]),
        torch.cat([kept.images, curated.images.to(device)]),
        torch.cat([kept.targets, curated.targets.to(device)]),
        pathology,
        weights,
        labels,
    )


def _evaluate(evaluation: Evaluation, model: nn.Module, state: TrainState, batch: int, bar) -> None:
    started = time.perf_counter()
    metrics = evaluation.metric(model)
    model.train()
    state.eval_seconds += time.perf_counter() - started  # counted apart: the clock of a run is its training
    state.eval_log.append({"step": state.step, "examples_seen": state.step * batch, **metrics})
    value = metrics.get(evaluation.keep_best) if evaluation.keep_best else None
    if value is not None and (state.best_value is None or value > state.best_value):  # the earliest of equal bests
        state.best_step, state.best_value = state.step, float(value)
        state.best_model = {k: v.detach().clone() for k, v in model.state_dict().items()}
    state.clock.append([state.step, state.seconds])
    bar.set_postfix(loss=f"{state.steps_log[-1]['loss']:.3f}", **{k: f"{v:.3f}" for k, v in metrics.items()})


def _check_sizes(batch: int, super_batch: int, examples: int, world: int, name: str) -> None:
    if batch % world or super_batch % world:
        raise ValueError(f"batch {batch} and super-batch {super_batch} must divide evenly over {world} ranks")
    if super_batch > examples:
        what = (
            f"batch_size ({batch})" if super_batch == batch else f"the super-batch of {super_batch} (batch_size / keep_fraction)"
        )
        raise DataError(f"{name}: {what} is larger than the {examples} examples it trains on; lower it or add data")
