"""Importers write users' shards in the data contract, and the stages run on what they write."""

import io
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import uniform_target
from PIL import Image

from winnow.datasets.contract import DataError, load_split, read_manifest
from winnow.importers.importing import import_source
from winnow.stages.paths import Paths

REPO = Path(__file__).resolve().parents[1]


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
    dest = import_source(
        "webdataset",
        _webdataset(tmp_path / "wds"),
        tmp_path / "out",
        class_names=["a", "b", "c"],
        curated_fraction=0.2,
        test_fraction=0.1,
    )
    manifest = read_manifest(dest)
    # 20 images; failed downloads have none
    assert manifest["counts"] == {"pool": 14, "curated": 3, "eval/val": 1, "eval/test": 2}
    pool = pq.read_table(dest / "pool")
    assert pool.column("id").to_pylist() == list(range(14))
    keys = (
        set(pool.column("source_key").to_pylist())
        | set(pq.read_table(dest / "curated").column("source_key").to_pylist())
        | set(pq.read_table(dest / "eval/val").column("source_key").to_pylist())
        | set(pq.read_table(dest / "eval/test").column("source_key").to_pylist())
    )
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
    everything = [pq.read_table(dest / s) for s in ("pool", "curated", "eval/val", "eval/test")]
    rows = [r for t in everything for r in t.to_pylist()]
    assert len(rows) == 15
    assert all(r["source_key"].split("/")[0] == ["ant", "cat", "zebra"][r["label"]] for r in rows)


def test_a_parquet_table_with_its_own_column_names_and_a_separate_curated_source(tmp_path):
    def table(n, offset):
        return pa.table(
            {
                "jpg": [_jpeg((i * 2, offset, 0)) for i in range(n)],  # each source its own images
                "y": pa.array([i % 2 for i in range(n)], pa.int32()),
                "alt": [f"photo {offset + i}" for i in range(n)],
            }
        )

    pq.write_table(table(30, 0), tmp_path / "noisy.parquet")
    pq.write_table(table(6, 100), tmp_path / "clean.parquet")
    dest = import_source(
        "parquet",
        tmp_path / "noisy.parquet",
        tmp_path / "out",
        curated_source=tmp_path / "clean.parquet",
        columns={"image_column": "jpg", "label_column": "y", "caption_column": "alt"},
        test_fraction=0.1,
    )
    counts = read_manifest(dest)["counts"]
    assert counts == {"pool": 27, "curated": 5, "eval/val": 1, "eval/test": 3}  # val: drawn from the curated source
    captions = [pq.read_table(dest / s).column("caption").to_pylist() for s in ("curated", "eval/val")]
    assert set(captions[0] + captions[1]) == {f"photo {100 + i}" for i in range(6)}


def test_a_wrong_image_column_or_a_label_beyond_the_class_names_is_named(tmp_path):
    pq.write_table(pa.table({"pixels": [b"x"], "label": [5]}), tmp_path / "t.parquet")
    with pytest.raises(DataError, match=r"t\.parquet: no column 'image'"):
        import_source("parquet", tmp_path / "t.parquet", tmp_path / "out")
    with pytest.raises(DataError, match="label 5 is outside the 2 class names"):
        import_source(
            "parquet",
            tmp_path / "t.parquet",
            tmp_path / "out2",
            columns={"image_column": "pixels"},
            class_names=["a", "b"],
            test_fraction=0,
            curated_fraction=0,
        )


@pytest.mark.e2e  # runs whole stages or other processes: the full tier
def test_the_stages_run_on_an_imported_dataset(tmp_path, monkeypatch):
    from winnow.config import params_from_dict
    from winnow.stages.data import data_stage
    from winnow.stages.evaluate import evaluate_stage
    from winnow.stages.reference import reference_stage
    from winnow.stages.score import score_stage
    from winnow.stages.summary import summary_stage
    from winnow.stages.train import train_stage

    rng = np.random.default_rng(0)
    for label, name in enumerate(("dark", "light")):
        (tmp_path / "tree" / name).mkdir(parents=True)
        for i in range(60):
            pixels = rng.integers(0, 100, (32, 32, 3)) + 150 * label
            Image.fromarray(pixels.astype(np.uint8)).save(tmp_path / "tree" / name / f"{i}.png")
    dest = import_source("imagefolder", tmp_path / "tree", tmp_path / "data", curated_fraction=0.3, test_fraction=0.2)
    monkeypatch.chdir(tmp_path)
    params = params_from_dict(
        {
            "data": {"root": str(dest)},
            "artifacts": str(tmp_path / "a"),
            "metrics": str(tmp_path / "m"),
            "reference": {"model": "cnn-nano", "steps": 20, "batch_size": 16, "warmup_steps": 2},
            "train": {
                "model": "cnn-nano",
                "steps": 20,
                "batch_size": 8,
                "warmup_steps": 2,
                "eval_every": 10,
                "policies": ["uniform", "learnability"],
            },
        }
    )
    assert not data_stage(params)["generated"]  # imported data is never overwritten by the generator
    reference_stage(params)
    assert score_stage(params)["num_examples"] == 60
    for policy in params.train.policies:
        train_stage(params, policy)
    evaluated = evaluate_stage(params)
    assert not [k for k in evaluated["learnability"] if k.endswith("_probe_accuracy")]  # imported with no transfer task
    summary = summary_stage(params)
    assert summary["target"] == pytest.approx(uniform_target(Paths.of(params).metrics, summary))
    assert summary["pool_noisy_label_fraction"] is None  # unknown for imported data, not zero


# ---------------------------------------------------------------- users' own data: every bad input is named, nothing is lost


