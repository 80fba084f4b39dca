"""A seed's own draw of a user's dataset (bench.data_seeds): its curated and validation rows drawn afresh, with the
seed, from the union of the source's curated and eval/val rows, at the source's sizes; the pool, the test split and
every other eval task are the source's own files (hard links where the filesystem allows, else copies). So the
intervals of a bench over seeds cover which rows were curated and which judge the curves, as well as training noise,
while the test split stays one fixed set, read once per run.

The built-in pool needs none of this: a seed generates a pool of its own (data.seed = the seed).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from winnow.datasets.contract import dataset_problem, read_manifest, read_shard, shard_files
from winnow.datasets.publish import check_apart, publish, staging_folder
from winnow.errors import DataError

REDRAWN = ("curated", "eval/val")  # the splits a seed draws again; every other split is shared as it is


def redraw_dataset(source: str | Path, dest: str | Path, seed: int) -> Path:
    """Write SOURCE to DEST with its curated and eval/val rows redrawn by `seed` (sizes kept). A DEST already drawn
    from the same source content with the same seed is left as it is, so a bench resumes."""
    source, dest = Path(source), Path(dest)
    manifest = read_manifest(source)
    if _already(dest, manifest, seed):
        return dest
    check_apart(dest, [source])
    tables = {split: _read_split(source / split) for split in REDRAWN}
    sizes = {split: t.num_rows for split, t in tables.items()}
    try:
        union = pa.concat_tables(list(tables.values()), promote_options="default")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
        raise DataError(
            f"{source / 'curated'} and {source / 'eval/val'}: their columns differ, so their rows cannot be drawn "
            f"again as one set ({e}); import them with the same columns, or leave bench.data_seeds off"
        ) from None
    order = np.random.default_rng([seed, 0x5EED]).permutation(union.num_rows)
    staging = staging_folder(dest.resolve())
    try:
        for split in _shared_splits(source):
            _link_tree(source / split, staging / split)
        start = 0
        for split in REDRAWN:
            rows = order[start : start + sizes[split]]
            start += sizes[split]
            (staging / split).mkdir(parents=True)
            drawn = union.take(pa.array(np.sort(rows)))
            if "id" in drawn.column_names:  # ids dense within a split, as every writer leaves them
                drawn = drawn.set_column(
                    drawn.column_names.index("id"), "id", pa.array(np.arange(drawn.num_rows, dtype=np.int64))
                )
            pq.write_table(drawn, staging / split / "part-00000.parquet", compression="zstd")
    except Exception:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    out = {k: v for k, v in manifest.items() if k not in ("generator", "files", "content_hash", "pool_hash")}
    out.setdefault("source", {"path": str(source)})
    out["redrawn"] = {
        "from": str(source),
        "from_content_hash": manifest.get("content_hash"),
        "seed": seed,
        "splits": list(REDRAWN),
    }
    publish(staging, dest.resolve(), out)
    return dest


def _already(dest: Path, manifest: dict, seed: int) -> bool:
    try:
        redrawn = read_manifest(dest).get("redrawn") or {}
    except DataError:
        return False
    same = redrawn.get("seed") == seed and redrawn.get("from_content_hash") == manifest.get("content_hash")
    return same and dataset_problem(dest) is None  # a draw with a shard gone or changed is drawn again


def _read_split(folder: Path) -> pa.Table:
    if not folder.is_dir():
        raise DataError(
            f"{folder}: bench.data_seeds draws curated and validation rows again from curated/ and eval/val/; "
            "this dataset has no such split"
        )
    return pa.concat_tables([read_shard(p) for p in shard_files(folder)], promote_options="default")


def _shared_splits(source: Path) -> list[str]:
    """Every split of SOURCE but the redrawn ones: pool, and each eval task (test, texture, ...)."""
    splits = ["pool"]
    eval_dir = source / "eval"
    if eval_dir.is_dir():
        splits += [f"eval/{d.name}" for d in sorted(eval_dir.iterdir()) if d.is_dir() and f"eval/{d.name}" not in REDRAWN]
    return splits


def _link_tree(src: Path, dst: Path) -> None:
    """The split's shards at DST: hard links (no copy of a pool's bytes) where the filesystem allows."""
    dst.mkdir(parents=True)
    for path in shard_files(src):
        try:
            os.link(path, dst / path.name)
        except OSError:
            shutil.copy2(path, dst / path.name)
