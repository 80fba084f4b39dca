"""Prefect flows: one per stage, and pipeline_flow chaining them (docs/DESIGN.md, The chain).

Flows take the params file and overrides (strings), so deployments and the CLI
can trigger them with plain arguments; validation happens here, at the edge.
"""

from __future__ import annotations

import time

from prefect import flow, unmapped
from prefect.futures import wait

from tasks.caching import cached
from tasks.stages import (
    bench_task,
    curate_task,
    data_task,
    evaluate_task,
    reference_task,
    score_finish_task,
    score_plan_task,
    score_shard_task,
    score_task,
    summary_task,
    train_task,
)
from winnow.config import Params, ScoreConfig, load_params
from winnow.method.policies import POLICIES
from winnow.stages.chain import CHAIN, arm_order


@flow(name="data")
def data_flow(params_path: str = "params.yaml", overrides: list[str] | None = None, force: bool = False) -> dict:
    params = load_params(params_path, overrides)
    return data_task.with_options(refresh_cache=True)(params, force) if force else cached(data_task, "data", params)(params)


@flow(name="reference")
def reference_flow(params_path: str = "params.yaml", overrides: list[str] | None = None) -> dict:
    params = load_params(params_path, overrides)
    return cached(reference_task, "reference", params)(params)


@flow(name="score")
def score_flow(params_path: str = "params.yaml", overrides: list[str] | None = None) -> dict:
    params = load_params(params_path, overrides)
    return _score(params, params_path, overrides)


def _score(params: Params, params_path: str, overrides: list[str] | None) -> dict:
    """In this process (cached like dvc repro), or shard by shard over Dask when score.dask_* is set."""
    if params.score.dask_workers or params.score.dask_address:
        return sharded_score_flow.with_options(task_runner=dask_runner(params.score))(params_path, overrides)
    return cached(score_task, "score", params)(params)


def dask_runner(score: ScoreConfig):
    """prefect-dask's task runner: a running cluster at score.dask_address, or a local one of
    score.dask_workers single-threaded worker processes (torch then uses one thread each)."""
    from prefect_dask import DaskTaskRunner

    if score.dask_address:
        return DaskTaskRunner(address=score.dask_address)
    return DaskTaskRunner(
        cluster_kwargs={"n_workers": score.dask_workers, "threads_per_worker": 1, "processes": True, "dashboard_address": None}
    )


@flow(name="score-sharded")
def sharded_score_flow(params_path: str = "params.yaml", overrides: list[str] | None = None) -> dict:
    """plan -> one task per pool shard, mapped over the flow's task runner (Dask) -> ingest in this process.
    Workers must see data/ and artifacts/ at the same paths (a shared filesystem); only this process writes the store."""
    params = load_params(params_path, overrides)
    plan = score_plan_task(params)
    if plan["reused"]:
        return {k: v for k, v in plan.items() if k != "todo"}
    started = time.perf_counter()
    shards = score_shard_task.map(unmapped(params), unmapped(plan["scorer_id"]), plan["todo"]).result()
    return score_finish_task(params, plan, shards, time.perf_counter() - started)


@flow(name="train")
def train_flow(policy: str, params_path: str = "params.yaml", overrides: list[str] | None = None) -> dict:
    params = load_params(params_path, overrides)
    return cached(train_task, "train", params, policy)(params, policy)


@flow(name="curate")
def curate_flow(params_path: str = "params.yaml", overrides: list[str] | None = None) -> dict:
    params = load_params(params_path, overrides)
    return cached(curate_task, "curate", params)(params)


@flow(name="evaluate")
def evaluate_flow(params_path: str = "params.yaml", overrides: list[str] | None = None) -> dict:
    params = load_params(params_path, overrides)
    return cached(evaluate_task, "evaluate", params)(params)


@flow(name="summary")
def summary_flow(params_path: str = "params.yaml", overrides: list[str] | None = None) -> dict:
    params = load_params(params_path, overrides)
    return cached(summary_task, "summary", params)(params)


@flow(name="pipeline")
def pipeline_flow(params_path: str = "params.yaml", overrides: list[str] | None = None) -> dict:
    """The chain (winnow.stages.chain.CHAIN): data -> reference -> score -> train (every policy) -> curate ->
    evaluate -> summary. Each stage is a cache hit when what it reads is unchanged and its outputs are there."""
    from winnow.stages.train import check_arms  # torch with it: imported once a flow runs, not at start-up

    params = load_params(params_path, overrides)
    tasks = {"data": data_task, "reference": reference_task, "curate": curate_task, "evaluate": evaluate_task}
    for stage in CHAIN:
        if stage == "score":
            _score(params, params_path, overrides)
        elif stage == "train":
            _train_arms(params)
        elif stage != "summary":
            cached(tasks[stage], stage, params)(params)
        if stage == "data":  # the pool made or checked: an arm that cannot run on it is named now, before the reference
            check_arms(params)
    return cached(summary_task, "summary", params)(params)


def _train_arms(params: Params) -> None:
    """Every policy, in arm_order (shuffled by the seed: no arm always first); with train.parallel_arms > 1, that many
    at once, each in a process of its own (tasks/launch.py). Every arm finishes or fails on its own; once all have
    stopped, the failure of the first failed arm in that order is raised, so a wrong input in one arm loses none of
    the others' work."""
    order = arm_order(params)
    if params.train.parallel_arms == 1:
        for policy in order:
            cached(train_task, "train", params, policy)(params, policy)
        return
    replays = [p for p in order if POLICIES[p].replays]  # after the others: each needs a recorded sequence
    futures = [cached(train_task, "train", params, p).submit(params, p, apart=True) for p in order if p not in replays]
    wait(futures)
    for future in futures:
        future.result()
    for policy in replays:
        cached(train_task, "train", params, policy)(params, policy)


@flow(name="bench")
def bench_flow(params_path: str = "params.yaml", overrides: list[str] | None = None, study: str = "policies") -> dict:
    """One `winnow bench` study (winnow.studies.STUDIES: policies side by side over seeds by default), with its
    report under reports/<dataset>/ (the memory studies: their JSON under metrics/<dataset>/bench/)."""
    params = load_params(params_path, overrides)
    cached(data_task, "data", params)(params)
    return bench_task(params, study)


STAGE_FLOWS = {
    "reference": reference_flow,
    "score": score_flow,
    "curate": curate_flow,
    "evaluate": evaluate_flow,
    "summary": summary_flow,
}


def serve(params_path: str, overrides: list[str], cron: str | None, interval_minutes: float | None) -> None:
    """Serve the pipeline on a schedule, and every stage on demand (`prefect deployment run <flow>/<name>`).

    Needs a real Prefect server (PREFECT_API_URL): ephemeral mode cannot run schedules.
    Blocks until interrupted; runs execute in subprocesses of this one, in this working directory.
    """
    from datetime import timedelta

    from prefect import serve as prefect_serve

    parameters = {"params_path": str(params_path), "overrides": list(overrides)}
    schedule = {"cron": cron} if cron else {"interval": timedelta(minutes=interval_minutes)} if interval_minutes else {}
    deployments = [pipeline_flow.to_deployment(name="pipeline", parameters=parameters, **schedule)]
    deployments += [f.to_deployment(name=name, parameters=parameters) for name, f in STAGE_FLOWS.items()]
    prefect_serve(*deployments)
