"""Importers write users' shards in the data contract, and the stages run on what they write."""

import io
import json
import tarfile

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from winnow.data import DataError, load_split, read_manifest
from winnow.importers import import_source


def _jpeg(colour, size=(40, 30)):
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="JPEG")
    return buf.getvalue()


def _add(tar, name, data: bytes):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _webdataset(folder, shards=2, per_shard=10, with_cls=True):
    """Tars as img2dataset writes them: 000000123.jpg + .txt + .json, and a json-only key for a failed download."""
    folder.mkdir(parents=True)
    for shard in range(shards):
        with tarfile.open(folder / f"{shard:05d}.tar", "w") as tar:
            for i in range(per_shard):
                key = f"{shard:04d}{i:05d}"
                label = i % 3
                _add(tar, f"{key}.jpg", _jpeg((80 * label, 0, 0)))
                _add(tar, f"{key}.txt", f"a picture of thing {label}".encode())
                _add(tar, f"{key}.json", json.dumps({"key": key, "status": "success", "caption": f"thing {label}"}).encode())
                if with_cls:
                    _add(tar, f"{key}.cls", str(label).encode())
            _add(tar, f"{shard:04d}99999.json", json.dumps({"status": "failed_to_download"}).encode())
    return folder


def test_webdataset_shards_become_pool_curated_and_test_with_nothing_lost(tmp_path):
    dest = import_source("webdataset", _webdataset(tmp_path / "wds"), tmp_path / "out", class_names=["a", "b", "c"],
                         curated_fraction=0.2, test_fraction=0.1)
    manifest = read_manifest(dest)
    assert manifest["counts"] == {"pool": 14, "curated": 4, "eval/test": 2}  # 20 images; failed downloads have none
    pool = pq.read_table(dest / "pool")
    assert pool.column("id").to_pylist() == list(range(14))
    keys = set(pool.column("source_key").to_pylist()) | set(pq.read_table(dest / "curated").column("source_key").to_pylist()) \
        | set(pq.read_table(dest / "eval/test").column("source_key").to_pylist())
    assert len(keys) == 20  # disjoint, complete
    row = pool.slice(0, 1).to_pylist()[0]
    assert row["caption"].startswith("a picture of thing") and row["caption"].endswith(str(row["label"]))
    split = load_split(dest / "pool", 32, 3)
    assert split.images.shape == (14, 3, 32, 32)  # resized from 40x30 on load


def test_an_imagefolder_tree_is_labelled_by_its_sorted_class_folders(tmp_path):
    for name, colour in (("zebra", (255, 255, 255)), ("ant", (0, 0, 0)), ("cat", (255, 0, 0))):
        (tmp_path / "tree" / name).mkdir(parents=True)
        for i in range(5):
            Image.new("RGB", (32, 32), colour).save(tmp_path / "tree" / name / f"{i}.png")
    (tmp_path / "tree" / "ant" / "notes.txt").write_text("not an image")
    dest = import_source("imagefolder", tmp_path / "tree", tmp_path / "out", curated_fraction=0.2, test_fraction=0.2)
    assert read_manifest(dest)["class_names"] == ["ant", "cat", "zebra"]
    everything = [pq.read_table(dest / s) for s in ("pool", "curated", "eval/test")]
    rows = [r for t in everything for r in t.to_pylist()]
    assert len(rows) == 15
    assert all(r["source_key"].split("/")[0] == ["ant", "cat", "zebra"][r["label"]] for r in rows)


def test_a_parquet_table_with_its_own_column_names_and_a_separate_curated_source(tmp_path):
    def table(n, offset):
        return pa.table({"jpg": [_jpeg((i * 10, 0, 0)) for i in range(n)], "y": pa.array([i % 2 for i in range(n)], pa.int32()),
                         "alt": [f"photo {offset + i}" for i in range(n)]})

    pq.write_table(table(30, 0), tmp_path / "noisy.parquet")
    pq.write_table(table(6, 100), tmp_path / "clean.parquet")
    dest = import_source("parquet", tmp_path / "noisy.parquet", tmp_path / "out", curated_source=tmp_path / "clean.parquet",
                         columns={"image_column": "jpg", "label_column": "y", "caption_column": "alt"}, test_fraction=0.1)
    counts = read_manifest(dest)["counts"]
    assert counts == {"pool": 27, "curated": 6, "eval/test": 3}
    assert set(pq.read_table(dest / "curated").column("caption").to_pylist()) == {f"photo {100 + i}" for i in range(6)}


def test_a_wrong_image_column_or_a_label_beyond_the_class_names_is_named(tmp_path):
    pq.write_table(pa.table({"pixels": [b"x"], "label": [5]}), tmp_path / "t.parquet")
    with pytest.raises(DataError, match=r"t\.parquet: no column 'image'"):
        import_source("parquet", tmp_path / "t.parquet", tmp_path / "out")
    with pytest.raises(DataError, match="label 5 is outside the 2 class names"):
        import_source("parquet", tmp_path / "t.parquet", tmp_path / "out2", columns={"image_column": "pixels"},
                      class_names=["a", "b"], test_fraction=0, curated_fraction=0)


def test_the_stages_run_on_an_imported_dataset(tmp_path, monkeypatch):
    from winnow import pipeline
    from winnow.config import params_from_dict

    rng = np.random.default_rng(0)
    for label, name in enumerate(("dark", "light")):
        (tmp_path / "tree" / name).mkdir(parents=True)
        for i in range(60):
            pixels = rng.integers(0, 100, (32, 32, 3)) + 150 * label
            Image.fromarray(pixels.astype(np.uint8)).save(tmp_path / "tree" / name / f"{i}.png")
    dest = import_source("imagefolder", tmp_path / "tree", tmp_path / "data", curated_fraction=0.3, test_fraction=0.2)
    monkeypatch.chdir(tmp_path)
    params = params_from_dict({"data": {"root": str(dest)}, "artifacts": str(tmp_path / "a"), "metrics": str(tmp_path / "m"),
                               "reference": {"model": "cnn-nano", "steps": 20, "batch_size": 16, "warmup_steps": 2},
                               "train": {"model": "cnn-nano", "steps": 20, "batch_size": 8, "warmup_steps": 2, "eval_every": 10,
                                         "policies": ["uniform", "learnability"]}})
    assert not pipeline.data_stage(params)["generated"]  # imported data is never overwritten by the generator
    pipeline.reference_stage(params)
    assert pipeline.score_stage(params)["num_examples"] == 60
    for policy in params.train.policies:
        pipeline.train_stage(params, policy)
    evaluated = pipeline.evaluate_stage(params)
    assert evaluated["learnability"]["texture_probe_accuracy"] is None  # no transfer task in imported data
    summary = pipeline.summary_stage(params)
    assert summary["target"] == summary["policies"]["uniform"]["final_accuracy"]
    assert summary["pool_noisy_label_fraction"] is None  # unknown for imported data, not zero
