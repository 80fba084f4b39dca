"""--study regimes: where selection saves compute against the best baseline, and where it does not (the map).

Each point of bench.regimes changes the data (the built-in generator's noise, curated share...) or the scorers.
Per point and seed: the baselines of bench.policies and learnability as configured, read with the one stopping
rule against the seed's best baseline, and a short uniform pilot (bench.pilot_steps). Beside each outcome are the
features a user can measure before paying for a run (studies/pilot.py), so `winnow advise` can place new data on
the map. The report checks the map against itself: each point advised from the others alone.
"""

from __future__ import annotations

import logging
from pathlib import Path

from winnow.config import Params
from winnow.datasets.contract import generated, read_manifest
from winnow.errors import ConfigError
from winnow.method.objectives import OBJECTIVES
from winnow.method.policies import BASELINES
from winnow.reports.studies import write_study_report
from winnow.reports.tables import regimes_table
from winnow.stages.data import data_stage
from winnow.studies import pilot as pilots
from winnow.studies.regime_map import leave_one_out, pays
from winnow.studies.runs import VS_BEST, against_best, run_params, run_seed, spread, write_study

log = logging.getLogger("winnow")


def points(params: Params) -> dict[str, Params]:
    """Every point's params, all checked before the first run; a point that changes the data needs the built-in
    generator (an imported dataset is what it is: make another import for another regime)."""
    made = {name: params.regime(name) for name in params.bench.regimes}
    changes_data = [name for name, point in made.items() if point.data.name != params.data.name]
    if changes_data and not generated(read_manifest(params.data.root)):
        raise ConfigError(
            f"bench.regimes.{changes_data[0]}: changes data.*, and {params.data.root} is an imported dataset (winnow "
            "generates only its own pool); set bench.regimes to points that change the scorers, and import another "
            "dataset for another noise rate or curated share (benchmarks/mnist.sh: MNIST_CURATED)"
        )
    return made


def run(params: Params) -> dict:
    baselines = tuple(p for p in params.bench.policies if p in BASELINES)
    made = points(params)
    seeds = list(range(params.seed, params.seed + params.bench.seeds))
    runs = []
    for name, point in made.items():
        if point.data.name != params.data.name:
            data_stage(point)  # this point's pool, generated once, beside the default one
        for seed in seeds:
            log.info("bench %s regimes: %s, seed %d %s", params.objective, name, seed, params.bench.regimes[name] or "")
            run = run_params(point, f"regimes/{name}/seed-{seed}", seed)
            run = run.model_copy(update={"train": run.train.model_copy(update={"policies": (*baselines, "learnability")})})
            summary = run_seed(run)
            pilot = pilots.run_pilot(run)
            best = summary["verdict"]["best_baseline"]
            runs.append(
                {
                    "point": name,
                    "seed": seed,
                    "best_baseline": best,
                    "best_final_metric": summary["policies"][best]["final_metric"],
                    "final_metric": summary["policies"]["learnability"]["final_metric"],
                    **against_best(summary),
                    **pilots.features(run, pilot),
                }
            )
    rows = []
    for name, point in made.items():
        mine = [r for r in runs if r["point"] == name]
        row = {
            "point": name,
            "changes": params.bench.regimes[name],
            "reference": point.reference.model,
            "learner": point.train.model,
            "best_baseline": [r["best_baseline"] for r in mine],
            **{k: spread([r[k] for r in mine]) for k in ("final_metric", "best_final_metric", "final_over_best")},
            **{f"{k}_vs_best": spread([r[f"{k}_vs_best"] for r in mine], log=True) for k in VS_BEST[:3]},
            **{k: spread([r[k] for r in mine]) for k in pilots.FEATURES},
        }
        rows.append({**row, "pays": pays(row)})
    result = {
        "study": "regimes",
        "objective": params.objective,
        "data": params.data.root,
        "metric": OBJECTIVES[params.objective].metric,
        "baselines": list(baselines),
        "seeds": seeds,
        "steps": params.train.steps,
        "pilot_steps": params.bench.pilot_steps,
        "rows": rows,
        "runs": runs,
    }

    result["leave_one_out"] = leave_one_out(result)
    return write_study(params, result)


def table(result: dict) -> str:
    return regimes_table(result)


def report(result: dict, paths) -> Path:
    """The map's page and plot, from its JSON (rerun nothing)."""
    return write_study_report(result, paths)
