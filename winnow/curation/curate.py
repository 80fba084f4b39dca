"""Curate: keep a fraction of the pool by a rule and hand it over as a dataset (docs/DESIGN.md, Curate).

The offline twin of online selection, as DataComp's filtering baselines do it: score once,
keep a list of example ids, reshard. The rules rank pool examples from what the score store
already holds (or one more pass of a model over the pool):

- easy_reference: the reference's lowest losses (what the curated set taught it to expect);
- learnability: a trained checkpoint's loss (the actor of a train run, or its learner) minus
  the reference's, highest first (the paper's online score, frozen at the end of a run);
- clip_score (contrastive): DataComp's CLIP-score filter, the reference's image-text cosine
  similarity, highest first, from the features the store keeps;
- cleanlab (classification): what cleanlab's find_label_issues does not flag on the reference's
  predicted probabilities for the pool (out of sample: it learned from the curated set only).
  The fraction is cleanlab's to decide.

With `balance`, each class keeps the same fraction of its examples (a loss filter otherwise
drains the hard classes first). Unscored examples (undecodable) are never kept.

The curated dataset is the data contract: pool/part-*.parquet with ids renumbered dense from 0
and each row's pool id in `source_id`, the source's curated/ and eval/ copied, kept_ids.npy
(the source ids kept, sorted) and a manifest whose `curation` block says where it came from.
Every file is written whole or not at all and the manifest last: a killed curate reruns the
shards it lacks. The score store is opened read-only.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from tqdm import tqdm

from winnow.datasets.contract import file_sha256, read_manifest, shard_files, split_hash, value_counts
from winnow.errors import DataError
from winnow.files import atomic_path, write_json

log = logging.getLogger("winnow")

RULES = ("easy_reference", "learnability", "clip_score", "cleanlab")
FORMAT = 1  # of the curated dataset's layout (manifest `curation.format`)


# ---------------------------------------------------------------- the rules, over arrays indexed by example id


def rule_scores(
    rule: str,
    reference_loss: np.ndarray,
    model_loss: np.ndarray | None = None,
    similarity: np.ndarray | None = None,
) -> np.ndarray:
    """Each example's score under a ranking rule, higher kept first; NaN where it cannot be scored."""
    if rule == "easy_reference":
        return -reference_loss
    if rule == "learnability":
        if model_loss is None:
            raise ValueError("learnability needs the checkpoint's loss of every example")
        return model_loss - reference_loss
    if rule == "clip_score":
        if similarity is None:
            raise ValueError("clip_score needs the reference's image-text similarity of every pair")
        return similarity
    raise ValueError(f"rule {rule!r} does not rank examples; ranking rules: easy_reference, learnability, clip_score")


def keep_top(scores: np.ndarray, fraction: float, groups: np.ndarray | None = None) -> np.ndarray:
    """The ids (indices of `scores`) of the best round(fraction x n) examples, sorted; n is the pool's
    row count, or each group's with `groups` (class-balanced). NaN scores are never kept; ties go to
    the lower id, so the choice is the same on every machine."""
    scores = np.asarray(scores, dtype=np.float64)
    groups = np.zeros(len(scores), dtype=np.int64) if groups is None else np.asarray(groups)
    kept = []
    for group in np.unique(groups):
        members = np.flatnonzero(groups == group)
        quota = int(round(fraction * len(members)))
        members = members[~np.isnan(scores[members])]
        order = np.lexsort((members, -scores[members]))  # by score, highest first; then by id
        kept.append(members[order[:quota]])
    return np.sort(np.concatenate(kept)) if kept else np.zeros(0, dtype=np.int64)


