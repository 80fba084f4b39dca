"""The score store: every pool example scored exactly once, across crashes, reruns and reuse."""

import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from winnow.config import load_params
from winnow.errors import DataError, StaleInput
from winnow.method.jest import pair_losses
from winnow.scores import store
from winnow.stages.data import data_stage
from winnow.stages.inputs import reference_model, run_split
from winnow.stages.paths import Paths
from winnow.stages.reference import reference_stage
from winnow.stages.score import score_stage


def _counts(db, scorer_id):
    with store.connect(db, read_only=True) as con:
        return con.execute("SELECT count(*), count(DISTINCT example_id) FROM scores WHERE scorer_id = ?", [scorer_id]).fetchone()


def test_ingesting_a_shard_twice_adds_no_rows(tmp_path):
    shard = tmp_path / "part-00000.parquet"
    pq.write_table(
        pa.table(
            {
                "example_id": pa.array([0, 1, 2], pa.int64()),
                "loss": pa.array([0.1, 0.2, None], pa.float32()),
                "status": ["ok", "ok", "bad"],
            }
        ),
        shard,
    )
    db = tmp_path / "scores.duckdb"
    with store.connect(db) as con:
        store.register_scorer(con, "s1", "m", "d", "classification", "cnn")
        assert store.ingest_shard(con, "s1", shard.name, shard) == 3
        with pytest.raises(duckdb.ConstraintException):
            store.ingest_shard(con, "s1", shard.name, shard)
    assert _counts(db, "s1") == (3, 3)


@pytest.fixture
def referenced(tiny):
    """A tiny dataset and a trained reference checkpoint."""
    params = load_params(tiny)
    data_stage(params)
    reference_stage(params)
    return params


KILL_AFTER_TWO_SHARDS = """
import os, signal, sys
sys.path.insert(0, {root!r})
from winnow.stages.data import data_stage
from winnow.stages.inputs import reference_model, run_split
from winnow.stages.paths import Paths
from winnow.stages.reference import reference_stage
from winnow.stages.score import score_stage
from winnow.config import load_params
from winnow.errors import DataError, StaleInput
from winnow.method.jest import pair_losses
done = []
def on_shard(path):
    done.append(path)
    if len(done) == 2:
        os.kill(os.getpid(), signal.SIGKILL)
score_stage(load_params({params!r}), on_shard=on_shard)
"""


@pytest.mark.e2e  # runs whole stages or other processes: the full tier
def test_a_scoring_run_killed_half_way_resumes_and_scores_every_example_exactly_once(referenced, tiny):
    root = str(Path(__file__).resolve().parents[1])
    code = textwrap.dedent(KILL_AFTER_TWO_SHARDS.format(root=root, params=str(tiny)))
    killed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tiny.parent)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    paths = Paths.of(referenced)
    assert len(list(paths.artifacts_root.glob("score_shards/*/part-*.parquet"))) == 2  # the crash left two of four shards

    out = score_stage(referenced)
    assert out["shards_scored"] == 2 and not out["reused"]  # only what was missing
    assert _counts(paths.store, out["scorer_id"]) == (referenced.data.num_pool, referenced.data.num_pool)


def test_a_scorer_already_in_the_store_is_reused_not_recomputed(referenced):
    first = score_stage(referenced)
    second = score_stage(referenced)
    assert not first["reused"] and second["reused"]
    # what scoring spent its time on: waiting for decoding (which ran ahead, in a thread) and the forward
    assert 0 < first["wait_seconds"] + first["forward_seconds"] <= first["seconds"] and first["decode_seconds"] > 0
    assert first["bound"] == ("decode" if first["decode_seconds"] > first["forward_seconds"] else "compute")
    assert second["scorer_id"] == first["scorer_id"] and second["num_examples"] == referenced.data.num_pool
    assert _counts(Paths.of(referenced).store, first["scorer_id"])[0] == referenced.data.num_pool
    (Paths.of(referenced).metrics / "score.json").unlink()  # as `dvc repro` removes it before rerunning score
    third = score_stage(referenced)  # reused, and still reports what scoring measured (the ledger needs it)
    assert third["reused"] and {k: third[k] for k in ("unscorable", "rows_scored", "scoring_rows_per_s")} == {
        k: first[k] for k in ("unscorable", "rows_scored", "scoring_rows_per_s")
    }


