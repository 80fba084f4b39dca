"""The evaluate stage: transfer metrics of the reference and of every learner."""

from __future__ import annotations

from winnow.config import Params
from winnow.datasets.contract import read_manifest
from winnow.files import write_json
from winnow.method.checkpoints import model_from_checkpoint
from winnow.method.devices import pick_device
from winnow.method.objectives import OBJECTIVES
from winnow.stages import lineage
from winnow.stages.inputs import decode_with, run_split
from winnow.stages.paths import Paths


def evaluate_stage(params: Params) -> dict:
    """Transfer metrics of the reference and every learner: held-out (or zero-shot) accuracy, a linear
    probe on every transfer task (eval/<task>/: the generator's texture, or tasks imported with --eval)
    and, for CLIP, zero-shot accuracy on each task and retrieval recall@1/5/10.
    Each checkpoint must have been trained on this run's inputs (its lineage key), never a stale one."""
    paths = Paths.of(params)
    decode_with(params)
    tasks = read_manifest(params.data.root)["tasks"]
    test = run_split(params, "eval/test")
    transfer = {name: run_split(params, f"eval/{name}") for name in sorted(tasks) if tasks[name].get("probe")}  # may be none
    models = [("reference", paths.reference, params.reference.model, lineage.stage_key("reference", params))]
    models += [(p, paths.learner(p), params.train.model, lineage.stage_key("train", params, p)) for p in params.train.policies]
    results = {}
    for name, path, model_name, key in models:
        model = model_from_checkpoint(path, pick_device(params.device), key)
        results[name] = OBJECTIVES[params.objective].evaluate_model(
            model, model_name, test, transfer, tasks, params.evaluate.probe_steps, params.evaluate.probe_lr, params.seed
        )
    write_json(results, paths.evaluate_record)
    lineage.record_run("evaluate", params)
    return results
