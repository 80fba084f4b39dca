"""`winnow bench`: the policies side by side over seeds, the two scaling studies, and their reports.

Every ratio is measured within one seed's run (same data, same uniform baseline), then
its mean and spread over seeds are reported. Each seed has its own artifacts and score
store under artifacts/<dataset>/bench/<objective>/; the data is shared and never regenerated.

The studies are the paper's two results: how the saving moves with the size of the scoring
models (reference = actor, one learner), and how it moves with the size of the learner (one
small scorer); and JEST's: joint batch selection at falling keep fractions, with and without
low-resolution scorers, against per-example learnability (contrastive).
"""

from __future__ import annotations

import json
import logging
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from winnow.config import Params, load_params
from winnow.curation import curate
from winnow.errors import ConfigError
from winnow.files import write_csv, write_json
from winnow.method import ledger
from winnow.method.objectives import OBJECTIVES
from winnow.reports import report
from winnow.stages import pipeline

log = logging.getLogger("winnow")
RATIOS = ("step_ratio", "flop_ratio_full", "flop_ratio_amortised", "time_ratio_full", "time_ratio_amortised")


def _run_params(params: Params, name: str, seed: int, **changes) -> Params:
    """One bench run's params: its own artifacts and metrics under the dataset's bench folder."""
    root = f"{params.data.name}/bench/{params.objective}/{name}"
    train = params.train.model_copy(update={"policies": params.bench.policies})
    update = {"seed": seed, "artifacts": f"{params.artifacts}/{root}", "metrics": f"{params.metrics}/{root}", "train": train}
    return params.model_copy(update={**update, **changes})


def run_seed(params: Params, transfer: bool = False) -> dict:
    """reference -> score -> train (bench policies) [-> evaluate, with `transfer`] -> summary, for one seed.
    Resumes what exists."""
    pipeline.reference_stage(params)
    pipeline.score_stage(params)
    for policy in params.train.policies:
        pipeline.train_stage(params, policy)
    if transfer:
        pipeline.evaluate_stage(params)
    return pipeline.summary_stage(params, write_report=False)


def _copy_uniform(baseline: Params, params: Params) -> None:
    """Give a run the uniform baseline of another run on the same learner and seed (not retrained)."""
    src, dst = pipeline.Paths.of(baseline).metrics, pipeline.Paths.of(params).metrics
    for path in ("curves/uniform.csv", "train/uniform.json"):
        (dst / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src / path, dst / path)


def _study_row(summary: dict, policy: str = "learnability") -> dict:
    """One run of a study: the sizes involved and the ratios learnability measured against uniform."""
    learner_forward = summary["ledger"]["policies"][policy]["learner_forward_flops_per_example"]
    row = summary["policies"][policy]
    return {
        "learner_forward_flops": learner_forward,
        "scorer_flops_over_learner": summary["reference"]["forward_flops_per_example"] / learner_forward,
        "reference_test_metric": summary["reference"]["final_metric"],
        "target": summary["target"],
        "steps_to_target": row["steps_to_target"],
        "final_metric": row["final_metric"],
        **{k: row[k] for k in RATIOS},
    }


def scorer_study(params: Params) -> dict:
    """The same learner, its reference and actor (one model, bench.scorers) from far smaller than it to its
    own size: learnability against one uniform run per seed. The paper's table of scorer sizes."""
    runs = []
    for seed in range(params.seed, params.seed + params.bench.seeds):
        base = _run_params(params, f"scorers/seed-{seed}/uniform", seed)
        base = base.model_copy(update={"train": base.train.model_copy(update={"policies": ("uniform",)})})
        pipeline.train_stage(base, "uniform")
        for scorer in params.bench.scorers:
            log.info("bench %s scorers: seed %d, reference and actor %s", params.objective, seed, scorer)
            run = _run_params(params, f"scorers/seed-{seed}/{scorer}", seed)
            run = run.model_copy(
                update={
                    "reference": run.reference.model_copy(update={"model": scorer}),
                    "train": run.train.model_copy(update={"actor": scorer, "policies": ("uniform", "learnability")}),
                }
            )
            _copy_uniform(base, run)
            pipeline.reference_stage(run)
            pipeline.score_stage(run)
            pipeline.train_stage(run, "learnability")
            runs.append({"scorer": scorer, "seed": seed, **_study_row(pipeline.summary_stage(run, write_report=False))})
    return _study(params, "scorers", "scorer", params.bench.scorers, runs)


