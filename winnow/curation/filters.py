"""Model-free filters: what a user does to a pool before training any model (the `filtered` baseline arm).

- undecodable rows: already dropped when the pool is decoded (they are in Split.skipped);
- flat images: pixel standard deviation below FLAT_STD (blank frames, solid fills);
- exact duplicates: byte-identical images, the first kept;
- near-duplicates: the same perceptual hash (the grey image shrunk to HASH_SIZE x HASH_SIZE, each cell above
  or below the image's mean), the first kept.

No model, no labels: the filter a careful user would run first, so a selection policy must beat it.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from winnow.datasets.contract import shard_files

FLAT_STD = 4.0  # pixel standard deviation (0-255) below which an image is flat
HASH_SIZE = 16  # 8 x 8 was measured to merge 29% of distinct built-in images; 16 x 16, 0.1%


@dataclass(frozen=True)
class Filtered:
    """Which rows the filter keeps, and how many it dropped for each reason."""

    keep: np.ndarray  # bool (N,)
    dropped: dict[str, int]


def perceptual_hashes(images: torch.Tensor, size: int = HASH_SIZE, batch: int = 4096) -> list[bytes]:
    """One hash per uint8 image (N, 3, H, W): the grey image at size x size, each cell above its mean or not."""
    keys = []
    for start in range(0, len(images), batch):
        grey = images[start : start + batch].float().mean(1, keepdim=True)
        small = F.adaptive_avg_pool2d(grey, size).flatten(1)
        bits = (small > small.mean(dim=1, keepdim=True)).numpy()
        keys.extend(row.tobytes() for row in np.packbits(bits, axis=1))
    return keys


class ModelFreeFilter:
    """The filters over a pool read in chunks (a shard at a time), in order: each call keeps the rows that survive
    given every row seen before, so the rows kept are the same as over the whole pool at once. It remembers hashes
    (16 bytes an image for exact duplicates, 32 for near ones), never pixels: memory grows by bytes per image."""

    def __init__(self) -> None:
        self.exact: set[bytes] = set()  # of every row not flat
        self.near: set[bytes] = set()  # of every row kept past the exact check
        self.dropped = {"flat": 0, "exact_duplicate": 0, "near_duplicate": 0}

    def keep(self, images: torch.Tensor) -> np.ndarray:
        """bool (N,): which of these uint8 images (N x 3 x H x W) survive, the first of each duplicate kept."""
        n = len(images)
        flat = images.float().flatten(1).std(dim=1).numpy() < FLAT_STD if n else np.zeros(0, bool)
        keep = ~flat
        near = perceptual_hashes(images) if n else []
        for i in np.flatnonzero(keep):
            exact = hashlib.blake2b(images[i].numpy().tobytes(), digest_size=16).digest()
            if exact in self.exact:
                keep[i] = False
                self.dropped["exact_duplicate"] += 1
                continue
            self.exact.add(exact)
            if near[i] in self.near:
                keep[i] = False
                self.dropped["near_duplicate"] += 1
            self.near.add(near[i])
        self.dropped["flat"] += int(flat.sum())
        return keep


def model_free_filter(images: torch.Tensor) -> Filtered:
    """The rows of a decoded pool (uint8, N x 3 x H x W) that survive the filters, and what each dropped."""
    f = ModelFreeFilter()
    keep = f.keep(images)
    return Filtered(keep, f.dropped)


def filter_pass(folder: Path, decode: Callable[[Path], tuple]) -> tuple[np.ndarray, dict]:
    """The ids the filters drop from a pool too large to hold, read shard by shard in the pool's order (so the rows
    kept are those of the in-memory filter), and what the pass cost: its seconds include decoding the pool, which the
    stream then decodes again as it trains (from the decoded cache)."""
    start, f, dropped = time.perf_counter(), ModelFreeFilter(), []
    for path in tqdm(shard_files(folder), desc="filter the pool", unit="shard", leave=False, disable=None):
        split, _ = decode(path)
        dropped.append(split.ids[~f.keep(split.images)])
    ids = np.sort(np.concatenate(dropped)) if dropped else np.zeros(0, np.int64)
    return ids, {"prepare_seconds": time.perf_counter() - start, "filter_dropped": f.dropped}


def without_ids(decode: Callable[[Path], tuple], dropped: np.ndarray, path: Path) -> tuple:
    """decode(path) less the rows whose id is in `dropped` (sorted): a stream's decode for the filtered pool."""
    split, targets = decode(path)
    return split.keep(targets, np.flatnonzero(~np.isin(split.ids, dropped)))