def cleanlab_keep(labels: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """The ids cleanlab's find_label_issues does not flag, given out-of-sample predicted probabilities
    (rows of NaN, or a label of -1: unscored, never kept). Sorted."""
    from cleanlab.filter import find_label_issues

    scored = np.flatnonzero(~np.isnan(probs).any(axis=1) & (labels >= 0))
    if not len(scored):
        return np.zeros(0, dtype=np.int64)
    # n_jobs=1: cleanlab's default opens a fork-based multiprocessing pool, and forking a process that
    # already runs torch and Prefect threads can deadlock a worker on a lock held at fork time (seen hanging)
    issues = find_label_issues(labels[scored], probs[scored].astype(np.float64), n_jobs=1)
    return np.sort(scored[~issues])


def image_text_similarity(image: np.ndarray, text: np.ndarray) -> np.ndarray:
    """Cosine similarity of each pair's stored (L2-normalised) features: DataComp's CLIP score."""
    return np.einsum("nd,nd->n", image, text)


# ---------------------------------------------------------------- the pool's metadata, without decoding images


def pool_columns(pool: Path, columns=("label", "pathology")) -> dict[str, np.ndarray]:
    """Metadata columns of the pool indexed by example id (labels -1 where null, pathology None where
    the data records none), read shard by shard, ids and those columns only."""
    parts = []
    for path in shard_files(pool):
        names = pq.read_schema(path).names
        table = pq.read_table(path, columns=["id", *[c for c in columns if c in names]])
        parts.append({name: table.column(name).to_pylist() if name in names else [None] * table.num_rows for name in columns})
        parts[-1]["id"] = table.column("id").to_numpy()
    ids = np.concatenate([p["id"] for p in parts])
    out = {}
    for name in columns:
        values = np.empty(len(ids), dtype=object)
        values[ids] = [v for p in parts for v in p[name]]
        out[name] = values
    if "label" in out:
        out["label"] = np.array([-1 if v is None else int(v) for v in out["label"]], dtype=np.int64)
    return out


def summarize(kept: np.ndarray, labels: np.ndarray, pathology: np.ndarray, class_names: list[str]) -> dict:
    """What was kept against what the pool holds: rows, class balance and (where the data records it) the
    pathology mix, each as counts and shares."""
    n = len(labels)
    mask = np.zeros(n, dtype=bool)
    mask[kept] = True

    def counts(values, where):
        keys, c = np.unique(values[where].astype(str), return_counts=True)
        return {str(k): int(v) for k, v in zip(keys, c)}

    known = np.array([p is not None for p in pathology])
    classes = {}
    for label in range(len(class_names)):
        in_pool = int((labels == label).sum())
        in_kept = int((labels[mask] == label).sum())
        classes[class_names[label]] = {"pool": in_pool, "kept": in_kept, "kept_share": in_kept / in_pool if in_pool else None}
    mix = {}
    if known.any():
        pool_mix, kept_mix = counts(pathology, known), counts(pathology, known & mask)
        for kind, c in pool_mix.items():
            mix[kind] = {"pool": c, "kept": kept_mix.get(kind, 0), "kept_share": kept_mix.get(kind, 0) / c}
    return {
        "pool_rows": n,
        "kept_rows": int(mask.sum()),
        "kept_fraction": float(mask.mean()) if n else 0.0,
        "classes": classes,
        "pathology": mix,
    }


# ---------------------------------------------------------------- writing the curated dataset


def plan_digest(kept: np.ndarray, provenance: dict, source: Path) -> str:
    """What a curated dataset is: its kept ids, how they were chosen, the layout's version and the contents of
    the source's curated and eval sets it copies. A rerun with another digest starts over."""
    from winnow.stages.lineage import digest_path

    h = hashlib.sha256(np.ascontiguousarray(kept, dtype=np.int64).tobytes())
    copied = {folder: digest_path(source / folder) for folder in ("curated", "eval")}
    h.update(json.dumps({"provenance": provenance, "format": FORMAT, "copied": copied}, sort_keys=True, default=str).encode())
    return h.hexdigest()


def _ours(dest: Path) -> bool:
    """Whether a folder is a curated dataset (finished or not), so curate may replace it."""
    if (dest / "curation-plan.json").exists():
        return True
    try:
        return "curation" in read_manifest(dest)
    except DataError:
        return False


def _remove(dest: Path) -> None:
    """Move a folder aside, then delete it: a crash in between leaves no half-deleted dataset at `dest`."""
    trash = dest.with_name(f"{dest.name}.removing")
    shutil.rmtree(trash, ignore_errors=True)
    dest.rename(trash)
    shutil.rmtree(trash)


def _source_column(table: pa.Table) -> pa.Table:
    """Where this pool's ids go: `source_id`, after moving a column of that name (a user's own ids, or an earlier
    curation's) to `source_` + its name, so nothing is lost when a curated pool is curated again."""
    name = "source_id"
    while name in table.column_names:
        name = f"source_{name}"
    while name != "source_id":
        older = name.removeprefix("source_")
        table = table.rename_columns([name if c == older else c for c in table.column_names])
        name = older
    return table


def write_curated(source: Path, dest: Path, kept: np.ndarray, provenance: dict, on_shard=None) -> dict:
    """Write `dest` as a dataset in the data contract holding the source pool's rows whose id is in
    `kept` (sorted): pool shards named as the source's (one per source shard that keeps a row), ids
    renumbered 0..len(kept)-1 in source-id order and the source id in `source_id`; kept_ids.npy; the
    source's curated/ and eval/; the manifest last. Resumes: a shard already written is kept when the
    plan (kept ids, provenance, what is copied) is the same, and everything is redone when it is not.
    A folder that is not a curated dataset is never touched."""
    source, dest = Path(source), Path(dest)
    kept = np.asarray(kept, dtype=np.int64)
    if not len(kept):
        raise DataError(f"curate: rule {provenance['rule']} kept no example of {source / 'pool'}; raise curate.fraction")
    if np.any(np.diff(kept) <= 0):
        raise ValueError("kept ids must be sorted and unique")
    digest = plan_digest(kept, provenance, source)
    plan_path = dest / "curation-plan.json"
    if dest.exists() and any(dest.iterdir()):
        if not _ours(dest):
            raise DataError(f"{dest}: exists and is not a curated dataset; choose an empty or new folder")
        if json.loads(plan_path.read_text()).get("digest") != digest if plan_path.exists() else True:
            log.info("curate: %s holds another curation; writing it anew", dest)
            _remove(dest)
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "manifest.json").unlink(missing_ok=True)  # written last: none means unfinished
    write_json({"digest": digest}, plan_path)
    with atomic_path(dest / "kept_ids.npy") as tmp, open(tmp, "wb") as f:
        np.save(f, kept)
    written, started = 0, time.perf_counter()
    for path in tqdm(shard_files(source / "pool"), desc="curate", unit="shard", leave=False, disable=None):
        out = dest / "pool" / path.name
        ids = pq.read_table(path, columns=["id"]).column("id").to_numpy()
        mask = np.isin(ids, kept)
        if out.exists() or not mask.any():
            continue
        table = _source_column(pq.read_table(path).filter(pa.array(mask)))
        source_ids = table.column("id").to_numpy()
        renumbered = pa.array(np.searchsorted(kept, source_ids), pa.int64())
        table = table.set_column(table.schema.get_field_index("id"), "id", renumbered)
        table = table.append_column("source_id", pa.array(source_ids, pa.int64()))
        with atomic_path(out) as tmp:
            pq.write_table(table, tmp)
        written += 1
        if on_shard is not None:
            on_shard(out)
    for folder in ("curated", "eval"):  # the same curated and held-out sets: runs on it are comparable
        if (source / folder).is_dir() and not (dest / folder).exists():
            tmp = dest / f"{folder}.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.copytree(source / folder, tmp)
            tmp.rename(dest / folder)
    manifest = read_manifest(source)
    generator = manifest.pop("generator", None)  # a curated pool is not the generator's: data synth must never touch it
    manifest.pop("pool_hash", None)
    files = {
        p.relative_to(dest).as_posix(): file_sha256(p)
        for p in sorted(dest.rglob("part-*.parquet"))
        if p.relative_to(dest).parts[0] in ("pool", "curated", "eval")
    }
    manifest.update(files=files, content_hash=hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest())
    manifest["counts"] = {**manifest.get("counts", {}), "pool": int(len(kept))}
    if "pool_pathologies" in manifest["counts"]:
        kinds = value_counts(dest / "pool", "pathology")
        manifest["counts"]["pool_pathologies"] = {str(k): v for k, v in sorted(kinds.items())}
    manifest["curation"] = {
        "format": FORMAT,
        **provenance,
        "kept": int(len(kept)),
        "kept_ids_sha256": hashlib.sha256(np.ascontiguousarray(kept).tobytes()).hexdigest(),
        "source_content_hash": read_manifest(source).get("content_hash"),
        **({"source_generator": generator} if generator else {}),
    }
    write_json(manifest, dest / "manifest.json")
    return {"shards_written": written, "write_seconds": time.perf_counter() - started, "digest": digest}


