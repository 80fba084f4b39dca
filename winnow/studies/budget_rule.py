"""The budgets study's rule (winnow bench --study budgets, studies/budgets.py), fixed here before any run is read:
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

import math

from winnow.method import stopping
from winnow.method.policies import BASELINES
from winnow.studies.runs import spread

FIXED = "budget, sustained"  # the reading the verdict uses, decided before any run was read
LOG = "budget, sustained, log FLOPs"  # interpolated between budgets on log FLOPs, not linearly
SMOOTHED = "budget, sustained, smoothed"  # each budget read as the mean of its last target_window evaluations
K_RANGE = (1, 2, 3, 4, 5)
FOLD = 0.01  # a filter that drops less of the pool than this is uniform: folded into it, not a comparator of its own
# the learner on the curated set alone, early-stopped on val: curated_only's run read at its best val evaluation (its
# FLOPs to that step, its test metric at those weights), a baseline of its own
EARLY = "curated_only_early"
BASELINE_ARMS = (*BASELINES, EARLY)


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
            name: _verdict(per_seed, policy, _comparator(per_seed, baselines, name), name, baselines) for name in reading_names()
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


def reading_names() -> list[str]:
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
