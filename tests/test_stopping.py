"""One stopping rule for every arm, uniform included (winnow/method/stopping.py), checked on hand-made curves."""

import pytest

from winnow.method.stopping import at, crossing, smooth, target

STEPS = [100, 200, 300, 400, 500, 600]


def test_the_target_is_the_mean_of_uniforms_last_k_evaluations():
    assert target([0.1, 0.2, 0.3, 0.5, 0.4, 0.6], 3) == pytest.approx(0.5)
    assert target([0.1, 0.2, 0.3, 0.5, 0.4, 0.6], 1) == 0.6  # k = 1: its final evaluation


def test_every_curve_is_smoothed_the_same_way_fewer_points_at_the_start():
    assert smooth([0.3, 0.6, 0.9, 0.0], 2) == pytest.approx([0.3, 0.45, 0.75, 0.45])
    with pytest.raises(ValueError, match="at least 1"):
        smooth([0.1], 0)


def test_a_crossing_that_dips_back_below_the_target_is_no_crossing():
    # k = 1: at or above 0.5 at step 200, below it again at 300: the arm reaches it for good only at 400
    curve = [0.4, 0.55, 0.45, 0.6, 0.65, 0.7]
    c = crossing(STEPS, curve, 0.5, 1)
    assert c.evaluation == 3
    assert c.step == pytest.approx(300 + (0.5 - 0.45) / (0.6 - 0.45) * 100)  # interpolated between 300 and 400


def test_a_curve_that_ends_below_the_target_never_reaches_it():
    c = crossing(STEPS, [0.4, 0.6, 0.7, 0.7, 0.6, 0.49], 0.5, 1)
    assert c.step is None and not c.reached


def test_a_curve_above_the_target_from_its_first_evaluation_reaches_it_there():
    assert crossing(STEPS, [0.9] * 6, 0.5, 3).step == 100


def test_uniform_is_read_at_its_own_crossing_not_at_the_end_of_its_run():
    uniform = [0.3, 0.6, 0.62, 0.61, 0.6, 0.6]  # it plateaus after step 200
    goal = target(uniform, 3)  # 0.6033
    c = crossing(STEPS, uniform, goal, 3)
    assert c.evaluation == 3 and 300 < c.step < 400  # not 600: uniform costed to its own crossing, like every arm
    assert all(v >= goal for v in smooth(uniform, 3)[c.evaluation :])


def test_smoothing_keeps_a_one_evaluation_spike_from_counting_as_a_crossing():
    spike = [0.3, 0.3, 0.9, 0.3, 0.3, 0.3]  # one lucky evaluation
    assert crossing(STEPS, spike, 0.5, 3).step is None
    assert crossing(STEPS, spike, 0.5, 1).step is None  # and it dips back, so not even unsmoothed


def test_seconds_and_flops_are_read_between_evaluations_by_interpolation():
    clock = [[100, 10.0], [200, 30.0]]
    assert at(clock, 150) == pytest.approx(20.0)
    assert at(clock, 50) == pytest.approx(5.0)  # from (0, 0) before the first evaluation
    assert at(clock, None) is None


def test_a_tie_with_the_target_in_float32_rounding_counts_as_reaching_it():
    """1285 correct of 6000 either way: float32 means of three evaluations may differ in the last bits."""
    import numpy as np

    uniform = [float(np.float32(c / 2000)) for c in (423, 432, 430)]
    tied = [float(np.float32(c / 2000)) for c in (425, 431, 429)]
    goal = target(uniform, 3)
    assert crossing([1, 2, 3], tied, goal, 3).reached
