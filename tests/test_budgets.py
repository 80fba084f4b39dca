"""The budgets study's rule (winnow/studies/budgets.py), fixed before any run is read: FLOPs to uniform's plateau
read across budgets whose schedules end there, against the one baseline with the fewest FLOPs over seeds; every
other reading printed beside the verdict, and a verdict that flips among them is undecided."""

import pytest

from winnow.method import stopping
from winnow.studies import budget_rule, budgets

BUDGETS = (0.5, 1.0, 2.0)


def _arm(finals: list[float], flops_per_budget: list[float], late_curve: list[float] | None = None, dropped=0.0) -> dict:
    """An arm's run at each budget: its final validation metric, its FLOPs, and (at the largest) its curve."""
    out = {}
    for b, final, flops in zip(BUDGETS, finals, flops_per_budget):
        curve = late_curve if (b == BUDGETS[-1] and late_curve) else [final * 0.5, final * 0.8, final]
        out[b] = {
            "steps": [1.0, 2.0, 3.0],
            "values": curve,
            "flops_at": [flops / 3, 2 * flops / 3, flops],
            "flops": flops,
            "final_val": final,
            "final_test": final - 0.01,
            "dropped_share": dropped,
        }
    return out


def _runs(arms_per_seed: list[dict[str, dict]]) -> dict:
    runs = {}
    for seed, arms in enumerate(arms_per_seed):
        runs[seed] = {b: {p: arm[b] for p, arm in arms.items()} for b in BUDGETS}
        for b in BUDGETS:
            runs[seed][b]["_window"] = 1
    return runs


def _seed(learnability: dict, jitter: float = 0.0) -> dict:
    return {
        "uniform": _arm([0.50, 0.58, 0.60 + jitter], [10, 20, 40]),  # its plateau: 0.60 at the largest budget
        "curated_only": _arm([0.55, 0.59, 0.61], [10, 20, 40]),  # reaches it at the largest budget only
        "filtered": _arm([0.50, 0.57, 0.60], [12, 24, 48], dropped=0.002),  # drops 0.2% of the pool: uniform by name
        "learnability": learnability,
    }


def test_the_comparator_is_one_baseline_for_every_seed_and_a_clear_saving_is_yes_under_every_reading():
    fast = _arm([0.61, 0.62, 0.63], [11, 22, 44], late_curve=[0.61, 0.62, 0.63])  # above the target from its smallest budget
    result = budget_rule.summarise(_runs([_seed(fast), _seed(fast, 0.001), _seed(fast, -0.001)]), BUDGETS, tuple(_seed(fast)))
    assert result["comparator"] == "curated_only"  # about 30 FLOPs (between its 1x and 2x budgets), uniform 40
    assert result["folded_into_uniform"] == {"filtered": 0.002}  # not a comparator of its own
    verdict = result["verdicts"]["learnability"]
    assert verdict["fixed_reading"] == "budget, sustained" and verdict["verdict"] == "yes"
    assert {r["verdict"] for r in verdict["readings"].values()} == {"yes"}
    against = verdict["against_each_baseline"]  # printed beside the verdict against every baseline, not only one
    assert set(against) == {"uniform", "curated_only"} and against["uniform"]["flop_ratio"]["mean"] < 11 / 30
    ratio = verdict["readings"]["budget, sustained"]["flop_ratio"]
    assert ratio["mean"] == pytest.approx(11 / 30, rel=0.05) and ratio["high"] < 1
    gaps = result["final_val_minus_comparator"]["learnability"]  # at each budget, against the comparator's
    assert gaps["0.5"]["mean"] == pytest.approx(0.06) and gaps["2"]["mean"] == pytest.approx(0.02)


def test_a_crossing_that_dips_back_below_counts_only_in_the_first_crossing_reading_and_the_verdict_is_undecided():
    dips = _arm([0.61, 0.59, 0.62], [11, 22, 44], late_curve=[0.40, 0.50, 0.62])  # above at 0.5x, below at 1x, above at 2x
    result = budget_rule.summarise(_runs([_seed(dips), _seed(dips, 0.001)]), BUDGETS, tuple(_seed(dips)))
    readings = result["verdicts"]["learnability"]["readings"]
    per_seed = result["per_seed"]["0"]["arms"]["learnability"]["flops_to_target"]
    assert per_seed["budget, first"] == 11 and per_seed["budget, sustained"] > 22  # the dip back below does not count
    assert readings["budget, first"]["verdict"] == "yes" and readings["budget, sustained"]["verdict"] == "no"
    assert result["verdicts"]["learnability"]["verdict"] == "undecided"


