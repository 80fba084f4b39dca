"""`winnow bench --study budgets`: every arm trained at each budget of bench.budgets (multiples of train.steps), its
cosine schedule ending at that budget (the fully decayed baseline of RS2 and "No Train No Gain"), over seeds.


The comparison, fixed before any run is read, is studies/budget_rule.py's; this module trains the runs it
reads (each seed's reference and scoring shared by its budgets), writes the study's JSON and page after every seed,
and reads a committed study again from its runs' metrics (`rebuild`, `--report-only`).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Callable

from winnow.config import Params
from winnow.errors import ConfigError, MissingInput
from winnow.files import read_csv, write_json
from winnow.method.ledger import SHARED, Costs
from winnow.reports.budgets import table as budgets_table
from winnow.reports.budgets import write_report
from winnow.stages.chain import arm_order
from winnow.stages.inputs import num_classes, read_json
from winnow.stages.paths import Paths
from winnow.stages.reference import reference_stage
from winnow.stages.score import score_stage
from winnow.stages.summary import summary_stage
from winnow.stages.train import check_arms, train_stage
from winnow.studies.budget_rule import EARLY, summarise
from winnow.studies.runs import run_params, share_reference

log = logging.getLogger("winnow")


def budget_params(
    params: Params,
    seed: int,
    budget: float,
    folder: str = "budgets",
    model: str | None = None,
    steps: int | None = None,
    make_data: bool = True,
) -> Params:
    """One (seed, budget) run: train.steps (or `steps`) scaled, its schedule ending there; the warm-up capped at
    half the run and the evaluations kept at least 5 a run. `folder` and `model`: a study that runs the budgets
    for another learner (--study ladder) under a folder of its own. `make_data` False: a seed's own data
    (bench.data_seeds) is named, not made (its results read again: rebuild)."""
    cfg = params.train
    steps = max(1, round((steps or cfg.steps) * budget))
    train = cfg.model_copy(
        update={
            "policies": params.bench.policies,
            "model": model or cfg.model,
            "steps": steps,
            "warmup_steps": min(cfg.warmup_steps, steps // 2),
            "eval_every": max(1, min(cfg.eval_every, steps // 5)),
            "checkpoint_every": max(1, min(cfg.checkpoint_every, steps)),
        }
    )
    run = run_params(params, f"{folder}/seed-{seed}/budget-{budget:g}", seed, make_data)
    return run.model_copy(update={"train": train})


def _arm(run: Params, summary: dict, policy: str, metric: str) -> dict:
    """What one run of one arm gives the readings: its validation curve, its cost per step and its test metric."""
    curve = read_csv(Paths.of(run).curve(policy))
    costs = Costs.from_dict(summary["ledger"]["policies"][policy]["costs"])
    steps = [float(r["step"]) for r in curve]
    record = read_json(Paths.of(run).train_record(policy), f"run `winnow train --policy {policy}`")
    if record.get("steps") not in (None, run.train.steps):  # read with other params than it ran with: wrong FLOPs
        raise ConfigError(
            f"{Paths.of(run).train_record(policy)}: this run trained {record['steps']} steps, these params give it "
            f"{run.train.steps}: pass the train.steps and bench.budgets the study ran with"
        )
    arm = {
        "dropped_share": sum((record.get("filter_dropped") or {}).values()) / record["pool_size"],
        "steps": steps,
        "values": [float(r[metric]) for r in curve],
        "flops_at": [costs.at_step(s) for s in steps],
        "flops": costs.at_step(run.train.steps),
        "final_val": float(curve[-1][metric]),
        "final_test": summary["policies"][policy]["final_metric"],
        "kept_class_share": record.get("kept_class_share"),
        # the run's training steps at its median step time: what a pause or a stall cannot move (its wall seconds can)
        "step_seconds": record["step_seconds_median"] * record["steps"] if record.get("step_seconds_median") else None,
    }
    if record.get("best_val_step"):  # the curated set alone, early-stopped on val: the same run read at its best
        best = record["best_val_step"]
        arm[EARLY] = {
            **arm,
            "steps": [s for s in steps if s <= best],
            "values": arm["values"][: sum(s <= best for s in steps)],
            "flops_at": arm["flops_at"][: sum(s <= best for s in steps)],
            "flops": costs.at_step(best),  # stopped there: what it paid (hindsight, generous to the baseline)
            "final_val": record["best_val"],
            "final_test": record["final_metric_at_best_val"],
        }
    return arm


def shared_by(costs: Costs, users: int) -> Costs:
    """A replay's costs with its recording's selection shared by `users` learners (the same costs for any other arm)."""
    if users == 1:
        return costs
    return dataclasses.replace(
        costs,
        replayed_one_off=costs.replayed_one_off / users,
        replayed_selection_per_step=costs.replayed_selection_per_step / users,
    )


def _charged_as_shared(arm: dict, costs: Costs, users: int, steps: int) -> dict:
    """A replay's arm read again with its recording's selection shared by `users` learners: the same run, its FLOPs
    recharged (nothing else moves)."""
    shared = shared_by(costs, users)
    return {**arm, "flops_at": [shared.at_step(s) for s in arm["steps"]], "flops": shared.at_step(steps)}


def replay_shared(n: int) -> str:
    """The replay arm read with its recording's selection paid once for n learners (method/ledger.SHARED)."""
    return f"replay_shared_{n}"


