"""Work done ahead: one shard decoded in a thread of its own while the caller computes on the previous one (a
stream's next shard, the score stage's next shard)."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Callable


class Ahead:
    """One shard decoding in a thread of its own, which ends when the shard is decoded (no pool is left running: a
    process with a thread pool must never fork). Decoding is a function of the file alone, so the rows are the same
    as decoded in line; an error is raised where the rows are asked for, as it would have been."""

    def __init__(self, index: int, decode: Callable, path: Path):
        self.index, self.out, self.error, self.seconds = index, None, None, 0.0
        self.thread = threading.Thread(target=self._run, args=(decode, path), name=f"winnow-decode-{path.name}", daemon=True)
        self.thread.start()

    def _run(self, decode: Callable, path: Path) -> None:
        started = time.perf_counter()
        try:
            self.out = decode(path)
        except BaseException as error:  # handed to the reader, in its thread
            self.error = error
        self.seconds = time.perf_counter() - started  # how long decoding took, overlapped or not

    def result(self):
        self.thread.join()
        if self.error is not None:
            raise self.error
        return self.out
