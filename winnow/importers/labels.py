"""What the whole of a source must agree on before anything is written: its rows, labels and classes, and
its metadata columns (renamed where they would shadow a contract column; the pathology column; a transfer
task's folds).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
from tqdm import tqdm

from winnow.errors import DataError
from winnow.importers.source import (
    CONTRACT_COLUMNS,
    Batch,
    Source,
)


@dataclass
class Scan:
    """What a whole source must agree on, from one pass without its images."""

    rows: int = 0
    labels: dict = field(default_factory=dict)  # each distinct label value -> the first example that has it
    unlabelled: str | None = None  # the first example with no label


def scan(src: Source) -> Scan:
    """Count the rows and collect the distinct labels (checking each), reading no images. Running the source's
    mapped steps on the way also checks every noise flag and pathology value before anything is written."""
    out = Scan()
    for examples, _ in tqdm(src.read(images=False), desc=f"scan {Path(src.path).name}", unit="batch", leave=False, disable=None):
        out.rows += len(examples)
        for e in examples:
            if e["label"] is None:
                out.unlabelled = out.unlabelled or e["source_key"]
            else:
                out.labels.setdefault(_label_value(e), e["source_key"])
    return out


def resolve_labels(scans: list[Scan], classes: list[str] | None, given: list[str] | None) -> tuple[list[str], dict]:
    """Class names, and the map from every label value to its index. Labels are all class indices or all
    class names: indices must fit the given names, or without names be exactly 0..K-1 with every class
    present (a stray 99 must not make 100 classes); names map to their place in the given (else sorted) names.
    `classes`: an ImageFolder's class folders."""
    if given and len(set(given)) != len(given):
        raise DataError(f"--class-names lists a name twice: {given}")
    seen: dict = {}
    for s in scans:
        for value, key in s.labels.items():
            seen.setdefault(value, key)
    ints = next(((v, k) for v, k in seen.items() if isinstance(v, int)), None)
    strings = next(((v, k) for v, k in seen.items() if isinstance(v, str)), None)
    if ints and strings:
        raise DataError(
            f"{ints[1]} has label {ints[0]!r} (a class index) but {strings[1]} has {strings[0]!r} (a class name); use one "
            "kind of label throughout"
        )
    if strings or classes:
        names = list(given or classes or sorted(seen))
        index = {name: i for i, name in enumerate(names)}
        for value, key in seen.items():
            if value not in index:
                raise DataError(f"{key}: label {value!r} is not one of the class names {_short(names)}; add it to --class-names")
        return names, index
    if given:
        for value, key in seen.items():
            if not 0 <= value < len(given):
                raise DataError(f"{key}: label {value} is outside the {len(given)} class names {_short(given)}")
        return list(given), {v: v for v in seen}
    values = sorted(seen)
    bad = next(((v, seen[v]) for v in seen if not 0 <= v < len(values)), None)
    if bad:
        missing = sorted(set(range(len(values))) - set(values))
        raise DataError(
            f"{bad[1]}: label {bad[0]}: without --class-names the labels must be exactly 0..{len(values) - 1} "
            f"with every class present, but they are {_short(values)} (missing {_short(missing)}); fix that label, or pass "
            "--class-names with one name per class index"
        )
    return [f"class {i}" for i in range(len(values))], {v: v for v in seen}


def _label_value(example: dict) -> int | str:
    label = example["label"]
    if isinstance(label, float) and label.is_integer():
        label = int(label)
    if isinstance(label, bool) or not isinstance(label, (int, str)):
        raise DataError(
            f"{example['source_key']}: label {label!r} is neither a class index (an integer) nor a class name (a string)"
        )
    return label


def with_labels(src: Source, index: dict) -> Source:
    """The source with every label replaced by its class index."""

    def relabel(batch: Batch) -> Batch:
        examples, metadata = batch
        return [{**e, "label": None if e["label"] is None else index[_label_value(e)]} for e in examples], metadata

    return src.mapped(relabel, src.schema)


def _short(items: list, n: int = 10) -> str:
    return str(items) if len(items) <= n else f"[{', '.join(map(repr, items[:n]))}, ... {len(items)} in all]"


