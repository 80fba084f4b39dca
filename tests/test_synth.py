"""The built-in pool: byte-identical for the same params and seed, with its pathologies at their rates."""

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from winnow.config import params_from_dict
from winnow.datasets.contract import load_split
from winnow.datasets.synth import PATHOLOGIES, synthesize


def _files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_params_and_seed_give_byte_identical_files(tmp_path, tiny_data):
    again = synthesize(tiny_data.data, tmp_path / "again")
    assert _files(again) == _files(__import__("pathlib").Path(tiny_data.data.root))


def test_another_seed_gives_other_images(tmp_path, tiny_data):
    other = synthesize(tiny_data.data.model_copy(update={"seed": tiny_data.data.seed + 1}), tmp_path / "other")
    assert (
        _files(other)["pool/part-00000.parquet"]
        != (__import__("pathlib").Path(tiny_data.data.root) / "pool/part-00000.parquet").read_bytes()
    )


def test_the_layout_follows_the_data_contract(tiny_data):
    root = __import__("pathlib").Path(tiny_data.data.root)
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["schema_version"] == 1 and len(manifest["class_names"]) == 20
    pool = pq.read_table(root / "pool")
    assert pool.schema.field("id").type == "int64" and pool.schema.field("label").type == "int32"
    assert pool.column("id").to_pylist() == list(range(tiny_data.data.num_pool))  # dense from 0
    for split in ("curated", "eval/test", "eval/texture"):
        assert set(pq.read_table(root / split).column("pathology").to_pylist()) == {"clean"}
    fold = pq.read_table(root / "eval/texture").column("fold").to_pylist()
    assert {"train", "test"} == set(fold)


def test_pathologies_appear_at_their_configured_rates(tmp_path):
    params = params_from_dict(
        {"data": {"num_pool": 6000, "num_curated": 10, "num_test": 10, "num_transfer": 12, "shard_size": 3000}}
    )
    root = synthesize(params.data.model_copy(update={"seed": 3}), tmp_path / "d")
    pathology = np.array(pq.read_table(root / "pool", columns=["pathology"]).column("pathology").to_pylist())
    rates = params.data.pathologies
    for name in PATHOLOGIES[1:]:
        assert abs((pathology == name).mean() - getattr(rates, name)) < 0.015, name
    labels = np.array(pq.read_table(root / "pool", columns=["label"]).column("label").to_pylist())
    counts = np.bincount(labels[pathology == "clean"], minlength=20)
    assert counts.max() > 3 * counts.min()  # class imbalance (Zipf, exponent 1)


def test_undecodable_pool_images_are_skipped_and_listed_not_silently_dropped(tiny_data):
    root = __import__("pathlib").Path(tiny_data.data.root)
    pool = load_split(root / "pool", 32, 20)
    expected = int(
        (np.array(pq.read_table(root / "pool", columns=["pathology"]).column("pathology").to_pylist()) == "undecodable").sum()
    )
    assert len(pool.skipped) == expected > 0
    assert len(pool) + len(pool.skipped) == tiny_data.data.num_pool
    assert all("undecodable image" in s["reason"] and s["file"].endswith(".parquet") for s in pool.skipped)


def test_the_generator_overwrites_only_what_it_wrote(tmp_path, tiny_data):
    from winnow.errors import DataError

    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "manifest.json").write_text(json.dumps({"generator": "my-crawler v2", "counts": {}}))  # a user's own manifest
    with pytest.raises(DataError, match="did not write"):
        synthesize(tiny_data.data, theirs)
    assert sorted(p.name for p in theirs.iterdir()) == ["manifest.json"]
    ours = synthesize(tiny_data.data, tmp_path / "ours")
    (ours / "eval" / "mine").mkdir()
    (ours / "eval" / "mine" / "part-00000.parquet").write_bytes(b"a task the user added")
    with pytest.raises(DataError, match="also holds files the generator did not write"):
        synthesize(tiny_data.data.model_copy(update={"seed": 5}), ours)
    assert (ours / "eval" / "mine" / "part-00000.parquet").exists()
