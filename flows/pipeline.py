"""Prefect flows: one per stage, and pipeline_flow chaining them (DESIGN.md, The chain).

Flows take the params file and overrides (strings), so deployments and the CLI
can trigger them with plain arguments; validation happens here, at the edge.
"""

from __future__ import annotations

from prefect import flow

from tasks.stages import data_task, evaluate_task, reference_task, score_task, summary_task, train_task
from winnow.config import load_params


@flow(name="data")
def data_flow(params_path: str = "params.yaml", overrides: list[str] | None = None, force: bool = False) -> dict:
    return data_task(load_params(params_path, overrides), force)


@flow(name="reference")
def reference_flow(params_path: str = "params.yaml", overrides: list[str] | None = None) -> dict:
    return reference_task(load_params(params_path, overrides))


@flow(name="score")
def score_flow(params_path: str = "params.yaml", overrides: list[str] | None = None) -> dict:
    return score_task(load_params(params_path, overrides))


@flow(name="train")
def train_flow(policy: str, params_path: str = "params.yaml", overrides: list[str] | None = None) -> dict:
    return train_task(load_params(params_path, overrides), policy)


@flow(name="evaluate")
def evaluate_flow(params_path: str = "params.yaml", overrides: list[str] | None = None) -> dict:
    return evaluate_task(load_params(params_path, overrides))


@flow(name="summary")
def summary_flow(params_path: str = "params.yaml", overrides: list[str] | None = None) -> dict:
    return summary_task(load_params(params_path, overrides))


@flow(name="pipeline")
def pipeline_flow(params_path: str = "params.yaml", overrides: list[str] | None = None) -> dict:
    """data -> reference -> score -> train (every policy) -> evaluate -> summary."""
    params = load_params(params_path, overrides)
    data_task(params)
    reference_task(params)
    score_task(params)
    for policy in params.train.policies:
        train_task(params, policy)
    evaluate_task(params)
    return summary_task(params)