def test_an_arm_that_never_reaches_the_target_is_no_under_every_reading():
    never = _arm([0.40, 0.45, 0.50], [11, 22, 44], late_curve=[0.3, 0.4, 0.5])
    result = budget_rule.summarise(_runs([_seed(never), _seed(never, 0.001)]), BUDGETS, tuple(_seed(never)))
    assert result["verdicts"]["learnability"]["verdict"] == "no"
    assert result["verdicts"]["learnability"]["readings"]["budget, sustained"]["flop_ratio"]["reached"] == 0


def test_the_first_crossing_reads_where_a_curve_first_reaches_the_goal_whether_or_not_it_stays():
    steps, values = [1, 2, 3, 4], [0.2, 0.6, 0.4, 0.7]
    assert stopping.first_crossing(steps, values, 0.5, 1).step == pytest.approx(1.75)
    assert stopping.crossing(steps, values, 0.5, 1).step == pytest.approx(3 + 0.1 / 0.3)
    assert stopping.first_crossing(steps, values, 0.9, 1).step is None
    assert stopping.first_crossing(steps, values, 0.1, 1).step == 1


def test_budgets_are_at_least_two_and_ascend(tmp_path):
    from winnow.config import load_params
    from winnow.errors import ConfigError

    for bad in ("[1.0]", "[1.0, 0.5]", "[0.5, 0.5]"):
        with pytest.raises(ConfigError, match="bench.budgets"):
            load_params(overrides=[f"bench.budgets={bad}"])


def test_curated_only_early_stopped_is_a_baseline_of_its_own_read_at_its_best_val_and_charged_to_that_step():
    # the curated set alone peaks early and then overfits: read at its best, it reaches uniform's plateau first
    early = {b: {**arm, "flops": arm["flops"] / 4, "final_val": 0.62} for b, arm in _arm([0.62] * 3, [10, 20, 40]).items()}
    learnability = _arm([0.55, 0.61, 0.62], [11, 22, 44], late_curve=[0.5, 0.61, 0.62])
    seeds = [{**_seed(learnability, j), budget_rule.EARLY: early} for j in (0.0, 0.001, -0.001)]
    result = budget_rule.summarise(_runs(seeds), BUDGETS, tuple(seeds[0]))
    assert result["comparator"] == budget_rule.EARLY and budget_rule.EARLY not in result["verdicts"]  # a baseline, not judged
    assert result["verdicts"]["learnability"]["readings"]["budget, sustained"]["verdict"] == "no"  # about 20 FLOPs against 2.5


def test_the_kept_class_mix_is_summarised_per_budget_as_an_effective_number_of_classes():
    even, one = [0.25] * 4, [1.0, 0.0, 0.0, 0.0]
    seeds = []
    for j in (0.0, 0.001):
        arms = _seed(_arm([0.61, 0.62, 0.63], [11, 22, 44]), j)
        for b in BUDGETS:
            arms["uniform"][b]["kept_class_share"], arms["learnability"][b]["kept_class_share"] = one, even
        seeds.append(arms)
    result = budget_rule.summarise(_runs(seeds), BUDGETS, tuple(seeds[0]))
    effective = result["kept_classes_effective"]
    assert effective["learnability"]["1"]["mean"] == pytest.approx(4.0) and effective["uniform"]["2"]["mean"] == pytest.approx(
        1.0
    )
    assert effective["curated_only"]["1"]["mean"] is None  # no class mix recorded: none claimed


def test_the_page_says_what_a_run_cut_from_the_protocol():
    from winnow.reports.budgets import cut_line

    result = budget_rule.summarise(_runs([_seed(_arm([0.61, 0.62, 0.63], [11, 22, 44]))]), BUDGETS, tuple(_seed({})))
    assert cut_line(result) == "Cut from the protocol: 1 seed, not 5; arms not run: balanced, curated_mix, learnability_mix."


def test_a_replay_shared_by_n_learners_pays_its_recordings_selection_over_n_and_nothing_else_moves():
    from winnow.method.ledger import Costs

    replay = Costs(0.0, 0.0, 0.0, 0.0, 3.0, replayed_one_off=100.0, replayed_selection_per_step=2.0)
    shared = budgets.shared_by(replay, 10)
    assert shared.replayed_one_off == 10.0 and shared.replayed_selection_per_step == 0.2
    assert shared.learner_training_per_step == 3.0 and shared.at_step(10) == pytest.approx(10 + 10 * 3.2)
    assert budgets.shared_by(replay, 1) is replay