def learner_study(params: Params) -> dict:
    """One small scorer (reference.model, train.actor), learners of growing size (bench.learners): uniform and
    learnability per learner and seed. The paper's claim: the saving grows with the learner."""
    runs = []
    for seed in range(params.seed, params.seed + params.bench.seeds):
        for learner in params.bench.learners:
            log.info("bench %s learners: seed %d, learner %s", params.objective, seed, learner)
            run = _run_params(params, f"learners/seed-{seed}/{learner}", seed)
            run = run.model_copy(
                update={"train": run.train.model_copy(update={"model": learner, "policies": ("uniform", "learnability")})}
            )
            runs.append({"learner": learner, "seed": seed, **_study_row(run_seed(run))})
    return _study(params, "learners", "learner", params.bench.learners, runs)


def _study(params: Params, study: str, key: str, names: tuple[str, ...], runs: list[dict], extra: dict | None = None) -> dict:
    """Aggregate a study's runs per model (or arm) over seeds; write its JSON, plot and report."""
    rows = []
    noise = f"{OBJECTIVES[params.objective].noise}_fraction_selected"
    for name in names:
        mine = [r for r in runs if r[key] == name]
        rows.append(
            {
                key: name,
                **{k: mine[0][k] for k in ("selection", "keep_fraction", "score_resolution") if k in mine[0]},
                "learner_forward_flops": mine[0]["learner_forward_flops"],
                "scorer_flops_over_learner": mine[0]["scorer_flops_over_learner"],
                "reference_test_metric": spread([r["reference_test_metric"] for r in mine]),
                "final_metric": spread([r["final_metric"] for r in mine]),
                **({noise: spread([r[noise] for r in mine])} if noise in mine[0] else {}),
                **{k: spread([r[k] for r in mine]) for k in RATIOS},
            }
        )
    result = {
        "study": study,
        "objective": params.objective,
        "learner": params.train.model if study in ("scorers", "jest") else None,
        "scorer": params.reference.model if study == "learners" else None,
        "actor_trains_on": params.train.actor_trains_on,
        "amortise_over": params.bench.amortise_over,
        "seeds": list(range(params.seed, params.seed + params.bench.seeds)),
        "steps": params.train.steps,
        "rows": rows,
        "runs": runs,
        **(extra or {}),
    }
    return _write_study(params, result)


def _share_reference(source: Params, run: Params) -> None:
    """Give a run the trained reference and the scored store of another run on the same data and seed
    (not retrained, not rescored): its checkpoint, scorer, store and their measured figures."""
    src, dst = pipeline.Paths.of(source), pipeline.Paths.of(run)
    scorer_id = json.loads(src.scorer.read_text())["scorer_id"]
    files = [
        (src.reference, dst.reference),
        (src.scorer, dst.scorer),
        (src.artifacts_root / src.dataset / "dataset.json", dst.artifacts_root / dst.dataset / "dataset.json"),
        (src.store, dst.store),
        (src.scoring_record(scorer_id), dst.scoring_record(scorer_id)),
        (src.metrics / "reference.json", dst.metrics / "reference.json"),
        (src.metrics / "score.json", dst.metrics / "score.json"),
    ]
    for a, b in files:
        b.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(a, b)


def jest_arms(params: Params) -> list[tuple[str, dict]]:
    """The --study jest runs besides uniform: per-example learnability as configured, then JEST at each of
    bench.keep_fractions, at full resolution and with the reference and the actor at bench.low_resolution."""
    per_example = "softmax" if params.train.selection == "softmax" else "topk"
    arms = [("learnability", {"selection": per_example, "score_resolution": None})]
    for resolution in (None, params.bench.low_resolution):
        for keep in params.bench.keep_fractions:
            name = f"jest-{keep:g}" + (f"-{resolution}px" if resolution else "")
            arms.append((name, {"selection": "jest", "keep_fraction": keep, "score_resolution": resolution}))
    return arms


