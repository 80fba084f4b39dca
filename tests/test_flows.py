"""The Prefect flows chain the stages; the CLI runs them and rejects a wrong param by name."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import uniform_target

from winnow.config import load_params
from winnow.errors import ConfigError
from winnow.method.checkpoints import model_from_checkpoint
from winnow.stages.paths import Paths
from winnow.studies import summaries

pytestmark = pytest.mark.e2e  # through the entry points a user runs (Prefect, the CLI, DVC, torchrun): the full tier

REPO = Path(__file__).resolve().parents[1]


def test_pipeline_flow_runs_every_stage_and_writes_the_summary(prefect_server, tiny):
    from flows.pipeline import pipeline_flow

    summary = pipeline_flow(params_path=str(tiny))
    params = load_params(tiny)
    metrics = Paths.of(params).metrics
    on_disk = json.loads((metrics / "summary.json").read_text())
    assert on_disk["target"] == summary["target"] == pytest.approx(uniform_target(metrics, on_disk))
    assert on_disk["curve_metric"] == "val_accuracy" and on_disk["metric"] == "test_accuracy"  # val for curves, test once
    for policy in params.train.policies:
        row = on_disk["policies"][policy]
        assert set(row) >= {"final_metric", "steps_to_target", "step_ratio", "noisy_label_fraction_selected"}
        assert (metrics / "curves" / f"{policy}.csv").exists() and (metrics / "steps" / f"{policy}.csv").exists()
    assert on_disk["policies"]["uniform"]["step_ratio"] == 1.0  # uniform is read at its own crossing
    assert on_disk["verdict"]["best_baseline"] in on_disk["verdict"]["baselines"]
    assert on_disk["pool_noisy_label_fraction"] == pytest.approx(params.data.pathologies.noisy_label, abs=0.05)
    assert (tiny.parent / "reports" / "data" / "classification.md").exists()  # per dataset: data.root is <tmp>/data
    assert (tiny.parent / "plots" / "data" / "classification" / "accuracy.png").exists()
    evaluated = json.loads((metrics / "evaluate.json").read_text())
    assert set(evaluated) == {"reference", *params.train.policies}


def _mtimes(root: Path) -> dict:
    return {p: p.stat().st_mtime_ns for p in sorted(root.rglob("*")) if p.is_file()}


def test_reruns_redo_only_what_changed(prefect_server, tiny, monkeypatch):
    from flows.pipeline import pipeline_flow, score_flow, train_flow

    pipeline_flow(params_path=str(tiny))
    params = load_params(tiny)
    outputs = Path(params.artifacts), Path(params.metrics)
    first = {root: _mtimes(root) for root in outputs}

    pipeline_flow(params_path=str(tiny))  # nothing changed: every stage is a cache hit, no file is rewritten
    assert {root: _mtimes(root) for root in outputs} == first

    pipeline_flow(params_path=str(tiny), overrides=["train.lr=0.001"])  # a learner param: training and what follows rerun
    after = {root: _mtimes(root) for root in outputs}
    changed = {p.relative_to(root).as_posix() for root in outputs for p, t in after[root].items() if first[root].get(p) != t}
    assert "data/classification/reference.pt" not in changed and "scores.duckdb" not in changed
    assert "data/classification/score.json" not in changed
    assert {f"data/classification/learners/{p}.pt" for p in params.train.policies} <= changed
    assert {"data/classification/evaluate.json", "data/classification/summary.json"} <= changed

    # back to the first params: their cache entries are there, but the learners on disk are the second run's,
    # so train reruns (a cache hit would hand back results whose files are gone) and evaluate finds them fresh
    before = {root: _mtimes(root) for root in outputs}
    pipeline_flow(params_path=str(tiny))
    again = {p.relative_to(root).as_posix() for root in outputs for p, t in _mtimes(root).items() if before[root].get(p) != t}
    assert {f"data/classification/learners/{p}.pt" for p in params.train.policies} <= again

    monkeypatch.setenv("WINNOW_NO_CACHE", "1")  # past Prefect's cache, the stage itself reuses the scorer in the store
    assert score_flow(params_path=str(tiny))["reused"]
    # ... and caching really is off: another step count trains anew, never another run's result
    assert train_flow(policy="uniform", params_path=str(tiny), overrides=["train.steps=20"])["steps"] == 20


@pytest.mark.slow  # kept out of the default suite to hold it within ten minutes; -m slow runs it
def test_a_corrupt_output_is_recomputed_not_returned_from_the_cache(prefect_server, tiny):
    from flows.pipeline import pipeline_flow, train_flow

    pipeline_flow(params_path=str(tiny))
    learner = Paths.of(load_params(tiny)).learner("uniform")
    learner.write_bytes(learner.read_bytes()[: learner.stat().st_size // 2])  # cut in half, as a crash or a bad copy would
    assert train_flow(policy="uniform", params_path=str(tiny))["steps"] == 30
    model_from_checkpoint(learner)  # whole again: it loads and is complete


def test_the_contrastive_pipeline_writes_a_summary_of_the_same_shape_with_zero_shot_as_target(prefect_server, tiny):
    from flows.pipeline import pipeline_flow

    summary = pipeline_flow(params_path=str(tiny), overrides=["objective=contrastive"])
    assert summary["metric"] == "test_zero_shot_accuracy" and summary["noise"] == "mismatched_caption"
    contrastive = Paths.of(load_params(tiny, ["objective=contrastive"])).metrics
    on_disk = json.loads((contrastive / "summary.json").read_text())
    for row in on_disk["policies"].values():
        assert set(row) >= {"final_metric", "steps_to_target", "step_ratio", "mismatched_caption_fraction_selected"}
    assert 0.15 < on_disk["pool_mismatched_caption_fraction"] < 0.35
    evaluated = json.loads((contrastive / "evaluate.json").read_text())
    assert {"zero_shot_accuracy", "texture_zero_shot_accuracy", "image_to_text_R@5", "text_to_image_R@10"} <= set(
        evaluated["learnability"]
    )


@pytest.mark.slow  # kept out of the default suite to hold it within ten minutes; -m slow runs it
def test_the_bench_flow_reports_mean_and_spread_over_seeds(prefect_server, tiny):
    from flows.pipeline import bench_flow

    result = bench_flow(
        params_path=str(tiny),
        overrides=["bench.seeds=2", "bench.policies=[uniform,learnability]", "train.model=cnn-tiny"],
    )
    paths = Paths.of(load_params(tiny))
    on_disk = json.loads((paths.bench / "classification.json").read_text())
    assert on_disk["seeds"] == result["seeds"] == [0, 1]
    for key in ("step_ratio", "flop_ratio_full", "flop_ratio_amortised", "time_ratio_full", "time_ratio_amortised"):
        stat = on_disk["policies"]["learnability"][key]
        assert set(stat) == {"mean", "std", "low", "high", "reached", "runs", "values", "scale", "log_std"} and stat["runs"] == 2
        assert stat["scale"] == "log"  # a ratio's geometric mean and log-scale interval (studies/runs.spread)
    assert summaries.refresh(on_disk) == on_disk, "every summary written is what its own values give, ratios on the log scale"
    uniform = on_disk["policies"]["uniform"]
    assert uniform["step_ratio"]["reached"] == 2  # uniform always reaches its own final value
    assert on_disk["ledger_seed0"]["learnability"]["actor_scoring_per_step"] > 0  # the cnn-nano actor's forward, counted
    report = paths.bench_report.read_text()
    assert "Against uniform alone" in report and "uv run winnow bench --objective classification" in report
    assert (paths.bench_plots / "bench_flops.png").exists() and paths.bench_plots == Path("plots/data/bench/classification")


def test_the_budgets_study_trains_each_arm_at_each_budget_its_schedule_ending_there_and_prints_every_reading(
    prefect_server, tiny, capsys
):
    from winnow.cli import main
    from winnow.studies import budget_rule, budgets

    sets = ["bench.seeds=2", "bench.budgets=[0.5,1.0]", "bench.policies=[uniform,curated_only,learnability]", "train.steps=20"]
    assert main(["bench", "--study", "budgets", "--params", str(tiny), *[a for s in sets for a in ("--set", s)]]) == 0
    params = load_params(tiny, sets)
    paths = Paths.of(params)
    result = json.loads(paths.study_json("budgets").read_text())
    assert result["budgets"] == [0.5, 1.0] and result["seeds"] == [0, 1] and result["fixed_reading"] == "budget, sustained"
    assert result["comparator"] in ("uniform", "curated_only", budget_rule.EARLY)  # curated_only early-stopped: a baseline too
    assert set(result["final_val"]) == {"uniform", "curated_only", budget_rule.EARLY, "learnability"}
    for seed in (0, 1):
        for budget, steps in ((0.5, 10), (1.0, 20)):  # each run's schedule ends at its own budget
            run = Paths.of(budgets.budget_params(params, seed, budget))
            assert json.loads(run.train_record("learnability").read_text())["steps"] == steps
    verdict = result["verdicts"]["learnability"]
    assert verdict["verdict"] in ("yes", "no", "undecided")
    every = {*budget_rule.reading_names(), "budget, sustained; per-seed comparator"}  # every reading beside it
    assert set(verdict["readings"]) == every and len(every) == 11
    page = paths.study_report("budgets").read_text()
    assert "uv run winnow bench --study budgets" in page and "| in-run, sustained, k=5 |" in page
    assert (paths.bench_plots / "study_budgets.png").exists()
    # read again from the runs' metrics alone (a clone without the checkpoints): the same result, nothing trained
    shutil.rmtree(params.artifacts)
    paths.study_json("budgets").unlink()
    again = ["bench", "--study", "budgets", "--report-only", "--params", str(tiny)]
    assert main([*again, *[a for s in sets for a in ("--set", s)]]) == 0
    assert json.loads(paths.study_json("budgets").read_text()) == result and not Path(params.artifacts).exists()
    capsys.readouterr()
    other = [*[a for s in sets for a in ("--set", s)], "--set", "bench.seeds=1", "--set", "bench.budgets=[0.5,2.0]"]
    assert main([*again, *other]) != 0  # read with other params than it ran with: refused, naming what to pass
    err = capsys.readouterr().err
    assert "--set bench.budgets=[0.5,1] --set bench.seeds=2" in err
    assert json.loads(paths.study_json("budgets").read_text()) == result  # not overwritten


@pytest.mark.slow  # kept out of the default suite to hold it within ten minutes; -m slow runs it
def test_the_pool_study_measures_each_property_of_a_pretraining_pool_on_a_pool_per_seed(prefect_server, tiny):
    from winnow.cli import main
    from winnow.studies import pool

    sets = ["bench.seeds=2", "bench.budgets=[0.5,1.0]", "data.label_noise=frequency", "train.steps=20"]
    assert main(["bench", "--study", "pool", "--params", str(tiny), *[a for s in sets for a in ("--set", s)]]) == 0
    params = load_params(tiny, sets)
    result = json.loads(Paths.of(params).study_json("pool").read_text())
    assert result["seeds"] == [0, 1] and result["steps"] == 20
    assert set(result["properties"]) == {"label_precision", "curated_share", "curated_only_below_uniform", "uniform_plateaued"}
    assert result["properties"]["curated_share"]["values"] == [0.25, 0.25] and not result["properties"]["curated_share"]["met"]
    first, second = (Paths.of(pool.seed_params(params, seed)).data for seed in (0, 1))
    assert first != second and (first / "manifest.json").exists() and (second / "manifest.json").exists()  # a pool each
    assert "| every class's label precision >= 0.6 |" in Paths.of(params).study_report("pool").read_text()


@pytest.mark.slow  # kept out of the default suite to hold it within ten minutes; -m slow runs it
def test_the_scorer_and_learner_studies_write_a_row_per_size_with_its_table_and_plot(prefect_server, tiny):
    from flows.pipeline import bench_flow

    common = ["bench.seeds=1", "bench.scorers=[cnn-nano,cnn-tiny]", "bench.learners=[cnn-nano,cnn-tiny]", "train.model=cnn-tiny"]
    scorers = bench_flow(params_path=str(tiny), overrides=common, study="scorers")
    assert [r["scorer"] for r in scorers["rows"]] == ["cnn-nano", "cnn-tiny"]
    nano, tiny_scorer = scorers["rows"]
    assert nano["scorer_flops_over_learner"] < 0.5 and tiny_scorer["scorer_flops_over_learner"] == pytest.approx(1.0)
    assert nano["learner_forward_flops"] == tiny_scorer["learner_forward_flops"]  # one learner throughout
    learners = bench_flow(params_path=str(tiny), overrides=common, study="learners")
    assert [r["learner"] for r in learners["rows"]] == ["cnn-nano", "cnn-tiny"]
    assert learners["rows"][0]["learner_forward_flops"] < learners["rows"][1]["learner_forward_flops"]
    paths = Paths.of(load_params(tiny))
    for study in ("scorers", "learners"):
        report = paths.bench_report.with_name(f"bench-classification-{study}.md").read_text()
        assert f"uv run winnow bench --objective classification --study {study}" in report and "| time_ratio_full |" in report
        assert (paths.bench_plots / f"study_{study}.png").exists()
        assert json.loads((paths.bench / f"classification-{study}.json").read_text())["rows"]


@pytest.mark.slow  # kept out of the default suite to hold it within ten minutes; -m slow runs it
def test_the_levers_study_measures_each_lever_against_the_best_baseline_of_each_seed(prefect_server, tiny):
    from flows.pipeline import bench_flow

    sets = [
        "bench.seeds=1",
        "bench.policies=[uniform,curated_only]",
        "bench.levers={as-configured: {}, easy+anneal: {policies: [uniform, easy_reference], anneal_last: 0.5}, "
        "weighted: {selection: weighted, temperature: 0.5}}",
    ]
    result = bench_flow(params_path=str(tiny), overrides=sets, study="levers")
    assert [r["lever"] for r in result["rows"]] == ["as-configured", "easy+anneal", "weighted"]
    assert [r["policy"] for r in result["rows"]] == ["learnability", "easy_reference", "learnability"]
    assert result["best_baseline"][0] in ("uniform", "curated_only")
    runs = {r["lever"]: r for r in result["runs"]}
    on_disk = json.loads((Paths.of(load_params(tiny)).bench / "classification-levers.json").read_text())
    assert summaries.refresh(on_disk) == on_disk  # every ratio written on the log scale (studies/runs.spread)
    easy = on_disk["runs"][1]
    assert easy["changes"] == {"policies": ["uniform", "easy_reference"], "anneal_last": 0.5}
    assert easy["policy"] == "easy_reference"
    assert runs["weighted"]["changes"]["selection"] == "weighted"
    assert runs["easy+anneal"]["negative_learnability_last_tenth"] is None  # no actor: no learnability to alarm on
    paths = Paths.of(load_params(tiny))
    report = paths.study_report("levers").read_text()
    assert "uv run winnow bench --objective classification --study levers" in report
    assert "| easy+anneal | policies=['uniform', 'easy_reference'], anneal_last=0.5 |" in report
    assert "with the train settings in its row (a row whose policies name easy_reference trains that instead)" in report
    with pytest.raises(ConfigError, match=r"bench.levers.bad: anneal is not a train.\* setting"):
        load_params(tiny, ["bench.levers={bad: {anneal: 0.5}}"])


@pytest.mark.slow  # kept out of the default suite to hold it within ten minutes; -m slow runs it
def test_the_curate_study_puts_curated_pools_the_peer_and_another_learner_beside_online_selection(prefect_server, tiny):
    from flows.pipeline import bench_flow

    sets = ["bench.seeds=1", "bench.curate_fractions=[0.5]", "bench.peer_rule=cleanlab", "bench.transfer_learner=cnn-tiny"]
    result = bench_flow(params_path=str(tiny), overrides=sets, study="curate")
    arms = [r["arm"] for r in result["rows"]]
    assert arms == ["online learnability", "easy_reference-0.5", "cleanlab", "cnn-tiny: easy_reference-0.5"]
    half = result["rows"][1]
    assert half["kept_rows"]["mean"] == 600 and half["step_ratio"]["runs"] == 1
    run = next(r for r in result["runs"] if r["arm"] == "cleanlab")
    assert run["one_off_flops"] > next(r for r in result["runs"] if r["arm"] == "easy_reference-0.5")["one_off_flops"]
    paths = Paths.of(load_params(tiny))
    report = paths.bench_report.with_name("bench-classification-curate.md").read_text()
    assert "uv run winnow bench --objective classification --study curate" in report and "| cleanlab |" in report
    assert not paths.curate_report.exists()  # the bench's curations keep their reports beside their artifacts


def _cli(*args, cwd):
    return subprocess.run(
        [sys.executable, "-m", "winnow.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**__import__("os").environ, "PYTHONPATH": str(REPO)},
    )


def test_the_cli_rejects_a_wrong_param_naming_the_key(tiny):
    out = _cli("pipeline", "--params", str(tiny), "--set", "train.keep_fraction=2", cwd=tiny.parent)
    assert out.returncode == 2
    assert "train.keep_fraction" in out.stderr and "Traceback" not in out.stderr


def test_the_cli_names_a_missing_checkpoint(prefect_server, tiny, capsys):
    from winnow.cli import main
    from winnow.stages.data import data_stage

    data_stage(load_params(tiny))  # the data is there (a missing manifest is named first), the reference is not
    assert main(["score", "--params", str(tiny)]) == 2
    err = capsys.readouterr().err
    assert "reference.pt" in err and "no checkpoint" in err and "Traceback" not in err


def test_dvc_yaml_declares_the_chain_of_stages_with_one_train_stage_per_policy():
    out = subprocess.run(
        [sys.executable, "-m", "dvc", "stage", "list", "--name-only"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**__import__("os").environ, "DVC_NO_ANALYTICS": "1"},
    )
    assert out.returncode == 0, out.stderr
    policies = load_params(REPO / "params.yaml").train.policies
    assert out.stdout.split() == ["reference", "score", *[f"train@{p}" for p in policies], "curate", "evaluate", "summary"]


@pytest.mark.slow  # kept out of the default suite to hold it within ten minutes; -m slow runs it
def test_a_param_flipped_there_and_back_reruns_its_stage_instead_of_handing_back_the_other_runs_outputs(prefect_server, tiny):
    """curate.fraction 0.5 -> 0.3 -> 0.5: the third run has the first one's key, but the files on disk are the second's,
    so the cached result of the first may not be handed back (issue 26, finding 2)."""
    from flows.pipeline import curate_flow, pipeline_flow

    pipeline_flow(params_path=str(tiny))
    paths = Paths.of(load_params(tiny))
    runs = [curate_flow(params_path=str(tiny), overrides=[f"curate.fraction={f}"]) for f in (0.5, 0.3, 0.5)]
    on_disk = json.loads(paths.curate_record.read_text())
    assert runs[2]["kept_rows"] == runs[0]["kept_rows"] != runs[1]["kept_rows"]
    assert on_disk["fraction"] == 0.5 and on_disk["kept_rows"] == runs[2]["kept_rows"]
    assert len(__import__("numpy").load(paths.curated / "kept_ids.npy")) == runs[2]["kept_rows"]


@pytest.mark.slow  # kept out of the default suite to hold it within ten minutes; -m slow runs it
def test_a_curated_dataset_missing_a_shard_is_written_again_not_reused_as_complete(prefect_server, tiny):
    """Issue 26, finding 3: a shard deleted (or changed) since is noticed by its manifest's hashes, by the flow's
    cache and by the stage, and written again: the training that follows sees every kept row."""
    from flows.pipeline import curate_flow, pipeline_flow
    from winnow.datasets.contract import load_split

    pipeline_flow(params_path=str(tiny))
    paths = Paths.of(load_params(tiny))
    kept = curate_flow(params_path=str(tiny))["kept_rows"]
    shards = sorted((paths.curated / "pool").glob("part-*.parquet"))
    shards[0].unlink()
    again = curate_flow(params_path=str(tiny))
    assert again["kept_rows"] == kept and shards[0].exists()
    assert len(load_split(paths.curated / "pool", 32, 20)) == kept


@pytest.mark.slow  # kept out of the default suite to hold it within ten minutes; -m slow runs it
def test_a_scoring_run_killed_half_way_and_resumed_counts_every_shard_it_scored(prefect_server, tiny, monkeypatch):
    """Issue 26, finding 4: the ledger's time ratios claim everything paid, so the seconds of the shards a killed
    run scored are counted when a later run finishes the pool (here the task's retry resumes it)."""
    import time

    from flows.pipeline import data_flow, reference_flow, score_flow
    from winnow.scores import scoring

    data_flow(params_path=str(tiny))
    reference_flow(params_path=str(tiny))
    real, calls = scoring.score_shard, []

    def slow_then_killed(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("killed after two shards")
        time.sleep(0.5)  # each shard takes at least half a second
        return real(*args, **kwargs)

    monkeypatch.setattr(scoring, "score_shard", slow_then_killed)
    out = score_flow(params_path=str(tiny))  # the first attempt dies on shard 3; the retry scores shards 3 and 4
    shards = len(list((Path(load_params(tiny).data.root) / "pool").glob("part-*.parquet")))
    assert out["seconds"] >= 0.5 * shards  # every shard's half second, the killed attempt's two included
    assert out["seconds_this_run"] < out["seconds"]
