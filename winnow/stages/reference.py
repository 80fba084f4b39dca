"""The reference stage: the small reference model trained on the curated set (docs/DESIGN.md, The chain)."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from winnow.config import Params
from winnow.datasets.digests import digest_path
from winnow.datasets.stream import InMemory
from winnow.files import exclusive
from winnow.method.checkpoints import CheckpointPlan, atomic_save, load_state_dict_file, state_hash
from winnow.method.devices import pick_device, rank_and_world
from winnow.method.objectives import OBJECTIVES
from winnow.method.training import Evaluation, train
from winnow.stages.inputs import (
    checkpoint_meta,
    claim_outputs,
    decode_with,
    forward_flops,
    num_classes,
    run_split,
    step_flops,
    target_metric,
    validation_split,
)
from winnow.stages.lineage import record_run, stage_key
from winnow.stages.paths import Paths
from winnow.stages.records import ReferenceRecord

log = logging.getLogger("winnow")


def reference_stage(params: Params) -> dict:
    """Train the reference model on the curated set; checkpoint + metrics/<objective>/reference.json."""
    paths, cfg = claim_outputs(params), params.reference
    decode_with(params)
    curated, test = run_split(params, "curated"), run_split(params, "eval/test")
    objective = OBJECTIVES[params.objective]
    torch.manual_seed(params.seed)
    resolution = params.score.resolution or params.data.image_size  # a scorer learns at the resolution it scores at
    model = objective.build_model(cfg.model, num_classes(params), resolution).to(pick_device(params.device))
    targets = objective.targets(cfg.model, curated)
    with exclusive(paths.lock("reference"), paths.reference, "training the reference into it"):  # never two runs at once
        if cfg.checkpoint:  # a model the user already has: loaded, evaluated, not trained (its training paid elsewhere)
            out = _loaded(params, model, test, resolution)
        else:
            out = train(
                model,
                InMemory(curated, targets, params.seed, None, *rank_and_world()),
                cfg,
                seed=params.seed,
                loss_fn=objective.loss,
                evaluation=Evaluation(target_metric(params, cfg.model, test), every=max(1, cfg.steps // 10)),
                checkpoint=CheckpointPlan(
                    paths.reference,
                    max(1, cfg.steps // 4),
                    checkpoint_meta(cfg.model, params, resolution),
                    stage_key("reference", params),
                ),
                precision=params.precision,
                name="reference",
            )
    metrics = {
        "model": cfg.model,
        "resolution": resolution,
        "steps": 0 if cfg.checkpoint else cfg.steps,
        "batch_size": cfg.batch_size,
        "train_examples": len(curated),
        "test_metric": objective.metric,
        "final_metric": out["eval_log"][-1][objective.metric],
        # on the split the learners' curves read, beside theirs in the report: a learner above it has outgrown it
        "val_metric": target_metric(params, cfg.model, validation_split(params)[1])(model)[objective.metric],
        "forward_flops_per_example": forward_flops(model, objective.loss, curated.images, targets, cfg.batch_size),
        "train_step_flops": step_flops(model, cfg, objective.loss, curated.images, targets, cfg.batch_size, params.precision),
        "score_forward_flops_per_example": forward_flops(model, objective.loss, curated.images, targets, params.score.batch_size),
        "seconds": out["seconds"],
        "parameters": sum(p.numel() for p in model.parameters()),
        "model_hash": state_hash(model),
        **({"loaded_from": cfg.checkpoint, "loaded_sha256": digest_path(Path(cfg.checkpoint))} if cfg.checkpoint else {}),
    }
    record = ReferenceRecord(**metrics).write(paths.reference_record)
    record_run("reference", params)
    return record


def _loaded(params: Params, model: torch.nn.Module, test, resolution: int) -> dict:
    """reference.checkpoint loaded into reference.model, evaluated once on the test set, and written where the
    trained reference would be (a finished winnow checkpoint: scoring reads it the same way)."""
    cfg, paths = params.reference, Paths.of(params)
    fix = f"set reference.model (now {cfg.model}) to the architecture it was saved from; the data's classes fix its head"
    load_state_dict_file(cfg.checkpoint, model, "reference.checkpoint", fix)
    evaluated = {"step": 0, "examples_seen": 0, **target_metric(params, cfg.model, test)(model)}
    state = {"step": 0, "steps_log": [], "eval_log": [evaluated], "seconds": 0.0, "clock": []}
    checkpoint = {
        "model": model.state_dict(),
        "meta": checkpoint_meta(cfg.model, params, resolution),
        "lineage_key": stage_key("reference", params),
        "fingerprint": f"loaded:{cfg.checkpoint}",
        "complete": True,
        **state,
    }
    atomic_save(checkpoint, paths.reference)
    log.info("reference: loaded %s into %s (%s %.4f); not trained", cfg.checkpoint, cfg.model, *list(evaluated.items())[-1])
    return state
