"""The projection (winnow/studies/projection.py): a line in x (selection over learner FLOPs a step) fitted seed by
seed to the ladder's measured points, read at the paper's learner size and where it crosses 1, over seeds; a replay
charged again as if N learners shared its recording, exactly L + S / N. A projection, labelled so, never a
measurement."""

import pytest

from winnow.studies import projection
from winnow.studies.budget_rule import FIXED


def _ratio(values):
    return {"values": values, "mean": None, "low": None, "high": None, "reached": 0, "runs": len(values)}


def _row(learner, x, learnability, replays=None, steps=1500):
    verdicts = {"learnability": {"readings": {FIXED: {"flop_ratio": _ratio(learnability)}}}}
    for name, values in (replays or {}).items():
        verdicts[name] = {"readings": {FIXED: {"flop_ratio": _ratio(values)}}}
    return {
        "learner": learner,
        "selection_over_learner": x,
        "scorer_flops_over_learner": x / 2,
        "learner_forward_flops": 1e6 / x,
        "learner_step_flops": 3e6 / x,
        "steps": steps,
        "verdicts": verdicts,
    }


def _ladder(a=0.4, b=2.0, noise=(-0.01, 0.0, 0.01, 0.005)):
    """Three learners whose ratios lie on a + b x, each seed shifted by its own noise."""
    return [_row(name, x, [a + b * x + e for e in noise]) for name, x in (("small", 0.08), ("medium", 0.04), ("base", 0.01))]


def test_the_line_is_fitted_seed_by_seed_and_summarised_over_seeds():
    out = projection.online(_ladder(), paper_scale=0.01)
    assert out["label"] == projection.LABEL and out["seeds_fitted"] == 4 and len(out["per_seed_fits"]) == 4
    assert out["fit"]["a"]["mean"] == pytest.approx(0.4 + 0.00125) and out["fit"]["b"]["mean"] == pytest.approx(2.0)
    assert out["slope_distinguishable"] and out["fit"]["a"]["low"] < out["fit"]["a"]["mean"] < out["fit"]["a"]["high"]
    assert out["crosses_1_at_x"]["mean"] == pytest.approx(0.3, rel=0.01)  # 0.4 + 2 x = 1: a larger learner saves
    paper = out["at"]["paper's learner (ViT-B)"]  # x scaled from the smallest learner's by the forward FLOPs
    assert paper["x"] == pytest.approx(0.0008) and paper["ratio"]["mean"] == pytest.approx(0.4028, abs=0.001)


def test_a_seed_that_never_reaches_the_target_at_some_learner_is_left_out_and_said():
    rows = _ladder()
    rows[2]["verdicts"]["learnability"]["readings"][FIXED]["flop_ratio"]["values"][1] = None
    out = projection.online(rows, paper_scale=None)
    assert out["seeds_fitted"] == 3 and "1 of 4 seeds never reached the target" in out["never_reached_note"]
    for values in ([None] * 4, [None, None, None, 0.5]):
        for row in rows:
            row["verdicts"]["learnability"]["readings"][FIXED]["flop_ratio"]["values"] = list(values)
        assert projection.online(rows, None)["fit"] is None  # fewer than 2 seeds: no line, said


def test_two_learners_are_too_few_for_a_line():
    out = projection.online(_ladder()[:2], paper_scale=None)
    assert out["fit"] is None and "3 learners or more" in out["why"]


def test_a_line_above_1_for_an_unbounded_learner_never_crosses_and_a_flat_one_is_undetermined():
    never = projection.online(_ladder(a=1.2, b=2.0), None)
    assert never["crossings"] == ["never below"] * 4 and never["crosses_1_at_x"] is None
    assert never["at"]["base"]["ratio"]["mean"] > 1
    flat = projection.online(_ladder(a=0.6, b=0.0, noise=(-0.01, 0.01, 0.0, 0.003)), None)
    assert not flat["slope_distinguishable"]  # the page says the crossing is undetermined


def test_the_page_says_how_far_the_paper_learner_is_outside_the_measured_points_and_where_the_line_crosses():
    from winnow.reports.ladder import projection_lines

    result = {"projection": {"label": projection.LABEL, "online": projection.online(_ladder(), 0.01), "replay": []}}
    text = "\n".join(projection_lines(result))
    assert "a projection from measured points, not a measurement" in text
    assert "below the smallest measured x: the line assumed, not found" in text and "the line crosses 1 at x = 0.299" in text


def test_a_replay_charged_as_if_shared_is_l_plus_s_over_n_and_crosses_1_from_its_reuses():
    # L = 0.7 (the learner's own steps), S = 0.6 (the recording's selection): 1.3 at N = 1, 0.76 at N = 10
    ratios = {"replay": [1.3, 1.3], "replay_shared_3": [0.9, 0.9], "replay_shared_10": [0.76, 0.76]}
    out = projection.replay(_row("base", 0.01, [0.5, 0.5], ratios))
    assert out["per_seed"][0]["L"] == pytest.approx(0.7) and out["per_seed"][0]["S"] == pytest.approx(0.6)
    assert out["crosses_1_at_reuses"]["mean"] == pytest.approx(2.0)  # 0.6 / (1 - 0.7)
    costly = {"replay": [1.6], "replay_shared_3": [1.2], "replay_shared_10": [1.06]}  # L = 1.0: never
    assert projection.replay(_row("base", 0.01, [0.5], costly))["per_seed"][0]["reuses"] == "never"
    missing = {"replay": [None], "replay_shared_3": [None], "replay_shared_10": [None]}
    said = projection.replay(_row("base", 0.01, [0.5], missing))
    assert said["crosses_1_at_reuses"] is None and "never reached the target" in said["per_seed"][0]["why"]
    assert projection.replay(_row("small", 0.08, [0.5])) is None  # the recording learner replays nothing


def test_the_paper_learner_is_measured_at_the_data_size_and_is_far_larger_than_the_default_learner():
    vit_b = projection.paper_learner_flops("classification", 32, 20)
    assert vit_b > 100 * 20.6e6  # cnn-small's forward is 20.6 MFLOPs
