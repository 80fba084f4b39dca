"""--study curate: curate once, then train plainly, against the full pool, online learnability and a peer filter."""

from __future__ import annotations

import logging
from pathlib import Path

from winnow.config import Params
from winnow.curation.rules import RULES
from winnow.files import read_csv
from winnow.method import ledger
from winnow.method.objectives import OBJECTIVES
from winnow.reports.studies import write_study_report
from winnow.reports.tables import curate_study_table
from winnow.stages.curate import curate_stage
from winnow.stages.paths import Paths
from winnow.stages.records import ReferenceRecord, ScoreRecord, TrainRecord
from winnow.stages.summary import reach, seconds_at, uniform_reach
from winnow.stages.train import train_stage
from winnow.studies.runs import (
    RATIOS,
    elsewhere,
    mean_over_seeds,
    run_params,
    run_seed,
    spread,
    write_study,
)

log = logging.getLogger("winnow")


def _arm_row(arm: dict, trained: dict, curve: list[dict], target: float, metric: str, uniform: dict, paid: dict, amortise: int):
    """One curated-pool run against uniform on the full pool (same learner, same seed): steps, FLOPs and seconds to
    uniform's final metric, what curation paid (`paid`: one-off FLOPs and seconds) counted in full and amortised."""
    steps = reach(curve, target, metric, uniform["window"]).step
    costs = ledger.Costs(
        reference_training=paid["reference_training_flops"],
        pool_scoring=paid["scoring_flops"],
        actor_scoring_per_step=0.0,
        actor_training_per_step=0.0,
        learner_training_per_step=trained["learner_step_flops"],
    )
    base = ledger.Costs(0.0, 0.0, 0.0, 0.0, uniform["learner_step_flops"])
    noise = trained["selected_mix"]
    return {
        **arm,
        "learner_forward_flops": trained["forward_flops_per_example"],
        "pool_size": trained["pool_size"],
        "target": target,
        "steps_to_target": steps,
        "step_ratio": steps / uniform["steps_to_target"] if steps is not None else None,
        "final_metric": trained["final_metric"],  # the test set, read once at the end (the curve reads val)
        "selected_mix": noise,
        **ledger.flop_ratios(costs, steps, base, uniform["steps_to_target"], amortise),
        **ledger.time_ratios(paid["seconds"], seconds_at(TrainRecord(**trained), steps), uniform["seconds_to_target"], amortise),
        "one_off_flops": costs.one_off,
        "one_off_seconds": paid["seconds"],
    }


def run(params: Params) -> dict:
    """Curate once, then train plainly: uniform on the full pool, uniform on the pool curated by curate.rule at each
    of bench.curate_fractions and by bench.peer_rule (cleanlab, or DataComp's CLIP score), and online learnability,
    per seed; then bench.transfer_learner (another family) on the full pool and on the pool curated at
    curate.fraction, scored by the same small reference. Every curated run pays the reference's training, the
    pool's scoring and any pass curation made over the pool (cleanlab's probabilities)."""
    objective = OBJECTIVES[params.objective]
    runs, curves = [], {}
    for seed in range(params.seed, params.seed + params.bench.seeds):
        base, baseline = _full_pool(params, seed, runs, curves)
        curated = {}
        for name, rule, fraction in _arms(params):
            log.info("bench %s curate: seed %d, %s", params.objective, seed, name)
            change = {"rule": rule, "fraction": fraction, "balance": params.curate.balance and RULES[rule].ranks}
            curated[name] = _curate_arm(base, Paths.of(base).study_curated(name), change, baseline["paid"])
            arm = {"arm": name, "learner": params.train.model, "rule": rule, "fraction": curated[name][1]["fraction"]}
            _train_arm(params, seed, arm, curated[name], baseline["uniform"], runs, curves)
        if params.bench.transfer_learner is not None:  # another learner family on the same curated pool
            _transfer(params, seed, base, baseline, curated, runs, curves)
    rows = []
    for name in dict.fromkeys(r["arm"] for r in runs):
        mine = [r for r in runs if r["arm"] == name]
        rows.append(
            {
                **{k: mine[0][k] for k in ("arm", "learner", "rule", "fraction")},
                "kept_rows": spread([r.get("kept_rows", r["pool_size"]) for r in mine]),
                "target": spread([r["target"] for r in mine]),
                "final_metric": spread([r["final_metric"] for r in mine]),
                f"{objective.noise}_fraction_selected": spread([r["selected_mix"].get(objective.noise) for r in mine]),
                **{k: spread([r[k] for r in mine], log=True) for k in RATIOS},
            }
        )
    result = {
        "study": "curate",
        "objective": params.objective,
        "learner": params.train.model,
        "transfer_learner": params.bench.transfer_learner,
        "reference": params.reference.model,
        "rule": params.curate.rule,
        "peer_rule": params.bench.peer_rule,
        "metric": objective.metric,
        "noise": objective.noise,
        "amortise_over": params.bench.amortise_over,
        "seeds": list(range(params.seed, params.seed + params.bench.seeds)),
        "steps": params.train.steps,
        "rows": rows,
        "runs": runs,
        "curves": mean_over_seeds(curves, objective.metric),
    }
    return write_study(params, result)


