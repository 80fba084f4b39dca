"""Prefect cache keys that agree with `dvc repro`: a task reruns when DVC would rerun its stage.

The key is winnow.stages.lineage.stage_key (what dvc.yaml lists: deps' contents, code included, and
params) plus the task's source. An output missing or corrupt makes the stage recompute, so a
cache hit never hands back a result whose files are gone; WINNOW_NO_CACHE=1 turns caching off.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from prefect.cache_policies import NO_CACHE, TASK_SOURCE, CacheKeyFnPolicy

from winnow.config import Params
from winnow.stages import lineage


def stage_key(stage: str, params: Params, item: str | None = None) -> str:
    if stage == "data":  # not a DVC stage (data.dvc tracks its output): it follows from its params and code
        from winnow.datasets.synth import generator_params

        content = {"stage": stage, "generator": generator_params(params.data), "root": params.data.root}
        return hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()
    return lineage.stage_key(stage, params, item)


def outputs_intact(stage: str, params: Params, item: str | None = None) -> bool:
    if stage == "data":
        return (Path(params.data.root) / "manifest.json").exists()
    return lineage.outputs_intact(stage, params, item)


def dvc_stage_policy(stage: str):
    """A Prefect cache policy keyed like `dvc repro` (see winnow.stages.lineage), plus the task's own source."""

    def key(context, parameters) -> str:
        item = parameters.get("policy")
        return f"{stage}-{item or ''}-" + stage_key(stage, parameters["params"], item)

    return CacheKeyFnPolicy(cache_key_fn=key) + TASK_SOURCE


def caching_off() -> bool:
    return bool(os.environ.get("WINNOW_NO_CACHE"))


def cached(task, stage: str, params: Params, item: str | None = None):
    """The task, told to recompute (and refresh its cache entry) when its outputs are not all intact;
    with WINNOW_NO_CACHE set, uncached."""
    if caching_off():
        return task.with_options(cache_policy=NO_CACHE)
    return task.with_options(refresh_cache=not outputs_intact(stage, params, item))
