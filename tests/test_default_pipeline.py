"""The claim, on the default pool (slow: about 8 minutes; run with `pytest -m slow`).

Learnability reaches uniform's final held-out accuracy in at most 0.6x the steps, measured
in the same run, and keeps less than half the pool's wrong-label rate.
"""

import shutil
from pathlib import Path

import pytest
from conftest import run_stages

from winnow.config import load_params

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_learnability_reaches_the_uniform_target_in_at_most_0_6x_the_steps(tmp_path, monkeypatch):
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    monkeypatch.chdir(tmp_path)
    params = load_params("params.yaml")
    summary = run_stages(params)
    learnability = summary["policies"]["learnability"]
    assert learnability["step_ratio"] is not None and learnability["step_ratio"] <= 0.6
    assert learnability["noisy_label_fraction_selected"] < 0.5 * summary["pool_noisy_label_fraction"]