def train_seed(
    params: Params,
    seed: int,
    folder: str = "budgets",
    model: str | None = None,
    steps: int | None = None,
    base: Params | None = None,
    replay_of: Callable[[float], str] | None = None,
) -> tuple[Params, dict]:
    """Every arm of bench.policies at every budget for one seed: the reference trained and the pool scored once (in
    `base`'s run, or here), shared by every budget's run. `replay_of(budget)`: the training sequence a `replay` arm
    trains on at that budget (another learner's recording). Returns the base run and budget -> policy -> arm, with
    the replay read again with its recording shared by each N of method/ledger.SHARED."""
    base = base or budget_params(params, seed, params.bench.budgets[0], folder, model, steps)
    check_arms(base)  # an arm that cannot run on this pool (balanced without labels...) named before the reference trains
    reference_stage(base)  # paid once per seed, charged in full to every budget's run
    score_stage(base)
    by_budget = {}
    for budget in params.bench.budgets:
        run = budget_params(params, seed, budget, folder, model, steps)
        if replay_of is not None:
            policies = (*run.train.policies, "replay")
            run = run.model_copy(
                # charged at N = 1 here; the N > 1 readings divide the recording's selection again (shared_by)
                update={
                    "train": run.train.model_copy(update={"policies": policies, "replay": replay_of(budget), "replay_users": 1})
                }
            )
        if Paths.of(run).artifacts != Paths.of(base).artifacts:
            share_reference(base, run)
        for policy in arm_order(run):
            log.info(
                "bench %s %s: seed %d, %s, budget %gx (%d steps), %s",
                params.objective,
                folder,
                seed,
                run.train.model,
                budget,
                run.train.steps,
                policy,
            )
            train_stage(run, policy)
        by_budget[budget] = read_run(run, summary_stage(run, write_report=False))
    return base, by_budget


def read_run(run: Params, summary: dict) -> dict:
    """One (seed, budget) run's arms, read from its summary, curves and train records (its metrics, and its dataset's
    manifest where it is here: nothing is trained, no checkpoint read), with its evaluation window, metric and model
    sizes."""
    metric = summary["curve_metric"].split("_", 1)[1]
    arms = {p: _arm(run, summary, p, metric) for p in run.train.policies}
    if EARLY in arms.get("curated_only", {}):
        arms[EARLY] = arms["curated_only"].pop(EARLY)
    if "replay" in arms:
        costs = Costs.from_dict(summary["ledger"]["policies"]["replay"]["costs"])
        for n in SHARED[1:]:
            arms[replay_shared(n)] = _charged_as_shared(arms["replay"], costs, n, run.train.steps)
    ledger = summary["ledger"]["policies"]
    selecting = ledger.get("learnability") or next(iter(ledger.values()))
    costs = Costs.from_dict(selecting["costs"])
    sizes = {
        "learner_forward_flops": selecting["learner_forward_flops_per_example"],
        "scorer_forward_flops": summary["reference"]["forward_flops_per_example"],
        # the ledger's measured lines per step: the learner's training step, and what selection adds to it
        "learner_step_flops": costs.learner_training_per_step,
        "selection_step_flops": costs.per_step - costs.learner_training_per_step,
        "num_classes": _classes(run),
        "image_size": run.data.image_size,
    }
    return {**arms, "_window": summary["target_window"], "_metric": metric, "_sizes": sizes}


def _classes(run: Params) -> int | None:
    """The dataset's classes from its manifest; None where its data is not here (a study rebuilt from committed
    metrics: only the ladder's projection reads the count, and the ladder is never rebuilt)."""
    return num_classes(run) if (Path(run.data.root) / "manifest.json").exists() else None


