"""The chain of docs/DESIGN.md, in one place: the stages in order, and a plain run of them.

`winnow pipeline` runs CHAIN as Prefect tasks (flows/pipeline.py); the studies and the tests run it here,
without Prefect. No stage imports this module, so editing it reruns nothing.
"""

from __future__ import annotations

import random

from winnow.config import Params
from winnow.method.policies import POLICIES
from winnow.stages.curate import curate_stage
from winnow.stages.data import data_stage
from winnow.stages.evaluate import evaluate_stage
from winnow.stages.reference import reference_stage
from winnow.stages.score import score_stage
from winnow.stages.summary import summary_stage
from winnow.stages.train import train_stage

CHAIN = ("data", "reference", "score", "train", "curate", "evaluate", "summary")  # train: once per train.policies


def arm_order(params: Params) -> list[str]:
    """The policies in the order they train: shuffled by the seed, so no arm is always first (a machine warms up,
    caches fill, other load comes and goes: a fixed order would put that on the same arms every time)."""
    order = list(params.train.policies)
    random.Random(params.seed).shuffle(order)
    replays = [p for p in order if POLICIES[p].replays]  # last: after the run whose training sequence they replay
    return [p for p in order if p not in replays] + replays


STAGES = {
    "data": data_stage,
    "reference": reference_stage,
    "score": score_stage,
    "curate": curate_stage,
    "evaluate": evaluate_stage,
}


def run_chain(params: Params, skip: tuple[str, ...] = (), write_report: bool = True) -> dict | None:
    """Every stage of CHAIN but `skip`, in order, each resuming what exists; the summary, when it ran."""
    summary = None
    for stage in CHAIN:
        if stage in skip:
            continue
        if stage == "train":
            for policy in arm_order(params):
                train_stage(params, policy)
        elif stage == "summary":
            summary = summary_stage(params, write_report=write_report)
        else:
            STAGES[stage](params)
    return summary
