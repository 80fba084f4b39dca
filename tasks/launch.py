"""Launching: the train stage as DDP ranks through torchrun. Orchestration, so not in winnow/."""

from __future__ import annotations

import logging
import subprocess
import sys
import tempfile
from pathlib import Path

from winnow.config import Params, write_params
from winnow.errors import WinnowError
from winnow.stages.paths import Paths
from winnow.stages.records import TrainRecord

log = logging.getLogger("winnow")


def train_distributed(params: Params, policy: str) -> dict:
    """The train stage as train.nproc_per_node DDP ranks on this node: torchrun runs `winnow train`
    (bare, every rank the stage) on these exact params, written to a temporary file; rank 0 writes
    the outputs, whose metrics are returned."""
    with tempfile.TemporaryDirectory() as tmp:
        params_file = Path(tmp) / "params.yaml"
        # the resolved params: objectives: {} so that no per-objective section is applied twice
        write_params(params, params_file)
        command = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            str(params.train.nproc_per_node),
            "-m",
            "winnow.cli",
            "train",
            "--policy",
            policy,
            "--params",
            str(params_file),
        ]
        log.info("train %s: launching %d DDP ranks: %s", policy, params.train.nproc_per_node, " ".join(command))
        done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        said = [line for line in done.stderr.splitlines() if line.startswith("winnow: error: ")]
        ranks = params.train.nproc_per_node
        if said:  # a rank refused a wrong input: say it as the CLI would, and do not retry it
            raise WinnowError(f"train {policy} ({ranks} ranks): {said[-1].removeprefix('winnow: error: ')}")
        tail = done.stderr[-3000:]
        raise RuntimeError(f"train {policy}: torchrun with {ranks} ranks failed (exit {done.returncode}):\n{tail}")
    return TrainRecord.read(Paths.of(params).train_record(policy), "torchrun finished without writing it").as_dict()
