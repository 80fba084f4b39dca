"""`winnow curate`: each rule keeps exactly the examples it says, the curated pool is a dataset in the
data contract that agrees with its id list and says where it came from, and a killed curate resumes."""

import hashlib
import json
import shutil
from pathlib import Path

import duckdb
import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import TINY

from winnow.config import params_from_dict
from winnow.curation.dataset import check_curated, write_curated
from winnow.curation.rules import keep_top
from winnow.datasets.contract import load_split, read_manifest
from winnow.errors import ConfigError, DataError
from winnow.method.evaluation import class_probabilities
from winnow.scores import scoring
from winnow.stages.curate import _checkpoint_scorer, curate_stage
from winnow.stages.data import data_stage
from winnow.stages.inputs import reference_model
from winnow.stages.paths import Paths
from winnow.stages.reference import reference_stage
from winnow.stages.score import check_pool_ids, score_stage
from winnow.stages.train import train_stage


def _params(root: Path, objective: str = "classification", **curate_cfg):
    return params_from_dict(
        {
            **TINY,
            "objective": objective,
            "data": {**TINY["data"], "root": str(root / "data")},
            "artifacts": str(root / "artifacts"),
            "metrics": str(root / "metrics"),
            "plots": str(root / "plots"),
            "reports": str(root / "reports"),
            "curate": curate_cfg,
        }
    )


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    """The tiny pool with its reference scores in the store, and a finished learnability run (actor and learner)."""
    root = tmp_path_factory.mktemp("curate")
    params = _params(root)
    data_stage(params)
    reference_stage(params)
    score_stage(params)
    train_stage(params, "learnability")
    return root


def _store_losses(params) -> dict[int, float]:
    scorer = json.loads(Paths.of(params).scorer.read_text())["scorer_id"]
    con = duckdb.connect(str(Paths.of(params).store), read_only=True)
    try:
        rows = con.execute("SELECT example_id, loss FROM scores WHERE scorer_id = ? AND loss IS NOT NULL", [scorer]).fetchall()
    finally:
        con.close()
    return dict(rows)


def _source_ids(dest: Path) -> list[int]:
    return sorted(
        i for p in sorted((dest / "pool").glob("part-*.parquet")) for i in pq.read_table(p).column("source_id").to_pylist()
    )


def test_keep_top_keeps_the_best_scores_breaks_ties_by_id_and_never_keeps_the_unscored():
    scores = np.array([0.5, np.nan, 0.9, 0.5, 0.1, 0.9, 0.7, np.nan])
    assert keep_top(scores, 0.5).tolist() == [0, 2, 5, 6]  # 4 of 8 rows: 0.9, 0.9, 0.7, then the first 0.5
    assert keep_top(scores, 0.25).tolist() == [2, 5]
    assert keep_top(scores, 1.0).tolist() == [0, 2, 3, 4, 5, 6]  # every scored row, never a NaN


def test_class_balanced_keep_takes_the_same_fraction_of_every_class():
    scores = np.array([9.0, 8.0, 7.0, 6.0, 1.0, 2.0, 3.0, 4.0])
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    assert keep_top(scores, 0.5).tolist() == [0, 1, 2, 3]  # unbalanced: class 1 is drained
    assert keep_top(scores, 0.5, labels).tolist() == [0, 1, 6, 7]  # the best half of each class


@pytest.mark.e2e  # runs whole stages or other processes: the full tier
def test_easy_reference_keeps_the_lowest_reference_losses_in_the_store(scored, tmp_path):
    params = _params(scored, rule="easy_reference", fraction=0.3)
    out = curate_stage(params, tmp_path / "easy")
    losses = _store_losses(params)
    k = round(0.3 * params.data.num_pool)
    expected = sorted(sorted(losses, key=lambda i: (losses[i], i))[:k])
    assert np.load(tmp_path / "easy" / "kept_ids.npy").tolist() == expected == _source_ids(tmp_path / "easy")
    assert out["kept_rows"] == k and out["rule"] == "easy_reference"


