"""Decoding in worker processes: a shard's images decoded by a pool of `data.workers` spawned processes, each writing
its slice of rows straight into one block of shared memory (no pixels pass through a pipe).

Why processes: decoding and resizing an image holds the GIL for most of its time, so a thread (datasets/ahead.py)
overlaps decoding with a forward but never decodes on two cores. Why spawn: a process that runs torch or Prefect has
threads, and a forked child can inherit a lock some thread held (seen hanging the suite); a spawned worker starts
clean and imports only numpy, PIL and the decoder.

What it keeps: the decoder is the same function (datasets/images.py) on the same bytes, and each row lands at its own
index, so the pixels, the rows kept and the rows skipped (with their reasons) are exactly those of decoding in line,
whatever the number of workers: runs reproduce and resume as before. A worker that dies (killed, out of memory)
raises WorkerDied naming the shard; nothing of that shard was handed on, and the pool starts afresh on the next call.

The pool is one per process, started on first use and sized by `configure` (the stage's data.workers); 0 workers
decodes in line, as before. A pool idle between shards holds its processes (started once, not per shard).
"""

from __future__ import annotations

import atexit
import logging
import multiprocessing
import os
import threading
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import shared_memory
from typing import Callable

import numpy as np

from winnow.datasets.images import decode_row
from winnow.errors import WinnowError

log = logging.getLogger("winnow")

MIN_ROWS_PER_TASK = 32  # below this a task's hand-off costs more than its decoding


class WorkerDied(WinnowError):
    """A decode worker process ended while decoding a shard (killed, out of memory, a crash in a native decoder)."""


def decode_slice(blobs: list, size: int, fit: str, memory: str, first: int, total: int) -> list[tuple[int, str]]:
    """Decode `blobs` (rows first.. of a shard of `total` rows) into the shared block `memory`, laid out (total, 3,
    size, size) uint8; returns the (row, reason) of each row it could not decode (its slot is left as it was)."""
    block = shared_memory.SharedMemory(name=memory)
    pixels = np.ndarray((total, 3, size, size), dtype=np.uint8, buffer=block.buf)
    try:
        failed = []
        for offset, blob in enumerate(blobs):
            image, reason = decode_row(blob, size, fit)
            if image is None:
                failed.append((first + offset, reason))
            else:
                pixels[first + offset] = image.transpose(2, 0, 1)
        return failed
    finally:  # the view holds the buffer: released before closing, whatever was raised
        del pixels
        block.close()


