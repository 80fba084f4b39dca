"""params.yaml is the one configuration, validated on load with errors that name the key."""

from pathlib import Path

import pytest

from winnow.config import ConfigError, load_params, params_from_dict
from winnow.stages.paths import Paths
from winnow.studies.runs import run_params

REPO = Path(__file__).resolve().parents[1]


def test_the_committed_params_file_is_valid():
    params = load_params("params.yaml")
    assert params.train.super_batch_size == round(params.train.batch_size / params.train.keep_fraction)
    assert "uniform" in params.train.policies


@pytest.mark.parametrize(
    "raw, names",
    [
        ({"trian": {}}, "trian"),
        ({"train": {"stpes": 10}}, "train.stpes"),
        ({"train": {"steps": "many"}}, "train.steps"),
        ({"train": {"keep_fraction": 1.5}}, "train.keep_fraction"),
        ({"train": {"policies": ["uniform", "magic"]}}, "magic"),
        ({"train": {"policies": ["learnability"]}}, "uniform"),
        ({"reference": {"model": "resnet-9000"}}, "reference.model"),
        ({"data": {"pathologies": {"noisy_label": 1.2}}}, "data.pathologies.noisy_label"),
        ({"data": {"pathologies": {"noisy_label": 0.6, "duplicate": 0.5}}}, "data.pathologies"),
        ({"train": {"selection": "greedy"}}, "train.selection"),
        ({"train": {"selection": "jest"}}, "train.selection: 'jest' selects batches jointly"),
        ({"objective": "contrastive", "train": {"selection": "jest", "jest_chunks": 65}}, "jest_chunks (65)"),
        ({"train": {"score_resolution": 48}}, "train.score_resolution (48) must not exceed data.image_size (32)"),
        ({"score": {"resolution": 4}}, "score.resolution"),
        ({"objective": "contrastive", "score": {"resolution": 12}}, "score.resolution (12) must be a multiple of clip-pico's"),
        ({"train": {"actor": "learner", "score_resolution": 16}}, "train.score_resolution sets the actor's resolution"),
    ],
)
def test_a_wrong_key_or_value_is_an_error_naming_it(raw, names):
    with pytest.raises(ConfigError, match=names.replace(".", r"\.").replace("(", r"\(").replace(")", r"\)")):
        params_from_dict(raw)


