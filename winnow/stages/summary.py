"""The summary stage: the uniform target, each policy's steps to reach it, the ledger, the report."""

from __future__ import annotations

import json

from winnow.config import Params
from winnow.datasets.contract import value_counts
from winnow.datasets.synth import PATHOLOGIES
from winnow.files import read_csv, write_json
from winnow.method import ledger
from winnow.method.objectives import OBJECTIVES
from winnow.reports.run import write_run_report
from winnow.stages.inputs import read_json
from winnow.stages.paths import Paths


def summary_stage(params: Params, write_report: bool = True) -> dict:
    """summary.json: the uniform target; per policy steps_to_target, step_ratio, what it selected,
    and the compute ledger (FLOPs to target, flop ratios); with the report and plots unless told not to."""
    paths = Paths.of(params)
    curves = {p: read_csv(paths.metrics / "curves" / f"{p}.csv") for p in params.train.policies}
    trained = {
        p: read_json(paths.metrics / "train" / f"{p}.json", f"run `winnow train --policy {p}`") for p in params.train.policies
    }
    evaluated_path = paths.metrics / "evaluate.json"  # transfer metrics join the summary when evaluated (the bench skips it)
    evaluated = json.loads(evaluated_path.read_text()) if evaluated_path.exists() else {}
    counts = value_counts(
        paths.data / "pool", "pathology"
    )  # known where the data has a pathology column (the generated pool, or imported)
    known = {p: i for i, p in enumerate(PATHOLOGIES)}  # the generator's kinds in its order, then any others the data names
    pool_mix = {
        str(p): counts[p] / sum(counts.values()) for p in sorted(counts, key=lambda p: (known.get(p, len(known)), str(p)))
    }
    objective = OBJECTIVES[params.objective]
    summary = summarize(curves, trained, evaluated, pool_mix, params.train.steps, objective.metric, objective.noise)
    summary["reference"] = read_json(paths.metrics / "reference.json", "run `winnow reference` first")
    score = read_json(paths.metrics / "score.json", "run `winnow score` first")
    summary["ledger"] = ledger.run_ledger(summary, trained, summary["reference"], score, params.bench.amortise_over)
    for policy, row in summary["ledger"]["policies"].items():
        summary["policies"][policy].update({k: row[k] for k in ledger.HEADLINE})
    curated = paths.metrics / "curate.json"  # what `winnow curate` kept, when it ran: the report shows it
    if curated.exists():
        record = json.loads(curated.read_text())
        summary["curate"] = {k: record[k] for k in ("rule", "fraction", "balance", "kept_rows", "pool_rows", "pathology", "dest")}
    write_json(summary, paths.metrics / "summary.json")
    if write_report:
        write_run_report(summary, curves, paths, params)
    return summary


def steps_to_target(curve: list[dict], target: float, metric: str = "accuracy") -> int | None:
    """First eval step whose metric is at or above the target; None if never."""
    return next((int(row["step"]) for row in curve if row[metric] >= target), None)


def summarize(
    curves: dict[str, list[dict]],
    trained: dict[str, dict],
    evaluated: dict[str, dict],
    pool_mix: dict[str, float],
    uniform_steps: int,
    metric: str = "accuracy",
    noise: str = "noisy_label",
) -> dict:
    """`metric` is the eval-log column the target is set on; `noise` the pathology whose selected share is reported."""
    target = curves["uniform"][-1][metric]
    policies = {}
    for policy, curve in curves.items():
        reached = steps_to_target(curve, target, metric)
        mix = trained[policy]["selected_mix"]
        policies[policy] = {
            "final_metric": curve[-1][metric],
            "best_metric": max(row[metric] for row in curve),
            "steps_to_target": reached,
            "step_ratio": reached / uniform_steps if reached is not None else None,
            f"{noise}_fraction_selected": mix.get(noise, 0.0) if pool_mix else None,
            "selected_mix": mix,
            "probe_accuracy": {  # per transfer task, when evaluated
                k.removesuffix("_probe_accuracy"): v
                for k, v in evaluated.get(policy, {}).items()
                if k.endswith("_probe_accuracy")
            },
            "train_seconds": trained[policy]["seconds"],
        }
    return {
        "metric": f"test_{metric}",
        "target": target,
        "uniform_steps": uniform_steps,
        "noise": noise,
        f"pool_{noise}_fraction": pool_mix.get(noise, 0.0) if pool_mix else None,
        "pool_mix": pool_mix,
        "policies": policies,
    }
