"""The data path at the size GPU users train at: can winnow's decoding feed a learner and its super-batch at 224 px?

Generates a pool of --rows JPEGs, each 224 px or larger on its shorter side (a photo's spectrum: smooth shapes and
some texture; sizes drawn from 256 to 640 px on the shorter side, 4:3 either way), written as the data contract's
Parquet shards (what `winnow data import` makes of a webdataset's tars: the image bytes unchanged). Then measures
on this machine, with the decoded cache off (every image decoded, as a pool too large to cache is each epoch; the
shard files themselves warm in the OS's page cache, as a local disk read ahead keeps them):

  bare decode, full     PIL's full decode and resize to 224 px in a loop on one core: what a naive decoder costs
  bare decode           winnow's decoder (datasets/images.py: a reduced-scale JPEG decode, then the resize) in a
                        loop on one core, on bytes already in memory: the limit one core sets
  bare decode, 2 procs  the same loop in two processes at once, half the images each: what this machine's two
                        cores give at best (its own scaling, before any of winnow's hand-offs)
  delivered, N workers  shards decoded through winnow's reader (contract.decode_file) with N decode workers
                        (datasets/workers.py): images per second handed to the stream, 1 and 2 workers
  scoring               the score stage's loop (scoring.score_shards: decode, forward, write) of --scorer at 224 px
                        with 2 decode workers, against the bare forward of the same scorer on rows in memory
  training data wait    a selecting run (the learner scores its own super-batch, keep 0.5, batch 64) of --learner at
                        224 px streamed through the shuffle buffer with 2 workers: the median step's share spent
                        waiting for data, after a warm-up

Each decode and scoring measure is repeated --repeats times, in one shuffled order, in this one process; medians
are kept. The training run is one run (its median over steps). Then a projection, labelled as such: what a 16-core
GPU host would deliver at this CPU's per-worker rate (15 workers, one core for the loop, linear in workers: the
measured 2-worker over 1-worker ratio says how far that holds here), against what a ViT-B/32 CLIP step needs at
the published H100 rate, at keep 1.0, 0.5 and 0.1 (the super-batch is 1/keep of the batch). The per-worker rate is
the 2-worker rate over 2: it carries the main process's share (reading, handing over, copying out), which one core
of the 16 would carry for all 15 workers. The need assumes a selecting step as fast as a uniform one; scoring the
super-batch makes it slower, so the need is an upper bound.

Usage: uv run python benchmarks/data_path.py [--rows 20000] [--repeats 3] [--out metrics/synthetic/bench/data_path.json]
       (--pool FOLDER --write-only first writes the pool, untimed, to measure it later in a quiet spell)
"""

from __future__ import annotations

import argparse
import io
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
from output import cpu_model, emit  # benchmarks/output.py, beside this script
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SIZE = 224
# The published rate the projection reads: NVIDIA NeMo's CLIP B/32 (224 px) on DGX H100, bf16 (O2), global batch
# 16000 over 4 nodes x 8 GPUs (micro batch 500): 6.68 global batches/s (NVIDIA/NeMo-Framework-Launcher README.md,
# section 8.2.2, "DGX A100 vs. DGX H100: A Comparative Analysis of CLIP Training"), so 6.68 x 500 = 3340 image-text
# pairs per second per GPU. open_clip's own ViT-B/32 LAION-2B run averaged about 725 per A100 end to end.
H100_VIT_B32_PAIRS_PER_S = 6.68 * 500
H100_SOURCE = (
    "NVIDIA NeMo-Framework-Launcher README.md 8.2.2: CLIP B/32, DGX H100, bf16, 6.68 global batches/s of 16000 "
    "over 32 GPUs = 3340 pairs/s per GPU"
)
KEEPS = (1.0, 0.5, 0.1)
PROJECTED_CORES = 16


