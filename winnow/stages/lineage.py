"""What each stage depends on: one definition, read by `dvc repro`, the Prefect cache and resume.

dvc.yaml is that definition. A stage's key hashes the contents of its deps (data folders, the
upstream outputs it reads, and every file of code it runs) and the values of its params. The
Prefect cache is keyed on it (tasks/caching.py), a checkpoint records it (a resumed or finished
checkpoint with another key is stale), and DVC reruns a stage on the same changes. A test
(tests/test_lineage.py) runs each stage under a tracer and checks that dvc.yaml lists every
file of winnow's code it executed, so the three cannot drift apart.

Paths in dvc.yaml that use ${...} are run paths, relative to the working directory like the
params that make them; literal paths are code, relative to the repository.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import re
from pathlib import Path

import yaml

from winnow.config import Params, to_dict
from winnow.datasets.contract import dataset_problem
from winnow.datasets.digests import digest_path

REPO = Path(__file__).resolve().parents[2]
DVC_YAML = REPO / "dvc.yaml"


def _lookup(values: dict, dotted: str):
    node = values
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _resolve(text: str, values: dict, item: str | None) -> str:
    """dvc.yaml's ${a.b} templating, from the params (and ${item} inside a foreach)."""
    return re.sub(r"\$\{([^}]+)\}", lambda m: str(item) if m.group(1) == "item" else str(_lookup(values, m.group(1))), text)


def _entries(entries, values: dict, item: str | None) -> list[Path]:
    paths = []
    for entry in entries or []:
        text = next(iter(entry)) if isinstance(entry, dict) else entry
        paths.append(Path(_resolve(text, values, item)) if "${" in text else REPO / text)
    return paths


@functools.lru_cache(maxsize=4)
def _dvc_stages(path: str, stamp: tuple) -> dict:
    """dvc.yaml's stages, parsed once per version of the file (`stamp`: its size and mtime)."""
    return yaml.safe_load(Path(path).read_text())["stages"]


def stage_spec(stage: str, params: Params, item: str | None = None) -> dict:
    """deps (run paths and code), params (dotted names) and outs of one dvc.yaml stage, resolved."""
    stat = DVC_YAML.stat()
    spec = copy.deepcopy(_dvc_stages(str(DVC_YAML), (stat.st_size, stat.st_mtime_ns))[stage])
    spec = spec.get("do", spec)
    values = to_dict(params)
    outs = [p for key in ("outs", "metrics", "plots") for p in _entries(spec.get(key), values, item)]
    return {"deps": _entries(spec.get("deps"), values, item), "params": list(spec.get("params", [])), "outs": outs}


def stage_key(stage: str, params: Params, item: str | None = None) -> str:
    """Hash of everything the stage reads: its deps' contents and its params' values.
    (`objectives` is already merged into the sections it overrides, so it adds nothing here.)
    The data stage is no DVC stage (data.dvc tracks its output): its key is the generator's params and code."""
    if stage == "data":
        from winnow.datasets.synth import generator_params

        content = {"stage": stage, "generator": generator_params(params.data), "root": params.data.root}
        return hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()
    spec, values = stage_spec(stage, params, item), to_dict(params)
    content = {
        "stage": stage,
        "item": item,
        "objective": params.objective,
        "params": {name: _lookup(values, name) for name in spec["params"] if name != "objectives"},
        "deps": {_relative(dep): digest_path(dep) for dep in spec["deps"]},
    }
    if stage == "reference" and params.reference.checkpoint:  # a loaded reference: its file's bytes (later stages
        content["reference_checkpoint"] = digest_path(Path(params.reference.checkpoint))  # hash reference.pt itself)
    if stage == "train" and item == "replay" and params.train.replay:  # the recorded sequence it trains on, by its bytes
        from winnow.stages.paths import replay_source

        content["sequence"] = digest_path(replay_source(params))
    if stage == "evaluate":  # it checks each checkpoint against its stage's key: a change upstream is a change here
        content["upstream"] = [stage_key("reference", params)] + [stage_key("train", params, p) for p in params.train.policies]
    return hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()


def _relative(path: Path) -> str:
    """Code by its path in the repository (the key does not depend on where the clone is)."""
    try:
        return "repo:" + path.relative_to(REPO).as_posix()
    except ValueError:
        return str(path)


def output_intact(path: Path, key: str) -> bool:
    """An output can be trusted: present, readable, and for a checkpoint, finished from exactly these
    inputs (its stage key). A file cut short (a crash mid-write, a bad copy), or one that another run
    left at the same path, is not, so its stage recomputes."""
    from winnow.errors import WinnowError
    from winnow.method.checkpoints import load_checkpoint

    if path.is_dir():
        return any(path.iterdir()) and _dataset_whole(path)
    if not path.is_file() or path.stat().st_size == 0:
        return False
    try:
        if path.suffix == ".pt":
            checkpoint = load_checkpoint(path)
            return bool(checkpoint.get("complete")) and checkpoint.get("lineage_key") == key
        if path.suffix == ".json":
            json.loads(path.read_text())
        if path.suffix == ".csv":
            return len(path.read_text().splitlines()) >= 2
    except (WinnowError, ValueError, OSError):  # unreadable (json.JSONDecodeError and UnicodeDecodeError are ValueErrors)
        return False
    return True


def record_run(stage: str, params: Params, item: str | None = None) -> None:
    """Stamp a stage's outputs with the key of the run that just wrote them (every stage does, last). A cached
    result is then handed back only while its outputs are still that run's: after a param is flipped and flipped
    back, the outputs on disk are the other run's, and the stage recomputes."""
    from winnow.files import write_text
    from winnow.stages.paths import Paths

    write_text(stage_key(stage, params, item), Paths.of(params).stamp(stage, item))


def _dataset_whole(folder: Path) -> bool:
    """A folder that is a dataset (a curated pool) holds every file its manifest lists, with the bytes it lists."""
    manifest = folder / "manifest.json"
    if not manifest.is_file():
        return True  # not a dataset: a folder of plots or learners
    try:
        files = json.loads(manifest.read_text()).get("files", {})
    except ValueError:
        return False
    return all(digest_path(folder / name) == sha for name, sha in files.items())


def outputs_intact(stage: str, params: Params, item: str | None = None) -> bool:
    """Every output present and readable (a checkpoint finished from this key), and written by a run of this
    very key (its stamp): never another run's outputs behind a cache hit."""
    from winnow.stages.paths import Paths

    key, stamp = stage_key(stage, params, item), Paths.of(params).stamp(stage, item)
    if not stamp.is_file() or stamp.read_text() != key:
        return False
    if stage == "data":  # the manifest, and every split whole: a shard gone is regenerated, not trained around
        root = Path(params.data.root)
        return (root / "manifest.json").is_file() and dataset_problem(root) is None
    if not all(output_intact(out, key) for out in stage_spec(stage, params, item)["outs"]):
        return False
    return stage != "score" or _scores_stored(params)  # its result lives in the shared store, not in its outs


def _scores_stored(params: Params) -> bool:
    """The score stage's scorer (scorer.json names it) is complete in the store, with all its rows."""
    from winnow.scores import store
    from winnow.stages.paths import Paths

    paths = Paths.of(params)
    try:
        scorer_id = json.loads(paths.scorer.read_text())["scorer_id"]
    except (OSError, ValueError, KeyError):
        return False
    return store.holds(paths.store, scorer_id)
