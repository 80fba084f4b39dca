"""The score stage: the reference's loss of every pool example into the score store, once; and what later
stages read of it (the losses and embeddings, checked against this pool and this reference).
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from winnow.config import Params
from winnow.datasets.contract import shard_files, split_hash
from winnow.datasets.images import DECODE_VERSION
from winnow.datasets.stream import shard_rows
from winnow.errors import DataError, StaleInput, StoreError
from winnow.files import write_json
from winnow.method.checkpoints import state_hash
from winnow.method.devices import autocast
from winnow.method.objectives import OBJECTIVES
from winnow.scores import scoring, store
from winnow.stages.inputs import claim_outputs, decode_with, num_classes, read_json, reference_model
from winnow.stages.lineage import record_run
from winnow.stages.paths import Paths
from winnow.stages.records import ScoreRecord

log = logging.getLogger("winnow")


def scored_pool_hash(params: Params) -> str:
    """The pool as the scorer read it: its shards' content, the decoder's version (images.DECODE_VERSION: other
    pixels, other losses, even from a reference loaded from a checkpoint) and how images were fitted to the size
    (data.fit)."""
    pool = split_hash(Paths.of(params).data / "pool")
    return f"{pool}|decode={DECODE_VERSION}|fit={params.data.fit}"


def score_plan(params: Params) -> dict:
    """Register this (reference, pool) scorer in the store, or find it complete and reuse it.
    Returns the score result so far, with `todo`: the pool shards still to score (none when reused).
    Writes the scorer's identity (Paths.scorer) that train checks its pool and reference against."""
    paths = claim_outputs(params)
    decode_with(params)
    pool_dir = paths.data / "pool"
    model = reference_model(params)
    check_pool_ids(pool_dir)  # before anything is scored: a bad id would only surface in training
    model_hash, dataset_hash = state_hash(model), scored_pool_hash(params)
    scorer_id = store.scorer_id_for(model_hash, dataset_hash, params.objective)
    result = {"scorer_id": scorer_id, "model_hash": model_hash, "dataset_hash": dataset_hash, "objective": params.objective}
    write_json(result, paths.scorer)
    with store.connect(paths.store) as con:
        existing = store.find_scorer(con, scorer_id)
        if existing is not None and OBJECTIVES[params.objective].joint and not store.embeddings_complete(con, scorer_id):
            # scored (in full or in part) before the store held features: its shard files and rows are redone
            log.warning("scorer %s was stored without embeddings (before JEST); scoring it again", scorer_id)
            shutil.rmtree(paths.score_shards(scorer_id), ignore_errors=True)  # first: a crash in between rescores no less
            store.drop_scorer(con, scorer_id)
            existing = None
        if existing is not None and existing["completed_at"] is not None:
            # the figures measured when it was scored: kept beside its shards (DVC removes score.json before a rerun)
            for previous in (paths.scoring_record(scorer_id), paths.score_record):
                if previous.exists() and json.loads(previous.read_text()).get("scorer_id") == scorer_id:
                    measured = json.loads(previous.read_text()).items()
                    result.update({k: v for k, v in measured if k not in result and k in ScoreRecord.model_fields})
                    break
            unscorable = store.unscorable(con, scorer_id)
            result.update(
                reused=True, num_examples=existing["num_examples"], seconds=existing["seconds"], unscorable=unscorable, todo=[]
            )
            ScoreRecord(**{k: v for k, v in result.items() if k != "todo"}).write(paths.score_record)
            record_run("score", params)
            return result
        store.register_scorer(con, scorer_id, model_hash, dataset_hash, params.objective, params.reference.model)
    done = paths.score_shards(scorer_id)
    result.update(reused=False, todo=[p.name for p in shard_files(pool_dir) if not (done / p.name).exists()])
    return result


def check_pool_ids(pool_dir: Path) -> None:
    """The data contract's pool ids: unique and dense from 0 (the learner indexes reference losses by
    id). Read shard by shard, ids only, before any scoring; an error names the shard and row."""
    total = sum(shard_rows(pool_dir))
    seen = np.zeros(total, dtype=bool)
    for path in shard_files(pool_dir):
        column = pq.read_table(path, columns=["id"]).column("id")
        if column.null_count or not pa.types.is_integer(column.type):
            raise DataError(f"{path}: column 'id' must be int64 with no nulls (it is {column.type}, {column.null_count} null)")
        ids = column.to_numpy()
        outside = np.flatnonzero((ids < 0) | (ids >= total))
        if len(outside):
            raise DataError(
                f"{path}: row {outside[0]} has id {ids[outside[0]]}; pool ids must be dense, 0 to {total - 1} for these "
                f"{total} rows (`winnow data import` writes them so)"
            )
        order = np.argsort(ids, kind="stable")
        again = order[1:][ids[order[1:]] == ids[order[:-1]]]  # rows whose id came earlier in this shard
        repeated = np.union1d(again, np.flatnonzero(seen[ids]))  # ... or in an earlier shard
        if len(repeated):
            raise DataError(f"{path}: row {repeated[0]} repeats id {ids[repeated[0]]}; pool ids must be unique")
        seen[ids] = True


