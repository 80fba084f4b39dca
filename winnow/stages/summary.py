"""The summary stage: the uniform target, each policy's steps to reach it, the ledger, the report."""

from __future__ import annotations

import json
from pathlib import Path

from winnow.config import Params
from winnow.datasets.contract import value_counts
from winnow.datasets.synth import PATHOLOGIES
from winnow.files import read_csv, write_json
from winnow.method import ledger, stopping
from winnow.method.objectives import OBJECTIVES
from winnow.method.policies import BASELINES, POLICIES
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
    summary = summarize(
        curves, trained, evaluated, pool_mix, params.train.steps, objective.metric, objective.noise, params.train.target_window
    )
    reference = ReferenceRecord.read(paths.reference_record, "run `winnow reference` first")
    score = ScoreRecord.read(paths.score_record, "run `winnow score` first")
    summary["reference"] = reference.as_dict()
    summary["ledger"] = run_ledger(summary, trained, reference, score, params.bench.amortise_over)
    for policy, row in summary["ledger"]["policies"].items():
        summary["policies"][policy].update({k: row[k] for k in ledger.HEADLINE})
    summary["verdict"] = verdict(summary)
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
            "flop_ratio_vs_best_baseline": summary["verdict"]["against_best"][policy]["flop_ratio"],
        }
        write_json(figures, folder / f"{policy}.json")
    for stale in set(folder.glob("*.json")) - {folder / f"{p}.json" for p in summary["policies"]}:
        stale.unlink()  # a policy no longer run


def reach(curve: list[dict], goal: float, metric: str, window: int) -> stopping.Crossing:
    """Where a run's curve, smoothed over `window` evaluations, reaches `goal` for good (method/stopping.py)."""
    return stopping.crossing([int(r["step"]) for r in curve], [float(r[metric]) for r in curve], goal, window)


def uniform_reach(curve: list[dict], metric: str, window: int) -> tuple[float, float | None]:
    """A uniform run's target (the mean of its last `window` evaluations) and the step where it reaches it."""
    goal = stopping.target([float(r[metric]) for r in curve], window)
    return goal, reach(curve, goal, metric, window).step


def summarize(
    curves: dict[str, list[dict]],
    trained: dict[str, TrainRecord],
    evaluated: dict[str, dict],
    pool_mix: dict[str, float],
    uniform_steps: int,
    metric: str = "accuracy",
    noise: str = "noisy_label",
    window: int = 3,
) -> dict:
    """`metric` is the eval-log column the target is set on; `noise` the pathology whose selected share is reported.
    One stopping rule for every arm (method/stopping.py): the target is the mean of uniform's last `window`
    evaluations; each arm, uniform included, is read where its smoothed curve reaches it for good."""
    goal, uniform_reached = uniform_reach(curves["uniform"], metric, window)
    policies = {}
    for policy, curve in curves.items():
        reached = reach(curve, goal, metric, window).step
        mix = trained[policy].selected_mix
        policies[policy] = {
            "final_metric": trained[policy].final_metric,  # the test set, read once at the end
            "best_metric": max(row[metric] for row in curve),
            "steps_to_target": reached,
            "step_ratio": reached / uniform_reached if reached is not None else None,
            f"{noise}_fraction_selected": mix.get(noise, 0.0) if pool_mix else None,
            "selected_mix": mix,
            "probe_accuracy": {  # per transfer task, when evaluated
                k.removesuffix("_probe_accuracy"): v
                for k, v in evaluated.get(policy, {}).items()
                if k.endswith("_probe_accuracy")
            },
            "train_seconds": trained[policy].seconds,
            **_alarm(trained[policy]),
        }
    split = trained["uniform"].curve_split.removeprefix("eval/")
    return {
        "metric": f"test_{metric}",  # the final metric, at the full budget
        "curve_metric": f"{split}_{metric}",  # what the target and every crossing read
        "target": goal,
        "target_window": window,
        "uniform_steps": uniform_steps,
        "uniform_steps_to_target": uniform_reached,
        "noise": noise,
        f"pool_{noise}_fraction": pool_mix.get(noise, 0.0) if pool_mix else None,
        "pool_mix": pool_mix,
        "policies": policies,
    }


def _data_share(trained: TrainRecord) -> dict:
    """The share of the median step spent waiting for data (drawing, decoding, the copy to the device), and what the
    evaluations cost beside the training seconds (the curve's, and the one read of the test set)."""
    out = {}
    if trained.data_seconds_median is not None and trained.step_seconds_median:
        out["data_share_of_step"] = trained.data_seconds_median / trained.step_seconds_median
    if trained.images_per_step is not None:  # what the share waits on: a selecting step asks 1/keep of uniform's
        out["images_per_step"] = trained.images_per_step
    if trained.eval_seconds is not None:
        out.update(eval_seconds=trained.eval_seconds, test_seconds=trained.test_seconds, evaluations=trained.evaluations)
    return out


def _alarm(trained: TrainRecord) -> dict:
    """The plateau alarm's figures of a run that has them (per tenth of the run), for the report."""
    return {k: getattr(trained, k) for k in ("negative_learnability", "weights_ess") if getattr(trained, k) is not None}


def seconds_at(trained: TrainRecord, step: float | None) -> float | None:
    """Training seconds to `step`: the median step's seconds (a fixed window after the warm-up) times the steps, so
    one slow stretch of a run does not decide a ratio; the run's clock where no median was measured."""
    if step is None:
        return None
    if trained.step_seconds_median is not None and trained.selecting_steps is not None:  # an annealed schedule
        selecting = min(step, trained.selecting_steps)
        return trained.step_seconds_median * selecting + (trained.annealed_step_seconds_median or 0.0) * (step - selecting)
    if trained.step_seconds_median is not None:
        return trained.step_seconds_median * step
    return stopping.at(trained.clock, step)