def check_curated(dest: Path) -> None:
    """The curated dataset agrees with itself: its shards' source ids are exactly kept_ids.npy, and its ids
    run 0..n-1 in that order. Raises DataError naming what disagrees."""
    kept = np.load(dest / "kept_ids.npy")
    parts = [pq.read_table(p, columns=["id", "source_id"]) for p in shard_files(dest / "pool")] if len(kept) else []
    ids = np.concatenate([t.column("id").to_numpy() for t in parts]) if parts else np.zeros(0, np.int64)
    sources = np.concatenate([t.column("source_id").to_numpy() for t in parts]) if parts else np.zeros(0, np.int64)
    if not np.array_equal(np.sort(sources), kept):
        raise DataError(f"{dest}: the pool's source_id column and kept_ids.npy disagree; rerun `winnow curate`")
    if not np.array_equal(ids, np.searchsorted(kept, sources)):
        raise DataError(f"{dest}: pool ids are not the kept ids renumbered 0..{len(kept) - 1}; rerun `winnow curate`")


def model_outputs(model: torch.nn.Module, images: torch.Tensor, batch_size: int) -> torch.Tensor:
    """A classifier's softmax probabilities, no gradient, in batches."""
    from winnow.datasets.contract import to_input
    from winnow.method.losses import eval_mode

    device = next(model.parameters()).device
    with eval_mode(model):
        out = [
            torch.softmax(model(to_input(images[i : i + batch_size].to(device), model)).float(), dim=1).cpu()
            for i in range(0, len(images), batch_size)
        ]
    return torch.cat(out) if out else torch.zeros(0, 0)


