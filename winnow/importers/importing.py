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

import hashlib
import json
import logging
import re
import shutil
import tarfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from winnow.datasets.contract import file_sha256
from winnow.datasets.synth import SCHEMA_VERSION
from winnow.errors import DataError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
SCHEMA = pa.schema(
    [("id", pa.int64()), ("image", pa.binary()), ("label", pa.int32()), ("caption", pa.string()), ("source_key", pa.string())]
)
CONTRACT_COLUMNS = tuple(SCHEMA.names)
CURATED_FRACTION, TEST_FRACTION, SHARD_SIZE = 0.1, 0.05, 5000
BATCH_ROWS, BATCH_BYTES = 1000, 32 * 2**20  # rows read at a time: at most this many, of at most this many image bytes
ROW_GROUP_BYTES = 32 * 2**20  # a shard is written in row groups of about this many image bytes
TAR_BLOCK = 512
STAGING_MARK = ".winnow-importing"  # what makes DEST.importing ours to remove
INT64 = (-(2**63), 2**63 - 1)

Batch = tuple[list[dict], "pa.Table | None"]  # examples (image, label, caption, source_key) and their metadata rows


class Source:
    """One source as a stream of batches: `read(images=True)` reads it from the start each time it is called
    (a list or a reader can be read again; a generator only once). Each batch is (examples, metadata), the
    metadata a table of `schema` (None: no other columns) with one row per example."""

    def __init__(
        self,
        examples: Iterable[dict] | None = None,
        metadata: pa.Table | None = None,
        path: str = "",
        *,
        read: Callable[..., Iterator[Batch]] | None = None,
        schema: pa.Schema | None = None,
        classes: list[str] | None = None,
        skipped: dict | None = None,
    ):
        self.path = path
        self.read = read or _batches_of(examples if examples is not None else [], metadata, path)
        self.schema = schema if read is not None else (metadata.schema if metadata is not None else None)
        self.classes = classes  # an ImageFolder's class folders
        self.skipped = skipped or {}  # what was left out on purpose, counted (e.g. keys with no image)
        self.renamed: dict = {}  # source column -> its name in the shards

    def count(self) -> int:
        return sum(len(examples) for examples, _ in self.read(images=False))

    def mapped(self, fn: Callable[[Batch], Batch], schema: pa.Schema | None) -> "Source":
        """The same source with `fn` applied to every batch as it is read."""
        inner = self.read
        out = Source(path=self.path, read=lambda images=True: (fn(b) for b in inner(images=images)), schema=schema)
        out.path, out.classes, out.skipped, out.renamed = self.path, self.classes, self.skipped, self.renamed
        return out


def _batches_of(examples: Iterable[dict], metadata: pa.Table | None, path: str) -> Callable[..., Iterator[Batch]]:
    if isinstance(examples, (list, tuple)):

        def read(images: bool = True):
            for start in range(0, len(examples), BATCH_ROWS):
                yield (
                    list(examples[start : start + BATCH_ROWS]),
                    metadata.slice(start, BATCH_ROWS) if metadata is not None else None,
                )

        return read
    iterator, used = iter(examples), []

    def once(images: bool = True):
        if used:
            raise DataError(
                f"{path or 'the pool'}: a generator can be read only once; give the curated and test sets separately "
                "(nothing to sample), or pass a list"
            )
        used.append(True)
        chunk, size = [], 0
        for example in iterator:
            chunk.append(example)
            size += len(example.get("image") or b"")
            if len(chunk) == BATCH_ROWS or size >= BATCH_BYTES:
                yield chunk, None
                chunk, size = [], 0
        if chunk:
            yield chunk, None

    return once


# ---------------------------------------------------------------- readers


