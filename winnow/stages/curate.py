"""The curate stage: rank the pool by curate.rule from this run's scorer, keep a fraction, write it as a dataset.

The rules are winnow.curation.rules; the dataset's layout is winnow.curation.dataset. A rule that reads more
than the store (a checkpoint's loss, the reference's probabilities) makes one pass of a model over the pool,
cached shard by shard and paid in full (its FLOPs and seconds) whenever it is used.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from winnow.config import Params
from winnow.curation.dataset import check_curated, finished_record, plan_digest, pool_columns, summarize, write_curated
from winnow.curation.rules import RULES, RuleInputs, image_text_similarity
from winnow.datasets.contract import read_manifest, shard_files
from winnow.errors import CheckpointError, MissingInput, StaleInput
from winnow.files import atomic_path, write_json
from winnow.method import ledger, objectives
from winnow.method.checkpoints import load_checkpoint, model_from_checkpoint, state_hash
from winnow.method.devices import autocast, pick_device
from winnow.method.evaluation import class_probabilities
from winnow.method.objectives import OBJECTIVES
from winnow.reports.curate import grid_examples, write_curate_report
from winnow.scores import scoring, store
from winnow.stages.inputs import claim_outputs, decode_with, num_classes, read_json, reference_model
from winnow.stages.lineage import record_run, stage_key
from winnow.stages.paths import Paths
from winnow.stages.score import reference_losses, scored_pool_hash

log = logging.getLogger("winnow")


def curate_stage(params: Params, dest: str | Path | None = None, on_shard=None) -> dict:
    """`winnow curate`: rank the pool by params.curate.rule from this run's scorer in the store (checked
    against this pool and reference), keep its fraction, write the curated dataset (Paths.curated unless
    `dest`), metrics/<dataset>/<objective>/curate.json and the curate report with its image grids."""
    cfg, started = params.curate, time.perf_counter()
    paths = claim_outputs(params)
    decode_with(params)
    dest = Path(dest) if dest is not None else paths.curated
    rule = RULES[cfg.rule]
    meta = pool_columns(paths.data / "pool", ("label", "pathology", "caption"))  # by id, images not decoded
    inputs, provenance, paid = _rule_inputs(params, rule, meta["label"])
    shown, kept = rule.scores(inputs), rule.keep(inputs, cfg.fraction, cfg.balance)
    log.info("curate: %s keeps %d of %d pool examples", cfg.rule, len(kept), len(inputs.labels))
    class_names = read_manifest(paths.data)["class_names"]
    record = finished_record(dest, plan_digest(kept, provenance, paths.data))
    if record is not None:  # the same curation, complete: its record (and the seconds it measured) stands
        log.info("curate: %s already holds this curation; reused", dest)
    else:
        written = write_curated(paths.data, dest, kept, provenance, on_shard)
        check_curated(dest)
        record = {
            **provenance,
            "dest": str(dest),
            **summarize(kept, inputs.labels, meta["pathology"], class_names),
            **written,
            **paid,
            "seconds": time.perf_counter() - started + paid.get("pass_seconds", 0.0) - paid.get("pass_seconds_now", 0.0),
        }
        record.pop("pass_seconds_now", None)
        write_json(record, dest / "curation.json")
    write_json(record, paths.curate_record)
    captions = OBJECTIVES[params.objective].joint  # what the objective learns from: the caption, or the label
    examples = grid_examples(paths.data / "pool", kept, shown, meta, class_names, captions, params.seed)
    write_curate_report(record, examples, paths)
    record_run("curate", params)
    return record


def _rule_inputs(params: Params, rule, labels: np.ndarray) -> tuple[RuleInputs, dict, dict]:
    """What the rule reads, indexed by pool id: the reference's losses from the store (checked against this pool
    and reference) and what the rule needs beyond them; the curation's provenance; and what any pass of a model
    over the pool cost (its FLOPs and seconds, paid in full)."""
    paths, cfg = Paths.of(params), params.curate
    reference_loss = reference_losses(params)  # this pool's and this reference's scorer, complete
    scorer = read_json(paths.scorer, "run `winnow score` first")
    inputs = RuleInputs(reference_loss, labels)
    provenance = {
        "source": str(paths.data),
        "source_pool_sha256": scorer["dataset_hash"].split("|")[0],  # the shards' own hash, without how they decode
        "objective": params.objective,
        "scorer_id": scorer["scorer_id"],
        "reference_model": params.reference.model,
        "reference_sha256": scorer["model_hash"],
        "rule": cfg.rule,
        "fraction": cfg.fraction if rule.ranks else None,
        "balance": cfg.balance,
    }
    paid = {}
    if rule.needs == "probs":
        inputs.probs, paid = _pool_pass(params, reference_model(params), params.reference.model, "probs")
    elif rule.needs == "model_loss":
        model, name, path = _checkpoint_scorer(params)
        inputs.model_loss, paid = _pool_pass(params, model, name, "loss")
        provenance.update(checkpoint=str(path), checkpoint_scorer=cfg.scorer, checkpoint_model=name)
        provenance["checkpoint_sha256"] = state_hash(model)
    elif rule.needs == "similarity":
        image, text = store.load_embeddings(paths.store, scorer["scorer_id"])
        inputs.similarity = np.full(len(reference_loss), np.nan, dtype=np.float32)
        inputs.similarity[: len(image)] = image_text_similarity(image, text)
    return inputs, provenance, paid


def _checkpoint_scorer(params):
    """The finished model of the curate.policy train run that scores the pool for rule learnability: its actor
    or its learner, trained on exactly this run's inputs (else stale)."""

    cfg, paths = params.curate, Paths.of(params)
    path, key = paths.learner(cfg.policy), stage_key("train", params, cfg.policy)
    device = pick_device(params.device)
    if cfg.scorer == "learner" and path.exists():
        return model_from_checkpoint(path, device, key), params.train.model, path
    if not path.exists():
        raise MissingInput(f"{path}: no checkpoint to curate with; run `winnow train --policy {cfg.policy}` first")
    ckpt = load_checkpoint(path)
    if not ckpt.get("complete") or ckpt.get("lineage_key") != key:
        raise StaleInput(
            f"{path}: unfinished, or trained on other inputs than this run's; rerun `winnow train --policy {cfg.policy}`"
        )
    if "actor" not in ckpt:
        raise CheckpointError(f"{path}: holds no actor (its run scored with the learner); set curate.scorer: learner")
    resolution = params.train.score_resolution or params.data.image_size
    actor = OBJECTIVES[params.objective].build_model(params.train.actor, num_classes(params), resolution)
    actor.load_state_dict(ckpt["actor"])
    return actor.to(device), params.train.actor, path