# ---------------------------------------------------------------- the stage


def curate_stage(params, dest: str | Path | None = None, on_shard=None) -> dict:
    """`winnow curate`: rank the pool by params.curate.rule from this run's scorer in the store (checked
    against this pool and reference), keep its fraction, write the curated dataset (Paths.curated unless
    `dest`), metrics/<dataset>/<objective>/curate.json and the curate report with its image grids."""
    from winnow.method.objectives import OBJECTIVES
    from winnow.method.training import state_hash
    from winnow.scores import store
    from winnow.stages import pipeline

    cfg, started = params.curate, time.perf_counter()
    paths = pipeline.claim_outputs(params)
    dest = Path(dest) if dest is not None else paths.curated
    pool_dir = paths.data / "pool"
    reference_loss = pipeline.reference_losses(params)  # this pool's and this reference's scorer, complete
    scorer = pipeline.read_json(paths.scorer, "run `winnow score` first")
    meta = pool_columns(pool_dir, ("label", "pathology", "caption"))
    labels = meta["label"]
    provenance = {
        "source": str(paths.data),
        "source_pool_sha256": scorer["dataset_hash"],
        "objective": params.objective,
        "scorer_id": scorer["scorer_id"],
        "reference_model": params.reference.model,
        "reference_sha256": scorer["model_hash"],
        "rule": cfg.rule,
        "fraction": None if cfg.rule == "cleanlab" else cfg.fraction,
        "balance": cfg.balance,
    }
    extra = {}  # a pass of a model over the pool beyond the store's scores: its FLOPs and seconds
    if cfg.rule == "cleanlab":
        probs, extra = _pool_pass(params, pipeline.reference_model(params), params.reference.model, "probs")
        kept = cleanlab_keep(labels, probs)
        shown = np.full(len(labels), np.nan)
        rows = np.flatnonzero(labels >= 0)
        shown[rows] = probs[rows, labels[rows]]  # the reference's probability of the given label
    else:
        model_loss, similarity = None, None
        if cfg.rule == "learnability":
            model, name, path = _checkpoint_scorer(params)
            model_loss, extra = _pool_pass(params, model, name, "loss")
            provenance.update(checkpoint=str(path), checkpoint_scorer=cfg.scorer, checkpoint_model=name)
            provenance["checkpoint_sha256"] = state_hash(model)
        if cfg.rule == "clip_score":
            image, text = store.load_embeddings(paths.store, scorer["scorer_id"])
            similarity = np.full(len(reference_loss), np.nan, dtype=np.float32)
            similarity[: len(image)] = image_text_similarity(image, text)
        shown = rule_scores(cfg.rule, reference_loss, model_loss, similarity)
        kept = keep_top(shown, cfg.fraction, labels if cfg.balance else None)
    log.info("curate: %s keeps %d of %d pool examples", cfg.rule, len(kept), len(labels))
    class_names = read_manifest(paths.data)["class_names"]
    finished = _finished(dest, plan_digest(kept, provenance, paths.data))
    if finished is not None:  # the same curation, complete: its record (and the seconds it measured) stands
        log.info("curate: %s already holds this curation; reused", dest)
        record = finished
    else:
        written = write_curated(paths.data, dest, kept, provenance, on_shard)
        check_curated(dest)
        record = {
            **provenance,
            "dest": str(dest),
            **summarize(kept, labels, meta["pathology"], class_names),
            **written,
            **extra,
            "seconds": time.perf_counter() - started + extra.get("pass_seconds", 0.0) - extra.get("pass_seconds_now", 0.0),
        }
        record.pop("pass_seconds_now", None)
        write_json(record, dest / "curation.json")
    write_json(record, paths.metrics / "curate.json")
    from winnow.reports import report

    captions = OBJECTIVES[params.objective].joint  # what the objective learns from: the caption, or the label
    report.write_curate_report(record, _grid_examples(pool_dir, kept, shown, meta, class_names, captions, params.seed), paths)
    return record


