"""Offline scoring: the reference's loss on every pool example, one Parquet file per shard.

Each shard's file is written to a temporary name and renamed when complete, so a
crash loses at most the shard in flight; a rerun scores only shards with no file.
Shards are independent, so they can be scored by many processes (flows/pipeline.py
maps them over a Dask cluster); one process then ingests them into the store
(store.py), one transaction per shard.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch import nn
from tqdm import tqdm

from winnow.datasets.ahead import Ahead
from winnow.datasets.contract import shard_files
from winnow.datasets.workers import usable_cores
from winnow.files import atomic_path, write_json
from winnow.method import objectives
from winnow.method.losses import embed_examples, score_examples
from winnow.scores import store

log = logging.getLogger("winnow")

SCORE_SCHEMA = pa.schema([("example_id", pa.int64()), ("loss", pa.float32()), ("status", pa.string())])


def score_shard(
    model: nn.Module,
    shard: Path,
    size: int,
    num_classes: int,
    batch_size: int,
    objective: str = "classification",
    model_name: str = "",
    timings: dict | None = None,
    ahead: Ahead | None = None,
    then: Callable[[], None] | None = None,
    fit: str = "squash",
) -> pa.Table:
    """Loss of every row of one pool shard. Rows it cannot score (undecodable image, empty
    caption, no label) get loss NULL and the reason as status: skipped and counted, not lost.
    `ahead`: the shard already decoding in a thread (score_shards); else it is decoded here. `then`: called once it
    is decoded, before the forward (score_shards starts the next shard's decode there). `timings`, when given,
    gets the seconds of decoding (images, and tokenising captions), of the scorer waiting for it, and of the forward."""
    started = time.perf_counter()
    split, targets = ahead.result() if ahead is not None else reader(objective, model_name, size, num_classes, fit)(shard)
    decoded = time.perf_counter()
    decode_seconds = ahead.seconds if ahead is not None else decoded - started
    if then is not None:
        then()
    skipped = [s["id"] for s in split.skipped]
    columns = {
        "example_id": pa.array(np.concatenate([split.ids, np.asarray(skipped, dtype=np.int64)]), pa.int64()),
        "status": pa.array(["ok"] * len(split) + [s["reason"] for s in split.skipped], pa.string()),
    }
    schema = SCORE_SCHEMA
    if objectives.OBJECTIVES[objective].joint:  # JEST rebuilds the reference's logits of any super-batch from these
        losses, image, text = (t.numpy() for t in embed_examples(model, split.images, targets, batch_size))
        for name, features in (("image_embedding", image), ("text_embedding", text)):
            dim = features.shape[1] if len(features) else int(getattr(model.visual, "output_dim", 1))
            padded = np.concatenate([features.reshape(-1, dim), np.full((len(skipped), dim), np.nan, np.float32)])
            columns[name] = pa.FixedSizeListArray.from_arrays(pa.array(padded.ravel(), pa.float32()), dim)
            schema = schema.append(pa.field(name, columns[name].type))
    else:
        losses = score_examples(model, split.images, targets, batch_size, objectives.OBJECTIVES[objective].loss).numpy()
    if timings is not None:
        forward = time.perf_counter() - decoded
        timings.update(decode_seconds=decode_seconds, wait_seconds=decoded - started, forward_seconds=forward)
    columns["loss"] = pa.array(
        np.concatenate([losses, np.full(len(skipped), np.nan, np.float32)]),
        pa.float32(),
        mask=np.arange(len(split) + len(skipped)) >= len(split),
    )
    return pa.table({f.name: columns[f.name] for f in schema}, schema=schema).sort_by("example_id")


def decode(objective: str, model_name: str, shard: Path, size: int, num_classes: int, fit: str = "squash"):
    """One shard as scoring reads it: its usable rows and their targets (objectives.decode_shard)."""
    return objectives.decode_shard(objective, model_name, shard, size, num_classes, ("caption",), fit)


def reader(objective: str, model_name: str, size: int, num_classes: int, fit: str = "squash") -> Callable[[Path], tuple]:
    """decode(shard) for one scorer and pool."""
    return functools.partial(decode, objective, model_name, size=size, num_classes=num_classes, fit=fit)


def write_shard_scores(
    model: nn.Module,
    shard: Path,
    out_dir: Path,
    size: int,
    num_classes: int,
    batch_size: int,
    objective: str = "classification",
    model_name: str = "",
    ahead: Ahead | None = None,
    then: Callable[[], None] | None = None,
    fit: str = "squash",
) -> int:
    """Score one shard into out_dir/<shard name> (atomically), and what it took beside it (<shard name>.json: rows
    and seconds, so a run killed half-way still counts the shards it scored); 0 rows if it is already there."""
    out = out_dir / shard.name
    if out.exists():
        return 0
    started, timings = time.perf_counter(), {}
    table = score_shard(model, shard, size, num_classes, batch_size, objective, model_name, timings, ahead, then, fit)
    with atomic_path(out) as tmp:  # dictionary-encoding float losses and embeddings took 3x as long, for a larger file
        pq.write_table(table, tmp, use_dictionary=["status"])
    write_json({"rows": table.num_rows, "seconds": time.perf_counter() - started, **timings}, out.with_name(out.name + ".json"))
    return table.num_rows


def spent(out_dir: Path) -> dict:
    """Rows and seconds of every shard scored into out_dir, over every run that scored some (one killed half-way
    included): what scoring the pool cost; how long decoding took (overlapped with the previous shard's forward
    when shards are scored in one process), how long the forward waited for it, and the forward. Under Dask,
    seconds are summed over workers."""
    records = [json.loads(p.read_text()) for p in sorted(out_dir.glob("part-*.parquet.json"))]
    parts = ("decode_seconds", "wait_seconds", "forward_seconds")
    # shards scored before a part was recorded have none: the part is unknown, not zero
    known = {k: sum(r[k] for r in records) if records and all(k in r for r in records) else None for k in parts}
    return {"rows": sum(r["rows"] for r in records), "seconds": sum(r["seconds"] for r in records), **known}


def decode_ahead_pays(model: nn.Module) -> bool:
    """Whether decoding the next shard in a thread while this one is scored pays: when the forward runs on an
    accelerator, or the CPU has cores torch's threads leave free. On a CPU whose every core runs the forward, the
    decoding thread only takes cores (and the GIL) from it: fewer rows per second than scoring one shard after
    another, in every run on 2 cores for both objectives (benchmarks/scoring_throughput.py, docs/benchmarks.md)."""
    if next(model.parameters()).device.type != "cpu":
        return True
    return usable_cores() > torch.get_num_threads()


def score_shards(
    model: nn.Module,
    pool_dir: Path,
    out_dir: Path,
    size: int,
    num_classes: int,
    batch_size: int,
    objective: str = "classification",
    model_name: str = "",
    on_shard: Callable[[Path], None] | None = None,
    ahead: bool | None = None,
    fit: str = "squash",
) -> dict:
    """Write out_dir/part-*.parquet for every pool shard that has none yet, in this process. `ahead`: decode the next
    shard in a thread while this one is scored (None: where that pays, decode_ahead_pays). Returns counts."""
    shards = shard_files(pool_dir)
    todo = [s for s in shards if not (out_dir / s.name).exists()]
    read = reader(objective, model_name, size, num_classes, fit)
    ahead = decode_ahead_pays(model) if ahead is None else ahead
    started, rows, current, following = time.perf_counter(), 0, None, None

    def start_next(i: int) -> None:  # once shard i is decoded: one shard decoding at a time
        nonlocal following
        following = Ahead(i + 1, read, todo[i + 1]) if i + 1 < len(todo) else None

    try:
        for i, shard in enumerate(tqdm(todo, desc="score", unit="shard", leave=False, disable=None)):
            current, following = following if following is not None else Ahead(i, read, shard) if ahead else None, None
            then = functools.partial(start_next, i) if ahead else None  # the next decodes during this one's forward
            rows += write_shard_scores(
                model, shard, out_dir, size, num_classes, batch_size, objective, model_name, current, then, fit
            )
            if on_shard is not None:
                on_shard(out_dir / shard.name)
    finally:  # no decode thread outlives the stage, whatever stopped it
        for pending in (current, following):
            if pending is not None:
                pending.thread.join()
    seconds = time.perf_counter() - started
    return {"shards": len(shards), "shards_scored": len(todo), "rows_scored": rows, "seconds": seconds, "decoded_ahead": ahead}


def bare_forward_rate(
    model: nn.Module,
    shard: Path,
    size: int,
    num_classes: int,
    batch_size: int,
    objective: str = "classification",
    model_name: str = "",
    fit: str = "squash",
) -> float:
    """Examples/s of the model's forward alone, on one shard already decoded and in memory:
    the ceiling that scoring (with decoding and writing) is measured against."""
    split, targets = decode(objective, model_name, shard, size, num_classes, fit)
    images = split.images.clone()  # in memory: the decoded cache maps them from its file, page by page as they are read
    loss = objectives.OBJECTIVES[objective].loss
    score_examples(model, images[:batch_size], targets[:batch_size], batch_size, loss)  # warm-up
    started = time.perf_counter()
    score_examples(model, images, targets, batch_size, loss)
    return len(split) / (time.perf_counter() - started)


def ingest(store_path: Path, scorer_id: str, out_dir: Path) -> dict:
    """Ingest every scored shard not yet in the store. Returns rows and shards ingested and the rate."""
    started, rows, shards = time.perf_counter(), 0, 0
    with store.connect(store_path) as con:
        done = store.ingested_shards(con, scorer_id)
        for path in sorted(out_dir.glob("part-*.parquet")):
            if path.name not in done:
                rows += store.ingest_shard(con, scorer_id, path.name, path)
                shards += 1
    seconds = time.perf_counter() - started
    return {
        "rows_ingested": rows,
        "shards_ingested": shards,
        "ingest_seconds": seconds,
        "ingest_rows_per_s": rows / seconds if rows else None,
    }
