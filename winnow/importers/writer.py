"""Writing the data contract: shards written as rows arrive, into DEST.importing, the manifest last, then
renamed into place, so an import that stops half-way never leaves a folder that looks complete.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from winnow.datasets.publish import check_dest, publish, staging_folder
from winnow.datasets.synth import SCHEMA_VERSION
from winnow.errors import DataError
from winnow.importers.labels import with_folds
from winnow.importers.source import (
    CURATED_FRACTION,
    ROW_GROUP_BYTES,
    SCHEMA,
    SHARD_SIZE,
    TEST_FRACTION,
    VAL_FRACTION,
    Source,
)

log = logging.getLogger("winnow")

POOL, CURATED, TEST = 0, 1, 2  # each row's split, one byte per row of the source


class ShardWriter:
    """One split's part-*.parquet shards, written as rows arrive. A shard (`shard_size` rows) is written in row
    groups of at most about ROW_GROUP_BYTES of images, so memory holds one row group, not a whole shard of
    large images (a shard of small images is one row group, as `pq.write_table` would write it)."""

    def __init__(self, folder: Path, shard_size: int, num_classes: int, schema: pa.Schema | None):
        self.folder, self.shard_size, self.num_classes, self.schema = folder, shard_size, num_classes, schema
        folder.mkdir(parents=True)
        self.rows: list[dict] = []
        self.metadata: list[pa.Table] = []
        self.held_bytes = self.written = self.shards = self.in_shard = 0
        self.writer: pq.ParquetWriter | None = None

    def add(self, examples: list[dict], metadata: pa.Table | None) -> None:
        self.rows.extend(examples)
        self.held_bytes += sum(len(e["image"] or b"") for e in examples)
        if self.schema is not None and metadata is not None:
            self.metadata.append(metadata)
        while self.rows:
            room = self.shard_size - self.in_shard
            if len(self.rows) >= room:
                self._write(room, end_of_shard=True)
            elif self.held_bytes >= ROW_GROUP_BYTES:
                self._write(len(self.rows), end_of_shard=False)
            else:
                break

    def close(self) -> int:
        if self.rows or self.writer is not None:
            self._write(len(self.rows), end_of_shard=True)
        if not self.shards:  # an empty split still has its one (empty) shard
            pq.write_table(self._table([]), self.folder / "part-00000.parquet", compression="zstd")
            self.shards = 1
        return self.written

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.close()

    def _write(self, n: int, end_of_shard: bool) -> None:
        chunk, self.rows = self.rows[:n], self.rows[n:]
        self.held_bytes = sum(len(e["image"] or b"") for e in self.rows)
        if chunk:
            table = self._table(chunk)
            if self.writer is None:
                self.writer = pq.ParquetWriter(self.folder / f"part-{self.shards:05d}.parquet", table.schema, compression="zstd")
            self.writer.write_table(table)
            self.written += n
            self.in_shard += n
        if end_of_shard and self.writer is not None:
            self.writer.close()
            self.writer, self.in_shard = None, 0
            self.shards += 1

    def _table(self, chunk: list[dict]) -> pa.Table:
        for row in chunk:
            if row["label"] is not None and not 0 <= int(row["label"]) < max(self.num_classes, 1):
                raise DataError(f"{row['source_key']}: label {row['label']} is outside the {self.num_classes} class names")
            if row["caption"] is not None and not isinstance(row["caption"], str):
                raise DataError(f"{row['source_key']}: caption {row['caption']!r} is not text; captions are strings (or empty)")
        n = len(chunk)
        table = pa.table(
            {
                "id": pa.array(np.arange(self.written, self.written + n, dtype=np.int64)),
                "image": pa.array([r["image"] for r in chunk], pa.binary()),
                "label": pa.array([None if r["label"] is None else int(r["label"]) for r in chunk], pa.int32()),
                "caption": pa.array([r["caption"] for r in chunk], pa.string()),
                "source_key": pa.array([r["source_key"] for r in chunk], pa.string()),
            },
            schema=SCHEMA,
        )
        if self.schema is not None:
            held = pa.concat_tables(self.metadata) if self.metadata else self.schema.empty_table()
            extra, rest = held.slice(0, n).combine_chunks(), held.slice(n)
            self.metadata = [rest] if rest.num_rows else []
            for i, f in enumerate(extra.schema):
                table = table.append_column(f, extra.column(i))
        return table


class _CuratedAndVal:
    """The curated rows, a seeded `fraction` of them diverted to eval/val: the validation split curves, targets and
    crossings read, drawn from the curated source (clean, like the test set) and never from the pool."""

    def __init__(self, curated: ShardWriter, val: ShardWriter, fraction: float, seed: int):
        self.curated, self.val, self.fraction = curated, val, fraction
        self.rng = np.random.default_rng([seed, 7])

    def add(self, examples: list[dict], metadata: pa.Table | None) -> None:
        to_val = self.rng.random(len(examples)) < self.fraction
        for writer, rows in ((self.val, np.flatnonzero(to_val)), (self.curated, np.flatnonzero(~to_val))):
            if len(rows):
                writer.add([examples[i] for i in rows], metadata.take(rows) if metadata is not None else None)


def write_dataset(  # noqa: PLR0913 (keyword-only, one per `winnow data import` option)
    examples: list[dict] | Iterable[dict] | Source,
    dest: str | Path,
    class_names: list[str],
    *,
    curated: list[dict] | Source | None = None,
    test: list[dict] | Source | None = None,
    val: list[dict] | Source | None = None,
    curated_fraction: float = CURATED_FRACTION,
    test_fraction: float = TEST_FRACTION,
    val_fraction: float = VAL_FRACTION,
    seed: int = 0,
    shard_size: int = SHARD_SIZE,
    provenance: dict | None = None,
    evals: dict[str, tuple[Source, list[str], int]] | None = None,
    allow_overlap: bool = False,
) -> Path:
    """Split (unless curated/test are given) and write the data contract under `dest`, streaming: into
    DEST.importing, manifest last, then renamed into place over a previous import. Labels are class indices.
    `provenance` joins the manifest's "source" (its "path": the source's; "rows": the pool source's length when
    already counted, which sampling needs). `evals`: transfer tasks, name -> (examples, their own class names,
    how many), written to eval/<name>/ with a fold column (a seeded 2/3 train, 1/3 test) for the linear probe.
    Separate held-out sources must share no image with the pool or each other, unless `allow_overlap`."""
    pool_source, curated, test, val = _as_source(examples), _as_source(curated), _as_source(test), _as_source(val)
    val_fraction = 0.0 if val else val_fraction  # a given validation set: no curated row is diverted to eval/val
    check_options(0 if curated else curated_fraction, 0 if test else test_fraction, shard_size, ("--val-fraction", val_fraction))
    dest = Path(dest)
    check_dest(dest)
    provenance = dict(provenance or {})
    source_path, rows = provenance.pop("path", ""), provenance.pop("rows", None)
    where = source_path or str(dest)  # what errors name
    fractions = (0.0 if curated else curated_fraction, 0.0 if test else test_fraction)
    plan = _split_plan(pool_source, rows, fractions, seed, where)
    if not test:
        _warn_about_the_test_set(plan is not None and test_fraction > 0, source_path or "the pool's source")
    tasks, task_sources = _tasks(class_names, evals or {}, seed)
    target = dest.resolve()  # so that DEST.importing sits beside it even for "." or "out/"
    staging = staging_folder(target)
    sources = {"curated": curated, "eval/test": test, **({"eval/val": val} if val else {}), **task_sources}
    counts, schemas, overlaps = _write_splits(
        staging, pool_source, sources, plan, shard_size, tasks, where, (val_fraction, seed), allow_overlap
    )
    curated_path, test_path, val_path = (provenance.pop(k, None) for k in ("curated", "test", "val"))
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "image": {"format": "encoded"},
        "class_names": class_names,
        "tasks": tasks,
        "counts": counts,
        "source": {
            "path": source_path,
            "seed": seed,
            "curated_fraction": curated_fraction,
            "test_fraction": test_fraction,
            "val_fraction": val_fraction,  # of the curated rows, held out as eval/val (0 when --val is given)
            **provenance,
            "curated": {"path": source_path if not curated else curated_path, "sampled": not curated},
            "test": {"path": source_path if not test else test_path, "sampled": not test},
            "val": {"path": val_path if val else curated_path or source_path, "sampled": not val},
            "metadata_columns": schemas,
            **({"allow_overlap": True, "overlaps": overlaps} if allow_overlap else {}),  # what the user let through
        },
    }
    publish(staging, target, manifest)
    return dest


def _split_plan(pool: Source, rows: int | None, fractions: tuple[float, float], seed: int, where: str) -> np.ndarray | None:
    """Each source row's split (POOL, CURATED or TEST, one byte a row) when the curated or test set is sampled from
    the pool's source (seeded); None when both are given separately."""
    curated_fraction, test_fraction = fractions
    if not curated_fraction and not test_fraction:
        return None
    n = rows if rows is not None else pool.count()
    order = np.random.default_rng(seed).permutation(n)
    n_test, n_curated = int(round(n * test_fraction)), int(round(n * curated_fraction))
    plan = np.full(n, POOL, dtype=np.uint8)
    plan[order[:n_test]] = TEST
    plan[order[n_test : n_test + n_curated]] = CURATED
    if n_test + n_curated >= n:
        raise DataError(f"{where}: nothing left for the pool after taking the curated and test sets")
    return plan