def _finished(dest: Path, digest: str) -> dict | None:
    """The record of a finished curation of exactly this plan at `dest`, or None."""
    record = dest / "curation.json"
    if not (dest / "manifest.json").exists() or not record.exists():
        return None
    done = json.loads(record.read_text())
    return done if done.get("digest") == digest else None


def _checkpoint_scorer(params):
    """The finished model of the curate.policy train run that scores the pool for rule learnability: its actor
    or its learner, trained on exactly this run's inputs (else stale)."""
    from winnow.errors import CheckpointError, MissingInput, StaleInput
    from winnow.method.devices import pick_device
    from winnow.method.objectives import OBJECTIVES
    from winnow.method.training import load_checkpoint
    from winnow.stages import lineage, pipeline

    cfg, paths = params.curate, pipeline.Paths.of(params)
    path, inputs = paths.learner(cfg.policy), lineage.stage_key("train", params, cfg.policy)
    device = pick_device(params.device)
    if cfg.scorer == "learner" and path.exists():
        return pipeline.model_from_checkpoint(path, device, inputs), params.train.model, path
    if not path.exists():
        raise MissingInput(f"{path}: no checkpoint to curate with; run `winnow train --policy {cfg.policy}` first")
    ckpt = load_checkpoint(path)
    if not ckpt.get("complete") or ckpt.get("inputs") != inputs:
        raise StaleInput(
            f"{path}: unfinished, or trained on other inputs than this run's; rerun `winnow train --policy {cfg.policy}`"
        )
    if "actor" not in ckpt:
        raise CheckpointError(f"{path}: holds no actor (its run scored with the learner); set curate.scorer: learner")
    resolution = params.train.score_resolution or params.data.image_size
    actor = OBJECTIVES[params.objective].build_model(params.train.actor, pipeline.num_classes(params), resolution)
    actor.load_state_dict(ckpt["actor"])
    return actor.to(device), params.train.actor, path


