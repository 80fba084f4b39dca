"""`winnow bench` (--study policies): bench.policies side by side over seeds, with the ledger and the verdict."""

from __future__ import annotations

import logging
import statistics
from pathlib import Path

from winnow.config import Params
from winnow.datasets.contract import read_manifest
from winnow.files import read_csv, write_csv, write_json
from winnow.method.ledger import SHARED, Costs
from winnow.method.objectives import OBJECTIVES
from winnow.reports.bench import write_bench_report
from winnow.reports.tables import bench_table
from winnow.stages.paths import Paths
from winnow.studies.runs import (
    RATIOS,
    is_ratio,
    run_params,
    run_seed,
    spread,
)

log = logging.getLogger("winnow")
# FLOPs against the best baseline with the reference and the scores paid once for N learners (method/ledger.SHARED)
SHARED_KEYS = tuple(f"flop_ratio_shared_{n}" for n in SHARED if n > 1)


def run(params: Params) -> dict:
    """Run the seeds; write <objective>.json and curves under Paths.bench, plots and the bench report."""
    objective = OBJECTIVES[params.objective]
    seeds = [run_params(params, f"seed-{params.seed + i}", params.seed + i) for i in range(params.bench.seeds)]
    manifest_tasks = read_manifest(params.data.root)["tasks"]
    tasks = sorted(t for t, task in manifest_tasks.items() if task.get("probe"))  # transfer tasks, if any
    summaries = []
    for i, seed_params in enumerate(seeds):
        log.info("bench %s: seed %d of %d", params.objective, i + 1, len(seeds))
        summaries.append(run_seed(seed_params, transfer=bool(tasks)))
    result = {
        "objective": params.objective,
        "data": params.data.root,
        "metric": summaries[0]["metric"],
        "noise": objective.noise,
        "seeds": [s.seed for s in seeds],
        "amortise_over": params.bench.amortise_over,
        "learner": params.train.model,
        "reference": params.reference.model,
        "actor": params.train.actor,
        "actor_trains_on": params.train.actor_trains_on,
        "policies": {
            p: {
                **{k: spread([s["policies"][p][k] for s in summaries], log=True) for k in RATIOS},
                f"{objective.noise}_fraction_selected": spread(
                    [s["policies"][p][f"{objective.noise}_fraction_selected"] for s in summaries]
                ),
                "final_metric": spread([s["policies"][p]["final_metric"] for s in summaries]),
                "probe_accuracy": {t: spread([s["policies"][p]["probe_accuracy"].get(t) for s in summaries]) for t in tasks},
            }
            for p in params.bench.policies
        },
        "targets": [s["target"] for s in summaries],
        "curve_metric": summaries[0].get("curve_metric", summaries[0]["metric"]),
        "target_window": summaries[0]["target_window"],
        "verdict": {  # each seed's best baseline, and every arm against it, over seeds
            "best_baseline": [s["verdict"]["best_baseline"] for s in summaries],
            "against_best": {
                p: {
                    k: spread([s["verdict"]["against_best"][p].get(k) for s in summaries], log=is_ratio(k))
                    for k in ("step_ratio", "flop_ratio", "time_ratio", "final_over_best", *SHARED_KEYS)
                }
                for p in params.bench.policies
            },
        },
        f"pool_{objective.noise}_fraction": summaries[0][f"pool_{objective.noise}_fraction"],
        "ledger_seed0": {p: row["costs"] for p, row in summaries[0]["ledger"]["policies"].items()},
        "systems": {
            "scoring_over_bare_forward": spread(
                [s["ledger"]["systems"]["scoring_over_bare_forward"] for s in summaries], log=True
            ),
            "ingest_rows_per_s": spread([s["ledger"]["systems"]["ingest_rows_per_s"] for s in summaries]),
            "step_time_over_ledger": {
                p: spread([s["ledger"]["policies"][p]["step_time_over_ledger"] for s in summaries], log=True)
                for p in params.bench.policies
            },
        },
    }
    paths = Paths.of(params)
    write_json(result, paths.study_json("policies"))
    curves = _mean_curves(seeds, summaries, objective.metric)
    for policy, rows in curves.items():
        write_csv(rows, paths.bench_curve(policy))
    write_bench_report(result, curves, objective.metric, paths)
    return result


def _mean_curves(seeds: list[Params], summaries: list[dict], metric: str) -> dict[str, list[dict]]:
    """Per policy, the metric at each eval step averaged over seeds, with FLOPs relative to uniform's total."""
    curves = {}
    for policy in seeds[0].train.policies:
        per_seed = [read_csv(Paths.of(p).curve(policy)) for p in seeds]
        costs = [s["ledger"]["policies"][policy]["costs"] for s in summaries]
        uniform = [s["ledger"]["uniform_flops"] for s in summaries]
        rows = []
        for i, row in enumerate(per_seed[0]):
            step = int(row["step"])
            rows.append(
                {
                    "step": step,
                    "flops_over_uniform_full": statistics.mean(
                        Costs.from_dict(c).at_step(step) / u for c, u in zip(costs, uniform)
                    ),
                    metric: statistics.mean(curve[i][metric] for curve in per_seed),
                }
            )
        curves[policy] = rows
    return curves


def table(result: dict) -> str:
    return bench_table(result)


def report(result: dict, paths) -> Path:
    """The bench page and its plots, from the JSON and the mean curves the run wrote (rerun nothing)."""
    curves = {p: read_csv(paths.bench_curve(p)) for p in result["policies"]}
    return write_bench_report(result, curves, OBJECTIVES[result["objective"]].metric, paths)
