"""Importers: users' own shards into the data contract (pool/, curated/, eval/test/, manifest.json).

WebDataset tars as img2dataset writes them (jpg|png|webp + txt + json [+ cls]), an
ImageFolder tree (root/<class>/<image>), or a Parquet table with image bytes. Images are
copied as they are (encoded bytes); nothing is decoded here, so a bad image is found,
skipped and counted where it is used. The curated set and the held-out test set are
either sampled from the source (seeded, disjoint from the pool) or imported from a
separate source of the same kind.
"""

from __future__ import annotations

import hashlib
import json
import tarfile
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from winnow.data import DataError, file_sha256
from winnow.synth import SCHEMA_VERSION

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
SCHEMA = pa.schema([("id", pa.int64()), ("image", pa.binary()), ("label", pa.int32()), ("caption", pa.string()), ("source_key", pa.string())])


def read_webdataset(source: str | Path, class_names: list[str] | None = None) -> Iterator[dict]:
    """Examples of every *.tar under `source` (or one tar): members grouped by key, as img2dataset writes them."""
    source = Path(source)
    tars = sorted(source.glob("*.tar")) if source.is_dir() else [source]
    if not tars:
        raise DataError(f"{source}: no .tar shards here")
    for tar_path in tars:
        try:
            archive = tarfile.open(tar_path)
        except tarfile.TarError as e:
            raise DataError(f"{tar_path}: not a readable tar shard ({e})") from e
        with archive:
            groups: dict[str, dict] = {}
            for member in archive.getmembers():
                if not member.isfile():
                    continue
                key, _, ext = member.name.rpartition(".")
                groups.setdefault(key, {})[ext.lower()] = archive.extractfile(member).read()
        for key in sorted(groups):
            parts = groups[key]
            image = next((parts[e] for e in ("jpg", "jpeg", "png", "webp") if e in parts), None)
            if image is None:
                continue  # a key with no image (img2dataset writes json for failed downloads too)
            meta = json.loads(parts["json"]) if "json" in parts else {}
            caption = parts["txt"].decode("utf-8", errors="replace") if "txt" in parts else meta.get("caption")
            label = int(parts["cls"]) if "cls" in parts else meta.get("label")
            yield {"image": image, "label": label, "caption": caption, "source_key": f"{tar_path.name}/{key}"}


def read_imagefolder(source: str | Path) -> tuple[Iterator[dict], list[str]]:
    """root/<class>/<image>: labels index the sorted class folder names; captions are empty."""
    source = Path(source)
    classes = sorted(p.name for p in source.iterdir() if p.is_dir()) if source.is_dir() else []
    if not classes:
        raise DataError(f"{source}: no class folders (an ImageFolder tree is root/<class>/<image>)")

    def examples():
        for label, name in enumerate(classes):
            for path in sorted((source / name).iterdir()):
                if path.suffix.lower() in IMAGE_EXTENSIONS:
                    yield {"image": path.read_bytes(), "label": label, "caption": None, "source_key": f"{name}/{path.name}"}

    return examples(), classes


def read_parquet_table(source: str | Path, image_column: str = "image", label_column: str | None = "label",
                       caption_column: str | None = "caption") -> Iterator[dict]:
    """A Parquet file or folder of them with encoded image bytes; label and caption columns optional."""
    source = Path(source)
    files = sorted(source.glob("*.parquet")) if source.is_dir() else [source]
    for path in files:
        try:
            table = pq.read_table(path)
        except (pa.ArrowInvalid, OSError) as e:
            raise DataError(f"{path}: not a readable Parquet file ({e})") from e
        if image_column not in table.column_names:
            raise DataError(f"{path}: no column {image_column!r} (pass --image-column); columns are {table.column_names}")
        n = table.num_rows
        images = table.column(image_column).to_pylist()
        labels = table.column(label_column).to_pylist() if label_column in table.column_names else [None] * n
        captions = table.column(caption_column).to_pylist() if caption_column in table.column_names else [None] * n
        for row in range(n):
            yield {"image": images[row], "label": labels[row], "caption": captions[row], "source_key": f"{path.name}/{row}"}