def _parquet(path, n=12, **columns):
    """A Parquet table of n small JPEGs, labels 0/1 unless given, and any other columns."""
    table = {
        "image": [_jpeg((i * 20, 0, 0)) for i in range(n)],
        "label": pa.array([i % 2 for i in range(n)], pa.int32()),
        **columns,
    }
    pq.write_table(pa.table(table), path)
    return path


def _splits(dest):
    return {name: pq.read_table(dest / name) for name in ("pool", "curated", "eval/val", "eval/test") if (dest / name).is_dir()}


def _all_rows(dest):
    return [row for table in _splits(dest).values() for row in table.to_pylist()]


@pytest.mark.parametrize("cut", ["half", "member boundary"])
def test_a_truncated_tar_is_an_error_naming_it(tmp_path, cut):
    folder = _webdataset(tmp_path / "wds", shards=1, per_shard=10)
    tar_path = folder / "00000.tar"
    data = tar_path.read_bytes()
    with tarfile.open(tar_path) as archive:
        members = archive.getmembers()
    boundary = members[len(members) // 2].offset  # the header of a member half-way: tarfile reads the rest "cleanly"
    tar_path.write_bytes(data[: len(data) // 2] if cut == "half" else data[:boundary])
    with pytest.raises(DataError, match=r"00000\.tar: truncated"):
        import_source("webdataset", folder, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_tar_padded_after_its_end_of_archive_blocks_is_whole(tmp_path):
    folder = _webdataset(tmp_path / "wds", shards=1, per_shard=6)
    tar_path = folder / "00000.tar"
    with tarfile.open(tar_path) as archive:
        last = archive.getmembers()[-1]
    end = last.offset_data + -(-last.size // 512) * 512
    tar_path.write_bytes(tar_path.read_bytes()[: end + 1024])  # exactly the two zero blocks, without tarfile's record padding
    dest = import_source("webdataset", folder, tmp_path / "out", curated_fraction=0.2, test_fraction=0.2)
    assert sum(read_manifest(dest)["counts"].values()) == 6


def test_malformed_json_or_a_non_integer_cls_is_an_error_naming_tar_and_member(tmp_path):
    (tmp_path / "a").mkdir()
    with tarfile.open(tmp_path / "a" / "00000.tar", "w") as tar:
        _add(tar, "k1.jpg", _jpeg((0, 0, 0)))
        _add(tar, "k1.json", b'{"caption": "a cat", ')
    with pytest.raises(DataError, match=r"00000\.tar: member k1\.json is not valid JSON"):
        import_source("webdataset", tmp_path / "a", tmp_path / "out")
    (tmp_path / "b").mkdir()
    with tarfile.open(tmp_path / "b" / "00000.tar", "w") as tar:
        _add(tar, "k2.jpg", _jpeg((0, 0, 0)))
        _add(tar, "k2.cls", b"cat")
    with pytest.raises(DataError, match=r"00000\.tar: member k2\.cls holds 'cat', not an integer class index"):
        import_source("webdataset", tmp_path / "b", tmp_path / "out")


@pytest.mark.parametrize(
    "options, option",
    [
        ({"test_fraction": -0.1}, "--test-fraction"),
        ({"curated_fraction": 1.0}, "--curated-fraction"),
        ({"curated_fraction": 0.6, "test_fraction": 0.4}, r"--curated-fraction \+ --test-fraction"),
        ({"shard_size": 0}, "--shard-size"),
    ],
)
def test_fractions_and_the_shard_size_are_checked_before_anything_is_read(tmp_path, options, option):
    source = _parquet(tmp_path / "t.parquet")
    with pytest.raises(DataError, match=option):
        import_source("parquet", source, tmp_path / "out", **options)
    assert not (tmp_path / "out").exists()


def test_a_stray_label_is_an_error_not_a_hundred_classes(tmp_path):
    source = _parquet(tmp_path / "t.parquet", n=10, label=pa.array([0, 1, 2, 0, 1, 2, 0, 99, 1, 2], pa.int32()))
    with pytest.raises(
        DataError, match=r"t\.parquet/7: label 99: without --class-names the labels must be exactly 0\.\.3.*--class-names"
    ):
        import_source("parquet", source, tmp_path / "out")
    gap = _parquet(tmp_path / "gap.parquet", n=6, label=[1, 2, 3, 1, 2, 3])  # no class 0
    with pytest.raises(DataError, match=r"gap\.parquet/2: label 3.*missing \[0\]"):
        import_source("parquet", gap, tmp_path / "out")


def test_string_labels_become_classes_sorted_or_in_the_order_of_the_class_names(tmp_path):
    source = _parquet(tmp_path / "t.parquet", n=12, label=["dog", "cat", "emu"] * 4)
    dest = import_source("parquet", source, tmp_path / "out", curated_fraction=0.25, test_fraction=0.25)
    assert read_manifest(dest)["class_names"] == ["cat", "dog", "emu"]
    assert {(r["source_key"], r["label"]) for r in _all_rows(dest)} == {(f"t.parquet/{i}", [1, 0, 2][i % 3]) for i in range(12)}
    dest = import_source("parquet", source, tmp_path / "named", class_names=["emu", "dog", "cat", "yak"], test_fraction=0.25)
    assert {(r["source_key"], r["label"]) for r in _all_rows(dest)} == {(f"t.parquet/{i}", [1, 2, 0][i % 3]) for i in range(12)}
    with pytest.raises(DataError, match=r"t\.parquet/2: label 'emu' is not one of the class names \['cat', 'dog'\]"):
        import_source("parquet", source, tmp_path / "bad", class_names=["cat", "dog"])


def test_string_labels_in_webdataset_json_become_classes(tmp_path):
    (tmp_path / "wds").mkdir()
    with tarfile.open(tmp_path / "wds" / "00000.tar", "w") as tar:
        for i, name in enumerate(["owl", "bat", "owl", "bat", "owl", "bat"]):
            _add(tar, f"{i:03d}.jpg", _jpeg((i * 40, 0, 0)))
            _add(tar, f"{i:03d}.json", json.dumps({"label": name}).encode())
    dest = import_source("webdataset", tmp_path / "wds", tmp_path / "out", curated_fraction=0.2, test_fraction=0.2)
    assert read_manifest(dest)["class_names"] == ["bat", "owl"]
    assert {r["source_key"]: r["label"] for r in _all_rows(dest)} == {f"00000.tar/{i:03d}": [1, 0][i % 2] for i in range(6)}


def test_labels_mixing_indices_and_names_are_an_error_naming_both_examples(tmp_path):
    (tmp_path / "wds").mkdir()
    with tarfile.open(tmp_path / "wds" / "00000.tar", "w") as tar:  # a json label can be either; a Parquet column cannot
        for i, label in enumerate([0, 1, "cat", 1]):
            _add(tar, f"{i}.jpg", _jpeg((0, 0, 0)))
            _add(tar, f"{i}.json", json.dumps({"label": label}).encode())
    with pytest.raises(
        DataError, match=r"00000\.tar/0 has label 0 \(a class index\) but 00000\.tar/2 has 'cat' \(a class name\)"
    ):
        import_source("webdataset", tmp_path / "wds", tmp_path / "out")


@pytest.mark.parametrize(
    "labels, message",
    [
        ([0.0, 1.5, 1.0, 0.0], r"t\.parquet/1: label 1\.5 is neither a class index"),
        ([[0], [1], [1], [0]], r"t\.parquet/0: label \[0\] is neither a class index"),
        ([True, False, True, False], r"t\.parquet/0: label True is neither a class index"),
    ],
)
def test_a_label_that_is_neither_an_index_nor_a_name_is_an_error_naming_the_example(tmp_path, labels, message):
    pq.write_table(pa.table({"image": [_jpeg((0, 0, 0))] * 4, "label": labels}), tmp_path / "t.parquet")
    with pytest.raises(DataError, match=message):
        import_source("parquet", tmp_path / "t.parquet", tmp_path / "out")


def test_a_separate_test_source_is_the_test_set_and_the_manifest_says_where_each_split_came_from(tmp_path, caplog):
    pool = _parquet(tmp_path / "noisy.parquet", n=20)
    clean = _parquet(tmp_path / "clean.parquet", n=6, image=[_jpeg((0, 0, 40 + i * 20)) for i in range(6)])
    with caplog.at_level(logging.WARNING, logger="winnow"):
        dest = import_source("parquet", pool, tmp_path / "out", test_source=clean, curated_fraction=0.25)
    assert not [r for r in caplog.records if "eval/test" in r.getMessage()]
    assert pq.read_table(dest / "eval/test").column("source_key").to_pylist() == [f"clean.parquet/{i}" for i in range(6)]
    # the whole pool source is pool or curated
    assert read_manifest(dest)["counts"] == {"pool": 15, "curated": 4, "eval/val": 1, "eval/test": 6}
    source = read_manifest(dest)["source"]
    assert source["test"] == {"path": str(clean), "sampled": False}
    assert source["curated"] == {"path": str(pool), "sampled": True}
    assert source["kind"] == "parquet"


def test_a_separate_val_source_is_the_validation_set_and_no_curated_row_is_diverted(tmp_path, capsys):
    from winnow.cli import main

    pool = _parquet(tmp_path / "noisy.parquet", n=20)
    clean = _parquet(tmp_path / "clean.parquet", n=6, image=[_jpeg((0, 0, 40 + i * 20)) for i in range(6)])
    val = _parquet(tmp_path / "val.parquet", n=5, image=[_jpeg((0, 40 + i * 20, 0)) for i in range(5)])
    args = ["data", "import", "parquet", pool, tmp_path / "out", "--test", clean, "--val", val, "--curated-fraction", "0.25"]
    assert main(list(map(str, args))) == 0
    dest = tmp_path / "out"
    assert pq.read_table(dest / "eval/val").column("source_key").to_pylist() == [f"val.parquet/{i}" for i in range(5)]
    assert read_manifest(dest)["counts"] == {"pool": 15, "curated": 5, "eval/test": 6, "eval/val": 5}  # all 5 curated kept
    source = read_manifest(dest)["source"]
    assert source["val"] == {"path": str(val), "sampled": False} and source["val_fraction"] == 0.0


@pytest.mark.parametrize(
    "case, message",
    [
        ("pool", r"val\.parquet: 2 of 3 rows of the validation set \(--val\) are byte for byte images of the pool"),
        ("test", r"clean\.parquet: given as both --val and --test"),
        ("unlabelled", r"val\.parquet/0: has no label; every example of the validation set \(--val\) needs one"),
    ],
)
def test_a_wrong_val_source_is_an_error_naming_it_and_writes_nothing(tmp_path, case, message):
    pool = _parquet(tmp_path / "noisy.parquet", n=20)
    clean = _parquet(tmp_path / "clean.parquet", n=6, image=[_jpeg((0, 0, 40 + i * 20)) for i in range(6)])
    val = {
        "pool": lambda: _parquet(tmp_path / "val.parquet", n=3, image=[_jpeg((0, 0, 0)), _jpeg((20, 0, 0)), _jpeg((0, 9, 90))]),
        "test": lambda: clean,
        "unlabelled": lambda: _parquet(tmp_path / "val.parquet", n=3, label=pa.array([None, 1, 0], pa.int32())),
    }[case]()
    with pytest.raises(DataError, match=message):
        import_source("parquet", pool, tmp_path / "out", test_source=clean, val_source=val)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "given, message",
    [
        (
            ("--test", "b", "--val", "b-copy"),
            r"b-copy\.parquet: 5 of 5 rows of the validation set \(--val\) are byte for byte images of the test set "
            r"\(--test \S*b\.parquet\) \(first: b-copy\.parquet/0\)",
        ),
        (
            ("--curated", "a", "--test", "a-copy"),
            r"a-copy\.parquet: 5 of 5 rows of the test set \(--test\) are byte for byte images of the curated set "
            r"\(--curated \S*a\.parquet\)",
        ),
        (
            ("--curated", "a", "--test", "b", "--val", "a"),
            r"a\.parquet: 5 of 5 rows of the validation set \(--val\) are byte for byte images of the curated set",
        ),
    ],
    ids=["val copies test", "test copies curated", "val is the curated file"],
)
def test_held_out_sets_that_share_images_with_each_other_are_refused_naming_both_files(tmp_path, capsys, given, message):
    from winnow.cli import main

    pool = _parquet(tmp_path / "noisy.parquet", n=20)
    for name, shade in (("a", 40), ("b", 140)):
        source = _parquet(tmp_path / f"{name}.parquet", n=5, image=[_jpeg((0, shade + i * 20, 0)) for i in range(5)])
        shutil.copy(source, tmp_path / f"{name}-copy.parquet")
    args = [arg if arg.startswith("--") else str(tmp_path / f"{arg}.parquet") for arg in given]
    assert main(["data", "import", "parquet", str(pool), str(tmp_path / "out"), *args]) == 2
    err = capsys.readouterr().err
    assert re.search(message, err) and "--allow-overlap" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()
    assert main(["data", "import", "parquet", str(pool), str(tmp_path / "out"), *args, "--allow-overlap"]) == 0
    source = read_manifest(tmp_path / "out")["source"]
    assert source["allow_overlap"] and sum(source["overlaps"].values()) >= 5  # what the user let through, recorded


def test_a_test_set_sampled_from_the_pools_own_source_is_warned_about(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="winnow"):
        dest = import_source(
            "parquet",
            _parquet(tmp_path / "noisy.parquet", n=20),
            tmp_path / "out",
            curated_source=_parquet(tmp_path / "c.parquet", n=4, image=[_jpeg((0, 0, 40 + i * 20)) for i in range(4)]),
        )
    warning = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert "same (possibly noisy) source as the pool" in warning and "wrong labels" in warning and "--test" in warning
    assert read_manifest(dest)["source"]["test"] == {"path": str(tmp_path / "noisy.parquet"), "sampled": True}
    assert read_manifest(dest)["source"]["curated"] == {"path": str(tmp_path / "c.parquet"), "sampled": False}


def test_other_parquet_columns_are_carried_with_their_arrow_type(tmp_path):
    source = _parquet(
        tmp_path / "t.parquet",
        n=10,
        url=[f"http://x/{i}" for i in range(10)],
        score=pa.array([i / 10 for i in range(10)], pa.float32()),
        when=pa.array(range(10), pa.timestamp("s")),
        tags=pa.array([["a"] * (i % 3) for i in range(10)], pa.list_(pa.string())),
    )
    dest = import_source("parquet", source, tmp_path / "out", curated_fraction=0.2, test_fraction=0.2)
    for table in _splits(dest).values():
        assert table.schema.names == ["id", "image", "label", "caption", "source_key", "url", "score", "when", "tags"]
        assert [table.schema.field(n).type for n in ("url", "score", "when", "tags")] == [
            pq.read_schema(source).field(n).type for n in ("url", "score", "when", "tags")
        ]
        assert table.schema.field("score").type == pa.float32()
        assert table.column("id").to_pylist() == list(range(table.num_rows))
        for row in table.to_pylist():
            i = int(row["source_key"].split("/")[1])
            assert (row["url"], row["tags"]) == (f"http://x/{i}", ["a"] * (i % 3))


def test_webdataset_json_fields_become_columns_null_where_absent_and_text_where_mixed(tmp_path):
    (tmp_path / "wds").mkdir()
    fields = [
        {"url": "u0", "width": 40, "ok": True, "caption": "c0"},
        {"url": "u1", "width": 41.5, "mixed": 3},
        {"url": "u2", "mixed": "three", "exif": {"iso": 100}},
        {"url": "u3", "width": 42, "ok": False},
    ]
    with tarfile.open(tmp_path / "wds" / "00000.tar", "w") as tar:
        for i, f in enumerate(fields):
            _add(tar, f"{i}.jpg", _jpeg((0, 0, 0)))
            _add(tar, f"{i}.json", json.dumps(f).encode())
    dest = import_source("webdataset", tmp_path / "wds", tmp_path / "out", curated_fraction=0, test_fraction=0)
    pool = pq.read_table(dest / "pool")
    assert pool.schema.names == ["id", "image", "label", "caption", "source_key", "url", "width", "ok", "mixed", "exif"]
    assert [str(pool.schema.field(n).type) for n in ("url", "width", "ok", "mixed", "exif")] == [
        "string",
        "double",
        "bool",
        "string",
        "string",
    ]
    assert pool.select(["caption", "url", "width", "ok", "mixed", "exif"]).to_pylist() == [
        {"caption": "c0", "url": "u0", "width": 40.0, "ok": True, "mixed": None, "exif": None},
        {"caption": None, "url": "u1", "width": 41.5, "ok": None, "mixed": "3", "exif": None},
        {"caption": None, "url": "u2", "width": None, "ok": None, "mixed": "three", "exif": '{"iso": 100}'},
        {"caption": None, "url": "u3", "width": 42.0, "ok": False, "mixed": None, "exif": None},
    ]


def test_a_source_column_named_like_a_contract_column_is_carried_as_source_name(tmp_path):
    source = _parquet(tmp_path / "t.parquet", n=10, id=[f"sample-{i}" for i in range(10)], y=[i % 2 for i in range(10)])
    dest = import_source(
        "parquet", source, tmp_path / "out", columns={"label_column": "y"}, curated_fraction=0.2, test_fraction=0.2
    )
    pool = pq.read_table(dest / "pool")
    assert pool.column("id").to_pylist() == list(range(pool.num_rows))  # the contract's id: dense from 0
    assert [int(k.split("/")[1]) for k in pool.column("source_key").to_pylist()] == [
        int(s.split("-")[1]) for s in pool.column("source_id").to_pylist()
    ]
    assert "source_label" in pool.schema.names  # the unused 'label' column is carried, renamed
    assert read_manifest(dest)["source"]["renamed_columns"] == {str(source): {"id": "source_id", "label": "source_label"}}


def test_a_pathology_column_is_carried_for_the_report(tmp_path):
    kinds = ["clean", "noisy_label", "clean", "duplicate"] * 3
    dest = import_source(
        "parquet",
        _parquet(tmp_path / "t.parquet", n=12, pathology=kinds),
        tmp_path / "out",
        curated_fraction=0.25,
        test_fraction=0.25,
    )
    assert {r["source_key"]: r["pathology"] for r in _all_rows(dest)} == {f"t.parquet/{i}": kinds[i] for i in range(12)}
    from winnow.datasets.contract import value_counts

    assert sum(value_counts(dest / "pool", "pathology").values()) == 6


def test_a_noise_column_becomes_the_pathology_of_each_example(tmp_path):
    flags = [True, False, False] * 4
    source = _parquet(tmp_path / "t.parquet", n=12, wrong=flags, swapped=[1, 0, 0] * 4)
    dest = import_source("parquet", source, tmp_path / "out", noise_column="wrong", curated_fraction=0.25, test_fraction=0.25)
    assert {r["source_key"]: r["pathology"] for r in _all_rows(dest)} == {
        f"t.parquet/{i}": "noisy_label" if flags[i] else "clean" for i in range(12)
    }
    dest = import_source("parquet", source, tmp_path / "captions", noise_column="swapped=mismatched_caption", test_fraction=0.25)
    assert {r["pathology"] for r in _all_rows(dest)} == {"mismatched_caption", "clean"}
    with pytest.raises(DataError, match=r"t\.parquet: no column or json field 'missing' \(--noise-column\)"):
        import_source("parquet", source, tmp_path / "bad", noise_column="missing")
    bad = _parquet(tmp_path / "bad.parquet", n=4, wrong=[1, 0, 2, 0])
    with pytest.raises(DataError, match=r"bad\.parquet/2: --noise-column wrong is 2; it must be true/false"):
        import_source("parquet", bad, tmp_path / "bad", noise_column="wrong")


def test_a_noise_field_in_webdataset_json_becomes_the_pathology(tmp_path):
    (tmp_path / "wds").mkdir()
    with tarfile.open(tmp_path / "wds" / "00000.tar", "w") as tar:
        for i in range(6):
            _add(tar, f"{i}.jpg", _jpeg((i * 40, 0, 0)))
            _add(tar, f"{i}.txt", f"photo {i}".encode())
            _add(tar, f"{i}.json", json.dumps({"swapped": i % 3 == 0}).encode())
    dest = import_source(
        "webdataset",
        tmp_path / "wds",
        tmp_path / "out",
        noise_column="swapped=mismatched_caption",
        curated_fraction=0,
        test_fraction=0,
    )
    assert pq.read_table(dest / "pool").select(["swapped", "pathology"]).to_pylist() == [
        {"swapped": i % 3 == 0, "pathology": "mismatched_caption" if i % 3 == 0 else "clean"} for i in range(6)
    ]


def test_a_pathology_column_and_a_noise_column_together_are_an_error(tmp_path):
    source = _parquet(tmp_path / "t.parquet", n=4, pathology=["clean"] * 4, wrong=[True, False] * 2)
    with pytest.raises(DataError, match=r"t\.parquet: has a 'pathology' column and --noise-column wrong was given"):
        import_source("parquet", source, tmp_path / "out", noise_column="wrong")


def test_a_destination_holding_other_files_is_refused(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "thesis.tex").write_text("years of work")
    with pytest.raises(DataError, match=r"out: already holds files that `winnow data import` did not write"):
        import_source("parquet", _parquet(tmp_path / "t.parquet"), tmp_path / "out")
    assert (tmp_path / "out" / "thesis.tex").read_text() == "years of work"
    assert not (tmp_path / "out.importing").exists()


def test_a_reimport_replaces_the_previous_import_with_no_stale_shards(tmp_path):
    dest = tmp_path / "out"
    import_source(
        "parquet", _parquet(tmp_path / "big.parquet", n=40), dest, shard_size=4, curated_fraction=0.1, test_fraction=0.1
    )
    assert len(list((dest / "pool").glob("part-*.parquet"))) == 8
    import_source(
        "parquet", _parquet(tmp_path / "small.parquet", n=10), dest, shard_size=4, curated_fraction=0.2, test_fraction=0.2
    )
    assert sorted(p.name for p in (dest / "pool").glob("*")) == ["part-00000.parquet", "part-00001.parquet"]
    assert pq.read_table(dest / "pool").num_rows == read_manifest(dest)["counts"]["pool"] == 6
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.parquet", "out", "small.parquet"]  # nothing left beside it


def test_an_import_that_stops_half_way_leaves_no_folder_that_looks_complete(tmp_path, monkeypatch):
    from winnow.importers.writer import ShardWriter

    written = []

    def crash_after_one_shard(self, n, end_of_shard):
        if written:
            raise KeyboardInterrupt
        written.append(self.folder)
        real_write(self, n, end_of_shard)

    real_write = ShardWriter._write
    monkeypatch.setattr(ShardWriter, "_write", crash_after_one_shard)
    source = _parquet(tmp_path / "t.parquet")
    with pytest.raises(KeyboardInterrupt):
        import_source("parquet", source, tmp_path / "out", shard_size=2)
    assert written and not (tmp_path / "out").exists() and not (tmp_path / "out.importing" / "manifest.json").exists()
    monkeypatch.setattr(ShardWriter, "_write", real_write)
    dest = import_source("parquet", source, tmp_path / "out")  # a half-written folder is cleared, not refused
    assert read_manifest(dest)["counts"]["pool"] > 0 and not (tmp_path / "out.importing").exists()


def test_null_images_and_empty_captions_are_kept_but_an_image_column_of_text_is_an_error(tmp_path):
    images = [_jpeg((0, 0, 0)), None, _jpeg((9, 9, 9)), b""]
    pq.write_table(pa.table({"image": pa.array(images, pa.binary()), "caption": ["a", "", None, "d"]}), tmp_path / "t.parquet")
    dest = import_source("parquet", tmp_path / "t.parquet", tmp_path / "out", curated_fraction=0, test_fraction=0)
    assert pq.read_table(dest / "pool").select(["image", "caption"]).to_pylist() == [
        {"image": i, "caption": c} for i, c in zip(images, ["a", "", None, "d"])
    ]
    pq.write_table(pa.table({"image": [None, "photos/1.jpg"], "label": [0, 1]}), tmp_path / "paths.parquet")
    with pytest.raises(
        DataError, match=r"paths\.parquet: row 1: image column 'image' holds str 'photos/1\.jpg', not encoded image bytes"
    ):
        import_source("parquet", tmp_path / "paths.parquet", tmp_path / "out2")


def _cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "winnow.cli", "data", "import", *map(str, args)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        cwd=REPO,
        timeout=300,
    )


@pytest.mark.slow  # kept out of the default suite to hold it within ten minutes; -m slow runs it
@pytest.mark.e2e  # runs whole stages or other processes: the full tier
def test_the_cli_names_a_truncated_tar_and_exits_2_without_a_traceback(tmp_path):
    folder = _webdataset(tmp_path / "wds", shards=2, per_shard=10)
    data = (folder / "00001.tar").read_bytes()
    (folder / "00001.tar").write_bytes(data[: len(data) // 2])
    result = _cli("webdataset", folder, tmp_path / "out")
    assert result.returncode == 2, result.stderr
    assert f"winnow: error: {folder / '00001.tar'}: truncated" in result.stderr and "re-download" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "out").exists()
    result = _cli("parquet", _parquet(tmp_path / "t.parquet"), tmp_path / "out", "--test-fraction", "-0.1")
    assert result.returncode == 2 and "winnow: error: --test-fraction must be in [0, 1), got -0.1" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow  # kept out of the default suite to hold it within ten minutes; -m slow runs it
@pytest.mark.e2e  # runs whole stages or other processes: the full tier
def test_the_cli_shows_the_warning_about_a_test_set_from_the_pools_source(tmp_path):
    result = _cli(
        "parquet", _parquet(tmp_path / "t.parquet", n=20), tmp_path / "out", "--noise-column", "wrong=mismatched_caption"
    )
    assert result.returncode == 2 and "no column or json field 'wrong'" in result.stderr
    result = _cli("parquet", tmp_path / "t.parquet", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    assert (
        "WARNING" in result.stderr
        and "same (possibly noisy) source as the pool" in result.stderr
        and "Traceback" not in result.stderr
    )


def test_a_caption_that_is_not_text_is_an_error_and_leaves_nothing_half_written(tmp_path):
    source = _parquet(tmp_path / "t.parquet", n=4, caption=[1, 2, 3, 4])
    with pytest.raises(DataError, match=r"t\.parquet/\d: caption \d is not text"):
        import_source("parquet", source, tmp_path / "out", curated_fraction=0, test_fraction=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.parquet"]


def _malformed_json(tmp_path):
    (tmp_path / "a").mkdir()
    with tarfile.open(tmp_path / "a" / "00000.tar", "w") as tar:
        _add(tar, "k1.jpg", _jpeg((0, 0, 0)))
        _add(tar, "k1.json", b'{"caption": "a cat", ')
    return ["webdataset", tmp_path / "a"], r"00000\.tar: member k1\.json is not valid JSON"


@pytest.mark.parametrize(
    "case",
    [
        lambda p: (
            ["parquet", _parquet(p / "t.parquet", n=10, label=pa.array([0, 1, 2, 0, 1, 2, 0, 99, 1, 2], pa.int32()))],
            r"label 99",
        ),
        lambda p: (["parquet", _parquet(p / "t.parquet"), "--shard-size", "0"], r"--shard-size"),
        lambda p: (["parquet", _parquet(p / "t.parquet"), "--test-fraction", "-0.05"], r"--test-fraction must be in \[0, 1\)"),
        _malformed_json,
    ],
    ids=["stray label", "shard size 0", "negative fraction", "malformed json"],
)
def test_the_cli_names_each_bad_import_and_writes_nothing(tmp_path, capsys, case):
    from winnow.cli import main

    args, message = case(tmp_path)
    assert main(["data", "import", *map(str, args[:2]), str(tmp_path / "out"), *map(str, args[2:])]) == 2
    err = capsys.readouterr().err
    assert re.search(message, err) and err.startswith("winnow: error: ") and "Traceback" not in err
    assert not (tmp_path / "out").exists()


STREAMING = """
import os, sys
from winnow.importers.writer import write_dataset

def peak_mib():  # this process's peak resident set (VmHWM), MiB
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:")) / 1024

def pool(n, size):  # a generator: the source exists only as it is read
    for i in range(n):
        yield {"image": os.urandom(size), "label": i % 2, "caption": None, "source_key": str(i)}

held = [{"image": bytes([i]), "label": i % 2, "caption": None, "source_key": f"h{i}"} for i in range(8)]
before = peak_mib()
write_dataset(pool(3200, 256 * 1024), sys.argv[1], ["a", "b"], curated=held[:4], test=held[4:])
print(before, peak_mib())
"""


@pytest.mark.e2e  # runs whole stages or other processes: the full tier
def test_a_pool_far_bigger_than_the_memory_allowed_streams_through_the_import(tmp_path):
    """800 MiB of images from a generator, imported in a fresh process whose peak memory may grow by at most
    300 MiB: the rows go from the source to their shard and are let go, never gathered in a list, and the one
    800 MiB shard is written in row groups. (What it holds: one read batch and one row group, up to 32 MiB of
    images each, and Arrow's and Parquet's buffers to write them.)"""
    done = subprocess.run(
        [sys.executable, "-c", STREAMING, str(tmp_path / "big")],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    before, after = map(float, done.stdout.split())
    assert after - before < 300, f"peak memory grew by {after - before:.0f} MiB importing 800 MiB"
    manifest = read_manifest(tmp_path / "big")
    assert manifest["counts"] == {"pool": 3200, "curated": 3, "eval/val": 1, "eval/test": 4}
    assert pq.ParquetFile(tmp_path / "big" / "pool" / "part-00000.parquet").metadata.num_row_groups >= 20
    assert pq.read_table(tmp_path / "big" / "pool", columns=["id"]).column("id").to_pylist() == list(range(3200))


def test_a_generator_that_would_have_to_be_read_twice_is_an_error_not_a_silent_empty_split(tmp_path):
    from winnow.importers.writer import write_dataset

    rows = ({"image": b"x", "label": 0, "caption": None, "source_key": str(i)} for i in range(10))
    with pytest.raises(DataError, match="a generator can be read only once"):
        write_dataset(rows, tmp_path / "out", ["a"], curated_fraction=0.2)
    assert not (tmp_path / "out").exists()


def test_an_eval_source_becomes_a_transfer_task_with_its_own_classes_and_probe_folds(tmp_path):
    source = _parquet(tmp_path / "t.parquet", n=20)
    shapes = [_jpeg((0, 0, 10 + i * 20)) for i in range(12)]  # images of its own: a transfer set shares none with the pool
    other = _parquet(tmp_path / "other.parquet", n=12, label=pa.array(["z", "x", "y"] * 4), image=shapes)
    dest = import_source("parquet", source, tmp_path / "out", evals=[f"shapes={other}"])
    manifest = read_manifest(dest)
    assert manifest["tasks"]["shapes"]["class_names"] == ["x", "y", "z"] and manifest["class_names"] == ["class 0", "class 1"]
    assert manifest["counts"]["eval/shapes"] == 12 and manifest["source"]["evals"] == {"shapes": str(other)}
    task = pq.read_table(dest / "eval/shapes")
    assert task.column("fold").to_pylist().count("train") == 8  # a seeded 2/3 for the probe to fit, 1/3 to test
    assert task.column("label").to_pylist() == [2, 0, 1] * 4


@pytest.mark.parametrize(
    "given, message",
    [
        ("Shapes={other}", "NAME in lower-case letters"),
        ("test={other}", "is eval/test"),
        ("shapes=nowhere.parquet", r"nowhere\.parquet: no such file"),
        ("shapes={unlabelled}", "every example of transfer task 'shapes' needs one"),
    ],
)
def test_a_wrong_eval_task_is_an_error_naming_it(tmp_path, given, message):
    source = _parquet(tmp_path / "t.parquet", n=20)
    other = _parquet(tmp_path / "other.parquet", n=6)
    unlabelled = _parquet(tmp_path / "unlabelled.parquet", n=6, label=pa.array([0, None, 1, 0, 1, 0], pa.int32()))
    with pytest.raises(DataError, match=message):
        import_source("parquet", source, tmp_path / "out", evals=[given.format(other=other, unlabelled=unlabelled)])
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("kind", ["parquet", "webdataset"])
def test_metadata_stays_with_its_row_across_batches_shards_and_files_of_other_columns(tmp_path, monkeypatch, kind):
    from winnow.importers.source import BATCH

    monkeypatch.setattr(BATCH, "rows", 3)  # many batches, shards and files, each boundary in a new place
    (tmp_path / "src").mkdir()
    for f, n in (("a", 11), ("b", 7)):
        fields = [{"url": f"{f}-{i}", **({"score": i / 2} if f == "a" else {"note": f"n{i}"})} for i in range(n)]
        if kind == "parquet":
            columns = {k: [row[k] for row in fields] for k in fields[0]}
            _parquet(tmp_path / "src" / f"{f}.parquet", n=n, label=pa.array(["x", "y"] * (n // 2) + ["x"] * (n % 2)), **columns)
            continue
        with tarfile.open(tmp_path / "src" / f"{f}.tar", "w") as tar:
            for i, row in enumerate(fields):
                _add(tar, f"{i:04d}.jpg", _jpeg((i, 0, 0)))
                _add(tar, f"{i:04d}.json", json.dumps({**row, "label": "xy"[i % 2]}).encode())
    dest = import_source(kind, tmp_path / "src", tmp_path / "out", shard_size=4, curated_fraction=0.2, test_fraction=0.2)
    rows = _all_rows(dest)
    assert len(rows) == 18
    for row in rows:  # the metadata of a row is that row's: its url names the same file and row as its source_key
        name, _, index = row["source_key"].partition("/")
        f, i = name[0], int(index.split(".")[0])
        assert row["url"] == f"{f}-{i}" and row["label"] == i % 2
        assert (row["score"] == i / 2 if f == "a" else row["score"] is None) and (
            row["note"] == f"n{i}" if f == "b" else row["note"] is None
        )
    assert pq.read_schema(next((dest / "pool").glob("*.parquet"))).field("score").type == pa.float64()


@pytest.mark.parametrize("held_out", ["--test", "--curated"])
def test_a_held_out_set_that_is_the_pool_itself_or_a_copy_of_it_is_refused(tmp_path, capsys, held_out):
    """By content, not by name: the pool's own file, or a byte-identical copy under another name, is no held-out set."""
    from winnow.cli import main

    pool = _parquet(tmp_path / "pool.parquet", n=20)
    copy = tmp_path / "copy.parquet"
    copy.write_bytes(pool.read_bytes())
    for given in (pool, copy):
        assert main(["data", "import", "parquet", str(pool), str(tmp_path / "out"), held_out, str(given)]) == 2
        said = capsys.readouterr().err
        expected = rf"winnow: error: {re.escape(str(given))}: 1[89] of 20 rows of the \w+ set \({held_out}\) are byte"
        assert re.search(expected, said)
        assert not (tmp_path / "out").exists() and not (tmp_path / "out.importing").exists()  # nothing written
    other = _parquet(tmp_path / "other.parquet", n=6, image=[_jpeg((0, 10 + i * 30, 0)) for i in range(6)])
    assert main(["data", "import", "parquet", str(pool), str(tmp_path / "out"), held_out, str(other)]) == 0


def test_a_reimport_killed_during_its_final_swap_leaves_a_whole_dataset_and_the_next_import_succeeds(tmp_path, monkeypatch):
    """Issue 26: a kill while the previous import was being deleted in place left DEST half-deleted, and the next
    import refused it as files winnow did not write. Now the old dataset is renamed aside first."""
    import shutil

    from winnow.cli import main

    source = _parquet(tmp_path / "t.parquet", n=20)
    dest = tmp_path / "out"
    assert main(["data", "import", "parquet", str(source), str(dest)]) == 0
    real_rmtree = shutil.rmtree

    def killed_half_way(path, *args, **kwargs):  # deletes one file of the old dataset, then the process dies
        if Path(path).name in ("out", "out.replaced") and Path(path).is_dir():
            next(p for p in Path(path).rglob("*") if p.is_file()).unlink()
            raise KeyboardInterrupt
        return real_rmtree(path, *args, **kwargs)

    monkeypatch.setattr(shutil, "rmtree", killed_half_way)
    with pytest.raises(KeyboardInterrupt):
        main(["data", "import", "parquet", str(source), str(dest), "--seed", "1"])
    monkeypatch.setattr(shutil, "rmtree", real_rmtree)
    assert read_manifest(dest)["source"]["seed"] == 1  # whole: the new import is in place
    assert main(["data", "import", "parquet", str(source), str(dest), "--seed", "2"]) == 0  # and can be replaced again
    assert read_manifest(dest)["source"]["seed"] == 2 and not (tmp_path / "out.replaced").exists()


def test_the_validation_split_is_held_out_of_the_curated_rows_never_the_pool(tmp_path):
    """eval/val, which every curve and crossing reads, is a seeded share of the curated rows: clean like them, and
    apart from both the curated set the reference learns from and the pool (the test set is read once, at the end)."""
    pool = _parquet(tmp_path / "noisy.parquet", n=40)
    clean = _parquet(tmp_path / "clean.parquet", n=60, image=[_jpeg((0, 2 * i, 40)) for i in range(60)])
    dest = import_source("parquet", pool, tmp_path / "out", curated_source=clean, val_fraction=0.25)
    keys = {s: set(pq.read_table(dest / s).column("source_key").to_pylist()) for s in ("pool", "curated", "eval/val")}
    assert keys["eval/val"] and all(k.startswith("clean.parquet/") for k in keys["eval/val"])
    assert not keys["eval/val"] & keys["curated"]
    assert keys["eval/val"] | keys["curated"] == {f"clean.parquet/{i}" for i in range(60)}  # nothing lost
    assert 5 <= len(keys["eval/val"]) <= 25  # about a quarter
    assert read_manifest(dest)["source"]["val_fraction"] == 0.25
    with pytest.raises(DataError, match="--val-fraction"):
        import_source("parquet", pool, tmp_path / "bad", curated_source=clean, val_fraction=1.0)