def _arms(params: Params) -> list[tuple[str, str, float]]:
    """(arm name, rule, fraction) of each curated pool: curate.rule at each of bench.curate_fractions (cleanlab decides
    its own fraction), then the peer filter a user would pick instead."""
    rule, peer = params.curate.rule, params.bench.peer_rule
    fractions = params.bench.curate_fractions if RULES[rule].ranks else (params.curate.fraction,)
    arms = [(f"{rule}-{f:g}" if RULES[rule].ranks else rule, rule, f) for f in fractions]
    if peer and peer != rule:
        fraction = params.bench.peer_fraction
        arms.append((f"{peer}-{fraction:g}" if RULES[peer].ranks else peer, peer, fraction))
    return arms


def _full_pool(params: Params, seed: int, runs: list[dict], curves: dict) -> tuple[Params, dict]:
    """One seed's runs on the full pool (uniform, online learnability and, for rule learnability, the run whose
    checkpoint curates): the online arm's row, and the baseline every curated arm is measured against and pays."""
    log.info("bench %s curate: seed %d, full pool (uniform, online learnability)", params.objective, seed)
    rule = params.curate.rule
    base = elsewhere(run_params(params, f"curate/seed-{seed}/full", seed))
    checkpoint = RULES[rule].needs == "model_loss"  # it scores with a finished train run: it pays that run
    policies = tuple(dict.fromkeys(("uniform", "learnability", *((params.curate.policy,) if checkpoint else ()))))
    base = base.model_copy(update={"train": base.train.model_copy(update={"policies": policies})})
    summary = run_seed(base)
    paths = Paths.of(base)
    reference = ReferenceRecord.read(paths.reference_record, "run `winnow reference`")
    score = ScoreRecord.read(paths.score_record, "run `winnow score`")
    uniform = TrainRecord.read(paths.train_record("uniform"), "run `winnow train --policy uniform`").as_dict()
    uniform = _as_baseline(
        uniform, read_csv(paths.curve("uniform")), OBJECTIVES[params.objective].metric, params.train.target_window
    )
    spend = ledger.ReferenceSpend(
        reference.train_step_flops,
        reference.score_forward_flops_per_example,
        reference.steps,
        score.num_examples - score.unscorable,
    )
    paid = {
        "reference_training_flops": spend.training,
        "scoring_flops": spend.scoring,
        "seconds": reference.seconds + score.seconds,
        "checkpoint_flops": 0.0,
        "checkpoint_seconds": 0.0,
    }
    if checkpoint:
        costs = ledger.Costs.from_dict(summary["ledger"]["policies"][params.curate.policy]["costs"])
        paid["checkpoint_flops"] = costs.at_step(params.train.steps) - costs.one_off  # its steps (annealed ones too)
        paid["checkpoint_seconds"] = TrainRecord.read(paths.train_record(params.curate.policy), "train it").seconds
    online = summary["policies"]["learnability"]
    runs.append(
        {
            "arm": "online learnability",
            "learner": params.train.model,
            "rule": "learnability (online)",
            "fraction": params.train.keep_fraction,
            "seed": seed,
            "pool_size": uniform["pool_size"],
            "target": summary["target"],
            "steps_to_target": online["steps_to_target"],
            "final_metric": online["final_metric"],
            "selected_mix": TrainRecord.read(paths.train_record("learnability"), "train it").selected_mix,
            **{k: online[k] for k in RATIOS},
        }
    )
    curves.setdefault("uniform, full pool", {})[seed] = read_csv(paths.curve("uniform"))
    curves.setdefault("online learnability", {})[seed] = read_csv(paths.curve("learnability"))
    return base, {"uniform": uniform, "target": runs[-1]["target"], "paid": paid}


