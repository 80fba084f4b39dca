"""The train stage: the learner trained with one selection policy, its actor beside it."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import logging
import time

import numpy as np
import torch

from winnow.config import Params
from winnow.curation.filters import filter_pass, model_free_filter, without_ids
from winnow.datasets.contract import Split, listed_split_hash, value_counts
from winnow.datasets.mixture import Mixture
from winnow.datasets.replay import Replay, read_sequence, write_sequence
from winnow.datasets.stream import InMemory, ShardStream, admitted_by_label, shard_rows
from winnow.errors import ConfigError, DataError
from winnow.files import exclusive, write_csv
from winnow.method import objectives
from winnow.method.checkpoints import CheckpointPlan
from winnow.method.devices import cpu_share, init_distributed, pick_device
from winnow.method.flops import counted
from winnow.method.jest import reference_logits
from winnow.method.objectives import OBJECTIVES
from winnow.method.policies import POLICIES
from winnow.method.selection import Selector
from winnow.method.training import Actor, Blend, Evaluation, Refresh, train
from winnow.stages.inputs import (
    checkpoint_meta,
    claim_outputs,
    decode_with,
    forward_flops,
    num_classes,
    read_json,
    reference_model,
    run_split,
    scoring_flops,
    step_flops,
    target_metric,
    validation_split,
)
from winnow.stages.lineage import record_run, stage_key
from winnow.stages.paths import Paths, replay_source
from winnow.stages.records import TrainRecord
from winnow.stages.score import reference_embeddings, reference_losses

log = logging.getLogger("winnow")


def pool_sampler(params: Params, model_name: str, seed: int, rank: int = 0, world: int = 1, policy: str = "uniform"):
    """What the learner draws from: for a policy its pool, for a baseline the data it names (method/policies.py).
    Held in memory when the pool fits in train.shuffle_buffer; else the pool streams shard by shard through a buffer
    of that size, so memory does not grow with the pool for any arm: `filtered` filters it in a first pass that keeps
    hashes, not images; `curated_plus_pool` draws the curated rows (in memory) and the streamed pool in proportion
    to their sizes; `balanced` weighs each row inverse to its label's frequency (streamed: admits each row with that
    weight over the largest, a class-balanced subsample). A policy that blends (curated_mix, *_mix) draws a Blend:
    train.curated_share of every batch from the curated set, beside the pool's rows.
    Returns the sampler and what preparing its data cost (the filter's seconds)."""
    spec = POLICIES[policy]
    if spec.data == "curated":
        return _curated(params, model_name, seed, rank, world, pathology=False), {}
    if spec.replays:
        return _replay(params, model_name, rank, world)
    pool, prepared = _pool(params, model_name, seed, rank, world, spec.data)
    if spec.blend:  # the curated rows upsampled to a fixed share of every batch, with a draw of their own
        return Blend(pool, _curated(params, model_name, seed + 4, rank, world), params.train.curated_share), prepared
    return pool, prepared


def _replay(params: Params, model_name: str, rank: int, world: int) -> tuple[Replay, dict]:
    """The pool held in memory, drawn step by step as the recorded sequence kept it (train.replay); refused, naming
    the file or the key, when it was recorded on another pool, is shorter than the run, or at another batch size."""
    source, cfg = replay_source(params), params.train
    sequence, meta = read_sequence(source)
    folder = Paths.of(params).data / "pool"
    if meta["pool"] != listed_split_hash(folder):
        raise DataError(f"{source}: recorded on another pool than {folder} (a sequence replays on the pool it kept rows of)")
    if meta.get("curated_share"):
        raise ConfigError(f"train.replay: {source} was recorded beside a curated share of every batch; replay a plain run's")
    if meta["steps"] < cfg.steps:
        raise ConfigError(f"train.steps: {cfg.steps}, and {source} holds {meta['steps']} steps; replay at most that many")
    if meta["batch_size"] != cfg.batch_size:
        raise ConfigError(f"train.batch_size: {cfg.batch_size}, and {source} kept {meta['batch_size']} rows a step; use that")
    check_replay(params)
    pool = run_split(params, "pool")
    targets = OBJECTIVES[params.objective].targets(model_name, pool)
    replay = Replay(pool, targets, sequence, str(source), pool.columns.get("pathology"), rank, world)
    return replay, {
        "replay_of": str(source),
        "replay_users": cfg.replay_users,
        "replayed_policy": meta["policy"],
        "replayed_one_off_flops": meta["one_off_flops"],
        "replayed_selection_flops_per_step": meta["selection_flops_per_step"],
        **({"selecting_steps": meta["selecting_steps"]} if meta.get("selecting_steps") is not None else {}),
    }


def check_arms(params: Params) -> None:
    """What the arms need of the pool that is known before any stage runs (a replay's pool that fits in memory, the
    labels `balanced` weighs by): refused naming the key, not after the reference, the scoring and the other arms.
    A pool not made yet (the built-in one, generated by the data stage) is checked once it is."""
    if not (Paths.of(params).data / "pool").exists():
        return
    check_replay(params)
    if "balanced" in params.train.policies:
        _by_label(params)


def check_replay(params: Params) -> None:
    """What a replay arm needs of its run that no recorded sequence is needed to know: a pool that fits in memory.
    The pipeline checks it before any arm trains, so a run is not refused hours in."""
    if "replay" in params.train.policies and sum(shard_rows(Paths.of(params).data / "pool")) > params.train.shuffle_buffer:
        raise ConfigError(
            f"train.policies: 'replay' draws any row of the pool at any step, so it holds the pool in memory, and it is "
            f"larger than train.shuffle_buffer ({params.train.shuffle_buffer}); raise the buffer"
        )


def _sequence_meta(params: Params, policy: str, flops: dict, selecting_steps: int | None, batch: int) -> dict:
    """What a recorded sequence is and what its selection cost (a replay is charged its share of it)."""
    lines = ("actor_scoring_flops_per_step", "actor_step_flops", "reference_logits_flops_per_step")
    one_off = 0.0
    if POLICIES[policy].reference_loss:  # the reference's training and the pool's scoring, as the ledger counts them
        paths = Paths.of(params)
        reference = read_json(paths.reference_record, "run `winnow reference`")
        score = read_json(paths.score_record, "run `winnow score`")
        pool = score["num_examples"] - score["unscorable"]
        one_off = reference["train_step_flops"] * reference["steps"] + reference["score_forward_flops_per_example"] * pool
    return {
        "policy": policy,
        "objective": params.objective,
        "learner": params.train.model,
        "steps": params.train.steps,
        "batch_size": batch,
        "pool": listed_split_hash(Paths.of(params).data / "pool"),
        "lineage_key": stage_key("train", params, policy),
        "one_off_flops": one_off,
        "selection_flops_per_step": sum(flops.get(k) or 0.0 for k in lines)
        + (flops.get("reference_refresh_flops_per_step") or 0.0),
        "selecting_steps": selecting_steps,
    }


def _curated(params: Params, model_name: str, seed: int, rank: int, world: int, pathology: bool = True) -> InMemory:
    """The curated set held in memory; its rows marked clean where they are drawn beside the pool's (Split.join's fill)."""
    curated = run_split(params, "curated")
    clean = np.full(len(curated), "clean", dtype=object) if pathology else curated.columns.get("pathology")
    return InMemory(curated, OBJECTIVES[params.objective].targets(model_name, curated), seed, clean, rank, world)


def _pool(params: Params, model_name: str, seed: int, rank: int, world: int, data: str):
    """An arm's sampler over the pool (pool, filtered, curated+pool, balanced): in memory, or streamed."""
    if sum(shard_rows(Paths.of(params).data / "pool")) > params.train.shuffle_buffer:
        return _streamed(params, model_name, seed, rank, world, data)
    split, prepared = _arm_data(params, data)
    targets = OBJECTIVES[params.objective].targets(model_name, split)
    weights = _by_label(params)[split.labels] if data == "balanced" else None
    return InMemory(split, targets, seed, split.columns.get("pathology"), rank, world, weights), prepared


def _by_label(params: Params) -> np.ndarray:
    """Each label's draw weight for `balanced`: inverse to its frequency in the pool (read from the label column)."""
    pool = Paths.of(params).data / "pool"
    counts = value_counts(pool, "label")
    known = {int(k): n for k, n in counts.items() if k is not None and k == k and int(k) >= 0}  # k == k: not NaN (null)
    if not known:
        raise ConfigError(
            f"train.policies: 'balanced' weighs the pool's rows by their label, and {pool} has none (image-text pairs "
            "imported without --label-column); leave 'balanced' out of train.policies (bench.policies in a study)"
        )
    weights = np.zeros(num_classes(params), dtype=np.float64)
    for label, n in known.items():
        weights[label] = 1.0 / n
    return weights


def _streamed(params: Params, model_name: str, seed: int, rank: int, world: int, data: str):
    """The pool streamed for an arm that draws from `data` (pool, filtered, curated+pool or balanced)."""
    folder = Paths.of(params).data / "pool"
    decode = functools.partial(
        objectives.decode_shard,
        params.objective,
        model_name,
        size=params.data.image_size,
        num_classes=num_classes(params),
        fit=params.data.fit,
    )
    prepared = {}
    if data == "filtered":
        dropped, prepared = filter_pass(folder, decode)
        decode = functools.partial(without_ids, decode, dropped)
    if data == "balanced":  # admitted in proportion to the weight: the rarest label always, the others less often
        weights = _by_label(params)
        decode = functools.partial(admitted_by_label, decode, weights / weights.max())
    stream = ShardStream(folder, decode, params.train.shuffle_buffer, seed, rank, world)
    if data != "curated+pool":
        return stream, prepared
    held = _curated(params, model_name, seed, rank, world)
    return Mixture([held, stream], [held.size, stream.size], seed, world), prepared


def _arm_data(params: Params, data: str):
    """The decoded rows an arm draws from, and what preparing them cost beyond decoding."""
    if data in ("pool", "balanced"):
        return run_split(params, "pool"), {}
    if data == "curated+pool":
        return Split.join([run_split(params, "curated"), run_split(params, "pool")], fill={"pathology": "clean"}), {}
    pool = run_split(params, "pool")
    start = time.perf_counter()  # decoding is every arm's; filtering is this one's alone
    filtered = model_free_filter(pool.images)
    kept = pool.subset(np.flatnonzero(filtered.keep))
    return kept, {"prepare_seconds": time.perf_counter() - start, "filter_dropped": filtered.dropped}


def train_stage(params: Params, policy: str) -> dict:
    """Train the learner with one selection policy; checkpoint, per-step log and eval curve.
    Under torchrun every rank runs this and rank 0 writes the outputs (tasks/launch.py starts the
    ranks for train.nproc_per_node > 1)."""
    rank, world = init_distributed()
    paths = Paths.of(params)
    lock = exclusive(paths.lock(f"train-{policy}"), paths.learner(policy), f"training {policy} into it")
    # train.parallel_arms: this arm's share of the CPU threads, whether arms run at once (winnow pipeline) or not
    with lock if rank == 0 else contextlib.nullcontext(), cpu_share(params.train.parallel_arms):  # rank 0 writes
        decode_with(params, params.train.parallel_arms)  # its decode workers, within this arm's share of the cores
        return _train(params, policy, rank, world)


def _train(params: Params, policy: str, rank: int, world: int) -> dict:
    paths, cfg = claim_outputs(params), params.train
    test, (curve_split, held) = run_split(params, "eval/test"), validation_split(params)
    selector = _selector(params, policy)
    sampler, prepared = pool_sampler(params, cfg.model, params.seed + 1, rank, world, policy)
    torch.manual_seed(params.seed + 1)
    objective, device = OBJECTIVES[params.objective], pick_device(params.device)
    model = objective.build_model(cfg.model, num_classes(params), params.data.image_size).to(device)
    actor, actor_info = _actor(params, policy, device)
    early = POLICIES[policy].data == "curated"  # the learner on the curated set alone: early-stopped on val as well
    pool = sampler.pool if isinstance(sampler, Blend) else sampler  # what the super-batch is drawn from
    curated_rows = sampler.rows(cfg.batch_size, world) if pool is not sampler else 0  # a blended batch's curated part
    super_batch = selector.super_batch(cfg.batch_size - curated_rows)
    trained_by_actor = actor_info.get("actor_trained_per_step", 0)
    first = pool.peek(max(super_batch, cfg.batch_size))  # the learner's step is measured at its whole batch
    flops = _measured_flops(params, selector, model, actor, trained_by_actor, first, super_batch, world)
    out = train(
        model,
        sampler,
        cfg,
        seed=params.seed + 1,
        selector=selector,
        actor=Actor(actor, cfg.actor_trains_on, _refresh(params, selector, device)) if actor is not None else None,
        loss_fn=objective.loss,
        evaluation=Evaluation(target_metric(params, cfg.model, held), cfg.eval_every, objective.metric if early else None),
        checkpoint=CheckpointPlan(
            paths.learner(policy),
            cfg.checkpoint_every,
            checkpoint_meta(cfg.model, params, params.data.image_size),
            stage_key("train", params, policy),
        ),
        precision=params.precision,
        name=policy,
    )
    started = time.perf_counter()
    tested = target_metric(params, cfg.model, test)(model) if rank == 0 else {}  # the test set, read once: at the end
    test_seconds = time.perf_counter() - started
    early_stopped = _at_best_val(params, model, out, test) if early and rank == 0 else {}
    metrics = {
        "policy": policy,
        "steps": cfg.steps,
        "final_metric": tested.get(objective.metric),
        "curve_split": curve_split,
        "curve_examples": len(held),
        "curve_final": out["eval_log"][-1][objective.metric] if out["eval_log"] else None,
        "seconds": out["seconds"],
        "seconds_per_step": out["seconds"] / cfg.steps,
        "step_seconds_median": step_seconds_median(out["steps_log"], cfg.warmup_steps),
        "data_seconds_median": step_seconds_median(out["steps_log"], cfg.warmup_steps, "data_seconds"),
        "clock": out["clock"],
        "eval_seconds": out["eval_seconds"],
        "test_seconds": test_seconds,
        "evaluations": len(out["eval_log"]),
        "batch_size": cfg.batch_size,
        "super_batch_size": super_batch,  # drawn from the pool each step (for the pool's part of a blended batch)
        "images_per_step": _images_per_step(selector, super_batch, cfg.batch_size - curated_rows, curated_rows, cfg.steps),
        "curated_share": params.train.curated_share if pool is not sampler else None,
        "selection": cfg.selection if POLICIES[policy].selects else None,
        **actor_info,
        **prepared,
        "data": POLICIES[policy].data,
        "selected_mix": _selected_mix(out["steps_log"]),
        "kept_class_share": _shares(out["kept_classes"]),
        "pool_size": pool.size,
        "pool_skipped": len(pool.split.skipped) if isinstance(pool, InMemory) else sum(map(len, pool.skipped.values())),
        **_streamed_info(pool),
        **flops,
    }
    metrics.update(early_stopped)
    metrics.update(_scheduled(selector, out["steps_log"], cfg))
    if selector.selects and rank == 0 and len(out["sequence"]) == cfg.steps:  # its training sequence, for replays
        meta = _sequence_meta(params, policy, flops, metrics.get("selecting_steps"), len(out["sequence"][0]))
        write_sequence(paths.sequence(policy), out["sequence"], {**meta, "curated_share": metrics["curated_share"]})
    metrics.update(_plateau(out["steps_log"]))
    if world > 1:
        metrics["world_size"] = world
    record = TrainRecord(**metrics)
    if rank == 0:  # rank 0 writes
        _write(params, policy, out, record)
    return record.as_dict()


def _write(params: Params, policy: str, out: dict, record: TrainRecord) -> None:
    """A run's curve, step log and record, then its lineage stamp (last: the stage is done once it is written)."""
    paths = Paths.of(params)
    write_csv(out["eval_log"], paths.curve(policy))
    write_csv(out["steps_log"], paths.step_log(policy))
    record.write(paths.train_record(policy))
    record_run("train", params, policy)


def _at_best_val(params: Params, model, out: dict, test) -> dict:
    """An early-stopped run's reading: its best val evaluation, and the test set read once more at those weights."""
    if out["best_model"] is None:
        return {}
    best = copy.deepcopy(model)
    best.load_state_dict(out["best_model"])
    metric = OBJECTIVES[params.objective].metric
    return {
        "best_val_step": out["best_step"],
        "best_val": out["best_value"],
        "final_metric_at_best_val": target_metric(params, params.train.model, test)(best).get(metric),
    }


def _selected_mix(steps_log: list[dict]) -> dict[str, float]:
    """The pathology mix of the kept batches, the mean over steps."""
    keys = [k for k in steps_log[-1] if k.startswith("selected_")]
    return {k[len("selected_") :]: float(np.mean([r.get(k, 0.0) for r in steps_log])) for k in keys}


def _shares(counts: list[float]) -> list[float] | None:
    total = sum(counts)
    return [round(c / total, 6) for c in counts] if total else None


def step_seconds_median(steps_log: list[dict], warmup: int, column: str = "seconds") -> float | None:
    """What a step costs: the median of the steps' own seconds after the warm-up (a fixed window: every step from
    warmup_steps on), so one slow step (a page fault, another process) does not move it. `column`: data_seconds for
    the part of it spent waiting for data."""
    window = [row[column] for row in steps_log[warmup:] if column in row] or [r[column] for r in steps_log if column in r]
    return float(np.median(window)) if window else None


def _scheduled(selector: Selector, steps_log: list[dict], cfg) -> dict:
    """A scheduled run's record: its schedule, how many steps selected, and the median step of each phase (the
    annealed steps draw no super-batch and run no actor, so they cost less: the ledger and the clock charge them
    apart). Nothing for a run without a schedule, whose record stays as it was."""
    if not selector.selects or selector.schedule.constant:
        return {}
    selecting = selector.schedule.selecting_steps(cfg.steps)
    annealed = [row["seconds"] for row in steps_log[selecting:]]
    return {
        "schedule": dataclasses.asdict(selector.schedule),
        "selecting_steps": selecting,
        "step_seconds_median": step_seconds_median(steps_log[:selecting], cfg.warmup_steps),
        "annealed_step_seconds_median": float(np.median(annealed)) if annealed else None,
    }


def _streamed_info(pool) -> dict:
    """A streamed pool's shuffle buffer (nothing for one held in memory)."""
    stream = next((s for s in (pool, *getattr(pool, "parts", ())) if isinstance(s, ShardStream)), None)
    return {} if stream is None else {"pool_streamed": True, "shuffle_buffer": stream.capacity}


def _images_per_step(selector: Selector, super_batch: int, batch: int, curated_rows: int, steps: int) -> float:
    """The images the data path delivers per learner step, mean over the run: the super-batch drawn from the pool
    while the run selects (its batch alone on annealed steps), and the curated rows of a blended batch. A selecting
    run at keep 0.5 asks twice what uniform does of the decoder (issue 45: the seconds column says when that binds)."""
    selecting = selector.schedule.selecting_steps(steps) if selector.selects else steps
    return (selecting * super_batch + (steps - selecting) * batch) / steps + curated_rows


def _plateau(steps_log: list[dict]) -> dict:
    """The plateau alarm: the share of each super-batch with negative learnability (the actor's loss below the
    reference's), averaged over each tenth of the run. When it climbs towards one half, the reference has stopped
    telling the learnable from the rest. Soft selection's effective sample size likewise."""
    out = {}
    for key in ("negative_learnability", "weights_ess"):
        values = [row[key] for row in steps_log if key in row]
        if values:
            out[key] = [round(float(np.mean(part)), 4) for part in np.array_split(np.array(values), min(10, len(values)))]
    return out


def _selector(params: Params, policy: str) -> Selector:
    """The policy's selector, with the reference's side it reads: its losses, or for JEST its stored embeddings."""
    cfg = params.train
    joint = POLICIES[policy].selects and cfg.selection == "jest"
    reads = POLICIES[policy].reference_loss
    online = reads and cfg.refresh_reference and POLICIES[policy].actor_loss  # scored online by the refreshed reference
    return Selector(
        policy,
        keep_fraction=cfg.keep_fraction,
        method=cfg.selection,
        temperature=cfg.temperature,
        chunks=cfg.jest_chunks,
        schedule=cfg.schedule,
        reference_loss=torch.from_numpy(reference_losses(params)) if reads and not joint and not online else None,
        reference_embeddings=reference_embeddings(params) if reads and joint else None,
        online_reference=bool(online),
    )


def _measured_flops(  # noqa: PLR0913
    params: Params, selector: Selector, model, actor, trained: int, first, super_batch: int, world: int
) -> dict:
    """The ledger's lines of this run, measured on the rows `first` of its pool (method/flops.py): the learner's
    training step; for an online loss the scoring of a super-batch of `super_batch` (by the actor, or the learner
    scoring itself) and the actor's training step on what it trains on; for JEST the reference's per-step logits from
    the stored features (each rank its own share's). Forward FLOPs per example are kept beside them for the report."""
    cfg, loss, precision = params.train, OBJECTIVES[params.objective].loss, params.precision
    images, targets = first.images, first.targets
    flops = {
        "forward_flops_per_example": forward_flops(model, loss, images, targets, cfg.batch_size),
        "learner_step_flops": step_flops(model, cfg, loss, images, targets, cfg.batch_size, precision),
    }
    if selector.needs_actor:  # the online loss's cost: scoring each super-batch, and the actor's training
        scorer = actor if actor is not None else model
        flops["actor_super_batch_forward_flops_per_example"] = forward_flops(scorer, loss, images, targets, super_batch)
        flops["actor_scoring_flops_per_step"] = scoring_flops(
            scorer, loss, images, targets, super_batch, precision, joint=selector.joint
        )
        if actor is not None:
            flops["actor_forward_flops_per_example"] = forward_flops(actor, loss, images, targets, trained)
            flops["actor_step_flops"] = step_flops(actor, cfg, loss, images, targets, trained, precision)
    if selector.online_reference:  # the refreshed reference: scoring each super-batch and a training step
        reference = reference_model(params)
        flops["reference_refresh_flops_per_step"] = scoring_flops(
            reference, loss, images, targets, super_batch, precision
        ) + step_flops(reference, cfg, loss, images, targets, cfg.batch_size, precision)
        flops["refresh_kept_share"] = cfg.refresh_kept_share
    if selector.reference_embeddings is not None:
        image, text, scale = selector.reference_embeddings
        share = super_batch // world
        flops["reference_logits_flops_per_step"] = counted(lambda: reference_logits(image[:share], text[:share], scale)) * world
    return flops


def _refresh(params: Params, selector: Selector, device) -> Refresh | None:
    """The refreshed reference of a run that refreshes it: a copy of the trained reference, trained on beside the
    learner on the curated set (drawn with its own seed) and the learner's kept rows."""
    if not selector.online_reference:
        return None
    curated = run_split(params, "curated")
    model = copy.deepcopy(reference_model(params)).to(device)  # its own copy: the cached one is scoring's
    targets = OBJECTIVES[params.objective].targets(params.reference.model, curated)
    return Refresh(model, InMemory(curated, targets, params.seed + 3), params.train.refresh_kept_share)


def _actor(params: Params, policy: str, device) -> tuple[torch.nn.Module | None, dict]:
    """The actor a policy scores with (None: no online loss, or the learner scores itself), and what
    the ledger needs to know of it: its name and how many examples it trains on per step."""
    cfg = params.train
    if not POLICIES[policy].actor_loss:
        return None, {}
    if cfg.actor == "learner":
        return None, {"actor": "learner", "actor_trained_per_step": 0}
    torch.manual_seed(params.seed + 2)  # its own initialisation, whatever the learner's
    resolution = cfg.score_resolution or params.data.image_size  # it scores, and so learns, at this resolution
    actor = OBJECTIVES[params.objective].build_model(cfg.actor, num_classes(params), resolution).to(device)
    trained = cfg.batch_size if cfg.actor_trains_on == "kept" else cfg.super_batch_size
    return actor, {
        "actor": cfg.actor,
        "actor_resolution": resolution,
        "actor_trains_on": cfg.actor_trains_on,
        "actor_trained_per_step": trained,
    }