def test_a_long_study_writes_its_summary_after_every_seed_saying_how_many_are_in(tiny, monkeypatch):
    from winnow.config import load_params
    from winnow.reports.budgets import cut_line
    from winnow.stages.inputs import read_json
    from winnow.stages.paths import Paths

    params = load_params(tiny, ["bench.seeds=3", "bench.budgets=[0.5,1.0,2.0]", "bench.policies=[uniform,curated_only,filtered]"])
    seen = []

    def one_seed(params_, seed):  # each seed's arms as the runs would give them (the runs are test_flows.py's)
        written = Paths.of(params_).study_json("budgets")
        seen.append(read_json(written, "")["seeds"] if written.exists() else [])
        arms = _runs([_seed(_arm([0.61, 0.62, 0.63], [11, 22, 44]), 0.001 * seed)])[0]
        for b in BUDGETS:
            arms[b]["_metric"] = "accuracy"
            arms[b][budget_rule.EARLY] = arms[b]["curated_only"]  # curated_only read at its best val evaluation
        return None, arms

    monkeypatch.setattr(budgets, "train_seed", one_seed)
    result = budgets.run(params)
    assert seen == [[], [0], [0, 1]] and result["seeds"] == [0, 1, 2]  # the summary so far, before each next seed
    partial = {**result, "seeds": [0, 1]}
    assert cut_line(partial).startswith("Cut from the protocol: under way: 2 of the 3 seeds asked are in")


def test_the_docs_figure_says_how_many_seeds_are_in_and_the_page_draws_the_final_metric_at_each_budget(tmp_path):
    from winnow.reports.budgets import figure
    from winnow.reports.plots import plot_budgets

    result = budget_rule.summarise(_runs([_seed(_arm([0.61, 0.62, 0.63], [11, 22, 44]))]), BUDGETS, tuple(_seed({})))
    result.update(base_steps=1500, seeds_asked=5, curve_metric="val_accuracy")
    text = figure(result)
    assert text.startswith("1 of 5 seeds (a single seed: no interval)") and "0.37 (1 seed)" in text
    assert "| learnability | 0.6100 | 0.6200 | 0.6300 |" in text  # the final metric at each budget, from the runs
    plot_budgets(result, tmp_path / "budgets.png")
    assert (tmp_path / "budgets.png").stat().st_size > 10_000


def test_the_page_says_what_a_seed_of_the_study_cost_in_wall_time_counting_each_trained_run_once():
    from winnow.reports.budgets import cost_line

    seeds = [_seed(_arm([0.61, 0.62, 0.63], [11, 22, 44]), j) for j in (0.0, 0.001)]
    for seed in seeds:
        for arm in seed.values():
            for run in arm.values():
                run["step_seconds"] = 600.0  # ten minutes a run: 4 arms x 3 budgets = 2 h a seed
    runs = _runs(seeds)
    for by_budget in runs.values():
        for b in BUDGETS:
            by_budget[b][budget_rule.EARLY] = by_budget[b]["curated_only"]  # curated_only's run, read at its best val
    result = budget_rule.summarise(runs, BUDGETS, (*_seed({}), budget_rule.EARLY))
    assert result["step_seconds_per_seed"]["values"] == [7200.0, 7200.0]  # the early-stopped arm is curated_only's run
    assert cost_line(result).startswith("A seed's training steps took 2.0 h (per seed: 2.0, 2.0 h;")


def test_against_a_baseline_that_never_reached_the_target_the_page_says_so_not_a_bare_never():
    from winnow.reports.budgets import _each_baseline

    seed = _seed(_arm([0.61, 0.62, 0.63], [11, 22, 44]))
    seed["curated_only"] = _arm([0.30, 0.40, 0.50], [10, 20, 40])  # far below uniform's plateau at every budget
    result = budget_rule.summarise(_runs([seed, seed]), BUDGETS, tuple(seed))
    row = next(line for line in _each_baseline(result) if line.startswith("| learnability |"))
    assert "| curated_only never reached it |" in row and "never (0/2)" not in row


def _windowed(runs: dict, window: int) -> dict:
    for by_budget in runs.values():
        for b in BUDGETS:
            by_budget[b]["_window"] = window
    return runs


