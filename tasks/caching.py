"""Prefect cache keys that agree with `dvc repro`: a task reruns when DVC would rerun its stage.

The key is winnow.stages.lineage.stage_key (what dvc.yaml lists: deps' contents, code included, and
params) plus the task's source. An output missing, corrupt or written by a run of another key (each stage
stamps its outputs with its key) makes the stage recompute, so a cache hit never hands back a result
whose files are gone or are another run's; WINNOW_NO_CACHE=1 turns caching off.
"""

from __future__ import annotations

import os

from prefect.cache_policies import NO_CACHE, TASK_SOURCE, CacheKeyFnPolicy

from winnow.config import Params
from winnow.stages import lineage


def dvc_stage_policy(stage: str):
    """A Prefect cache policy keyed like `dvc repro` (see winnow.stages.lineage), plus the task's own source."""

    def key(context, parameters) -> str:
        item = parameters.get("policy")
        return f"{stage}-{item or ''}-" + lineage.stage_key(stage, parameters["params"], item)

    return CacheKeyFnPolicy(cache_key_fn=key) + TASK_SOURCE


def caching_off() -> bool:
    return bool(os.environ.get("WINNOW_NO_CACHE"))


def cached(task, stage: str, params: Params, item: str | None = None):
    """The task, told to recompute (and refresh its cache entry) when its outputs are not all intact;
    with WINNOW_NO_CACHE set, uncached."""
    if caching_off():
        return task.with_options(cache_policy=NO_CACHE)
    return task.with_options(refresh_cache=not lineage.outputs_intact(stage, params, item))