@pytest.mark.e2e  # runs whole stages or other processes: the full tier
def test_balanced_easy_reference_keeps_the_fraction_within_every_class(scored, tmp_path):
    params = _params(scored, rule="easy_reference", fraction=0.5, balance=True)
    out = curate_stage(params, tmp_path / "balanced")
    for name, row in out["classes"].items():
        assert row["kept"] <= round(0.5 * row["pool"]) and row["kept"] >= round(0.5 * row["pool"]) - 1, name  # -1: undecodable


@pytest.mark.e2e  # runs whole stages or other processes: the full tier
def test_learnability_ranks_by_the_checkpoints_actor_loss_minus_the_reference_loss(scored, tmp_path):
    params = _params(scored, rule="learnability", fraction=0.4)
    curate_stage(params, tmp_path / "learn")
    actor, name, _ = _checkpoint_scorer(params)  # the run's actor, as the checkpoint holds it
    losses, online = _store_losses(params), {}
    for shard in sorted((scored / "data" / "pool").glob("part-*.parquet")):
        table = scoring.score_shard(actor, shard, 32, 20, params.score.batch_size, "classification", name)
        online.update(
            {i: v for i, v in zip(table.column("example_id").to_pylist(), table.column("loss").to_pylist()) if v is not None}
        )
    score = {i: online[i] - losses[i] for i in losses}
    expected = sorted(sorted(score, key=lambda i: (-score[i], i))[: round(0.4 * params.data.num_pool)])
    kept = np.load(tmp_path / "learn" / "kept_ids.npy").tolist()
    assert len(set(kept) ^ set(expected)) <= 2  # float32 ties at the cut aside, the same examples
    manifest = read_manifest(tmp_path / "learn")
    assert manifest["curation"]["checkpoint_scorer"] == "actor" and manifest["curation"]["checkpoint"].endswith("learnability.pt")
    first = json.loads((tmp_path / "learn" / "curation.json").read_text())
    again = curate_stage(_params(scored, rule="learnability", fraction=0.2), tmp_path / "learn-again")
    assert again["pass_rows"] == first["pass_rows"] > 0  # the pass, reused from disk, is still paid in full
    assert again["pass_flops"] == first["pass_flops"] > 0


@pytest.mark.e2e  # runs whole stages or other processes: the full tier
def test_cleanlab_keeps_what_find_label_issues_does_not_flag_and_drops_wrong_labels(scored, tmp_path):
    from cleanlab.filter import find_label_issues

    params = _params(scored, rule="cleanlab")
    out = curate_stage(params, tmp_path / "clean")
    model = reference_model(params)
    pool = load_split(scored / "data" / "pool", 32, 20)
    probs = class_probabilities(model, pool.images, 128).numpy()
    flagged = find_label_issues(pool.labels, probs.astype(np.float64), n_jobs=1)  # no fork from this threaded process
    assert np.load(tmp_path / "clean" / "kept_ids.npy").tolist() == sorted(pool.ids[~flagged].tolist())
    assert out["fraction"] is None and out["pass"] == "probs" and out["pass_flops"] > 0  # its extra pass, counted
    noisy = out["pathology"]["noisy_label"]["kept_share"]
    assert noisy < out["pathology"]["clean"]["kept_share"]  # it drops wrong labels more than clean ones


