"""WebDataset tars as img2dataset writes them (jpg|png|webp + txt + json [+ cls]), read without unpacking."""

from __future__ import annotations

import json
import tarfile
import zlib
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa

from winnow.errors import DataError
from winnow.importers.source import (
    BATCH,
    INT64,
    TAR_BLOCK,
    Source,
    files_of,
)


def read_webdataset(source: str | Path) -> Source:
    """Examples of every *.tar under `source` (or one tar): members grouped by key, keys in sorted order, as
    img2dataset writes them. The .txt (else the json's "caption") is the caption, the .cls (else the json's
    "label") the label; the json's other fields are metadata. A key with no image (img2dataset's failed
    downloads) is counted, not kept. Only the tar's headers and its small members are held, never its images."""
    tars = files_of(source, "*.tar", "tar shards")
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
                    if len(examples) == BATCH.rows or size >= BATCH.bytes:
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
