"""Seeds that redraw the data (bench.data_seeds): each seed of a bench its own pool (the built-in generator) or its
own curated and validation rows (a user's dataset), so a bench's intervals cover the data as well as training. The
test split and the pool of a user's dataset stay the source's own files; a rerun reads a seed's draw as it is."""

import io

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from winnow.config import params_from_dict
from winnow.datasets.contract import read_manifest
from winnow.datasets.digests import file_sha256
from winnow.datasets.redraw import redraw_dataset
from winnow.errors import DataError
from winnow.importers.source import Source
from winnow.importers.writer import write_dataset
from winnow.studies.runs import run_params

CLASSES = ["red", "green", "blue"]


def _examples(n: int, rng, start: int) -> list[dict]:
    out = []
    for i in range(n):
        label = int(rng.integers(0, 3))
        pixels = rng.integers(0, 60, (16, 16, 3)).astype(np.uint8)
        pixels[..., label] += 150
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, format="PNG")
        out.append({"image": buf.getvalue(), "label": label, "caption": None, "source_key": f"row-{start + i}"})
    return out


@pytest.fixture(scope="module")
def mine(tmp_path_factory):
    rng = np.random.default_rng(0)
    root = tmp_path_factory.mktemp("mine") / "mine"
    write_dataset(
        Source(_examples(300, rng, 0)),
        root,
        CLASSES,
        curated=Source(_examples(40, rng, 1000)),
        val=Source(_examples(60, rng, 2000)),
        test=Source(_examples(50, rng, 3000)),
        shard_size=100,
    )
    return root


def _keys(folder) -> list[str]:
    return sorted(pq.read_table(folder, columns=["source_key"]).column("source_key").to_pylist())


def test_a_seed_draws_curated_and_val_again_from_their_union_at_their_sizes_and_shares_pool_and_test(mine, tmp_path):
    one, again, two = (redraw_dataset(mine, tmp_path / name, seed) for name, seed in (("a", 1), ("b", 1), ("c", 2)))
    union = _keys(mine / "curated") + _keys(mine / "eval/val")
    for drawn in (one, two):
        curated, val = _keys(drawn / "curated"), _keys(drawn / "eval/val")
        assert (len(curated), len(val)) == (40, 60) and sorted(curated + val) == sorted(union)  # no row lost or repeated
        assert read_manifest(drawn)["counts"] == read_manifest(mine)["counts"]
        for split, n in (("curated", 40), ("eval/val", 60)):  # ids dense within each split, as the importer writes them
            assert pq.read_table(drawn / split, columns=["id"]).column("id").to_pylist() == list(range(n))
        for split in ("pool", "eval/test"):  # the source's own bytes: one test split, read once per run
            source_files = sorted((mine / split).glob("*.parquet"))
            assert [file_sha256(p) for p in sorted((drawn / split).glob("*.parquet"))] == [file_sha256(p) for p in source_files]
    assert _keys(one / "curated") != _keys(mine / "curated") and _keys(one / "curated") != _keys(two / "curated")
    assert (one / "curated/part-00000.parquet").read_bytes() == (again / "curated/part-00000.parquet").read_bytes()
    assert read_manifest(one)["redrawn"]["seed"] == 1 and read_manifest(one)["redrawn"]["from"] == str(mine)


def test_a_seeds_draw_is_read_as_it_is_on_a_rerun_and_drawn_again_when_a_shard_is_gone(mine, tmp_path):
    drawn = redraw_dataset(mine, tmp_path / "d", 3)
    stamp = (drawn / "manifest.json").stat().st_mtime_ns
    redraw_dataset(mine, drawn, 3)
    assert (drawn / "manifest.json").stat().st_mtime_ns == stamp  # resumed, not rewritten
    (drawn / "eval/val/part-00000.parquet").unlink()
    redraw_dataset(mine, drawn, 3)
    assert len(_keys(drawn / "eval/val")) == 60


def test_a_dataset_without_a_validation_split_is_named(mine, tmp_path):
    import shutil

    broken = tmp_path / "no-val"
    shutil.copytree(mine, broken)
    shutil.rmtree(broken / "eval/val")
    with pytest.raises(DataError, match=r"no-val/eval/val: bench.data_seeds"):
        redraw_dataset(broken, tmp_path / "out", 0)


def test_with_data_seeds_each_bench_seed_reads_its_own_data_and_without_it_every_seed_shares_one(mine, tmp_path):
    raw = {"data": {"root": str(mine)}, "artifacts": str(tmp_path / "a"), "metrics": str(tmp_path / "m")}
    shared = params_from_dict(raw)
    assert {run_params(shared, f"seed-{s}", s).data.root for s in (0, 1)} == {str(mine)}
    own = params_from_dict({**raw, "bench": {"data_seeds": True}})
    roots = [run_params(own, f"seed-{s}", s).data.root for s in (0, 1)]
    assert roots == [str(mine.parent / "mine-data-0"), str(mine.parent / "mine-data-1")]
    assert _keys(mine.parent / "mine-data-0" / "curated") != _keys(mine.parent / "mine-data-1" / "curated")


def test_a_splits_identity_is_read_from_its_manifest_and_a_drawn_split_has_another(mine, tmp_path):
    from winnow.datasets.contract import listed_split_hash

    drawn = redraw_dataset(mine, tmp_path / "d", 5)
    assert listed_split_hash(drawn / "pool") == listed_split_hash(mine / "pool")  # the same shards: a sequence replays
    assert listed_split_hash(drawn / "curated") != listed_split_hash(mine / "curated")