def _pool_pass(params, model, model_name: str, what: str) -> tuple[np.ndarray, dict]:
    """One forward pass of `model` over the pool, shard by shard into artifacts/.../curate/<what>-<model hash>/
    (each shard's file whole or absent, so a killed pass resumes): per example id its loss ("loss") or its
    softmax probabilities ("probs"), NaN where unscorable. Returns them and the pass's measured cost."""

    paths = Paths.of(params)
    size, classes, batch = params.data.image_size, num_classes(params), params.score.batch_size
    pool = scored_pool_hash(params)  # the pool as it is decoded (data.fit): a pass under another fit is another pass
    key = [what, state_hash(model), pool, params.objective, model_name, size, batch, params.precision]
    folder = paths.pool_pass(what, hashlib.sha256(json.dumps(key).encode()).hexdigest()[:16])
    cost_path = folder / "cost.json"  # what the whole pass cost, over every run that wrote part of it
    cost = json.loads(cost_path.read_text()) if cost_path.exists() else {"flops_per_example": None, "rows": 0, "seconds": 0.0}
    cost["now"] = 0.0  # this call's seconds
    started, flops_per_example, rows = time.perf_counter(), cost["flops_per_example"], 0
    for shard in tqdm(shard_files(paths.data / "pool"), desc=f"curate {what}", unit="shard", leave=False, disable=None):
        out = folder / shard.name
        if out.exists():
            continue
        split, targets = None, None
        if flops_per_example is None or what == "probs":
            split, targets = objectives.decode_shard(params.objective, model_name, shard, size, classes, (), params.data.fit)
        if flops_per_example is None and len(split):
            loss = objectives.OBJECTIVES[params.objective].loss
            flops_per_example = ledger.forward_flops_per_example(model, loss, split.images[:batch], targets[:batch])
        with autocast(next(model.parameters()).device, params.precision):
            if what == "loss":
                done = scoring.write_shard_scores(
                    model, shard, folder, size, classes, batch, params.objective, model_name, fit=params.data.fit
                )
                rows += done
                _add_cost(cost_path, cost, flops_per_example, done, started)
                started = time.perf_counter()
                continue
            probs = class_probabilities(model, split.images, batch).numpy()
        table = pa.table(
            {
                "example_id": pa.array(split.ids, pa.int64()),
                "probs": pa.FixedSizeListArray.from_arrays(pa.array(probs.ravel(), pa.float32()), classes),
            }
        )
        with atomic_path(out) as tmp:
            pq.write_table(table, tmp)
        rows += len(split)
        _add_cost(cost_path, cost, flops_per_example, len(split), started)
        started = time.perf_counter()
    n = sum(pq.read_metadata(p).num_rows for p in shard_files(paths.data / "pool"))
    values = np.full((n, classes) if what == "probs" else n, np.nan, dtype=np.float32)
    for path in sorted(folder.glob("part-*.parquet")):
        table = pq.read_table(path)
        ids = table.column("example_id").to_numpy()
        if what == "probs":
            values[ids] = table.column("probs").combine_chunks().flatten().to_numpy().reshape(len(ids), classes)
        else:
            values[ids] = table.column("loss").to_numpy(zero_copy_only=False)
    paid = {"pass": what, "pass_rows": cost["rows"], "pass_seconds": cost["seconds"], "pass_seconds_now": cost["now"]}
    if cost["flops_per_example"] is not None:
        paid["pass_flops"] = cost["flops_per_example"] * cost["rows"]
    return values, paid


def _add_cost(path: Path, cost: dict, flops_per_example: float | None, rows: int, started: float) -> None:
    """Count one more shard of a pool pass (its rows and seconds) in the pass's cost.json."""
    seconds = time.perf_counter() - started
    cost.update(flops_per_example=flops_per_example, rows=cost["rows"] + rows, seconds=cost["seconds"] + seconds)
    cost["now"] = cost.get("now", 0.0) + seconds
    write_json({k: v for k, v in cost.items() if k != "now"}, path)
