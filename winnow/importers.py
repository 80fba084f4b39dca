"""Importers: users' own shards into the data contract (pool/, curated/, eval/test/, manifest.json).

WebDataset tars as img2dataset writes them (jpg|png|webp + txt + json [+ cls]), an
ImageFolder tree (root/<class>/<image>), or a Parquet table with image bytes. Images are
copied as they are (encoded bytes); nothing is decoded here, so a bad image is found,
skipped and counted where it is used. The curated set and the held-out test set are
either sampled from the source (seeded, disjoint from the pool) or imported from a
separate source of the same kind.

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

import hashlib
import json
import logging
import re
import shutil
import tarfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from winnow.data import file_sha256
from winnow.errors import DataError
from winnow.synth import SCHEMA_VERSION

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
SCHEMA = pa.schema(
    [("id", pa.int64()), ("image", pa.binary()), ("label", pa.int32()), ("caption", pa.string()), ("source_key", pa.string())]
)
CONTRACT_COLUMNS = tuple(SCHEMA.names)
CURATED_FRACTION, TEST_FRACTION, SHARD_SIZE = 0.1, 0.05, 5000
TAR_BLOCK = 512
STAGING_MARK = ".winnow-importing"  # what makes DEST.importing ours to remove


@dataclass
class Source:
    """One source in memory: examples (image, label, caption, source_key) and their metadata, one row each."""

    examples: list[dict]
    metadata: pa.Table | None = None  # row i belongs to examples[i]; None when the source has no other columns
    path: str = ""
    classes: list[str] | None = None  # an ImageFolder's class folders
    skipped: dict = field(default_factory=dict)  # what was left out on purpose, counted (e.g. keys with no image)
    renamed: dict = field(default_factory=dict)  # source column -> its name in the shards

    def select(self, rows) -> "Source":
        rows = np.asarray(rows, dtype=np.int64)
        metadata = self.metadata.take(rows) if self.metadata is not None else None
        return Source([self.examples[i] for i in rows], metadata, self.path)


# ---------------------------------------------------------------- readers


def read_webdataset(source: str | Path) -> Source:
    """Examples of every *.tar under `source` (or one tar): members grouped by key, as img2dataset writes them.
    The .txt (else the json's "caption") is the caption, the .cls (else the json's "label") the label; the
    json's other fields are metadata. A key with no image (img2dataset's failed downloads) is counted, not kept."""
    tars = _files(source, "*.tar", "tar shards")
    examples, fields, without_image = [], [], 0
    for tar_path in tars:
        groups = _tar_members(tar_path)
        for key in sorted(groups):
            parts = groups[key]
            image = next((parts[e] for e in ("jpg", "jpeg", "png", "webp") if e in parts), None)
            if image is None:
                without_image += 1
                continue
            meta = _json_member(tar_path, key, parts)
            caption = parts["txt"].decode("utf-8", errors="replace") if "txt" in parts else meta.get("caption")
            label = _cls_member(tar_path, key, parts["cls"]) if "cls" in parts else meta.get("label")
            examples.append({"image": image, "label": label, "caption": caption, "source_key": f"{tar_path.name}/{key}"})
            fields.append({k: v for k, v in meta.items() if k not in ("caption", "label")})
    return Source(
        examples, _json_columns(fields), str(source), skipped={"keys_without_image": without_image} if without_image else {}
    )


def _tar_members(tar_path: Path) -> dict[str, dict[str, bytes]]:
    """Every file member of one tar, grouped by key. Python's tarfile stops quietly where a tar was cut at a
    member boundary, so the end-of-archive blocks after the last member are checked too: a short read is an error."""
    groups: dict[str, dict[str, bytes]] = {}
    try:
        with tarfile.open(tar_path, "r:*") as archive:
            members = archive.getmembers()
            for member in members:
                if not member.isfile():
                    continue
                key, _, ext = member.name.rpartition(".")
                if ext.lower() in groups.setdefault(key, {}):
                    raise DataError(f"{tar_path}: member {member.name} appears twice; write each key's files once")
                groups[key][ext.lower()] = archive.extractfile(member).read()
            end = max((m.offset_data + -(-m.size // TAR_BLOCK) * TAR_BLOCK for m in members), default=0)
            archive.fileobj.seek(end)
            complete = archive.fileobj.read(2 * TAR_BLOCK) == bytes(2 * TAR_BLOCK)
    except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
        raise DataError(f"{tar_path}: truncated or unreadable tar shard ({e}); re-download or re-write it") from e
    if not complete:
        raise DataError(
            f"{tar_path}: truncated tar shard: it stops after {len(members)} members without the end-of-archive "
            "blocks (cut short by an interrupted download or copy?); re-download or re-write it"
        )
    return groups


def _json_member(tar_path: Path, key: str, parts: dict) -> dict:
    if "json" not in parts:
        return {}
    try:
        meta = json.loads(parts["json"])
    except ValueError as e:  # JSONDecodeError and UnicodeDecodeError both
        raise DataError(f"{tar_path}: member {key}.json is not valid JSON ({e}); fix or remove that member") from e
    if not isinstance(meta, dict):
        raise DataError(f"{tar_path}: member {key}.json holds a {type(meta).__name__}, not a JSON object of fields")
    return meta


def _cls_member(tar_path: Path, key: str, data: bytes) -> int:
    text = data.decode("utf-8", errors="replace").strip()
    try:
        return int(text)
    except ValueError:
        raise DataError(
            f"{tar_path}: member {key}.cls holds {text[:40]!r}, not an integer class index; write the index "
            'there, or put the class name in the json\'s "label"'
        ) from None


def _json_columns(rows: list[dict]) -> pa.Table | None:
    """Json fields as columns, null where an example lacks one. A scalar field keeps its type (ints mixed with
    floats become floats); a field of mixed types, or a list or an object, is stored as its text."""
    names = list(dict.fromkeys(k for row in rows for k in row))
    columns = {}
    for name in names:
        values = [row.get(name) for row in rows]
        kinds = {_json_kind(v) for v in values if v is not None}
        kind = "float" if kinds == {"int", "float"} else kinds.pop() if len(kinds) == 1 else "text"
        columns[name] = _json_array(values, kind)
    return pa.table(columns) if columns else None


def _json_kind(value) -> str:
    for kind, types in (("bool", bool), ("int", int), ("float", float), ("str", str)):
        if isinstance(value, types):
            return kind
    return "text"


def _json_array(values: list, kind: str) -> pa.Array:
    types = {"bool": pa.bool_(), "int": pa.int64(), "float": pa.float64(), "str": pa.string()}
    if kind in types:
        try:
            return pa.array([v if v is None or kind != "float" else float(v) for v in values], types[kind])
        except (OverflowError, pa.ArrowInvalid):  # an int beyond int64: keep its digits
            pass
    return pa.array([v if v is None or isinstance(v, str) else json.dumps(v, sort_keys=True) for v in values], pa.string())


def read_imagefolder(source: str | Path) -> Source:
    """root/<class>/<image>: each image's label is its class folder's name; captions are empty."""
    source = Path(source)
    classes = sorted(p.name for p in source.iterdir() if p.is_dir()) if source.is_dir() else []
    if not classes:
        raise DataError(f"{source}: no class folders (an ImageFolder tree is root/<class>/<image>)")
    examples, not_images = [], 0
    for name in classes:
        for path in sorted((source / name).iterdir()):
            if path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS:
                examples.append({"image": path.read_bytes(), "label": name, "caption": None, "source_key": f"{name}/{path.name}"})
            else:
                not_images += 1
    return Source(examples, None, str(source), classes=classes, skipped={"entries_not_images": not_images} if not_images else {})


def read_parquet_table(
    source: str | Path, image_column: str = "image", label_column: str | None = None, caption_column: str | None = None
) -> Source:
    """A Parquet file or folder of them with encoded image bytes. Label and caption columns are optional: by default
    'label' and 'caption' where every file has them; a column named explicitly must be in every file. Every other
    column is metadata, with its Arrow type."""
    tables = [(path, _read_parquet(path)) for path in _files(source, "*.parquet", "Parquet files")]
    label_column = _column_in_use(tables, label_column, "label", "--label-column")
    caption_column = _column_in_use(tables, caption_column, "caption", "--caption-column")
    examples, rest = [], []
    for path, table in tables:
        if image_column not in table.column_names:
            raise DataError(f"{path}: no column {image_column!r} (pass --image-column); columns are {table.column_names}")
        images = _image_bytes(table.column(image_column), path, image_column)
        labels = table.column(label_column).to_pylist() if label_column else [None] * table.num_rows
        captions = table.column(caption_column).to_pylist() if caption_column else [None] * table.num_rows
        for row in range(table.num_rows):
            examples.append(
                {"image": images[row], "label": labels[row], "caption": captions[row], "source_key": f"{path.name}/{row}"}
            )
        rest.append((path, table.drop_columns([c for c in (image_column, label_column, caption_column) if c])))
    return Source(examples, _concat_metadata(rest), str(source))


def _read_parquet(path: Path) -> pa.Table:
    try:
        return pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as e:
        raise DataError(f"{path}: not a readable Parquet file ({e})") from e


def _column_in_use(tables: list, given: str | None, default: str, option: str) -> str | None:
    """The label or caption column: one named with `option` must be in every file; the default is used where
    every file has it (a column in some files only would leave the others' labels silently empty)."""
    name = given or default
    lacking = [path for path, table in tables if name not in table.column_names]
    if lacking and (given or len(lacking) < len(tables)):
        columns = next(t.column_names for p, t in tables if p == lacking[0])
        raise DataError(
            f"{lacking[0]}: no column {name!r} ({option}), which {'you named' if given else 'other files have'}; "
            f"columns are {columns}"
        )
    return None if lacking else name


def _image_bytes(column: pa.ChunkedArray, path: Path, name: str) -> list:
    """Encoded image bytes per row (None kept: decoding later skips and counts it). A Hugging Face Image struct
    (bytes, path) gives its bytes; text, numbers or a bare path are errors naming the row."""
    values = column.to_pylist()
    if pa.types.is_binary(column.type) or pa.types.is_large_binary(column.type) or pa.types.is_fixed_size_binary(column.type):
        return values
    out = []
    for row, value in enumerate(values):
        if isinstance(value, dict) and "bytes" in value:
            value = value["bytes"] if value["bytes"] is not None or not value.get("path") else value["path"]
        if value is not None and not isinstance(value, bytes):
            raise DataError(
                f"{path}: row {row}: image column {name!r} holds {type(value).__name__} {str(value)[:40]!r}, not encoded "
                "image bytes; point --image-column at a column of PNG/JPEG bytes (paths must be read into bytes first)"
            )
        out.append(value)
    return out


def _concat_metadata(parts: list[tuple[Path, pa.Table]]) -> pa.Table | None:
    """The files' other columns as one table: null where a file lacks a column; one column with two types is an error."""
    seen: dict[str, tuple[pa.DataType, Path]] = {}
    for path, table in parts:
        for f in table.schema:
            if pa.types.is_null(f.type):
                continue
            first = seen.setdefault(f.name, (f.type, path))
            if first[0] != f.type:
                raise DataError(
                    f"{path}: column {f.name!r} is {f.type} here but {first[0]} in {first[1]}; write it with one type in "
                    "every file"
                )
    table = pa.concat_tables([t for _, t in parts], promote_options="default")
    return table if table.num_columns else None


def _files(source: str | Path, pattern: str, what: str) -> list[Path]:
    source = Path(source)
    if not source.exists():
        raise DataError(f"{source}: no such file or folder")
    files = sorted(source.glob(pattern)) if source.is_dir() else [source]
    if not files:
        raise DataError(f"{source}: no {what} ({pattern}) in this folder")
    return files


# ---------------------------------------------------------------- labels, metadata


def resolve_labels(sources: list[Source], given: list[str] | None) -> list[str]:
    """Class names, and every example's label made an index into them (in place). Labels are all class indices
    or all class names: indices must fit the given names, or without names be exactly 0..K-1 with every class
    present (a stray 99 must not make 100 classes); names map to their place in the given (else sorted) names."""
    if given and len(set(given)) != len(given):
        raise DataError(f"--class-names lists a name twice: {given}")
    labelled = [e for s in sources for e in s.examples if e["label"] is not None]
    for e in labelled:
        e["label"] = _label_value(e)
    ints = next((e for e in labelled if isinstance(e["label"], int)), None)
    strings = next((e for e in labelled if isinstance(e["label"], str)), None)
    if ints and strings:
        raise DataError(
            f"{ints['source_key']} has label {ints['label']!r} (a class index) but {strings['source_key']} has "
            f"{strings['label']!r} (a class name); use one kind of label throughout"
        )
    folders = sorted({c for s in sources for c in s.classes or []}) or None
    if strings or folders:
        names = list(given or folders or sorted({e["label"] for e in labelled}))
        index = {name: i for i, name in enumerate(names)}
        for e in labelled:
            if e["label"] not in index:
                raise DataError(
                    f"{e['source_key']}: label {e['label']!r} is not one of the class names {_short(names)}; add it to "
                    "--class-names"
                )
            e["label"] = index[e["label"]]
        return names
    if given:
        for e in labelled:
            if not 0 <= e["label"] < len(given):
                raise DataError(f"{e['source_key']}: label {e['label']} is outside the {len(given)} class names {_short(given)}")
        return list(given)
    seen = sorted({e["label"] for e in labelled})
    bad = next((e for e in labelled if not 0 <= e["label"] < len(seen)), None)
    if bad:
        missing = sorted(set(range(len(seen))) - set(seen))
        raise DataError(
            f"{bad['source_key']}: label {bad['label']}: without --class-names the labels must be exactly 0..{len(seen) - 1} "
            f"with every class present, but they are {_short(seen)} (missing {_short(missing)}); fix that label, or pass "
            "--class-names with one name per class index"
        )
    return [f"class {i}" for i in range(len(seen))]


def _label_value(example: dict) -> int | str:
    label = example["label"]
    if isinstance(label, float) and label.is_integer():
        label = int(label)
    if isinstance(label, bool) or not isinstance(label, (int, str)):
        raise DataError(
            f"{example['source_key']}: label {label!r} is neither a class index (an integer) nor a class name (a string)"
        )
    return label


def _short(items: list, n: int = 10) -> str:
    return str(items) if len(items) <= n else f"[{', '.join(map(repr, items[:n]))}, ... {len(items)} in all]"


def finish_metadata(src: Source, noise_column: str | None, required: bool) -> Source:
    """Rename source columns that would shadow a contract column, and set the pathology column: carried as it is
    (strings), or from --noise-column NAME[=KIND] (true -> KIND, false -> clean). `required`: the noise column
    must be there (the pool's source; a separate curated or test source without it gets no pathology)."""
    table = src.metadata
    for name in CONTRACT_COLUMNS:
        if table is not None and name in table.column_names:
            renamed = f"source_{name}"
            if renamed in table.column_names:
                raise DataError(
                    f"{src.path}: has columns {name!r} and {renamed!r}; {name!r} is a contract column, so rename one of them"
                )
            table = table.rename_columns([renamed if c == name else c for c in table.column_names])
            src.renamed[name] = renamed
    names = table.column_names if table is not None else []
    if noise_column:
        column, _, kind = noise_column.partition("=")
        if "pathology" in names:
            raise DataError(
                f"{src.path}: has a 'pathology' column and --noise-column {noise_column} was given; pass one or the other"
            )
        if column not in names:
            if required:
                raise DataError(f"{src.path}: no column or json field {column!r} (--noise-column); the fields are {names}")
        else:
            flags = [_noise_flag(v, e, column) for v, e in zip(table.column(column).to_pylist(), src.examples)]
            table = table.append_column(
                "pathology", pa.array([(kind or "noisy_label") if f else "clean" for f in flags], pa.string())
            )
    elif "pathology" in names:
        for value, e in zip(table.column("pathology").to_pylist(), src.examples):
            if not isinstance(value, str):
                raise DataError(f"{e['source_key']}: pathology is {value!r}, not a string; fill it (e.g. 'clean') in every row")
    src.metadata = table
    return src


def _noise_flag(value, example: dict, column: str) -> bool:
    if isinstance(value, (bool, int, float)) and value in (0, 1):
        return bool(value)
    raise DataError(
        f"{example['source_key']}: --noise-column {column} is {value!r}; it must be true/false (or 1/0) in every example"
    )


# ---------------------------------------------------------------- writing


def write_dataset(
    examples: list[dict] | Source,
    dest: str | Path,
    class_names: list[str],
    *,
    curated: list[dict] | Source | None = None,
    test: list[dict] | Source | None = None,
    curated_fraction: float = CURATED_FRACTION,
    test_fraction: float = TEST_FRACTION,
    seed: int = 0,
    shard_size: int = SHARD_SIZE,
    source: str = "",
    provenance: dict | None = None,
    evals: dict[str, tuple[Source, list[str]]] | None = None,
) -> Path:
    """Split (unless curated/test are given) and write the data contract under `dest`: into DEST.importing,
    manifest last, then renamed into place over a previous import. `provenance` joins the manifest's "source".
    `evals`: transfer tasks, name -> (examples, their own class names), written to eval/<name>/ with a fold
    column (a seeded 2/3 train, 1/3 test) for the linear probe."""
    pool_source, curated, test = _as_source(examples), _as_source(curated), _as_source(test)
    check_options(0 if curated else curated_fraction, 0 if test else test_fraction, shard_size)
    dest = Path(dest)
    check_dest(dest)
    target = dest.resolve()  # so that DEST.importing sits beside it even for "." or "out/"
    n = len(pool_source.examples)
    order = np.random.default_rng(seed).permutation(n)
    n_test = 0 if test else int(round(n * test_fraction))
    n_curated = 0 if curated else int(round(n * curated_fraction))
    pool = pool_source.select(sorted(order[n_test + n_curated :]))
    if not pool.examples:
        raise DataError(f"{source or dest}: nothing left for the pool after taking the curated and test sets")
    if not test:
        if n_test:
            log.warning(
                "eval/test is sampled from %s, the same (possibly noisy) source as the pool: the target then rewards agreeing "
                "with its wrong labels. Pass --test SOURCE, a separate clean held-out set.",
                source or "the pool's source",
            )
        else:
            log.warning("eval/test is empty: pass --test SOURCE (a clean held-out set) or a --test-fraction above 0")
    splits = {
        "pool": pool,
        "curated": curated or pool_source.select(order[n_test : n_test + n_curated]),
        "eval/test": test or pool_source.select(order[:n_test]),
    }
    tasks = {"test": {"label": "label", "class_names": class_names}}
    for name, (task, names) in (evals or {}).items():
        splits[f"eval/{name}"] = with_folds(task, seed)
        tasks[name] = {"label": "label", "class_names": names, "prompt_names": names, "probe": True}
    staging = _staging(target)
    try:
        for name, split in splits.items():
            _write(staging / name, split, shard_size, len(tasks[name[5:]]["class_names"] if name[5:] in tasks else class_names))
    except Exception:  # a bad row: nothing half-written stays behind (a crash leaves DEST.importing, cleared next time)
        shutil.rmtree(staging, ignore_errors=True)
        raise
    content = {str(p.relative_to(staging)): file_sha256(p) for p in sorted(staging.rglob("*.parquet"))}
    provenance = dict(provenance or {})
    curated_path, test_path = provenance.pop("curated", None), provenance.pop("test", None)
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "image": {"format": "encoded"},
        "class_names": class_names,
        "tasks": tasks,
        "counts": {name: len(split.examples) for name, split in splits.items()},
        "source": {
            "path": str(source),
            "seed": seed,
            "curated_fraction": curated_fraction,
            "test_fraction": test_fraction,
            **provenance,
            "curated": {"path": str(source) if not curated else curated_path, "sampled": not curated},
            "test": {"path": str(source) if not test else test_path, "sampled": not test},
            "metadata_columns": {
                name: split.metadata.column_names if split.metadata is not None else [] for name, split in splits.items()
            },
        },
        "files": content,
        "content_hash": hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest(),
    }
    (staging / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    (staging / STAGING_MARK).unlink()
    if target.exists():
        shutil.rmtree(target)  # a previous import (check_dest said so) or an empty folder
    staging.rename(target)
    return dest


def with_folds(task: Source, seed: int) -> Source:
    """A transfer task's rows, each marked fold = train (a seeded 2/3) or test, for the linear probe."""
    n = len(task.examples)
    fold = np.full(n, "test", dtype=object)
    fold[np.random.default_rng([seed, 1]).permutation(n)[: n * 2 // 3]] = "train"
    column = pa.array(list(fold), pa.string())
    if task.metadata is not None and "fold" in task.metadata.column_names:  # the probe's own folds win; theirs are kept
        task.metadata = task.metadata.rename_columns(["source_fold" if c == "fold" else c for c in task.metadata.column_names])
    metadata = task.metadata.append_column("fold", column) if task.metadata is not None else pa.table({"fold": column})
    return Source(task.examples, metadata, task.path)


def _as_source(rows: list[dict] | Source | None) -> Source | None:
    return rows if rows is None or isinstance(rows, Source) else Source(list(rows))


def check_options(curated_fraction: float, test_fraction: float, shard_size: int) -> None:
    """The split options, checked before anything is read: a negative fraction would leak test rows into the pool."""
    for option, value in (("--curated-fraction", curated_fraction), ("--test-fraction", test_fraction)):
        if not 0 <= value < 1:
            raise DataError(f"{option} must be in [0, 1), got {value}")
    if not curated_fraction + test_fraction < 1:
        raise DataError(
            f"--curated-fraction + --test-fraction must be below 1 (the rest is the pool), got {curated_fraction} + "
            f"{test_fraction}"
        )
    if not isinstance(shard_size, (int, np.integer)) or shard_size < 1:
        raise DataError(f"--shard-size must be a whole number of rows, at least 1; got {shard_size}")


def check_dest(dest: Path) -> None:
    """DEST must be new, empty, or a previous import (its manifest has "source"): never someone's other files."""
    if not dest.exists() or (dest.is_dir() and not any(dest.iterdir())) or _is_import(dest):
        return
    raise DataError(
        f"{dest}: already holds files that `winnow data import` did not write; import into a new or empty folder "
        "(or move those files away first)"
    )


def _is_import(folder: Path) -> bool:
    try:
        return "source" in json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError, TypeError):
        return False


def _staging(dest: Path) -> Path:
    """A fresh DEST.importing beside DEST; one left by an import that stopped half-way is removed, anything else refused."""
    staging = dest.parent / (dest.name + ".importing")
    if staging.exists():
        if not ((staging / STAGING_MARK).exists() or _is_import(staging)):
            raise DataError(f"{staging}: exists and was not left by `winnow data import`; move it away or import elsewhere")
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    (staging / STAGING_MARK).touch()
    return staging


def _write(folder: Path, split: Source, shard_size: int, num_classes: int) -> None:
    folder.mkdir(parents=True)
    rows, metadata = split.examples, split.metadata
    for shard, start in enumerate(range(0, max(len(rows), 1), shard_size)):
        chunk = rows[start : start + shard_size]
        for row in chunk:
            if row["label"] is not None and not 0 <= int(row["label"]) < max(num_classes, 1):
                raise DataError(f"{row['source_key']}: label {row['label']} is outside the {num_classes} class names")
            if row["caption"] is not None and not isinstance(row["caption"], str):
                raise DataError(f"{row['source_key']}: caption {row['caption']!r} is not text; captions are strings (or empty)")
        table = pa.table(
            {
                "id": pa.array(np.arange(start, start + len(chunk), dtype=np.int64)),
                "image": pa.array([r["image"] for r in chunk], pa.binary()),
                "label": pa.array([None if r["label"] is None else int(r["label"]) for r in chunk], pa.int32()),
                "caption": pa.array([r["caption"] for r in chunk], pa.string()),
                "source_key": pa.array([r["source_key"] for r in chunk], pa.string()),
            },
            schema=SCHEMA,
        )
        if metadata is not None:
            extra = metadata.slice(start, len(chunk))
            for i, f in enumerate(extra.schema):
                table = table.append_column(f, extra.column(i))
        pq.write_table(table, folder / f"part-{shard:05d}.parquet", compression="zstd")


# ---------------------------------------------------------------- the command


def import_source(
    kind: str,
    source: str | Path,
    dest: str | Path,
    *,
    curated_source: str | Path | None = None,
    test_source: str | Path | None = None,
    class_names: list[str] | None = None,
    columns: dict | None = None,
    noise_column: str | None = None,
    evals: list[str] | dict[str, str] | None = None,
    **options,
) -> Path:
    """`winnow data import KIND SOURCE DEST`: read the source (and separate curated and test ones) and write the
    contract. `columns` names the Parquet importer's image/label/caption columns; `evals` adds transfer tasks
    (NAME=SOURCE, a source of the same kind each, labelled with its own classes); `options` go to write_dataset."""
    readers = {"webdataset": read_webdataset, "imagefolder": read_imagefolder, "parquet": read_parquet_table}
    if kind not in readers:
        raise DataError(f"unknown importer {kind!r}; use webdataset, imagefolder or parquet")
    if kind != "parquet" and columns and any(columns.values()):
        raise DataError(f"--image-column, --label-column and --caption-column name Parquet columns; a {kind} source has none")
    if noise_column is not None and not noise_column.partition("=")[0]:
        raise DataError(f"--noise-column {noise_column!r}: give the column, as NAME or NAME=KIND")
    check_options(
        0 if curated_source else options.get("curated_fraction", CURATED_FRACTION),
        0 if test_source else options.get("test_fraction", TEST_FRACTION),
        options.get("shard_size", SHARD_SIZE),
    )
    evals = parse_evals(evals)
    dest = Path(dest)
    _check_apart(dest, [p for p in (source, curated_source, test_source, *evals.values()) if p])
    check_dest(dest)

    named = {k: v for k, v in (columns or {}).items() if v}

    def read(path, required):
        src = readers[kind](path, **named)
        if not src.examples:
            raise DataError(f"{path}: no examples with an image")
        return finish_metadata(src, noise_column, required)

    pool = read(source, True)
    curated = read(curated_source, False) if curated_source else None
    test = read(test_source, False) if test_source else None
    sources = [s for s in (pool, curated, test) if s]
    names = resolve_labels(sources, class_names)
    tasks = {}
    for name, path in evals.items():
        task = read(path, False)
        unlabelled = next((e for e in task.examples if e["label"] is None), None)
        if unlabelled:
            raise DataError(f"{unlabelled['source_key']}: has no label; every example of transfer task {name!r} needs one")
        tasks[name] = (task, resolve_labels([task], None))
    provenance = {
        "kind": kind,
        "curated": str(curated_source or source),
        "test": str(test_source or source),
        "evals": {name: str(path) for name, path in evals.items()},
        "noise_column": noise_column,
        "renamed_columns": {s.path: s.renamed for s in sources if s.renamed},
        "skipped": {s.path: s.skipped for s in sources if s.skipped},
    }
    for src in sources:
        for what, count in src.skipped.items():
            log.info("%s: left out %d %s", src.path, count, what.replace("_", " "))
    return write_dataset(
        pool, dest, names, curated=curated, test=test, source=str(source), provenance=provenance, evals=tasks, **options
    )


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


def _check_apart(dest: Path, sources: list) -> None:
    """DEST is replaced as a whole, so no source may live inside it, and it may not sit inside a source folder."""
    d = dest.resolve()
    for s in [Path(p).resolve() for p in sources]:
        if d == s or d in s.parents or (s.is_dir() and s in d.parents):
            raise DataError(f"{dest}: the destination overlaps the source {s}; import into a folder outside it")
