"""The curated dataset (docs/DESIGN.md, Curate): the kept rows of a pool written as a dataset of its own.

It follows the data contract: pool/part-*.parquet with ids renumbered dense from 0 and each row's pool
id in `source_id`, the source's curated/ and eval/ copied, kept_ids.npy (the source ids kept, sorted)
and a manifest whose `curation` block says where it came from. Every file is written whole or not at
all and the manifest last: a killed curate reruns the shards it lacks.
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
from tqdm import tqdm

from winnow.datasets.contract import read_manifest, shard_files, value_counts
from winnow.datasets.digests import digest_path, file_sha256
from winnow.errors import DataError
from winnow.files import atomic_path, write_json

log = logging.getLogger("winnow")

FORMAT = 1  # of the curated dataset's layout (manifest `curation.format`)


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


def plan_digest(kept: np.ndarray, provenance: dict, source: Path) -> str:
    """What a curated dataset is: its kept ids, how they were chosen, the layout's version and the contents of
    the source's curated and eval sets it copies. A rerun with another digest starts over."""
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


def finished_record(dest: Path, digest: str) -> dict | None:
    """The record of a finished curation of exactly this plan at `dest`, every file of it as the manifest records
    it; else None. A file missing or changed since is removed with the manifest, so the rerun writes it again
    (a copied curated/ or eval/ folder is copied again whole) and nothing else."""
    record = dest / "curation.json"
    if not (dest / "manifest.json").exists() or not record.exists():
        return None
    done = json.loads(record.read_text())
    if done.get("digest") != digest:
        return None
    damaged = _damaged(dest)
    if damaged:
        log.warning("curate: %s is missing or has changed %s; writing them again", dest, ", ".join(damaged[:5]))
        (dest / "manifest.json").unlink()
        for name in damaged:
            top = name.split("/")[0]
            if top in ("curated", "eval"):
                shutil.rmtree(dest / top, ignore_errors=True)
            else:
                (dest / name).unlink(missing_ok=True)
        return None
    return done


def _damaged(dest: Path) -> list[str]:
    """The dataset's files (per its manifest) that are missing or whose bytes changed since, and any shard the
    manifest does not list."""
    listed = read_manifest(dest).get("files", {})
    present = {p.relative_to(dest).as_posix() for p in dest.rglob("part-*.parquet")}
    damaged = [name for name, sha in sorted(listed.items()) if not (dest / name).is_file() or file_sha256(dest / name) != sha]
    return damaged + sorted(present - set(listed))
