"""Does training arms side by side pay? The train stage of every policy, one at a time against train.parallel_arms at once.

On the default pool (data/synthetic, generated when missing) and the objective's default models: the reference is
trained and the pool scored once, into a scratch folder; each round runs both settings, in a random order, each in a
fresh process of its own (`--child`) on a copy of that folder, so no run finds another's checkpoints. A child imports what a
pipeline's process has imported by the time it trains (the setting of 1 trains in that process, as `winnow pipeline`
does) and is timed from its first arm's start to its last arm's end: for N at once that includes each arm's own
process starting (python, torch, open_clip: the price of running apart). The ratio is read within a round (a shared
machine's slow minutes fall on both settings of a round more than on two rounds); its median over rounds is the
figure. Each arm's final metric is kept: one setting gives the same numbers every round (thread count decides the
last bits, so the two settings differ in rounding: devices.cpu_share).

Usage: uv run python benchmarks/parallel_arms.py [--objective contrastive] [--arms 2] [--rounds 2]
       [--out metrics/synthetic/bench/parallel_arms_contrastive.json]     (about 25 min a round on 2 cores)
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def child(objective: str, arms: int, scratch: Path, sets: list[str]) -> dict:
    """Every policy's train stage with train.parallel_arms = arms, as winnow pipeline runs them (without Prefect)."""
    import threading

    from tasks import launch
    from winnow.config import load_params
    from winnow.stages.chain import arm_order
    from winnow.stages.paths import Paths
    from winnow.stages.train import train_stage

    where = [f"objective={objective}", f"artifacts={scratch / 'artifacts'}", f"metrics={scratch / 'metrics'}"]
    params = load_params(REPO / "params.yaml", [*where, *sets, f"train.parallel_arms={arms}"])
    spans: dict[str, list[float]] = {}
    started = time.perf_counter()

    def one(policy: str) -> None:
        begun = time.perf_counter()
        train_stage(params, policy) if arms == 1 else launch.train_apart(params, policy)
        spans[policy] = [round(begun - started, 1), round(time.perf_counter() - started, 1)]

    order = arm_order(params)
    if arms == 1:
        for policy in order:
            one(policy)
    else:
        threads = [threading.Thread(target=one, args=(p,)) for p in order]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    seconds = time.perf_counter() - started
    if set(spans) != set(order):
        raise RuntimeError(f"arms that did not finish: {sorted(set(order) - set(spans))}")
    records = {p: json.loads(Paths.of(params).train_record(p).read_text()) for p in order}
    return {
        "seconds": round(seconds, 1),
        "spans": spans,
        "final_metric": {p: r["final_metric"] for p, r in records.items()},
        "step_ms": {p: round(1000 * r["step_seconds_median"], 1) for p, r in records.items()},
    }


def prepare(objective: str, scratch: Path, sets: list[str]) -> dict:
    """The reference and the score store every run reads, trained and scored once at this commit into `scratch`."""
    from winnow.config import load_params
    from winnow.stages.data import data_stage
    from winnow.stages.reference import reference_stage
    from winnow.stages.score import score_stage

    where = [f"objective={objective}", f"artifacts={scratch / 'artifacts'}", f"metrics={scratch / 'metrics'}"]
    params = load_params(REPO / "params.yaml", [*where, *sets])
    data_stage(params)  # the default pool, generated when this checkout has none
    reference_stage(params)
    score_stage(params)
    return {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objective", default="contrastive", choices=["classification", "contrastive"])
    parser.add_argument("--arms", type=int, default=2, help="train.parallel_arms, against 1")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--set", action="append", default=[], help="a params override (train.steps=50: a quick look)")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)  # internal: run one setting here
    parser.add_argument("--scratch", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        run = prepare if args.child == 0 else functools.partial(child, arms=args.child)
        print("RESULT " + json.dumps(run(objective=args.objective, scratch=args.scratch, sets=args.set)))
        return
    from output import cpu_model, emit

    base = Path(tempfile.mkdtemp(prefix="winnow-arms-base-"))
    _in_child(args, 0, base)
    rng = random.Random(args.seed)
    rounds = []
    for r in range(args.rounds):
        settings = [1, args.arms]
        rng.shuffle(settings)
        runs = {}
        for arms in settings:
            with tempfile.TemporaryDirectory(prefix="winnow-arms-") as tmp:
                shutil.copytree(base, tmp, dirs_exist_ok=True)
                runs[arms] = _in_child(args, arms, Path(tmp))
            print(f"round {r + 1}: {arms} at once, {runs[arms]['seconds']:.0f} s", file=sys.stderr)
        rounds.append(
            {
                "order": settings,
                "runs": {str(k): v for k, v in runs.items()},
                "ratio": runs[args.arms]["seconds"] / runs[1]["seconds"],
            }
        )
    shutil.rmtree(base)
    ratios = [r["ratio"] for r in rounds]
    same = {
        str(arms): all(r["runs"][str(arms)]["final_metric"] == rounds[0]["runs"][str(arms)]["final_metric"] for r in rounds)
        for arms in (1, args.arms)
    }
    emit(
        {
            "objective": args.objective,
            "arms": args.arms,
            "machine": f"{cpu_model()}, {os.cpu_count()} CPUs",
            "includes": "every policy's train stage (steps, evaluations, the test set, checkpoints, each arm's set-up); "
            f"for {args.arms} at once, each arm's process starting too; not the other stages",
            "rounds": rounds,
            "ratio_median": round(statistics.median(ratios), 3),
            "ratio_range": [round(min(ratios), 3), round(max(ratios), 3)],
            "same_numbers_every_round": same,
            "command": " ".join(["uv run python benchmarks/parallel_arms.py", *sys.argv[1:]]),
        },
        args.out,
    )


def _in_child(args, arms: int, scratch: Path) -> dict:
    """This script in a fresh process: prepare (arms 0) or one setting's run, on `scratch`."""
    sets = [f"--set={s}" for s in args.set]
    command = [sys.executable, __file__, "--objective", args.objective, "--child", str(arms), "--scratch", str(scratch), *sets]
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env={**os.environ, "WINNOW_NO_CACHE": "1"})
    if done.returncode:
        sys.exit(f"{'preparing' if arms == 0 else f'{arms} at once'} failed:\n{done.stderr[-3000:]}")
    said = next(line for line in done.stdout.splitlines() if line.startswith("RESULT "))
    return json.loads(said.removeprefix("RESULT "))


if __name__ == "__main__":
    main()
