"""Importers: users' own shards into the data contract (pool/, curated/, eval/, manifest.json).

WebDataset tars as img2dataset writes them (jpg|png|webp + txt + json [+ cls]), an
ImageFolder tree (root/<class>/<image>), or a Parquet table with image bytes. Images are
copied as they are (encoded bytes); nothing is decoded here, so a bad image is found,
skipped and counted where it is used. The curated set and the held-out test set are
either sampled from the source (seeded, disjoint from the pool) or imported from a
separate source of the same kind; transfer tasks (--eval NAME=SOURCE) go to eval/NAME/.

Imports stream. A source is read twice, a batch at a time: once without its images, to learn
what the whole must agree on (how many rows, the labels and their classes, the metadata
columns' types), then once to write it, every row going straight to its split's shard buffer.
Memory holds one batch and one shard per split, whatever the source's size (plus one byte per
row for the split plan); a pool far bigger than memory imports like a small one.

Users' data is checked at the door: every bad input (a truncated tar, malformed json, a label
that fits no class, an image column of text, a destination that holds other files) raises
DataError naming the file, member, row or key and the fix; nothing is dropped or leaked
silently. Labels are class indices (0..K-1, every class present, unless --class-names says
how many) or class names (strings; sorted unless --class-names gives the order); an
ImageFolder's labels are its folder names. Everything else the source holds is carried as
metadata, untouched: Parquet columns with their Arrow type, the scalar fields of a
WebDataset json (a field of mixed types, a list or an object becomes text). A source column
named like a contract column (id, image, label, caption, source_key) that is not the one in
use is renamed source_<name> (the manifest lists renames). A `pathology` column, or
--noise-column NAME[=KIND], gives the pathology the report shows the mix of.

The dataset is written to DEST.importing beside DEST, manifest last, and renamed into place,
so an import that stops half-way never leaves a folder that looks complete.
"""

from __future__ import annotations

import functools
import logging
import re
from pathlib import Path

from winnow.datasets.publish import check_apart, check_dest
from winnow.errors import DataError
from winnow.importers.labels import Scan, finish_metadata, resolve_labels, scan, with_labels
from winnow.importers.source import (
    CURATED_FRACTION,
    SHARD_SIZE,
    TEST_FRACTION,
    VAL_FRACTION,
    Source,
)
from winnow.importers.writer import check_options, write_dataset

log = logging.getLogger("winnow")