def read_webdataset(source: str | Path) -> Source:
    """Examples of every *.tar under `source` (or one tar): members grouped by key, keys in sorted order, as
    img2dataset writes them. The .txt (else the json's "caption") is the caption, the .cls (else the json's
    "label") the label; the json's other fields are metadata. A key with no image (img2dataset's failed
    downloads) is counted, not kept. Only the tar's headers and its small members are held, never its images."""
    tars = _files(source, "*.tar", "tar shards")
    kinds: dict[str, set] = {}  # json field -> the kinds of its values, over the whole source
    without_image = 0
    for tar_path in tars:  # the scan: headers, and the json members for the metadata's column types
        with _open_tar(tar_path) as archive:
            for key, parts in _tar_index(tar_path, archive):
                if not _image_member(parts):
                    without_image += 1
                    continue
                meta = _json_member(tar_path, key, archive, parts)
                for name, value in meta.items():
                    if name not in ("caption", "label"):
                        seen = kinds.setdefault(name, set())
                        if value is not None:
                            seen.add(_json_kind(value))
    columns = {name: _column_kind(k) for name, k in kinds.items()}
    schema = pa.schema([(name, _JSON_TYPES.get(kind, pa.string())) for name, kind in columns.items()]) if columns else None

    def read(images: bool = True):
        examples, fields, size = [], [], 0
        for tar_path in tars:
            with _open_tar(tar_path) as archive:
                for key, parts in _tar_index(tar_path, archive):
                    image = _image_member(parts)
                    if image is None:
                        continue
                    meta = _json_member(tar_path, key, archive, parts)
                    text = archive.extractfile(parts["txt"]).read() if "txt" in parts else None
                    caption = text.decode("utf-8", errors="replace") if text is not None else meta.get("caption")
                    label = _cls_member(tar_path, key, archive, parts["cls"]) if "cls" in parts else meta.get("label")
                    data = archive.extractfile(image).read() if images else None
                    examples.append({"image": data, "label": label, "caption": caption, "source_key": f"{tar_path.name}/{key}"})
                    fields.append(meta)
                    size += len(data or b"")
                    if len(examples) == BATCH_ROWS or size >= BATCH_BYTES:
                        yield examples, _json_table(fields, columns)
                        examples, fields, size = [], [], 0
        if examples:
            yield examples, _json_table(fields, columns)

    return Source(
        path=str(source),
        read=read,
        schema=schema,
        skipped={"keys_without_image": without_image} if without_image else {},
    )


def _open_tar(tar_path: Path) -> tarfile.TarFile:
    try:
        return tarfile.open(tar_path, "r:*")
    except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
        raise DataError(f"{tar_path}: truncated or unreadable tar shard ({e}); re-download or re-write it") from e


def _tar_index(tar_path: Path, archive: tarfile.TarFile) -> Iterator[tuple[str, dict[str, tarfile.TarInfo]]]:
    """(key, {ext: member}) for every key of one tar, in sorted key order. Python's tarfile stops quietly where
    a tar was cut at a member boundary, so the end-of-archive blocks after the last member are checked too."""
    groups: dict[str, dict[str, tarfile.TarInfo]] = {}
    try:
        members = archive.getmembers()
        for member in members:
            if not member.isfile():
                continue
            key, _, ext = member.name.rpartition(".")
            if ext.lower() in groups.setdefault(key, {}):
                raise DataError(f"{tar_path}: member {member.name} appears twice; write each key's files once")
            groups[key][ext.lower()] = member
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
    for key in sorted(groups):
        yield key, groups[key]


def _image_member(parts: dict) -> tarfile.TarInfo | None:
    return next((parts[e] for e in ("jpg", "jpeg", "png", "webp") if e in parts), None)


def _json_member(tar_path: Path, key: str, archive: tarfile.TarFile, parts: dict) -> dict:
    if "json" not in parts:
        return {}
    try:
        meta = json.loads(archive.extractfile(parts["json"]).read())
    except ValueError as e:  # JSONDecodeError and UnicodeDecodeError both
        raise DataError(f"{tar_path}: member {key}.json is not valid JSON ({e}); fix or remove that member") from e
    if not isinstance(meta, dict):
        raise DataError(f"{tar_path}: member {key}.json holds a {type(meta).__name__}, not a JSON object of fields")
    return meta


def _cls_member(tar_path: Path, key: str, archive: tarfile.TarFile, member: tarfile.TarInfo) -> int:
    text = archive.extractfile(member).read().decode("utf-8", errors="replace").strip()
    try:
        return int(text)
    except ValueError:
        raise DataError(
            f"{tar_path}: member {key}.cls holds {text[:40]!r}, not an integer class index; write the index "
            'there, or put the class name in the json\'s "label"'
        ) from None


