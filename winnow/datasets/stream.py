"""Where the learner's super-batches come from: a split held in memory, or a pool streamed shard by shard.

Both samplers give `draw(n)` -> Draw (example ids, uint8 images, targets, pathology), a `state()` a
checkpoint stores, so a killed run resumes with the very same batches, and `close()` at the end of a run.
datasets/mixture.py draws from several of them at fixed shares.

- InMemory: the split decoded whole; each step draws n rows uniformly without replacement.
  Used when the pool fits in the shuffle buffer (the built-in default does), and for the
  curated set.
- ShardStream: shards are decoded one at a time into a shuffle buffer of fixed size;
  each step draws n buffered examples uniformly and refills their slots with the next
  rows of the stream, while the shards after the one being read decode in threads of their own
  (in the decode workers where there are some): one shard, or as many as one step's draw spans
  when a super-batch is larger than a shard. A step waits for data only if decoding is slower
  than training. Memory is the buffer plus the shard being read and those ahead, whatever the
  pool's size.

Under DDP (world > 1) each rank draws its own share: InMemory ranks share one RNG and
take their slice of the same global super-batch; ShardStream ranks read disjoint shards
(every world-th shard of each epoch's seeded order) into their own buffers.
"""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from winnow.datasets.ahead import Ahead
from winnow.datasets.contract import Split, shard_files, value_counts
from winnow.datasets.digests import footer_rows
from winnow.errors import ConfigError, DataError


@dataclass
class Draw:
    ids: np.ndarray  # int64 (n,) example ids: what reference losses are indexed by
    images: torch.Tensor  # uint8 (n, 3, H, W)
    targets: torch.Tensor  # labels (n,) or caption tokens (n, context)
    pathology: np.ndarray | None  # analysis only; selection never reads it
    weights: torch.Tensor | None = None  # per-example loss weights (soft selection); None: every row counts the same
    labels: np.ndarray | None = None  # int64 (n,) the rows' labels as given (-1: none): the kept batches' class mix