def _as_baseline(trained: dict, curve: list[dict], metric: str, window: int) -> dict:
    """A uniform run as the baseline arms are measured against (method/stopping.py): its target (the mean of its
    last `window` evaluations), and its own steps and seconds to reach it."""
    goal, steps = uniform_reach(curve, metric, window)
    return {
        **trained,
        "target": goal,
        "window": window,
        "steps_to_target": steps,
        "seconds_to_target": seconds_at(TrainRecord(**trained), steps),
    }


def _train_arm(params: Params, seed: int, arm: dict, curated: tuple, uniform: dict, runs: list[dict], curves: dict) -> None:
    """Train arm["learner"] uniformly on a curated pool and measure it against `uniform` (same learner and seed)."""
    dest, record, paid = curated
    run = _train_on(params, f"curate/seed-{seed}/{arm['arm'].replace(': ', '-')}", seed, dest, arm["learner"])
    trained, curve = train_stage(run, "uniform"), _curve(run)
    metric, amortise = OBJECTIVES[params.objective].metric, params.bench.amortise_over
    row = _arm_row({**arm, "seed": seed}, trained, curve, uniform["target"], metric, uniform, paid, amortise)
    runs.append({**row, "kept_rows": record["kept_rows"]})
    curves.setdefault(arm["arm"], {})[seed] = curve


def _transfer(params: Params, seed: int, base: Params, baseline: dict, curated: dict, runs: list[dict], curves: dict) -> None:
    """bench.transfer_learner, another family, on the full pool (its own uniform target) and on the pool curated by
    curate.rule at curate.fraction, scored by the same small reference."""
    learner, rule = params.bench.transfer_learner, params.curate.rule
    log.info("bench %s curate: seed %d, %s on the full and the curated pool", params.objective, seed, learner)
    full = _train_on(params, f"curate/seed-{seed}/{learner}-full", seed, Paths.of(params).data, learner)
    trained = train_stage(full, "uniform")
    full_curve = _curve(full)
    full_trained = _as_baseline(trained, full_curve, OBJECTIVES[params.objective].metric, params.train.target_window)
    name = f"{rule}-{params.curate.fraction:g}" if RULES[rule].ranks else rule
    if name not in curated:  # the configured curation (curate.rule at curate.fraction)
        curated[name] = _curate_arm(base, Paths.of(base).study_curated(name), {}, baseline["paid"])
    curves.setdefault(f"{learner}, full pool", {})[seed] = full_curve
    arm = {"arm": f"{learner}: {name}", "learner": learner, "rule": rule, "fraction": params.curate.fraction}
    _train_arm(params, seed, arm, curated[name], full_trained, runs, curves)


def _curate_arm(base: Params, dest: Path, change: dict, paid: dict) -> tuple[Path, dict, dict]:
    """Curate the base run's pool into `dest` with `change` to its curate params; the curated dataset's record and
    what it paid: the reference and the pool's scoring, any further pass over the pool, curation's seconds and, for
    rule learnability, the checkpoint's run."""
    record = curate_stage(base.model_copy(update={"curate": base.curate.model_copy(update=change)}), dest)
    checkpoint = RULES[record["rule"]].needs == "model_loss"
    return (
        dest,
        record,
        {
            "reference_training_flops": paid["reference_training_flops"],
            "scoring_flops": paid["scoring_flops"]
            + record.get("pass_flops", 0.0)
            + (paid["checkpoint_flops"] if checkpoint else 0.0),
            "seconds": paid["seconds"] + record["seconds"] + (paid["checkpoint_seconds"] if checkpoint else 0.0),
        },
    )


def _train_on(params: Params, name: str, seed: int, root: Path, learner: str) -> Params:
    """A bench run training `learner` uniformly on the dataset at `root` (a curated pool, or the full one)."""
    run = elsewhere(run_params(params, name, seed))
    data = run.data.model_copy(update={"dir": str(root.parent), "name": root.name})
    return run.model_copy(
        update={"data": data, "train": run.train.model_copy(update={"model": learner, "policies": ("uniform",)})}
    )


def _curve(params: Params) -> list[dict]:
    return read_csv(Paths.of(params).curve("uniform"))


def table(result: dict) -> str:
    return curate_study_table(result)


def report(result: dict, paths) -> Path:
    """The study's page and plot, from its JSON (rerun nothing)."""
    return write_study_report(result, paths)
