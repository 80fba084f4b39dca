"""`winnow bench --study ladder`: each learner under the budgets protocol against baselines of its own, with the
scorers fixed; the first learner's learnability sequence replayed on the larger ones, charged its recording's
selection at N = 1, 3 and 10 sharers; the projection fitted to what was measured."""

import json

import pandas as pd
import pytest

from winnow.config import load_params
from winnow.stages.paths import Paths

SETS = [
    "bench.seeds=2",
    "bench.budgets=[0.5,1.0]",
    "bench.policies=[uniform,curated_only,learnability]",
    "train.steps=20",
    "bench.ladder=[cnn-nano,cnn-tiny]",
    "bench.learner_steps={cnn-tiny: 16}",
]


@pytest.mark.slow  # kept out of the default suite to hold it within ten minutes; -m slow runs it
@pytest.mark.e2e  # through the CLI, with Prefect: the full tier
def test_the_ladder_replays_the_first_learners_sequence_on_the_larger_ones_and_projects_where_selection_pays(
    prefect_server, tiny
):
    from winnow.cli import main
    from winnow.studies import ladder

    assert main(["bench", "--study", "ladder", "--params", str(tiny), *[a for s in SETS for a in ("--set", s)]]) == 0
    params = load_params(tiny, SETS)
    result = json.loads(Paths.of(params).study_json("ladder").read_text())
    small, large = result["rows"]
    assert (small["learner"], large["learner"]) == ("cnn-nano", "cnn-tiny") and result["recorded_by"] == "cnn-nano"
    assert small["learner_forward_flops"] < large["learner_forward_flops"]
    assert small["scorer_flops_over_learner"] > large["scorer_flops_over_learner"]  # the scorers are fixed
    assert "replay" not in small["verdicts"]  # the recording learner replays nothing
    assert {"learnability", "replay", "replay_shared_3", "replay_shared_10"} <= set(large["verdicts"])
    for seed in (0, 1):
        for budget, steps in ((0.5, 8), (1.0, 16)):  # cnn-tiny's own steps, scaled by each budget
            run = ladder.learner_params(params, seed, budget, "cnn-tiny")
            record = json.loads(Paths.of(run).train_record("replay").read_text())
            recorded = ladder.recording(params, seed, "cnn-nano", budget)
            assert record["steps"] == steps and record["replay_of"] == recorded and record["replay_users"] == 1
            kept = pd.read_parquet(recorded)
            assert kept["step"].nunique() >= steps  # the recording holds every step the replay trains
    # the same replay charged as if 10 learners shared its recording: cheaper at every budget, by its selection's share
    for budget in ("0.5", "1"):
        one, ten = (large["final_val"][arm][budget] for arm in ("replay", "replay_shared_10"))
        assert one == ten  # one run, charged twice: the same curve
    flops = {arm: [large["per_seed"][s]["arms"][arm]["flops_to_target"]["in-run, sustained, k=1"] for s in ("0", "1")]
             for arm in ("replay", "replay_shared_10")}  # fmt: skip
    reached = [(a, b) for a, b in zip(flops["replay"], flops["replay_shared_10"]) if a is not None]
    assert all(b is not None and b < a for a, b in reached)
    proj = result["projection"]
    assert proj["label"] == "a projection from measured points, not a measurement"
    assert proj["paper_learner"] == "vit-b" and proj["paper_learner_forward_flops"] > large["learner_forward_flops"]
    assert [r["learner"] for r in proj["replay"]] == ["cnn-tiny"]
    page = Paths.of(params).study_report("ladder").read_text()
    assert "uv run winnow bench --study ladder" in page and "**Projection** (a projection from measured points" in page
    assert "| cnn-nano |" in page and "## cnn-tiny (16 steps at 1x)" in page


def test_a_ladder_that_would_fail_hours_in_is_refused_before_any_run_naming_the_key(tiny):
    from winnow.errors import ConfigError
    from winnow.studies import ladder

    longer = load_params(tiny, [*SETS, "bench.learner_steps={cnn-nano: 10, cnn-tiny: 16}"])
    with pytest.raises(ConfigError, match=r"bench.learner_steps.cnn-tiny: 16 steps, and cnn-nano's recorded sequence holds 10"):
        ladder.run(longer)
    small_buffer = load_params(tiny, [*SETS, "train.shuffle_buffer=100"])
    with pytest.raises(ConfigError, match="'replay' draws any row of the pool"):
        ladder.run(small_buffer)
    assert not list((tiny.parent / "artifacts").rglob("*.pt"))  # nothing trained