def _warn_about_the_test_set(sampled: bool, where: str) -> None:
    if sampled:
        log.warning(
            "eval/test is sampled from %s, the same (possibly noisy) source as the pool: the target then rewards agreeing "
            "with its wrong labels. Pass --test SOURCE, a separate clean held-out set.",
            where,
        )
    else:
        log.warning("eval/test is empty: pass --test SOURCE (a clean held-out set) or a --test-fraction above 0")


def _tasks(class_names: list[str], evals: dict, seed: int) -> tuple[dict, dict[str, Source]]:
    """The manifest's tasks (test, and each transfer task with its classes) and each transfer task's source, its
    rows marked with their probe fold."""
    tasks = {"test": {"label": "label", "class_names": class_names}}
    sources = {}
    for name, (task, names, rows) in evals.items():
        sources[f"eval/{name}"] = with_folds(task, rows, seed)
        tasks[name] = {"label": "label", "class_names": names, "probe": True}
        if names != [f"class {i}" for i in range(len(names))]:  # named classes: CLIP can be prompted with them
            tasks[name]["prompt_names"] = names
    return tasks, sources


def _write_splits(
    staging: Path,
    pool: Source,
    sources: dict,
    plan: np.ndarray | None,
    shard_size: int,
    tasks: dict,
    where: str,
    val: tuple[float, int] = (VAL_FRACTION, 0),
    allow_overlap: bool = False,
) -> tuple[dict, dict, dict]:
    """Stream the pool's source into its splits (by `plan`) and each separate source into its own, a batch at a
    time, `val` (fraction, seed) of the curated rows into eval/val; the rows written per split, each split's
    metadata columns, and the images separate sets share ('set~other': rows; refused unless allow_overlap).
    A bad row, an overlap or an interrupt leaves nothing."""
    heldout = ("pool", "curated", "eval/test", "eval/val")
    classes = {name: len(tasks["test" if name in heldout else name[5:]]["class_names"]) for name in [*heldout, *sources]}
    writers: dict[str, ShardWriter] = {}
    try:
        for name in ("pool", *sources):
            schema = (sources.get(name) or pool).schema if name != "pool" else pool.schema
            writers[name] = ShardWriter(staging / name, shard_size, classes[name], schema)
        if "eval/val" not in writers:  # drawn from the curated rows, unless a validation source was given
            writers["eval/val"] = ShardWriter(staging / "eval/val", shard_size, classes["eval/val"], writers["curated"].schema)
        curated = _CuratedAndVal(writers["curated"], writers["eval/val"], *val)
        routes = {POOL: writers["pool"], CURATED: curated, TEST: writers["eval/test"]}
        done, pool_images = 0, []
        for examples, metadata in tqdm(pool.read(), desc="import pool", unit="batch", leave=False, disable=None):
            where_to = plan[done : done + len(examples)] if plan is not None else np.full(len(examples), POOL)
            for split, writer in routes.items():
                rows = np.flatnonzero(where_to == split)
                if len(rows):
                    writer.add([examples[i] for i in rows], metadata.take(rows) if metadata is not None else None)
            pool_images.append(image_digests([examples[i] for i in np.flatnonzero(where_to == POOL)]))
            done += len(examples)
        if plan is not None and done != len(plan):
            raise DataError(f"{where}: the source changed while it was read ({len(plan)} rows, then {done})")
        if not done:
            raise DataError(f"{where}: no examples in the pool")
        seen, overlaps = {"pool": np.sort(np.concatenate(pool_images))}, {}
        for name, source in sources.items():  # each held out from the pool and from every other: never the same image
            overlap = _Overlap(dict(seen))
            for examples, metadata in source.read() if source else ():
                overlap.count(examples)
                (curated if name == "curated" else writers[name]).add(examples, metadata)
            if not allow_overlap:
                overlap.refuse(name, source, {n: getattr(s, "path", n) for n, s in sources.items() if s})
            overlaps.update({f"{name}~{other}": n for other, n in overlap.found.items()})
            seen[name] = overlap.sorted_digests()
        counts = {name: writer.close() for name, writer in writers.items()}
        if not counts["pool"]:
            raise DataError(f"{where}: nothing left for the pool after taking the curated and test sets")
    except BaseException:  # a bad row, or an interrupt: nothing half-written stays behind
        for writer in writers.values():
            writer.abort()
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return counts, {name: w.schema.names if w.schema is not None else [] for name, w in writers.items()}, overlaps


