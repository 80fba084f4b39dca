"""Content hashes of files and folders: what manifests list, what stage keys and the decoded cache are keyed on.
A file is hashed once per process for each (size, mtime). Also a shard's row count from its footer, which the
stream and the decoded cache both size splits by (nothing is decoded)."""

from __future__ import annotations

import hashlib
from pathlib import Path


def blocks(path: Path):
    with open(path, "rb") as f:
        yield from iter(lambda: f.read(1 << 20), b"")


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    for block in blocks(path):
        h.update(block)
    return h.hexdigest()


_file_digests: dict[tuple, str] = {}  # (path, size, mtime_ns) -> sha256, so a pipeline hashes each file once


def footer_rows(path: str | Path) -> int:
    """A Parquet shard's rows from its footer alone; pyarrow's error names a file that is not Parquet."""
    import pyarrow.parquet as pq

    return pq.ParquetFile(path).metadata.num_rows


def digest_file(path: Path) -> str:
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _file_digests:
        _file_digests[key] = file_sha256(path)
    return _file_digests[key]


def digest_path(path: str | Path) -> str:
    """Content hash of a file or of every file under a folder; 'missing' when absent."""
    path = Path(path)
    if path.is_file():
        return digest_file(path)
    if not path.is_dir():
        return "missing"
    h = hashlib.sha256()
    for child in sorted(
        p for p in path.rglob("*") if p.is_file() and not p.name.endswith(".tmp") and "__pycache__" not in p.parts
    ):
        h.update(str(child.relative_to(path)).encode())
        h.update(digest_file(child).encode())
    return h.hexdigest()
