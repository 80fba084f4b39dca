"""The stages of docs/DESIGN.md as plain functions over Params: what each reads and writes.

Prefect tasks (tasks/) and DVC stages (dvc.yaml, through the CLI) both call these;
there is no Prefect in here. Each stage checks what exists and does the rest.
"""

from __future__ import annotations

import functools
import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch.utils.flop_counter import FlopCounterMode

from winnow.config import Params
from winnow.datasets.contract import generated, load_split, read_manifest, shard_files, split_hash, value_counts
from winnow.datasets.stream import InMemory, ShardStream, shard_rows
from winnow.datasets.synth import PATHOLOGIES, generator_params, synthesize
from winnow.errors import CheckpointError, DataError, MissingInput, StaleInput, StoreError
from winnow.files import write_csv, write_json
from winnow.method import ledger, objectives
from winnow.method.devices import autocast, init_distributed, pick_device
from winnow.method.objectives import OBJECTIVES
from winnow.method.selection import POLICIES
from winnow.method.training import load_checkpoint, reference_logits, state_hash, train
from winnow.reports import report
from winnow.scores import scoring, store
from winnow.stages import lineage

log = logging.getLogger("winnow")


@dataclass(frozen=True)
class Paths:
    """Where every stage's files live, derived from params and never hard-coded elsewhere.

    Outputs are kept per dataset (data.name) and objective, so runs on different data never
    overwrite each other. The score store is shared: its scorers are keyed by model and data.
    """

    data: Path
    artifacts_root: Path
    metrics_root: Path
    plots_root: Path
    reports_root: Path
    dataset: str
    objective: str

    @classmethod
    def of(cls, params: Params) -> "Paths":
        return cls(
            Path(params.data.root),
            Path(params.artifacts),
            Path(params.metrics),
            Path(params.plots),
            Path(params.reports),
            params.data.name,
            params.objective,
        )

    @property
    def artifacts(self) -> Path:
        return self.artifacts_root / self.dataset / self.objective

    @property
    def metrics(self) -> Path:
        return self.metrics_root / self.dataset / self.objective

    @property
    def plots(self) -> Path:
        return self.plots_root / self.dataset / self.objective

    @property
    def report(self) -> Path:
        return self.reports_root / self.dataset / f"{self.objective}.md"

    @property
    def store(self) -> Path:
        return self.artifacts_root / "scores.duckdb"

    def score_shards(self, scorer_id: str) -> Path:
        return self.artifacts_root / "score_shards" / scorer_id

    def scoring_record(self, scorer_id: str) -> Path:
        """What scoring measured (rows, seconds, rates), kept with the scorer's shards for every later reuse."""
        return self.score_shards(scorer_id) / "scoring.json"

    @property
    def reference(self) -> Path:
        return self.artifacts / "reference.pt"

    @property
    def scorer(self) -> Path:
        """Which scorer in the store holds this run's reference losses (written by score, read by train)."""
        return self.artifacts / "scorer.json"

    def learner(self, policy: str) -> Path:
        return self.artifacts / "learners" / f"{policy}.pt"

    @property
    def curated(self) -> Path:
        """`winnow curate`'s dataset, a data root of its own (so its runs are named <dataset>-<objective>)."""
        return self.artifacts_root / "curated" / f"{self.dataset}-{self.objective}"

    @property
    def curate_plots(self) -> Path:
        return self.plots_root / self.dataset / f"{self.objective}-curate"

    @property
    def curate_report(self) -> Path:
        return self.reports_root / self.dataset / f"curate-{self.objective}.md"

    @property
    def bench(self) -> Path:
        """`winnow bench` results: <objective>.json, <objective>/curves/, memory.json."""
        return self.metrics_root / self.dataset / "bench"

    @property
    def bench_plots(self) -> Path:
        return self.plots_root / self.dataset / "bench" / self.objective

    @property
    def bench_report(self) -> Path:
        return self.reports_root / self.dataset / f"bench-{self.objective}.md"


@functools.lru_cache(maxsize=8)
def _split(folder: str, size: int, num_classes: int | None, stamp: tuple):
    return load_split(folder, size, num_classes)