def score_one_shard(params: Params, scorer_id: str, shard: str) -> int:
    """Score one pool shard into the scorer's Parquet folder; any process that sees data/ and artifacts/ can."""
    paths = Paths.of(params)
    decode_with(params)  # a Dask worker's own
    model = reference_model(params)
    with autocast(next(model.parameters()).device, params.precision):
        return scoring.write_shard_scores(
            model,
            paths.data / "pool" / shard,
            paths.score_shards(scorer_id),
            params.data.image_size,
            num_classes(params),
            params.score.batch_size,
            params.objective,
            params.reference.model,
            fit=params.data.fit,
        )


def score_finish(params: Params, plan: dict, counts: dict) -> dict:
    """Ingest the scored shards (one writer: this process), check every pool row is there, mark the scorer complete."""
    paths, scorer_id = Paths.of(params), plan["scorer_id"]
    pool_dir = paths.data / "pool"
    ingested = scoring.ingest(paths.store, scorer_id, paths.score_shards(scorer_id))
    model = reference_model(params)
    with autocast(next(model.parameters()).device, params.precision):
        bare = scoring.bare_forward_rate(
            model,
            shard_files(pool_dir)[0],
            params.data.image_size,
            num_classes(params),
            params.score.batch_size,
            params.objective,
            params.reference.model,
            params.data.fit,
        )
    paid = scoring.spent(paths.score_shards(scorer_id))  # every run's shards, a killed run's too
    counts.update(seconds=paid["seconds"], seconds_this_run=counts["seconds"])
    counts["scoring_rows_per_s"] = paid["rows"] / paid["seconds"] if paid["seconds"] else None
    counts["bare_forward_rows_per_s"] = bare
    if paid["wait_seconds"] is not None:  # what bounds scoring: decoding (and tokenising) or the model's forward
        counts.update({k: paid[k] for k in ("decode_seconds", "wait_seconds", "forward_seconds")})
        counts["bound"] = "decode" if paid["decode_seconds"] > paid["forward_seconds"] else "compute"
    expected = sum(shard_rows(pool_dir))
    with store.connect(paths.store) as con:
        n = con.execute("SELECT count(*) FROM scores WHERE scorer_id = ?", [scorer_id]).fetchone()[0]
        if n != expected:
            raise StoreError(
                f"{paths.store}: scorer {scorer_id} has {n} rows for a pool of {expected}; "
                f"delete {paths.score_shards(scorer_id)} and rerun `winnow score`"
            )
        skipped = store.unscorable(con, scorer_id)
        store.mark_complete(con, scorer_id, counts["seconds"])
    result = {k: v for k, v in plan.items() if k != "todo"}
    result.update(num_examples=n, unscorable=skipped, **counts, **ingested)
    ScoreRecord(**result).write(paths.scoring_record(scorer_id))
    record = ScoreRecord(**result).write(paths.score_record)
    record_run("score", params)
    return record


def score_stage(params: Params, on_shard=None) -> dict:
    """Reference loss for every pool example into the store, shard by shard in this process;
    an existing complete scorer is reused. (The score flow can spread the shards over Dask.)"""
    plan = score_plan(params)
    if plan["reused"]:
        return {k: v for k, v in plan.items() if k != "todo"}
    paths = Paths.of(params)
    model = reference_model(params)
    with autocast(next(model.parameters()).device, params.precision):
        counts = scoring.score_shards(
            model,
            paths.data / "pool",
            paths.score_shards(plan["scorer_id"]),
            params.data.image_size,
            num_classes(params),
            params.score.batch_size,
            params.objective,
            params.reference.model,
            on_shard,
            fit=params.data.fit,
        )
    return score_finish(params, plan, counts)


def reference_losses(params: Params) -> np.ndarray:
    """The reference's loss per pool example id, from the scorer that the score stage recorded, after
    checking that it scored this very pool with this very reference (else the losses are stale)."""
    paths = Paths.of(params)
    scorer = read_json(paths.scorer, "run `winnow score` first")
    pool_hash, model_hash = scored_pool_hash(params), state_hash(reference_model(params))
    if scorer["dataset_hash"] != pool_hash or scorer["model_hash"] != model_hash:
        what = "pool" if scorer["dataset_hash"] != pool_hash else "reference model"
        raise StaleInput(
            f"{paths.scorer}: scorer {scorer['scorer_id']} scored another {what} than this run's; "
            f"rerun `winnow score` (it scores only what the store lacks)"
        )
    losses = store.load_losses(paths.store, scorer["scorer_id"])
    if len(losses) != sum(shard_rows(paths.data / "pool")):
        raise StaleInput(
            f"{paths.store}: scorer {scorer['scorer_id']} holds {len(losses)} pool ids, the pool has "
            f"{sum(shard_rows(paths.data / 'pool'))} rows; rerun `winnow score`"
        )
    return losses


def reference_embeddings(params: Params) -> tuple[torch.Tensor, torch.Tensor, float]:
    """JEST's reference: each pool pair's stored image and text features (by example id) and the reference's
    logit scale, after the same checks as reference_losses."""
    reference_losses(params)  # the scorer is this pool's and this reference's, and complete
    paths = Paths.of(params)
    image, text = store.load_embeddings(paths.store, read_json(paths.scorer, "run `winnow score`")["scorer_id"])
    scale = float(reference_model(params).logit_scale.detach().exp().cpu())
    return torch.from_numpy(image), torch.from_numpy(text), scale
