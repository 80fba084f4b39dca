"""The regime map (`winnow bench --study regimes`) and `winnow advise`, which places new data on it."""

import json

import pytest
import yaml

from winnow.cli import main
from winnow.config import load_params
from winnow.errors import ConfigError
from winnow.stages.paths import Paths
from winnow.studies import summaries
from winnow.studies.regime_map import leave_one_out, nearest, pays
from winnow.studies.runs import spread


def _row(point, flops, final, curated=0.04, reference=0.5, pilot=0.3, scorer=0.1):
    row = {
        "point": point,
        "flop_ratio_vs_best": spread(flops),
        "final_over_best": spread(final),
        **{
            k: spread([v])
            for k, v in zip(
                ("curated_share", "reference_val", "pilot_val", "scorer_over_learner"), (curated, reference, pilot, scorer)
            )
        },
    }
    return {**row, "pays": pays(row)}


def test_selection_pays_only_where_every_seed_saves_flops_for_sure_and_ends_no_lower():
    assert pays(_row("a", [0.5, 0.6, 0.55], [0.01, 0.0, 0.02]))
    assert not pays(_row("b", [0.5, 1.4, 0.55], [0.01, 0.0, 0.02]))  # the interval's upper end is above 1
    assert not pays(_row("c", [0.5, None, 0.55], [0.01, 0.0, 0.02]))  # one seed never reached the target
    assert not pays(_row("d", [0.5, 0.6, 0.55], [-0.05, -0.01, 0.0]))  # cheaper, but ends lower
    assert pays(_row("e", [0.8], [0.0])) and not pays(_row("f", [1.2], [0.0]))  # one seed: its value


def test_advice_is_the_outcome_of_the_nearest_point_and_the_map_is_checked_leaving_each_point_out():
    rows = [
        _row("little clean data", [0.5, 0.6, 0.55], [0.0, 0.01, 0.0], curated=0.02, reference=0.7, pilot=0.3),
        _row("little clean data, other seed", [0.55, 0.65, 0.6], [0.0, 0.01, 0.0], curated=0.025, reference=0.72, pilot=0.31),
        _row("much clean data", [1.8, 1.7, 1.9], [-0.1, -0.1, -0.1], curated=0.2, reference=0.9, pilot=0.3),
    ]
    near, d = nearest({"curated_share": 0.021, "reference_val": 0.71, "pilot_val": 0.3, "scorer_over_learner": 0.1}, rows)
    assert near["point"] == "little clean data" and d < 0.2 and near["pays"]
    check = leave_one_out({"rows": rows})
    assert check["points"] == 3 and check["agreed"] == 2  # the lone "much clean data" point has no neighbour like it
    assert check["per_point"]["much clean data"] == {**check["per_point"]["much clean data"], "advised": True, "measured": False}


def test_a_point_is_checked_by_name_and_one_that_changes_the_data_gets_a_dataset_of_its_own(tiny):
    params = load_params(tiny, ["bench.regimes={few: {data.num_curated: 150}, big: {reference.model: cnn-small}}"])
    assert params.regime("few").data.name == "data-few" and params.regime("few").data.num_curated == 150
    assert params.regime("big").data.name == "data" and params.regime("big").reference.model == "cnn-small"
    with pytest.raises(ConfigError, match=r"bench.regimes.bad.seed: a point changes dotted keys of data, reference"):
        load_params(tiny, ["bench.regimes={bad: {seed: 3}}"])
    wrong = load_params(tiny, ["bench.regimes={wrong: {reference.model: no-such-model}}"])
    with pytest.raises(
        ConfigError, match=r"bench.regimes.wrong: .*reference.model: 'no-such-model' is not a classification model"
    ):
        wrong.regime("wrong")


@pytest.mark.parametrize("objective", ["classification", "contrastive"])
def test_every_point_of_the_default_map_is_a_valid_config(objective):
    from pathlib import Path

    params = load_params(Path(__file__).parents[1] / "params.yaml", [f"objective={objective}"])
    for name in params.bench.regimes:
        params.regime(name)  # the rates still leave room for clean examples, the models are the objective's