def image_digests(examples: list[dict]) -> np.ndarray:
    """A 64-bit content hash of each example's image bytes: two rows with one digest hold the same image."""
    return np.array(
        [int.from_bytes(hashlib.blake2b(e["image"] or b"", digest_size=8).digest(), "little") for e in examples],
        dtype=np.uint64,
    )


_FLAGS = {"curated": ("--curated", "curated"), "eval/val": ("--val", "validation"), "eval/test": ("--test", "test")}


def _flag(name: str) -> tuple[str, str]:
    """The import option that gave a held-out split, and its name in words."""
    return _FLAGS.get(name, (f"--eval {name[5:]}", f"{name[5:]!r} transfer"))


class _Overlap:
    """Rows of a separate held-out source (curated, test, val or a transfer task) whose image is byte for byte an
    image of the pool or of a held-out set read before it (by content, so a copy of a file under another name is
    caught too): every pair of sets is checked once. Keeps its own digests, 8 bytes a row, for the sets after it."""

    def __init__(self, against: dict[str, np.ndarray]):
        self.against = against  # name -> sorted digests of the pool and of every held-out set read before this one
        self.rows, self.found, self.first, self.digests = 0, {}, {}, []

    def count(self, examples: list[dict]) -> None:
        digests = image_digests(examples)
        self.digests.append(digests)
        for name, known in self.against.items():
            if not len(known):
                continue
            same = np.flatnonzero(known[np.searchsorted(known, digests).clip(0, len(known) - 1)] == digests)
            if len(same):
                self.found[name] = self.found.get(name, 0) + len(same)
                self.first.setdefault(name, examples[same[0]]["source_key"])
        self.rows += len(examples)

    def sorted_digests(self) -> np.ndarray:
        return np.sort(np.concatenate(self.digests)) if self.digests else np.zeros(0, np.uint64)

    def refuse(self, name: str, source, paths: dict[str, str]) -> None:
        """Raise for the first set it overlaps, naming both files and the first row; `paths`: each set's source."""
        if not self.found:
            return
        other = next(iter(self.found))
        what, words = _flag(name)
        theirs = "the pool" if other == "pool" else f"the {_flag(other)[1]} set ({_flag(other)[0]} {paths[other]})"
        raise DataError(
            f"{source.path}: {self.found[other]:,} of {self.rows:,} rows of the {words} set ({what}) are byte for byte "
            f"images of {theirs} (first: {self.first[other]}); a held-out set must overlap neither the pool nor another "
            f"held-out set, or it rewards memorising it (or the test set steers choices): pass disjoint sources"
            f"{f', leave {what} out to sample one from the pool source' if name in _FLAGS else ''}, or pass "
            "--allow-overlap where you mean it (the manifest records it)"
        )


def _as_source(rows: list[dict] | Iterable[dict] | Source | None) -> Source | None:
    return rows if rows is None or isinstance(rows, Source) else Source(rows if isinstance(rows, (list, tuple)) else iter(rows))


def check_options(curated_fraction: float, test_fraction: float, shard_size: int, *extra: tuple[str, float]) -> None:
    """The split options, checked before anything is read: a negative fraction would leak test rows into the pool."""
    for option, value in (("--curated-fraction", curated_fraction), ("--test-fraction", test_fraction), *extra):
        if not 0 <= value < 1:
            raise DataError(f"{option} must be in [0, 1), got {value}")
    if not curated_fraction + test_fraction < 1:
        raise DataError(
            f"--curated-fraction + --test-fraction must be below 1 (the rest is the pool), got {curated_fraction} + "
            f"{test_fraction}"
        )
    if not isinstance(shard_size, (int, np.integer)) or shard_size < 1:
        raise DataError(f"--shard-size must be a whole number of rows, at least 1; got {shard_size}")