def test_scores_load_into_an_array_indexed_by_example_id(referenced):
    out = score_stage(referenced)
    pool = run_split(referenced, "pool")
    by_id = store.load_losses(Paths.of(referenced).store, out["scorer_id"])
    losses = by_id[pool.ids]
    assert losses.shape == (len(pool),) and (losses > 0).all()
    clean = pool.columns["pathology"] == "clean"
    noisy = pool.columns["pathology"] == "noisy_label"
    assert losses[noisy].mean() > losses[clean].mean()  # the reference knows which labels are wrong


@pytest.mark.e2e  # runs whole stages or other processes: the full tier
def test_a_second_writer_waits_for_the_lock_then_fails_with_a_clear_message(tmp_path):
    db = tmp_path / "scores.duckdb"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import duckdb, time; c = duckdb.connect({str(db)!r}); print('held', flush=True); time.sleep(30)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        started = time.monotonic()
        with pytest.raises(store.StoreBusy, match="another winnow process is writing it"):
            with store.connect(db, wait_s=1.0):
                pass
        assert time.monotonic() - started >= 1.0
    finally:
        holder.kill()
        holder.wait()
    with store.connect(db) as con:  # lock released: the store opens and is intact
        assert con.execute("SELECT count(*) FROM scorers").fetchone() == (0,)


@pytest.fixture
def clip_referenced(tiny):
    """A tiny dataset and a trained CLIP reference that learns and scores at 16 px (score.resolution)."""
    params = load_params(tiny, ["objective=contrastive", "score.resolution=16"])
    data_stage(params)
    reference_stage(params)
    return params


def test_a_contrastive_scorer_stores_each_scored_pairs_features_beside_its_loss(clip_referenced):
    out = score_stage(clip_referenced)
    paths = Paths.of(clip_referenced)
    losses = store.load_losses(paths.store, out["scorer_id"])
    image, text = store.load_embeddings(paths.store, out["scorer_id"])
    scored = ~np.isnan(losses)
    assert out["unscorable"] > 0  # the pool's undecodable images: no loss, and no features
    assert image.shape[0] == text.shape[0] == len(losses) and scored.sum() == len(losses) - out["unscorable"]
    assert np.isnan(image[~scored]).all() and not np.isnan(image[scored]).any()  # unscored pairs have no features
    assert np.allclose(np.linalg.norm(image[scored], axis=1), 1, atol=1e-4)  # normalised, as CLIP's logits use them
    # the stored features give back the stored losses: each shard's pairs, in scoring batches of score.batch_size
    reference = reference_model(clip_referenced)
    assert reference.input_size == 16 and json.loads((paths.metrics / "reference.json").read_text())["resolution"] == 16
    first = run_split(clip_referenced, "pool").ids[: clip_referenced.score.batch_size]
    scale = reference.logit_scale.exp().item()
    rebuilt = pair_losses(torch.from_numpy(scale * image[first] @ text[first].T))
    assert np.allclose(rebuilt.numpy(), losses[first], atol=1e-4)