def split(params: Params, name: str):
    """A decoded split, cached in-process (keyed on each shard's name, size and mtime, so a rewritten
    shard is decoded anew) so a pipeline decodes it once. Training splits keep only the rows the
    objective can use (the rest are in .skipped)."""
    folder = Path(params.data.root) / name
    classes = num_classes(params) if name in ("pool", "curated", "eval/test") else None
    stamp = tuple((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.glob("part-*.parquet")))
    data = _split(str(folder), params.data.image_size, classes, stamp)
    return OBJECTIVES[params.objective].usable(data) if name in ("pool", "curated") else data


def num_classes(params: Params) -> int:
    return len(read_manifest(params.data.root)["class_names"])


def model_from_checkpoint(path: Path, device: torch.device | str = "cpu", inputs: str | None = None) -> torch.nn.Module:
    """The finished model in a checkpoint; with `inputs` (its stage's lineage key), only if it was
    trained on exactly those inputs: a model from other data, params or code is stale."""
    ckpt = load_checkpoint(path)
    if not ckpt.get("complete"):
        raise CheckpointError(
            f"{path}: this checkpoint is from an unfinished run (step {ckpt.get('step')}); rerun its stage to finish it"
        )
    if inputs is not None and ckpt.get("inputs") != inputs:
        raise StaleInput(
            f"{path}: was trained on other data, params or code than this run's; rerun the stage that writes it "
            f"(`winnow pipeline` reruns what is stale)"
        )
    meta = ckpt["meta"]
    model = OBJECTIVES[meta["objective"]].build_model(meta["model_name"], meta["num_classes"], meta["image_size"])
    model.load_state_dict(ckpt["model"])
    return model.to(device)


def claim_outputs(params: Params) -> Paths:
    """This run's Paths, after checking that its dataset's name is not already used by another folder
    (outputs are kept by data.name: two folders of one name would overwrite each other's results)."""
    paths = Paths.of(params)
    owner, root = paths.artifacts_root / paths.dataset / "dataset.json", str(Path(params.data.root).resolve())
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
def _cached_model(path: str, stamp: int, device: str, inputs: str) -> torch.nn.Module:
    return model_from_checkpoint(Path(path), device, inputs)


# ---------------------------------------------------------------- stages


def data_stage(params: Params, force: bool = False) -> dict:
    """Generate the built-in pool unless its manifest records the same params, seed and generator code.
    An imported dataset (a manifest with no generator) is used as it is; synthesize refuses any
    folder it does not own, so a user's data is never overwritten."""
    root = Path(params.data.root)
    if (root / "manifest.json").exists() and not force:
        manifest = read_manifest(root)
        if not generated(manifest):
            return {"root": str(root), "generated": False, "counts": manifest.get("counts"), "imported": True}
        if manifest["generator"] == json.loads(json.dumps(generator_params(params.data))):
            return {"root": str(root), "generated": False, "counts": manifest["counts"]}
    started = time.perf_counter()
    synthesize(params.data, root)
    manifest = read_manifest(root)
    return {"root": str(root), "generated": True, "counts": manifest["counts"], "seconds": time.perf_counter() - started}


