"""The data stage: the built-in pool generated, or a user's imported dataset used as it is."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from winnow.config import Params
from winnow.datasets.contract import dataset_problem, generated, read_manifest
from winnow.datasets.synth import generator_params, synthesize
from winnow.errors import DataError
from winnow.stages.lineage import record_run

log = logging.getLogger("winnow")


def data_stage(params: Params, force: bool = False) -> dict:
    """Generate the built-in pool unless its manifest records the same params, seed and generator code.
    An imported dataset (a manifest with no generator) is used as it is; synthesize refuses any
    folder it does not own, so a user's data is never overwritten."""
    out = _data(params, force)
    record_run("data", params)
    return out


def _data(params: Params, force: bool) -> dict:
    root = Path(params.data.root)
    if (root / "manifest.json").exists() and not force:
        manifest, problem = read_manifest(root), dataset_problem(root)
        if not generated(manifest):
            if problem:  # a user's data: named, never regenerated
                raise DataError(problem)
            return {"root": str(root), "generated": False, "counts": manifest.get("counts"), "imported": True}
        if manifest["generator"] == json.loads(json.dumps(generator_params(params.data))):
            if not problem:
                return {"root": str(root), "generated": False, "counts": manifest["counts"]}
            log.warning("%s; generating it again", problem.partition("; ")[0])  # byte for byte what it was
    started = time.perf_counter()
    synthesize(params.data, root)
    manifest = read_manifest(root)
    return {"root": str(root), "generated": True, "counts": manifest["counts"], "seconds": time.perf_counter() - started}