def write_dataset(examples: list[dict], dest: str | Path, class_names: list[str], *, curated: list[dict] | None = None,
                  test: list[dict] | None = None, curated_fraction: float = 0.1, test_fraction: float = 0.05,
                  seed: int = 0, shard_size: int = 5000, source: str = "") -> Path:
    """Split (unless curated/test are given) and write the data contract under `dest`."""
    dest = Path(dest)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(examples))
    n_test = 0 if test is not None else int(round(len(examples) * test_fraction))
    n_curated = 0 if curated is not None else int(round(len(examples) * curated_fraction))
    test = test if test is not None else [examples[i] for i in order[:n_test]]
    curated = curated if curated is not None else [examples[i] for i in order[n_test:n_test + n_curated]]
    pool = [examples[i] for i in sorted(order[n_test + n_curated:])]
    if not pool:
        raise DataError(f"{source or dest}: nothing left for the pool after taking the curated and test sets")
    for name, rows in (("pool", pool), ("curated", curated), ("eval/test", test)):
        _write(dest / name, rows, shard_size, len(class_names))
    files = sorted(dest.rglob("*.parquet"))
    content = {str(p.relative_to(dest)): file_sha256(p) for p in files}
    manifest = {
        "schema_version": SCHEMA_VERSION, "image": {"format": "encoded"}, "class_names": class_names,
        "tasks": {"test": {"label": "label", "class_names": class_names}},
        "counts": {"pool": len(pool), "curated": len(curated), "eval/test": len(test)},
        "source": {"path": str(source), "seed": seed, "curated_fraction": curated_fraction, "test_fraction": test_fraction},
        "files": content, "content_hash": hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest(),
    }
    (dest / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return dest


def _write(folder: Path, rows: list[dict], shard_size: int, num_classes: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("part-*.parquet"):
        old.unlink()
    for shard, start in enumerate(range(0, max(len(rows), 1), shard_size)):
        chunk = rows[start:start + shard_size]
        for i, row in enumerate(chunk):
            if row["label"] is not None and not 0 <= int(row["label"]) < max(num_classes, 1):
                raise DataError(f"{row['source_key']}: label {row['label']} is outside the {num_classes} class names")
        table = pa.table({
            "id": pa.array(np.arange(start, start + len(chunk), dtype=np.int64)),
            "image": pa.array([r["image"] for r in chunk], pa.binary()),
            "label": pa.array([None if r["label"] is None else int(r["label"]) for r in chunk], pa.int32()),
            "caption": pa.array([r["caption"] for r in chunk], pa.string()),
            "source_key": pa.array([r["source_key"] for r in chunk], pa.string()),
        }, schema=SCHEMA)
        pq.write_table(table, folder / f"part-{shard:05d}.parquet", compression="zstd")


def class_names_from(examples: list[dict], given: list[str] | None) -> list[str]:
    """Class names from the caller, or 'class 0'... up to the largest label seen."""
    if given:
        return list(given)
    labels = [int(e["label"]) for e in examples if e["label"] is not None]
    return [f"class {i}" for i in range(max(labels) + 1)] if labels else []


def import_source(kind: str, source: str | Path, dest: str | Path, *, curated_source: str | Path | None = None,
                  class_names: list[str] | None = None, columns: dict | None = None, **options) -> Path:
    """`winnow data import KIND SOURCE DEST`: read the source (and a separate curated one) and write the contract.
    `columns` names the Parquet importer's image/label/caption columns; `options` go to write_dataset."""
    def read(path):
        if kind == "webdataset":
            return list(read_webdataset(path)), None
        if kind == "imagefolder":
            examples, classes = read_imagefolder(path)
            return list(examples), classes
        if kind == "parquet":
            return list(read_parquet_table(path, **(columns or {}))), None
        raise DataError(f"unknown importer {kind!r}; use webdataset, imagefolder or parquet")

    examples, folder_classes = read(source)
    if not examples:
        raise DataError(f"{source}: no examples with an image")
    curated = read(curated_source)[0] if curated_source else None
    names = class_names_from(examples + (curated or []), class_names or folder_classes)
    return write_dataset(examples, dest, names, curated=curated, source=str(source), **options)