_JSON_TYPES = {"bool": pa.bool_(), "int": pa.int64(), "float": pa.float64(), "str": pa.string()}


def _json_kind(value) -> str:
    for kind, types in (("bool", bool), ("int", int), ("float", float), ("str", str)):
        if isinstance(value, types):
            if kind == "int" and not INT64[0] <= value <= INT64[1]:
                return "bigint"  # beyond int64: kept as its digits
            return kind
    return "text"


def _column_kind(kinds: set) -> str:
    """A json field's column type: its one kind (ints mixed with floats become floats), else text."""
    if kinds == {"int", "float"}:
        return "float"
    return next(iter(kinds)) if len(kinds) == 1 and kinds != {"bigint"} else "text"


def _json_table(rows: list[dict], columns: dict[str, str]) -> pa.Table | None:
    """One batch's json fields as columns of the source's types (from the scan), null where a row lacks one."""
    if not columns:
        return None
    return pa.table({name: _json_array([row.get(name) for row in rows], kind) for name, kind in columns.items()})


def _json_array(values: list, kind: str) -> pa.Array:
    if kind in _JSON_TYPES:
        return pa.array([v if v is None or kind != "float" else float(v) for v in values], _JSON_TYPES[kind])
    return pa.array([v if v is None or isinstance(v, str) else json.dumps(v, sort_keys=True) for v in values], pa.string())


def read_imagefolder(source: str | Path) -> Source:
    """root/<class>/<image>: each image's label is its class folder's name; captions are empty. The file list
    is held (paths only); each image is read when its batch is."""
    source = Path(source)
    classes = sorted(p.name for p in source.iterdir() if p.is_dir()) if source.is_dir() else []
    if not classes:
        raise DataError(f"{source}: no class folders (an ImageFolder tree is root/<class>/<image>)")
    entries, not_images = [], 0
    for name in classes:
        for path in sorted((source / name).iterdir()):
            if path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS:
                entries.append((name, path))
            else:
                not_images += 1

    def read(images: bool = True):
        batch, size = [], 0
        for name, path in entries:
            image = path.read_bytes() if images else None
            batch.append({"image": image, "label": name, "caption": None, "source_key": f"{name}/{path.name}"})
            size += len(image or b"")
            if len(batch) == BATCH_ROWS or size >= BATCH_BYTES:
                yield batch, None
                batch, size = [], 0
        if batch:
            yield batch, None

    skipped = {"entries_not_images": not_images} if not_images else {}
    return Source(path=str(source), read=read, schema=None, classes=classes, skipped=skipped)


def read_parquet_table(
    source: str | Path, image_column: str = "image", label_column: str | None = None, caption_column: str | None = None
) -> Source:
    """A Parquet file or folder of them with encoded image bytes. Label and caption columns are optional: by default
    'label' and 'caption' where every file has them; a column named explicitly must be in every file. Every other
    column is metadata, with its Arrow type (null where a file lacks it). Read a batch at a time."""
    schemas = [(path, _read_schema(path)) for path in _files(source, "*.parquet", "Parquet files")]
    label_column = _column_in_use(schemas, label_column, "label", "--label-column")
    caption_column = _column_in_use(schemas, caption_column, "caption", "--caption-column")
    used = [c for c in (image_column, label_column, caption_column) if c]
    for path, schema in schemas:
        if image_column not in schema.names:
            raise DataError(f"{path}: no column {image_column!r} (pass --image-column); columns are {schema.names}")
    rest = _metadata_schema([(path, pa.schema([f for f in schema if f.name not in used])) for path, schema in schemas])

    def read(images: bool = True):
        for path, _ in schemas:
            columns = [c for c in _read_schema(path).names if images or c != image_column]
            offset = 0
            try:
                file = pq.ParquetFile(path)
                batches = file.iter_batches(batch_size=_parquet_batch_rows(file), columns=columns)
                for batch in batches:
                    table = pa.Table.from_batches([batch])
                    n = table.num_rows
                    imgs = _image_bytes(table.column(image_column), path, image_column, offset) if images else [None] * n
                    labels = table.column(label_column).to_pylist() if label_column else [None] * n
                    captions = table.column(caption_column).to_pylist() if caption_column else [None] * n
                    examples = [
                        {"image": imgs[r], "label": labels[r], "caption": captions[r], "source_key": f"{path.name}/{offset + r}"}
                        for r in range(n)
                    ]
                    yield examples, _conform(table.drop_columns([c for c in used if c in table.column_names]), rest)
                    offset += n
            except (pa.ArrowInvalid, OSError) as e:
                raise DataError(f"{path}: not a readable Parquet file ({e})") from e

    return Source(path=str(source), read=read, schema=rest)


