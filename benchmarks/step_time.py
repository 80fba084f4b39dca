"""What a training step costs on the clock against what the ledger says it should, before and after each speed-up.

Runs winnow's own training loop (winnow.method.training.train) on generated in-memory data, for both objectives'
default models (classification: cnn-small learner, cnn-nano actor; contrastive: clip-tiny and clip-pico), uniform
and learnability (topk, rho 0.5), under each variant:
  pool      torch's NCHW max pooling (what the CNNs ran before models.MaxPool), winnow's channels-last one as it ran
            before its no-gradient path, or as it runs now (with no gradient, a 2x2 pool is two elementwise maxima:
            the actor's scoring; the same values, tests/test_models.py)
  adamw     AdamW's for-loop update (torch's CPU default), its foreach one (the same numbers, tests/test_training.py),
            or foreach with the token table updated only on the rows looked up (method/optim.py: the same numbers,
            tests/test_optim.py; a CNN has no table, so for the classifier that is foreach)
and, apart, captions tokenised per second by open_clip's tokenizer and by winnow's (each distinct caption once).
Every (objective, variant) runs --repeats pairs, in one shuffled order, in this one process: a pair is a uniform
and a learnability run of --steps steps, back to back in a random order; a run's step time is the median of its
steps after --warmup; an arm's is the median over its repeats, and the clock ratio is the median over the pairs of
learnability's over uniform's (a slow minute of a shared machine falls on both runs of a pair), with a
distribution-free interval for that median (median_interval); each pair's step times and which ran first are kept.
Beside each: the ledger's prediction (method/flops.py: the measured FLOPs of the actor's scoring, the actor's step
and the learner's step, over the learner's step) and the clock's ratio over it (issue 25 asks for at most 1.15),
and the share of a step spent waiting for data. Prints one JSON object (and writes it with --out).

Usage: uv run python benchmarks/step_time.py [--objectives classification contrastive] [--steps 60] [--repeats 3]
"""

from __future__ import annotations

import argparse
import copy
import platform
import random
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from output import cpu_model, emit  # benchmarks/output.py, beside this script
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MODELS = {"classification": ("cnn-small", "cnn-nano"), "contrastive": ("clip-tiny", "clip-pico")}
VARIANTS = {
    "classification": [("nchw", "for-loop"), ("channels_last", "foreach"), ("channels_last, maxima with no gradient", "foreach")],
    "contrastive": [("-", "for-loop"), ("-", "foreach"), ("-", "foreach, lazy rows")],
}


def data(objective: str, rows: int, size: int = 32):
    """Random images and targets (labels, or tokenised captions from a small vocabulary), as a Split."""
    from models import clip_tokenizer
    from winnow.datasets.contract import Split

    rng = np.random.default_rng(0)
    images = torch.from_numpy(rng.integers(0, 256, (rows, 3, size, size), dtype=np.uint8))
    labels = rng.integers(0, 20, rows)
    split = Split(np.arange(rows), images, labels, {}, [])
    if objective == "classification":
        return split, torch.as_tensor(labels)
    words = ["red", "blue", "green", "circle", "square", "ring", "a", "photo", "of", "small", "large"]
    captions = [" ".join(rng.choice(words, 6)) for _ in range(rows)]
    return split, clip_tokenizer(MODELS[objective][0])(captions)


def with_torch_pool(model: nn.Module) -> nn.Module:
    """The model as it ran before models.MaxPool: every winnow MaxPool swapped for torch's nn.MaxPool2d."""
    from models import MaxPool

    return _swapped(model, MaxPool, lambda pool: nn.MaxPool2d(pool.kernel_size))


def with_pool_always_channels_last(model: nn.Module) -> nn.Module:
    """The model as it ran before MaxPool's no-gradient path: channels-last pooling with indices, gradient or not."""
    from models import MaxPool

    class ChannelsLastOnly(MaxPool):
        def _halves(self) -> bool:
            return False

    return _swapped(model, MaxPool, lambda pool: ChannelsLastOnly(pool.kernel_size))


def _swapped(model: nn.Module, kind: type, new) -> nn.Module:
    model = copy.deepcopy(model)
    for module in list(model.modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, kind):
                setattr(module, child_name, new(child))
    return model


