"""--study memory: does memory grow with the pool? Peak resident memory of scoring and of training on the
default pool and on one bench.memory_scale times larger, each stage alone in a fresh process."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from winnow.config import Params, load_params, with_overrides, write_params
from winnow.files import write_json
from winnow.method.objectives import OBJECTIVES
from winnow.stages.data import data_stage
from winnow.stages.inputs import num_classes, run_split
from winnow.stages.paths import Paths
from winnow.stages.reference import reference_stage
from winnow.stages.score import score_stage
from winnow.stages.train import train_stage

log = logging.getLogger("winnow")
STEPS = 300  # learnability steps per training measurement: enough to reach a steady peak


def run(params: Params) -> dict:
    """Peak memory of scoring and of training (learnability, STEPS steps) on the default pool and on one
    bench.memory_scale times larger (generated under artifacts/memory/, outside data.dvc). The larger pool
    streams through train.shuffle_buffer; it is also trained held whole in memory, to show what streaming
    saves. Writes memory.json under Paths.bench."""
    rows = []
    for factor in (1, params.bench.memory_scale):
        sized = _sized(params, factor)
        log.info("memory bench: pool of %d examples", sized.data.num_pool)
        data_stage(sized)
        reference_stage(sized)
        pool_mib = sum(p.stat().st_size for p in (Path(sized.data.root) / "pool").glob("part-*.parquet")) / 2**20
        held = "in memory" if sized.data.num_pool <= sized.train.shuffle_buffer else "stream"
        runs = [("baseline", sized, "baseline", "-"), ("score", sized, "score", "shard by shard")]
        runs.append(("train learnability", sized, "learnability", held))
        if factor != 1:
            whole = with_overrides(sized, [f"train.shuffle_buffer={sized.data.num_pool}"])
            runs.append(("train learnability, pool held in memory", whole, "learnability", "in memory"))
        for label, run_params, what, pool_read in runs:
            measured = _measure(run_params, what)
            row = {"pool_examples": sized.data.num_pool, "pool_mib_on_disk": round(pool_mib, 1), "stage": label}
            rows.append({**row, "pool_read": pool_read, **measured})
            log.info("memory bench: %s, pool %d: peak %.0f MiB", label, row["pool_examples"], measured["peak_rss_mib"])
    result = {
        "scale": params.bench.memory_scale,
        "steps": STEPS,
        "shuffle_buffer": params.train.shuffle_buffer,
        "objective": params.objective,
        "rows": rows,
    }
    write_json(result, Paths.of(params).study_json("memory"))
    return result


def table(result: dict) -> str:
    lines = ["| pool examples | on disk (MiB) | stage | pool read | peak RSS (MiB) | seconds |", "|---|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(
            f"| {r['pool_examples']:,} | {r['pool_mib_on_disk']:.0f} | {r['stage']} | {r['pool_read']} | "
            f"{r['peak_rss_mib']:.0f} | {r['seconds']:.0f} |"
        )
    return "\n".join(lines)


def _sized(params: Params, factor: int) -> Params:
    """The run on a pool `factor` times the default (its own data, artifacts and metrics), trained STEPS steps."""
    name = f"x{factor}"
    return with_overrides(
        params,
        [
            f"data.root={params.data.root if factor == 1 else f'{params.artifacts}/memory/data-{name}'}",
            f"data.num_pool={params.data.num_pool * factor}",
            f"artifacts={params.artifacts}/memory/{name}",
            f"metrics={params.metrics}/memory/{name}",
            f"train.steps={STEPS}",
            "reference.steps=200",
            "train.eval_every=100000",
        ],
    )


def measure_stage(params: Params, what: str) -> dict:
    """Run one stage in this process and report its peak resident memory. Meant for a fresh process
    (`python -m winnow.studies.memory PARAMS WHAT`), so that nothing else has touched memory."""
    started = time.perf_counter()
    if what == "baseline":  # imports, model and the held-out set: what every stage pays before touching the pool
        run_split(params, "eval/test")
        OBJECTIVES[params.objective].build_model(params.train.model, num_classes(params), params.data.image_size)
    elif what == "score":
        score_stage(params)
    else:
        train_stage(params, what)
    return peak(started)


def peak(started: float) -> dict:
    """This process's peak resident memory so far and the seconds since `started`. VmHWM: this address
    space's peak resident set (ru_maxrss would carry the parent's peak over fork and exec)."""
    peak_kib = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
    return {"peak_rss_mib": peak_kib / 1024, "seconds": time.perf_counter() - started}


def fresh_process(module: str, args: list[str], what: str) -> dict:
    """Run `python -m MODULE ARGS` alone in a fresh process; what it measured (its last line, JSON)."""
    done = subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"memory bench: {what} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _measure(params: Params, what: str) -> dict:
    """Peak resident memory (VmHWM, Linux) of one stage run alone in a fresh process, on these exact params."""
    with tempfile.TemporaryDirectory() as tmp:
        path = write_params(params, Path(tmp) / "params.yaml")
        return fresh_process("winnow.studies.memory", [str(path), what], what)


if __name__ == "__main__":  # the fresh process of _measure
    print(json.dumps(measure_stage(load_params(sys.argv[1]), sys.argv[2])))


def report(result: dict, paths) -> Path:
    """Its JSON is what a person reads (the table above prints it): nothing more to draw."""
    return paths.study_report(result.get("study", "memory"))
