"""The compute ledger counts FLOPs by measurement and adds them up the way docs/DESIGN.md says."""

import pytest
import torch
from torch import nn

from winnow.method.ledger import (
    Costs,
    ReferenceSpend,
    flop_ratios,
    forward_flops_per_example,
    policy_costs,
    shared_over_best,
    time_ratios,
)
from winnow.method.stopping import at


def test_forward_flops_are_measured_not_estimated():
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 5))
    per_example = forward_flops_per_example(model, lambda m, x, y: m(x.float()), torch.zeros(8, 3, 2, 2), torch.zeros(8))
    assert per_example == 2 * 12 * 5  # one multiply-add per weight


KW = dict(reference=ReferenceSpend(train_step=240.0, score_forward=10.0, steps=100, pool_size=1000), learner_step=960.0)


def test_each_policy_pays_for_what_it_uses():
    actor = dict(actor_scoring=80.0, actor_step=120.0)  # a small actor: scoring a super-batch, one training step
    uniform = policy_costs("uniform", **KW, **actor)
    assert (uniform.one_off, uniform.per_step) == (0.0, 960.0)  # the learner's measured step; no actor, no reference
    easy = policy_costs("easy_reference", **KW, **actor)
    assert easy.one_off == 240 * 100 + 10 * 1000  # the reference's measured steps, and its forward over the pool
    assert easy.per_step == uniform.per_step  # precomputed scores cost nothing per step
    learn = policy_costs("learnability", **KW, **actor)
    assert learn.one_off == easy.one_off
    assert (learn.actor_scoring_per_step, learn.actor_training_per_step) == (80.0, 120.0)
    assert learn.per_step == 960 + 80 + 120
    hard = policy_costs("hard_learner", **KW, **actor)
    assert hard.one_off == 0.0 and hard.per_step == learn.per_step
    for baseline in ("curated_only", "curated_plus_pool", "filtered"):  # a baseline pays its training and nothing else
        assert policy_costs(baseline, **KW, **actor).as_dict() == uniform.as_dict()


def test_the_learner_scoring_itself_pays_its_scoring_and_no_actor_training():
    learn = policy_costs("learnability", **KW, actor_scoring=640.0, actor_step=0.0)
    assert learn.per_step == 960 + 640


def test_flop_ratios_count_the_reference_in_full_or_amortised():
    uniform = Costs(0.0, 0.0, 0.0, 0.0, 3.0)
    learn = Costs(
        reference_training=100.0,
        pool_scoring=50.0,
        actor_scoring_per_step=1.0,
        actor_training_per_step=1.0,
        learner_training_per_step=3.0,
    )
    ratios = flop_ratios(learn, steps_to_target=40, uniform=uniform, uniform_steps=100, amortise_over=10)
    assert ratios["flop_ratio_full"] == pytest.approx((150 + 40 * 5) / 300)
    assert ratios["flop_ratio_amortised"] == pytest.approx((15 + 40 * 5) / 300)
    assert flop_ratios(learn, None, uniform, 100, 10)["flop_ratio_full"] is None  # never reached: no ratio, not a number


def test_the_reference_paid_once_for_n_learners_is_read_from_the_committed_ratios_as_the_ledger_would_charge_it():
    uniform, best = Costs(0.0, 0.0, 0.0, 0.0, 3.0), Costs(0.0, 0.0, 0.0, 0.0, 3.0)  # baselines read no reference
    learn = Costs(100.0, 50.0, 1.0, 1.0, 3.0)
    ratios = flop_ratios(learn, steps_to_target=40, uniform=uniform, uniform_steps=100, amortise_over=10)
    vs_best = learn.at_step(40) / best.at_step(60)
    for n in (1, 3, 10):
        direct = learn.at_step(40, amortise_over=n) / best.at_step(60)  # the one-off split over n learners
        got = shared_over_best(vs_best, ratios["flop_ratio_full"], ratios["flop_ratio_amortised"], 10, n)
        assert got == pytest.approx(direct)
    assert shared_over_best(None, None, None, 10, 3) is None  # never reached: none


