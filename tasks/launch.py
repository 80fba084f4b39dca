"""Launching: the train stage as DDP ranks through torchrun, or as one of several arms trained at once, each in a
process of its own (train.parallel_arms). Orchestration, so not in winnow/."""

from __future__ import annotations

import codecs
import contextlib
import logging
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from winnow.config import Params, write_params
from winnow.errors import WinnowError
from winnow.method.devices import ARM_WORKER
from winnow.stages.paths import Paths
from winnow.stages.records import TrainRecord

log = logging.getLogger("winnow")


def train_distributed(params: Params, policy: str) -> dict:
    """The train stage as train.nproc_per_node DDP ranks on this node: torchrun runs `winnow train`
    (bare, every rank the stage) on these exact params, written to a temporary file; rank 0 writes
    the outputs, whose metrics are returned."""
    ranks = params.train.nproc_per_node
    launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(ranks)]
    log.info("train %s: launching %d DDP ranks", policy, ranks)
    return _run_stage(params, policy, launcher, {}, f"torchrun with {ranks} ranks", f"{ranks} ranks")


class _Slots:
    """At most n arms training at once in this process's flow, and how many did at most (tests read it)."""

    def __init__(self, n: int):
        self.free: queue.Queue[int] = queue.Queue()
        for slot in range(n):
            self.free.put(slot)
        self.running = self.most_at_once = 0
        self.lock = threading.Lock()

    @contextlib.contextmanager
    def taken(self):
        slot = self.free.get()
        with self.lock:
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
        try:
            yield slot
        finally:
            with self.lock:
                self.running -= 1
            self.free.put(slot)


_SLOTS: dict[int, _Slots] = {}
_SLOTS_LOCK = threading.Lock()


def slots(n: int) -> _Slots:
    with _SLOTS_LOCK:
        return _SLOTS.setdefault(n, _Slots(n))


def train_apart(params: Params, policy: str) -> dict:
    """The train stage in a process of its own, one of at most train.parallel_arms at once (the flow's task threads
    wait here for a free slot): `winnow train`, bare, on these exact params. The stage itself takes its share of the
    CPU threads (train_stage), as it does however it is launched, so an arm's numbers are the same either way."""
    arms = params.train.parallel_arms
    with slots(arms).taken() as slot:
        log.info("train %s: started in a process of its own (slot %d of %d)", policy, slot + 1, arms)
        started = time.perf_counter()
        env = {ARM_WORKER: "1", "TQDM_POSITION": str(slot)}  # its progress bar on a line of its own
        out = _run_stage(params, policy, [], env, "its process", f"one of {arms} arms at once")
        log.info("train %s: its process finished in %.0f s", policy, time.perf_counter() - started)
    return out


def _run_stage(params: Params, policy: str, launcher: list[str], env: dict, what: str, how: str) -> dict:
    """`python <launcher> -m winnow.cli train --policy <policy>` on these exact params, written to a temporary file.
    Its stderr (progress bars, log lines) is passed on as it comes; a wrong input it refused is raised as the CLI
    said it, anything else with its stderr's tail."""
    with tempfile.TemporaryDirectory() as tmp:
        params_file = Path(tmp) / "params.yaml"
        # the resolved params: objectives: {} so that no per-objective section is applied twice
        write_params(params, params_file)
        command = [sys.executable, *launcher, "-m", "winnow.cli", "train", "--policy", policy, "--params", str(params_file)]
        log.debug("train %s: %s", policy, " ".join(command))
        child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ, **env})
        try:
            said = _passed_on(child.stderr)
            code = child.wait()
        finally:  # this process stopped waiting (interrupted, cancelled): the arm stops too, its lock with it
            if child.poll() is None:
                child.terminate()  # torchrun passes SIGTERM on to its ranks; a kill would orphan them
                try:
                    child.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    child.kill()
                    child.wait()
    if code:
        refused = [line for line in said.splitlines() if line.startswith("winnow: error: ")]
        if refused:  # it refused a wrong input: say it as the CLI would, and do not retry it
            raise WinnowError(f"train {policy} ({how}): {refused[-1].removeprefix('winnow: error: ')}")
        raise RuntimeError(f"train {policy}: {what} failed (exit {code}):\n{said[-3000:]}")
    return TrainRecord.read(Paths.of(params).train_record(policy), f"{what} finished without writing it").as_dict()


def _passed_on(stream, keep: int = 20_000) -> str:
    """Copy a child's stderr to this process's as it comes, each write whole (a progress bar's redraw is one); return
    the last `keep` characters of it."""
    tail, decoder = "", codecs.getincrementaldecoder("utf-8")(errors="replace")  # a character may straddle two reads
    while chunk := os.read(stream.fileno(), 65536):
        text = decoder.decode(chunk)
        sys.stderr.write(text)
        sys.stderr.flush()
        tail = (tail + text)[-keep:]
    stream.close()
    return tail
