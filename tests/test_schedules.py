"""The levers that keep a weak reference from steering the learner for good (method/schedules.py): anneal to uniform,
a floor, a relaxing temperature, soft selection by weights, a reference refreshed during training; and the plateau
alarm the step log carries."""

import pytest
import torch
from pydantic import ValidationError

from models import build_classifier
from winnow.config import TrainConfig
from winnow.datasets.contract import load_split
from winnow.datasets.stream import InMemory
from winnow.method.checkpoints import CheckpointPlan
from winnow.method.ledger import Costs
from winnow.method.sampling import effective_sample_size, select, soft_weights
from winnow.method.schedules import Schedule
from winnow.method.selection import Selector
from winnow.method.training import Actor, Refresh, train


def test_anneal_last_hands_the_last_share_of_steps_to_uniform_batches():
    schedule = Schedule(anneal_last=0.25)
    assert schedule.selecting_steps(100) == 75
    assert [schedule.selecting(s, 100) for s in (0, 74, 75, 99)] == [True, True, False, False]
    reference = torch.zeros(10)
    selector = Selector("learnability", keep_fraction=0.5, reference_loss=reference, schedule=schedule)
    assert selector.at(74, 100) is not None and selector.at(74, 100).selects
    assert not selector.at(75, 100).selects and selector.at(75, 100).super_batch(16) == 16
    assert selector.at(74, 100).super_batch(16) == 32


def test_the_temperature_relaxes_geometrically_from_its_start_to_its_end():
    schedule = Schedule(temperature_end=4.0)
    assert schedule.temperature(0.25, 0, 101) == pytest.approx(0.25)
    assert schedule.temperature(0.25, 50, 101) == pytest.approx(1.0)  # the geometric middle of 0.25 and 4
    assert schedule.temperature(0.25, 100, 101) == pytest.approx(4.0)
    assert Schedule().temperature(0.25, 100, 101) == 0.25


@pytest.mark.parametrize("given", [{"anneal_last": 1.0}, {"floor": -0.1}, {"temperature_end": 0.0}])
def test_a_schedule_out_of_range_is_refused(given):
    with pytest.raises(ValueError, match=next(iter(given))):
        Schedule(**given)


def test_a_floor_draws_its_share_uniformly_and_the_rest_by_score():
    scores = torch.arange(100, dtype=torch.float)  # the top 10 by score: 90..99
    gen = torch.Generator().manual_seed(0)
    assert sorted(select(scores, 10, generator=gen).tolist()) == list(range(90, 100))
    below_top = 0
    for _ in range(200):
        kept = select(scores, 10, "topk", generator=gen, floor=0.3)
        assert len(set(kept.tolist())) == 10  # distinct rows
        assert sum(i >= 87 for i in kept.tolist()) >= 7  # 7 by score: the best of what the uniform draw left
        below_top += sum(i < 87 for i in kept.tolist())
    assert below_top > 200  # the 3 uniform rows mostly land below the top: every example keeps a chance


def test_soft_weights_average_one_and_their_effective_sample_size_falls_as_they_sharpen():
    scores = torch.tensor([0.0, 1.0, 2.0, 3.0])
    flat, sharp = soft_weights(scores, temperature=100.0), soft_weights(scores, temperature=0.1)
    assert flat.mean().item() == pytest.approx(1.0) and sharp.mean().item() == pytest.approx(1.0)
    assert effective_sample_size(flat) == pytest.approx(1.0, abs=1e-3)
    assert effective_sample_size(sharp) == pytest.approx(0.25, abs=1e-3)  # one example takes almost all of it
    floored = soft_weights(scores, temperature=0.1, floor=0.5)
    assert floored.min().item() >= 0.5 - 1e-6  # half of every example's weight is uniform


def test_the_config_refuses_levers_that_do_not_apply_and_weighted_selection_draws_no_super_batch():
    with pytest.raises(ValidationError, match="temperature_end relaxes a temperature; topk has none"):
        TrainConfig(selection="topk", temperature_end=2.0)
    with pytest.raises(ValidationError, match="floor"):
        TrainConfig(selection="jest", floor=0.2)
    assert TrainConfig(selection="weighted", batch_size=64, keep_fraction=0.25).super_batch_size == 64
    assert TrainConfig(batch_size=64, keep_fraction=0.25).schedule == Schedule()


def test_the_ledger_charges_annealed_steps_as_the_learners_step_alone():
    costs = Costs(10.0, 5.0, 2.0, 1.0, 4.0, selecting_steps=60)
    assert costs.at_step(50) == 15 + 50 * 7
    assert costs.at_step(100) == 15 + 60 * 7 + 40 * 4
    assert Costs.from_dict(costs.as_dict()) == costs
    assert "selecting_steps" not in Costs(10.0, 5.0, 2.0, 1.0, 4.0).as_dict()  # an unscheduled record is unchanged


@pytest.fixture(scope="module")
def pool(tiny_data):
    return load_split(f"{tiny_data.data.root}/pool", 32, 20)


