"""`winnow bench --study pool`: is the built-in pool a pretraining pool? Measured over seeds that each generate a pool
of their own (data.seed = the bench seed), before any selecting arm is run: uniform and curated_only trained at the
largest of bench.budgets, their schedules ending there.

The properties a pretraining pool must have (issue 42; each printed with every seed's value and met or not):
- every class's label precision (of the rows carrying its label, the share that show it) is at least 0.6;
- the curated set is at most 1% of the pool;
- curated_only ends below uniform at the largest budget (validation metric);
- uniform has plateaued: it gains less than 1 point over the last fifth of the largest budget.
The fourth named one, that no pathology but undecodable bytes is separable by a model-free detector, is
tests/test_fair_pool.py's, run on the default configuration.
"""

from __future__ import annotations

import logging

import numpy as np
import pyarrow.parquet as pq

from winnow.config import Params
from winnow.datasets.contract import shard_files
from winnow.files import read_csv, write_json, write_text
from winnow.reports.pool import table as pool_table
from winnow.stages.data import data_stage
from winnow.stages.inputs import num_classes
from winnow.stages.paths import Paths
from winnow.stages.train import train_stage
from winnow.studies.runs import run_params, spread

log = logging.getLogger("winnow")

WRONG = ("noisy_label", "blank", "off_distribution", "undecodable")  # pathologies whose label names another class
PRECISION, CURATED_SHARE, PLATEAU = 0.6, 0.01, 0.01


def seed_params(params: Params, seed: int) -> Params:
    """One seed's run: a pool generated from data.seed = seed under a name of its own (bench.data_seeds, always on
    here), the largest budget's steps."""
    steps = max(1, round(params.train.steps * params.bench.budgets[-1]))
    every = max(1, min(params.train.eval_every, steps // 10))
    train = params.train.model_copy(update={"policies": ("uniform", "curated_only"), "steps": steps, "eval_every": every})
    own = params.model_copy(update={"bench": params.bench.model_copy(update={"data_seeds": True})})  # always a pool each
    return run_params(own, f"pool/seed-{seed}", seed, train=train)


def label_precision(pool_dir, num_classes: int) -> list[float | None]:
    """Per label, the share of the rows carrying it whose pathology leaves it true (None: no row carries it)."""
    right, total = np.zeros(num_classes), np.zeros(num_classes)
    for path in shard_files(pool_dir):
        table = pq.read_table(path, columns=["label", "pathology"])
        labels = table.column("label").to_numpy()
        wrong = np.isin(table.column("pathology").to_numpy(zero_copy_only=False), WRONG)
        total += np.bincount(labels, minlength=num_classes)
        right += np.bincount(labels[~wrong], minlength=num_classes)
    return [float(r / t) if t else None for r, t in zip(right, total)]


def _gain_over_last_fifth(curve: list[dict], metric: str, steps: int) -> float:
    """The metric at the end of the run minus at the evaluation nearest 80% of it."""
    at = min(curve, key=lambda r: abs(float(r["step"]) - 0.8 * steps))
    return float(curve[-1][metric]) - float(at[metric])


def run(params: Params) -> dict:
    rows = []
    for seed in range(params.seed, params.seed + params.bench.seeds):
        run_ = seed_params(params, seed)
        manifest = data_stage(run_)
        for policy in run_.train.policies:
            log.info("bench pool: seed %d, %s, %d steps", seed, policy, run_.train.steps)
            train_stage(run_, policy)
        paths = Paths.of(run_)
        metric = "accuracy" if params.objective == "classification" else "zero_shot_accuracy"
        curves = {p: read_csv(paths.curve(p)) for p in run_.train.policies}
        finals = {p: float(c[-1][metric]) for p, c in curves.items()}
        precision = label_precision(paths.data / "pool", num_classes(run_))
        counts = manifest["counts"]
        rows.append(
            {
                "seed": seed,
                "min_label_precision": min(p for p in precision if p is not None),
                "label_precision": precision,
                "curated_share": counts["curated"] / counts["pool"],
                "uniform_final_val": finals["uniform"],
                "curated_only_final_val": finals["curated_only"],
                "uniform_gain_last_fifth": _gain_over_last_fifth(curves["uniform"], metric, run_.train.steps),
            }
        )
    result = {
        "study": "pool",
        "objective": params.objective,
        "data": {k: v for k, v in params.data.model_dump().items() if k not in ("dir", "name", "seed")},
        "steps": seed_params(params, params.seed).train.steps,
        "seeds": [r["seed"] for r in rows],
        "rows": rows,
        "properties": _properties(rows),
    }
    paths = Paths.of(params)
    write_json(result, paths.study_json("pool"))
    report(result, paths)
    return result


def _properties(rows: list[dict]) -> dict:
    def check(name: str, key, met) -> dict:
        values = [key(r) for r in rows]
        return {"what": name, "values": values, "met": all(met(v) for v in values), **spread(values)}

    return {
        "label_precision": check(
            f"every class's label precision >= {PRECISION}", lambda r: r["min_label_precision"], lambda v: v >= PRECISION
        ),
        "curated_share": check(
            f"curated set <= {CURATED_SHARE:.0%} of the pool", lambda r: r["curated_share"], lambda v: v <= CURATED_SHARE
        ),
        "curated_only_below_uniform": check(
            "curated_only ends below uniform (val)",
            lambda r: r["curated_only_final_val"] - r["uniform_final_val"],
            lambda v: v < 0,
        ),
        "uniform_plateaued": check(
            f"uniform gains < {PLATEAU * 100:.0f} point over the last fifth",
            lambda r: r["uniform_gain_last_fifth"],
            lambda v: v < PLATEAU,
        ),
    }


def table(result: dict) -> str:
    return pool_table(result)


def report(result: dict, paths: Paths) -> None:
    settings = ", ".join(f"{k}={v}" for k, v in result["data"].items() if k != "pathologies")
    lines = [
        f"# Is the built-in pool a pretraining pool? {len(result['seeds'])} seeds, each its own pool",
        "",
        f"`uv run winnow bench --study pool` with {settings}; pathologies {result['data']['pathologies']}. "
        f"uniform and curated_only trained {result['steps']} steps (the largest budget), schedules ending there; "
        "no selecting arm was run. Validation metric throughout.",
        "",
        table(result),
        "",
        "The fair-pool property (no pathology but undecodable bytes separable by a model-free detector, AUROC > 0.9) "
        "is tests/test_fair_pool.py's.",
        "",
    ]
    write_text("\n".join(lines), paths.study_report("pool"))
