"""Checkpoints of a training run: what they hold, where they go, and when a run may resume from one.

A checkpoint holds the model (and the actor), their optimisers, each rank's sampler and selection RNG
state, the run's TrainState and a fingerprint of the run; a killed run resumes only from a checkpoint
with the very same fingerprint, and ends with the same weights as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from winnow.errors import CheckpointError, MissingInput, StaleInput
from winnow.files import atomic_path
from winnow.method.objectives import OBJECTIVES

log = logging.getLogger("winnow")


@dataclass(frozen=True)
class CheckpointPlan:
    """Where a run saves itself and how often, and what the checkpoint records for later stages."""

    path: Path | None = None  # None: never saved (tests, probes)
    every: int = 500  # steps between saves; the last step is always saved
    meta: dict = field(default_factory=dict)  # model name, classes, image size, objective: enough to rebuild the model
    lineage_key: str | None = None  # the stage's lineage key (data, params, code): a checkpoint with another is never resumed


@dataclass
class TrainState:
    """What a run has done so far, saved in every checkpoint beside the weights, the optimiser and each
    rank's sampler and RNG state (which live in their own objects)."""

    step: int = 0
    steps_log: list[dict] = field(default_factory=list)  # one row per step: loss, lr, pathology mix of the kept batch
    eval_log: list[dict] = field(default_factory=list)  # one row per evaluation: step, examples seen, the target metric
    seconds: float = 0.0  # training time, summed over runs (a resumed run adds to it); evaluation not included
    clock: list[list[float]] = field(default_factory=list)  # [step, seconds so far] at each evaluation: time to a target
    eval_seconds: float = 0.0  # the evaluations' own time (the curve's split), summed over runs; apart from `seconds`
    kept_classes: list[float] = field(default_factory=list)  # rows kept per label, summed over steps and ranks (by weight)
    # early stopping on the curve's split (Evaluation.keep_best): the evaluation with the highest metric so far, its
    # weights (the final metric of an early-stopped run is read there)
    sequence: list[list[int]] = field(default_factory=list)  # a selecting run's kept pool ids, step by step (every rank's)
    best_step: int = 0
    best_value: float | None = None
    best_model: dict | None = None


def state_hash(model: nn.Module) -> str:
    """Content hash of a model's weights: what a scorer in the store is keyed on."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def signature(model: nn.Module) -> str:
    """Which architecture a model is (class and parameter shapes), for a run's fingerprint."""
    shapes = ",".join("x".join(map(str, p.shape)) for p in model.parameters())
    return f"{type(model).__name__}:{hashlib.sha256(shapes.encode()).hexdigest()[:16]}"


def atomic_save(obj, path: Path) -> None:
    with atomic_path(path) as tmp:
        try:
            torch.save(obj, tmp)
        except RuntimeError as e:  # torch's writer says a failed write so ("... unexpected pos 64 vs 0"): a full disk
            raise CheckpointError(
                f"{path}: could not be written ({str(e).strip()[:120]}); free space on its disk, or check the folder "
                "is writable, then rerun: the run resumes from its last checkpoint"
            ) from e


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


def model_from_checkpoint(path: Path, device: torch.device | str = "cpu", lineage_key: str | None = None) -> torch.nn.Module:
    """The finished model in a checkpoint; with `lineage_key` (its stage's), only if it was
    trained on exactly those inputs: a model from other data, params or code is stale."""
    ckpt = load_checkpoint(path)
    if not ckpt.get("complete"):
        raise CheckpointError(
            f"{path}: this checkpoint is from an unfinished run (step {ckpt.get('step')}); rerun its stage to finish it"
        )
    if lineage_key is not None and ckpt.get("lineage_key") != lineage_key:
        raise StaleInput(
            f"{path}: was trained on other data, params or code than this run's; rerun the stage that writes it "
            f"(`winnow pipeline` reruns what is stale)"
        )
    meta = ckpt["meta"]
    model = OBJECTIVES[meta["objective"]].build_model(meta["model_name"], meta["num_classes"], meta["image_size"])
    model.load_state_dict(ckpt["model"])
    return model.to(device)


def resumable(path: Path | None, fingerprint: str, name: str, rank: int) -> dict | None:
    """The checkpoint to resume from: one written by this very run (same fingerprint), else None. One that
    cannot be read (cut short by a crash, a bad copy) is set aside as <name>.corrupt, never deleted."""
    if path is None or not Path(path).exists():
        return None
    try:
        ckpt = load_checkpoint(path)
    except CheckpointError as e:
        if rank == 0:
            os.replace(path, Path(path).with_name(Path(path).name + ".corrupt"))
            log.warning("%s: %s; moved aside to %s.corrupt, starting afresh", name, e, Path(path).name)
        return None
    if ckpt.get("fingerprint") != fingerprint:
        if rank == 0:
            log.warning("%s: %s was written with other data, settings or code; starting afresh", name, path)
        return None
    return ckpt


def restored_state(ckpt: dict) -> TrainState:
    return TrainState(**{f.name: ckpt[f.name] for f in dataclasses.fields(TrainState) if f.name in ckpt})


def gathered(obj, world: int) -> list:
    """obj from every rank, in rank order (a checkpoint holds each rank's sampler and RNG)."""
    if world == 1:
        return [obj]
    out = [None] * world
    torch.distributed.all_gather_object(out, obj)
    return out


def load_state_dict_file(path: str | Path, model: nn.Module, what: str, fix: str) -> None:
    """Load a state dict saved elsewhere into `model` (strictly): a bare state dict as torch.save writes one (torchvision,
    open_clip), or one under "state_dict" or "model" (a training checkpoint, winnow's included), its "module." prefix
    (DDP) stripped. Anything else is an error naming the file (`what`: the setting that named it), what was wrong and
    `fix`."""
    path = Path(path)
    if not path.is_file():
        raise MissingInput(f"{path}: no such file ({what})")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError) as e:
        raise CheckpointError(f"{path}: not a readable state dict ({type(e).__name__}: {str(e)[:200]}) ({what})") from e
    if isinstance(loaded, dict):
        loaded = loaded.get("state_dict", loaded.get("model", loaded))
    if not isinstance(loaded, dict) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise CheckpointError(f"{path}: holds no state dict (a mapping of parameter names to tensors) ({what})")
    state = {k.removeprefix("module."): v for k, v in loaded.items()}
    broken = next((k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()), None)
    if broken is not None:  # else it would be evaluated and scored, and the learner's loss blamed on its learning rate
        raise CheckpointError(
            f"{path}: {broken} holds NaN or infinite values ({what}); the run that saved it had diverged: load a "
            "checkpoint from before that, or train the reference here (leave the setting out)"
        )
    own = model.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    shapes = [k for k in own if k in state and own[k].shape != state[k].shape]
    if missing or unexpected or shapes:
        problems = [
            f"{len(missing)} missing (first: {missing[0]})" if missing else "",
            f"{len(unexpected)} unexpected (first: {unexpected[0]})" if unexpected else "",
            f"{shapes[0]} is {tuple(state[shapes[0]].shape)}, not {tuple(own[shapes[0]].shape)}" if shapes else "",
        ]
        raise CheckpointError(
            f"{path}: does not fit {type(model).__name__} ({what}): {'; '.join(p for p in problems if p)}; {fix}"
        )
    model.load_state_dict(state)
