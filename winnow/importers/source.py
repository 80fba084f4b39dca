"""A source as the importers read it: a stream of batches of examples and their metadata, read twice
(once without images, to scan it, then to write it), and the contract's columns every importer writes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from winnow.errors import DataError

CURATED_FRACTION, TEST_FRACTION, SHARD_SIZE = 0.1, 0.05, 5000  # the defaults of `winnow data import`
VAL_FRACTION = 0.1  # of the curated rows, held out as eval/val (the validation split)


@dataclass
class BatchLimits:
    """How much a reader holds at a time: at most `rows` examples, of at most `bytes` image bytes (one object,
    read at each batch, so a test can make every batch boundary fall somewhere new)."""

    rows: int = 1000
    bytes: int = 32 * 2**20


BATCH = BatchLimits()


IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")


SCHEMA = pa.schema(
    [("id", pa.int64()), ("image", pa.binary()), ("label", pa.int32()), ("caption", pa.string()), ("source_key", pa.string())]
)


CONTRACT_COLUMNS = tuple(SCHEMA.names)


ROW_GROUP_BYTES = 32 * 2**20  # a shard is written in row groups of about this many image bytes


TAR_BLOCK = 512


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
            for start in range(0, len(examples), BATCH.rows):
                yield (
                    list(examples[start : start + BATCH.rows]),
                    metadata.slice(start, BATCH.rows) if metadata is not None else None,
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
            if len(chunk) == BATCH.rows or size >= BATCH.bytes:
                yield chunk, None
                chunk, size = [], 0
        if chunk:
            yield chunk, None

    return once


def files_of(source: str | Path, pattern: str, what: str) -> list[Path]:
    source = Path(source)
    if not source.exists():
        raise DataError(f"{source}: no such file or folder")
    files = sorted(source.glob(pattern)) if source.is_dir() else [source]
    if not files:
        raise DataError(f"{source}: no {what} ({pattern}) in this folder")
    return files