def rebuild(params: Params) -> dict:
    """`winnow bench --study budgets --report-only`: the study's JSON and page written again by this code from the
    runs' committed metrics (each seed whose every budget has its summary; nothing is trained): after a change to
    how runs are read or summarised, and on a clone that holds the metrics but not the checkpoints. The params must
    be the study's own (its --set flags): a committed result that says otherwise, or holds seeds whose metrics are
    not here, is refused, naming what differs, never overwritten with another study's reading."""
    written = Paths.of(params).study_json("budgets")
    committed = read_json(written, "") if written.exists() else None
    if committed is not None:
        _same_study(params, committed, written)
    runs, missing = {}, None
    for seed in range(params.seed, params.seed + params.bench.seeds):
        by_budget = {}
        for budget in params.bench.budgets:
            run = budget_params(params, seed, budget, make_data=False)
            summary = Paths.of(run).summary_record
            if not summary.exists():
                missing = missing or summary
                break
            by_budget[budget] = read_run(run, read_json(summary, ""))
        else:
            runs[seed] = by_budget
    if not runs:
        raise MissingInput(
            f"no seed of the budgets study has every budget's summary ({missing} is missing): run "
            "`winnow bench --study budgets` with these --set flags first"
        )
    lost = sorted(set(committed["seeds"]) - set(runs)) if committed else []
    if lost:
        raise MissingInput(
            f"{written} holds seeds {lost}, whose runs' metrics are not all here ({missing} is missing): "
            "not rewritten with fewer seeds"
        )
    return _write(params, runs)


def _same_study(params: Params, committed: dict, written) -> None:
    """Refuse to read a study's runs with params other than its own (another largest budget moves uniform's target;
    other steps, the FLOPs; fewer seeds or arms, the verdict), naming each --set to pass."""
    asked = {
        "bench.budgets": list(params.bench.budgets),
        "train.steps": params.train.steps,
        "bench.data_seeds": params.bench.data_seeds,
        "bench.seeds": params.bench.seeds,
        "bench.policies": sorted(params.bench.policies),
    }
    ran = {
        "bench.budgets": committed["budgets"],
        "train.steps": committed["base_steps"],
        "bench.data_seeds": committed.get("data_seeds", False),
        "bench.seeds": committed.get("seeds_asked", len(committed["seeds"])),
        "bench.policies": sorted(p for p in committed["final_val"] if p != EARLY and not p.startswith("replay")),
    }
    differ = [f"--set {k}={_flag(ran[k])}" for k in asked if asked[k] != ran[k]]
    if differ:
        raise ConfigError(f"{written} was run with other params than these: pass {' '.join(differ)} (or move it aside)")


def _flag(value) -> str:
    if isinstance(value, list):
        return "[" + ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value) + "]"
    return str(value).lower() if isinstance(value, bool) else str(value)


def arms_of(params: Params, replays: bool = False) -> tuple[str, ...]:
    """The arms a budgets run reads: bench.policies, curated_only early-stopped beside curated_only, and a replay
    read at each N of method/ledger.SHARED."""
    early = (EARLY,) if "curated_only" in params.bench.policies else ()
    replay = ("replay", *(replay_shared(n) for n in SHARED[1:])) if replays else ()
    return (*params.bench.policies, *early, *replay)


def run(params: Params) -> dict:
    """Every seed in turn; after each, the summary over the seeds so far is written (JSON and page, which say how
    many of the seeds asked are in), so a study of many hours shows its progress and a kill loses no summary."""
    seeds = list(range(params.seed, params.seed + params.bench.seeds))
    runs: dict[int, dict] = {}  # seed -> budget -> policy -> arm
    for seed in seeds:
        runs[seed] = train_seed(params, seed)[1]
        result = _write(params, runs)
    return result


def _write(params: Params, runs: dict) -> dict:
    """The study's result over the seeds in `runs`: its JSON and its page."""
    metric = next(iter(runs.values()))[params.bench.budgets[0]]["_metric"]
    result = summarise(runs, params.bench.budgets, arms_of(params))
    result.update(
        study="budgets",
        objective=params.objective,
        data=params.data.root,
        learner=params.train.model,
        reference=params.reference.model,
        curve_metric=f"val_{metric}",
        base_steps=params.train.steps,
        seeds_asked=params.bench.seeds,  # the run's bench.seeds: fewer in `seeds` while it is under way
        data_seeds=params.bench.data_seeds,  # each seed its own data (its own pool, or its own curated and val draw)
    )
    paths = Paths.of(params)
    write_json(result, paths.study_json("budgets"))
    report(result, paths)
    return result


def table(result: dict) -> str:
    return budgets_table(result)


def report(result: dict, paths: Paths) -> None:
    write_report(result, paths)
