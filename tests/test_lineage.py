"""One definition of what each stage depends on (dvc.yaml, read by winnow.stages.lineage): its data, its
params and all of its code. DVC, the Prefect cache and resume use it, so a stage whose inputs
changed recomputes, and a result made from other inputs is never handed back."""

import json
import shutil
import sys
import threading
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from conftest import TINY

from winnow.config import params_from_dict
from winnow.errors import DataError, StaleInput
from winnow.stages import lineage
from winnow.stages.curate import curate_stage
from winnow.stages.data import data_stage
from winnow.stages.evaluate import evaluate_stage
from winnow.stages.inputs import claim_outputs
from winnow.stages.reference import reference_stage
from winnow.stages.score import score_stage
from winnow.stages.summary import summary_stage
from winnow.stages.train import train_stage

REPO = Path(__file__).resolve().parents[1]
# Bookkeeping that shapes no output: hashing the inputs themselves.
NOT_A_DEPENDENCY = {"winnow/stages/lineage.py"}


def _params(tmp_path, objective="classification", **data):
    return params_from_dict(
        {
            **TINY,
            "objective": objective,
            "data": {**TINY["data"], "root": str(tmp_path / "data"), **data},
            "artifacts": str(tmp_path / "a"),
            "metrics": str(tmp_path / "m"),
            "plots": str(tmp_path / "p"),
            "reports": str(tmp_path / "r"),
        }
    )


def _code_run_by(fn, *args) -> set[str]:
    """Files of winnow's own code (winnow/, models/) that `fn` calls into, found by a tracer (a global trace function
    sees each Python call and returns None, so no line is traced: far cheaper than a profiler, which sees C calls too)."""
    files = set()
    root = str(REPO)

    def trace(frame, event, arg):
        name = frame.f_code.co_filename
        if name.startswith(root) and ".venv" not in name and frame.f_code.co_name != "<module>":
            files.add(name)

    sys.settrace(trace)
    threading.settrace(trace)
    try:
        fn(*args)
    finally:
        sys.settrace(None)
        threading.settrace(None)
    files = {Path(name).relative_to(REPO).as_posix() for name in files}
    return {f for f in files if f.startswith(("winnow/", "models/"))} - NOT_A_DEPENDENCY


def _listed(stage: str) -> set[str]:
    spec = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"][stage]
    return {d for d in spec.get("do", spec)["deps"] if "${" not in d}


def _covered(files: set[str], listed: set[str]) -> set[str]:
    """The files not covered by a listed file or folder."""
    return {f for f in files if not any(f == d or f.startswith(d.rstrip("/") + "/") for d in listed)}


@pytest.mark.e2e  # runs whole stages or other processes: the full tier
# contrastive in the slow tier (about 25 s; the suite stays within ten minutes): most of its code is the classifier's
@pytest.mark.parametrize("objective", ["classification", pytest.param("contrastive", marks=pytest.mark.slow)])
def test_dvc_yaml_lists_every_file_of_code_each_stage_runs(tmp_path, monkeypatch, objective):
    monkeypatch.chdir(tmp_path)
    params = _params(tmp_path, objective)
    data_stage(params)
    runs = [("reference", reference_stage, (params,)), ("score", score_stage, (params,))]
    # every arm's code path once: the tiny run's arms (a baseline, the filter, the actor) and uniform over both sets
    every = dict.fromkeys((*params.train.policies, "curated_plus_pool", "filtered"))
    streamed = params.model_copy(update={"train": params.train.model_copy(update={"shuffle_buffer": 256})})
    runs += [("train", train_stage, (streamed, policy)) for policy in ("curated_plus_pool", "filtered")]  # the pool streams
    runs += [("train", train_stage, (params, policy)) for policy in every]  # (retrained here as the later stages read them)
    runs += [("curate", curate_stage, (params,))]
    runs += [("evaluate", evaluate_stage, (params,)), ("summary", summary_stage, (params,))]
    for stage, fn, args in runs:
        missing = _covered(_code_run_by(fn, *args), _listed(stage))
        assert not missing, f"dvc.yaml stage {stage!r} runs {sorted(missing)} but does not list it as a dependency"