def train_loop(objective: str, policy: str, learner, actor, steps: int, warmup: int, prepared, name: str) -> dict:
    """winnow's own training loop over the prepared data, learnability (topk, rho 0.5) or uniform, the actor beside
    the learner; what `training.train` returns (its step log)."""
    from winnow.config import OptimConfig
    from winnow.datasets.stream import InMemory
    from winnow.method import training
    from winnow.method.objectives import OBJECTIVES
    from winnow.method.selection import Selector

    split, targets = prepared
    selector = Selector(policy, 0.5 if policy != "uniform" else 1.0, reference_loss=torch.rand(len(split)))
    return training.train(
        learner,
        InMemory(split, targets, 0, None),
        OptimConfig(steps=steps, warmup_steps=min(warmup, steps)),
        seed=0,
        selector=selector,
        actor=training.Actor(actor),
        loss_fn=OBJECTIVES[objective].loss,
        name=name,
    )


def run_arm(objective: str, policy: str, pool: str, adamw: str, steps: int, warmup: int, prepared) -> dict:
    from winnow.method.objectives import OBJECTIVES

    spec = OBJECTIVES[objective]
    torch.manual_seed(0)
    learner, actor = (spec.build_model(name, 20, 32) for name in MODELS[objective])
    if pool == "nchw":
        learner, actor = with_torch_pool(learner), with_torch_pool(actor)
    elif pool == "channels_last":
        learner, actor = with_pool_always_channels_last(learner), with_pool_always_channels_last(actor)
    from winnow.method import optim

    loops_own = optim.adamw

    def this_arms(model, lr, weight_decay, lazy_rows=True):  # the update Trainee builds, as this arm has it
        if adamw == "for-loop":
            return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay, foreach=False)
        return loops_own(model, lr, weight_decay, lazy_rows=lazy_rows and adamw == "foreach, lazy rows")

    optim.adamw = this_arms
    try:
        out = train_loop(objective, policy, learner, actor, steps, warmup, prepared, f"{objective} {policy} {pool} {adamw}")
    finally:
        optim.adamw = loops_own
    kept = out["steps_log"][warmup:]
    return {
        "step": statistics.median(r["seconds"] for r in kept),
        "data": statistics.median(r["data_seconds"] for r in kept),
    }


def median_interval(values: list[float], level: float = 0.95) -> tuple[tuple[float, float], float]:
    """A distribution-free interval for the median: the k-th smallest and k-th largest value, k as large as keeps
    the coverage (the chance the median lies between them, from the binomial) at least `level`; with that coverage.
    Seven values give the smallest and the largest (98.4%): six or fewer cannot reach 95%, and give them too."""
    from math import comb

    ordered, n = sorted(values), len(values)

    def coverage(k: int) -> float:
        return 1 - 2 * sum(comb(n, i) for i in range(k)) / 2**n

    k = 1
    while k + 1 <= n // 2 and coverage(k + 1) >= level:
        k += 1
    return (ordered[k - 1], ordered[n - k]), coverage(k)


def ledger_ratio(objective: str, batch: int, prepared) -> float:
    """The ledger's per-step FLOPs of learnability over uniform's, measured as the train stage measures them."""
    from winnow.config import OptimConfig
    from winnow.datasets.stream import Draw
    from winnow.method.flops import scoring_flops, training_step_flops
    from winnow.method.objectives import OBJECTIVES

    split, targets = prepared
    spec = OBJECTIVES[objective]
    learner, actor = (spec.build_model(name, 20, 32) for name in MODELS[objective])

    def draw(n):
        return Draw(split.ids[:n], split.images[:n], targets[:n], None)

    opt = OptimConfig()
    learner_step = training_step_flops(learner, opt, spec.loss, draw(batch))
    actor_step = training_step_flops(actor, opt, spec.loss, draw(batch))
    actor_scoring = scoring_flops(actor, spec.loss, draw(2 * batch))
    return (learner_step + actor_step + actor_scoring) / learner_step


def tokenising(repeats: int) -> dict:
    """Captions per second of open_clip's tokenizer as it is and of winnow's (each distinct caption once), on the
    built-in pool's first shard (templated captions, as in data/synthetic) and on as many distinct captions."""
    import open_clip
    import pyarrow.parquet as pq

    from models import CLIPS, clip_tokenizer

    shard = Path(__file__).resolve().parents[1] / "data/synthetic/pool/part-00000.parquet"
    if not shard.exists():
        return {"skipped": f"{shard} is not there (uv run winnow data synth)"}
    templated = [str(c) for c in pq.read_table(shard, columns=["caption"]).column("caption").to_pylist()]
    distinct = [f"{c} number {i}" for i, c in enumerate(templated)]
    name = MODELS["contrastive"][0]
    theirs, ours = open_clip.get_tokenizer(CLIPS[name][0]), clip_tokenizer(name)
    out = {"captions": len(templated), "distinct_in_shard": len(set(templated))}
    for label, captions in (("templated", templated), ("distinct", distinct)):
        for who, tokenizer in (("open_clip", theirs), ("winnow", ours)):
            seconds = []
            for _ in range(repeats):
                started = time.perf_counter()
                tokenizer(captions)
                seconds.append(time.perf_counter() - started)
            out[f"{label}_{who}_captions_per_s"] = round(len(captions) / statistics.median(seconds))
    return out


