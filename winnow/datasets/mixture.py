"""A sampler that draws each super-batch from several samplers at fixed shares: the curated rows held in memory
beside a pool streamed shard by shard (the `curated_plus_pool` baseline on a pool larger than the shuffle buffer).

It gives what the other samplers give (datasets/stream.py): `draw(n)` -> Draw, `state()` / `restore()` for a
checkpoint, `peek(n)`, `close()`, `size` and `kinds`. Memory is what its parts hold, so a streamed part keeps it
bounded whatever the pool's size.
"""

from __future__ import annotations

import numpy as np
import torch

from winnow.datasets.stream import Draw


class Mixture:
    """Each draw of n takes a Binomial(n, share) count from each part in turn (the last takes the rest), then shuffles
    the rows together. With shares proportional to the parts' sizes, that is a uniform draw over their union, up to
    sampling with replacement between parts. Under DDP the counts come from one RNG seeded alike on every rank and are
    multiples of the world size, so each rank's batch is exactly n / world rows (each part gives its rank's share)."""

    def __init__(self, parts: list, shares: list[float], seed: int, world: int = 1):
        if len(parts) != len(shares) or not parts:
            raise ValueError("a mixture needs one share per part")
        total = float(sum(shares))
        self.parts, self.shares, self.world = parts, [s / total for s in shares], world
        self.rng = np.random.default_rng([seed, 7])  # the same on every rank: one global split of each super-batch
        self.size = sum(p.size for p in parts)
        self.kinds = sorted(set().union(*(p.kinds for p in parts)))

    def _counts(self, n: int) -> list[int]:
        """Rows per part for a global super-batch of n: multiples of the world size that add up to n."""
        counts, left, share_left = [], n // self.world, 1.0
        for share in self.shares[:-1]:
            k = int(self.rng.binomial(left, min(1.0, share / share_left))) if left and share_left > 0 else 0
            counts.append(k * self.world)
            left, share_left = left - k, share_left - share
        return [*counts, left * self.world]

    def draw(self, n: int) -> Draw:
        drawn = [part.draw(k) for part, k in zip(self.parts, self._counts(n)) if k]
        order = torch.from_numpy(self.rng.permutation(sum(len(d.ids) for d in drawn)))
        pathology, labels = (
            None
            if any(getattr(d, key) is None for d in drawn)
            else np.concatenate([getattr(d, key) for d in drawn])[order.numpy()]
            for key in ("pathology", "labels")
        )
        return Draw(
            np.concatenate([d.ids for d in drawn])[order.numpy()],
            torch.cat([d.images for d in drawn])[order],
            torch.cat([d.targets for d in drawn])[order],
            pathology,
            labels=labels,
        )

    def peek(self, n: int) -> Draw:
        """The largest part's first rows (what the FLOP counter runs on: every row costs the learner the same)."""
        return max(self.parts, key=lambda p: p.size).peek(n)

    @property
    def skipped(self) -> dict[str, list[dict]]:
        """The rows each part could not use, by file."""
        out: dict[str, list[dict]] = {}
        for part in self.parts:
            for row in part.split.skipped if hasattr(part, "split") else [r for rows in part.skipped.values() for r in rows]:
                out.setdefault(str(row.get("file", "")), []).append(row)
        return out

    def state(self) -> dict:
        return {"rng": self.rng.bit_generator.state, "parts": [p.state() for p in self.parts]}

    def restore(self, state: dict) -> None:
        self.rng.bit_generator.state = state["rng"]
        for part, part_state in zip(self.parts, state["parts"], strict=True):
            part.restore(part_state)

    def close(self) -> None:
        for part in self.parts:
            part.close()