def jest_study(params: Params) -> dict:
    """Uniform, per-example learnability and JEST (selection jest) at each keep fraction, with and without
    low-resolution scoring, over seeds: one uniform run and one reference per resolution per seed, shared
    by every arm of that seed. Contrastive only (JEST's joint term is the contrastive loss's)."""
    if not OBJECTIVES[params.objective].joint:
        raise ConfigError(f"--study jest: JEST selects batches for the contrastive objective, not {params.objective}")
    arms, runs, curves = jest_arms(params), [], {}
    for seed in range(params.seed, params.seed + params.bench.seeds):
        base = _run_params(params, f"jest/seed-{seed}/full", seed)  # uniform, and the full-size reference
        base = base.model_copy(
            update={
                "train": base.train.model_copy(update={"policies": ("uniform",), "score_resolution": None}),
                "score": base.score.model_copy(update={"resolution": None}),
            }
        )
        low = _run_params(params, f"jest/seed-{seed}/low-res", seed)  # the reference at bench.low_resolution
        low = low.model_copy(update={"score": low.score.model_copy(update={"resolution": params.bench.low_resolution})})
        for reference in (base, low):  # each resumes, or is checked against its inputs, once per seed
            pipeline.reference_stage(reference)
            pipeline.score_stage(reference)
        pipeline.train_stage(base, "uniform")
        for name, changes in arms:
            log.info("bench %s jest: seed %d, %s", params.objective, seed, name)
            run = _run_params(params, f"jest/seed-{seed}/{name}", seed)
            run = run.model_copy(
                update={
                    "train": run.train.model_copy(update={**changes, "policies": ("uniform", "learnability")}),
                    "score": run.score.model_copy(update={"resolution": changes.get("score_resolution")}),
                }
            )
            source = low if changes.get("score_resolution") else base
            _copy_uniform(base, run)
            _share_reference(source, run)
            pipeline.train_stage(run, "learnability")
            summary = pipeline.summary_stage(run, write_report=False)
            row = summary["policies"]["learnability"]
            runs.append(
                {
                    "arm": name,
                    "seed": seed,
                    "selection": run.train.selection,
                    "keep_fraction": run.train.keep_fraction,
                    "score_resolution": run.train.score_resolution or run.data.image_size,
                    f"{OBJECTIVES[params.objective].noise}_fraction_selected": row[
                        f"{OBJECTIVES[params.objective].noise}_fraction_selected"
                    ],
                    "uniform_final_metric": summary["policies"]["uniform"]["final_metric"],
                    **_study_row(summary),
                }
            )
            for policy, key in (("uniform", "uniform"), ("learnability", name)):
                curve = report.read_csv(pipeline.Paths.of(run).metrics / "curves" / f"{policy}.csv")
                curves.setdefault(key, {})[seed] = curve
    metric = OBJECTIVES[params.objective].metric
    mean_curves = _mean_over_seeds(curves, metric)
    uniform_final = spread([r["uniform_final_metric"] for r in runs if r["arm"] == arms[0][0]])  # once per seed
    extra = {"metric": metric, "uniform_final_metric": uniform_final}
    return _study(params, "jest", "arm", tuple(name for name, _ in arms), runs, {**extra, "curves": mean_curves})


def _elsewhere(params: Params) -> Params:
    """A bench run's params with its plots and reports beside its artifacts (the committed ones are the defaults')."""
    return params.model_copy(update={"plots": f"{params.artifacts}/plots", "reports": f"{params.artifacts}/reports"})


def _arm_row(arm: dict, trained: dict, curve: list[dict], target: float, metric: str, uniform: dict, paid: dict, amortise: int):
    """One curated-pool run against uniform on the full pool (same learner, same seed): steps, FLOPs and seconds to
    uniform's final metric, what curation paid (`paid`: one-off FLOPs and seconds) counted in full and amortised."""
    steps = report.steps_to_target(curve, target, metric)
    costs = ledger.Costs(
        reference_training=paid["reference_training_flops"],
        pool_scoring=paid["scoring_flops"],
        actor_scoring_per_step=0.0,
        actor_training_per_step=0.0,
        learner_training_per_step=3.0 * trained["forward_flops_per_example"] * trained["batch_size"],
    )
    base = ledger.Costs(0.0, 0.0, 0.0, 0.0, 3.0 * uniform["forward_flops_per_example"] * uniform["batch_size"])
    noise = trained["selected_mix"]
    return {
        **arm,
        "learner_forward_flops": trained["forward_flops_per_example"],
        "pool_size": trained["pool_size"],
        "target": target,
        "steps_to_target": steps,
        "step_ratio": steps / uniform["steps"] if steps is not None else None,
        "final_metric": curve[-1][metric],
        "selected_mix": noise,
        **ledger.flop_ratios(costs, steps, base, uniform["steps"], amortise),
        **ledger.time_ratios(paid["seconds"], ledger.seconds_at(trained["clock"], steps), uniform["seconds"], amortise),
        "one_off_flops": costs.one_off,
        "one_off_seconds": paid["seconds"],
    }