def loop_arguments(argv: list[str] | None, description: str, steps: int) -> argparse.Namespace:
    """The options of a benchmark that times winnow's training loop (this one, compile_step.py): the objectives, the
    steps per run and the untimed warm-up among them, the repeats, and where the JSON goes."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--objectives", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--steps", type=int, default=steps)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.steps <= args.warmup:
        parser.error(f"--steps ({args.steps}) must be more than --warmup ({args.warmup}): the steps after it are timed")
    return args


def main(argv: list[str] | None = None) -> dict:
    from winnow.config import OptimConfig

    args = loop_arguments(argv, __doc__.splitlines()[0], steps=60)

    prepared = {objective: data(objective, 4096) for objective in args.objectives}
    variants = [(objective, pool, adamw) for objective in args.objectives for pool, adamw in VARIANTS[objective]]
    rng = random.Random(0)
    order = [variant for variant in variants for _ in range(args.repeats)]
    rng.shuffle(order)
    for objective in args.objectives:  # one unmeasured run each: lazy initialisation, allocator caches
        run_arm(objective, "learnability", *VARIANTS[objective][-1], args.warmup + 2, args.warmup, prepared[objective])
    # each repeat of a variant is a pair: its uniform and learnability runs back to back, in a random order, so the
    # clock ratio is read within a pair (a slow minute of a shared machine falls on both of its runs)
    pairs: dict[tuple, list[dict]] = {variant: [] for variant in variants}
    started = time.perf_counter()
    for variant in order:
        policies = ["uniform", "learnability"]
        rng.shuffle(policies)
        pair = {"first": policies[0]}
        pairs[variant].append(pair)
        for policy in policies:
            pair[policy] = run_arm(variant[0], policy, *variant[1:], args.steps, args.warmup, prepared[variant[0]])
    rows = []
    for objective in args.objectives:
        predicted = ledger_ratio(objective, OptimConfig().batch_size, prepared[objective])
        for pool, adamw in VARIANTS[objective]:
            mine = pairs[(objective, pool, adamw)]
            step = {p: statistics.median(pair[p]["step"] for pair in mine) for p in ("uniform", "learnability")}
            data_share = {
                p: statistics.median(pair[p]["data"] / pair[p]["step"] for pair in mine) for p in ("uniform", "learnability")
            }
            ratios = [pair["learnability"]["step"] / pair["uniform"]["step"] for pair in mine]
            clock = statistics.median(ratios)
            (low, high), coverage = median_interval(ratios)
            rows.append(
                {
                    "objective": objective,
                    "pool": pool,
                    "adamw": adamw,
                    "uniform_step_ms": round(1000 * step["uniform"], 2),
                    "learnability_step_ms": round(1000 * step["learnability"], 2),
                    "clock_ratio": round(clock, 3),
                    "clock_ratios": [round(r, 3) for r in ratios],
                    "ledger_ratio": round(predicted, 3),
                    "clock_over_ledger": round(clock / predicted, 3),
                    "clock_over_ledger_interval": [round(low / predicted, 3), round(high / predicted, 3)],
                    "interval_coverage": round(coverage, 3),
                    "pairs": [
                        {
                            "first": pair["first"],
                            **{f"{p}_step_ms": round(1000 * pair[p]["step"], 2) for p in ("uniform", "learnability")},
                        }
                        for pair in mine
                    ],
                    "data_share_of_step": {p: round(v, 4) for p, v in data_share.items()},
                }
            )
    result = {
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
        "cpu": cpu_model(),
        "steps": args.steps,
        "warmup": args.warmup,
        "repeats": args.repeats,
        "seconds": round(time.perf_counter() - started, 1),
        "includes": "a step as the loop times it: the draw, the actor's scoring and selection (learnability), the "
        "learner's and the actor's optimiser steps, the step log; no evaluation, no checkpoint; medians over the steps "
        "after the warm-up, then over shuffled repeats in one process; the clock ratio is the median over the repeats "
        "of a pair's (a uniform and a learnability run back to back, in a random order)",
        "rows": rows,
        "tokenising": tokenising(args.repeats) if "contrastive" in args.objectives else None,
    }
    return emit(result, args.out)


if __name__ == "__main__":
    main()