def _step_seconds(trained: TrainRecord) -> float:
    return trained.step_seconds_median if trained.step_seconds_median is not None else trained.seconds_per_step


def _one_off_seconds(policy: str, trained: TrainRecord, reference_seconds: float) -> float:
    """What an arm paid once before training: the reference and the pool's scoring when it reads them; a baseline
    its filter (its FLOPs, hashing and no model, are not counted)."""
    return (reference_seconds if POLICIES[policy].reference_loss else 0.0) + (trained.prepare_seconds or 0.0)


def verdict(summary: dict) -> dict:
    """The best baseline (the arm that selects nothing with the fewest FLOPs to the target; ties by steps), and
    each arm's steps, FLOPs and seconds to the target over that baseline's: the comparison a user cares about."""
    rows = summary["policies"]
    reached = [p for p in rows if p in BASELINES and rows[p]["flops_to_target"] is not None]
    best = min(reached, key=lambda p: (rows[p]["flops_to_target"], rows[p]["steps_to_target"]))  # uniform always reaches it
    ratios = {}
    costs = {p: ledger.Costs.from_dict(c["costs"]) for p, c in summary.get("ledger", {}).get("policies", {}).items()}
    for policy, row in rows.items():
        ratios[policy] = {
            "step_ratio": _over(row["steps_to_target"], rows[best]["steps_to_target"]),
            "flop_ratio": _over(row["flops_to_target"], rows[best]["flops_to_target"]),
            "time_ratio": _over(row["seconds_to_target"], rows[best]["seconds_to_target"]),
            "final_over_best": row["final_metric"] - rows[best]["final_metric"],
        }
        if policy in costs and best in costs:  # the reference and the pool's scoring paid once for N learners
            for n in ledger.SHARED:
                mine, theirs = row["steps_to_target"], rows[best]["steps_to_target"]
                ratios[policy][f"flop_ratio_shared_{n}"] = (
                    costs[policy].at_step(mine, n) / costs[best].at_step(theirs, n) if mine is not None else None
                )
    return {"best_baseline": best, "baselines": [p for p in rows if p in BASELINES], "against_best": ratios}


def _over(value: float | None, base: float) -> float | None:
    return value / base if value is not None else None


def run_ledger(
    summary: dict, trained: dict[str, TrainRecord], reference: ReferenceRecord, score: ScoreRecord, amortise_over: int
) -> dict:
    """The ledger of one run, from what the stages measured: per policy its cost lines, FLOPs and seconds
    to the target and their ratios to uniform's; and the systems figures, each a ratio measured in this run."""
    pool_size = score.num_examples - score.unscorable
    spend = ledger.ReferenceSpend(
        reference.train_step_flops, reference.score_forward_flops_per_example, reference.steps, pool_size
    )
    costs = {}
    for policy, info in trained.items():
        costs[policy] = ledger.policy_costs(
            policy,
            spend,
            learner_step=info.learner_step_flops,
            actor_scoring=info.actor_scoring_flops_per_step or 0.0,
            actor_step=info.actor_step_flops or 0.0,
            reference_logits=info.reference_logits_flops_per_step or 0.0,
            selecting_steps=info.selecting_steps,
            reference_refresh=info.reference_refresh_flops_per_step or 0.0,
            replayed=(info.replayed_one_off_flops, info.replayed_selection_flops_per_step, info.replay_users)
            if info.replay_of
            else None,
        )
    uniform, steps = costs["uniform"], summary["uniform_steps_to_target"]
    uniform_seconds = seconds_at(trained["uniform"], steps)
    one_off_seconds = reference.seconds + score.seconds
    policies = {}
    for policy, cost in costs.items():
        reached = summary["policies"][policy]["steps_to_target"]
        predicted = cost.per_step / uniform.per_step  # what the FLOPs say a step should cost, relative to uniform's
        measured = _step_seconds(trained[policy]) / _step_seconds(trained["uniform"])
        policies[policy] = {
            **ledger.flop_ratios(cost, reached, uniform, steps, amortise_over),
            **ledger.time_ratios(
                _one_off_seconds(policy, trained[policy], one_off_seconds),
                seconds_at(trained[policy], reached),
                uniform_seconds,
                amortise_over,
            ),
            "costs": cost.as_dict(),
            "learner_forward_flops_per_example": trained[policy].forward_flops_per_example,
            "step_time_over_ledger": measured / predicted,
            **_data_share(trained[policy]),
        }
    systems = {
        "ingest_rows_per_s": score.ingest_rows_per_s,
        "scoring_over_bare_forward": (
            score.scoring_rows_per_s / score.bare_forward_rows_per_s
            if score.scoring_rows_per_s and score.bare_forward_rows_per_s
            else None
        ),
        **(
            {  # the share of scoring's seconds the forward waited for decoding (before decoding overlapped: all of it)
                "scoring_bound": score.bound,
                "scoring_wait_share": (score.wait_seconds if score.wait_seconds is not None else score.decode_seconds)
                / score.seconds,
            }
            if score.bound and score.seconds
            else {}
        ),
    }
    return {
        "amortise_over": amortise_over,
        "uniform_flops": uniform.at_step(steps),  # to its own crossing
        "uniform_seconds": uniform_seconds,
        "one_off_seconds": one_off_seconds,
        "scoring_reused": score.reused,  # the pool's scoring seconds are those measured when the scorer was first run
        "policies": policies,
        "systems": systems,
    }
