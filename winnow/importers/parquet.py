"""A Parquet table (a file or a folder of them) with a column of encoded image bytes; every other column is metadata."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from winnow.errors import DataError
from winnow.importers.source import (
    BATCH,
    Source,
    files_of,
)


def read_parquet_table(
    source: str | Path, image_column: str = "image", label_column: str | None = None, caption_column: str | None = None
) -> Source:
    """A Parquet file or folder of them with encoded image bytes. Label and caption columns are optional: by default
    'label' and 'caption' where every file has them; a column named explicitly must be in every file. Every other
    column is metadata, with its Arrow type (null where a file lacks it). Read a batch at a time."""
    schemas = [(path, _read_schema(path)) for path in files_of(source, "*.parquet", "Parquet files")]
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
    """Rows per batch so that a batch holds about BATCH.bytes, from the file's own row-group sizes."""
    meta = file.metadata
    if not meta.num_rows or not meta.num_row_groups:
        return BATCH.rows
    per_row = sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups)) / meta.num_rows
    return int(max(1, min(BATCH.rows, BATCH.bytes // max(per_row, 1))))


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
