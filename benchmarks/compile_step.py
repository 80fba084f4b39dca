"""Does torch.compile pay for winnow's small models? A training step compiled against eager, and what compiling costs.

Runs winnow's own training loop (winnow.method.training.train, as benchmarks/step_time.py does) on generated
in-memory data for each objective's default models (classification: cnn-small learner, cnn-nano actor;
contrastive: clip-tiny and clip-pico), uniform and learnability (topk, rho 0.5), with the learner and the actor
as they are (eager) and wrapped in torch.compile (inductor, default mode). Every arm runs --steps steps,
--repeats times, in one shuffled order in this one process. For each run: the median step after --warmup steps
(the steady step), and what compiling cost in that run: its first --warmup steps beyond as many steady steps,
less what eager's first steps cost beyond theirs; the slowest later step shows any compile after the warm-up, and
dynamo's counters the graphs it compiled and any graph break (a fallback to eager). Inductor's cache is an empty
folder, so the first compiled run of each objective compiles from nothing; later runs reuse what this process
holds (another arm's compiled learner, say). Per objective: compiling in all (each arm's first compiled run), what
one default run (train.steps) of each arm would save, and the net: what `winnow pipeline` would gain in one
process (a DVC stage is a fresh process and compiles again, from inductor's cache on disk). The numbers are the
same either way up to float rounding (compiled kernels fuse operations); that is not what is measured here.

Usage: uv run python benchmarks/compile_step.py [--objectives classification contrastive] [--steps 80] [--repeats 3]
       [--out metrics/synthetic/bench/compile_step.json]
"""

from __future__ import annotations

import os
import platform
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

CACHE = tempfile.mkdtemp(prefix="inductor-")  # inductor's cache, empty: set before torch reads its settings
os.environ["TORCHINDUCTOR_CACHE_DIR"] = CACHE

import torch  # noqa: E402
from torch._dynamo.utils import counters  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from output import cpu_model, emit  # noqa: E402
from step_time import MODELS, data, loop_arguments, train_loop  # noqa: E402  (the same data, models and machine as benchmarks/step_time.py)


def run_arm(objective: str, policy: str, compiled: bool, steps: int, warmup: int, prepared) -> dict:
    from winnow.method.objectives import OBJECTIVES

    spec = OBJECTIVES[objective]
    torch.manual_seed(0)
    learner, actor = (spec.build_model(name, 20, 32) for name in MODELS[objective])
    if compiled:
        learner, actor = torch.compile(learner), torch.compile(actor)
    started = time.perf_counter()
    name = f"{objective} {policy} {'compiled' if compiled else 'eager'}"
    out = train_loop(objective, policy, learner, actor, steps, warmup, prepared, name)
    wall = time.perf_counter() - started
    seconds = [r["seconds"] for r in out["steps_log"]]
    steady = statistics.median(seconds[warmup:])
    return {
        "step": steady,
        "first_steps_over_steady": sum(seconds[:warmup]) - warmup * steady,
        "slowest_later_step": max(seconds[warmup:]),  # a compile after the warm-up would show here
        "wall": wall,
    }


def main(argv: list[str] | None = None) -> dict:
    from winnow.config import TrainConfig

    args = loop_arguments(argv, __doc__.splitlines()[0], steps=80)

    prepared = {objective: data(objective, 4096) for objective in args.objectives}
    arms = [(o, p, c) for o in args.objectives for p in ("uniform", "learnability") for c in (False, True)]
    order = [arm for arm in arms for _ in range(args.repeats)]
    random.Random(0).shuffle(order)
    for objective in args.objectives:  # one unmeasured eager run each: lazy initialisation, allocator caches
        run_arm(objective, "learnability", False, args.warmup + 2, args.warmup, prepared[objective])
    measured: dict[tuple, list[dict]] = {arm: [] for arm in arms}
    compiled_order: dict[str, list[str]] = {o: [] for o in args.objectives}  # each objective's compiled runs, in order
    for arm in order:
        counters.clear()
        result = run_arm(*arm, steps=args.steps, warmup=args.warmup, prepared=prepared[arm[0]])
        if arm[2]:  # what dynamo made of it: graphs compiled in this run, and any graph break (a fallback to eager)
            result["graphs"] = counters["stats"]["unique_graphs"]
            result["graph_breaks"] = sum(counters["graph_break"].values())
            compiled_order[arm[0]].append(arm[1])
        measured[arm].append(result)
    shutil.rmtree(CACHE, ignore_errors=True)
    budget = TrainConfig().steps
    rows, objectives = [], {}
    for objective in args.objectives:
        for policy in ("uniform", "learnability"):
            eager, compiled = measured[(objective, policy, False)], measured[(objective, policy, True)]
            step_eager = statistics.median(r["step"] for r in eager)
            step_compiled = statistics.median(r["step"] for r in compiled)
            # compiling's cost in a run: its first steps beyond its steady steps, less what eager's first steps cost
            eager_first = statistics.median(r["first_steps_over_steady"] for r in eager)
            compiling = [max(0.0, r["first_steps_over_steady"] - eager_first) for r in compiled]
            saved = step_eager - step_compiled
            rows.append(
                {
                    "objective": objective,
                    "policy": policy,
                    "step_ms_eager": round(step_eager * 1000, 2),
                    "step_ms_compiled": round(step_compiled * 1000, 2),
                    "compiled_over_eager": round(step_compiled / step_eager, 3),
                    "compiled_first_in_process": compiled_order[objective][0] == policy,
                    "compile_seconds": [round(v, 1) for v in compiling],  # each compiled run of this arm, in order
                    "graphs": compiled[0]["graphs"],  # compiled in this arm's first compiled run
                    "graph_breaks": sum(r["graph_breaks"] for r in compiled),
                    "slowest_later_step_ms": round(max(r["slowest_later_step"] for r in compiled) * 1000, 1),
                    "saved_ms_per_step": round(saved * 1000, 2),
                }
            )
        mine = [r for r in rows if r["objective"] == objective]
        paid = sum(r["compile_seconds"][0] for r in mine)  # every arm's first compiled run: what one process pays
        gained = sum(r["saved_ms_per_step"] / 1000 * budget for r in mine)  # one default run of each arm
        objectives[objective] = {
            "compile_seconds_in_all": round(paid, 1),
            "saved_seconds_one_default_run_of_each_arm": round(gained, 1),
            "net_seconds": round(gained - paid, 1),
        }
    result = {
        "machine": f"{cpu_model()} ({platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__})",
        "steps": args.steps,
        "warmup": args.warmup,
        "repeats": args.repeats,
        "default_steps": budget,
        "includes": "a step as the loop times it (the draw, the actor's scoring and selection, both optimiser steps, the "
        "step log; no evaluation, no checkpoint), the learner and the actor compiled together; compiling: a run's "
        "first steps' time beyond as many steady steps, less eager's the same way; graphs: those dynamo compiled in "
        "the arm's first compiled run (one compiled before, for another arm, is reused)",
        "rows": rows,
        "objectives": objectives,
    }
    return emit(result, args.out)


if __name__ == "__main__":
    main()
