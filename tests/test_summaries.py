"""Seeds are summarised one way everywhere (winnow/studies/runs.spread): a metric by its mean and Student's t
interval, a ratio (steps, FLOPs, seconds, rates) by its geometric mean and an interval taken on the log scale, so
no interval of a ratio reaches below 0. Every committed study is what its own per-seed values give
(winnow/studies/summaries.py), so a change to how seeds are summarised cannot leave a committed figure behind."""

import json
import math
import statistics

import pytest

from winnow.reports.figures import REPO
from winnow.studies import summaries
from winnow.studies.runs import is_ratio, spread


def test_a_ratio_is_summarised_by_its_geometric_mean_and_an_interval_on_the_log_scale():
    stat = spread([0.5, 2.0], log=True)
    assert stat["mean"] == pytest.approx(1.0) and stat["scale"] == "log"
    assert stat["low"] * stat["high"] == pytest.approx(1.0), "half and double are equally far from 1"
    assert stat["std"] == pytest.approx(statistics.stdev([0.5, 2.0])) and stat["log_std"] == pytest.approx(
        statistics.stdev([math.log(0.5), math.log(2.0)])
    )
    values = [0.61, 0.72, 0.66, 0.9, 0.58]
    inverse = spread([1 / v for v in values], log=True)
    direct = spread(values, log=True)
    assert inverse["mean"] == pytest.approx(1 / direct["mean"]) and inverse["high"] == pytest.approx(1 / direct["low"])


def test_an_arithmetic_interval_over_wide_ratios_reaches_below_zero_and_the_log_one_does_not():
    wide = [0.3, 2.5]
    assert spread(wide)["low"] < 0 < spread(wide, log=True)["low"]
    assert spread(wide, log=True)["low"] < min(wide) and spread(wide, log=True)["high"] > max(wide)


def test_seeds_that_never_reached_the_target_are_counted_not_averaged():
    stat = spread([0.8, None, 0.9], log=True)
    assert (stat["reached"], stat["runs"]) == (2, 3) and stat["values"] == [0.8, None, 0.9]
    assert stat["mean"] == pytest.approx(math.sqrt(0.8 * 0.9))
    one = spread([0.8], log=True)
    assert one["mean"] == pytest.approx(0.8) and one["low"] is None and one["std"] == 0.0
    assert spread([None, None], log=True)["mean"] is None


def test_a_ratio_that_is_not_positive_is_refused():
    with pytest.raises(ValueError, match="positive"):
        spread([0.5, 0.0], log=True)


def test_which_summaries_are_ratios():
    for keys in (
        ("step_ratio",),
        ("rows", "flop_ratio_vs_best"),
        ("time_ratio_full",),
        ("systems", "step_time_over_ledger", "uniform"),
    ):
        assert is_ratio(*keys), keys
    for keys in (("final_over_best",), ("final_metric",), ("probe_accuracy", "texture"), ("reference_val",), ()):
        assert not is_ratio(*keys), keys


def test_a_summary_is_rewritten_from_its_values_and_a_metric_keeps_its_arithmetic_mean():
    old = {
        "flop_ratio_full": {**spread([0.4, 0.6]), "values": [0.4, 0.6]},  # arithmetic, as ratios were summarised before
        "final_metric": spread([0.4, 0.6]),
        "runs": [{"seed": 0, "flop_ratio_full": 0.4}],
    }
    fresh = summaries.resummarise(old)
    assert fresh["flop_ratio_full"] == spread([0.4, 0.6], log=True) and fresh["flop_ratio_full"]["mean"] < 0.5
    assert fresh["final_metric"] == old["final_metric"] and fresh["final_metric"]["mean"] == pytest.approx(0.5)
    assert fresh["runs"] == old["runs"], "per-seed records are the source, never rewritten"


def test_a_legacy_summary_without_an_interval_is_kept_as_written():
    legacy = {"step_ratio": {"mean": 0.5, "std": 0.1, "reached": 2, "runs": 2, "values": [0.4, 0.6]}}
    assert summaries.resummarise(legacy) == legacy


def test_a_study_file_is_read_by_its_name():
    assert summaries.study_of(REPO / "metrics/synthetic/bench/classification.json") == ("policies", None)
    assert summaries.study_of(REPO / "x/bench/classification-levers-cnn-tiny-reference.json") == ("levers", "cnn-tiny-reference")
    assert summaries.study_of(REPO / "x/bench/contrastive-regimes-replication.json") == ("regimes", "replication")
    assert summaries.study_of(REPO / "x/bench/contrastive-regimes.json") == ("regimes", None)
    for other in ("step_time", "memory", "scoring_classification", "compile_step"):
        assert summaries.study_of(REPO / f"x/bench/{other}.json") is None


def test_every_committed_study_and_advice_is_what_its_own_per_seed_values_give(monkeypatch):
    monkeypatch.chdir(REPO)  # an advice names its maps relative to the repository
    assert summaries.rewrite_all(REPO / "metrics", check=True) == []


def test_no_committed_interval_of_a_ratio_reaches_below_zero():
    lows = []

    def walk(node, keys):
        if isinstance(node, dict):
            if summaries.SPREAD <= node.keys():
                if is_ratio(*keys) and "low" in node:  # not a legacy record (mean ± std, no interval)
                    assert node.get("scale") == "log", keys
                    lows.append(node["low"])
                return
            for k, v in node.items():
                walk(v, (*keys, k))
        elif isinstance(node, list):
            for v in node:
                walk(v, keys)

    for path in REPO.glob("metrics/*/bench/*.json"):
        if summaries.study_of(path):
            walk(json.loads(path.read_text()), ())
    measured = [low for low in lows if low is not None]
    assert len(measured) > 100 and min(measured) > 0
