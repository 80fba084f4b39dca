"""Training sequences, recorded and replayed: the pool ids a selecting run kept at each step, written once beside
its checkpoint (learners/<policy>.sequence.parquet), and a sampler that hands another learner exactly those rows,
step by step: no actor, no super-batch, no store query. Selection is paid once and shared by every learner that
replays it (the ledger divides the recording's selection FLOPs by train.replay_users: winnow/method/ledger.py).

A sequence names the pool it was drawn from (its content hash) and what its selection cost; a replay refuses a
sequence of another pool, one shorter than its run, or one whose batches are not its batch size.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from winnow.datasets.contract import Split
from winnow.datasets.stream import Draw, InMemory
from winnow.errors import DataError

META = b"winnow.sequence"  # the Parquet schema metadata key that holds what the sequence is (JSON)


def write_sequence(path: str | Path, kept: list[list[int]], meta: dict) -> Path:
    """Write the ids kept at each step (one list per step, in order) and `meta`, atomically (a kill leaves the old
    file or none)."""
    path = Path(path)
    steps = np.repeat(np.arange(1, len(kept) + 1, dtype=np.int32), [len(ids) for ids in kept])
    ids = np.concatenate([np.asarray(i, dtype=np.int64) for i in kept]) if kept else np.zeros(0, np.int64)
    table = pa.table({"step": steps, "id": ids}).replace_schema_metadata({META: json.dumps(meta, sort_keys=True)})
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    pq.write_table(table, tmp, compression="zstd")
    os.replace(tmp, path)
    return path


def read_sequence(path: str | Path) -> tuple[list[np.ndarray], dict]:
    """The ids of each step and what the sequence is; a file that is no sequence is named."""
    path = Path(path)
    if not path.is_file():
        raise DataError(
            f"{path}: no training sequence here (train.replay names a file a selecting run wrote beside its checkpoint, "
            "learners/<policy>.sequence.parquet, or such a policy of this run)"
        )
    try:
        table = pq.read_table(path)
        meta = json.loads((table.schema.metadata or {})[META])
        steps, ids = table.column("step").to_numpy(), table.column("id").to_numpy()
    except (pa.ArrowException, KeyError, ValueError, OSError) as e:
        raise DataError(f"{path}: not a training sequence winnow wrote ({type(e).__name__}: {e})") from None
    bounds = np.searchsorted(steps, np.arange(1, meta["steps"] + 2))
    return [ids[bounds[i] : bounds[i + 1]] for i in range(meta["steps"])], meta


class Replay(InMemory):
    """A sampler over a split held in memory that draws, at its t-th draw, the rows the sequence kept at step t
    (this rank's share of them under DDP). Its state is the step it is at, so a resumed run replays on."""

    def __init__(
        self,
        split: Split,
        targets: torch.Tensor,
        sequence: list[np.ndarray],
        where: str,
        pathology: np.ndarray | None = None,
        rank: int = 0,
        world: int = 1,
    ):
        super().__init__(split, targets, 0, pathology, rank, world)
        self.sequence, self.where, self.step = sequence, where, 0
        order = np.argsort(split.ids, kind="stable")
        self._sorted_ids, self._order = split.ids[order], order
        every = np.unique(np.concatenate(sequence)) if sequence else np.zeros(0, np.int64)
        if (missing := every[self._rows(every) < 0]).size:
            raise DataError(
                f"{where}: {missing.size} of the ids it kept are not in this pool (the first: {int(missing[0])}); "
                "a sequence replays on the pool it was recorded on"
            )

    def _rows(self, ids: np.ndarray) -> np.ndarray:
        """Each id's row in the split, -1 where the split has no such id."""
        at = np.searchsorted(self._sorted_ids, ids).clip(0, max(len(self._sorted_ids) - 1, 0))
        ok = self._sorted_ids[at] == ids if len(self._sorted_ids) else np.zeros(len(ids), bool)
        return np.where(ok, self._order[at], -1)

    def draw(self, n: int) -> Draw:
        if self.step >= len(self.sequence):
            raise DataError(f"{self.where}: it holds {len(self.sequence)} steps, and the run asks for step {self.step + 1}")
        ids = self.sequence[self.step]
        if len(ids) != n:
            raise DataError(
                f"{self.where}: its step {self.step + 1} kept {len(ids)} rows and this run's batch is {n}; "
                "replay it at the batch size it was recorded at (train.batch_size)"
            )
        self.step += 1
        return self.take(self._rows(ids))

    def state(self) -> dict:
        return {"step": self.step}

    def restore(self, state: dict) -> None:
        self.step = state["step"]