def reference_stage(params: Params) -> dict:
    """Train the reference model on the curated set; checkpoint + metrics/<objective>/reference.json."""
    paths, cfg = claim_outputs(params), params.reference
    curated, test = split(params, "curated"), split(params, "eval/test")
    objective = OBJECTIVES[params.objective]
    torch.manual_seed(params.seed)
    resolution = params.score.resolution or params.data.image_size  # a scorer learns at the resolution it scores at
    model = objective.build_model(cfg.model, num_classes(params), resolution).to(pick_device(params.device))
    targets = objective.targets(cfg.model, curated)
    out = train(
        model,
        curated,
        cfg,
        seed=params.seed,
        targets=targets,
        loss_fn=objective.loss,
        evaluate=_target_metric(params, cfg.model, test),
        eval_every=max(1, cfg.steps // 10),
        checkpoint_path=paths.reference,
        checkpoint_every=max(1, cfg.steps // 4),
        meta=_meta(cfg.model, params, resolution),
        precision=params.precision,
        desc="reference",
        inputs=lineage.stage_key("reference", params),
    )
    metrics = {
        "model": cfg.model,
        "resolution": resolution,
        "steps": cfg.steps,
        "batch_size": cfg.batch_size,
        "train_examples": len(curated),
        "test_metric": objective.metric,
        "final_metric": out["eval_log"][-1][objective.metric],
        "forward_flops_per_example": _flops(model, objective.loss, curated.images, targets, cfg.batch_size),
        "score_forward_flops_per_example": _flops(model, objective.loss, curated.images, targets, params.score.batch_size),
        "seconds": out["seconds"],
        "parameters": sum(p.numel() for p in model.parameters()),
        "model_hash": state_hash(model),
    }
    write_json(metrics, paths.metrics / "reference.json")
    return metrics


def score_plan(params: Params) -> dict:
    """Register this (reference, pool) scorer in the store, or find it complete and reuse it.
    Returns the score result so far, with `todo`: the pool shards still to score (none when reused).
    Writes the scorer's identity (Paths.scorer) that train checks its pool and reference against."""
    paths = claim_outputs(params)
    pool_dir = paths.data / "pool"
    model = reference_model(params)
    check_pool_ids(pool_dir)  # before anything is scored: a bad id would only surface in training
    model_hash, dataset_hash = state_hash(model), split_hash(pool_dir)
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
            for previous in (paths.scoring_record(scorer_id), paths.metrics / "score.json"):
                if previous.exists() and json.loads(previous.read_text()).get("scorer_id") == scorer_id:
                    result.update({k: v for k, v in json.loads(previous.read_text()).items() if k not in result})
                    break
            unscorable = store.unscorable(con, scorer_id)
            result.update(
                reused=True, num_examples=existing["num_examples"], seconds=existing["seconds"], unscorable=unscorable, todo=[]
            )
            write_json({k: v for k, v in result.items() if k != "todo"}, paths.metrics / "score.json")
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
        )
    counts["scoring_rows_per_s"] = counts["rows_scored"] / counts["seconds"] if counts["seconds"] else None
    counts["bare_forward_rows_per_s"] = bare
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
    write_json(result, paths.scoring_record(scorer_id))
    write_json(result, paths.metrics / "score.json")
    return result


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
        )
    return score_finish(params, plan, counts)


def pool_sampler(params: Params, model_name: str, seed: int, rank: int = 0, world: int = 1):
    """The learner's pool: held in memory when it fits in train.shuffle_buffer, else streamed
    shard by shard through a buffer of that size (memory no longer grows with the pool)."""
    folder = Path(params.data.root) / "pool"
    if sum(shard_rows(folder)) <= params.train.shuffle_buffer:
        pool = split(params, "pool")
        return InMemory(
            pool, OBJECTIVES[params.objective].targets(model_name, pool), seed, pool.columns.get("pathology"), rank, world
        )
    decode = functools.partial(
        objectives.decode_shard, params.objective, model_name, size=params.data.image_size, num_classes=num_classes(params)
    )
    return ShardStream(folder, decode, params.train.shuffle_buffer, seed, rank, world)


def reference_losses(params: Params) -> np.ndarray:
    """The reference's loss per pool example id, from the scorer that the score stage recorded, after
    checking that it scored this very pool with this very reference (else the losses are stale)."""
    paths = Paths.of(params)
    scorer = read_json(paths.scorer, "run `winnow score` first")
    pool_hash, model_hash = split_hash(paths.data / "pool"), state_hash(reference_model(params))
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


