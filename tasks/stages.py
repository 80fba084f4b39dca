"""Prefect tasks: one stage call each, plus what orchestration owns (retries, logs, artifacts)."""

from __future__ import annotations

import os
import socket
import time

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from tasks import launch
from tasks.caching import dvc_stage_policy
from winnow.config import Params
from winnow.errors import StoreBusy, WinnowError
from winnow.method.devices import under_torchrun
from winnow.method.objectives import OBJECTIVES
from winnow.reports.tables import table
from winnow.stages.curate import curate_stage
from winnow.stages.data import data_stage
from winnow.stages.evaluate import evaluate_stage
from winnow.stages.paths import Paths
from winnow.stages.reference import reference_stage
from winnow.stages.score import score_finish, score_one_shard, score_plan, score_stage
from winnow.stages.summary import summary_stage
from winnow.stages.train import train_stage
from winnow.studies import STUDIES


def transient(task, task_run, state) -> bool:
    """Retry what may pass (a busy store, a full disk freed), never a wrong input: it would fail the same way."""
    error = state.data if isinstance(state.data, BaseException) else None
    return isinstance(error, StoreBusy) or not isinstance(error, WinnowError)


# Stages resume, so a retry redoes little. Results persist so that a rerun with unchanged inputs is a
# cache hit (tasks/caching.py: keyed like dvc repro).
STAGE = dict(retries=1, retry_delay_seconds=5, retry_condition_fn=transient, persist_result=True)


@task(name="data", cache_policy=dvc_stage_policy("data"), **STAGE)
def data_task(params: Params, force: bool = False) -> dict:
    out = data_stage(params, force)
    what = "generated" if out["generated"] else "already present"
    pool = (out["counts"] or {}).get("pool", "?")  # a hand-written manifest may not count its examples
    get_run_logger().info("data: %s at %s (%s pool examples)", what, out["root"], pool)
    return out


@task(name="reference", cache_policy=dvc_stage_policy("reference"), **STAGE)
def reference_task(params: Params) -> dict:
    out = reference_stage(params)
    get_run_logger().info(
        "reference: %s, %d steps on %d curated examples, held-out %s %.4f (%.0f s)",
        out["model"],
        out["steps"],
        out["train_examples"],
        out["test_metric"].replace("_", " "),
        out["final_metric"],
        out["seconds"],
    )
    return out


@task(name="score", cache_policy=dvc_stage_policy("score"), **STAGE)
def score_task(params: Params) -> dict:
    out = score_stage(params)
    if out["reused"]:
        get_run_logger().info(
            "score: scorer %s already complete in the store (%d examples); reused", out["scorer_id"], out["num_examples"]
        )
    else:
        get_run_logger().info(
            "score: scorer %s, %d examples scored in %d shards (%.0f s), %d ingested at %.0f rows/s, %d unscorable",
            out["scorer_id"],
            out["rows_scored"],
            out["shards_scored"],
            out["seconds"],
            out["rows_ingested"],
            out["ingest_rows_per_s"] or 0,
            out["unscorable"],
        )
    return out


@task(name="score-plan", cache_policy=NO_CACHE, **STAGE)
def score_plan_task(params: Params) -> dict:
    out = score_plan(params)
    what = "already complete in the store; reused" if out["reused"] else f"{len(out['todo'])} shards to score"
    get_run_logger().info("score: scorer %s, %s", out["scorer_id"], what)
    return out


@task(name="score-shard", task_run_name="score-{shard}", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=5)
def score_shard_task(params: Params, scorer_id: str, shard: str) -> dict:
    """One pool shard, on whichever Dask worker runs it; torch uses only the worker's own threads."""
    try:
        import torch
        from distributed import get_worker

        torch.set_num_threads(max(1, get_worker().state.nthreads))
    except (ImportError, ValueError):  # not on a Dask worker
        pass
    started = time.perf_counter()
    rows = score_one_shard(params, scorer_id, shard)
    return {
        "shard": shard,
        "rows": rows,
        "seconds": time.perf_counter() - started,
        "worker": f"{socket.gethostname()}:{os.getpid()}",
    }


