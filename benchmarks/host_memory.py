"""What keeping a step's freed buffers in glibc's heap (winnow/method/host_memory.py) does to a training step's
seconds and to peak memory, against glibc's defaults (WINNOW_MALLOC=default).

mallopt is process-wide and glibc's sliding threshold remembers a process's past, so each setting runs in a fresh
process of its own: a round is one process per setting, back to back in a random order, for each objective. A
process runs step_time.py's loop (its default variant: the models, pooling and update the stages run) for --pairs
pairs of a uniform and a learnability run of --steps steps, after one unmeasured run; a run's step time is the
median of its steps after the warm-up, a process's the median over its runs. Across rounds: each setting's median,
and the median over rounds of kept-in-the-heap over defaults, with step_time.median_interval's distribution-free
interval; peak resident memory (VmHWM) of each process beside it. Prints one JSON object (and writes it with --out).

Usage: uv run python benchmarks/host_memory.py [--rounds 5] [--pairs 3] [--steps 50] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

from output import cpu_model, emit  # benchmarks/output.py, beside this script

SETTINGS = {"glibc defaults": "default", "kept in the heap": ""}  # WINNOW_MALLOC for each


def child(objective: str, pairs: int, steps: int, warmup: int, seed: int) -> dict:
    """One process, one setting: step times of the stages' default variant, and this process's peak memory."""
    import step_time

    from winnow.method.host_memory import keep_freed_buffers

    variant = step_time.VARIANTS[objective][-1]
    prepared = step_time.data(objective, 4096)
    step_time.run_arm(objective, "learnability", *variant, warmup + 2, warmup, prepared)
    runs: dict[str, list[float]] = {"uniform": [], "learnability": []}
    policies = ["uniform", "learnability"] * pairs
    random.Random(seed).shuffle(policies)
    for policy in policies:
        runs[policy].append(step_time.run_arm(objective, policy, *variant, steps, warmup, prepared)["step"])
    peak_kib = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
    return {
        "allocator": keep_freed_buffers(),
        **{f"{p}_step_ms": round(1000 * statistics.median(v), 2) for p, v in runs.items()},
        "peak_rss_mib": round(peak_kib / 1024, 1),
    }


def in_fresh_process(objective: str, setting: str, args: argparse.Namespace, seed: int) -> dict:
    from winnow.method.host_memory import without_settings

    env = without_settings(os.environ)  # the machine's own malloc settings would make winnow leave glibc alone
    if SETTINGS[setting]:
        env["WINNOW_MALLOC"] = SETTINGS[setting]
    command = [sys.executable, __file__, "--child", objective, "--pairs", str(args.pairs), "--steps", str(args.steps)]
    done = subprocess.run([*command, "--warmup", str(args.warmup), "--seed", str(seed)], capture_output=True, text=True, env=env)
    if done.returncode:
        raise RuntimeError(f"{objective}, {setting}: the process failed:\n{done.stderr[-3000:]}")
    measured = json.loads(done.stdout.strip().splitlines()[-1])
    expected = "kept in the heap" if setting == "kept in the heap" else "glibc defaults (WINNOW_MALLOC=default)"
    if measured["allocator"] != expected:  # not glibc, or mallopt refused: nothing to compare
        raise RuntimeError(f"{objective}, {setting}: the process ran with {measured['allocator']!r}")
    return measured


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objectives", nargs="+", default=["classification", "contrastive"])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.pairs, args.steps, args.warmup, args.seed)))
        return {}
    from step_time import median_interval

    rng = random.Random(args.seed)
    order = [(objective, r) for objective in args.objectives for r in range(args.rounds)]
    rng.shuffle(order)
    rounds: dict[str, list[dict]] = {objective: [] for objective in args.objectives}
    started = time.perf_counter()
    for objective, r in order:
        settings = list(SETTINGS)
        rng.shuffle(settings)
        measured = {s: in_fresh_process(objective, s, args, seed=r) for s in settings}
        rounds[objective].append({"first": settings[0], **measured})
        print(f"{objective} round {r}: " + json.dumps(measured), file=sys.stderr)
    rows = []
    for objective, mine in rounds.items():
        row: dict = {"objective": objective}
        for setting in SETTINGS:
            for key in ("uniform_step_ms", "learnability_step_ms", "peak_rss_mib"):
                row[f"{key} ({setting})"] = round(statistics.median(m[setting][key] for m in mine), 2)
        for key in ("uniform_step_ms", "learnability_step_ms"):
            ratios = [m["kept in the heap"][key] / m["glibc defaults"][key] for m in mine]
            (low, high), coverage = median_interval(ratios)
            row[f"{key.removesuffix('_ms')} kept over defaults"] = round(statistics.median(ratios), 3)
            row[f"{key.removesuffix('_ms')} interval"] = [round(low, 3), round(high, 3)]
            row["interval_coverage"] = round(coverage, 3)
        for setting in SETTINGS:
            clock = [m[setting]["learnability_step_ms"] / m[setting]["uniform_step_ms"] for m in mine]
            row[f"learnability over uniform ({setting})"] = round(statistics.median(clock), 3)
        row["rounds"] = mine
        rows.append(row)
    result = {
        "cpu": cpu_model(),
        "rounds": args.rounds,
        "pairs": args.pairs,
        "steps": args.steps,
        "warmup": args.warmup,
        "seconds": round(time.perf_counter() - started, 1),
        "includes": "a step as winnow's loop times it (step_time.py's default variant: the draw, scoring and "
        "selection, both optimiser steps, the step log; no evaluation, no checkpoint), medians over the steps after "
        "the warm-up and over a process's runs; each setting in a fresh process, the two back to back in a random "
        "order per round; the ratio is the median over rounds of kept-in-the-heap's over defaults'; peak memory is "
        "each process's VmHWM (imports, the generated data, both models), the median over rounds",
        "rows": rows,
    }
    return emit(result, args.out)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    main()