def train_stage(params: Params, policy: str) -> dict:
    """Train the learner with one selection policy; checkpoint, per-step log and eval curve.
    Under torchrun every rank runs this and rank 0 writes the outputs (tasks/launch.py starts the
    ranks for train.nproc_per_node > 1)."""
    paths, cfg = claim_outputs(params), params.train
    rank, world = init_distributed()
    test = split(params, "eval/test")
    jest = POLICIES[policy].selects and cfg.selection == "jest"
    reference_loss = torch.from_numpy(reference_losses(params)) if POLICIES[policy].reference_loss and not jest else None
    embeddings = reference_embeddings(params) if POLICIES[policy].reference_loss and jest else None
    sampler = pool_sampler(params, cfg.model, params.seed + 1, rank, world)
    torch.manual_seed(params.seed + 1)
    objective, device = OBJECTIVES[params.objective], pick_device(params.device)
    model = objective.build_model(cfg.model, num_classes(params), params.data.image_size).to(device)
    actor, actor_info = _actor(params, policy, device)
    first = sampler.peek(cfg.super_batch_size)
    flops = {"forward_flops_per_example": _flops(model, objective.loss, first.images, first.targets, cfg.batch_size)}
    if POLICIES[policy].actor_loss:  # the online loss's cost: the actor's forward over each super-batch, and its training
        scorer = actor if actor is not None else model
        flops["actor_super_batch_forward_flops_per_example"] = _flops(
            scorer, objective.loss, first.images, first.targets, cfg.super_batch_size
        )
        if actor is not None:
            flops["actor_forward_flops_per_example"] = _flops(
                actor, objective.loss, first.images, first.targets, actor_info["actor_trained_per_step"]
            )
    if embeddings is not None:  # JEST's per-step reference logits, from the stored features: each rank its own share's
        share = cfg.super_batch_size // world
        with FlopCounterMode(display=False) as counter:
            reference_logits(embeddings[0][:share], embeddings[1][:share], embeddings[2])
        flops["reference_logits_flops_per_step"] = float(counter.get_total_flops()) * world
    out = train(
        model,
        sampler,
        cfg,
        seed=params.seed + 1,
        policy=policy,
        keep_fraction=cfg.keep_fraction,
        selection=cfg.selection,
        temperature=cfg.temperature,
        jest_chunks=cfg.jest_chunks,
        reference_loss=reference_loss,
        reference_embeddings=embeddings,
        actor=actor,
        actor_trains_on=cfg.actor_trains_on,
        loss_fn=objective.loss,
        evaluate=_target_metric(params, cfg.model, test),
        eval_every=cfg.eval_every,
        checkpoint_path=paths.learner(policy),
        checkpoint_every=cfg.checkpoint_every,
        meta=_meta(cfg.model, params, params.data.image_size),
        precision=params.precision,
        desc=policy,
        inputs=lineage.stage_key("train", params, policy),
    )
    selected = {
        k[len("selected_") :]: float(np.mean([r.get(k, 0.0) for r in out["steps_log"]]))
        for k in out["steps_log"][-1]
        if k.startswith("selected_")
    }
    streamed = isinstance(sampler, ShardStream)
    metrics = {
        "policy": policy,
        "steps": cfg.steps,
        "final_metric": out["eval_log"][-1][objective.metric] if out["eval_log"] else None,
        "seconds": out["seconds"],
        "seconds_per_step": out["seconds"] / cfg.steps,
        "clock": out["clock"],
        "batch_size": cfg.batch_size,
        "super_batch_size": cfg.super_batch_size,
        "selection": cfg.selection if POLICIES[policy].selects else None,
        **actor_info,
        "selected_mix": selected,
        "pool_size": sampler.size,
        "pool_skipped": sum(map(len, sampler.skipped.values())) if streamed else len(sampler.split.skipped),
        **flops,
    }
    if streamed:
        metrics.update(pool_streamed=True, shuffle_buffer=sampler.capacity)
    if world > 1:
        metrics["world_size"] = world
    if rank == 0:
        write_csv(out["eval_log"], paths.metrics / "curves" / f"{policy}.csv")
        write_csv(out["steps_log"], paths.metrics / "steps" / f"{policy}.csv")
        write_json(metrics, paths.metrics / "train" / f"{policy}.json")
    return metrics


