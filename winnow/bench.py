"""`winnow bench`: the policies side by side over seeds, the proxy study, and the report.

Every ratio is measured within one seed's run (same data, same uniform baseline), then
its mean and spread over seeds are reported. Each seed has its own artifacts and score
store under artifacts/bench/<objective>/; the data is shared and never regenerated.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import statistics
from pathlib import Path

from winnow import pipeline, report
from winnow.config import Params
from winnow.objectives import OBJECTIVES
from winnow.training import write_csv

log = logging.getLogger("winnow")
RATIOS = ("step_ratio", "flop_ratio_full", "flop_ratio_amortised")


def _run_params(params: Params, name: str, seed: int, **changes) -> Params:
    root = f"{params.objective}/{name}"
    train = dataclasses.replace(params.train, policies=params.bench.policies)
    return dataclasses.replace(params, seed=seed, artifacts=f"{params.artifacts}/bench/{root}", metrics=f"{params.metrics}/bench/{root}",
                               train=train, **changes)


def run_seed(params: Params) -> dict:
    """reference -> score -> train (bench policies) -> summary, for one seed. Resumes what exists."""
    pipeline.reference_stage(params)
    pipeline.score_stage(params)
    for policy in params.train.policies:
        pipeline.train_stage(params, policy)
    return pipeline.summary_stage(params, write_report=False)


def run_proxy(params: Params, baseline: Params, model: str) -> dict:
    """Learnability with a cheaper reference, against the uniform run of `baseline` (not retrained)."""
    proxy = dataclasses.replace(_run_params(params, f"proxy-{model}", baseline.seed, reference=dataclasses.replace(params.reference, model=model)),
                                train=dataclasses.replace(params.train, policies=("uniform", "learnability")))
    src, dst = pipeline.Paths.of(baseline).metrics, pipeline.Paths.of(proxy).metrics
    for path in ("curves/uniform.csv", "train/uniform.json"):
        (dst / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src / path, dst / path)
    pipeline.reference_stage(proxy)
    pipeline.score_stage(proxy)
    pipeline.train_stage(proxy, "learnability")
    summary = pipeline.summary_stage(proxy, write_report=False)
    learner_forward = summary["ledger"]["policies"]["learnability"]["costs"]["learner_training_per_step"] / (3 * params.train.batch_size)
    row = summary["policies"]["learnability"]
    return {"reference": model, "reference_flops_over_learner": summary["reference"]["forward_flops_per_example"] / learner_forward,
            "reference_test_metric": summary["reference"]["test_accuracy"], **{k: row[k] for k in ("steps_to_target", *RATIOS)}}


def spread(values: list) -> dict:
    """Mean and sample standard deviation over the seeds that reached the target."""
    reached = [v for v in values if v is not None]
    return {"mean": statistics.mean(reached) if reached else None, "std": statistics.stdev(reached) if len(reached) > 1 else 0.0 if reached else None,
            "reached": len(reached), "runs": len(values), "values": values}


def bench(params: Params) -> dict:
    """Run the seeds and the proxies; write metrics/bench/<objective>.json, curves, plots and reports/report.md."""
    objective = OBJECTIVES[params.objective]
    seeds = [_run_params(params, f"seed-{params.seed + i}", params.seed + i) for i in range(params.bench.seeds)]
    summaries = []
    for i, seed_params in enumerate(seeds):
        log.info("bench %s: seed %d of %d", params.objective, i + 1, len(seeds))
        summaries.append(run_seed(seed_params))
    proxies = [run_proxy(params, seeds[0], model) for model in params.bench.proxies]
    result = {
        "objective": params.objective, "metric": summaries[0]["metric"], "noise": objective.noise, "seeds": [s.seed for s in seeds],
        "amortise_over": params.bench.amortise_over, "learner": params.train.model, "reference": params.reference.model,
        "policies": {p: {**{k: spread([s["policies"][p][k] for s in summaries]) for k in RATIOS},
                         f"{objective.noise}_fraction_selected": spread([s["policies"][p][f"{objective.noise}_fraction_selected"] for s in summaries]),
                         "final_metric": spread([s["policies"][p]["final_accuracy"] for s in summaries])}
                     for p in params.bench.policies},
        "targets": [s["target"] for s in summaries],
        f"pool_{objective.noise}_fraction": summaries[0][f"pool_{objective.noise}_fraction"],
        "ledger_seed0": {p: row["costs"] for p, row in summaries[0]["ledger"]["policies"].items()},
        "systems": {
            "scoring_over_bare_forward": spread([s["ledger"]["systems"]["scoring_over_bare_forward"] for s in summaries]),
            "ingest_rows_per_s": spread([s["ledger"]["systems"]["ingest_rows_per_s"] for s in summaries]),
            "step_time_over_ledger": {p: spread([s["ledger"]["policies"][p]["step_time_over_ledger"] for s in summaries]) for p in params.bench.policies},
        },
        "proxies": proxies,
    }
    out = Path(params.metrics) / "bench"
    pipeline.write_json(result, out / f"{params.objective}.json")
    curves = _mean_curves(seeds, summaries, objective.metric)
    for policy, rows in curves.items():
        write_csv(rows, out / params.objective / "curves" / f"{policy}.csv")
    report.write_bench_report(result, curves, objective.metric, Path("plots") / "bench" / params.objective, Path("reports") / "report.md")
    return result


def _mean_curves(seeds: list[Params], summaries: list[dict], metric: str) -> dict[str, list[dict]]:
    """Per policy, the metric at each eval step averaged over seeds, with FLOPs relative to uniform's total."""
    curves = {}
    for policy in seeds[0].train.policies:
        per_seed = [report.read_csv(pipeline.Paths.of(p).metrics / "curves" / f"{policy}.csv") for p in seeds]
        costs = [s["ledger"]["policies"][policy]["costs"] for s in summaries]
        uniform = [s["ledger"]["uniform_flops"] for s in summaries]
        rows = []
        for i, row in enumerate(per_seed[0]):
            step = int(row["step"])
            rows.append({"step": step,
                         "flops_over_uniform_full": statistics.mean((c["one_off"] + step * c["per_step"]) / u for c, u in zip(costs, uniform)),
                         metric: statistics.mean(curve[i][metric] for curve in per_seed)})
        curves[policy] = rows
    return curves

