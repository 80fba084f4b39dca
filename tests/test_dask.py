"""Sharded scoring on Dask: the score flow maps its shards over a two-worker local cluster."""

import shutil

import numpy as np
import pytest

from winnow.config import load_params
from winnow.scores import store
from winnow.stages.data import data_stage
from winnow.stages.paths import Paths
from winnow.stages.reference import reference_stage
from winnow.stages.score import score_stage

pytestmark = [pytest.mark.e2e, pytest.mark.slow]  # a real two-worker Dask cluster (about 45 s): the slow tier, -m slow


def _scores(params, scorer_id):
    with store.connect(Paths.of(params).store, read_only=True) as con:
        return (
            con.sql(f"SELECT example_id, loss, status FROM scores WHERE scorer_id = '{scorer_id}' ORDER BY example_id")
            .to_arrow_table()
            .to_pydict()
        )


def test_scoring_on_a_two_worker_dask_cluster_gives_the_same_scores_as_one_process(prefect_server, tiny, tmp_path):
    from flows.pipeline import score_flow

    one = load_params(tiny)
    data_stage(one)
    reference_stage(one)
    local = score_stage(one)

    on_dask = [
        "artifacts=" + str(tmp_path / "dask_artifacts"),
        "metrics=" + str(tmp_path / "dask_metrics"),
        "score.dask_workers=2",
    ]
    dask = load_params(tiny, on_dask)
    shutil.copytree(Paths.of(one).reference.parent, Paths.of(dask).reference.parent)  # the same reference
    out = score_flow(str(tiny), on_dask)

    assert out["scorer_id"] == local["scorer_id"] and not out["reused"]
    assert out["shards_scored"] == 4 and len(out["workers"]) == 2  # both workers scored shards
    a, b = _scores(one, local["scorer_id"]), _scores(dask, out["scorer_id"])
    assert a["example_id"] == b["example_id"] == list(range(one.data.num_pool))  # every example exactly once
    assert a["status"] == b["status"]
    scored = [i for i, s in enumerate(a["status"]) if s == "ok"]
    np.testing.assert_allclose(
        np.array(b["loss"], dtype=float)[scored], np.array(a["loss"], dtype=float)[scored], rtol=1e-5, atol=1e-6
    )

    again = score_flow(str(tiny), on_dask)
    assert again["reused"]  # the store already holds this scorer: nothing is rescored
