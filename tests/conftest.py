"""Shared fixtures: a tiny but real configuration, written as a params.yaml in a temp folder.

The method's tests never start Prefect; flow tests share one Prefect test harness per session.
"""

from __future__ import annotations

import os
import sys
import tempfile

import pytest
import yaml

# Bytecode written once, read by every process the suite starts (the CLI, torchrun ranks, Dask workers, the served
# deployment): where PYTHONDONTWRITEBYTECODE is set, each of them would compile torch's and Prefect's sources anew,
# seconds per process.
sys.dont_write_bytecode = False
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
# The decoded cache (winnow/datasets/decoded.py) of this test session, never the user's: every process the tests
# start inherits it
os.environ.setdefault("WINNOW_DECODED_CACHE", tempfile.mkdtemp(prefix="winnow-decoded-"))

TINY = {
    "seed": 0,
    "data": {
        "num_pool": 1200,
        "num_curated": 300,
        "num_test": 200,
        "num_val": 200,
        "num_transfer": 240,
        "shard_size": 300,
        "duplicate_sources": 10,
    },
    "reference": {"steps": 40, "batch_size": 32, "warmup_steps": 5, "model": "cnn-nano"},
    "score": {"batch_size": 128},
    "train": {
        "steps": 30,
        "batch_size": 32,
        "warmup_steps": 5,
        "eval_every": 10,
        "checkpoint_every": 10,
        "model": "cnn-nano",
        "policies": ["uniform", "curated_only", "filtered", "learnability"],  # two baselines and the method
    },
    "evaluate": {"probe_steps": 30},
    "objectives": {
        "contrastive": {
            "reference": {"model": "clip-nano"},
            "train": {"model": "clip-nano", "actor": "clip-pico"},
            "score": {"batch_size": 64},
            "bench": {"scorers": ["clip-pico"], "learners": ["clip-nano"]},
        }
    },
}


def run_stages(params) -> dict:
    """Every stage in order, as `winnow pipeline` runs them but without Prefect; returns the summary."""
    from winnow.stages.chain import run_chain

    return run_chain(params)


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    """A tiny params.yaml in a temp folder that is also the working directory; returns its path."""
    raw = {
        **TINY,
        "data": {**TINY["data"], "root": str(tmp_path / "data")},
        "artifacts": str(tmp_path / "artifacts"),
        "metrics": str(tmp_path / "metrics"),
    }
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    monkeypatch.chdir(tmp_path)
    return path


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """One synthesized tiny dataset, shared read-only by the method's tests."""
    from winnow.config import params_from_dict
    from winnow.datasets.synth import synthesize

    root = tmp_path_factory.mktemp("tiny_data") / "data"
    params = params_from_dict({**TINY, "data": {**TINY["data"], "root": str(root)}})
    synthesize(params.data, root)
    return params


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory):
    """One Prefect test harness (ephemeral API in a temp PREFECT_HOME) for the whole session."""
    os.environ["PREFECT_HOME"] = str(tmp_path_factory.mktemp("prefect_home"))
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


def uniform_target(metrics, summary: dict) -> float:
    """What the one stopping rule says the target is: the mean of uniform's last k evaluations (its curve on disk)."""
    import csv

    metric = summary["curve_metric"].split("_", 1)[1]
    with open(metrics / "curves" / "uniform.csv") as f:
        values = [float(r[metric]) for r in csv.DictReader(f)]
    k = summary["target_window"]
    return sum(values[-k:]) / len(values[-k:])