@pytest.mark.slow  # kept out of the default suite to hold it within ten minutes; -m slow runs it
@pytest.mark.e2e  # through the CLI, with Prefect: the full tier
def test_the_regime_map_is_measured_and_advise_places_new_data_on_it_through_the_cli(prefect_server, tiny, capsys):
    sets = [
        "--set",
        "bench.seeds=1",
        "--set",
        "bench.policies=[uniform,curated_only]",
        "--set",
        "bench.regimes={as-configured: {}, few-curated: {data.num_curated: 120}}",
        "--set",
        "bench.pilot_steps=10",
    ]
    assert main(["advise", "--params", str(tiny), *sets]) == 2  # no map yet: says how to make one
    assert "winnow bench --study regimes" in capsys.readouterr().err

    assert main(["bench", "--params", str(tiny), "--study", "regimes", *sets]) == 0
    assert "| few-curated | data.num_curated=120 |" in capsys.readouterr().out
    params = load_params(tiny)
    paths = Paths.of(params)
    result = json.loads(paths.study_json("regimes").read_text())
    assert [r["point"] for r in result["rows"]] == ["as-configured", "few-curated"]
    few = result["rows"][1]
    assert few["curated_share"]["mean"] == pytest.approx(120 / 1200, rel=0.05)  # measured from the point's own pool
    assert result["rows"][0]["curated_share"]["mean"] == pytest.approx(300 / 1200, rel=0.05)
    assert result["leave_one_out"]["points"] == 2
    assert summaries.refresh(result) == result  # ratios on the log scale, as every committed map is (test_summaries)
    assert main(["bench", "--params", str(tiny), "--study", "regimes", "--report-only", *sets]) == 0  # rewrites nothing new
    assert json.loads(paths.study_json("regimes").read_text()) == result
    assert (tiny.parent / "data-few-curated" / "manifest.json").exists()  # the point's pool, beside the default one
    assert "matched its own outcome at" in paths.study_report("regimes").read_text()

    ladder = _ladder_with_a_line(a=0.4, b=2.0)  # a committed learner ladder beside the map: its projection is read too
    (paths.bench / "classification-ladder.json").write_text(json.dumps(ladder))
    assert main(["advise", "--params", str(tiny), *sets]) == 0
    said = capsys.readouterr().out
    assert "nearest point on the map: as-configured" in said  # the default data is the map's own first point
    line = next(s for s in said.splitlines() if s.startswith("projection from the ladder"))
    assert "a projection from measured points, not a measurement" in line and "below 1 where x < 0.3" in line
    advice = json.loads((paths.metrics_root / "data" / "advise-classification.json").read_text())
    assert advice["nearest"]["distance"] < 0.5 and advice["selection_should_pay"] == result["rows"][0]["pays"]


@pytest.mark.e2e
def test_a_regime_that_changes_imported_data_is_refused_naming_the_point(prefect_server, tiny, capsys):
    from winnow.stages.data import data_stage

    params = load_params(tiny)
    data_stage(params)
    manifest = tiny.parent / "data" / "manifest.json"
    raw = json.loads(manifest.read_text())
    raw.pop("generator")  # as an imported dataset's manifest: winnow does not own it
    manifest.write_text(json.dumps(raw))
    config = yaml.safe_load(tiny.read_text())
    config["bench"] = {
        "seeds": 1,
        "regimes": {"ok": {"reference.model": "cnn-tiny"}, "noisier": {"data.pathologies.noisy_label": 0.4}},
    }
    tiny.write_text(yaml.safe_dump(config))
    assert main(["bench", "--params", str(tiny), "--study", "regimes"]) == 2
    said = [line for line in capsys.readouterr().err.splitlines() if line.startswith("winnow: error:")]
    assert len(said) == 1 and "bench.regimes.noisier: changes data.*" in said[0] and "imported dataset" in said[0]


def _ladder_with_a_line(a: float, b: float) -> dict:
    """A ladder result whose learnability ratios lie on a + b x, seed by seed, as `winnow bench --study ladder`
    writes it."""
    from winnow.studies import projection
    from winnow.studies.budget_rule import FIXED

    rows = []
    for learner, x in (("small", 0.08), ("medium", 0.04), ("base", 0.01)):
        values = [a + b * x + e for e in (-0.01, 0.0, 0.01)]
        ratio = {"values": values, "mean": None, "low": None, "high": None, "reached": 3, "runs": 3}
        verdicts = {"learnability": {"readings": {FIXED: {"flop_ratio": ratio}}}}
        rows.append(
            {
                "learner": learner,
                "selection_over_learner": x,
                "scorer_flops_over_learner": x,
                "learner_forward_flops": 1e6 / x,
                "learner_step_flops": 3e6 / x,
                "steps": 1500,
                "verdicts": verdicts,
            }
        )
    return {"data": "data/synthetic", "rows": rows, "projection": {"online": projection.online(rows, 0.01), "replay": []}}
