"""What a user can know about their data before paying for a run: the features `winnow advise` reads and the
regimes study records beside each point's outcome.

Each is measured, not asked for: the curated set's share of the pool (rows on disk), the trained reference's
validation metric, a short uniform pilot's validation metric (bench.pilot_steps of the learner on the pool, its
own schedule), and the scorer's forward FLOPs over the learner's (both measured by the stages' FLOP counter).
The reference is the run's own, so advising trains nothing the pipeline would not train anyway but the pilot.
"""

from __future__ import annotations

import math

from winnow.config import Params, TrainConfig
from winnow.datasets.stream import shard_rows
from winnow.files import read_csv
from winnow.method.objectives import OBJECTIVES
from winnow.stages.inputs import read_json
from winnow.stages.paths import Paths
from winnow.stages.train import train_stage

FEATURES = ("curated_share", "reference_val", "pilot_val", "scorer_over_learner")


def pilot_params(params: Params, where: str) -> Params:
    """The pilot's params: uniform on the pool for bench.pilot_steps, its warmup and evaluations scaled to fit,
    with its files under `where` inside the run's own artifacts and metrics folders."""
    steps = params.bench.pilot_steps
    train = TrainConfig.model_validate(
        {
            **params.train.model_dump(),
            "steps": steps,
            "policies": ("uniform",),
            "warmup_steps": min(params.train.warmup_steps, steps // 10),
            "eval_every": min(params.train.eval_every, steps),
            "checkpoint_every": min(params.train.checkpoint_every, steps),
            "anneal_last": 0.0,
        }
    )
    folders = {key: f"{getattr(params, key)}/{where}" for key in ("artifacts", "metrics", "plots", "reports")}
    return params.model_copy(update={"train": train, **folders})


def run_pilot(params: Params, where: str = "pilot") -> Params:
    """Train the pilot (the run's reference is trained by whoever calls this); the pilot's params."""
    pilot = pilot_params(params, where)
    train_stage(pilot, "uniform")
    return pilot


def features(params: Params, pilot: Params) -> dict:
    """The four features of a run whose reference is trained and whose pilot ran, from their files."""
    paths, metric = Paths.of(params), OBJECTIVES[params.objective].metric
    reference = read_json(paths.reference_record, "run `winnow reference` first")
    pilot_record = read_json(Paths.of(pilot).train_record("uniform"), "run the pilot first (winnow advise)")
    curve = read_csv(Paths.of(pilot).curve("uniform"))
    curated, pool = (sum(shard_rows(paths.data / split)) for split in ("curated", "pool"))
    return {
        "curated_share": curated / pool,
        "reference_val": reference["val_metric"],
        "pilot_val": float(curve[-1][metric]),
        "scorer_over_learner": reference["forward_flops_per_example"] / pilot_record["forward_flops_per_example"],
    }


def coordinates(point: dict) -> list[float]:
    """A point's place on the map: the curated share and the scorer ratio on log scales (a tenfold change is one
    step however small the share), the two metrics as they are, and how far the reference is ahead of the pilot."""
    return [
        math.log10(point["curated_share"]),
        point["reference_val"],
        point["pilot_val"],
        point["reference_val"] - point["pilot_val"],
        math.log10(point["scorer_over_learner"]),
    ]
