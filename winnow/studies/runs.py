"""What every study shares: one run's params and stages per seed, a baseline or reference shared between runs,
and the mean and spread over seeds. Every ratio is measured within one seed's run (same data, same uniform
baseline); each seed has its own artifacts and score store under artifacts/<dataset>/bench/<objective>/.
"""

from __future__ import annotations

import json
import logging
import math
import re
import shutil
import statistics
from pathlib import Path

from winnow.config import Params
from winnow.datasets.contract import generated, read_manifest
from winnow.datasets.redraw import redraw_dataset
from winnow.files import write_json
from winnow.method.objectives import OBJECTIVES
from winnow.reports.studies import write_study_report
from winnow.stages.chain import run_chain
from winnow.stages.data import data_stage
from winnow.stages.paths import Paths

log = logging.getLogger("winnow")

RATIOS = ("step_ratio", "flop_ratio_full", "flop_ratio_amortised", "time_ratio_full", "time_ratio_amortised")


def run_params(params: Params, name: str, seed: int, make_data: bool = True, **changes) -> Params:
    """One bench run's params: its own artifacts and metrics under the dataset's bench folder (under bench.label's
    folder for a labelled study run). `make_data` False: a seed's own data is named, not made (reading results)."""
    label = f"{params.bench.label}/" if params.bench.label else ""
    root = f"{params.data.name}/bench/{params.objective}/{label}{name}"
    train = params.train.model_copy(update={"policies": params.bench.policies})
    update = {"seed": seed, "artifacts": f"{params.artifacts}/{root}", "metrics": f"{params.metrics}/{root}", "train": train}
    run = params.model_copy(update={**update, **changes})
    return seed_data(run, seed, make_data) if params.bench.data_seeds else run


def seed_data(run: Params, seed: int, make: bool = True) -> Params:
    """`run` on a seed's own data (bench.data_seeds), made here when it is missing: the built-in pool generated from
    data.seed = seed, or a user's dataset with its curated and val rows drawn again by the seed (datasets/redraw.py),
    under <data.name>-data-<seed> beside the source. Idempotent: a seed's data already made is read as it is. `make`
    False: only named (its results read, its data left unmade)."""
    source = run.data
    data = source.model_copy(update={"seed": seed, "name": f"{source.name}-data-{seed}"})
    seeded = run.model_copy(update={"data": data})
    if not make:
        return seeded
    if not (Path(source.root) / "manifest.json").exists() or generated(read_manifest(source.root)):
        data_stage(seeded)  # generated from data.seed = seed (and its manifest checked on every later call)
    else:
        redraw_dataset(source.root, data.root, seed)
    return seeded


def run_seed(params: Params, transfer: bool = False) -> dict:
    """reference -> score -> train (bench policies) [-> evaluate, with `transfer`] -> summary, for one seed.
    Resumes what exists; the data is shared by every seed and never regenerated here."""
    skip = ("data", "curate") if transfer else ("data", "curate", "evaluate")
    return run_chain(params, skip=skip, write_report=False)


def copy_uniform(baseline: Params, params: Params) -> None:
    """Give a run the uniform baseline of another run on the same learner and seed (not retrained)."""
    copy_runs(baseline, params, ("uniform",))


def copy_runs(source: Params, run: Params, policies: tuple[str, ...]) -> None:
    """Give a run the trained arms of another run on the same data and seed (not retrained): curves and records."""
    src, dst = Paths.of(source), Paths.of(run)
    for policy in policies:
        for a, b in ((src.curve(policy), dst.curve(policy)), (src.train_record(policy), dst.train_record(policy))):
            b.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(a, b)


def share_reference(source: Params, run: Params) -> None:
    """Give a run the trained reference and the scored store of another run on the same data and seed
    (not retrained, not rescored): its checkpoint, scorer, store and their measured figures."""
    src, dst = Paths.of(source), Paths.of(run)
    scorer_id = json.loads(src.scorer.read_text())["scorer_id"]
    files = [
        (src.reference, dst.reference),
        (src.scorer, dst.scorer),
        (src.dataset_owner, dst.dataset_owner),
        (src.store, dst.store),
        (src.scoring_record(scorer_id), dst.scoring_record(scorer_id)),
        (src.reference_record, dst.reference_record),
        (src.score_record, dst.score_record),
    ]
    for a, b in files:
        b.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(a, b)


def study_row(summary: dict, policy: str = "learnability") -> dict:
    """One run of a study: the sizes involved and the ratios learnability measured against uniform."""
    learner_forward = summary["ledger"]["policies"][policy]["learner_forward_flops_per_example"]
    row = summary["policies"][policy]
    return {
        "learner_forward_flops": learner_forward,
        "scorer_flops_over_learner": summary["reference"]["forward_flops_per_example"] / learner_forward,
        "reference_test_metric": summary["reference"]["final_metric"],
        "target": summary["target"],
        "steps_to_target": row["steps_to_target"],
        "final_metric": row["final_metric"],
        **{k: row[k] for k in RATIOS},
    }


VS_BEST = ("step_ratio", "flop_ratio", "time_ratio", "final_over_best")  # an arm against the seed's best baseline