class InMemory:
    """A split held whole: each draw is n rows uniformly without replacement (with replacement across draws)."""

    def __init__(
        self,
        split: Split,
        targets: torch.Tensor,
        seed: int,
        pathology: np.ndarray | None = None,
        rank: int = 0,
        world: int = 1,
        weights: np.ndarray | None = None,
    ):
        self.split, self.targets, self.pathology = split, targets, pathology
        self.rng = np.random.default_rng(seed)  # the same on every rank: they draw one global super-batch
        self.rank, self.world = rank, world
        self.size = len(split)
        self.kinds = np.unique(pathology).tolist() if pathology is not None else []
        self.p = None if weights is None else weights / weights.sum()  # a row's chance of a draw (None: uniform)

    def draw(self, n: int) -> Draw:
        """This rank's share of a global super-batch of n."""
        return self.take(self.rng.choice(self.size, size=n, replace=False, p=self.p))

    def take(self, rows: np.ndarray) -> Draw:
        """This rank's share of the global draw of these rows."""
        n = len(rows)
        rows = rows[self.rank * n // self.world : (self.rank + 1) * n // self.world]
        index = torch.from_numpy(rows)
        pathology = self.pathology[rows] if self.pathology is not None else None
        return Draw(
            self.split.ids[rows], self.split.images[index], self.targets[index], pathology, labels=self.split.labels[rows]
        )

    def peek(self, n: int) -> Draw:
        return Draw(self.split.ids[:n], self.split.images[:n], self.targets[:n], None)

    def close(self) -> None:
        """Nothing runs beside it (the contract every sampler keeps: close() at the end of a run)."""

    def state(self) -> dict:
        return {"numpy_rng": self.rng.bit_generator.state}

    def restore(self, state: dict) -> None:
        self.rng.bit_generator.state = state["numpy_rng"]


@dataclass
class _OpenShard:
    """The shard the stream is reading: its decoded rows, in a shuffled order, up to `pos`."""

    index: int  # into ShardStream.files
    split: Split
    targets: torch.Tensor
    order: np.ndarray
    pos: int = 0


def shard_rows(folder: str | Path) -> list[int]:
    """Rows per shard, from the Parquet footers alone (nothing is decoded)."""
    return [footer_rows(path) for path in shard_files(folder)]


class ShardStream:
    """A pool streamed through a shuffle buffer of `buffer_size` examples.

    `decode(path)` turns one shard into (Split of its usable rows, their targets); it is the
    only thing that touches image bytes, and it runs in a thread of its own for the shard ahead, so it
    must depend on the file alone and be safe to run beside the training loop (close() waits for it).
    Epoch e visits the shards in the order permutation(seed, e), rank r taking every world-th; each
    shard's rows are shuffled.
    Like any shuffle buffer, an example can sit in it twice across an epoch boundary.
    """

    def __init__(
        self,
        folder: str | Path,
        decode: Callable[[Path], tuple[Split, torch.Tensor]],
        buffer_size: int,
        seed: int,
        rank: int = 0,
        world: int = 1,
        prefetch: bool = True,
    ):
        self.files = shard_files(folder)
        self.prefetch = prefetch  # decode the shards ahead in background threads while this one is read
        self.ahead: list[Ahead] = []  # the shards decoding ahead, in the order the stream will open them
        if len(self.files) < world:
            raise DataError(
                f"{folder}: {len(self.files)} shards for {world} ranks; each rank streams its own shards, so a pool needs at "
                "least one per rank"
            )
        self.decode, self.seed, self.rank, self.world = decode, seed, rank, world
        rows = shard_rows(folder)
        self.rows = rows  # per shard, from the footers
        self.wanted = 1  # rows a step draws from the stream (the last draw's): the shards ahead must hold as many
        share = sum(sorted(rows)[: max(1, len(rows) // world)])  # the fewest rows a rank can get in an epoch
        self.capacity = min(buffer_size, share)
        self.size = sum(rows)
        self.kinds = sorted(value_counts(folder, "pathology"))
        self.rng = np.random.default_rng([seed, rank])
        self.epoch, self.cursor = 0, 0  # position in this rank's shard list of the epoch
        self.current: _OpenShard | None = None
        self.buffer: dict | None = None  # ids, images, targets, pathology, refs (file index, row) per slot
        self.skipped: dict[str, list[dict]] = {}  # shard name -> rows it could not use, as decoded

    def _files_of_epoch(self, epoch: int) -> np.ndarray:
        order = np.random.default_rng([self.seed, epoch]).permutation(len(self.files))
        return order[self.rank :: self.world]

    def _load(self, index: int) -> tuple[Split, torch.Tensor]:
        ahead = self.ahead.pop(0) if self.ahead and self.ahead[0].index == index else None
        if ahead is None:  # a restore or a resume reads elsewhere: what was decoding ahead is not needed
            self.close()
        split, targets = ahead.result() if ahead is not None else self.decode(self.files[index])
        self.skipped.setdefault(self.files[index].name, split.skipped)
        return split, targets

    def _upcoming(self):
        """The shards the stream opens after the one it has just opened, in order, across epochs."""
        epoch, cursor = self.epoch, self.cursor
        while True:
            files = self._files_of_epoch(epoch)
            if cursor >= len(files):
                epoch, cursor = epoch + 1, 0
                continue
            yield int(files[cursor])
            cursor += 1

    def _decode_ahead(self, opened: int) -> None:
        """Start decoding the shards after `opened` until those decoding ahead hold a step's draw (super-batch aware:
        a super-batch larger than a shard needs several shards ahead, which decode at once: in the decode workers'
        processes where there are some, datasets/workers.py). One shard ahead at least; a shard the stream is
        reading is never decoded ahead."""
        wanted, held = [], 0  # the shards to have ahead, in the order the stream opens them
        for index in itertools.islice(self._upcoming(), len(self.files)):
            if index == opened or index in wanted or (wanted and held >= self.wanted):
                break
            wanted.append(index)
            held += self.rows[index]
        if [a.index for a in self.ahead] != wanted[: len(self.ahead)]:  # out of step (never in order): start again
            self.close()
        for index in wanted[len(self.ahead) :]:
            self.ahead.append(Ahead(index, self.decode, self.files[index]))

    def _incoming(self, n: int) -> dict:
        """The next n rows of the stream (across shards and epochs)."""
        parts = []
        while n > 0:
            if self.current is None or self.current.pos >= len(self.current.order):
                files = self._files_of_epoch(self.epoch)
                if self.cursor >= len(files):
                    self.epoch, self.cursor = self.epoch + 1, 0
                    continue
                index = int(files[self.cursor])
                self.cursor += 1
                split, targets = self._load(index)
                self.current = _OpenShard(index, split, targets, self.rng.permutation(len(split)))
                if self.prefetch:  # the next shards decode meanwhile
                    self._decode_ahead(index)
            shard = self.current
            rows = shard.order[shard.pos : shard.pos + n]
            shard.pos += len(rows)
            n -= len(rows)
            parts.append(_rows(shard.split, shard.targets, rows, shard.index))
        return _concat(parts)

    def _fill(self) -> None:
        self.buffer = self._incoming(self.capacity)

    def draw(self, n: int) -> Draw:
        """This rank's share (n / world examples) of a global super-batch of n."""
        n //= self.world
        self.wanted = n  # before the first fill too: its shards ahead already hold a step's draw
        if self.buffer is None:
            self._fill()
        if n > self.capacity:
            raise ConfigError(
                f"a super-batch of {n} per rank is larger than the shuffle buffer ({self.capacity}); raise train.shuffle_buffer"
            )
        slots = torch.from_numpy(self.rng.choice(self.capacity, size=n, replace=False))
        out = Draw(
            self.buffer["ids"][slots.numpy()],
            self.buffer["images"][slots],
            self.buffer["targets"][slots],
            self.buffer["pathology"][slots.numpy()] if self.buffer["pathology"] is not None else None,
            labels=self.buffer["labels"][slots.numpy()],
        )
        fresh = self._incoming(n)
        for key, value in self.buffer.items():
            if value is not None:
                value[slots if torch.is_tensor(value) else slots.numpy()] = fresh[key]
        return out

    def close(self) -> None:
        """Wait for the shard decoding ahead, if any (the end of a run: no thread outlives the stream's use, so none
        competes with what runs next, or dies half-way through writing the decoded cache)."""
        pending, self.ahead = self.ahead, []
        for ahead in pending:
            ahead.thread.join()

    def peek(self, n: int) -> Draw:
        """The first n usable rows of the first shard (what the FLOP counter runs on)."""
        split, targets = self.decode(self.files[0])
        return Draw(split.ids[:n], split.images[:n], targets[:n], None)

    def state(self) -> dict:
        """Positions and which (shard, row) sits in each buffer slot: no pixels, a few bytes per slot."""
        current = (
            None if self.current is None else {"file": self.current.index, "order": self.current.order, "pos": self.current.pos}
        )
        return {
            "rng": self.rng.bit_generator.state,
            "epoch": self.epoch,
            "cursor": self.cursor,
            "current": current,
            "refs": None if self.buffer is None else self.buffer["refs"].copy(),
        }

    def restore(self, state: dict) -> None:
        """Rebuild the buffer by decoding the shards its slots came from, one at a time."""
        self.rng.bit_generator.state = state["rng"]
        self.epoch, self.cursor = state["epoch"], state["cursor"]
        self.current = None
        if state["current"] is not None:
            split, targets = self._load(state["current"]["file"])
            self.current = _OpenShard(
                state["current"]["file"], split, targets, state["current"]["order"], state["current"]["pos"]
            )
        refs = state["refs"]
        if refs is None:
            self.buffer = None
            return
        buffer = None
        for index in np.unique(refs[:, 0]):
            slots = np.flatnonzero(refs[:, 0] == index)
            split, targets = self._load(int(index))
            part = _rows(split, targets, refs[slots, 1], int(index))
            if buffer is None:
                buffer = {k: (None if v is None else _empty_like(v, len(refs))) for k, v in part.items()}
            for key, value in part.items():
                if value is not None:
                    buffer[key][torch.from_numpy(slots) if torch.is_tensor(value) else slots] = value
        self.buffer = buffer


def admitted_by_label(decode: Callable[[Path], tuple[Split, torch.Tensor]], admit: np.ndarray, path: Path):
    """decode(path) less the rows a seeded draw turns away: each row kept with probability admit[its label] (1 for the
    rarest label), so the stream reads a class-balanced subsample of a pool too large to weigh in memory (balanced).
    The draw is seeded by the shard's name, so it depends on the file alone: the same rows each epoch."""
    split, targets = decode(path)
    rng = np.random.default_rng(int.from_bytes(hashlib.sha256(path.name.encode()).digest()[:8], "little"))
    return split.keep(targets, np.flatnonzero(rng.random(len(split)) < admit[split.labels]))


def _rows(split: Split, targets: torch.Tensor, rows: np.ndarray, file_index: int) -> dict:
    index = torch.from_numpy(np.asarray(rows, dtype=np.int64))
    pathology = split.columns.get("pathology")
    return {
        "ids": split.ids[rows],
        "images": split.images[index],
        "targets": targets[index],
        "pathology": pathology[rows] if pathology is not None else None,
        "labels": split.labels[rows],
        "refs": np.stack([np.full(len(rows), file_index, dtype=np.int64), np.asarray(rows, dtype=np.int64)], axis=1),
    }


def _concat(parts: list[dict]) -> dict:
    out = {}
    for key, first in parts[0].items():
        if first is None:
            out[key] = None
        elif torch.is_tensor(first):
            out[key] = torch.cat([p[key] for p in parts])
        else:
            out[key] = np.concatenate([p[key] for p in parts])
    return out


def _empty_like(value, n: int):
    if torch.is_tensor(value):
        return torch.empty((n, *value.shape[1:]), dtype=value.dtype)
    return np.empty((n, *value.shape[1:]), dtype=value.dtype)
