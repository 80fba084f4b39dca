"""Reading the data contract (docs/DESIGN.md): a folder of part-*.parquet shards.

A split is decoded once into a uint8 tensor (N, 3, H, W) indexed by row; `ids`
maps rows back to the pool's example ids. Undecodable images are skipped and
listed (file, id, reason), never silently dropped; a missing column, a file that
is not Parquet, or a label out of range raises DataError naming the file and row.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from winnow.datasets import decoded, workers
from winnow.datasets.digests import blocks, digest_file
from winnow.datasets.digests import file_sha256 as file_sha256  # the generator's (synth.py) import, its code unchanged
from winnow.datasets.images import decode_row
from winnow.errors import DataError

REQUIRED_COLUMNS = ("id", "image", "label")


@dataclass
class Split:
    ids: np.ndarray  # int64 (N,), example ids as stored
    images: torch.Tensor  # uint8 (N, 3, H, W)
    labels: np.ndarray  # int64 (N,), -1 where the label is null
    columns: dict[str, np.ndarray] = field(default_factory=dict)  # metadata (pathology, texture, fold...)
    skipped: list[dict] = field(default_factory=list)  # undecodable rows: file, id, reason

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, rows) -> "Split":
        rows = np.asarray(rows)
        return Split(
            self.ids[rows],
            self.images[torch.as_tensor(rows)],
            self.labels[rows],
            {k: v[rows] for k, v in self.columns.items()},
            [],
        )

    def keep(self, targets: torch.Tensor, rows) -> tuple["Split", torch.Tensor]:
        """These rows and their targets, the rows it could not use (skipped) kept as they were: a shard a stream's
        decode leaves rows out of (datasets/stream.py, curation/filters.py)."""
        rows = np.asarray(rows, dtype=np.int64)
        kept = self.subset(rows)
        kept.skipped = self.skipped
        return kept, targets[torch.from_numpy(rows)]

    @staticmethod
    def join(splits: list["Split"], fill: dict[str, object] | None = None) -> "Split":
        """The rows of several splits, in order; a column some lack is filled with `fill`'s value for it
        (dropped where no fill is given); ids are kept as stored (they may repeat across splits)."""
        fill = fill or {}
        names = set().union(*(s.columns for s in splits))
        keep = [n for n in sorted(names) if n in fill or all(n in s.columns for s in splits)]
        columns = {
            n: np.concatenate([s.columns[n] if n in s.columns else np.full(len(s), fill[n], dtype=object) for s in splits])
            for n in keep
        }
        return Split(
            np.concatenate([s.ids for s in splits]),
            torch.cat([s.images for s in splits]),
            np.concatenate([s.labels for s in splits]),
            columns,
            [row for s in splits for row in s.skipped],
        )


def shard_files(folder: str | Path) -> list[Path]:
    """A split's shards, in order; a split of a dataset whose manifest lists its files must be whole (split_problem)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: no such split folder (run `winnow data synth`, or import your shards: `winnow data import`)")
    files = sorted(folder.glob("part-*.parquet"))
    if not files:
        raise DataError(f"{folder}: no part-*.parquet shards in this folder")
    problem = split_problem(folder, files)
    if problem:
        raise DataError(problem)
    return files


def _dataset_of(folder: Path) -> tuple[Path, str] | None:
    """The dataset a split folder belongs to (the folder above it holding manifest.json: pool/, curated/ one level
    down, eval/NAME two) and the split's name in the manifest; None for a folder of shards outside any dataset."""
    for root in (folder.parent, folder.parent.parent):
        if (root / "manifest.json").is_file():
            return root, folder.relative_to(root).as_posix()
    return None


_listed: dict[tuple, dict[str, str]] = {}  # (manifest path, size, mtime_ns) -> its "files", parsed once


