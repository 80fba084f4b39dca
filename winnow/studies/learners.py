"""--study learners: one small scorer, learners of growing size (the paper's claim: the saving grows)."""

from __future__ import annotations

import logging
from pathlib import Path

from winnow.config import Params
from winnow.reports.studies import write_study_report
from winnow.reports.tables import study_table
from winnow.studies.runs import (
    aggregate,
    run_params,
    run_seed,
    study_row,
)

log = logging.getLogger("winnow")


def run(params: Params) -> dict:
    """One small scorer (reference.model, train.actor), learners of growing size (bench.learners): uniform and
    learnability per learner and seed. The paper's claim: the saving grows with the learner."""
    runs = []
    for seed in range(params.seed, params.seed + params.bench.seeds):
        for learner in params.bench.learners:
            log.info("bench %s learners: seed %d, learner %s", params.objective, seed, learner)
            run = run_params(params, f"learners/seed-{seed}/{learner}", seed)
            run = run.model_copy(
                update={"train": run.train.model_copy(update={"model": learner, "policies": ("uniform", "learnability")})}
            )
            runs.append({"learner": learner, "seed": seed, **study_row(run_seed(run))})
    return aggregate(params, "learners", "learner", params.bench.learners, runs)


def table(result: dict) -> str:
    return study_table(result)


def report(result: dict, paths) -> Path:
    """The study's page and plot, from its JSON (rerun nothing)."""
    return write_study_report(result, paths)
