"""What the stages read: the run's decoded splits, its classes, finished models and upstream records.

Each function checks what it hands over (a stale checkpoint, a missing record) and says which stage to rerun.
"""

from __future__ import annotations

import functools
import json
import logging
from pathlib import Path

import numpy as np
import torch

from winnow.config import Params
from winnow.datasets import workers
from winnow.datasets.contract import load_split, read_manifest
from winnow.datasets.stream import Draw, shard_rows
from winnow.errors import DataError, MissingInput, StaleInput
from winnow.files import write_json
from winnow.method import flops, ledger
from winnow.method.checkpoints import model_from_checkpoint
from winnow.method.devices import pick_device
from winnow.method.objectives import OBJECTIVES
from winnow.stages import lineage
from winnow.stages.paths import Paths

log = logging.getLogger("winnow")


@functools.lru_cache(maxsize=8)
def _split(folder: str, size: int, num_classes: int | None, stamp: tuple, fit: str = "squash"):
    return load_split(folder, size, num_classes, fit=fit)


def run_split(params: Params, name: str):
    """A decoded split, cached in-process (keyed on each shard's name, size and mtime, so a rewritten
    shard is decoded anew) so a pipeline decodes it once. Training splits keep only the rows the
    objective can use (the rest are in .skipped)."""
    folder = Paths.of(params).data / name
    classes = num_classes(params) if name in ("pool", "curated", "eval/test", "eval/val") else None
    stamp = tuple((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.glob("part-*.parquet")))
    data = _split(str(folder), params.data.image_size, classes, stamp, params.data.fit)
    return OBJECTIVES[params.objective].usable(data) if name in ("pool", "curated") else data


def decode_with(params: Params, parallel: int = 1) -> int:
    """Size this process's decode workers (datasets/workers.py) from data.workers, or where it is null from the cores
    left after the compute threads of `parallel` processes like this one (train.parallel_arms); returns the count."""
    count = params.data.workers
    if count is None:
        count = workers.default_workers(pick_device(params.device).type, parallel)
    workers.configure(count)
    return count


def num_classes(params: Params) -> int:
    return len(read_manifest(params.data.root)["class_names"])


def claim_outputs(params: Params) -> Paths:
    """This run's Paths, after checking that its dataset's name is not already used by another folder
    (outputs are kept by data.name: two folders of one name would overwrite each other's results), and that
    the dataset is there at all: a missing manifest is named before anything reads a checkpoint keyed on it."""
    paths = Paths.of(params)
    read_manifest(paths.data)
    owner, root = paths.dataset_owner, str(Path(params.data.root).resolve())
    if owner.exists() and json.loads(owner.read_text()).get("root") != root:
        raise DataError(
            f"data.name {paths.dataset!r} already holds the outputs of {json.loads(owner.read_text())['root']}, not {root}; "
            f"set data.name to another name for this dataset (outputs are kept by name)"
        )
    if not owner.exists():
        write_json({"root": root}, owner)
    return paths


def reference_model(params: Params) -> torch.nn.Module:
    """The trained reference on params.device, loaded once per process and checkpoint file: the score
    stage hashes, scores and times it, and a Dask worker scores many shards with it. Only a reference
    trained on this run's inputs (curated set, params, code) is used: another one is stale."""
    path = Paths.of(params).reference
    stamp = path.stat().st_mtime_ns if path.exists() else 0
    return _cached_model(str(path), stamp, str(pick_device(params.device)), lineage.stage_key("reference", params))


@functools.lru_cache(maxsize=2)
def _cached_model(path: str, stamp: int, device: str, lineage_key: str) -> torch.nn.Module:
    return model_from_checkpoint(Path(path), device, lineage_key)


def read_json(path: Path, fix: str) -> dict:
    """A stage's JSON input; missing or unreadable is an error saying which stage writes it."""
    if not path.exists():
        raise MissingInput(f"{path}: missing; {fix}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise StaleInput(f"{path}: not readable JSON ({e}); {fix}") from e


def forward_flops(model, loss_fn, images, targets, batch_size: int) -> float:
    n = min(batch_size, len(images))
    return ledger.forward_flops_per_example(model, loss_fn, images[:n], targets[:n])


def step_flops(model, opt, loss_fn, images, targets, batch_size: int, precision: str = "auto") -> float:
    """FLOPs of one measured training step (forward, backward, optimiser) at batch_size, on a copy of the model."""
    n = min(batch_size, len(images))
    device = next(model.parameters()).device
    batch = Draw(np.arange(n), images[:n].to(device), targets[:n].to(device), None)
    return flops.training_step_flops(model, opt, loss_fn, batch, precision)


def scoring_flops(model, loss_fn, images, targets, batch_size: int, precision: str = "auto", joint: bool = False) -> float:
    """FLOPs of scoring batch_size examples as the loop does (per-example losses, or JEST's logits)."""
    n = min(batch_size, len(images))
    device = next(model.parameters()).device
    batch = Draw(np.arange(n), images[:n].to(device), targets[:n].to(device), None)
    return flops.scoring_flops(model, loss_fn, batch, precision, joint)


def target_metric(params: Params, model_name: str, test):
    class_names = read_manifest(params.data.root)["tasks"]["test"]["class_names"]
    return OBJECTIVES[params.objective].target_metric(model_name, test, class_names)


def checkpoint_meta(model_name: str, params: Params, image_size: int) -> dict:
    return {
        "model_name": model_name,
        "num_classes": num_classes(params),
        "image_size": image_size,  # the resolution it was built for (a scorer's may be lower than the data's)
        "objective": params.objective,
    }


def validation_split(params: Params):
    """The split every curve reads: eval/val; a dataset without one (imported before it existed) falls back to
    eval/test, said in the log and in the record (curve_split), so its crossings read the test set. With
    train.eval_examples, a fixed sample of that many of its rows (the same for every arm and seed)."""
    folder = Paths.of(params).data / "eval/val"
    name = "eval/val"
    if not (folder.is_dir() and any(folder.glob("part-*.parquet")) and sum(shard_rows(folder))):
        log.warning(
            "%s: no validation split (eval/val): curves read eval/test; re-import the data to hold one out", folder.parent.parent
        )
        name = "eval/test"
    return name, sampled(run_split(params, name), params.train.eval_examples)


def sampled(split, rows: int | None):
    """At most `rows` rows of a split, drawn once with a fixed seed and kept in their order; the split itself when it
    is no larger (or `rows` is None)."""
    if rows is None or len(split) <= rows:
        return split
    return split.subset(np.sort(np.random.default_rng(0).choice(len(split), size=rows, replace=False)))