def test_overrides_use_dotted_keys_and_yaml_values(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("train:\n  steps: 10\n")
    params = load_params(path, ["train.steps=20", "train.policies=[uniform, learnability]", "data.pathologies.blank=0.0"])
    assert params.train.steps == 20
    assert params.train.policies == ("uniform", "learnability")
    assert params.data.pathologies.blank == 0.0


def test_a_missing_params_file_says_where_it_looked(tmp_path):
    with pytest.raises(ConfigError, match="no such params file"):
        load_params(tmp_path / "nope.yaml")


def test_a_number_written_1e_minus_4_is_a_float_not_an_error():
    assert load_params(REPO / "params.yaml", ["train.lr=1e-4"]).train.lr == 1e-4


def test_the_code_defaults_are_params_yaml_so_a_partial_params_file_means_the_same_run():
    for objective in ("classification", "contrastive"):
        assert params_from_dict({"objective": objective}) == load_params(REPO / "params.yaml", [f"objective={objective}"])


def test_an_empty_params_file_runs_the_defaults_of_params_yaml(tmp_path):
    (tmp_path / "empty.yaml").write_text("")
    assert load_params(tmp_path / "empty.yaml") == load_params(REPO / "params.yaml")


def test_data_root_is_shorthand_for_the_folder_and_the_dataset_name():
    params = load_params(REPO / "params.yaml", ["data.root=/shards/mine"])
    assert (params.data.dir, params.data.name, params.data.root) == ("/shards", "mine", "/shards/mine")
    with pytest.raises(ConfigError, match="data.name: must be a folder name"):
        load_params(REPO / "params.yaml", ["data.name=a/b"])


def test_the_names_params_accept_are_the_objectives_and_policies_that_exist():
    from winnow import config
    from winnow.method.objectives import OBJECTIVES
    from winnow.method.policies import POLICIES

    assert config.OBJECTIVE_NAMES == tuple(OBJECTIVES) and config.POLICY_NAMES == tuple(POLICIES)


@pytest.mark.parametrize("objectives", [{"contrastive": {"train": 5}}, {"contrastive": ["train"]}])
def test_a_malformed_objectives_section_is_named(objectives):
    with pytest.raises(ConfigError, match="objectives.contrastive"):
        params_from_dict({"objective": "contrastive", "objectives": objectives})


def test_an_override_wins_over_the_objectives_own_section():
    params = load_params("params.yaml", ["objective=contrastive", "reference.lr=0.003", "train.actor=clip-nano"])
    assert params.reference.lr == 0.003 and params.train.actor == "clip-nano"  # not undone by objectives.contrastive
    assert params.train.model == "clip-tiny"  # what the override leaves alone still comes from objectives.contrastive


def test_an_actor_must_be_a_model_of_the_objective_and_read_the_learners_targets():
    with pytest.raises(ConfigError, match=r"train.actor: 'clip-pico' is not a classification model.*or 'learner'"):
        load_params("params.yaml", ["train.actor=clip-pico"])
    with pytest.raises(ConfigError, match=r"train.actor: 'clip-pico' reads the targets differently from the learner 'clip-vit"):
        load_params("params.yaml", ["objective=contrastive", "train.model=clip-vit-b-32", "bench.learners=[clip-vit-b-32]"])
    assert load_params("params.yaml", ["train.actor=learner"]).train.actor == "learner"


@pytest.mark.parametrize("bad", ["train.steps=true", "train.steps=1.5", "seed=false"])
def test_a_boolean_or_a_fraction_where_a_whole_number_belongs_is_refused_naming_the_key(tmp_path, capsys, bad):
    """Issue 26: `--set train.steps=true` passed validation as 1 and trained a single step."""
    from winnow.cli import main

    assert main(["train", "--policy", "uniform", "--params", str(REPO / "params.yaml"), "--set", bad]) == 2
    assert f"{bad.split('=')[0]}: Input should be a valid integer" in capsys.readouterr().err


@pytest.mark.parametrize("bad", ["train.lr=true", "train.keep_fraction=true", "data.pathologies.blank=false"])
def test_a_boolean_where_a_number_belongs_is_refused_naming_the_key(capsys, bad):
    """Issue 46: float params read `true` as 1.0: train.lr=true trained at 1.0, keep_fraction=true kept everything."""
    from winnow.cli import main

    assert main(["train", "--policy", "uniform", "--params", str(REPO / "params.yaml"), "--set", bad]) == 2
    key, value = bad.split("=")
    assert f"{key}: must be a number, got {value}" in capsys.readouterr().err
    assert load_params(REPO / "params.yaml", ["train.refresh_reference=true"]).train.refresh_reference  # a switch still is


def test_a_labelled_study_run_is_written_beside_the_study_never_over_it():
    plain, labelled = (Paths.of(load_params(overrides=sets)) for sets in ([], ["bench.label=five-seeds"]))
    for study in ("policies", "levers", "memory"):
        assert plain.study_json(study) != labelled.study_json(study)
        assert plain.study_report(study) != labelled.study_report(study)
    assert labelled.study_json("levers").name == "classification-levers-five-seeds.json"
    assert labelled.study_report("levers").name == "bench-classification-levers-five-seeds.md"
    assert labelled.bench_curve("uniform") != plain.bench_curve("uniform") and labelled.bench_plots != plain.bench_plots
    run = run_params(load_params(overrides=["bench.label=five-seeds"]), "levers/seed-0/baselines", 0)
    assert "/five-seeds/levers/seed-0/" in run.artifacts and "/five-seeds/levers/seed-0/" in run.metrics
    for wrong in ("../elsewhere", "seed-0"):
        with pytest.raises(ConfigError, match="bench.label"):
            load_params(overrides=[f"bench.label={wrong}"])


def test_arms_side_by_side_and_one_arm_over_several_ranks_are_not_asked_at_once(tiny):
    with pytest.raises(ConfigError, match=r"train.parallel_arms \(2\).*train.nproc_per_node \(2\)"):
        load_params(tiny, ["train.parallel_arms=2", "train.nproc_per_node=2"])
    with pytest.raises(ConfigError, match="parallel_arms"):
        load_params(tiny, ["train.parallel_arms=0"])


def test_every_param_a_dvc_stage_reads_is_in_params_yaml():
    """dvc repro and dvc commit refuse a stage whose params are missing from params.yaml, defaults or not."""
    import yaml

    repo = Path(__file__).resolve().parents[1]
    raw = yaml.safe_load((repo / "params.yaml").read_text())
    missing = []
    for name, stage in yaml.safe_load((repo / "dvc.yaml").read_text())["stages"].items():
        spec = stage.get("do", stage)
        for entry in spec.get("params", []):
            for key in entry if isinstance(entry, dict) else [entry]:
                node = raw
                for part in str(key).split("."):
                    if not isinstance(node, dict) or part not in node:
                        missing.append(f"{name}: {key}")
                        break
                    node = node[part]
    assert not missing, f"params.yaml lacks what dvc.yaml's stages read: {missing}"