def curate_study(params: Params) -> dict:
    """Curate once, then train plainly: uniform on the full pool, uniform on the pool curated by curate.rule at each
    of bench.curate_fractions and by bench.peer_rule (cleanlab, or DataComp's CLIP score), and online learnability,
    per seed; then bench.transfer_learner (another family) on the full pool and on the pool curated at
    curate.fraction, scored by the same small reference. Every curated run pays the reference's training, the
    pool's scoring and any pass curation made over the pool (cleanlab's probabilities)."""
    objective = OBJECTIVES[params.objective]
    metric, noise = objective.metric, objective.noise
    runs, curves = [], {}
    rule = params.curate.rule
    fractions = params.bench.curate_fractions if rule != "cleanlab" else (params.curate.fraction,)  # cleanlab decides its own
    arms = [(rule if rule == "cleanlab" else f"{rule}-{f:g}", rule, f) for f in fractions]
    peer = params.bench.peer_rule
    if peer and peer != rule:
        arms.append((peer if peer == "cleanlab" else f"{peer}-{params.bench.peer_fraction:g}", peer, params.bench.peer_fraction))
    transfer_arm = arms[0][0] if rule == "cleanlab" else f"{rule}-{params.curate.fraction:g}"
    for seed in range(params.seed, params.seed + params.bench.seeds):
        log.info("bench %s curate: seed %d, full pool (uniform, online learnability)", params.objective, seed)
        base = _elsewhere(_run_params(params, f"curate/seed-{seed}/full", seed))
        policies = tuple(dict.fromkeys(("uniform", "learnability", *((params.curate.policy,) if rule == "learnability" else ()))))
        base = base.model_copy(update={"train": base.train.model_copy(update={"policies": policies})})
        summary = run_seed(base)
        paths = pipeline.Paths.of(base)
        reference, score = summary["reference"], pipeline.read_json(paths.metrics / "score.json", "run `winnow score`")
        uniform = pipeline.read_json(paths.metrics / "train" / "uniform.json", "train uniform")
        target = summary["policies"]["uniform"]["final_metric"]
        pool_size = score["num_examples"] - score.get("unscorable", 0)
        reference_paid = {
            "reference_training_flops": 3.0
            * reference["forward_flops_per_example"]
            * reference["batch_size"]
            * reference["steps"],
            "scoring_flops": reference["score_forward_flops_per_example"] * pool_size,
            "seconds": reference["seconds"] + score["seconds"],
        }
        online = summary["policies"]["learnability"]
        runs.append(
            {
                "arm": "online learnability",
                "learner": params.train.model,
                "rule": "learnability (online)",
                "fraction": params.train.keep_fraction,
                "seed": seed,
                "pool_size": uniform["pool_size"],
                "target": target,
                "steps_to_target": online["steps_to_target"],
                "final_metric": online["final_metric"],
                "selected_mix": pipeline.read_json(paths.metrics / "train" / "learnability.json", "train")["selected_mix"],
                **{k: online[k] for k in RATIOS},
            }
        )
        curves.setdefault("uniform, full pool", {})[seed] = report.read_csv(paths.metrics / "curves" / "uniform.csv")
        curves.setdefault("online learnability", {})[seed] = report.read_csv(paths.metrics / "curves" / "learnability.csv")
        checkpoint_paid = {"flops": 0.0, "seconds": 0.0}  # rule learnability scores with a finished run: it pays that run
        if rule == "learnability":
            costs = summary["ledger"]["policies"][params.curate.policy]["costs"]
            checkpoint_paid["flops"] = costs["per_step"] * params.train.steps  # its own reference is the one counted below
            checkpoint_paid["seconds"] = pipeline.read_json(paths.metrics / "train" / f"{params.curate.policy}.json", "")[
                "seconds"
            ]
        curated = {}
        for name, arm_rule, fraction in arms:
            log.info("bench %s curate: seed %d, %s", params.objective, seed, name)
            change = {"rule": arm_rule, "fraction": fraction, "balance": params.curate.balance and arm_rule != "cleanlab"}
            dest = Path(base.artifacts) / "curated" / name
            curated[name] = _curate_arm(base, dest, change, reference_paid, checkpoint_paid)
            dest, record, paid = curated[name]
            run = _train_on(params, f"curate/seed-{seed}/{name}", seed, dest, params.train.model)
            trained, curve = pipeline.train_stage(run, "uniform"), _curve(run)
            arm = {"arm": name, "learner": params.train.model, "rule": arm_rule, "fraction": record["fraction"], "seed": seed}
            runs.append({**_arm_row(arm, trained, curve, target, metric, uniform, paid, params.bench.amortise_over)})
            runs[-1]["kept_rows"] = record["kept_rows"]
            curves.setdefault(name, {})[seed] = curve
        # another learner family on the same curated pool, scored by the same small reference
        learner = params.bench.transfer_learner
        if learner is None:
            continue
        log.info("bench %s curate: seed %d, %s on the full and the curated pool", params.objective, seed, learner)
        full = _train_on(params, f"curate/seed-{seed}/{learner}-full", seed, Path(params.data.root), learner)
        full_trained, full_curve = pipeline.train_stage(full, "uniform"), _curve(full)
        if transfer_arm not in curated:  # the configured curation (curate.rule at curate.fraction)
            dest = Path(base.artifacts) / "curated" / transfer_arm
            curated[transfer_arm] = _curate_arm(base, dest, {}, reference_paid, checkpoint_paid)
        dest, record, paid = curated[transfer_arm]
        run = _train_on(params, f"curate/seed-{seed}/{learner}-{transfer_arm}", seed, dest, learner)
        trained, curve = pipeline.train_stage(run, "uniform"), _curve(run)
        arm = {"arm": f"{learner}: {transfer_arm}", "learner": learner, "rule": rule, "seed": seed}
        arm["fraction"] = params.curate.fraction
        target_t = full_curve[-1][metric]
        runs.append(_arm_row(arm, trained, curve, target_t, metric, full_trained, paid, params.bench.amortise_over))
        runs[-1]["kept_rows"] = record["kept_rows"]
        curves.setdefault(f"{learner}, full pool", {})[seed] = full_curve
        curves.setdefault(f"{learner}: {transfer_arm}", {})[seed] = curve
    names = tuple(dict.fromkeys(r["arm"] for r in runs))
    rows = []
    for name in names:
        mine = [r for r in runs if r["arm"] == name]
        rows.append(
            {
                **{k: mine[0][k] for k in ("arm", "learner", "rule", "fraction")},
                "kept_rows": spread([r.get("kept_rows", r["pool_size"]) for r in mine]),
                "target": spread([r["target"] for r in mine]),
                "final_metric": spread([r["final_metric"] for r in mine]),
                f"{noise}_fraction_selected": spread([r["selected_mix"].get(noise) for r in mine]),
                **{k: spread([r[k] for r in mine]) for k in RATIOS},
            }
        )
    mean_curves = _mean_over_seeds(curves, metric)
    result = {
        "study": "curate",
        "objective": params.objective,
        "learner": params.train.model,
        "transfer_learner": params.bench.transfer_learner,
        "reference": params.reference.model,
        "rule": params.curate.rule,
        "peer_rule": params.bench.peer_rule,
        "metric": metric,
        "noise": noise,
        "amortise_over": params.bench.amortise_over,
        "seeds": list(range(params.seed, params.seed + params.bench.seeds)),
        "steps": params.train.steps,
        "rows": rows,
        "runs": runs,
        "curves": mean_curves,
    }
    return _write_study(params, result)


