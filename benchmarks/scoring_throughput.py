"""Scoring throughput against the bare forward: is scoring bound by decoding or by the model?

On generated image-text pairs (smooth random images, PNG, at --size px, written as pool shards), or on the first
--shards shards of a pool of your own (--pool, e.g. the built-in data/synthetic/pool, with --objective and the
scorer --model), measures on --device with winnow's own scoring code (winnow/scores/scoring.py):
  bare forward     the model's forward (with the per-row loss, and CLIP's features) over every shard's rows, decoded
                   and in memory beforehand: the ceiling
  decode           the shards decoded (images, and captions tokenised), the decoded cache off: what a first run pays
  scoring, inline  score_shards (as the score stage runs it: scores written) one shard after another, the cache off
  scoring, ahead   the same with the next shard decoding in a thread while this one is scored
  scoring, warm    score_shards as the stage chooses (ahead where that pays) with the decoded cache filled: every
                   later stage and process (its images and tokens)
each repeated --repeats times in one shuffled order in this one process, the median kept. The model's weights are
fresh (its speed does not depend on them). Prints one JSON object (and writes it with --out).

Usage: uv run python benchmarks/scoring_throughput.py [--model clip-vit-b-32] [--size 224] [--rows 2048]
       [--batch 256] [--device cuda] [--repeats 3]
       uv run python benchmarks/scoring_throughput.py --pool data/synthetic/pool --objective classification
       --model cnn-nano --size 32 --batch 128 [--shards 4] [--out metrics/synthetic/bench/scoring_classification.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from output import cpu_model, emit  # benchmarks/output.py, beside this script
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def write_shards(folder: Path, rows: int, size: int, shard_rows: int = 512) -> list[Path]:
    """Smooth random RGB images (low-frequency noise, upsampled: they compress as photos do, unlike white noise)
    with a caption each, as part-*.parquet shards of the data contract."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for start in range(0, rows, shard_rows):
        n = min(shard_rows, rows - start)
        blobs = []
        for _ in range(n):
            small = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
            buf = io.BytesIO()
            Image.fromarray(small).resize((size, size), Image.BICUBIC).save(buf, format="PNG")
            blobs.append(buf.getvalue())
        table = pa.table(
            {
                "id": pa.array(np.arange(start, start + n), pa.int64()),
                "image": pa.array(blobs, pa.binary()),
                "label": pa.array([None] * n, pa.int32()),
                "caption": pa.array([f"a photo of thing {i % 10}" for i in range(start, start + n)]),
            }
        )
        paths.append(folder / f"part-{len(paths):05d}.parquet")
        pq.write_table(table, paths[-1])
    return paths


def pool_shards(args, work: Path) -> tuple[list[Path], int | None]:
    """The shards measured (with --pool, its first --shards, linked into a folder of their own: score_shards scores a
    folder) and the number of classes."""
    from winnow.datasets.contract import read_manifest, shard_files

    if args.pool is None:
        return write_shards(work / "pool", args.rows, args.size), None
    classes = len(read_manifest(args.pool.parent)["class_names"]) if args.objective == "classification" else None
    folder = work / "pool"
    folder.mkdir()
    for shard in shard_files(args.pool)[: args.shards]:
        (folder / shard.name).symlink_to(shard.resolve())
    return shard_files(folder), classes


