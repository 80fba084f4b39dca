"""Scoring throughput against the bare forward: is scoring bound by decoding or by the model?

Writes generated image-text pairs (smooth random images, PNG, at --size px) as pool shards, then measures, on
--device, with winnow's own scoring code (winnow/scores/scoring.py):
  bare forward   the model's forward over rows already decoded and in memory (the ceiling)
  decode         the shards' PNGs decoded, with the decoded cache off (what a first run pays)
  scoring        score_shard: decode (cache off), forward, the loss per row, as the score stage runs it
  scoring, warm  the same with the decoded cache filled (what every later stage and process pays)
each repeated --repeats times in a shuffled order, the median kept. Prints one JSON object.

Usage: uv run python benchmarks/scoring_throughput.py [--model clip-vit-b-32] [--size 224] [--rows 2048]
       [--batch 256] [--device cuda] [--repeats 3]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
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


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="clip-vit-b-32")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--rows", type=int, default=2048)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    from models import build_clip
    from winnow.datasets.contract import decode_file
    from winnow.method.devices import autocast_dtype
    from winnow.scores.scoring import bare_forward_rate, score_shard

    device = torch.device(args.device)
    work = Path(tempfile.mkdtemp(prefix="winnow-throughput-"))
    shards = write_shards(work / "pool", args.rows, args.size)
    model = build_clip(args.model, args.size).to(device).eval()
    dtype = autocast_dtype(device, "auto")

    def timed(what) -> float:
        """Rows per second of what(shard) over every shard."""
        started = time.perf_counter()
        for shard in shards:
            what(shard)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return args.rows / (time.perf_counter() - started)

    def cache(where: str | None):
        os.environ["WINNOW_DECODED_CACHE"] = where or "off"

    def score(shard):
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            score_shard(model, shard, args.size, None, args.batch, "contrastive", args.model)

    def bare() -> float:
        """The forward's rows per second on each shard decoded in memory, averaged over shards."""
        cache(str(work / "cache"))
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            return statistics.mean(
                bare_forward_rate(model, shard, args.size, None, args.batch, "contrastive", args.model) for shard in shards
            )

    arms = {
        "decode": lambda: (cache(None), timed(lambda s: decode_file(s, args.size, None)))[1],
        "scoring": lambda: (cache(None), timed(score))[1],
        "scoring_warm": lambda: (cache(str(work / "cache")), timed(score))[1],
        "bare_forward": bare,
    }
    cache(str(work / "cache"))
    for shard in shards:  # fill the decoded cache, and warm the model up
        decode_file(shard, args.size, None)
    score(shards[0])
    rates: dict[str, list[float]] = {name: [] for name in arms}
    order = [name for name in arms for _ in range(args.repeats)]
    random.Random(0).shuffle(order)
    for name in order:
        rates[name].append(arms[name]())
    median = {name: statistics.median(values) for name, values in rates.items()}
    result = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)",
        "model": args.model,
        "size": args.size,
        "rows": args.rows,
        "batch": args.batch,
        "precision": str(dtype) if dtype is not None else "fp32",
        "repeats": args.repeats,
        **{f"{name}_rows_per_s": round(value, 1) for name, value in median.items()},
        "scoring_over_bare_forward": round(median["scoring"] / median["bare_forward"], 3),
        "scoring_warm_over_bare_forward": round(median["scoring_warm"] / median["bare_forward"], 3),
        "bound": "decode" if median["decode"] < median["bare_forward"] else "compute",
        "includes": "rows/s over every shard; scoring: decode (cache off), forward, per-row loss, no store write; "
        "bare forward: rows already decoded and in memory; medians of shuffled repeats",
    }
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