def _keys(params, stages) -> dict[str, str]:
    return {stage: lineage.stage_key(stage, params, "uniform" if stage == "train" else None) for stage in stages}


@pytest.fixture
def repo_copy(tmp_path, monkeypatch):
    """The code and dvc.yaml copied aside, with lineage reading them there, so a test can edit them."""
    repo = tmp_path / "repo"
    for name in ("winnow", "models"):
        shutil.copytree(REPO / name, repo / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "dvc.yaml", repo / "dvc.yaml")
    monkeypatch.setattr(lineage, "REPO", repo)
    monkeypatch.setattr(lineage, "DVC_YAML", repo / "dvc.yaml")
    return repo


def test_editing_the_code_a_stage_runs_changes_its_key(tmp_path, repo_copy):
    """The loss is code the learner's results depend on: editing it reruns train (and DVC would too)."""
    params = _params(tmp_path)
    before = _keys(params, ("reference", "train", "summary"))
    with open(repo_copy / "winnow" / "method" / "losses.py", "a") as f:
        f.write("\n# an edit\n")
    after = _keys(params, before)
    assert after["reference"] != before["reference"] and after["train"] != before["train"]
    assert after["summary"] == before["summary"]  # the summary does not run the loss


CHAIN = ("reference", "score", "train", "curate", "evaluate", "summary")


@pytest.mark.parametrize("edited", CHAIN)
def test_editing_one_stages_file_reruns_that_stage_and_leaves_every_upstream_key_unchanged(tmp_path, repo_copy, edited):
    """Each stage is a file of its own: an edit to the summary reruns the summary only, not the reference and
    everything after it (as it did when every stage lived in one module)."""
    params = _params(tmp_path)
    before = _keys(params, CHAIN)
    with open(repo_copy / "winnow" / "stages" / f"{edited}.py", "a") as f:
        f.write("\n# an edit\n")
    after = _keys(params, CHAIN)
    upstream = CHAIN[: CHAIN.index(edited)]
    assert {s: after[s] for s in upstream} == {s: before[s] for s in upstream}
    assert after[edited] != before[edited]


def test_the_key_of_each_stage_holds_its_params_but_not_unrelated_ones(tmp_path):
    base = _params(tmp_path)
    lr = params_from_dict(
        {
            **TINY,
            "data": {**TINY["data"], "root": str(tmp_path / "data")},
            "artifacts": str(tmp_path / "a"),
            "metrics": str(tmp_path / "m"),
            "plots": str(tmp_path / "p"),
            "reports": str(tmp_path / "r"),
            "train": {**TINY["train"], "lr": 0.01},
        }
    )
    assert lineage.stage_key("train", lr, "uniform") != lineage.stage_key("train", base, "uniform")
    assert lineage.stage_key("reference", lr) == lineage.stage_key("reference", base)
    bounded = base.model_copy(update={"train": base.train.model_copy(update={"eval_examples": 10})})
    for stage, item in (("train", "uniform"), ("reference", None)):  # both read the curves' validation rows
        assert lineage.stage_key(stage, bounded, item) != lineage.stage_key(stage, base, item)
    assert lineage.stage_key("score", bounded) == lineage.stage_key("score", base)


def _relist(shard: Path) -> None:
    """A shard written anew, listed in its dataset's manifest as `winnow data import` would list it."""
    from winnow.datasets.digests import file_sha256

    root = shard.parent.parent
    manifest = json.loads((root / "manifest.json").read_text())
    manifest["files"][f"{shard.parent.name}/{shard.name}"] = file_sha256(shard)
    (root / "manifest.json").write_text(json.dumps(manifest))


