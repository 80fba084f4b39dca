"""Output files written whole or not at all: each is written to a temporary sibling, then renamed
into place, so a crash never leaves a file cut short where a later stage would read it."""

from __future__ import annotations

import contextlib
import csv
import fcntl
import json
import os
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: Path):
    """A temporary path beside `path`, unique to this process (two workers never share one); when the
    block succeeds it replaces `path`, and when it fails it is removed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def exclusive(lock: Path, output: Path, what: str):
    """Hold the lock file `lock` for the block: two runs that would write `output` never both do; the second is
    refused at once, naming the output. The lock goes with its process, a killed one included."""
    from winnow.errors import OutputBusy

    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise OutputBusy(
                f"{output}: another run is {what} right now (it holds {lock}); wait for it to finish, or give this "
                "run other outputs"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def write_json(obj, path: Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=float) + "\n")


def write_text(text: str, path: Path) -> None:
    """A report or any text output, whole or not at all."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def read_csv(path: Path) -> list[dict]:
    """A CSV a stage wrote (a curve, a step log) as rows of floats; missing is an error naming the stage to run."""
    from winnow.errors import MissingInput

    if not path.exists():
        raise MissingInput(f"{path}: missing; run the train stage for this policy first")
    with open(path) as f:
        return [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(f)]


def write_csv(rows: list[dict], path: Path) -> None:
    """Rows as CSV, the header the union of their keys in first-seen order; nothing when there are no rows."""
    if not rows:
        return
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(dict.fromkeys(k for row in rows for k in row)))
        writer.writeheader()
        writer.writerows(rows)