def import_source(
    kind: str,
    source: str | Path,
    dest: str | Path,
    *,
    curated_source: str | Path | None = None,
    test_source: str | Path | None = None,
    val_source: str | Path | None = None,
    class_names: list[str] | None = None,
    columns: dict | None = None,
    noise_column: str | None = None,
    evals: list[str] | dict[str, str] | None = None,
    **options,
) -> Path:
    """`winnow data import KIND SOURCE DEST`: scan the source (and separate curated, test, val and transfer ones),
    then stream it into the contract. `columns` names the Parquet importer's image/label/caption columns;
    `evals` adds transfer tasks (NAME=SOURCE, a source of the same kind each, labelled with its own classes);
    `options` go to write_dataset."""
    _check_request(kind, columns, noise_column, options, curated_source is not None, test_source is not None)
    if val_source is not None and test_source is not None and Path(val_source).resolve() == Path(test_source).resolve():
        raise DataError(
            f"{val_source}: given as both --val and --test; the test set is read once, at the end, so "
            "choices made on the validation set must not see it: pass two disjoint sources"
        )
    if val_source is not None:
        options["val_fraction"] = 0.0  # eval/val is the given source; no curated row is diverted to it
    evals = parse_evals(evals)
    dest = Path(dest)
    check_apart(dest, [p for p in (source, curated_source, test_source, val_source, *evals.values()) if p])
    check_dest(dest)
    read = functools.partial(_read, kind, {k: v for k, v in (columns or {}).items() if v}, noise_column)
    pool, pool_scan = read(source, True)
    curated, curated_scan = read(curated_source, False) if curated_source else (None, None)
    test, test_scan = read(test_source, False) if test_source else (None, None)
    val, val_scan = read(val_source, False) if val_source else (None, None)
    if val_scan is not None and val_scan.unlabelled:
        raise DataError(f"{val_scan.unlabelled}: has no label; every example of the validation set (--val) needs one")
    sources = [s for s in (pool, curated, test, val) if s]
    folders = sorted({c for s in sources for c in s.classes or []}) or None
    names, index = resolve_labels([s for s in (pool_scan, curated_scan, test_scan, val_scan) if s], folders, class_names)
    tasks = {}
    for name, path in evals.items():
        task, task_scan = read(path, False)
        if task_scan.unlabelled:
            raise DataError(f"{task_scan.unlabelled}: has no label; every example of transfer task {name!r} needs one")
        task_names, task_index = resolve_labels([task_scan], task.classes, None)
        tasks[name] = (with_labels(task, task_index), task_names, task_scan.rows)  # counted once, by the scan
    provenance = {
        "path": str(source),
        "rows": pool_scan.rows,  # counted once, by the scan
        "kind": kind,
        "curated": str(curated_source or source),
        "test": str(test_source or source),
        "val": str(val_source) if val_source else None,
        "evals": {name: str(path) for name, path in evals.items()},
        "noise_column": noise_column,
        "renamed_columns": {s.path: s.renamed for s in sources if s.renamed},
        "skipped": {s.path: s.skipped for s in sources if s.skipped},
    }
    for src in sources:
        for what, count in src.skipped.items():
            log.info("%s: left out %d %s", src.path, count, what.replace("_", " "))
    labelled = {k: with_labels(src, index) if src else None for k, src in (("curated", curated), ("test", test), ("val", val))}
    return write_dataset(with_labels(pool, index), dest, names, **labelled, provenance=provenance, evals=tasks, **options)


def _check_request(kind: str, columns: dict | None, noise_column: str | None, options: dict, curated: bool, test: bool) -> None:
    """The options of an import, checked before any source is read."""
    from winnow.importers import READERS

    if kind not in READERS:
        raise DataError(f"unknown importer {kind!r}; use one of {', '.join(READERS)}")
    if not READERS[kind].columns and columns and any(columns.values()):
        raise DataError(f"--image-column, --label-column and --caption-column name Parquet columns; a {kind} source has none")
    if noise_column is not None and not noise_column.partition("=")[0]:
        raise DataError(f"--noise-column {noise_column!r}: give the column, as NAME or NAME=KIND")
    check_options(
        0 if curated else options.get("curated_fraction", CURATED_FRACTION),
        0 if test else options.get("test_fraction", TEST_FRACTION),
        options.get("shard_size", SHARD_SIZE),
        ("--val-fraction", options.get("val_fraction", VAL_FRACTION)),
    )


def _read(kind: str, columns: dict, noise_column: str | None, path, required: bool) -> tuple[Source, Scan]:
    """One source, its metadata settled, and what its scan found. `required`: the noise column must be there."""
    from winnow.importers import READERS

    src = finish_metadata(READERS[kind].read(path, **columns), noise_column, required)
    counted = scan(src)
    if not counted.rows:
        raise DataError(f"{path}: no examples with an image")
    return src, counted


def parse_evals(evals: list[str] | dict[str, str] | None) -> dict[str, str]:
    """--eval NAME=SOURCE (repeatable) -> {name: source}; a name is a folder under eval/, never 'test'."""
    if isinstance(evals, dict):
        evals = [f"{k}={v}" for k, v in evals.items()]
    out: dict[str, str] = {}
    for given in evals or []:
        name, _, path = given.partition("=")
        if not re.fullmatch(r"[a-z0-9][a-z0-9_-]*", name) or not path:
            raise DataError(
                f"--eval {given!r}: give NAME=SOURCE, NAME in lower-case letters, digits, - and _ (it names eval/NAME/)"
            )
        if name == "test" or name in out:
            raise DataError(f"--eval {given!r}: the task name {name!r} is {'eval/test' if name == 'test' else 'given twice'}")
        if not Path(path).exists():
            raise DataError(f"{path}: no such file or folder (--eval {name})")
        out[name] = path
    return out