def against_best(summary: dict, policy: str = "learnability") -> dict:
    """One run's `policy` against the seed's best baseline: its ratios (<ratio>_vs_best) and final_over_best."""
    against = summary["verdict"]["against_best"][policy]
    return {f"{k}_vs_best" if k != "final_over_best" else k: against[k] for k in VS_BEST}


def aggregate(params: Params, study: str, key: str, names: tuple[str, ...], runs: list[dict], extra: dict | None = None) -> dict:
    """Aggregate a study's runs per model (or arm) over seeds; write its JSON, plot and report."""
    rows = []
    noise = f"{OBJECTIVES[params.objective].noise}_fraction_selected"
    for name in names:
        mine = [r for r in runs if r[key] == name]
        rows.append(
            {
                key: name,
                **{k: mine[0][k] for k in ("selection", "keep_fraction", "score_resolution") if k in mine[0]},
                "learner_forward_flops": mine[0]["learner_forward_flops"],
                "scorer_flops_over_learner": mine[0]["scorer_flops_over_learner"],
                "reference_test_metric": spread([r["reference_test_metric"] for r in mine]),
                "final_metric": spread([r["final_metric"] for r in mine]),
                **({noise: spread([r[noise] for r in mine])} if noise in mine[0] else {}),
                **{k: spread([r[k] for r in mine], log=True) for k in RATIOS},
            }
        )
    result = {
        "study": study,
        "objective": params.objective,
        "learner": params.train.model if study in ("scorers", "jest") else None,
        "scorer": params.reference.model if study == "learners" else None,
        "actor_trains_on": params.train.actor_trains_on,
        "amortise_over": params.bench.amortise_over,
        "seeds": list(range(params.seed, params.seed + params.bench.seeds)),
        "steps": params.train.steps,
        "rows": rows,
        "runs": runs,
        **(extra or {}),
    }
    return write_study(params, result)


def write_study(params: Params, result: dict) -> dict:
    """A study's numbers (<objective>-<study>.json under Paths.bench) and its report."""
    paths = Paths.of(params)
    write_json(result, paths.study_json(result["study"]))
    write_study_report(result, paths)
    return result


def mean_over_seeds(curves: dict[str, dict[int, list[dict]]], metric: str) -> dict[str, list[dict]]:
    """Per arm, the target metric at each evaluation step, mean over seeds (for the plot)."""
    return {
        arm: [
            {"step": int(rows[0]["step"]), metric: statistics.mean(float(r[metric]) for r in rows)}
            for rows in zip(*by_seed.values())
        ]
        for arm, by_seed in curves.items()
    }


# Student's t at 97.5% for 1..30 degrees of freedom: the 95% interval of a mean over a few seeds.
T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
        2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)  # fmt: skip


def spread(values: list, log: bool = False) -> dict:
    """Mean, sample standard deviation and 95% interval (Student's t) over the seeds that reached the target,
    and how many of how many did; every seed's value is kept.

    With `log` (every ratio of positive quantities: steps, FLOPs, seconds, rates; `is_ratio`), the mean and the
    interval are taken on the log scale and mapped back: the geometric mean, and an interval that is never below 0
    and treats 0.5x and 2x alike (an arithmetic t-interval over a few wide ratios can reach below 0). `std` stays
    the values' own, `log_std` is the logs'."""
    reached = [v for v in values if v is not None]
    if log and any(v <= 0 for v in reached):
        raise ValueError(f"a ratio must be positive to be averaged on a log scale, got {reached}")
    xs = [math.log(v) for v in reached] if log else reached
    back = math.exp if log else (lambda x: x)
    centre = statistics.mean(xs) if xs else None
    spread_xs = statistics.stdev(xs) if len(xs) > 1 else 0.0 if xs else None
    half = T975[min(len(xs) - 1, len(T975)) - 1] * spread_xs / len(xs) ** 0.5 if len(xs) > 1 else None
    out = {
        "mean": back(centre) if centre is not None else None,
        "std": statistics.stdev(reached) if len(reached) > 1 else 0.0 if reached else None,
        "low": back(centre - half) if half is not None else None,
        "high": back(centre + half) if half is not None else None,
        "reached": len(reached),
        "runs": len(values),
        "values": values,
    }
    return {**out, "scale": "log", "log_std": spread_xs} if log else out


# The keys whose values are ratios of positive quantities: summarised by spread(..., log=True).
RATIO_KEY = re.compile(r"^((step|flop|time)_ratio\w*|step_time_over_ledger|scoring_over_bare_forward)$")


def is_ratio(*keys: str) -> bool:
    """Whether a summary under these keys (a JSON path, outermost first) is a ratio: the last key names one, or it
    is one arm's entry under a key that does (step_time_over_ledger: {arm: ...})."""
    return bool(keys) and (bool(RATIO_KEY.match(keys[-1])) or len(keys) > 1 and bool(RATIO_KEY.match(keys[-2])))


def elsewhere(params: Params) -> Params:
    """A bench run's params with its plots and reports beside its artifacts (the committed ones are the defaults')."""
    return params.model_copy(update={"plots": f"{params.artifacts}/plots", "reports": f"{params.artifacts}/reports"})