def test_the_target_is_uniforms_final_val_at_the_largest_budget_so_uniform_reaches_its_own_level_there():
    # uniform's last evaluations at the largest budget: 0.62, 0.61, 0.60; read by its final one, as every budget is
    uniform = _arm([0.50, 0.58, 0.60], [10, 20, 40], late_curve=[0.62, 0.61, 0.60])
    seeds = [{**_seed(_arm([0.55, 0.61, 0.62], [11, 22, 44])), "uniform": uniform} for _ in range(2)]
    result = budget_rule.summarise(_windowed(_runs(seeds), 3), BUDGETS, tuple(seeds[0]))
    assert result["targets"] == [0.60, 0.60] and result["target_window"] == 3
    fixed = result["per_seed"]["0"]["arms"]["uniform"]["flops_to_target"]
    assert fixed["budget, sustained"] == 40  # its own full run, never "never"
    assert result["per_seed"]["0"]["smoothed_target"] == pytest.approx(0.61)  # the smoothed reading's target
    assert fixed[budget_rule.SMOOTHED] == 40  # each budget read as the mean of its last 3 evaluations: 0.61 at the largest


def test_interpolated_on_log_flops_the_crossing_between_doubling_budgets_comes_sooner_and_is_printed_beside():
    between = _arm([0.50, 0.58, 0.62], [11, 22, 44])  # crosses 0.60 half way between its 1x and 2x budgets
    result = budget_rule.summarise(_runs([_seed(between), _seed(between)]), BUDGETS, tuple(_seed(between)))
    reads = result["per_seed"]["0"]["arms"]["learnability"]["flops_to_target"]
    assert reads["budget, sustained"] == pytest.approx(33)  # linear in FLOPs: 22 + 0.5 * 22
    assert reads[budget_rule.LOG] == pytest.approx((22 * 44) ** 0.5)  # the geometric middle: 31.1
    assert budget_rule.LOG in result["verdicts"]["learnability"]["readings"]


def test_a_reading_already_at_the_target_at_the_smallest_budget_is_an_upper_bound_that_can_only_undecide():
    at_once = _arm([0.60, 0.61, 0.62], [11, 22, 44])  # at uniform's level from its smallest budget: censored at 11
    # against a comparator censored the same way, a "yes" could be wrong: the comparator's true FLOPs may be lower
    cheap = _arm([0.60, 0.605, 0.61], [5, 10, 20])  # ending below the arm (0.62), so the final metric does not decide
    seeds = [{**_seed(at_once), "curated_only": cheap} for _ in range(2)]
    result = budget_rule.summarise(_runs(seeds), BUDGETS, tuple(seeds[0]))
    fixed = result["verdicts"]["learnability"]["readings"]["budget, sustained"]
    assert result["comparator"] == "curated_only" and result["per_seed"]["0"]["arms"]["learnability"]["censored"]
    assert fixed["flop_ratio"]["mean"] == pytest.approx(11 / 5)  # more FLOPs, but both are upper bounds
    assert fixed["bounds"]["arm_censored"] == 2 and fixed["verdict"] == "undecided"
    # an arm that ends below the comparator is "no" whatever its FLOPs: censoring cannot change that
    low = {**cheap, **{b: {**cheap[b], "final_val": 0.70} for b in BUDGETS}}
    seeds = [{**_seed(at_once), "curated_only": low} for _ in range(2)]
    result = budget_rule.summarise(_runs(seeds), BUDGETS, tuple(seeds[0]))
    assert result["verdicts"]["learnability"]["readings"]["budget, sustained"]["verdict"] == "no"


def test_a_saving_against_a_comparator_censored_at_its_smallest_budget_is_undecided_not_yes():
    fast = _arm([0.55, 0.61, 0.62], [2, 4, 8])  # reaches 0.60 between its 0.5x and 1x budgets: about 3.7 FLOPs
    censored = _arm([0.60, 0.605, 0.61], [10, 20, 40])  # at the target at once: 10 is an upper bound
    seeds = [{**_seed(fast), "curated_only": censored} for _ in range(3)]
    result = budget_rule.summarise(_runs(seeds), BUDGETS, tuple(seeds[0]))
    fixed = result["verdicts"]["learnability"]["readings"]["budget, sustained"]
    assert fixed["flop_ratio"]["high"] < 1 and fixed["bounds"]["comparator_censored"] == 3
    assert fixed["verdict"] == "undecided"