@pytest.mark.e2e  # runs whole stages or other processes: the full tier
def test_the_curated_pool_is_a_dataset_that_agrees_with_its_id_list_and_names_its_provenance(scored, tmp_path):
    params = _params(scored, fraction=0.5)
    dest = tmp_path / "half"
    curate_stage(params, dest)
    kept = np.load(dest / "kept_ids.npy")
    assert kept.dtype == np.int64 and np.all(np.diff(kept) > 0)  # sorted, unique: DataComp's uid list
    source = load_split(scored / "data" / "pool", 32, 20, ("pathology",))
    mine = load_split(dest / "pool", 32, 20, ("pathology", "source_id"))
    assert mine.ids.tolist() == list(range(len(kept)))  # dense from 0: the data contract's pool ids
    rows = np.searchsorted(source.ids, mine.columns["source_id"].astype(np.int64))
    assert mine.columns["source_id"].astype(np.int64).tolist() == kept.tolist()
    assert np.array_equal(mine.images.numpy(), source.images[rows].numpy())  # the very rows, bytes for bytes
    assert np.array_equal(mine.labels, source.labels[rows])
    check_pool_ids(dest / "pool")
    manifest = read_manifest(dest)
    provenance = manifest["curation"]
    scorer = json.loads(Paths.of(params).scorer.read_text())
    assert provenance["scorer_id"] == scorer["scorer_id"] and provenance["reference_sha256"] == scorer["model_hash"]
    assert (provenance["rule"], provenance["fraction"], provenance["balance"]) == ("easy_reference", 0.5, False)
    assert provenance["kept_ids_sha256"] == hashlib.sha256(kept.tobytes()).hexdigest()
    assert "generator" not in manifest  # `winnow data synth` never treats it as its own
    assert manifest["counts"]["pool"] == len(kept) == sum(manifest["counts"]["pool_pathologies"].values())
    assert (dest / "eval" / "test").is_dir() and (dest / "curated").is_dir()


@pytest.mark.e2e  # runs whole stages or other processes: the full tier
def test_the_store_is_read_never_written(scored, tmp_path):
    params = _params(scored, fraction=0.2)
    store = Paths.of(params).store
    before = hashlib.sha256(store.read_bytes()).hexdigest()
    curate_stage(params, tmp_path / "ro")
    assert hashlib.sha256(store.read_bytes()).hexdigest() == before


@pytest.mark.e2e  # runs whole stages or other processes: the full tier
def test_a_killed_curate_resumes_to_the_same_bytes(scored, tmp_path):
    params = _params(scored, fraction=0.5)
    curate_stage(params, tmp_path / "whole")

    def crash(path):
        raise KeyboardInterrupt(f"killed after {path.name}")

    with pytest.raises(KeyboardInterrupt):
        curate_stage(params, tmp_path / "killed", on_shard=crash)
    assert not (tmp_path / "killed" / "manifest.json").exists()  # unfinished, and says so
    assert len(list((tmp_path / "killed" / "pool").glob("part-*.parquet"))) == 1
    curate_stage(params, tmp_path / "killed")
    for path in sorted((tmp_path / "whole" / "pool").glob("part-*.parquet")):
        assert (tmp_path / "killed" / "pool" / path.name).read_bytes() == path.read_bytes()
    assert not list((tmp_path / "killed").rglob("*.tmp"))


@pytest.mark.e2e  # runs whole stages or other processes: the full tier
def test_another_rule_rewrites_the_curated_pool_instead_of_mixing_the_two(scored, tmp_path):
    dest = tmp_path / "again"
    curate_stage(_params(scored, fraction=0.5), dest)
    curate_stage(_params(scored, fraction=0.1), dest)
    assert len(_source_ids(dest)) == round(0.1 * TINY["data"]["num_pool"]) == len(np.load(dest / "kept_ids.npy"))
    check_curated(dest)


@pytest.mark.e2e  # runs whole stages or other processes: the full tier
def test_a_folder_that_is_not_a_curated_dataset_is_never_overwritten(scored, tmp_path):
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="not a curated dataset"):
        curate_stage(_params(scored), theirs)
    assert (theirs / "notes.txt").read_text() == "mine"


