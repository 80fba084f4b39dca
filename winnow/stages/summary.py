"""The summary stage: the uniform target, each policy's steps to reach it, the ledger, the report."""

from __future__ import annotations

import json
from pathlib import Path

from winnow.config import Params
from winnow.datasets.contract import value_counts
from winnow.datasets.synth import PATHOLOGIES
from winnow.files import read_csv, write_json
from winnow.method import ledger
from winnow.method.objectives import OBJECTIVES
from winnow.method.policies import POLICIES
from winnow.reports.run import write_run_report
from winnow.stages.lineage import record_run
from winnow.stages.paths import Paths
from winnow.stages.records import ReferenceRecord, ScoreRecord, TrainRecord


def summary_stage(params: Params, write_report: bool = True) -> dict:
    """summary.json: the uniform target; per policy steps_to_target, step_ratio, what it selected,
    and the compute ledger (FLOPs to target, flop ratios); with the report and plots unless told not to."""
    paths = Paths.of(params)
    curves = {p: read_csv(paths.curve(p)) for p in params.train.policies}
    trained = {p: TrainRecord.read(paths.train_record(p), f"run `winnow train --policy {p}`") for p in params.train.policies}
    evaluated_path = paths.evaluate_record  # transfer metrics join the summary when evaluated (the bench skips it)
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
    reference = ReferenceRecord.read(paths.reference_record, "run `winnow reference` first")
    score = ScoreRecord.read(paths.score_record, "run `winnow score` first")
    summary["reference"] = reference.as_dict()
    summary["ledger"] = run_ledger(summary, trained, reference, score, params.bench.amortise_over)
    for policy, row in summary["ledger"]["policies"].items():
        summary["policies"][policy].update({k: row[k] for k in ledger.HEADLINE})
    curated = paths.curate_record  # what `winnow curate` kept, when it ran: the report shows it
    if curated.exists():
        record = json.loads(curated.read_text())
        summary["curate"] = {k: record[k] for k in ("rule", "fraction", "balance", "kept_rows", "pool_rows", "pathology", "dest")}
    write_json(summary, paths.summary_record)
    write_headline(summary, paths.headline)
    if write_report:
        write_run_report(summary, curves, paths, params)
    record_run("summary", params)
    return summary


def write_headline(summary: dict, folder: Path) -> None:
    """headline/<policy>.json: the few figures a person compares across runs (`dvc metrics show`, `dvc metrics diff`),
    one row per policy; the detailed records (summary.json, train/, ...) are plain outputs beside them."""
    noise = f"{summary['noise']}_fraction_selected"
    for policy, row in summary["policies"].items():
        figures = {
            "final": row["final_metric"],
            "steps_to_target": row["steps_to_target"],
            "step_ratio": row["step_ratio"],
            "flop_ratio": row.get("flop_ratio_full"),
            "time_ratio": row.get("time_ratio_full"),
            "noise_kept": row[noise],
        }
        write_json(figures, folder / f"{policy}.json")
    for stale in set(folder.glob("*.json")) - {folder / f"{p}.json" for p in summary["policies"]}:
        stale.unlink()  # a policy no longer run


def steps_to_target(curve: list[dict], target: float, metric: str = "accuracy") -> int | None:
    """First eval step whose metric is at or above the target; None if never."""
    return next((int(row["step"]) for row in curve if row[metric] >= target), None)


def summarize(
    curves: dict[str, list[dict]],
    trained: dict[str, TrainRecord],
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
        mix = trained[policy].selected_mix
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
            "train_seconds": trained[policy].seconds,
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


def run_ledger(
    summary: dict, trained: dict[str, TrainRecord], reference: ReferenceRecord, score: ScoreRecord, amortise_over: int
) -> dict:
    """The ledger of one run, from what the stages measured: per policy its cost lines, FLOPs and seconds
    to the target and their ratios to uniform's; and the systems figures, each a ratio measured in this run."""
    pool_size = score.num_examples - score.unscorable
    spend = ledger.ReferenceSpend(
        reference.forward_flops_per_example,
        reference.score_forward_flops_per_example,
        reference.steps,
        reference.batch_size,
        pool_size,
    )
    costs = {}
    for policy, info in trained.items():
        costs[policy] = ledger.policy_costs(
            policy,
            spend,
            learner_forward=info.forward_flops_per_example,
            batch=info.batch_size,
            super_batch=info.super_batch_size,
            actor_super_forward=info.actor_super_batch_forward_flops_per_example or 0.0,
            actor_forward=info.actor_forward_flops_per_example or 0.0,
            actor_trained_per_step=info.actor_trained_per_step or 0,
            reference_logits=info.reference_logits_flops_per_step or 0.0,
        )
    uniform, steps = costs["uniform"], summary["uniform_steps"]
    one_off_seconds = reference.seconds + score.seconds
    policies = {}
    for policy, cost in costs.items():
        reached = summary["policies"][policy]["steps_to_target"]
        predicted = cost.per_step / uniform.per_step  # what the FLOPs say a step should cost, relative to uniform's
        measured = trained[policy].seconds_per_step / trained["uniform"].seconds_per_step
        policies[policy] = {
            **ledger.flop_ratios(cost, reached, uniform, steps, amortise_over),
            **ledger.time_ratios(
                one_off_seconds if POLICIES[policy].reference_loss else 0.0,
                ledger.seconds_at(trained[policy].clock, reached),
                trained["uniform"].seconds,
                amortise_over,
            ),
            "costs": cost.as_dict(),
            "learner_forward_flops_per_example": trained[policy].forward_flops_per_example,
            "step_time_over_ledger": measured / predicted,
        }
    systems = {
        "ingest_rows_per_s": score.ingest_rows_per_s,
        "scoring_over_bare_forward": (
            score.scoring_rows_per_s / score.bare_forward_rows_per_s
            if score.scoring_rows_per_s and score.bare_forward_rows_per_s
            else None
        ),
    }
    return {
        "amortise_over": amortise_over,
        "uniform_flops": uniform.at_step(steps),
        "uniform_seconds": trained["uniform"].seconds,
        "one_off_seconds": one_off_seconds,
        "policies": policies,
        "systems": systems,
    }
