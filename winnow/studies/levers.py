"""--study levers: learnability with each lever of method/schedules.py alone and together (bench.levers), against the
best baseline of each seed: which remedy for a weak reference pays, on this data.

Per seed, one reference and one run of each baseline (the baselines in bench.policies) are shared by every lever;
each lever is learnability trained with its train.* changes, read with the one stopping rule on the validation
split, against the baseline with the fewest FLOPs to the target in that seed. A lever whose changes set
train.policies (uniform and one selecting policy, as the train section asks) trains that policy instead
(`{easy+floor: {policies: [uniform, easy_reference], floor: 0.25}}`): the same levers on a policy with no online
actor to pay for. The baselines of every lever's run are bench.policies' own.
"""

from __future__ import annotations

import logging
from pathlib import Path

from winnow.config import Params
from winnow.errors import ConfigError
from winnow.files import read_csv
from winnow.method.objectives import OBJECTIVES
from winnow.method.policies import BASELINES, POLICIES
from winnow.reports.studies import write_study_report
from winnow.reports.tables import levers_table
from winnow.stages.paths import Paths
from winnow.stages.reference import reference_stage
from winnow.stages.score import score_stage
from winnow.stages.summary import summary_stage
from winnow.stages.train import train_stage
from winnow.studies.runs import (
    VS_BEST,
    against_best,
    copy_runs,
    mean_over_seeds,
    run_params,
    share_reference,
    spread,
    study_row,
    write_study,
)

log = logging.getLogger("winnow")

VS_UNIFORM = ("step_ratio", "flop_ratio_full", "time_ratio_full")


def lever_policy(params: Params, name: str) -> str:
    """The selecting policy lever `name` trains: learnability, or the one its train.policies names."""
    policies = params.bench.levers[name].get("policies")
    if policies is None:
        return "learnability"
    selecting = [p for p in policies if POLICIES.get(p) is None or POLICIES[p].selects]
    if len(selecting) != 1 or selecting[0] not in POLICIES:
        raise ConfigError(
            f"bench.levers.{name}: policies must name one selecting policy "
            f"({', '.join(p for p in POLICIES if p not in BASELINES)}), not {list(policies)}"
        )
    return selecting[0]


def lever_params(params: Params, seed: int, name: str, baselines: tuple[str, ...]) -> Params:
    """One lever's run: its policy with the lever's train.* changes (validated as the config is), beside copies
    of the seed's baselines."""
    run = run_params(params, f"levers/seed-{seed}/{name}", seed)
    train = params.lever_train(name).model_copy(update={"policies": (*baselines, lever_policy(params, name))})
    return run.model_copy(update={"train": train})


def run(params: Params) -> dict:
    baselines = tuple(p for p in params.bench.policies if p in BASELINES)
    levers = params.bench.levers
    for name in levers:  # every lever checked before the first run
        params.lever_train(name)
        lever_policy(params, name)
    runs, curves = [], {}
    for seed in range(params.seed, params.seed + params.bench.seeds):
        base = run_params(params, f"levers/seed-{seed}/baselines", seed)
        base = base.model_copy(update={"train": base.train.model_copy(update={"policies": baselines})})
        reference_stage(base)
        score_stage(base)
        for policy in baselines:
            log.info("bench %s levers: seed %d, baseline %s", params.objective, seed, policy)
            train_stage(base, policy)
            curves.setdefault(policy, {})[seed] = read_csv(Paths.of(base).curve(policy))
        for name, changes in levers.items():
            log.info("bench %s levers: seed %d, %s %s", params.objective, seed, name, changes or "(as configured)")
            policy = lever_policy(params, name)
            lever = lever_params(params, seed, name, baselines)
            copy_runs(base, lever, baselines)
            share_reference(base, lever)
            train_stage(lever, policy)
            summary = summary_stage(lever, write_report=False)
            best = summary["verdict"]["best_baseline"]
            alarm = summary["policies"][policy].get("negative_learnability") or [None]
            runs.append(
                {
                    "lever": name,
                    "policy": policy,
                    "seed": seed,
                    "changes": changes,
                    "best_baseline": best,
                    "best_final_metric": summary["policies"][best]["final_metric"],
                    "negative_learnability_last_tenth": alarm[-1],
                    **against_best(summary, policy),
                    **study_row(summary, policy),
                }
            )
            curves.setdefault(name, {})[seed] = read_csv(Paths.of(lever).curve(policy))
    metric = OBJECTIVES[params.objective].metric
    rows = []
    for name, changes in levers.items():
        mine = [r for r in runs if r["lever"] == name]
        rows.append(
            {
                "lever": name,
                "policy": lever_policy(params, name),
                "changes": changes,
                "final_metric": spread([r["final_metric"] for r in mine]),
                "final_over_best": spread([r["final_over_best"] for r in mine]),
                **{f"{k}_vs_best": spread([r[f"{k}_vs_best"] for r in mine], log=True) for k in VS_BEST[:3]},
                **{k: spread([r[k] for r in mine], log=True) for k in VS_UNIFORM},
                "negative_learnability_last_tenth": spread([r["negative_learnability_last_tenth"] for r in mine]),
            }
        )
    seeds = list(range(params.seed, params.seed + params.bench.seeds))
    first = [r for r in runs if r["lever"] == next(iter(levers))]  # once per seed
    result = {
        "study": "levers",
        "objective": params.objective,
        "data": params.data.root,
        "learner": params.train.model,
        "reference": params.reference.model,
        "actor": params.train.actor,
        "actor_trains_on": params.train.actor_trains_on,
        "amortise_over": params.bench.amortise_over,
        "seeds": seeds,
        "steps": params.train.steps,
        "metric": metric,
        "baselines": list(baselines),
        "best_baseline": [r["best_baseline"] for r in first],
        "best_final_metric": spread([r["best_final_metric"] for r in first]),
        "rows": rows,
        "runs": runs,
        "curves": mean_over_seeds(curves, f"{metric}"),
    }
    return write_study(params, result)


def table(result: dict) -> str:
    return levers_table(result)


def report(result: dict, paths) -> Path:
    """The study's page and plot, from its JSON (rerun nothing)."""
    return write_study_report(result, paths)
