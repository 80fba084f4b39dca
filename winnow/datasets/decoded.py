"""Decode once per machine: each shard's images, decoded at one size, kept on disk beside nothing else (and the
tokens of many captions at once: winnow/datasets/tokens.py).

Every stage that reads a split decodes its PNG/JPEG bytes into uint8 (N, 3, H, W); on a pool of tens of
thousands of images that is most of a stage's start-up, paid again by every process (each `dvc repro` stage,
each Dask worker, each rank). This cache keeps the decoded rows of a shard in one .npy file named by what
determines them: the shard's bytes (SHA-256), the image size and the decoder (its code and PIL's version). A
rewritten shard, another size or a changed decoder is another key, so an entry is never stale. Entries are
written whole (a temporary file, then a rename), so an interrupted decode keeps the shards it finished and
the next run resumes from them; the oldest entries go when the cache outgrows its bound.

Where: $WINNOW_DECODED_CACHE (a folder; `off` turns the cache off), default ~/.cache/winnow/decoded (under
$XDG_CACHE_HOME when set); bound: $WINNOW_DECODED_CACHE_GB, default 20. Machine settings, not experiment
ones: they change how fast a run starts, never what it computes.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import inspect
import logging
import os
import threading
import time
import zipfile
import zlib
from pathlib import Path
from typing import Callable

import numpy as np
import PIL

from winnow.datasets import images
from winnow.datasets.digests import digest_path, footer_rows
from winnow.errors import ConfigError

log = logging.getLogger("winnow")

DIR_VARIABLE, LIMIT_VARIABLE = "WINNOW_DECODED_CACHE", "WINNOW_DECODED_CACHE_GB"
FORMAT = 2  # bump when an entry's layout changes (2: a CRC-32 beside each mapped member)
CRC = "crc32_"  # the member holding another member's CRC-32: crc32_images for images


def folder() -> Path | None:
    """The cache folder, or None when it is off."""
    value = os.environ.get(DIR_VARIABLE)
    if value is not None and value.strip().lower() in ("off", "0", "none", ""):
        return None
    if value:
        return Path(value).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "winnow" / "decoded"


def limit_bytes() -> int:
    value = os.environ.get(LIMIT_VARIABLE, "20")
    try:
        gb = float(value)
    except ValueError:
        gb = -1.0
    if not gb > 0:
        raise ConfigError(f"{LIMIT_VARIABLE}={value!r}: the decoded cache's bound must be a number of GB above 0")
    return int(gb * 1e9)


@functools.cache
def _decoder() -> str:
    """What decoding depends on besides the bytes and the size: the decoder's code and PIL's version (read once per
    process)."""
    code = "".join(
        inspect.getsource(f)
        for f in (images.decode_row, images.decode_image, images._to_rgb, images._fitted, images._shorter_side_at)
    )
    return hashlib.sha256(f"{FORMAT}|{PIL.__version__}|{code}".encode()).hexdigest()


def key(path: Path, size: int, fit: str = "squash") -> str | None:
    """The entry's name for this shard at this size and fit, or None when the cache is off, or cannot hold the
    shard's split (fits_split)."""
    if folder() is None or not fits_split(Path(path).parent, size):
        return None
    named = f"{digest_path(path)}|{size}" + (f"|{fit}" if fit != "squash" else "")  # squash: the keys made before fit
    return hashlib.sha256(f"{named}|{_decoder()}".encode()).hexdigest()


def _rows(shard: Path) -> int:
    """A shard's rows from its footer; 0 for a file that is not Parquet (its reader names it, with why)."""
    import pyarrow as pa

    try:
        return footer_rows(shard)
    except (pa.ArrowInvalid, OSError):
        return 0


_said: dict[tuple[str, int], bool] = {}  # (split folder, size) -> whether its decoded rows fit the bound


