"""A study's report ends with the command that reruns it: the settings its result records, so running that command
trains what the committed result measured (winnow/reports/studies.py)."""

import json
import shlex

import pytest

from winnow.config import load_params
from winnow.reports.figures import REPO
from winnow.reports.studies import settings_words

RECORDED = sorted(
    p.relative_to(REPO).as_posix()
    for p in REPO.glob("metrics/*/bench/*.json")
    if json.loads(p.read_text()).get("study") in ("levers", "regimes")
)


def _overrides(words: str) -> list[str]:
    tokens = shlex.split(words)
    assert tokens[::2] == ["--set"] * (len(tokens) // 2), words
    return tokens[1::2]


@pytest.mark.parametrize("source", RECORDED)
def test_the_rerun_command_of_a_study_sets_what_its_result_records(source):
    result = json.loads((REPO / source).read_text())
    params = load_params(REPO / "params.yaml", [f"objective={result['objective']}", *_overrides(settings_words(result))])
    assert params.data.root == result["data"]
    assert list(range(params.seed, params.seed + params.bench.seeds)) == result["seeds"]
    assert [p for p in params.bench.policies] == result["baselines"]
    if result["study"] == "levers":
        assert params.bench.levers == {r["lever"]: r["changes"] for r in result["rows"]}
        assert (params.reference.model, params.train.actor, params.train.steps) == (
            result["reference"],
            result["actor"],
            result["steps"],
        )
    else:
        assert params.bench.regimes == {r["point"]: r["changes"] for r in result["rows"]}


def test_there_are_recorded_studies_to_check():
    assert len(RECORDED) >= 8
