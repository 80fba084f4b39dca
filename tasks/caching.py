"""Prefect cache keys that agree with `dvc repro`: a stage reruns when DVC would rerun it.

A task's key hashes what dvc.yaml lists for its stage (deps' file contents and the
params sections) and the task's source. Change a learner param and only train, evaluate
and summary miss the cache; delete an output and `cached` makes that stage recompute,
so a cache hit never leaves a hole behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

import yaml
from prefect.cache_policies import TASK_SOURCE, CacheKeyFnPolicy

from winnow.config import Params, to_dict
from winnow.data import file_sha256

DVC_YAML = Path(__file__).resolve().parents[1] / "dvc.yaml"
_file_digests: dict[tuple, str] = {}  # (path, size, mtime_ns) -> sha256, so a pipeline hashes each file once


def _digest_file(path: Path) -> str:
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _file_digests:
        _file_digests[key] = file_sha256(path)
    return _file_digests[key]


def digest_path(path: str | Path) -> str:
    """Content hash of a file or of every file under a folder; 'missing' when absent."""
    path = Path(path)
    if path.is_file():
        return _digest_file(path)
    if not path.is_dir():
        return "missing"
    h = hashlib.sha256()
    for child in sorted(p for p in path.rglob("*") if p.is_file() and not p.name.endswith(".tmp") and "__pycache__" not in p.parts):
        h.update(str(child.relative_to(path)).encode())
        h.update(_digest_file(child).encode())
    return h.hexdigest()


def _resolve(text: str, values: dict, item: str | None) -> str:
    """dvc.yaml's ${a.b} templating, from the params (and ${item} inside a foreach)."""
    def lookup(match):
        name = match.group(1)
        if name == "item":
            return str(item)
        node = values
        for part in name.split("."):
            node = node[part]
        return str(node)

    return re.sub(r"\$\{([^}]+)\}", lookup, text)


def stage_spec(stage: str, params: Params, item: str | None = None) -> dict:
    """deps, params and outs of one dvc.yaml stage, resolved against these params."""
    spec = yaml.safe_load(DVC_YAML.read_text())["stages"][stage]
    spec = spec.get("do", spec)
    values = to_dict(params)

    def paths(entries):
        return [_resolve(next(iter(e)) if isinstance(e, dict) else e, values, item) for e in entries or []]

    outs = paths(spec.get("outs")) + paths(spec.get("metrics")) + paths(spec.get("plots"))
    return {"deps": paths(spec.get("deps")), "params": [p for p in spec.get("params", [])], "outs": outs}


def stage_key(stage: str, params: Params, item: str | None = None) -> str:
    """Hash of what the stage reads: its dvc.yaml deps (contents) and params sections."""
    values = to_dict(params)
    if stage == "data":  # not a DVC stage (data.dvc tracks its output): it follows from its params and code
        from winnow.synth import generator_params

        content = {"stage": stage, "generator": generator_params(params.data), "root": params.data.root}
    else:
        spec = stage_spec(stage, params, item)
        content = {"stage": stage, "item": item, "objective": params.objective,
                   "params": {name: values.get(name) for name in spec["params"]},
                   "deps": {dep: digest_path(dep) for dep in spec["deps"]}}
    return hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()


def outputs_present(stage: str, params: Params, item: str | None = None) -> bool:
    """Whether every output of the stage is on disk; if not, its cache entry must not be trusted."""
    if stage == "data":
        return (Path(params.data.root) / "manifest.json").exists()
    return all(Path(out).exists() for out in stage_spec(stage, params, item)["outs"])


def dvc_stage_policy(stage: str):
    """A Prefect cache policy keyed like `dvc repro` (see stage_key), plus the task's own source."""
    def key(context, parameters) -> str | None:
        if os.environ.get("WINNOW_NO_CACHE"):
            return None
        item = parameters.get("policy")
        return f"{stage}-{item or ''}-" + stage_key(stage, parameters["params"], item)

    return CacheKeyFnPolicy(cache_key_fn=key) + TASK_SOURCE


def cached(task, stage: str, params: Params, item: str | None = None):
    """The task, told to recompute (and refresh its cache entry) when its outputs are not all there."""
    return task.with_options(refresh_cache=not outputs_present(stage, params, item))