def _write_study(params: Params, result: dict) -> dict:
    """A study's numbers (<objective>-<study>.json under Paths.bench) and its report."""
    paths = pipeline.Paths.of(params)
    write_json(result, paths.bench / f"{params.objective}-{result['study']}.json")
    report.write_study_report(result, paths)
    return result


def _mean_over_seeds(curves: dict[str, dict[int, list[dict]]], metric: str) -> dict[str, list[dict]]:
    """Per arm, the target metric at each evaluation step, mean over seeds (for the plot)."""
    return {
        arm: [
            {"step": int(rows[0]["step"]), metric: statistics.mean(float(r[metric]) for r in rows)}
            for rows in zip(*by_seed.values())
        ]
        for arm, by_seed in curves.items()
    }


def _curate_arm(base: Params, dest: Path, change: dict, reference_paid: dict, checkpoint_paid: dict):
    """Curate the base run's pool into `dest` with `change` to its curate params; the curated dataset's record and
    what it paid: the reference and the pool's scoring, any further pass over the pool, curation's seconds and, for
    rule learnability, the checkpoint's run."""
    record = curate.curate_stage(base.model_copy(update={"curate": base.curate.model_copy(update=change)}), dest)
    mine = checkpoint_paid if record["rule"] == "learnability" else {"flops": 0.0, "seconds": 0.0}
    paid = {
        **reference_paid,
        "scoring_flops": reference_paid["scoring_flops"] + record.get("pass_flops", 0.0) + mine["flops"],
        "seconds": reference_paid["seconds"] + record["seconds"] + mine["seconds"],
    }
    return dest, record, paid


def _train_on(params: Params, name: str, seed: int, root: Path, learner: str) -> Params:
    """A bench run training `learner` uniformly on the dataset at `root` (a curated pool, or the full one)."""
    run = _elsewhere(_run_params(params, name, seed))
    data = run.data.model_copy(update={"dir": str(root.parent), "name": root.name})
    return run.model_copy(
        update={"data": data, "train": run.train.model_copy(update={"model": learner, "policies": ("uniform",)})}
    )


