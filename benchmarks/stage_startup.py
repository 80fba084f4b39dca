"""What a stage costs before and after its work: `winnow <command>` from the shell, with no Prefect server set.

Each `dvc repro` stage is a fresh process that imports torch and the stage, starts Prefect's temporary server, runs
its flow and stops the server. Two arms, the same command (by default `winnow summary` on the committed default run,
whose work is cached, so what is timed is almost all start-up and exit):
  early    the server started as the CLI's first act, while winnow imports (winnow/prefect_server.py; the default)
  prefect  WINNOW_PREFECT_EARLY=0: Prefect starts it itself, when the flow first asks, after the imports
each run --repeats times in one shuffled order from this one process (each run a child process, timed from its
start to its exit), the median kept. Prints one JSON object (and writes it with --out).

Usage: uv run python benchmarks/stage_startup.py [--repeats 5] [--out metrics/synthetic/bench/stage_startup.json]
       [-- winnow summary --objective classification]
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

from output import emit  # benchmarks/output.py, beside this script

REPO = Path(__file__).resolve().parents[1]
ARMS = {"early": {}, "prefect": {"WINNOW_PREFECT_EARLY": "0"}}


def run_once(command: list[str], extra: dict) -> float:
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env.update(extra, PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1", DVC_NO_ANALYTICS="1")
    start = time.perf_counter()
    out = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({out.returncode}):\n{out.stdout[-2000:]}{out.stderr[-2000:]}")
    return seconds


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", type=Path)
    p.add_argument("command", nargs="*", default=["winnow", "summary"])
    args = p.parse_args(argv)
    command = [sys.executable, "-m", "winnow.cli", *args.command[1:]] if args.command[0] == "winnow" else args.command
    order = [arm for arm in ARMS for _ in range(args.repeats)]
    random.Random(0).shuffle(order)
    run_once(command, {})  # warm the file cache and the decoded cache, not timed
    seconds = {arm: [] for arm in ARMS}
    for arm in order:
        seconds[arm].append(run_once(command, ARMS[arm]))
    median = {arm: statistics.median(v) for arm, v in seconds.items()}
    result = {
        "command": " ".join(args.command),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "repeats": args.repeats,
        "order": order,
        "seconds": seconds,
        "median_seconds": median,
        "saved_seconds_per_stage": median["prefect"] - median["early"],
        "includes": "the whole child process, from its start to its exit: imports, the temporary server's start and "
        "stop, the flow (its work cached here), and interpreter exit",
    }
    return emit(result, args.out)


if __name__ == "__main__":
    main()