@task(name="score-finish", cache_policy=NO_CACHE, **STAGE)
def score_finish_task(params: Params, plan: dict, shards: list[dict], seconds: float) -> dict:
    counts = {
        "shards": len(shards),
        "shards_scored": sum(1 for s in shards if s["rows"]),
        "rows_scored": sum(s["rows"] for s in shards),
        "seconds": seconds,
        "workers": sorted({s["worker"] for s in shards}),
    }
    out = score_finish(params, plan, counts)
    get_run_logger().info(
        "score: %d examples scored in %d shards over %d workers (%.0f s), %d ingested, %d unscorable",
        out["rows_scored"],
        out["shards_scored"],
        len(counts["workers"]),
        seconds,
        out["rows_ingested"],
        out["unscorable"],
    )
    return out


@task(name="train", task_run_name="train-{policy}", cache_policy=dvc_stage_policy("train"), **STAGE)
def train_task(params: Params, policy: str, apart: bool = False) -> dict:
    """The train stage: here, as DDP ranks (train.nproc_per_node), or with `apart` in a process of its own, one of
    train.parallel_arms arms at once (the cache key is the stage's either way: params and policy)."""
    if params.train.nproc_per_node > 1 and not under_torchrun():
        out = launch.train_distributed(params, policy)
    else:
        out = launch.train_apart(params, policy) if apart else train_stage(params, policy)
    objective = OBJECTIVES[params.objective]
    noise = out["selected_mix"].get(objective.noise)
    get_run_logger().info(
        "train %s: %d steps, final held-out %s %.4f, %s in kept batches %s (%.0f s)",
        policy,
        out["steps"],
        objective.metric.replace("_", " "),
        out["final_metric"],
        objective.noise.replace("_", " "),
        "unknown" if noise is None else f"{noise:.3f}",
        out["seconds"],
    )
    return out


@task(name="curate", cache_policy=dvc_stage_policy("curate"), **STAGE)
def curate_task(params: Params) -> dict:
    out = curate_stage(params)
    noise = out["pathology"].get(OBJECTIVES[params.objective].noise)
    get_run_logger().info(
        "curate: rule %s kept %d of %d pool examples (%.1f%%)%s, written to %s (%.0f s)",
        out["rule"],
        out["kept_rows"],
        out["pool_rows"],
        100 * out["kept_fraction"],
        f"; {noise['kept']} of {noise['pool']} {OBJECTIVES[params.objective].noise.replace('_', ' ')} kept" if noise else "",
        out["dest"],
        out["seconds"],
    )
    create_markdown_artifact(Paths.of(params).curate_report.read_text(), key=f"{params.objective}-curate")
    return out


@task(name="evaluate", cache_policy=dvc_stage_policy("evaluate"), **STAGE)
def evaluate_task(params: Params) -> dict:
    out = evaluate_stage(params)
    headline = OBJECTIVES[params.objective].headline

    def probes(metrics: dict) -> str:  # one linear probe per transfer task; none where the data has no such task
        found = [
            f"{k.removesuffix('_probe_accuracy')} probe {v:.3f}" for k, v in metrics.items() if k.endswith("_probe_accuracy")
        ]
        return f" ({', '.join(found)})" if found else ""

    get_run_logger().info("evaluate: " + ", ".join(f"{k} {headline} {v[headline]:.4f}{probes(v)}" for k, v in out.items()))
    return out


@task(name="summary", cache_policy=dvc_stage_policy("summary"), **STAGE)
def summary_task(params: Params) -> dict:
    out = summary_stage(params)
    rows = [
        {
            "policy": p,
            **{k: v for k, v in r.items() if k not in ("selected_mix", "probe_accuracy")},
            **{f"{t}_probe": v for t, v in r.get("probe_accuracy", {}).items()},
        }
        for p, r in out["policies"].items()
    ]
    create_table_artifact(
        rows, key=f"{params.objective}-summary", description=f"winnow {params.objective}: target {out['target']:.4f}"
    )
    create_markdown_artifact(f"```\n{table(out)}\n```", key=f"{params.objective}-report")
    get_run_logger().info("summary:\n%s", table(out))
    return out


@task(name="bench", cache_policy=NO_CACHE)
def bench_task(params: Params, study: str = "policies") -> dict:
    out = STUDIES[study].run(params)
    shown = STUDIES[study].table(out)
    create_markdown_artifact(f"```\n{shown}\n```", key=f"bench-{params.objective}-{study}".replace("_", "-"))
    get_run_logger().info("bench %s %s:\n%s", params.objective, study, shown)
    return out