class DecodePool:
    """`workers` spawned processes decoding slices of a shard's rows into shared memory (see the module's docstring).
    `task`: what a worker runs on a slice (decode_slice; a test hands one that dies)."""

    def __init__(self, workers: int, task: Callable = decode_slice):
        if workers < 1:
            raise ValueError(f"a decode pool needs at least one worker, got {workers}")
        self.workers, self.task = workers, task
        self._executor: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()  # a stream's shard ahead and the caller may decode at once

    def _pool(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._executor is None:
                self._executor = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"))
            return self._executor

    def decode(self, blobs: list, size: int, fit: str, where: str) -> tuple[np.ndarray, np.ndarray, list[tuple[int, str]]]:
        """(rows kept, uint8 (kept, 3, size, size), [(row, reason)]) of a shard's image bytes, as decoding in line
        gives them. `where` names the shard in an error."""
        step = self.slice_rows(len(blobs))
        return self.decode_slices(((blobs[i : i + step]) for i in range(0, len(blobs), step)), len(blobs), size, fit, where)

    def decode_file(self, path, rows: int, size: int, fit: str) -> tuple[np.ndarray, np.ndarray, list[tuple[int, str]]]:
        """decode() of a shard file's `rows` images, read from it a slice at a time: each slice goes to a worker as
        soon as it is read, so reading the file overlaps decoding it (and the whole column is never held at once)."""
        import pyarrow.parquet as pq

        batches = pq.ParquetFile(path).iter_batches(batch_size=self.slice_rows(rows), columns=["image"])
        return self.decode_slices((batch.column(0).to_pylist() for batch in batches), rows, size, fit, str(path))

    def slice_rows(self, total: int) -> int:
        """Rows a task decodes: a few slices a worker, for an even finish, and never so few that handing a slice over
        costs more than decoding it."""
        return max(MIN_ROWS_PER_TASK, -(-total // (self.workers * 4)))

    def decode_slices(self, slices, total: int, size: int, fit: str, where: str):
        """decode() of `total` rows given as consecutive slices of their bytes (an iterable: each is handed on as it
        comes)."""
        if total == 0:
            return np.zeros(0, np.int64), np.zeros((0, 3, size, size), np.uint8), []
        need = total * 3 * size * size
        room = _shared_room()
        if room is not None and room < need:  # the pages are taken as the workers write: a full /dev/shm kills them
            raise WorkerDied(
                f"{where}: {need / 1e6:.0f} MB of shared memory needed for its {total} decoded rows, {room / 1e6:.0f} MB "
                "free in /dev/shm; enlarge it (docker run --shm-size), use smaller shards, or decode in line (data.workers: 0)"
            )
        try:
            block = shared_memory.SharedMemory(create=True, size=need)
        except OSError as e:
            raise WorkerDied(
                f"{where}: no shared memory for {total} decoded rows ({need / 1e6:.0f} MB): {e}; "
                "enlarge /dev/shm, or decode in line (data.workers: 0)"
            ) from e
        try:
            pool, futures, first = self._pool(), [], 0
            for blobs in slices:
                futures.append(pool.submit(self.task, blobs, size, fit, block.name, first, total))
                first += len(blobs)
            if first != total:
                raise ValueError(f"{where}: {first} images read where {total} rows were expected")
            failed = sorted(row for future in futures for row in future.result())
            pixels = np.ndarray((total, 3, size, size), dtype=np.uint8, buffer=block.buf)
            bad = {row for row, _ in failed}
            keep = np.asarray([row for row in range(total) if row not in bad], dtype=np.int64)
            out = pixels[keep] if bad else pixels.copy()  # out of the shared block, which goes with this call
            del pixels
            return keep, out, failed
        except BrokenProcessPool as e:
            self.close()  # the next call starts a fresh pool
            raise WorkerDied(
                f"{where}: a decode worker died while decoding this shard (killed, out of memory, or /dev/shm filled by "
                "the shards decoding at once); nothing of this shard was kept. Rerun to resume from the last checkpoint; "
                "fewer data.workers, a smaller image_size or a larger /dev/shm needs less memory"
            ) from e
        finally:
            block.close()
            block.unlink()

    def close(self) -> None:
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)


def _shared_room() -> int | None:
    """Bytes free in /dev/shm, where shared memory lives on Linux (None where there is no such folder)."""
    try:
        stat = os.statvfs("/dev/shm")
    except OSError:
        return None
    return stat.f_bavail * stat.f_frsize


_pool: DecodePool | None = None
_said_daemon = False
_pools: dict[int, DecodePool] = {}  # every count this process has used: switching back starts no processes


def configure(workers: int) -> None:
    """This process's decode pool: `workers` processes (0: decode in line). A changed count replaces the pool."""
    global _pool, _said_daemon
    if workers > 0 and multiprocessing.current_process().daemon:  # a Dask worker, say: it may start no processes
        if not _said_daemon:
            log.info("decoding in line: this process is a daemon (a Dask worker?), which may not start decode workers")
            _said_daemon = True
        workers = 0
    if workers > 0 and workers not in _pools:
        _pools[workers] = DecodePool(workers)
    _pool = _pools.get(workers)


def pool() -> DecodePool | None:
    return _pool


def usable_cores() -> int:
    """The cores this process may run on (its affinity where the OS has one: a container's share, taskset)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def default_workers(device: str, parallel: int = 1) -> int:
    """data.workers when it is not set: the cores left after the compute threads of `parallel` processes like this one
    (and of each DDP rank on this node).
    On an accelerator the model runs there, and each process keeps one host core for its loop; on the CPU the
    model's threads take what torch gives them (all the cores, unless shared: method/devices.py's cpu_share)."""
    cores = usable_cores()
    parallel *= int(os.environ.get("LOCAL_WORLD_SIZE", "1"))  # torchrun's ranks on this node share its cores too
    if device != "cpu":
        return max(0, cores // parallel - 1)
    import torch

    return max(0, (cores - torch.get_num_threads() * parallel) // parallel)


def close() -> None:
    """End every decode pool of this process (at exit, or to give the cores back)."""
    global _pool
    _pool = None
    while _pools:
        _pools.popitem()[1].close()


atexit.register(close)