def _curve(params: Params) -> list[dict]:
    return report.read_csv(pipeline.Paths.of(params).metrics / "curves" / "uniform.csv")


STUDIES = {"scorers": scorer_study, "learners": learner_study, "jest": jest_study, "curate": curate_study}


def spread(values: list) -> dict:
    """Mean and sample standard deviation over the seeds that reached the target."""
    reached = [v for v in values if v is not None]
    return {
        "mean": statistics.mean(reached) if reached else None,
        "std": statistics.stdev(reached) if len(reached) > 1 else 0.0 if reached else None,
        "reached": len(reached),
        "runs": len(values),
        "values": values,
    }


def bench(params: Params) -> dict:
    """Run the seeds; write <objective>.json and curves under Paths.bench, plots and the bench report."""
    objective = OBJECTIVES[params.objective]
    seeds = [_run_params(params, f"seed-{params.seed + i}", params.seed + i) for i in range(params.bench.seeds)]
    manifest_tasks = pipeline.read_manifest(params.data.root)["tasks"]
    tasks = sorted(t for t, task in manifest_tasks.items() if task.get("probe"))  # transfer tasks, if any
    summaries = []
    for i, seed_params in enumerate(seeds):
        log.info("bench %s: seed %d of %d", params.objective, i + 1, len(seeds))
        summaries.append(run_seed(seed_params, transfer=bool(tasks)))
    result = {
        "objective": params.objective,
        "data": params.data.root,
        "metric": summaries[0]["metric"],
        "noise": objective.noise,
        "seeds": [s.seed for s in seeds],
        "amortise_over": params.bench.amortise_over,
        "learner": params.train.model,
        "reference": params.reference.model,
        "actor": params.train.actor,
        "actor_trains_on": params.train.actor_trains_on,
        "policies": {
            p: {
                **{k: spread([s["policies"][p][k] for s in summaries]) for k in RATIOS},
                f"{objective.noise}_fraction_selected": spread(
                    [s["policies"][p][f"{objective.noise}_fraction_selected"] for s in summaries]
                ),
                "final_metric": spread([s["policies"][p]["final_metric"] for s in summaries]),
                "probe_accuracy": {t: spread([s["policies"][p]["probe_accuracy"].get(t) for s in summaries]) for t in tasks},
            }
            for p in params.bench.policies
        },
        "targets": [s["target"] for s in summaries],
        f"pool_{objective.noise}_fraction": summaries[0][f"pool_{objective.noise}_fraction"],
        "ledger_seed0": {p: row["costs"] for p, row in summaries[0]["ledger"]["policies"].items()},
        "systems": {
            "scoring_over_bare_forward": spread([s["ledger"]["systems"]["scoring_over_bare_forward"] for s in summaries]),
            "ingest_rows_per_s": spread([s["ledger"]["systems"]["ingest_rows_per_s"] for s in summaries]),
            "step_time_over_ledger": {
                p: spread([s["ledger"]["policies"][p]["step_time_over_ledger"] for s in summaries]) for p in params.bench.policies
            },
        },
    }
    paths = pipeline.Paths.of(params)
    write_json(result, paths.bench / f"{params.objective}.json")
    curves = _mean_curves(seeds, summaries, objective.metric)
    for policy, rows in curves.items():
        write_csv(rows, paths.bench / params.objective / "curves" / f"{policy}.csv")
    report.write_bench_report(result, curves, objective.metric, paths)
    return result


def _mean_curves(seeds: list[Params], summaries: list[dict], metric: str) -> dict[str, list[dict]]:
    """Per policy, the metric at each eval step averaged over seeds, with FLOPs relative to uniform's total."""
    curves = {}
    for policy in seeds[0].train.policies:
        per_seed = [report.read_csv(pipeline.Paths.of(p).metrics / "curves" / f"{policy}.csv") for p in seeds]
        costs = [s["ledger"]["policies"][policy]["costs"] for s in summaries]
        uniform = [s["ledger"]["uniform_flops"] for s in summaries]
        rows = []
        for i, row in enumerate(per_seed[0]):
            step = int(row["step"])
            rows.append(
                {
                    "step": step,
                    "flops_over_uniform_full": statistics.mean(
                        (c["one_off"] + step * c["per_step"]) / u for c, u in zip(costs, uniform)
                    ),
                    metric: statistics.mean(curve[i][metric] for curve in per_seed),
                }
            )
        curves[policy] = rows
    return curves


# ---------------------------------------------------------------- memory: does it grow with the pool?