def fits_split(split: Path, size: int) -> bool:
    """Whether a split's decoded rows (from its shards' footers: nothing is decoded) fit within the cache's bound.
    One that does not is decoded each time it is read, never cached: caching it would evict its own first shards
    before they are read again, decoding every epoch and writing besides (a thrashing cache). Said once a process."""
    at = (str(split.resolve()), size)
    if at not in _said:
        rows = sum(_rows(p) for p in split.glob("part-*.parquet"))
        need, bound = rows * 3 * size * size, limit_bytes()
        _said[at] = need <= bound
        if need > bound:
            log.warning(
                "decoded cache: %s decodes to %.1f GB at %d px, more than the cache's bound (%.1f GB, %s): it is "
                "decoded each time it is read, not cached",
                split,
                need / 1e9,
                size,
                bound / 1e9,
                LIMIT_VARIABLE,
            )
    return _said[at]


def _entry(name: str) -> Path:
    return folder() / name[:2] / f"{name}.npz"


def has(name: str) -> bool:
    """Whether the cache holds an entry of this name (a later load may still find it torn: a miss then)."""
    return _entry(name).exists()


def load(name: str, rows: int, size: int):
    """(kept rows, images uint8 (n, 3, size, size), [(row, reason)] of the undecodable) from the cache, or None on a
    miss. An entry that cannot be read or does not fit the shard is removed and counts as a miss."""

    def fits(f: dict) -> None:
        kept, images, bad, reasons = f["kept"], f["images"], f["bad"], f["reasons"]
        if images.shape != (len(kept), 3, size, size) or len(kept) + len(bad) != rows or len(bad) != len(reasons):
            raise ValueError(f"holds {images.shape} for {rows} rows at {size} px")

    f = read_entry(name, fits)
    return None if f is None else (f["kept"], f["images"], list(zip(f["bad"].tolist(), f["reasons"].tolist())))


def read_entry(name: str, check: Callable[[dict], None]) -> dict[str, np.ndarray] | None:
    """The arrays of an entry, or None on a miss. An entry that cannot be read, or that `check` refuses (it raises),
    is removed and counts as a miss, never an error: what it held is computed again."""
    path = _entry(name)
    if not path.exists():
        return None
    try:
        arrays = _arrays(path)
        check(arrays)
    except Exception as e:
        log.warning("decoded cache: %s is unreadable (%s); computing it again", path, e)
        path.unlink(missing_ok=True)
        return None
    _touch(path)
    return arrays


MAPPED_FROM = 1 << 20  # bytes: a member this large is mapped from the file, not read


def _arrays(path: Path) -> dict[str, np.ndarray]:
    """An entry's arrays (np.savez's layout: one uncompressed .npy per array in a zip). The small ones are read; a
    large one (a shard's images) is mapped from the file, copy-on-write, where np.load would copy it into memory
    and checksum it: the pages come from the OS's cache as the forward reads them (docs/benchmarks.md, "Scoring
    against the bare forward"). A mapped member is checked against the CRC-32 written beside it (crc32_<name>), so a
    damaged disk block is a miss, never other pixels (docs/operating.md: its cost). A file cut short loses the zip's
    directory and is a miss."""
    arrays, mapped = {}, []
    with zipfile.ZipFile(path) as z, open(path, "rb") as f:
        for info in z.infolist():
            name = info.filename.removesuffix(".npy")
            arrays[name] = _mapped(path, f, info) if info.file_size >= MAPPED_FROM else None
            if arrays[name] is None:
                with z.open(info) as member:  # zipfile checks a read member against its CRC
                    arrays[name] = np.lib.format.read_array(member, allow_pickle=False)
            else:
                mapped.append(name)
    for name in mapped:  # what zipfile does not check: the mapped bytes, against the CRC-32 written beside them
        if CRC + name not in arrays or _crc32(arrays[name]) != int(arrays[CRC + name]):
            raise ValueError(f"{name}: its bytes do not match the checksum written with them")
    return {name: a for name, a in arrays.items() if not name.startswith(CRC)}


def _crc32(array: np.ndarray) -> int:
    """CRC-32 of an array's bytes, read in 64 MiB pieces (about 3 GB/s on one core)."""
    flat, crc = np.ascontiguousarray(array).reshape(-1).view(np.uint8), 0
    for start in range(0, len(flat), 1 << 26):
        crc = zlib.crc32(flat[start : start + (1 << 26)], crc)
    return crc


