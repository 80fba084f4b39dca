"""Training sequences, recorded and replayed: a selecting run writes the pool ids it kept at each step (resuming
after a kill with nothing lost or doubled); a replay trains another learner on exactly those ids, with no actor and
no super-batch, and the ledger charges it the learner's steps plus its share of the recording's selection. A sequence
of another pool, one too short for the run, or one at another batch size is refused, naming the file or the key."""

import pytest
import torch

from models import build_classifier
from winnow.config import TrainConfig, load_params
from winnow.datasets.contract import load_split
from winnow.datasets.replay import Replay, read_sequence, write_sequence
from winnow.datasets.stream import InMemory
from winnow.errors import ConfigError, DataError
from winnow.method.checkpoints import CheckpointPlan
from winnow.method.selection import Selector
from winnow.method.training import Actor, train


class Crash(Exception):
    pass


@pytest.fixture(scope="module")
def pool(tiny_data):
    return load_split(f"{tiny_data.data.root}/pool", 32, 20)


def _select(pool, path, on_step=None):
    torch.manual_seed(0)
    model, actor = build_classifier("cnn-nano", 20), build_classifier("cnn-nano", 20)
    sampler = InMemory(pool, torch.as_tensor(pool.labels), 0, pool.columns["pathology"])
    cfg = TrainConfig(model="cnn-nano", steps=12, batch_size=16, warmup_steps=2)
    return train(
        model,
        sampler,
        cfg,
        seed=0,
        selector=Selector("hard_learner", keep_fraction=0.5),
        actor=Actor(actor),
        checkpoint=CheckpointPlan(path, every=5),
        on_step=on_step,
    )


def test_a_selecting_run_records_the_ids_it_kept_and_a_killed_run_resumes_to_the_same_sequence(pool, tmp_path):
    kept = []
    straight = _select(pool, tmp_path / "a.pt", lambda step, ids: kept.append(ids.tolist()))
    assert straight["sequence"] == kept and len(kept) == 12 and all(len(ids) == 16 for ids in kept)

    def crash(step, ids):
        if step == 8:
            raise Crash

    with pytest.raises(Crash):
        _select(pool, tmp_path / "b.pt", crash)
    assert _select(pool, tmp_path / "b.pt")["sequence"] == kept  # steps 6-8 replayed once, none lost or doubled


def test_a_replay_trains_another_learner_on_exactly_the_recorded_ids_step_by_step(pool, tmp_path):
    recorded = _select(pool, tmp_path / "a.pt")["sequence"]
    path = write_sequence(tmp_path / "s.parquet", recorded, {"steps": 12, "batch_size": 16})
    sequence, meta = read_sequence(path)
    assert [s.tolist() for s in sequence] == recorded and meta["batch_size"] == 16
    torch.manual_seed(0)
    replay = Replay(pool, torch.as_tensor(pool.labels), sequence, str(path))
    seen = []
    cfg = TrainConfig(model="cnn-tiny", steps=12, batch_size=16, warmup_steps=2)
    train(build_classifier("cnn-tiny", 20), replay, cfg, seed=1, on_step=lambda step, ids: seen.append(ids.tolist()))
    assert seen == recorded  # a larger learner, the same rows at every step

    short = Replay(pool, torch.as_tensor(pool.labels), sequence[:3], str(path))
    with pytest.raises(DataError, match=r"s.parquet: it holds 3 steps, and the run asks for step 4"):
        train(build_classifier("cnn-nano", 20), short, cfg, seed=1)


def test_a_sequence_of_another_pool_is_refused_naming_the_file(pool, tmp_path):
    path = write_sequence(tmp_path / "s.parquet", [[10**9] * 16], {"steps": 1, "batch_size": 16})
    with pytest.raises(DataError, match=r"s.parquet: 1 of the ids it kept are not in this pool \(the first: 1000000000\)"):
        Replay(pool, torch.as_tensor(pool.labels), read_sequence(path)[0], str(path))
    (tmp_path / "junk.parquet").write_bytes(b"not parquet")
    with pytest.raises(DataError, match=r"junk.parquet: not a training sequence winnow wrote"):
        read_sequence(tmp_path / "junk.parquet")


def test_the_replay_arm_runs_through_the_stages_and_pays_the_learner_and_its_share_of_the_recordings_selection(tiny, tiny_data):
    from winnow.stages.paths import Paths
    from winnow.stages.reference import reference_stage
    from winnow.stages.score import score_stage
    from winnow.stages.summary import summary_stage
    from winnow.stages.train import train_stage

    base = [f"data.root={tiny_data.data.root}", "train.steps=10", "train.eval_examples=50", "train.replay=learnability"]
    sets = [*base, "train.policies=[uniform,learnability,replay]", "train.replay_users=4"]
    params = load_params(tiny, sets)
    reference_stage(params)
    score_stage(params)
    for policy in ("uniform", "learnability"):
        train_stage(params, policy)
    sequence, meta = read_sequence(Paths.of(params).sequence("learnability"))
    assert len(sequence) == 10 and meta["policy"] == "learnability" and meta["selection_flops_per_step"] > 0
    record = train_stage(params, "replay")
    assert record["replay_users"] == 4 and record["replayed_policy"] == "learnability" and record.get("actor") is None
    costs = summary_stage(params)["ledger"]["policies"]  # the report written with it
    replay, learnability = costs["replay"]["costs"], costs["learnability"]["costs"]
    assert replay["actor_scoring_per_step"] == 0  # no actor, no super-batch: the learner's own step
    assert replay["learner_training_per_step"] == learnability["learner_training_per_step"]
    assert replay["replayed_selection_per_step"] == pytest.approx(meta["selection_flops_per_step"] / 4)
    assert replay["one_off"] == pytest.approx(learnability["one_off"] / 4)  # the reference and the pool's scoring, shared

    for change, message in (
        ("train.steps=20", r"train.steps: 20, and .*learnability.sequence.parquet holds 10 steps"),
        ("train.batch_size=16", r"train.batch_size: 16, and .*learnability.sequence.parquet kept 32 rows a step"),
    ):
        with pytest.raises(ConfigError, match=message):
            train_stage(load_params(tiny, [*sets, change]), "replay")
    with pytest.raises(ConfigError, match="the 'replay' policy trains on a recorded training sequence"):
        load_params(tiny, ["train.policies=[uniform,replay]"])


@pytest.mark.e2e  # through the CLI and its flow
def test_a_replay_arm_that_cannot_hold_its_pool_is_refused_before_any_arm_trains(prefect_server, tiny, capsys):
    from winnow.cli import main

    sets = ["train.policies=[uniform,learnability,replay]", "train.replay=learnability", "train.shuffle_buffer=256"]
    assert main(["pipeline", "--params", str(tiny), *[a for s in sets for a in ("--set", s)]]) == 2
    assert "train.policies: 'replay' draws any row of the pool at any step" in capsys.readouterr().err
    assert not list(tiny.parent.glob("artifacts/**/learners/*.pt"))  # no arm trained first