def photo(rng: np.random.Generator) -> bytes:
    """A JPEG of a photo's size and spectrum: shorter side 256-640 px, 4:3 either way, quality 90."""
    short = int(rng.integers(256, 641))
    w, h = (short * 4 // 3, short) if rng.random() < 0.5 else (short, short * 4 // 3)
    low = Image.fromarray(rng.integers(0, 256, (max(2, h // 48), max(2, w // 48), 3), dtype=np.uint8))
    pixels = np.asarray(low.resize((w, h), Image.BICUBIC), dtype=np.int16) + rng.integers(-8, 9, (h, w, 3), dtype=np.int16)
    out = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(out, "JPEG", quality=90)
    return out.getvalue()


def write_pool(folder: Path, rows: int, shard_rows: int) -> list[Path]:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for start in range(0, rows, shard_rows):
        n = min(shard_rows, rows - start)
        table = pa.table(
            {
                "id": np.arange(start, start + n, dtype=np.int64),
                "image": [photo(rng) for _ in range(n)],
                "label": rng.integers(0, 10, n).astype(np.int64),
            }
        )
        paths.append(folder / f"part-{len(paths):05d}.parquet")
        pq.write_table(table, paths[-1])
        print(f"  wrote {paths[-1].name} ({n} rows)", file=sys.stderr)
    return paths


def full_decode(blob: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(blob)) as im:
        return np.asarray(im.convert("RGB").resize((SIZE, SIZE), Image.BILINEAR))


def bare_loop(blobs: list) -> int:
    """winnow's decoder over `blobs` in a spawned process (bare decode, 2 procs)."""
    from winnow.datasets.images import decode_image

    return len([decode_image(b, SIZE) for b in blobs])


def rate_of(work, images: int) -> float:
    started = time.perf_counter()
    work()
    return images / (time.perf_counter() - started)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=20000)
    ap.add_argument("--shard-rows", type=int, default=1000)
    ap.add_argument("--sample", type=int, default=600, help="images of the bare loops, per repeat")
    ap.add_argument("--shards", type=int, default=3, help="shards each delivered and scoring measure reads, per repeat")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--scorer", default="cnn-nano")
    ap.add_argument("--learner", default="cnn-small")
    ap.add_argument("--train-steps", type=int, default=24)
    ap.add_argument("--warmup", type=int, default=6, help="training steps left out of the median")
    ap.add_argument("--device", default="cpu", help="where the scorer and the learner run (cuda on a GPU machine)")
    ap.add_argument("--pool", type=Path, default=None, help="a folder of shards made before (kept between runs)")
    ap.add_argument("--write-only", action="store_true", help="write the pool (--pool) and stop: its writing is not timed")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    os.environ["WINNOW_DECODED_CACHE"] = "off"  # a first read, every time

    from winnow.config.sections import OptimConfig
    from winnow.datasets import contract, workers
    from winnow.datasets.contract import Split
    from winnow.datasets.images import decode_image
    from winnow.datasets.stream import ShardStream
    from winnow.method.objectives import OBJECTIVES, per_example_loss
    from winnow.method.selection import Selector
    from winnow.method.training import train
    from winnow.scores import scoring

    tmp = Path(tempfile.mkdtemp(prefix="winnow-data-path-"))
    pool = args.pool or tmp / "pool"
    shards = sorted(pool.glob("part-*.parquet")) or write_pool(pool, args.rows, args.shard_rows)
    rows = sum(pq.ParquetFile(p).metadata.num_rows for p in shards)
    if args.write_only:
        print(f"{pool}: {rows} rows in {len(shards)} shards")
        return
    read = shards[: args.shards]
    every = [b for p in read for b in pq.read_table(p).column("image").to_pylist()]  # the images the others read
    blobs = every[:: max(1, len(every) // args.sample)][: args.sample]
    mean_kb = float(np.mean([len(b) for b in every])) / 1e3
    read_rows = sum(pq.ParquetFile(p).metadata.num_rows for p in read)

    def delivered(n: int):
        def run():
            workers.configure(n)
            for path in read:
                contract.decode_file(path, SIZE, 10)

        return run

    device = torch.device(args.device)
    scorer = OBJECTIVES["classification"].build_model(args.scorer, 10, SIZE).to(device).eval()
    out_dir = tmp / "scores"

    def scored():
        workers.configure(2)
        for p in out_dir.glob("*"):
            p.unlink()
        out_dir.mkdir(exist_ok=True)
        subset = tmp / "subset"
        subset.mkdir(exist_ok=True)
        for p in read:
            if not (subset / p.name).exists():
                (subset / p.name).symlink_to(p)
        scoring.score_shards(scorer, subset, out_dir, SIZE, 10, 256, "classification", args.scorer, ahead=True)

    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    two = ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn"))
    halves = [blobs[: len(blobs) // 2], blobs[len(blobs) // 2 :]]
    list(two.map(bare_loop, [halves[0][:2], halves[1][:2]]))  # both processes started and warm

    measures = {
        "bare_full_decode": (lambda: [full_decode(b) for b in blobs], len(blobs)),
        "bare_decode": (lambda: [decode_image(b, SIZE) for b in blobs], len(blobs)),
        "bare_decode_2_processes": (lambda: list(two.map(bare_loop, halves)), len(blobs)),
        "delivered_1_worker": (delivered(1), read_rows),
        "delivered_2_workers": (delivered(2), read_rows),
        "scoring": (scored, read_rows),
    }
    delivered(1)()  # each pool's workers spawned (and kept), the files in the page cache: every measure starts warm
    delivered(2)()
    rates = {name: [] for name in measures}
    order = [name for _ in range(args.repeats) for name in measures]
    random.Random(0).shuffle(order)
    for name in order:
        work, images = measures[name]
        rates[name].append(rate_of(work, images))
        print(f"  {name}: {rates[name][-1]:.0f} images/s", file=sys.stderr)
    median = {name: statistics.median(r) for name, r in rates.items()}

    bare_forward = scoring.bare_forward_rate(scorer, read[0], SIZE, 10, 256, "classification", args.scorer)

    # a selecting run streamed at 224 px with 2 workers: the median step's data wait
    workers.configure(2)

    def decode(path):
        ids, images, labels, meta, skipped = contract.decode_file(path, SIZE, 10)
        return Split(ids, images, labels, meta, skipped), torch.as_tensor(labels)

    stream = ShardStream(pool, decode, buffer_size=2000, seed=0)
    torch.manual_seed(0)
    learner = OBJECTIVES["classification"].build_model(args.learner, 10, SIZE).to(device)
    opt = OptimConfig(model=args.learner, steps=args.train_steps, batch_size=64, warmup_steps=args.warmup)
    out = train(learner, stream, opt, seed=0, selector=Selector("hard_learner", keep_fraction=0.5), loss_fn=per_example_loss)
    logged = out["steps_log"][args.warmup :]
    step_s = statistics.median(r["seconds"] for r in logged)
    wait_s = statistics.median(r["data_seconds"] for r in logged)
    workers.configure(0)

    per_worker = median["delivered_2_workers"] / 2  # with the main process's share of the work (see the docstring)
    scaling = median["delivered_2_workers"] / median["delivered_1_worker"]
    projected = per_worker * (PROJECTED_CORES - 1)
    projection = [
        {
            "keep": keep,
            "needed_images_per_s": H100_VIT_B32_PAIRS_PER_S / keep,
            "projected_delivered_images_per_s": projected,
            "delivered_over_needed": projected / (H100_VIT_B32_PAIRS_PER_S / keep),
        }
        for keep in KEEPS
    ]
    emit(
        {
            "benchmark": "data_path",
            "what": (
                "winnow's data path at 224 px: images per second, decoded cache off, medians of shuffled repeats in one "
                "process; a selecting training step's data wait; a projection to a 16-core GPU host (a projection "
                "from measured points, not a measurement)"
            ),
            "cpu": cpu_model(),
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "cores": len(os.sched_getaffinity(0)),
            "torch_threads": torch.get_num_threads(),
            "pool_rows": rows,
            "image_kb_mean": mean_kb,
            "image_size": SIZE,
            "repeats": args.repeats,
            "images_per_s": median,
            "images_per_s_repeats": rates,
            "decode_speedup_over_full": median["bare_decode"] / median["bare_full_decode"],
            "delivered_1_worker_over_bare": median["delivered_1_worker"] / median["bare_decode"],
            "delivered_2_over_1_workers": scaling,
            "bare_2_processes_over_1": median["bare_decode_2_processes"] / median["bare_decode"],
            "scorer": args.scorer,
            "bare_forward_images_per_s": bare_forward,
            "scoring_over_min_of_forward_and_delivered": median["scoring"] / min(bare_forward, median["delivered_2_workers"]),
            "training": {
                "learner": args.learner,
                "policy": "hard_learner (the learner scores its super-batch)",
                "batch": 64,
                "keep": 0.5,
                "workers": 2,
                "steps": args.train_steps,
                "warmup_left_out": args.warmup,
                "step_seconds_median": step_s,
                "data_seconds_median": wait_s,
                "data_wait_share": wait_s / step_s,
                "images_per_step": 128,
            },
            "projection": {
                "label": "projection from measured points, not a measurement",
                "cores": PROJECTED_CORES,
                "workers": PROJECTED_CORES - 1,
                "assumes": (
                    "this CPU's 2-worker rate over 2 per worker (the main process's share included), linear in workers, "
                    "these images (mean size above); the need as if a selecting step were as fast as a uniform one "
                    "(it is slower: an upper bound)"
                ),
                "per_worker_images_per_s": per_worker,
                "short_side_px": [256, 640],
                "h100_vit_b32_pairs_per_s": H100_VIT_B32_PAIRS_PER_S,
                "source": H100_SOURCE,
                "rows": projection,
            },
        },
        args.out,
    )


if __name__ == "__main__":
    main()
