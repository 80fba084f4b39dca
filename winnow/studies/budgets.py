"""`winnow bench --study budgets`: every arm trained at each budget of bench.budgets (multiples of train.steps), its
cosine schedule ending at that budget (the fully decayed baseline of RS2 and "No Train No Gain"), over seeds.

The comparison is fixed here, before any run is read:
- target: uniform's plateau, its final validation metric at the largest budget (its schedule decayed there): the
  very quantity every budget is read by (a target smoothed over uniform's last evaluations, against readings that
  are not, would leave uniform short of its own level in about half of the seeds);
- reading: an arm's FLOPs to the target are read across its budgets (its final validation metric at each, FLOPs of
  the whole run, the reference and the pool's scoring paid in full): the smallest budget from which every larger one
  stays at or above the target, interpolated linearly in FLOPs between budgets (stopping.crossing with k = 1 over
  budgets). An arm already there at the smallest budget is read at it: an upper bound on its FLOPs (censored);
- comparator: the baseline with the fewest FLOPs to the target over seeds (the geometric mean, of those that reach
  it in every seed): one baseline for every seed, not a per-seed minimum over near-copies of uniform;
- verdict: "yes" when every seed reaches the target, the 95% interval of the FLOPs ratio ends below 1, and the mean
  final validation metric at the largest budget is not below the comparator's; else "no". A reading a censored value
  could turn is "undecided": a "yes" where the comparator was censored in a seed, a "no" on FLOPs (not on the final
  metric) where the arm was, or where the comparator never reached the target in a seed the arm did.
Baselines: every arm of bench.policies that selects nothing, and curated_only early-stopped on val (its run read at
its best validation evaluation: the FLOPs to that step, the test metric at those weights). Each arm's kept class mix
(the classifier's) is summarised per budget beside its readings.
The same verdict is then read under the other reasonable choices (the budget reading's first crossing; interpolated
on log FLOPs (the budgets double); each budget read as the mean of its last `target_window` evaluations, uniform's
target likewise; the in-run crossing at the largest budget, sustained with k = 1..5 and first; a per-seed
comparator), and a verdict that flips among them is printed "undecided". The test split is read once per run, at its
end, and only reported.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from pathlib import Path
from typing import Callable

from winnow.config import Params
from winnow.errors import ConfigError, MissingInput
from winnow.files import read_csv, write_json
from winnow.method import stopping
from winnow.method.ledger import SHARED, Costs
from winnow.method.policies import BASELINES
from winnow.reports.budgets import table as budgets_table
from winnow.reports.budgets import write_report
from winnow.stages.chain import arm_order
from winnow.stages.inputs import num_classes, read_json
from winnow.stages.paths import Paths
from winnow.stages.reference import reference_stage
from winnow.stages.score import score_stage
from winnow.stages.summary import summary_stage
from winnow.stages.train import check_arms, train_stage
from winnow.studies.runs import run_params, share_reference, spread

log = logging.getLogger("winnow")

FIXED = "budget, sustained"  # the reading the verdict uses, decided before any run was read
LOG = "budget, sustained, log FLOPs"  # interpolated between budgets on log FLOPs, not linearly
SMOOTHED = "budget, sustained, smoothed"  # each budget read as the mean of its last target_window evaluations
K_RANGE = (1, 2, 3, 4, 5)
FOLD = 0.01  # a filter that drops less of the pool than this is uniform: folded into it, not a comparator of its own
# the learner on the curated set alone, early-stopped on val: curated_only's run read at its best val evaluation (its
# FLOPs to that step, its test metric at those weights), a baseline of its own
EARLY = "curated_only_early"
BASELINE_ARMS = (*BASELINES, EARLY)


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


def summarise(runs: dict, budgets: tuple[float, ...], policies: tuple[str, ...]) -> dict:
    """Every reading of every arm, seed by seed, and the verdicts (see the module's docstring)."""
    top = budgets[-1]
    per_seed = {}
    for seed, by_budget in runs.items():
        window = by_budget[top]["_window"]
        uniform = by_budget[top]["uniform"]
        target = stopping.target(uniform["values"], 1)  # its final validation metric: what each budget is read by
        per_seed[seed] = {
            "target": target,
            "smoothed_target": stopping.target(uniform["values"], window),  # the SMOOTHED reading's
            "arms": {p: _readings(by_budget, budgets, p, target, uniform["values"], window) for p in policies},
        }
    # filtered that drops under FOLD of the pool is uniform by another name: not a comparator of its own (said so)
    dropped = {p: max(runs[s][top][p]["dropped_share"] for s in runs) for p in policies if p == "filtered"}
    folded = {p: share for p, share in dropped.items() if share < FOLD}
    baselines = [p for p in policies if p in BASELINE_ARMS and p not in folded]
    comparator = _comparator(per_seed, baselines, FIXED)
    verdicts = {}
    for policy in policies:
        if policy in BASELINE_ARMS:
            continue
        readings = {
            name: _verdict(per_seed, policy, _comparator(per_seed, baselines, name), name, baselines)
            for name in _readings_names()
        }
        readings["budget, sustained; per-seed comparator"] = _verdict(per_seed, policy, None, FIXED, baselines)
        outcomes = {r["verdict"] for r in readings.values()}
        verdicts[policy] = {
            "verdict": readings[FIXED]["verdict"] if len(outcomes) == 1 else "undecided",
            "fixed_reading": FIXED,
            "readings": readings,
            # the fixed reading against every baseline, not only the comparator (printed, never the verdict)
            "against_each_baseline": {b: _verdict(per_seed, policy, b, FIXED, baselines) for b in baselines},
        }
    return {
        "fixed_reading": FIXED,
        "budgets": list(budgets),
        "seeds": list(runs),
        "targets": [per_seed[s]["target"] for s in runs],
        "target_window": next(iter(runs.values()))[top]["_window"],  # the SMOOTHED reading's window
        "comparator": comparator,
        "folded_into_uniform": folded,  # baseline -> the largest share of the pool it dropped (under FOLD: not a comparator)
        "per_seed": {str(s): v for s, v in per_seed.items()},
        "final_val": {p: {f"{b:g}": spread([runs[s][b][p]["final_val"] for s in runs]) for b in budgets} for p in policies},
        "final_test": {p: {f"{b:g}": spread([runs[s][b][p]["final_test"] for s in runs]) for b in budgets} for p in policies},
        # each arm's final validation metric at each budget minus the comparator's at the same budget, seed by seed
        "final_val_minus_comparator": {
            p: {
                f"{b:g}": spread([runs[s][b][p]["final_val"] - runs[s][b][comparator]["final_val"] for s in runs])
                for b in budgets
            }
            for p in policies
        },
        "verdicts": verdicts,
        # what the study cost a seed: its arms' training steps at each run's median step time, over every budget
        # (the data's making and loading, checkpoints, the reference, scoring and evaluations not counted; a pause
        # cannot move it); None where a run did not record them
        "step_seconds_per_seed": spread([_seconds(runs[s], budgets, policies) for s in runs]),
        # the classifier's kept class mix: its effective number of classes (exp of the entropy of the kept rows' labels)
        "kept_classes_effective": {
            p: {f"{b:g}": spread([_effective(runs[s][b][p].get("kept_class_share")) for s in runs]) for b in budgets}
            for p in policies
        },
    }


def _seconds(by_budget: dict, budgets: tuple[float, ...], policies: tuple[str, ...]) -> float | None:
    """One seed's trained runs' step seconds over its budgets (an arm read again from another's run, the early-stopped
    curated_only or a replay charged as shared, counted once, as its run)."""
    trained = [p for p in policies if p != EARLY and not p.startswith("replay_shared_")]
    seconds = [by_budget[b][p].get("step_seconds") for b in budgets for p in trained]
    return None if any(v is None for v in seconds) else float(sum(seconds))


def _effective(shares: list[float] | None) -> float | None:
    """How many classes a kept class mix is worth: exp of its entropy (all K when even, 1 when one class)."""
    if not shares:
        return None
    return math.exp(-sum(p * math.log(p) for p in shares if p > 0))


def _readings_names() -> list[str]:
    return [FIXED, "budget, first", LOG, SMOOTHED, *[f"in-run, sustained, k={k}" for k in K_RANGE], "in-run, first, k=1"]


def _readings(by_budget: dict, budgets: tuple[float, ...], policy: str, target: float, uniform: list[float], window: int) -> dict:
    """An arm's FLOPs to the target under each reading, which readings were censored (already at the target at
    their first point: an upper bound), and its final validation metric at the largest budget. The in-run readings
    smooth over k evaluations and read uniform's target with the same k (the one stopping rule)."""
    # by FLOPs: the budgets' order, except for an early-stopped arm, which may stop a larger budget's run sooner
    ends = sorted((by_budget[b][policy] for b in budgets), key=lambda a: a["flops"])
    flops, finals = [a["flops"] for a in ends], [a["final_val"] for a in ends]
    smoothed = [stopping.target(a["values"], window) for a in ends]
    top = by_budget[budgets[-1]][policy]
    crossings = {
        FIXED: stopping.crossing(flops, finals, target, 1),
        "budget, first": stopping.first_crossing(flops, finals, target, 1),
        SMOOTHED: stopping.crossing(flops, smoothed, stopping.target(uniform, window), 1),
    }
    for k in K_RANGE:
        goal = stopping.target(uniform, k)
        crossings[f"in-run, sustained, k={k}"] = stopping.crossing(top["flops_at"], top["values"], goal, k)
    crossings["in-run, first, k=1"] = stopping.first_crossing(top["flops_at"], top["values"], stopping.target(uniform, 1), 1)
    out = {name: c.step for name, c in crossings.items()}
    logged = stopping.crossing([math.log(f) for f in flops], finals, target, 1)
    out[LOG] = math.exp(logged.step) if logged.reached else None
    censored = sorted(name for name, c in {**crossings, LOG: logged}.items() if c.evaluation == 0)
    return {"flops_to_target": out, "censored": censored, "final_val": top["final_val"], "final_test": top["final_test"]}


def _comparator(per_seed: dict, baselines: list[str], reading: str) -> str:
    """The baseline with the fewest FLOPs to the target over seeds under `reading` (geometric mean); those that reach
    it in every seed first, then those that miss it in fewest; the first of `baselines` where none ever does."""

    def rank(policy: str):
        values = [per_seed[s]["arms"][policy]["flops_to_target"][reading] for s in per_seed]
        reached = [v for v in values if v is not None]
        return (len(values) - len(reached), math.exp(sum(map(math.log, reached)) / len(reached)) if reached else math.inf)

    return min(baselines, key=rank)


def _verdict(per_seed: dict, policy: str, comparator: str | None, reading: str, baselines: list[str]) -> dict:
    """One reading's verdict for an arm against `comparator` (None: each seed's own best of `baselines` under it),
    with the seeds whose reading a censored value could turn (see the module's docstring)."""
    ratios, final_gaps = [], []
    bounds = {"arm_censored": 0, "comparator_censored": 0, "comparator_missed": 0}
    for seed in per_seed.values():
        arms = seed["arms"]
        against = comparator or min(
            (p for p in arms if p in baselines and arms[p]["flops_to_target"][reading] is not None),
            key=lambda p: arms[p]["flops_to_target"][reading],
            default="uniform",
        )
        mine, theirs = arms[policy]["flops_to_target"][reading], arms[against]["flops_to_target"][reading]
        ratios.append(mine / theirs if mine is not None and theirs else None)
        final_gaps.append(arms[policy]["final_val"] - arms[against]["final_val"])
        bounds["arm_censored"] += reading in arms[policy].get("censored", ())
        bounds["comparator_censored"] += reading in arms[against].get("censored", ())
        bounds["comparator_missed"] += mine is not None and theirs is None
    flops, gap = spread(ratios, log=True), spread(final_gaps)
    every = flops["reached"] == flops["runs"]
    below = every and flops["high"] is not None and flops["high"] < 1
    level = gap["mean"] is not None and gap["mean"] >= 0
    if not level:  # it ends below the comparator: no saving to claim, whatever its FLOPs
        verdict = "no"
    elif below:  # a censored comparator's FLOPs are an upper bound: the true ratio may be higher
        verdict = "undecided" if bounds["comparator_censored"] else "yes"
    else:  # a censored arm's FLOPs are an upper bound, and a comparator that never got there lost that seed
        verdict = "undecided" if bounds["arm_censored"] or bounds["comparator_missed"] else "no"
    return {
        "comparator": comparator or "each seed's best",
        "flop_ratio": flops,
        "final_val_minus_comparator": gap,
        "verdict": verdict,
        "bounds": bounds,
    }


def table(result: dict) -> str:
    return budgets_table(result)


def report(result: dict, paths: Paths) -> None:
    write_report(result, paths)
