"""The projection (winnow/studies/projection.py): a line fitted to measured points, read where it crosses 1 and at
the paper's learner size, and a replay's ratio fitted as L + S / N over the learners that share its recording. A
projection, labelled so, never a measurement."""

import numpy as np
import pytest

from winnow.studies import projection
from winnow.studies.budgets import FIXED


def _ratio(values):
    return {"values": values, "mean": None, "low": None, "high": None, "reached": 0, "runs": len(values)}


def _row(learner, x, learnability, replays=None):
    verdicts = {"learnability": {"readings": {FIXED: {"flop_ratio": _ratio(learnability)}}}}
    for name, values in (replays or {}).items():
        verdicts[name] = {"readings": {FIXED: {"flop_ratio": _ratio(values)}}}
    return {"learner": learner, "scorer_flops_over_learner": x, "scorer_forward_flops": 1.6e6, "verdicts": verdicts}


def test_a_line_through_exact_points_is_recovered_and_its_band_is_tight_there():
    fit = projection.fit_line([0.1, 0.1, 0.2, 0.2, 0.4, 0.4], [0.6, 0.6, 0.8, 0.8, 1.2, 1.2])
    assert fit["a"] == pytest.approx(0.4) and fit["b"] == pytest.approx(2.0)
    mean, low, high = projection.band(fit, 0.3)
    assert mean == pytest.approx(1.0) and low == pytest.approx(1.0) and high == pytest.approx(1.0)


def test_the_band_widens_away_from_the_measured_points():
    fit = projection.fit_line([0.1, 0.1, 0.2, 0.2, 0.3, 0.3], [0.58, 0.62, 0.83, 0.77, 0.98, 1.02])
    near = np.subtract(*projection.band(fit, 0.2)[2:0:-1])
    far = np.subtract(*projection.band(fit, 2.0)[2:0:-1])
    assert far > 3 * near > 0


def test_a_line_needs_three_points_at_two_sizes():
    with pytest.raises(ValueError, match="3 points or more at 2 x values"):
        projection.fit_line([0.1, 0.1, 0.1], [0.5, 0.6, 0.7])


def test_the_online_fit_says_where_the_ratio_crosses_1_and_reads_the_paper_learner_on_the_same_line():
    rows = [_row("small", 0.08, [0.56, 0.57, 0.55]), _row("medium", 0.04, [0.48, 0.49, 0.47]),
            _row("base", 0.01, [0.42, 0.43, 0.41])]  # fmt: skip
    out = projection.online(rows, paper_flops=1.6e9)
    assert out["label"] == projection.LABEL and out["points"] == 9 and out["never_reached"] == 0
    assert out["fit"]["b"] == pytest.approx(2.0, rel=0.05) and out["fit"]["a"] == pytest.approx(0.4, abs=0.01)
    assert out["crosses_1_at_x"]["mean"] == pytest.approx(0.3, rel=0.05)  # 0.4 + 2 x = 1
    # a learner under scorer / 0.3 forward FLOPs is projected to lose; the band's edges bracket the mean's crossing
    assert out["crosses_1_at_learner_flops"]["mean"] == pytest.approx(1.6e6 / 0.3, rel=0.05)
    cross = out["crosses_1_at_x"]
    assert cross["band_high_edge"] <= cross["mean"] <= cross["band_low_edge"]
    paper = out["at"]["paper's learner (ViT-B)"]
    assert paper["x"] == pytest.approx(1e-3) and paper["ratio"] == pytest.approx(0.402, abs=0.01)


def test_seeds_that_never_reach_the_target_are_counted_and_left_out_of_the_fit():
    rows = [_row("small", 0.08, [0.56, None]), _row("medium", 0.04, [0.48, 0.49]), _row("base", 0.01, [None, None])]
    out = projection.online(rows, paper_flops=None)
    assert out["points"] == 3 and out["never_reached"] == 3 and "3 seed-points never reached" in out["never_reached_note"]
    assert projection.online([_row("small", 0.08, [None])], None)["fit"] is None  # nothing to fit: said, not drawn


def test_a_replay_crosses_1_from_the_reuses_its_measured_ratios_imply():
    # L = 0.7 (the learner's own steps), S = 0.6 (the recording's selection): 1.3 at N = 1, 0.9 at 3, 0.76 at 10
    ratios = {"replay": [1.3, 1.3], "replay_shared_3": [0.9, 0.9], "replay_shared_10": [0.76, 0.76]}
    out = projection.replay(_row("base", 0.01, [0.5, 0.5], ratios))
    assert out["fits"][0]["L"] == pytest.approx(0.7) and out["fits"][0]["S"] == pytest.approx(0.6)
    assert out["crosses_1_at_reuses"]["mean"] == pytest.approx(2.0)  # 0.6 / (1 - 0.7)
    costly = {"replay": [1.6], "replay_shared_3": [1.2], "replay_shared_10": [1.06]}  # L = 1.0: never
    assert projection.replay(_row("base", 0.01, [0.5], costly))["crosses_1_at_reuses"]["mean"] is None
    assert projection.replay(_row("small", 0.08, [0.5])) is None  # the recording learner replays nothing


def test_the_paper_learner_is_measured_at_the_data_size_and_is_far_larger_than_the_default_learner():
    vit_b = projection.paper_learner_flops("classification", 32, 20)
    assert vit_b > 100 * 20.6e6  # cnn-small's forward is 20.6 MFLOPs


def test_a_line_that_stays_above_1_for_an_unbounded_learner_projects_no_crossing():
    rows = [_row("small", 0.08, [1.36, 1.37]), _row("medium", 0.04, [1.28, 1.29]), _row("base", 0.01, [1.22, 1.23])]
    out = projection.online(rows, paper_flops=1.6e9)
    assert out["fit"]["a"] > 1 and out["crosses_1_at_x"]["mean"] is None
    assert out["at"]["paper's learner (ViT-B)"]["ratio"] > 1  # read on the line, labelled a projection