def measure_stage(params_path: str, overrides: list[str], what: str) -> dict:
    """Run one stage in this process and report its peak resident memory. Meant for a fresh process
    (`python -m winnow.bench PARAMS OVERRIDES_JSON WHAT`), so that nothing else has touched memory."""
    params = load_params(params_path, overrides)
    started = time.perf_counter()
    if what == "baseline":  # imports, model and the held-out set: what every stage pays before touching the pool
        pipeline.split(params, "eval/test")
        pipeline.OBJECTIVES[params.objective].build_model(
            params.train.model, pipeline.num_classes(params), params.data.image_size
        )
    elif what == "score":
        pipeline.score_stage(params)
    else:
        pipeline.train_stage(params, what)
    return _peak(started)


def _peak(started: float) -> dict:
    """This process's peak resident memory so far and the seconds since `started`. VmHWM: this address
    space's peak resident set (ru_maxrss would carry the parent's peak over fork and exec)."""
    peak_kib = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
    return {"peak_rss_mib": peak_kib / 1024, "seconds": time.perf_counter() - started}


def _fresh_process(args: list[str], what: str) -> dict:
    """Run `python -m winnow.bench ARGS` alone in a fresh process; what it measured (its last line, JSON)."""
    done = subprocess.run([sys.executable, "-m", "winnow.studies.bench", *args], capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"memory bench: {what} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _measure(params_path: str, overrides: list[str], what: str) -> dict:
    """Peak resident memory (VmHWM, Linux) of one stage run alone in a fresh process."""
    return _fresh_process([params_path, json.dumps(overrides), what], what)


def memory(params_path: str, overrides: list[str], scale: int = 10, steps: int = 300) -> dict:
    """Peak memory of scoring and of training (learnability, `steps` steps) on the default pool and on one
    `scale` times larger (generated under artifacts/memory/, outside data.dvc), each stage in a fresh process.
    The larger pool streams through train.shuffle_buffer; it is also trained held whole in memory, to show
    what streaming saves. Writes memory.json under Paths.bench."""
    params = load_params(params_path, overrides)
    rows = []
    for factor in (1, scale):
        name = f"x{factor}"
        sized = [
            *overrides,
            f"data.root={params.data.root if factor == 1 else f'{params.artifacts}/memory/data-{name}'}",
            f"data.num_pool={params.data.num_pool * factor}",
            f"artifacts={params.artifacts}/memory/{name}",
            f"metrics={params.metrics}/memory/{name}",
            f"train.steps={steps}",
            "reference.steps=200",
            "train.eval_every=100000",
        ]
        sized_params = load_params(params_path, sized)
        log.info("memory bench: pool of %d examples", sized_params.data.num_pool)
        pipeline.data_stage(sized_params)
        pipeline.reference_stage(sized_params)
        pool_mib = sum(p.stat().st_size for p in (Path(sized_params.data.root) / "pool").glob("part-*.parquet")) / 2**20
        held = "in memory" if sized_params.data.num_pool <= sized_params.train.shuffle_buffer else "stream"
        runs = [
            ("baseline", sized, "baseline", "-"),
            ("score", sized, "score", "shard by shard"),
            ("train learnability", sized, "learnability", held),
        ]
        if factor != 1:
            runs.append(
                (
                    "train learnability, pool held in memory",
                    [*sized, f"train.shuffle_buffer={sized_params.data.num_pool}"],
                    "learnability",
                    "in memory",
                )
            )
        for label, run_overrides, what, pool_read in runs:
            measured = _measure(params_path, run_overrides, what)
            rows.append(
                {
                    "pool_examples": sized_params.data.num_pool,
                    "pool_mib_on_disk": round(pool_mib, 1),
                    "stage": label,
                    "pool_read": pool_read,
                    **measured,
                }
            )
            log.info(
                "memory bench: %s, pool %d: peak %.0f MiB (%.0f s)",
                label,
                sized_params.data.num_pool,
                measured["peak_rss_mib"],
                measured["seconds"],
            )
    result = {
        "scale": scale,
        "steps": steps,
        "shuffle_buffer": params.train.shuffle_buffer,
        "objective": params.objective,
        "rows": rows,
    }
    write_json(result, pipeline.Paths.of(params).bench / "memory.json")
    return result


def memory_table(result: dict) -> str:
    lines = ["| pool examples | on disk (MiB) | stage | pool read | peak RSS (MiB) | seconds |", "|---|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(
            f"| {r['pool_examples']:,} | {r['pool_mib_on_disk']:.0f} | {r['stage']} | {r['pool_read']} | "
            f"{r['peak_rss_mib']:.0f} | {r['seconds']:.0f} |"
        )
    return "\n".join(lines)


# ---------------------------------------------------------------- import memory: does it grow with the source?

IMPORT_KINDS = ("parquet", "webdataset", "imagefolder")


def write_import_source(pool: Path, kind: str, dest: Path, copies: int) -> Path:
    """The pool's shards written `copies` times over as a source a user would have: Parquet files of 5,000
    rows, WebDataset tars of 5,000 keys (png, txt, cls, json), or an ImageFolder tree of PNG files. Written once
    (a `complete` mark), reused after."""
    import io
    import tarfile

    import pyarrow as pa
    import pyarrow.parquet as pq

    from winnow.datasets.contract import shard_files

    if (dest / "complete").exists():
        return dest
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    files = shard_files(pool)
    for copy in range(copies):
        for path in files:
            table = pq.read_table(path, columns=["image", "label", "caption"])
            stem = f"{copy:03d}-{path.stem}"
            if kind == "parquet":
                pq.write_table(
                    table.append_column("copy", pa.array([copy] * table.num_rows, pa.int32())), dest / f"{stem}.parquet"
                )
                continue
            images, labels, captions = (table.column(c).to_pylist() for c in ("image", "label", "caption"))
            if kind == "imagefolder":
                for i, (image, label) in enumerate(zip(images, labels)):
                    folder = dest / f"class{label:02d}"
                    folder.mkdir(exist_ok=True)
                    (folder / f"{stem}-{i:05d}.png").write_bytes(image)
                continue
            with tarfile.open(dest / f"{stem}.tar", "w") as tar:
                for i, (image, label, caption) in enumerate(zip(images, labels, captions)):
                    for ext, data in (
                        ("png", image),
                        ("txt", (caption or "").encode()),
                        ("cls", str(label).encode()),
                        ("json", json.dumps({"copy": copy, "row": i}).encode()),
                    ):
                        info = tarfile.TarInfo(f"{stem}-{i:05d}.{ext}")
                        info.size = len(data)
                        tar.addfile(info, io.BytesIO(data))
    (dest / "complete").touch()
    return dest


def measure_import(kind: str, source: str, dest: str) -> dict:
    """`winnow data import KIND SOURCE DEST` in this process: its peak resident memory and seconds."""
    from winnow.importers.importing import import_source

    started = time.perf_counter()
    import_source(kind, source, dest, seed=0)
    return _peak(started)


def import_memory(params_path: str, overrides: list[str], scale: int = 10) -> dict:
    """Peak memory of importing the default pool, and one `scale` times larger, from each kind of source, each
    import alone in a fresh process. Sources and imports go under artifacts/memory/import/ (outside data.dvc).
    Writes import_memory.json under Paths.bench."""
    params = load_params(params_path, overrides)
    pipeline.data_stage(params)
    root = Path(params.artifacts) / "memory" / "import"
    rows = []
    for kind in IMPORT_KINDS:
        for factor in (1, scale):
            log.info("import memory bench: %s source, %dx the pool", kind, factor)
            source = write_import_source(Path(params.data.root) / "pool", kind, root / f"{kind}-x{factor}", factor)
            dest = root / f"imported-{kind}-x{factor}"
            shutil.rmtree(dest, ignore_errors=True)
            measured = _fresh_process(["import", kind, str(source), str(dest)], f"import {kind} x{factor}")
            counts = pipeline.read_manifest(dest)["counts"]
            source_mib = sum(p.stat().st_size for p in source.rglob("*") if p.is_file()) / 2**20
            rows.append(
                {
                    "kind": kind,
                    "examples": sum(counts.values()),
                    "source_mib": round(source_mib, 1),
                    **measured,
                }
            )
            log.info(
                "import memory bench: %s x%d: peak %.0f MiB (%.0f s)", kind, factor, measured["peak_rss_mib"], measured["seconds"]
            )
            shutil.rmtree(dest)
    result = {"scale": scale, "rows": rows}
    write_json(result, pipeline.Paths.of(params).bench / "import_memory.json")
    return result


def import_memory_table(result: dict) -> str:
    lines = ["| source | examples | on disk (MiB) | peak RSS (MiB) | seconds |", "|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(
            f"| {r['kind']} | {r['examples']:,} | {r['source_mib']:.0f} | {r['peak_rss_mib']:.0f} | {r['seconds']:.0f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":  # the fresh process of _measure and import_memory
    if sys.argv[1] == "import":
        print(json.dumps(measure_import(*sys.argv[2:5])))
    else:
        print(json.dumps(measure_stage(sys.argv[1], json.loads(sys.argv[2]), sys.argv[3])))