@pytest.mark.e2e  # runs whole stages or other processes: the full tier
@pytest.mark.parametrize("kept", ["none", "some"])
def test_a_contrastive_scorer_stored_before_embeddings_is_scored_again_once(clip_referenced, kept):
    """A store written before JEST has no features for its scorer ("none"); one whose scoring was cut short
    under the old code and finished under the new has them for some shards only ("some")."""
    first = score_stage(clip_referenced)
    paths = Paths.of(clip_referenced)
    with store.connect(paths.store) as con:
        con.execute("DELETE FROM embeddings WHERE scorer_id = ? AND (? = 'none' OR example_id < 300)", [first["scorer_id"], kept])
    with pytest.raises(StaleInput, match="lacks features for some scored pairs"):
        store.load_embeddings(paths.store, first["scorer_id"])
    again = score_stage(clip_referenced)
    assert not again["reused"] and again["scorer_id"] == first["scorer_id"]
    assert _counts(paths.store, first["scorer_id"]) == (clip_referenced.data.num_pool,) * 2  # no row twice
    assert score_stage(clip_referenced)["reused"]
    image, _ = store.load_embeddings(paths.store, first["scorer_id"])
    assert (~np.isnan(image[:, 0])).sum() == clip_referenced.data.num_pool - again["unscorable"]


@pytest.mark.e2e  # runs whole stages or other processes: the full tier
def test_a_damaged_store_is_named_at_once_not_waited_on_as_if_another_process_held_it(prefect_server, tiny, monkeypatch, capsys):
    """Issue 26, finding 5: DuckDB's message for a damaged file can contain "block", which once matched the check
    for "lock": the run waited minutes, then blamed another process."""
    from winnow.cli import main

    def damaged(path, read_only=False):
        raise duckdb.IOException("Corrupt database file: computed checksum does not match stored checksum in block 12")

    monkeypatch.setattr(duckdb, "connect", damaged)
    params = load_params(tiny)
    data_stage(params)
    reference_stage(params)
    started = time.monotonic()
    assert main(["score", "--params", str(tiny)]) == 2
    said = capsys.readouterr().err
    assert "not a readable DuckDB score store" in said and "another winnow process" not in said
    assert time.monotonic() - started < 60  # the old check waited 120 s before failing


def test_shards_scored_with_the_next_one_decoding_ahead_match_shards_scored_one_at_a_time(tiny_data, tmp_path, monkeypatch):
    import threading

    from models import build_classifier
    from winnow.scores import scoring

    monkeypatch.setenv("WINNOW_DECODED_CACHE", "off")  # every shard decoded from its bytes, in the thread ahead
    before = set(threading.enumerate())

    def decoding():  # decode threads this test started and left running
        return [t for t in threading.enumerate() if t not in before and t.name.startswith("winnow-decode-")]

    pool = Path(tiny_data.data.root) / "pool"
    torch.manual_seed(0)
    model = build_classifier("cnn-nano", 20).eval()
    counts = scoring.score_shards(model, pool, tmp_path / "ahead", 32, 20, 64, ahead=True)
    assert counts["decoded_ahead"]
    assert counts["shards_scored"] == len(list(pool.glob("part-*.parquet")))
    for shard in sorted(pool.glob("part-*.parquet")):
        alone = scoring.score_shard(model, shard, 32, 20, 64)
        assert pq.read_table(tmp_path / "ahead" / shard.name).equals(alone)
    parts = scoring.spent(tmp_path / "ahead")
    assert parts["rows"] == tiny_data.data.num_pool and parts["decode_seconds"] > 0
    assert 0 <= parts["wait_seconds"] and parts["wait_seconds"] + parts["forward_seconds"] <= parts["seconds"]
    assert not decoding()  # no decode thread outlives scoring

    broken = tmp_path / "broken"
    broken.mkdir()
    for shard in sorted(pool.glob("part-*.parquet")):
        (broken / shard.name).write_bytes(shard.read_bytes())
    (broken / "part-00001.parquet").write_bytes(b"not parquet")
    with pytest.raises(DataError, match="part-00001"):
        scoring.score_shards(model, broken, tmp_path / "out", 32, 20, 64, ahead=True)
    assert (tmp_path / "out" / "part-00000.parquet").exists() and not (tmp_path / "out" / "part-00001.parquet").exists()
    assert not decoding()