def _train(pool, selector, steps=12, refresh=False, path=None, on_step=None):
    """A tiny learnability run: (its output, the learner, the reference it refreshed or None, the rows kept per step).
    With `refresh` the reference trains beside the learner on the curated rows (here the pool's, its own draw)."""
    cfg = TrainConfig(model="cnn-nano", steps=steps, batch_size=16, warmup_steps=2)
    torch.manual_seed(0)
    model, actor, reference = (build_classifier("cnn-nano", 20) for _ in range(3))
    kept = []

    def seen(step, ids):
        kept.append(len(ids))
        if on_step is not None:
            on_step(step, ids)

    out = train(
        model,
        InMemory(pool, torch.as_tensor(pool.labels), 0, pool.columns["pathology"]),
        cfg,
        seed=0,
        selector=selector,
        actor=Actor(actor, refresh=Refresh(reference, InMemory(pool, torch.as_tensor(pool.labels), 5)) if refresh else None),
        checkpoint=CheckpointPlan(path, every=4) if path is not None else None,
        on_step=seen,
    )
    return out, model, reference if refresh else None, kept


def _reference(pool):
    return torch.rand(int(pool.ids.max()) + 1, generator=torch.Generator().manual_seed(0))


def test_an_annealed_run_stops_scoring_and_training_the_actor_for_its_last_steps(pool):
    selector = Selector("learnability", keep_fraction=0.5, reference_loss=_reference(pool), schedule=Schedule(anneal_last=0.25))
    out, _, _, kept = _train(pool, selector)
    log = out["steps_log"]
    assert kept == [16] * 12
    assert ["actor_loss" in row for row in log] == [True] * 9 + [False] * 3
    assert ["negative_learnability" in row for row in log] == [True] * 9 + [False] * 3


def test_the_step_log_carries_the_plateau_alarm_the_share_of_negative_learnability(pool):
    log = _train(pool, Selector("learnability", keep_fraction=0.5, reference_loss=_reference(pool)), steps=4)[0]["steps_log"]
    assert all(0.0 <= row["negative_learnability"] <= 1.0 for row in log)


def test_weighted_selection_trains_on_its_whole_draw_and_logs_the_effective_sample_size(pool):
    selector = Selector("learnability", keep_fraction=0.5, method="weighted", temperature=0.5, reference_loss=_reference(pool))
    out, _, _, kept = _train(pool, selector, steps=4)
    log = out["steps_log"]
    assert kept == [16] * 4  # no super-batch: the whole draw, weighted
    assert all(0.0 < row["weights_ess"] <= 1.0 for row in log)
    assert all(sum(v for k, v in row.items() if k.startswith("selected_")) == pytest.approx(1.0) for row in log)


def test_a_lever_that_does_not_fit_the_config_is_named_before_any_run(tiny):
    from winnow.config import load_params
    from winnow.errors import ConfigError

    params = load_params(tiny, ["bench.levers={ok: {floor: 0.2}, clash: {selection: topk, temperature_end: 2.0}}"])
    assert params.lever_train("ok").floor == 0.2
    with pytest.raises(ConfigError, match=r"bench.levers.clash: .*topk has none"):
        params.lever_train("clash")


def test_a_lever_trains_learnability_unless_it_names_one_other_selecting_policy(tiny):
    from winnow.config import load_params
    from winnow.errors import ConfigError
    from winnow.studies.levers import lever_params, lever_policy

    levers = (
        "bench.levers={plain: {floor: 0.2}, easy: {policies: [uniform, easy_reference], floor: 0.2}, "
        "two: {policies: [uniform, easy_reference, learnability]}, none: {policies: [uniform]}}"
    )
    params = load_params(tiny, [levers])
    assert lever_policy(params, "plain") == "learnability" and lever_policy(params, "easy") == "easy_reference"
    run = lever_params(params, 0, "easy", ("uniform", "curated_only"))
    assert run.train.policies == ("uniform", "curated_only", "easy_reference") and run.train.floor == 0.2
    for bad in ("two", "none"):
        with pytest.raises(ConfigError, match=rf"bench.levers.{bad}: policies must name one selecting policy"):
            lever_policy(params, bad)


def test_the_ledger_charges_a_refreshed_reference_every_step():
    costs = Costs(10.0, 5.0, 2.0, 1.0, 4.0, reference_refresh_per_step=3.0)
    assert costs.per_step == 10.0 and costs.at_step(10) == 15 + 100
    assert Costs.from_dict(costs.as_dict()) == costs


def _refreshed_run(pool, path=None, on_step=None):
    out, model, reference, _ = _train(
        pool, Selector("learnability", keep_fraction=0.5, online_reference=True), 10, True, path, on_step
    )
    return model, reference, out


def test_a_refreshed_reference_scores_online_trains_beside_the_learner_and_resumes_to_the_same_weights(pool, tmp_path):
    before = [p.detach().clone() for p in build_classifier("cnn-nano", 20).parameters()]
    straight, reference, out = _refreshed_run(pool)
    assert all("negative_learnability" in row for row in out["steps_log"])  # scored with the reference's online losses
    assert any(not torch.equal(a, b) for a, b in zip(before, reference.parameters()))  # it trained

    class Crash(Exception):
        pass

    def crash(step, ids):
        if step == 6:
            raise Crash

    with pytest.raises(Crash):
        _refreshed_run(pool, tmp_path / "r.pt", crash)
    resumed, resumed_reference, _ = _refreshed_run(pool, tmp_path / "r.pt")
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(a, b)
    for a, b in zip(reference.state_dict().values(), resumed_reference.state_dict().values()):
        assert torch.equal(a, b)


def test_a_refreshed_reference_needs_an_actor_and_per_example_selection():
    with pytest.raises(ValidationError, match="refresh_reference"):
        TrainConfig(refresh_reference=True, actor="learner")
