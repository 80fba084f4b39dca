"""`winnow bench --study ladder`: learners far larger than their scorers, under the budgets protocol
(studies/budgets.py), each learner against baselines of its own; and the training sequence its smallest learner
kept, replayed on each larger one (selection paid once).

Per seed, the reference (reference.model) is trained and the pool scored once, shared by every learner and budget:
the scorers are fixed. Each learner of the ladder (bench.ladder, or the objective's: Params.ladder) runs every arm
of bench.policies at every budget of bench.budgets, its schedule ending there; a learner of `bench.learner_steps`
runs that many steps at budget 1 (fewer steps for the big learners where time is short). Each learner after the
first also runs `replay`: the sequence its first learner's learnability run kept at the same seed and budget
(docs/replay.md), charged the recording's selection in full (N = 1) and read again with it shared by 3 and 10
learners (method/ledger.SHARED).

Every learner's readings and verdicts are the budgets study's, fixed before any run is read: uniform's plateau at
the largest budget as the target, the baseline with the fewest FLOPs over seeds as the comparator, every other
reading printed beside it. The projection (studies/projection.py) is fitted to these measured points and labelled as
one.
"""

from __future__ import annotations

import functools
import logging

from winnow.config import Params
from winnow.errors import ConfigError
from winnow.files import write_json
from winnow.reports.ladder import table as ladder_table
from winnow.reports.ladder import write_report
from winnow.stages.data import data_stage
from winnow.stages.paths import Paths
from winnow.stages.train import check_replay
from winnow.studies import budget_rule, budgets, projection

log = logging.getLogger("winnow")

RECORDED = "learnability"  # the selecting arm whose training sequence the larger learners replay


def folder(learner: str) -> str:
    return f"ladder/{learner}"


def steps_of(params: Params, learner: str) -> int:
    """A learner's steps at budget 1: bench.learner_steps where set, else train.steps."""
    return params.bench.learner_steps.get(learner, params.train.steps)


def learner_params(params: Params, seed: int, budget: float, learner: str) -> Params:
    """One learner's run at one seed and budget (its own folder, its own steps)."""
    return budgets.budget_params(params, seed, budget, folder(learner), learner, steps_of(params, learner))


def recording(params: Params, seed: int, recorder: str, budget: float) -> str:
    """The training sequence the recording learner's learnability run kept at this seed and budget."""
    return str(Paths.of(learner_params(params, seed, budget, recorder)).sequence(RECORDED))


def refuse_what_would_fail_later(params: Params, replays: bool = True) -> None:
    """Before any run: a replay trains at most the steps its recording holds, and holds the pool in memory; each is
    refused here, naming the key, not hours in."""
    learners = params.ladder
    if params.train.actor == "learner":
        raise ConfigError(
            "train.actor: 'learner', and a replay is charged the recording's selection without the recording learner's "
            "own steps, which chose it; the ladder's scorers are fixed: set train.actor to a model"
        )
    if len(set(learners)) < len(learners):
        raise ConfigError(f"bench.ladder: {list(learners)} names a learner twice (each has one folder of runs)")
    if not replays:
        return
    recorded = steps_of(params, learners[0])
    for learner in learners[1:]:
        steps = steps_of(params, learner)
        if steps > recorded:
            raise ConfigError(
                f"bench.learner_steps.{learner}: {steps} steps, and {learners[0]}'s recorded sequence holds {recorded}; "
                f"a replay trains at most the steps it replays"
            )
    first = learner_params(params, params.seed, params.bench.budgets[0], learners[1])
    data_stage(first)  # the pool a replay would hold (generated here when it is the built-in one)
    check_replay(first.model_copy(update={"train": first.train.model_copy(update={"policies": ("replay",)})}))


def run(params: Params) -> dict:
    learners = params.ladder
    seeds = list(range(params.seed, params.seed + params.bench.seeds))
    replays = RECORDED in params.bench.policies and len(learners) > 1
    refuse_what_would_fail_later(params, replays)
    runs: dict[str, dict[int, dict]] = {learner: {} for learner in learners}  # learner -> seed -> budget -> arms
    for seed in seeds:
        base = None
        for i, learner in enumerate(learners):
            replay_of = functools.partial(recording, params, seed, learners[0]) if replays and i > 0 else None
            log.info("bench %s ladder: seed %d, learner %s", params.objective, seed, learner)
            base, runs[learner][seed] = budgets.train_seed(
                params, seed, folder(learner), learner, steps_of(params, learner), base=base, replay_of=replay_of
            )
    result = summarise(params, runs, replays)
    paths = Paths.of(params)
    write_json(result, paths.study_json("ladder"))
    report(result, paths)
    return result


def summarise(params: Params, runs: dict, replays: bool) -> dict:
    """Each learner's budgets summary (its own comparator and verdicts), its size against the scorers', and the
    projection fitted to them."""
    rows = []
    for i, learner in enumerate(params.ladder):
        arms = budgets.arms_of(params, replays=replays and i > 0)
        summary = budget_rule.summarise(runs[learner], params.bench.budgets, arms)
        first = next(iter(runs[learner].values()))[params.bench.budgets[0]]
        rows.append(
            {
                "learner": learner,
                "steps": steps_of(params, learner),
                "learner_forward_flops": first["_sizes"]["learner_forward_flops"],
                "scorer_forward_flops": first["_sizes"]["scorer_forward_flops"],
                "scorer_flops_over_learner": first["_sizes"]["scorer_forward_flops"] / first["_sizes"]["learner_forward_flops"],
                "learner_step_flops": first["_sizes"]["learner_step_flops"],
                "selection_over_learner": first["_sizes"]["selection_step_flops"] / first["_sizes"]["learner_step_flops"],
                **summary,
            }
        )
    first_run = next(iter(next(iter(runs.values())).values()))[params.bench.budgets[0]]
    metric, sizes = first_run["_metric"], first_run["_sizes"]
    return {
        "study": "ladder",
        "objective": params.objective,
        "data": params.data.root,
        "reference": params.reference.model,
        "actor": params.train.actor,
        "recorded_by": params.ladder[0] if replays else None,
        "budgets": list(params.bench.budgets),
        "base_steps": params.train.steps,
        "seeds": list(next(iter(runs.values()))),
        "curve_metric": f"val_{metric}",
        "data_seeds": params.bench.data_seeds,
        "rows": rows,
        "projection": projection.project(rows, params.objective, sizes["image_size"], sizes["num_classes"]),
    }


def table(result: dict) -> str:
    return ladder_table(result)


def report(result: dict, paths: Paths) -> None:
    write_report(result, paths)