def evaluate_stage(params: Params) -> dict:
    """Transfer metrics of the reference and every learner: held-out (or zero-shot) accuracy, a linear
    probe on every transfer task (eval/<task>/: the generator's texture, or tasks imported with --eval)
    and, for CLIP, zero-shot accuracy on each task and retrieval recall@1/5/10.
    Each checkpoint must have been trained on this run's inputs (its lineage key), never a stale one."""
    paths = Paths.of(params)
    tasks = read_manifest(params.data.root)["tasks"]
    test = split(params, "eval/test")
    transfer = {name: split(params, f"eval/{name}") for name in sorted(tasks) if tasks[name].get("probe")}  # may be none
    models = [("reference", paths.reference, params.reference.model, lineage.stage_key("reference", params))]
    models += [(p, paths.learner(p), params.train.model, lineage.stage_key("train", params, p)) for p in params.train.policies]
    results = {}
    for name, path, model_name, inputs in models:
        model = model_from_checkpoint(path, pick_device(params.device), inputs)
        results[name] = OBJECTIVES[params.objective].evaluate_model(
            model, model_name, test, transfer, tasks, params.evaluate.probe_steps, params.evaluate.probe_lr, params.seed
        )
    write_json(results, paths.metrics / "evaluate.json")
    return results


def summary_stage(params: Params, write_report: bool = True) -> dict:
    """summary.json: the uniform target; per policy steps_to_target, step_ratio, what it selected,
    and the compute ledger (FLOPs to target, flop ratios); with the report and plots unless told not to."""
    paths = Paths.of(params)
    curves = {p: report.read_csv(paths.metrics / "curves" / f"{p}.csv") for p in params.train.policies}
    trained = {
        p: read_json(paths.metrics / "train" / f"{p}.json", f"run `winnow train --policy {p}`") for p in params.train.policies
    }
    evaluated_path = paths.metrics / "evaluate.json"  # transfer metrics join the summary when evaluated (the bench skips it)
    evaluated = json.loads(evaluated_path.read_text()) if evaluated_path.exists() else {}
    counts = value_counts(
        paths.data / "pool", "pathology"
    )  # known where the data has a pathology column (the generated pool, or imported)
    known = {p: i for i, p in enumerate(PATHOLOGIES)}  # the generator's kinds in its order, then any others the data names
    pool_mix = {
        str(p): counts[p] / sum(counts.values()) for p in sorted(counts, key=lambda p: (known.get(p, len(known)), str(p)))
    }
    objective = OBJECTIVES[params.objective]
    summary = report.summarize(curves, trained, evaluated, pool_mix, params.train.steps, objective.metric, objective.noise)
    summary["reference"] = read_json(paths.metrics / "reference.json", "run `winnow reference` first")
    score = read_json(paths.metrics / "score.json", "run `winnow score` first")
    summary["ledger"] = ledger.run_ledger(summary, trained, summary["reference"], score, params.bench.amortise_over)
    for policy, row in summary["ledger"]["policies"].items():
        summary["policies"][policy].update({k: row[k] for k in ledger.HEADLINE})
    curated = paths.metrics / "curate.json"  # what `winnow curate` kept, when it ran: the report shows it
    if curated.exists():
        record = json.loads(curated.read_text())
        summary["curate"] = {k: record[k] for k in ("rule", "fraction", "balance", "kept_rows", "pool_rows", "pathology", "dest")}
    write_json(summary, paths.metrics / "summary.json")
    if write_report:
        report.write_report(summary, curves, paths, params)
    return summary


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


def _flops(model, loss_fn, images, targets, batch_size: int) -> float:
    n = min(batch_size, len(images))
    return ledger.forward_flops_per_example(model, loss_fn, images[:n], targets[:n])


def _target_metric(params: Params, model_name: str, test):
    class_names = read_manifest(params.data.root)["tasks"]["test"]["class_names"]
    return OBJECTIVES[params.objective].target_metric(model_name, test, class_names)


def _meta(model_name: str, params: Params, image_size: int) -> dict:
    return {
        "model_name": model_name,
        "num_classes": num_classes(params),
        "image_size": image_size,  # the resolution it was built for (a scorer's may be lower than the data's)
        "objective": params.objective,
    }


def read_json(path: Path, fix: str) -> dict:
    """A stage's JSON input; missing or unreadable is an error saying which stage writes it."""
    if not path.exists():
        raise MissingInput(f"{path}: missing; {fix}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise StaleInput(f"{path}: not readable JSON ({e}); {fix}") from e