def test_wrong_curate_params_are_named(tmp_path):
    with pytest.raises(ConfigError, match="curate.rule: 'clip_score' ranks image-text pairs.*contrastive"):
        _params(tmp_path, rule="clip_score")
    with pytest.raises(ConfigError, match="curate.rule: 'cleanlab' finds wrong labels.*classification"):
        _params(tmp_path, "contrastive", rule="cleanlab")
    with pytest.raises(ConfigError, match="curate.scorer: 'actor'.*'uniform' run trains no actor"):
        _params(tmp_path, rule="learnability", policy="uniform")
    with pytest.raises(ConfigError, match="curate.fraction"):
        _params(tmp_path, fraction=0)
    with pytest.raises(ConfigError, match="unknown key 'curate.ratio'"):
        _params(tmp_path, ratio=0.5)


def test_clip_score_keeps_the_pairs_most_similar_under_the_reference(tmp_path):
    params = _params(tmp_path, "contrastive", rule="clip_score", fraction=0.3)
    data_stage(params)
    reference_stage(params)
    score_stage(params)
    out = curate_stage(params)
    scorer = json.loads(Paths.of(params).scorer.read_text())["scorer_id"]
    con = duckdb.connect(str(Paths.of(params).store), read_only=True)
    try:
        rows = con.execute(
            "SELECT example_id FROM embeddings WHERE scorer_id = ? "
            "ORDER BY list_dot_product(image, text) DESC, example_id LIMIT ?",
            [scorer, round(0.3 * params.data.num_pool)],
        ).fetchall()
    finally:
        con.close()
    dest = Paths.of(params).curated
    kept = np.load(dest / "kept_ids.npy").tolist()
    assert len(set(kept) ^ {r[0] for r in rows}) <= 2  # float32 sums in another order: a tie at the cut at most
    assert out["dest"] == str(dest) and dest.name == "data-contrastive"
    report = Paths.of(params).curate_report.read_text()
    assert "DataComp's CLIP-score filter" in report and "![dropped examples]" in report
    assert (Paths.of(params).curate_plots / "dropped.png").stat().st_size > 10_000
    shutil.rmtree(tmp_path / "artifacts")


@pytest.mark.e2e  # runs whole stages or other processes: the full tier
def test_cleanlab_never_forks_a_process_pool_from_a_threaded_process(scored, tmp_path, monkeypatch):
    """A fork of a process that runs torch's and Prefect's threads can deadlock a worker on a lock held at
    fork time (the suite once hung there for 15 minutes): the cleanlab rule must run in this process."""
    import multiprocessing
    import multiprocessing.pool

    def refuse(*args, **kwargs):
        raise AssertionError("a multiprocessing pool was opened")

    monkeypatch.setattr(multiprocessing, "Pool", refuse)
    monkeypatch.setattr(multiprocessing.pool, "Pool", refuse)
    out = curate_stage(_params(scored, rule="cleanlab"), tmp_path / "clean")
    assert out["kept_rows"] > 0


@pytest.mark.e2e  # runs whole stages or other processes: the full tier
def test_curating_a_curated_pool_keeps_every_earlier_source_id(scored, tmp_path):
    once, twice = tmp_path / "once", tmp_path / "twice"
    curate_stage(_params(scored, fraction=0.5), once)
    first = np.load(once / "kept_ids.npy")
    provenance = {"rule": "easy_reference", "fraction": 0.01}
    write_curated(once, twice, np.array([0, 2, 5]), provenance)
    table = pq.read_table(sorted((twice / "pool").glob("part-*.parquet"))[0])
    assert table.column("id").to_pylist() == [0, 1, 2]
    assert table.column("source_id").to_pylist() == [0, 2, 5]  # ids of the pool it was curated from
    assert table.column("source_source_id").to_pylist() == first[[0, 2, 5]].tolist()  # ... and of the one before


@pytest.mark.e2e  # runs whole stages or other processes: the full tier
def test_a_rule_that_keeps_nothing_is_an_error_not_an_empty_dataset(scored, tmp_path):
    with pytest.raises(DataError, match="rule easy_reference kept no example.*raise curate.fraction"):
        write_curated(scored / "data", tmp_path / "none", np.zeros(0, np.int64), {"rule": "easy_reference"})
    assert not (tmp_path / "none").exists()