def finish_metadata(src: Source, noise_column: str | None, required: bool) -> Source:
    """Rename source columns that would shadow a contract column, and set the pathology column: carried as it is
    (strings), or from --noise-column NAME[=KIND] (true -> KIND, false -> clean). `required`: the noise column
    must be there (the pool's source; a separate curated or test source without it gets no pathology).
    Column names are settled here; the values are checked as each batch is read (first by the scan)."""
    renames, schema = _renames(src)
    names = list(schema.names) if schema is not None else []
    flag, kind, check_pathology = None, "", False
    if noise_column:
        column, _, kind = noise_column.partition("=")
        if "pathology" in names:
            raise DataError(
                f"{src.path}: has a 'pathology' column and --noise-column {noise_column} was given; pass one or the other"
            )
        if column in names:
            flag = column
            schema = schema.append(pa.field("pathology", pa.string()))
        elif required:
            raise DataError(f"{src.path}: no column or json field {column!r} (--noise-column); the fields are {names}")
    elif "pathology" in names:
        check_pathology = True

    def finish(batch: Batch) -> Batch:
        examples, table = batch
        if table is None:
            return batch
        if renames:
            table = table.rename_columns([renames.get(c, c) for c in table.column_names])
        if flag:
            flags = [_noise_flag(v, e, flag) for v, e in zip(table.column(flag).to_pylist(), examples)]
            table = table.append_column(
                "pathology", pa.array([(kind or "noisy_label") if f else "clean" for f in flags], pa.string())
            )
        if check_pathology:
            _check_pathology(table.column("pathology").to_pylist(), examples)
        return examples, table

    out = src.mapped(finish, schema)
    out.renamed = renames
    return out


def _renames(src: Source) -> tuple[dict[str, str], pa.Schema | None]:
    """Source columns named like a contract column, each to source_<name>, and the schema renamed so."""
    schema = src.schema
    names = list(schema.names) if schema is not None else []
    renames: dict[str, str] = {}
    for name in CONTRACT_COLUMNS:
        if name in names:
            renamed = f"source_{name}"
            if renamed in names:
                raise DataError(
                    f"{src.path}: has columns {name!r} and {renamed!r}; {name!r} is a contract column, so rename one of them"
                )
            renames[name] = renamed
    if renames:
        schema = pa.schema([f.with_name(renames.get(f.name, f.name)) for f in schema])
    return renames, schema


def _check_pathology(values: list, examples: list[dict]) -> None:
    for value, e in zip(values, examples):
        if not isinstance(value, str):
            raise DataError(f"{e['source_key']}: pathology is {value!r}, not a string; fill it (e.g. 'clean') in every row")


def _noise_flag(value, example: dict, column: str) -> bool:
    if isinstance(value, (bool, int, float)) and value in (0, 1):
        return bool(value)
    raise DataError(
        f"{example['source_key']}: --noise-column {column} is {value!r}; it must be true/false (or 1/0) in every example"
    )


def with_folds(task: Source, rows: int, seed: int) -> Source:
    """A transfer task's rows, each marked fold = train (a seeded 2/3) or test, for the linear probe. A source
    column named fold is kept as source_fold."""
    train = np.zeros(rows, dtype=bool)
    train[np.random.default_rng([seed, 1]).permutation(rows)[: rows * 2 // 3]] = True
    schema = task.schema
    if schema is not None and "fold" in schema.names:
        schema = pa.schema([f.with_name("source_fold") if f.name == "fold" else f for f in schema])
    schema = (schema or pa.schema([])).append(pa.field("fold", pa.string()))
    done = [0]

    def fold(batch: Batch) -> Batch:
        examples, table = batch
        start, done[0] = done[0], done[0] + len(examples)
        column = pa.array(np.where(train[start : done[0]], "train", "test").tolist(), pa.string())
        if table is None:
            return examples, pa.table({"fold": column})
        table = table.rename_columns(["source_fold" if c == "fold" else c for c in table.column_names])
        return examples, table.append_column("fold", column)

    def read(images: bool = True):
        done[0] = 0
        yield from (fold(b) for b in task.read(images=images))

    out = Source(path=task.path, read=read, schema=schema)
    out.classes, out.skipped, out.renamed = task.classes, task.skipped, task.renamed
    return out