def _listed_files(manifest: Path) -> dict[str, str]:
    stat = manifest.stat()
    key = (str(manifest.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _listed:
        _listed[key] = read_manifest(manifest.parent).get("files", {})
    return _listed[key]


def split_problem(folder: Path, files: list[Path] | None = None) -> str | None:
    """What makes a split other than its manifest lists, or None: a listed shard missing, a shard the manifest does
    not list, or one whose bytes differ from its listed sha256. Cheap: the names always; a shard's hash only when
    it was written after the manifest (the manifest is written last), once per process per (size, mtime)."""
    found = _dataset_of(folder.resolve())
    if found is None:
        return None
    root, split = found
    listed = {name: sha for name, sha in _listed_files(root / "manifest.json").items() if name.rpartition("/")[0] == split}
    if not listed:
        return None  # a manifest that lists no files for it (written before manifests listed them)
    present = {f"{split}/{p.name}": p for p in (files if files is not None else sorted(folder.glob("part-*.parquet")))}
    manifest = root / "manifest.json"
    if missing := sorted(set(listed) - set(present)):
        gone = f"{len(missing)} of {split}'s {len(listed)} shards"
        return f"{root / missing[0]}: listed in {manifest} but missing ({gone}); {_how_to_restore(root)}"
    if extra := sorted(set(present) - set(listed)):
        return f"{root / extra[0]}: a shard that {manifest} does not list; remove it, or {_how_to_restore(root)}"
    published = manifest.stat().st_mtime_ns
    for name, path in present.items():
        if path.stat().st_mtime_ns > published and digest_file(path) != listed[name]:
            return f"{path}: its bytes are not those {manifest} lists (changed after it was written); {_how_to_restore(root)}"
    return None


def dataset_problem(root: Path) -> str | None:
    """split_problem of the first split of the dataset at `root` that is not whole, or None."""
    splits = dict.fromkeys(name.rpartition("/")[0] for name in _listed_files(root / "manifest.json"))
    return next((problem for split in splits if (problem := split_problem(root / split))), None)


def _how_to_restore(root: Path) -> str:
    again = "regenerate it (`winnow data synth`)" if generated(read_manifest(root)) else "import it again (`winnow data import`)"
    return f"no stage reads part of a split: {again}, or restore it (`dvc checkout`, `git restore`)"


def read_shard(path: Path, without: tuple[str, ...] = ()) -> pa.Table:
    """A shard's table, its required columns checked; `without`: columns left unread (still checked present)."""
    try:
        schema = pq.read_schema(path)
        missing = [c for c in REQUIRED_COLUMNS if c not in schema.names]
        if missing:
            raise DataError(f"{path}: missing required column(s) {missing}; the data contract needs {list(REQUIRED_COLUMNS)}")
        return pq.read_table(path, columns=[c for c in schema.names if c not in without] if without else None)
    except (pa.ArrowInvalid, OSError) as e:
        raise DataError(f"{path}: not a readable Parquet file ({e})") from e


def decode_file(path: Path, size: int, num_classes: int | None, metadata: tuple[str, ...] = (), fit: str = "squash"):
    """Read and decode one shard file, its images from the decoded cache when this machine decoded them before
    (datasets/decoded.py): what decode_table returns."""
    cache = decoded.key(path, size, fit)
    hit = cache is not None and decoded.has(cache)  # the images come from the cache: their column is not read
    table = read_shard(path, without=("image",) if hit or workers.pool() is not None else ())  # workers read their own
    return decode_table(table, path, size, num_classes, metadata, cache=cache, fit=fit)


def _decode_images(table: pa.Table, path: Path, size: int, cache: str | None, fit: str = "squash"):
    """(kept rows, uint8 (n,3,H,W), [(row, reason)]) of a shard's images, from the cache entry `cache` when it has
    one, else decoded from the bytes (read from the file when `table` was read without them) and stored there:
    by this process's decode workers when it has them (datasets/workers.py), in line otherwise, the same pixels."""
    hit = decoded.load(cache, table.num_rows, size) if cache else None
    if hit is not None:
        return hit
    if (pool := workers.pool()) is not None:
        keep, array, skipped = pool.decode_file(path, table.num_rows, size, fit)
    else:
        blobs = (table if "image" in table.column_names else read_shard(path)).column("image").to_pylist()
        keep, images, skipped = [], [], []
        for row, blob in enumerate(blobs):
            pixels, reason = decode_row(blob, size, fit)
            if pixels is None:
                skipped.append((row, reason))
            else:
                images.append(pixels)
                keep.append(row)
        keep = np.asarray(keep, dtype=np.int64)
        array = np.stack(images).transpose(0, 3, 1, 2) if images else np.zeros((0, 3, size, size), np.uint8)
        array = np.ascontiguousarray(array)
    if cache:
        decoded.store(cache, keep, array, skipped)
    return keep, array, skipped


def decode_table(
    table: pa.Table,
    path: Path,
    size: int,
    num_classes: int | None,
    metadata: tuple[str, ...] = (),
    cache: str | None = None,
    fit: str = "squash",
):
    """Decode one shard: (ids, images uint8 (n,3,H,W), labels, metadata columns, skipped rows). `cache`: the
    decoded cache's key for this shard's file (decode_file), None to decode without it; `fit`: data.fit."""
    ids = table.column("id").to_numpy()
    labels_col = table.column("label")
    if not pa.types.is_integer(labels_col.type) and not pa.types.is_null(labels_col.type):
        raise DataError(
            f"{path}: column 'label' is {labels_col.type}; the data contract needs integer class indices "
            f"(`winnow data import` maps class names to indices and writes them in the manifest)"
        )
    labels = np.where(labels_col.is_null().to_numpy(zero_copy_only=False), -1, labels_col.fill_null(-1).to_numpy()).astype(
        np.int64
    )
    if num_classes is not None:
        bad = np.flatnonzero((labels < -1) | (labels >= num_classes))
        if len(bad):
            raise DataError(f"{path}: row {bad[0]} (id {ids[bad[0]]}) has label {labels[bad[0]]}, outside [0, {num_classes})")
    keep, array, bad = _decode_images(table, path, size, cache, fit)
    skipped = [{"file": str(path), "id": int(ids[row]), "reason": reason} for row, reason in bad]
    meta = {
        name: np.asarray(table.column(name).to_pylist(), dtype=object)[keep] for name in metadata if name in table.column_names
    }
    return ids[keep], torch.from_numpy(array), labels[keep], meta, skipped


def load_split(
    folder: str | Path,
    size: int,
    num_classes: int | None = None,
    metadata: tuple[str, ...] = ("caption", "pathology", "texture", "fold"),
    fit: str = "squash",
) -> Split:
    """Load every shard of a split into memory (the default pool fits; streaming is a later step)."""
    parts = [decode_file(path, size, num_classes, metadata, fit) for path in shard_files(folder)]
    ids = np.concatenate([p[0] for p in parts])
    if len(np.unique(ids)) != len(ids):
        raise DataError(f"{folder}: example ids are not unique across shards")
    columns = {name: np.concatenate([p[3][name] for p in parts]) for name in parts[0][3]}
    return Split(
        ids, torch.cat([p[1] for p in parts]), np.concatenate([p[2] for p in parts]), columns, [s for p in parts for s in p[4]]
    )


def value_counts(folder: str | Path, column: str) -> dict[str, int]:
    """How often each value of a metadata column occurs in a split, read shard by shard
    (memory does not grow with the split); empty when the shards have no such column."""
    counts: dict[str, int] = {}
    for path in shard_files(folder):
        if column not in pq.read_schema(path).names:
            return {}
        values, n = np.unique(
            pq.read_table(path, columns=[column]).column(column).to_numpy(zero_copy_only=False), return_counts=True
        )
        for value, c in zip(values, n):
            counts[value] = counts.get(value, 0) + int(c)
    return counts


def read_manifest(root: str | Path) -> dict:
    path = Path(root) / "manifest.json"
    if not path.exists():
        raise DataError(f"{path}: no manifest (run `winnow data synth`, or import your data: `winnow data import`)")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: not valid JSON ({e}); restore it, or re-import the dataset") from e
    if not isinstance(manifest, dict):
        raise DataError(f"{path}: must be a JSON object (class_names, counts, tasks...), got a {type(manifest).__name__}")
    return manifest


def generated(manifest: dict) -> bool:
    """Whether winnow's generator wrote this dataset: its manifest records the generator's code hash.
    (A user's manifest may name a generator of its own; that does not make it ours.)"""
    generator = manifest.get("generator")
    return isinstance(generator, dict) and "code_sha256" in generator


def listed_split_hash(folder: str | Path) -> str:
    """A split's identity from its manifest's listed shard hashes (no shard is read: cheap on any pool); split_hash
    where the manifest lists none."""
    found = _dataset_of(Path(folder).resolve())
    listed = _listed_files(found[0] / "manifest.json") if found else {}
    mine = sorted((name, sha) for name, sha in listed.items() if found and name.rpartition("/")[0] == found[1])
    if not mine:
        return split_hash(folder)
    return hashlib.sha256(json.dumps(mine).encode()).hexdigest()


def split_hash(folder: str | Path) -> str:
    """Content hash of a split's shards (names and bytes): what a scorer is keyed on."""
    h = hashlib.sha256()
    for path in shard_files(folder):
        h.update(path.name.encode())
        for block in blocks(path):
            h.update(block)
    return h.hexdigest()


def to_input(images: torch.Tensor, model: torch.nn.Module | None = None) -> torch.Tensor:
    """uint8 (N,3,H,W) -> float in roughly [-2, 2], what every model here takes; resized down (area
    average) to the model's input_size when it runs at a lower resolution than the data (a scorer
    at train.score_resolution or score.resolution)."""
    x = (images.float() / 255.0 - 0.5) / 0.25
    size = getattr(getattr(model, "module", model), "input_size", None)  # through a DDP wrapper too
    if size is not None and x.shape[-1] != size:
        x = torch.nn.functional.interpolate(x, size=(size, size), mode="area")
    return x
