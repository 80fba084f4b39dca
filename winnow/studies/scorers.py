"""--study scorers: one learner, its reference and actor (one model) from far smaller than it to its own size."""

from __future__ import annotations

import logging
from pathlib import Path

from winnow.config import Params
from winnow.reports.studies import write_study_report
from winnow.reports.tables import study_table
from winnow.stages.reference import reference_stage
from winnow.stages.score import score_stage
from winnow.stages.summary import summary_stage
from winnow.stages.train import train_stage
from winnow.studies.runs import (
    aggregate,
    copy_uniform,
    run_params,
    study_row,
)

log = logging.getLogger("winnow")


def run(params: Params) -> dict:
    """The same learner, its reference and actor (one model, bench.scorers) from far smaller than it to its
    own size: learnability against one uniform run per seed. The paper's table of scorer sizes."""
    runs = []
    for seed in range(params.seed, params.seed + params.bench.seeds):
        base = run_params(params, f"scorers/seed-{seed}/uniform", seed)
        base = base.model_copy(update={"train": base.train.model_copy(update={"policies": ("uniform",)})})
        train_stage(base, "uniform")
        for scorer in params.bench.scorers:
            log.info("bench %s scorers: seed %d, reference and actor %s", params.objective, seed, scorer)
            run = run_params(params, f"scorers/seed-{seed}/{scorer}", seed)
            run = run.model_copy(
                update={
                    "reference": run.reference.model_copy(update={"model": scorer}),
                    "train": run.train.model_copy(update={"actor": scorer, "policies": ("uniform", "learnability")}),
                }
            )
            copy_uniform(base, run)
            reference_stage(run)
            score_stage(run)
            train_stage(run, "learnability")
            runs.append({"scorer": scorer, "seed": seed, **study_row(summary_stage(run, write_report=False))})
    return aggregate(params, "scorers", "scorer", params.bench.scorers, runs)


def table(result: dict) -> str:
    return study_table(result)


def report(result: dict, paths) -> Path:
    """The study's page and plot, from its JSON (rerun nothing)."""
    return write_study_report(result, paths)