def _rewrite_labels(shard: Path, n: int) -> None:
    table = pq.read_table(shard)
    labels = table.column("label").to_numpy().copy()
    labels[:n] = (labels[:n] + 1) % 20
    pq.write_table(table.set_column(table.column_names.index("label"), "label", pa.array(labels, pa.int32())), shard)


@pytest.fixture
def scored(tmp_path, monkeypatch):
    """Tiny data with a trained reference and its scores in the store: what train reads."""
    monkeypatch.chdir(tmp_path)
    params = _params(tmp_path)
    data_stage(params)
    reference_stage(params)
    score_stage(params)
    return params


@pytest.mark.e2e  # runs whole stages or other processes: the full tier
def test_a_learner_trained_on_other_data_is_retrained_not_returned(tmp_path, scored):
    params = scored
    first = train_stage(params, "uniform")
    again = train_stage(params, "uniform")  # nothing changed: the finished checkpoint is reused
    assert again["seconds"] == first["seconds"]

    shard = sorted((tmp_path / "data" / "pool").glob("part-*.parquet"))[0]
    _rewrite_labels(shard, 100)
    with pytest.raises(DataError, match=f"{shard.name}: its bytes are not those .*manifest.json lists"):
        train_stage(params, "uniform")  # changed behind its manifest's back: refused
    _relist(shard)  # changed as a re-import would: listed anew
    retrained = train_stage(params, "uniform")
    assert retrained["seconds"] != first["seconds"]  # a fresh run: the old checkpoint was made from other labels
    reference_stage(params)  # the manifest is the reference's dependency: it is trained again too
    with pytest.raises(StaleInput, match="scored another pool.*rerun `winnow score`"):
        train_stage(params, "learnability")  # the store's losses belong to the old pool
    score_stage(params)  # a new scorer for the new pool
    assert train_stage(params, "learnability")["steps"] == params.train.steps


@pytest.mark.e2e  # runs whole stages or other processes: the full tier
def test_a_new_data_seed_retrains_the_reference(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    params = _params(tmp_path)
    data_stage(params)
    first = reference_stage(params)
    reseeded = _params(tmp_path, seed=1)
    assert data_stage(reseeded)["generated"]
    assert reference_stage(reseeded)["model_hash"] != first["model_hash"]


@pytest.mark.e2e  # runs whole stages or other processes: the full tier
def test_a_shard_added_after_scoring_is_caught_before_training(tmp_path, scored):
    params = scored
    pool = tmp_path / "data" / "pool"
    extra = pq.read_table(sorted(pool.glob("part-*.parquet"))[0])
    ids = np.arange(params.data.num_pool, params.data.num_pool + extra.num_rows, dtype=np.int64)
    pq.write_table(extra.set_column(0, "id", pa.array(ids)), pool / "part-99999.parquet")
    with pytest.raises(DataError, match="part-99999.parquet: a shard that .*manifest.json does not list"):
        train_stage(params, "learnability")
    _relist(pool / "part-99999.parquet")  # listed, as a re-import would: then the store is the other pool's
    reference_stage(params)  # (the manifest is the reference's dependency: it is trained again)
    with pytest.raises(StaleInput, match="scored another pool"):
        train_stage(params, "learnability")


def test_two_folders_with_one_dataset_name_cannot_share_outputs(tmp_path):
    from winnow.errors import DataError

    for folder in (tmp_path / "data", tmp_path / "elsewhere" / "data"):  # two datasets (manifests), one name
        folder.mkdir(parents=True)
        (folder / "manifest.json").write_text("{}")
    claim_outputs(_params(tmp_path))  # tmp/data, name "data"
    other = params_from_dict(
        {**TINY, "data": {**TINY["data"], "root": str(tmp_path / "elsewhere" / "data")}, "artifacts": str(tmp_path / "a")}
    )
    with pytest.raises(DataError, match="data.name 'data' already holds the outputs of"):
        claim_outputs(other)
