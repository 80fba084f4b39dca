"""Does torch.compile pay for winnow's small models? A training step compiled against eager, and what compiling costs.

Runs winnow's own training loop (winnow.method.training.train, as benchmarks/step_time.py does) on generated
in-memory data for each objective's default models (classification: cnn-small learner, cnn-nano actor;
contrastive: clip-tiny and clip-pico), uniform and learnability (topk, rho 0.5), with the learner and the actor
as they are (eager) and wrapped in torch.compile (inductor, default mode). Every arm runs --steps steps,
--repeats times, in one shuffled order in this one process. For each run: the median step after --warmup steps
(the steady step), and the seconds of its first --warmup steps beyond that many steady steps (what compiling
cost in that run). The first compiled run of each objective compiles from nothing (inductor's cache is a fresh
folder); later ones reuse what this process and that cache hold, as a later run on the same machine would in part
(a DVC stage is a fresh process: it keeps inductor's cache on disk, not the process's). From them, the steps a run
needs before compiling from nothing pays back, and what it saves over the default run's train.steps. The numbers
are the same either way up to float rounding (compiled kernels fuse operations); that is not what is measured here.

Usage: uv run python benchmarks/compile_step.py [--objectives classification contrastive] [--steps 80] [--repeats 3]
       [--out metrics/synthetic/bench/compile_step.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from step_time import MODELS, _cpu_model, data  # noqa: E402  (the same data, models and machine as benchmarks/step_time.py)


def run_arm(objective: str, policy: str, compiled: bool, steps: int, warmup: int, prepared) -> dict:
    from winnow.config import OptimConfig
    from winnow.datasets.stream import InMemory
    from winnow.method import training
    from winnow.method.objectives import OBJECTIVES
    from winnow.method.selection import Selector

    split, targets = prepared
    spec = OBJECTIVES[objective]
    torch.manual_seed(0)
    learner, actor = (spec.build_model(name, 20, 32) for name in MODELS[objective])
    if compiled:
        learner, actor = torch.compile(learner), torch.compile(actor)
    selector = Selector(policy, 0.5 if policy != "uniform" else 1.0, reference_loss=torch.rand(len(split)))
    started = time.perf_counter()
    out = training.train(
        learner,
        InMemory(split, targets, 0, None),
        OptimConfig(steps=steps, warmup_steps=min(warmup, steps)),
        seed=0,
        selector=selector,
        actor=training.Actor(actor),
        loss_fn=spec.loss,
        name=f"{objective} {policy} {'compiled' if compiled else 'eager'}",
    )
    wall = time.perf_counter() - started
    seconds = [r["seconds"] for r in out["steps_log"]]
    steady = statistics.median(seconds[warmup:])
    return {"step": steady, "first_steps_over_steady": sum(seconds[:warmup]) - warmup * steady, "wall": wall}


def main(argv: list[str] | None = None) -> dict:
    from winnow.config import TrainConfig

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objectives", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--steps", type=int, default=80)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.steps <= args.warmup:
        parser.error(f"--steps ({args.steps}) must be more than --warmup ({args.warmup}): the steps after it are timed")

    prepared = {objective: data(objective, 4096) for objective in args.objectives}
    arms = [(o, p, c) for o in args.objectives for p in ("uniform", "learnability") for c in (False, True)]
    order = [arm for arm in arms for _ in range(args.repeats)]
    random.Random(0).shuffle(order)
    for objective in args.objectives:  # one unmeasured eager run each: lazy initialisation, allocator caches
        run_arm(objective, "learnability", False, args.warmup + 2, args.warmup, prepared[objective])
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="inductor-")  # the first compile is from nothing
    measured: dict[tuple, list[dict]] = {arm: [] for arm in arms}
    compiles: dict[str, list[float]] = {o: [] for o in args.objectives}  # each compiled run's cost, in the order run
    for arm in order:
        result = run_arm(*arm, steps=args.steps, warmup=args.warmup, prepared=prepared[arm[0]])
        measured[arm].append(result)
        if arm[2]:
            compiles[arm[0]].append(result["first_steps_over_steady"])
    budget = TrainConfig().steps
    rows = []
    for objective in args.objectives:
        for policy in ("uniform", "learnability"):
            eager, compiled = measured[(objective, policy, False)], measured[(objective, policy, True)]
            step_eager = statistics.median(r["step"] for r in eager)
            step_compiled = statistics.median(r["step"] for r in compiled)
            first_compile = compiles[objective][0]  # the objective's first compiled run: inductor's cache empty
            saved = step_eager - step_compiled
            rows.append(
                {
                    "objective": objective,
                    "policy": policy,
                    "step_ms_eager": round(step_eager * 1000, 2),
                    "step_ms_compiled": round(step_compiled * 1000, 2),
                    "compiled_over_eager": round(step_compiled / step_eager, 3),
                    "compile_seconds_first": round(first_compile, 1),
                    "compile_seconds_this_arm": [round(r["first_steps_over_steady"], 1) for r in compiled],
                    "steps_to_pay_back_first": round(first_compile / saved) if saved > 0 else None,
                    "saved_seconds_over_default_run": round(saved * budget - first_compile, 1),
                }
            )
    result = {
        "machine": f"{_cpu_model()} ({platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__})",
        "steps": args.steps,
        "warmup": args.warmup,
        "repeats": args.repeats,
        "default_steps": budget,
        "includes": "a step as the loop times it (the draw, the actor's scoring and selection, both optimiser steps, the "
        "step log; no evaluation, no checkpoint), the learner and the actor compiled together; compile seconds: the "
        "first steps' time beyond as many steady steps",
        "rows": rows,
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return result


if __name__ == "__main__":
    main()