def _pool_pass(params, model, model_name: str, what: str) -> tuple[np.ndarray, dict]:
    """One forward pass of `model` over the pool, shard by shard into artifacts/.../curate/<what>-<model hash>/
    (each shard's file whole or absent, so a killed pass resumes): per example id its loss ("loss") or its
    softmax probabilities ("probs"), NaN where unscorable. Returns them and the pass's measured cost."""
    from winnow.method import ledger, objectives
    from winnow.method.devices import autocast
    from winnow.method.training import state_hash
    from winnow.scores import scoring
    from winnow.stages import pipeline

    paths = pipeline.Paths.of(params)
    size, classes, batch = params.data.image_size, pipeline.num_classes(params), params.score.batch_size
    key = [what, state_hash(model), split_hash(paths.data / "pool"), params.objective, model_name, size, batch, params.precision]
    folder = paths.artifacts / "curate" / f"{what}-{hashlib.sha256(json.dumps(key).encode()).hexdigest()[:16]}"
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
            split, targets = objectives.decode_shard(params.objective, model_name, shard, size, classes, ())
        if flops_per_example is None and len(split):
            loss = objectives.OBJECTIVES[params.objective].loss
            flops_per_example = ledger.forward_flops_per_example(model, loss, split.images[:batch], targets[:batch])
        with autocast(next(model.parameters()).device, params.precision):
            if what == "loss":
                done = scoring.write_shard_scores(model, shard, folder, size, classes, batch, params.objective, model_name)
                rows += done
                _add_cost(cost_path, cost, flops_per_example, done, started)
                started = time.perf_counter()
                continue
            probs = model_outputs(model, split.images, batch).numpy()
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


def _grid_examples(
    pool: Path, kept: np.ndarray, scores: np.ndarray, meta: dict, class_names: list[str], captions: bool, seed: int, n: int = 24
):
    """A random sample of kept and of dropped examples (seeded), decoded for the report's image grids:
    per side a list of (image, label or caption, score, pathology)."""
    from winnow.datasets.contract import decode_image

    rng = np.random.default_rng(seed)
    dropped = np.setdiff1d(np.flatnonzero(~np.isnan(scores)), kept)
    chosen = {
        side: np.sort(rng.choice(ids, size=min(n, len(ids)), replace=False)) if len(ids) else ids
        for side, ids in (("kept", kept), ("dropped", dropped))
    }
    wanted = np.concatenate(list(chosen.values()))
    images = {}
    for path in shard_files(pool):
        table = pq.read_table(path, columns=["id", "image"])
        ids = table.column("id").to_numpy()
        rows = np.flatnonzero(np.isin(ids, wanted))
        blobs = table.column("image").take(pa.array(rows)).to_pylist()
        for i, blob in zip(ids[rows], blobs):
            try:
                images[int(i)] = decode_image(blob)
            except ValueError:
                pass
    out = {}
    for side, ids in chosen.items():
        rows = []
        for i in ids:
            if int(i) not in images:
                continue
            label = meta["label"][i]
            name = class_names[label] if label >= 0 else "(no label)"
            text = (meta["caption"][i] or "(empty caption)") if captions else name
            rows.append((images[int(i)], str(text), float(scores[i]), meta["pathology"][i]))
        out[side] = rows
    return out