def test_time_ratios_count_the_seconds_to_the_target_with_the_one_off_in_full_or_amortised():
    clock = [[100, 10.0], [200, 21.0], [300, 30.0]]  # [step, training seconds so far] at each evaluation
    assert at(clock, 200) == 21.0 and at(clock, None) is None
    assert at(clock, 150) == pytest.approx(15.5)  # between evaluations: interpolated
    ratios = time_ratios(one_off_seconds=20.0, seconds_to_target=at(clock, 200), uniform_seconds=82.0, amortise_over=10)
    assert ratios["seconds_to_target"] == 41.0
    assert ratios["time_ratio_full"] == pytest.approx(41 / 82)
    assert ratios["time_ratio_amortised"] == pytest.approx((2 + 21) / 82)
    assert time_ratios(20.0, None, 82.0, 10)["time_ratio_full"] is None
    with pytest.raises(ValueError, match="past the series' last point"):
        at(clock, 350)


@pytest.mark.parametrize("name", ["cnn-nano", "clip-pico"])
def test_a_scorer_at_a_lower_resolution_is_counted_at_the_flops_it_spends_there(name):
    """train.score_resolution / score.resolution: the scorer sees the learner's images resized down, and the
    ledger measures its forward as it runs, not at the learner's size."""
    from models import CLIPS, build_classifier, build_clip, clip_tokenizer
    from winnow.method.losses import per_example_contrastive, per_example_loss

    clip = name in CLIPS
    build = (lambda size: build_clip(name, size)) if clip else (lambda size: build_classifier(name, 10, size))
    loss = per_example_contrastive if clip else per_example_loss
    targets = clip_tokenizer(name)(["a photo"] * 16) if clip else torch.zeros(16, dtype=torch.long)
    images = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8)
    full, low = build(32), build(16)
    at_full = forward_flops_per_example(full, loss, images, targets)
    at_low = forward_flops_per_example(low, loss, images, targets)
    already_small = forward_flops_per_example(low, loss, images[:, :, ::2, ::2].contiguous(), targets)
    assert at_low == already_small  # it ran at 16 px on 32 px images
    assert at_low < at_full * (0.6 if clip else 0.3)  # a quarter of the pixels (CLIP: the text tower is unchanged)


def test_jests_reference_logits_are_a_line_of_their_own_paid_only_by_policies_that_read_the_reference():
    learn = policy_costs("learnability", **KW, actor_scoring=80.0, reference_logits=123.0)
    assert learn.reference_logits_per_step == 123.0 and learn.per_step == 960 + 80 + 123.0
    assert policy_costs("hard_learner", **KW, actor_scoring=80.0, reference_logits=123.0).reference_logits_per_step == 0


def test_against_the_best_baseline_the_reference_shared_by_n_learners_is_charged_one_nth_of_its_one_off():
    from winnow.stages.summary import verdict

    selecting = Costs(600.0, 400.0, 2.0, 1.0, 10.0)  # a one-off of 1000, 13 a step
    plain = Costs(0.0, 0.0, 0.0, 0.0, 10.0)  # a baseline pays no reference
    row = {"steps_to_target": 100.0, "seconds_to_target": 1.0, "final_metric": 0.5}
    summary = {
        "policies": {"uniform": {**row, "flops_to_target": 1000.0}, "learnability": {**row, "flops_to_target": 2300.0}},
        "ledger": {"policies": {"uniform": {"costs": plain.as_dict()}, "learnability": {"costs": selecting.as_dict()}}},
    }
    mine = verdict(summary)["against_best"]["learnability"]
    assert mine["flop_ratio"] == pytest.approx(2.3)
    assert mine["flop_ratio_shared_1"] == pytest.approx(2.3)  # 1000 + 1300 over 1000
    assert mine["flop_ratio_shared_10"] == pytest.approx((100 + 1300) / 1000)  # the one-off over ten learners
    assert verdict(summary)["against_best"]["uniform"]["flop_ratio_shared_3"] == pytest.approx(1.0)