def _mapped(path: Path, f, info: zipfile.ZipInfo) -> np.ndarray | None:
    """A member mapped from the file, copy-on-write; None when it cannot be mapped as it is stored (compressed, or
    its data not aligned for its type: the zip's headers are not padded, so only bytes always are)."""
    offset = _stored_at(f, info)
    if offset is None:
        return None
    f.seek(offset)
    version = np.lib.format.read_magic(f)
    header = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
    if version not in header:
        return None
    shape, fortran, dtype = header[version](f)
    start = f.tell()
    if dtype.hasobject or start % dtype.alignment:
        return None
    if start + int(np.prod(shape)) * dtype.itemsize > offset + info.file_size:
        raise ValueError(f"{info.filename} is shorter than its header says")
    return np.memmap(path, dtype=dtype, mode="c", offset=start, shape=shape, order="F" if fortran else "C")


def _stored_at(f, info: zipfile.ZipInfo) -> int | None:
    """Where an uncompressed zip member's bytes start in the file (after its local header), or None when it is
    compressed (a file np.savez did not write: read as usual)."""
    if info.compress_type != zipfile.ZIP_STORED:
        return None
    f.seek(info.header_offset)
    local = f.read(30)
    if len(local) < 30 or local[:4] != b"PK\x03\x04":
        raise ValueError(f"{info.filename}: no local header where the zip's directory says")
    name_length, extra_length = int.from_bytes(local[26:28], "little"), int.from_bytes(local[28:30], "little")
    return info.header_offset + 30 + name_length + extra_length


def _touch(path: Path) -> None:
    """Mark an entry recently used (evicted last); another process may have evicted it meanwhile: no matter."""
    try:
        os.utime(path)
    except FileNotFoundError:
        pass


def store(name: str, kept: np.ndarray, images: np.ndarray, skipped: list[tuple[int, str]]) -> None:
    """Write one shard's entry whole, then keep the cache within its bound (oldest entries first)."""
    write_entry(
        name,
        kept=np.asarray(kept, np.int64),
        images=images,
        bad=np.asarray([r for r, _ in skipped], np.int64),
        reasons=np.asarray([reason for _, reason in skipped], dtype=str),
    )


def write_entry(name: str, **arrays: np.ndarray) -> None:
    """Write an entry whole (a temporary file, then a rename), then keep the cache within its bound."""
    path = _entry(name)
    tmp = path.with_name(f"{path.stem}.{os.getpid()}-{threading.get_ident()}.tmp.npz")  # a stream decodes ahead in a thread
    sums = {CRC + k: np.uint32(_crc32(a)) for k, a in arrays.items() if np.asarray(a).nbytes >= MAPPED_FROM}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)  # a read-only cache folder: a warning, as a full disk is
        with open(tmp, "wb") as f:
            np.savez(f, **arrays, **sums)
            f.flush()
            os.fsync(f.fileno())  # on disk before the rename: a crash leaves no entry, not a torn one
        os.replace(tmp, path)
    except OSError as e:  # a full or read-only disk slows the next run down; it does not stop this one
        log.warning("decoded cache: could not write %s (%s); it will be computed again next time", path, e)
        with contextlib.suppress(OSError):  # nothing to remove where the folder could not be made
            tmp.unlink(missing_ok=True)
        return
    _evict(keep=path)


def _evict(keep: Path) -> None:
    limit = limit_bytes()
    entries = []
    for p in folder().glob("*/*.npz"):
        if ".tmp." in p.name:  # an entry being written, or left by a process killed while writing it (an hour on)
            try:
                if time.time() - p.stat().st_mtime > 3600:
                    p.unlink(missing_ok=True)
            except FileNotFoundError:
                pass
            continue
        try:
            stat = p.stat()
        except FileNotFoundError:  # another process evicted it
            continue
        entries.append((stat.st_mtime, stat.st_size, p))
    total = sum(size for _, size, _ in entries)
    for _, size, p in sorted(entries):
        if total <= limit:
            break
        if p != keep:
            p.unlink(missing_ok=True)
            total -= size