def measured_arms(args, model, shards: list[Path], classes: int | None, work: Path, device: torch.device):
    """What is timed (name -> rows per second of one measurement), and the decode and inline scoring used to warm up."""
    from winnow.method.devices import autocast_dtype
    from winnow.method.losses import embed_examples, score_examples
    from winnow.method.objectives import OBJECTIVES
    from winnow.scores import scoring

    dtype = autocast_dtype(device, "auto")
    rows = sum(pq.ParquetFile(s).metadata.num_rows for s in shards)

    def timed(what) -> float:
        started = time.perf_counter()
        what()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return rows / (time.perf_counter() - started)

    def cache(where: str | None):
        os.environ["WINNOW_DECODED_CACHE"] = where or "off"

    def precision():
        return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)

    def score_inline():
        with precision():
            for shard in shards:
                scoring.score_shard(model, shard, args.size, classes, args.batch, args.objective, args.model)

    def score_stage_like(ahead: bool | None):
        out = work / f"scores-{random.random()}"
        with precision():
            scoring.score_shards(
                model, shards[0].parent, out, args.size, classes, args.batch, args.objective, args.model, ahead=ahead
            )
        for path in out.iterdir():
            path.unlink()
        out.rmdir()

    def decode_all():
        for shard in shards:
            scoring.decode(args.objective, args.model, shard, args.size, classes)

    def bare() -> float:
        """The forward's rows per second over every shard's rows, decoded and in memory beforehand (the loss per row
        for a classifier, the features and the loss for CLIP: what scoring computes)."""
        cache(str(work / "cache"))
        decoded = [scoring.decode(args.objective, args.model, shard, args.size, classes) for shard in shards]
        # in memory: the cache maps a shard's images from its file, and the first read of a page would be timed
        decoded = [(dataclasses.replace(split, images=split.images.clone()), targets) for split, targets in decoded]
        started = time.perf_counter()
        with precision():
            for split, targets in decoded:
                if OBJECTIVES[args.objective].joint:
                    embed_examples(model, split.images, targets, args.batch)
                else:
                    score_examples(model, split.images, targets, args.batch, OBJECTIVES[args.objective].loss)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return rows / (time.perf_counter() - started)  # per pool row, as every other arm (unscorable rows: no forward)

    arms = {
        "decode": lambda: (cache(None), timed(decode_all))[1],
        "scoring_inline": lambda: (cache(None), timed(lambda: score_stage_like(False)))[1],
        "scoring_ahead": lambda: (cache(None), timed(lambda: score_stage_like(True)))[1],
        "scoring_warm": lambda: (cache(str(work / "cache")), timed(lambda: score_stage_like(None)))[1],
        "bare_forward": bare,
    }
    cache(str(work / "cache"))
    return arms, decode_all, score_inline


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="clip-vit-b-32")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--rows", type=int, default=2048)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--pool", type=Path, default=None, help="a split folder of your own (part-*.parquet)")
    parser.add_argument("--objective", default="contrastive", choices=("classification", "contrastive"))
    parser.add_argument("--shards", type=int, default=4, help="with --pool: its first this many shards")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)

    from winnow.method.devices import autocast_dtype
    from winnow.method.objectives import OBJECTIVES
    from winnow.scores import scoring

    device = torch.device(args.device)
    work = Path(tempfile.mkdtemp(prefix="winnow-throughput-"))
    shards, classes = pool_shards(args, work)
    torch.manual_seed(0)
    model = OBJECTIVES[args.objective].build_model(args.model, classes, args.size).to(device).eval()
    arms, decode_all, score_inline = measured_arms(args, model, shards, classes, work, device)
    decode_all()  # fill the decoded cache (images and tokens), and warm the model up
    score_inline()
    rates: dict[str, list[float]] = {name: [] for name in arms}
    order = [name for name in arms for _ in range(args.repeats)]
    random.Random(0).shuffle(order)
    for name in order:
        rates[name].append(arms[name]())
    median = {name: statistics.median(values) for name, values in rates.items()}
    cpu = f"cpu: {cpu_model()} ({torch.get_num_threads()} threads)"
    result = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu,
        "data": str(args.pool) if args.pool is not None else f"generated PNGs at {args.size} px",
        "objective": args.objective,
        "model": args.model,
        "size": args.size,
        "rows": sum(pq.ParquetFile(s).metadata.num_rows for s in shards),
        "batch": args.batch,
        "precision": str(autocast_dtype(device, "auto") or "fp32"),
        "repeats": args.repeats,
        **{f"{name}_rows_per_s": round(value, 1) for name, value in median.items()},
        **{f"{name}_over_bare_forward": round(median[name] / median["bare_forward"], 3) for name in arms if "scoring" in name},
        "bound": "decode" if median["decode"] < median["bare_forward"] else "compute",
        "decode_ahead_pays_here": scoring.decode_ahead_pays(model),
        "includes": "rows/s over every shard; decode: images (and captions tokenised), the decoded cache off; scoring: "
        "decode, forward, per-row loss (and embeddings for CLIP), the scores written; bare forward: rows already decoded "
        "and in memory; medians of shuffled repeats in one process",
    }
    shutil.rmtree(work, ignore_errors=True)
    return emit(result, args.out)


if __name__ == "__main__":
    main()