def _parquet_batch_rows(file: pq.ParquetFile) -> int:
    """Rows per batch so that a batch holds about BATCH_BYTES, from the file's own row-group sizes."""
    meta = file.metadata
    if not meta.num_rows or not meta.num_row_groups:
        return BATCH_ROWS
    per_row = sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups)) / meta.num_rows
    return int(max(1, min(BATCH_ROWS, BATCH_BYTES // max(per_row, 1))))


def _read_schema(path: Path) -> pa.Schema:
    try:
        return pq.read_schema(path)
    except (pa.ArrowInvalid, OSError) as e:
        raise DataError(f"{path}: not a readable Parquet file ({e})") from e


def _column_in_use(schemas: list, given: str | None, default: str, option: str) -> str | None:
    """The label or caption column: one named with `option` must be in every file; the default is used where
    every file has it (a column in some files only would leave the others' labels silently empty)."""
    name = given or default
    lacking = [(path, schema) for path, schema in schemas if name not in schema.names]
    if lacking and (given or len(lacking) < len(schemas)):
        raise DataError(
            f"{lacking[0][0]}: no column {name!r} ({option}), which {'you named' if given else 'other files have'}; "
            f"columns are {lacking[0][1].names}"
        )
    return None if lacking else name


def _image_bytes(column: pa.ChunkedArray, path: Path, name: str, offset: int = 0) -> list:
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
                f"{path}: row {offset + row}: image column {name!r} holds {type(value).__name__} {str(value)[:40]!r}, not "
                "encoded image bytes; point --image-column at a column of PNG/JPEG bytes (paths must be read into bytes first)"
            )
        out.append(value)
    return out


def _metadata_schema(parts: list[tuple[Path, pa.Schema]]) -> pa.Schema | None:
    """The files' other columns as one schema: one column with two types is an error (a column all null in a
    file takes the others' type)."""
    seen: dict[str, tuple[pa.DataType, Path]] = {}
    for path, schema in parts:
        for f in schema:
            if pa.types.is_null(f.type):
                continue
            first = seen.setdefault(f.name, (f.type, path))
            if first[0] != f.type:
                raise DataError(
                    f"{path}: column {f.name!r} is {f.type} here but {first[0]} in {first[1]}; write it with one type in "
                    "every file"
                )
    schema = pa.unify_schemas([s.remove_metadata() for _, s in parts], promote_options="default")
    return schema if len(schema) else None


def _conform(table: pa.Table, schema: pa.Schema | None) -> pa.Table | None:
    """A batch's metadata in the source's schema: columns in its order, null where this file lacks one."""
    if schema is None:
        return None
    n = table.num_rows
    columns = [table.column(f.name).cast(f.type) if f.name in table.column_names else pa.nulls(n, f.type) for f in schema]
    return pa.Table.from_arrays(columns, schema=schema)


def _files(source: str | Path, pattern: str, what: str) -> list[Path]:
    source = Path(source)
    if not source.exists():
        raise DataError(f"{source}: no such file or folder")
    files = sorted(source.glob(pattern)) if source.is_dir() else [source]
    if not files:
        raise DataError(f"{source}: no {what} ({pattern}) in this folder")
    return files


# ---------------------------------------------------------------- labels, metadata


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
    schema = src.schema
    renames: dict[str, str] = {}
    names = list(schema.names) if schema is not None else []
    for name in CONTRACT_COLUMNS:
        if name in names:
            renamed = f"source_{name}"
            if renamed in names:
                raise DataError(
                    f"{src.path}: has columns {name!r} and {renamed!r}; {name!r} is a contract column, so rename one of them"
                )
            renames[name] = renamed
    if renames:
        names = [renames.get(c, c) for c in names]
        schema = pa.schema([f.with_name(renames.get(f.name, f.name)) for f in schema])
    flag, kind, check_pathology = None, "", False
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
            flag = column
            schema = schema.append(pa.field("pathology", pa.string()))
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
            for value, e in zip(table.column("pathology").to_pylist(), examples):
                if not isinstance(value, str):
                    raise DataError(
                        f"{e['source_key']}: pathology is {value!r}, not a string; fill it (e.g. 'clean') in every row"
                    )
        return examples, table

    out = src.mapped(finish, schema)
    out.renamed = renames
    return out


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


# ---------------------------------------------------------------- writing


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


POOL, CURATED, TEST = 0, 1, 2


def write_dataset(
    examples: list[dict] | Iterable[dict] | Source,
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
    evals: dict[str, tuple[Source, list[str], int]] | None = None,
    num_rows: int | None = None,
) -> Path:
    """Split (unless curated/test are given) and write the data contract under `dest`, streaming: into
    DEST.importing, manifest last, then renamed into place over a previous import. Labels are class indices.
    `provenance` joins the manifest's "source". `evals`: transfer tasks, name -> (examples, their own class
    names, how many), written to eval/<name>/ with a fold column (a seeded 2/3 train, 1/3 test) for the linear probe.
    `num_rows`: the pool source's length when already counted (sampling needs it; else it is counted)."""
    pool_source, curated, test = _as_source(examples), _as_source(curated), _as_source(test)
    check_options(0 if curated else curated_fraction, 0 if test else test_fraction, shard_size)
    dest = Path(dest)
    check_dest(dest)
    target = dest.resolve()  # so that DEST.importing sits beside it even for "." or "out/"
    sample = (not test and test_fraction > 0) or (not curated and curated_fraction > 0)
    n = (num_rows if num_rows is not None else pool_source.count()) if sample else None
    plan = None
    if sample:  # each row's split: the pool, or one of the sampled sets (one byte per row)
        order = np.random.default_rng(seed).permutation(n)
        n_test = 0 if test else int(round(n * test_fraction))
        n_curated = 0 if curated else int(round(n * curated_fraction))
        plan = np.full(n, POOL, dtype=np.uint8)
        plan[order[:n_test]] = TEST
        plan[order[n_test : n_test + n_curated]] = CURATED
        del order
        if n_test + n_curated >= n:
            raise DataError(f"{source or dest}: nothing left for the pool after taking the curated and test sets")
    if not test:
        if sample and test_fraction > 0:
            log.warning(
                "eval/test is sampled from %s, the same (possibly noisy) source as the pool: the target then rewards agreeing "
                "with its wrong labels. Pass --test SOURCE, a separate clean held-out set.",
                source or "the pool's source",
            )
        else:
            log.warning("eval/test is empty: pass --test SOURCE (a clean held-out set) or a --test-fraction above 0")
    tasks = {"test": {"label": "label", "class_names": class_names}}
    task_sources = {}
    for name, (task, names, rows) in (evals or {}).items():
        task_sources[f"eval/{name}"] = with_folds(task, rows, seed)
        tasks[name] = {"label": "label", "class_names": names, "probe": True}
        if names != [f"class {i}" for i in range(len(names))]:  # named classes: CLIP can be prompted with them
            tasks[name]["prompt_names"] = names
    staging = _staging(target)
    writers: dict[str, ShardWriter] = {}
    try:
        writers = {
            "pool": ShardWriter(staging / "pool", shard_size, len(class_names), pool_source.schema),
            "curated": ShardWriter(staging / "curated", shard_size, len(class_names), (curated or pool_source).schema),
            "eval/test": ShardWriter(staging / "eval/test", shard_size, len(class_names), (test or pool_source).schema),
        }
        routes = {POOL: writers["pool"], CURATED: writers["curated"], TEST: writers["eval/test"]}
        done = 0
        for batch_examples, metadata in tqdm(pool_source.read(), desc="import pool", unit="batch", leave=False, disable=None):
            if plan is None:
                writers["pool"].add(batch_examples, metadata)
            else:
                where = plan[done : done + len(batch_examples)]
                for split, writer in routes.items():
                    rows = np.flatnonzero(where == split)
                    if len(rows):
                        writer.add([batch_examples[i] for i in rows], metadata.take(rows) if metadata is not None else None)
            done += len(batch_examples)
        if plan is not None and done != len(plan):
            raise DataError(f"{source or dest}: the source changed while it was read ({len(plan)} rows, then {done})")
        if not done:
            raise DataError(f"{source or dest}: no examples in the pool")
        for name, separate in (("curated", curated), ("eval/test", test)):
            for batch_examples, metadata in separate.read() if separate else ():
                writers[name].add(batch_examples, metadata)
        for name, task in task_sources.items():
            writers[name] = ShardWriter(staging / name, shard_size, len(tasks[name[5:]]["class_names"]), task.schema)
            for batch_examples, metadata in task.read():
                writers[name].add(batch_examples, metadata)
        counts = {name: writer.close() for name, writer in writers.items()}
        if not counts["pool"]:
            raise DataError(f"{source or dest}: nothing left for the pool after taking the curated and test sets")
    except BaseException:  # a bad row, or an interrupt: nothing half-written stays behind
        for writer in writers.values():
            writer.abort()
        shutil.rmtree(staging, ignore_errors=True)
        raise
    provenance = dict(provenance or {})
    curated_path, test_path = provenance.pop("curated", None), provenance.pop("test", None)
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "image": {"format": "encoded"},
        "class_names": class_names,
        "tasks": tasks,
        "counts": counts,
        "source": {
            "path": str(source),
            "seed": seed,
            "curated_fraction": curated_fraction,
            "test_fraction": test_fraction,
            **provenance,
            "curated": {"path": str(source) if not curated else curated_path, "sampled": not curated},
            "test": {"path": str(source) if not test else test_path, "sampled": not test},
            "metadata_columns": {
                name: writer.schema.names if writer.schema is not None else [] for name, writer in writers.items()
            },
        },
    }
    publish(staging, target, manifest)
    return dest


def publish(staging: Path, target: Path, manifest: dict) -> None:
    """Finish a dataset written into `staging`: its shards' hashes and content hash into the manifest, the
    manifest written last, then the folder renamed over `target` (a previous import, or an empty folder)."""
    content = {str(p.relative_to(staging)): file_sha256(p) for p in sorted(staging.rglob("*.parquet"))}
    manifest = {
        **manifest,
        "files": content,
        "content_hash": hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest(),
    }
    (staging / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    (staging / STAGING_MARK).unlink()
    if target.exists():
        shutil.rmtree(target)
    staging.rename(target)


def _as_source(rows: list[dict] | Iterable[dict] | Source | None) -> Source | None:
    return rows if rows is None or isinstance(rows, Source) else Source(rows if isinstance(rows, (list, tuple)) else iter(rows))


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
    """`winnow data import KIND SOURCE DEST`: scan the source (and separate curated, test and transfer ones),
    then stream it into the contract. `columns` names the Parquet importer's image/label/caption columns;
    `evals` adds transfer tasks (NAME=SOURCE, a source of the same kind each, labelled with its own classes);
    `options` go to write_dataset."""
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

    def read(path, required) -> tuple[Source, Scan]:
        src = finish_metadata(readers[kind](path, **named), noise_column, required)
        counted = scan(src)
        if not counted.rows:
            raise DataError(f"{path}: no examples with an image")
        return src, counted

    pool, pool_scan = read(source, True)
    curated, curated_scan = read(curated_source, False) if curated_source else (None, None)
    test, test_scan = read(test_source, False) if test_source else (None, None)
    sources = [s for s in (pool, curated, test) if s]
    folders = sorted({c for s in sources for c in s.classes or []}) or None
    names, index = resolve_labels([s for s in (pool_scan, curated_scan, test_scan) if s], folders, class_names)
    tasks = {}
    for name, path in evals.items():
        task, task_scan = read(path, False)
        if task_scan.unlabelled:
            raise DataError(f"{task_scan.unlabelled}: has no label; every example of transfer task {name!r} needs one")
        task_names, task_index = resolve_labels([task_scan], task.classes, None)
        tasks[name] = (with_labels(task, task_index), task_names, task_scan.rows)  # counted once, by the scan
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
        with_labels(pool, index),
        dest,
        names,
        curated=with_labels(curated, index) if curated else None,
        test=with_labels(test, index) if test else None,
        source=str(source),
        provenance=provenance,
        evals=tasks,
        num_rows=pool_scan.rows,
        **options,
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
