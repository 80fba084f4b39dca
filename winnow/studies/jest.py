"""--study jest (contrastive): JEST's joint batches at falling keep fractions, with and without low-resolution
scorers, against per-example learnability and uniform.
"""

from __future__ import annotations

import logging
from pathlib import Path

from winnow.config import Params
from winnow.errors import ConfigError
from winnow.files import read_csv
from winnow.method.objectives import OBJECTIVES
from winnow.reports.studies import write_study_report
from winnow.reports.tables import jest_table
from winnow.stages.paths import Paths
from winnow.stages.reference import reference_stage
from winnow.stages.score import score_stage
from winnow.stages.summary import summary_stage
from winnow.stages.train import train_stage
from winnow.studies.runs import (
    aggregate,
    copy_uniform,
    mean_over_seeds,
    run_params,
    share_reference,
    spread,
    study_row,
)

log = logging.getLogger("winnow")


def jest_arms(params: Params) -> list[tuple[str, dict]]:
    """The --study jest runs besides uniform: per-example learnability as configured, then JEST at each of
    bench.keep_fractions, at full resolution and with the reference and the actor at bench.low_resolution."""
    per_example = "softmax" if params.train.selection == "softmax" else "topk"
    arms = [("learnability", {"selection": per_example, "score_resolution": None})]
    for resolution in (None, params.bench.low_resolution):
        for keep in params.bench.keep_fractions:
            name = f"jest-{keep:g}" + (f"-{resolution}px" if resolution else "")
            arms.append((name, {"selection": "jest", "keep_fraction": keep, "score_resolution": resolution}))
    return arms


def run(params: Params) -> dict:
    """Uniform, per-example learnability and JEST (selection jest) at each keep fraction, with and without
    low-resolution scoring, over seeds: one uniform run and one reference per resolution per seed, shared
    by every arm of that seed. Contrastive only (JEST's joint term is the contrastive loss's)."""
    if not OBJECTIVES[params.objective].joint:
        raise ConfigError(f"--study jest: JEST selects batches for the contrastive objective, not {params.objective}")
    arms, runs, curves = jest_arms(params), [], {}
    for seed in range(params.seed, params.seed + params.bench.seeds):
        base = run_params(params, f"jest/seed-{seed}/full", seed)  # uniform, and the full-size reference
        base = base.model_copy(
            update={
                "train": base.train.model_copy(update={"policies": ("uniform",), "score_resolution": None}),
                "score": base.score.model_copy(update={"resolution": None}),
            }
        )
        low = run_params(params, f"jest/seed-{seed}/low-res", seed)  # the reference at bench.low_resolution
        low = low.model_copy(update={"score": low.score.model_copy(update={"resolution": params.bench.low_resolution})})
        for reference in (base, low):  # each resumes, or is checked against its inputs, once per seed
            reference_stage(reference)
            score_stage(reference)
        train_stage(base, "uniform")
        for name, changes in arms:
            log.info("bench %s jest: seed %d, %s", params.objective, seed, name)
            run = run_params(params, f"jest/seed-{seed}/{name}", seed)
            run = run.model_copy(
                update={
                    "train": run.train.model_copy(update={**changes, "policies": ("uniform", "learnability")}),
                    "score": run.score.model_copy(update={"resolution": changes.get("score_resolution")}),
                }
            )
            source = low if changes.get("score_resolution") else base
            copy_uniform(base, run)
            share_reference(source, run)
            train_stage(run, "learnability")
            summary = summary_stage(run, write_report=False)
            row = summary["policies"]["learnability"]
            runs.append(
                {
                    "arm": name,
                    "seed": seed,
                    "selection": run.train.selection,
                    "keep_fraction": run.train.keep_fraction,
                    "score_resolution": run.train.score_resolution or run.data.image_size,
                    f"{OBJECTIVES[params.objective].noise}_fraction_selected": row[
                        f"{OBJECTIVES[params.objective].noise}_fraction_selected"
                    ],
                    "uniform_final_metric": summary["policies"]["uniform"]["final_metric"],
                    **study_row(summary),
                }
            )
            for policy, key in (("uniform", "uniform"), ("learnability", name)):
                curve = read_csv(Paths.of(run).curve(policy))
                curves.setdefault(key, {})[seed] = curve
    metric = OBJECTIVES[params.objective].metric
    mean_curves = mean_over_seeds(curves, metric)
    uniform_final = spread([r["uniform_final_metric"] for r in runs if r["arm"] == arms[0][0]])  # once per seed
    extra = {"metric": metric, "uniform_final_metric": uniform_final}
    return aggregate(params, "jest", "arm", tuple(name for name, _ in arms), runs, {**extra, "curves": mean_curves})


def table(result: dict) -> str:
    return jest_table(result)


def report(result: dict, paths) -> Path:
    """The study's page and plot, from its JSON (rerun nothing)."""
    return write_study_report(result, paths)
