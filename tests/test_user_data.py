"""A user's own data through the user's entry points: `winnow data import`, then `winnow pipeline`
(CLI and flow), both objectives. And every bad input or fault they may hit is an error naming the
file, row or key, never a traceback, a stale result or their data overwritten."""

import errno
import io
import json
import os
import re
import struct
import zlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from tasks import launch
from winnow.cli import main
from winnow.config import load_params
from winnow.datasets.contract import read_manifest
from winnow.datasets.digests import file_sha256
from winnow.stages.paths import Paths
from winnow.stages.reference import reference_stage

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.e2e  # through the entry points a user runs (Prefect, the CLI, DVC, torchrun): the full tier

CLASSES = ("red", "green", "blue")


def _png(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def _bomb() -> bytes:
    """A PNG whose header claims 20000 x 10000 pixels: PIL refuses it as a decompression bomb."""

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 20000, 10000, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def _table(n: int, rng, noisy: float = 0.0) -> pa.Table:
    """Colour-coded images with string labels, captions, a wrong-label flag (noisy of them) and a metadata column."""
    labels = rng.integers(0, 3, n)
    images, shown, flags = [], [], []
    for label in labels:
        pixels = rng.integers(0, 60, (24, 24, 3)).astype(np.uint8)
        pixels[..., label] += 150
        images.append(_png(pixels))
        wrong = rng.random() < noisy
        shown.append(CLASSES[(label + 1) % 3] if wrong else CLASSES[label])
        flags.append(bool(wrong))
    return pa.table(
        {
            "jpg": images,
            "name": shown,
            "alt": [f"a photo of something {c}" for c in np.array(CLASSES)[labels]],
            "is_wrong": flags,
            "url": [f"https://example.com/{i}.png" for i in range(n)],
        }
    )


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    root = tmp_path_factory.mktemp("sources")
    rng = np.random.default_rng(0)
    pool = _table(160, rng, noisy=0.3)
    sixteen_bit = io.BytesIO()
    Image.fromarray(np.full((24, 24), 30000, np.uint16)).save(sixteen_bit, format="PNG")
    extra = pa.table(
        {
            "jpg": [_bomb(), sixteen_bit.getvalue()],
            "name": ["red", "green"],
            "alt": ["huge", "deep"],
            "is_wrong": [False, False],
            "url": ["b", "c"],
        }
    )
    pq.write_table(pa.concat_tables([pool, extra]), root / "noisy.parquet")
    pq.write_table(_table(60, rng), root / "clean.parquet")
    pq.write_table(_table(45, rng), root / "test.parquet")
    shade = _table(30, rng)  # a transfer task with classes of its own: is the image dark or light?
    dark = [bool(i % 2) for i in range(30)]
    images = [
        _png(np.asarray(Image.open(io.BytesIO(b))) // (4 if d else 1)) for b, d in zip(shade.column("jpg").to_pylist(), dark)
    ]
    shade = shade.set_column(0, "jpg", pa.array(images, pa.binary())).set_column(
        1, "name", pa.array(["dark" if d else "light" for d in dark])
    )
    pq.write_table(shade, root / "shade.parquet")
    return root


def _import(sources: Path, dest: Path) -> None:
    code = main(
        [
            "data",
            "import",
            "parquet",
            str(sources / "noisy.parquet"),
            str(dest),
            "--curated",
            str(sources / "clean.parquet"),
            "--test",
            str(sources / "test.parquet"),
            "--image-column",
            "jpg",
            "--label-column",
            "name",
            "--caption-column",
            "alt",
            "--noise-column",
            "is_wrong",
            "--class-names",
            ",".join(CLASSES),
            "--shard-size",
            "100",
            "--eval",
            f"shade={sources / 'shade.parquet'}",
        ]
    )
    assert code == 0


@pytest.mark.parametrize("objective", ["classification", pytest.param("contrastive", marks=pytest.mark.slow)])
def test_an_imported_parquet_dataset_with_its_own_test_set_runs_through_winnow_pipeline(
    prefect_server, tiny, sources, capsys, objective
):
    mine = tiny.parent / "mine"
    _import(sources, mine)
    # the classifier's arms train two at once, each in a process of its own (train.parallel_arms); CLIP's one by one
    arms = ["--set", f"train.parallel_arms={2 if objective == 'classification' else 1}"]
    if objective == "classification":  # every default arm, on a pool three times the shuffle buffer: each streams
        buffer = read_manifest(mine)["counts"]["pool"] // 3
        arms += ["--set", f"train.shuffle_buffer={buffer}", "--set", "train.batch_size=16"]
        arms += ["--set", f"train.policies=[{','.join(load_params(REPO / 'params.yaml').train.policies)}]"]
    launch._SLOTS.clear()  # the count of arms at once starts from this run
    assert main(["pipeline", "--params", str(tiny), "--set", f"data.root={mine}", *arms, "--objective", objective]) == 0
    assert "pipeline finished" in capsys.readouterr().out
    params = load_params(tiny, [f"data.root={mine}", f"objective={objective}", *arms[1::2]])
    paths = Paths.of(params)
    summary = json.loads((paths.metrics / "summary.json").read_text())
    if objective == "classification":
        assert launch.slots(2).most_at_once == 2
        for policy in params.train.policies:  # every arm that reads the pool streamed it (curated_only never reads it)
            assert bool(json.loads(paths.train_record(policy).read_text()).get("pool_streamed")) == (policy != "curated_only")
        # one arm trained again alone, here, as `dvc repro` trains it: on the same share of the threads, the same numbers,
        # its streamed pool decoded by two worker processes this time (data.workers: the same pixels, rows and skips)
        trained = paths.train_record("learnability").read_text(), paths.curve("learnability").read_text()
        weights = torch.load(paths.learner("learnability"), weights_only=False)["model"]
        for output in (paths.learner("learnability"), paths.train_record("learnability"), paths.curve("learnability")):
            output.unlink()
        workers = ["--set", "data.workers=2"]
        assert (
            main(["train", "--policy", "learnability", "--params", str(tiny), "--set", f"data.root={mine}", *arms, *workers]) == 0
        )
        alone = json.loads(paths.train_record("learnability").read_text())
        assert alone["pool_skipped"] == json.loads(trained[0])["pool_skipped"]  # the decompression bomb among them
        assert alone["final_metric"] == json.loads(trained[0])["final_metric"]
        assert paths.curve("learnability").read_text() == trained[1]
        again = torch.load(paths.learner("learnability"), weights_only=False)["model"]
        assert all(torch.equal(again[name], weights[name]) for name in weights)  # bit for bit
    assert paths.metrics == tiny.parent / "metrics" / "mine" / objective  # under the dataset's own name
    assert set(summary["policies"]) == set(params.train.policies) and summary["target"] > 0
    if objective == "classification":
        assert 0.15 < summary["pool_noisy_label_fraction"] < 0.45  # from the user's own noise flag
    assert paths.report.exists() and (paths.plots / "accuracy.png").exists()
    score = json.loads((paths.metrics / "score.json").read_text())
    assert score["unscorable"] >= 1  # the decompression bomb: skipped and counted, not a crash
    evaluated = json.loads((paths.metrics / "evaluate.json").read_text())
    for model in ("reference", *params.train.policies):  # the user's own transfer task, by probe (and zero-shot for CLIP)
        assert 0 <= evaluated[model]["shade_probe_accuracy"] <= 1 and "texture_probe_accuracy" not in evaluated[model]
        if objective == "contrastive":
            assert 0 <= evaluated[model]["shade_zero_shot_accuracy"] <= 1
    assert set(summary["policies"]["uniform"]["probe_accuracy"]) == {"shade"}
    assert "shade probe" in paths.report.read_text()
    # the pipeline curated the user's pool too: a dataset of its own, which plain uniform training reads
    kept = np.load(paths.curated / "kept_ids.npy")
    assert "What curation kept" in paths.report.read_text() and len(kept) == summary["curate"]["kept_rows"]
    rule = "cleanlab" if objective == "classification" else "clip_score"
    assert (
        main(
            [
                "curate",
                "--params",
                str(tiny),
                "--set",
                f"data.root={mine}",
                "--set",
                f"curate.rule={rule}",
                "--objective",
                objective,
            ]
        )
        == 0
    )
    assert f"--set data.root={paths.curated}" in capsys.readouterr().out
    assert read_manifest(paths.curated)["curation"]["rule"] == rule
    sets = ["--set", f"data.root={paths.curated}", "--objective", objective]
    assert main(["train", "--policy", "uniform", "--params", str(tiny), *sets]) == 0
    curated = Paths.of(load_params(tiny, [f"data.root={paths.curated}", f"objective={objective}"]))
    trained = json.loads((curated.metrics / "train" / "uniform.json").read_text())
    assert trained["pool_size"] + trained["pool_skipped"] == len(np.load(paths.curated / "kept_ids.npy"))


@pytest.mark.slow  # kept out of the default suite to hold it within ten minutes; -m slow runs it
def test_jest_with_low_resolution_scorers_runs_through_winnow_pipeline_on_imported_data(prefect_server, tiny, sources, capsys):
    """train.selection: jest on a user's image-text pairs, the reference and the actor at 16 px, the learner at 32."""
    mine = tiny.parent / "mine"
    _import(sources, mine)
    jest = ["train.selection=jest", "train.keep_fraction=0.25", "train.score_resolution=16", "score.resolution=16"]
    sets = [arg for setting in [f"data.root={mine}", *jest] for arg in ("--set", setting)]
    assert main(["pipeline", "--params", str(tiny), *sets, "--objective", "contrastive"]) == 0
    params = load_params(tiny, [f"data.root={mine}", "objective=contrastive", *jest])
    paths = Paths.of(params)
    summary = json.loads((paths.metrics / "summary.json").read_text())
    assert set(summary["policies"]) == set(params.train.policies) and summary["target"] > 0
    learnability = json.loads((paths.metrics / "train" / "learnability.json").read_text())
    assert learnability["selection"] == "jest" and learnability["actor_resolution"] == 16
    assert learnability["super_batch_size"] == 4 * learnability["batch_size"]
    costs = summary["ledger"]["policies"]["learnability"]["costs"]
    assert costs["reference_logits_per_step"] > 0  # the reference's logits, from its stored features
    assert summary["ledger"]["policies"]["curated_only"]["costs"]["reference_logits_per_step"] == 0  # reads no reference
    assert json.loads((paths.metrics / "reference.json").read_text())["resolution"] == 16
    evaluated = json.loads((paths.metrics / "evaluate.json").read_text())
    assert 0 <= evaluated["reference"]["zero_shot_accuracy"] <= 1  # the 16 px reference is evaluated at 16 px


def test_jest_on_the_classification_objective_is_refused_with_the_reason(tiny, capsys):
    err = _fails(capsys, "pipeline", "--params", str(tiny), "--set", "train.selection=jest")
    assert "train.selection: 'jest'" in err and "no joint term" in err and "'topk' or 'softmax'" in err


def test_balanced_on_image_text_pairs_without_labels_is_refused_before_the_first_stage_naming_the_key(
    prefect_server, tiny, sources, tmp_path, capsys
):
    unlabelled = tmp_path / "pairs"
    unlabelled.mkdir()
    for name in ("noisy", "clean", "test"):
        pq.write_table(pq.read_table(sources / f"{name}.parquet").drop(["name"]), unlabelled / f"{name}.parquet")
    mine = tmp_path / "mine"
    args = ["--curated", str(unlabelled / "clean.parquet"), "--test", str(unlabelled / "test.parquet")]
    assert (
        main(
            ["data", "import", "parquet", str(unlabelled / "noisy.parquet"), str(mine), *args, "--image-column", "jpg"]
            + ["--caption-column", "alt"]
        )
        == 0
    )
    sets = ["--set", f"data.root={mine}", "--set", "train.policies=[uniform,balanced]"]
    assert main(["pipeline", "--objective", "contrastive", "--params", str(tiny), *sets]) == 2
    err = capsys.readouterr().err
    assert "train.policies: 'balanced'" in err and str(mine / "pool") in err
    assert not Paths.of(load_params(tiny, [f"data.root={mine}"])).artifacts.exists()  # no reference trained, nothing scored


def test_a_sixteen_bit_png_keeps_its_grey_level(sources):
    table = pq.read_table(sources / "noisy.parquet")
    from winnow.datasets.images import decode_image

    pixels = decode_image(table.column("jpg")[-1].as_py())
    assert abs(int(pixels.mean()) - round(30000 / 65535 * 255)) <= 1  # not the near-white that clipping gives


def _said(capsys) -> str:
    """What the CLI wrote to stderr, less logging's own "--- Logging error ---" reports (Prefect's handler still
    writes to an earlier test's closed capture)."""
    return re.sub(r"--- Logging error ---.*?\nArguments: [^\n]*\n", "", capsys.readouterr().err, flags=re.S)


def _fails(capsys, *argv) -> str:
    """Run the CLI; it must exit 2 with a message and no traceback. (Logging's own "--- Logging error ---"
    reports are dropped first: Prefect's handler still writes to an earlier test's closed capture.)"""
    code = main(list(argv))
    err = _said(capsys)
    assert code == 2 and "Traceback" not in err, err
    assert err.strip().splitlines()[-1].startswith("winnow: error: ")
    return err


def test_a_folder_without_a_manifest_is_never_overwritten_by_the_generator(prefect_server, tiny, capsys):
    theirs = tiny.parent / "theirs"
    (theirs / "pool").mkdir(parents=True)
    (theirs / "pool" / "part-00000.parquet").write_bytes(b"my data")
    err = _fails(capsys, "pipeline", "--params", str(tiny), "--set", f"data.root={theirs}")
    assert str(theirs) in err and "no manifest.json" in err and "winnow data import" in err
    assert (theirs / "pool" / "part-00000.parquet").read_bytes() == b"my data"
    assert sorted(p.name for p in theirs.rglob("*")) == ["part-00000.parquet", "pool"]


def test_a_split_missing_a_shard_or_holding_a_changed_or_stray_one_is_refused_naming_the_file(tiny, sources, capsys):
    """No stage trains, scores or curates on part of a split: each shard is checked against the manifest's list."""
    mine = tiny.parent / "mine"
    _import(sources, mine)
    shard = sorted((mine / "pool").glob("part-*.parquet"))[-1]
    kept = shard.read_bytes()
    shard.unlink()
    err = _fails(capsys, "pipeline", "--params", str(tiny), "--set", f"data.root={mine}")
    assert f"{shard}: listed in {mine / 'manifest.json'} but missing (1 of pool's 2 shards)" in err
    assert "import it again (`winnow data import`)" in err
    shard.write_bytes(kept[:-20] + bytes(20))  # the same size, other bytes
    err = _fails(capsys, "train", "--policy", "uniform", "--params", str(tiny), "--set", f"data.root={mine}")
    assert f"{shard}: its bytes are not those {mine / 'manifest.json'} lists" in err
    shard.write_bytes(kept)
    stray = mine / "curated" / "part-00099.parquet"
    stray.write_bytes(kept)
    err = _fails(capsys, "reference", "--params", str(tiny), "--set", f"data.root={mine}")
    assert f"{stray}: a shard that {mine / 'manifest.json'} does not list" in err


def test_the_built_in_pool_missing_a_shard_is_generated_again_before_any_stage_reads_it(tiny):
    from winnow.stages.data import data_stage

    params = load_params(tiny)
    data_stage(params)
    shard = Path(params.data.root) / "pool" / "part-00003.parquet"
    kept = shard.read_bytes()
    shard.unlink()
    assert data_stage(params)["generated"] and shard.read_bytes() == kept  # byte for byte what it was


@pytest.mark.slow  # kept out of the default suite to hold it within ten minutes; -m slow runs it
def test_a_damaged_or_unwritable_decoded_cache_changes_no_result(prefect_server, tiny, monkeypatch):
    """A cache entry with bytes changed in place (a bad disk block) is decoded again, not read as other pixels; a
    cache folder that cannot be made slows the run down and stops nothing. The curve is the same each time."""
    from winnow.stages import inputs
    from winnow.stages.data import data_stage

    sets = ["--set", "data.shard_size=600"]  # 1.8 MB of decoded images a shard: entries mapped from their file
    params = load_params(tiny, sets[1::2])
    data_stage(params)
    paths, cache = Paths.of(params), tiny.parent / "cache"

    def train_again() -> tuple[str, dict]:
        for output in (paths.learner("uniform"), paths.train_record("uniform"), paths.curve("uniform")):
            output.unlink(missing_ok=True)
        inputs._split.cache_clear()  # decoded anew in this process: from the cache, as a new process would
        assert main(["train", "--policy", "uniform", "--params", str(tiny), *sets]) == 0
        return paths.curve("uniform").read_text(), torch.load(paths.learner("uniform"), weights_only=False)["model"]

    def same(a, b) -> bool:  # the curve, and the weights bit for bit
        return a[0] == b[0] and all(torch.equal(a[1][k], b[1][k]) for k in a[1])

    monkeypatch.setenv("WINNOW_DECODED_CACHE", str(cache))
    trained = train_again()
    for entry in cache.glob("*/*.npz"):
        data = bytearray(entry.read_bytes())
        data[len(data) // 2 : len(data) // 2 + 65536] = bytes(65536)  # 21 images' pixels, the size kept
        entry.write_bytes(bytes(data))
    assert same(train_again(), trained)
    (tiny.parent / "a-file").write_text("not a folder")
    monkeypatch.setenv("WINNOW_DECODED_CACHE", str(tiny.parent / "a-file" / "cache"))  # as a read-only folder refuses it
    assert same(train_again(), trained)


@pytest.fixture
def imported(tiny, sources):
    """An imported dataset with a trained reference, as `winnow reference` leaves it."""
    mine = tiny.parent / "mine"
    _import(sources, mine)
    params = load_params(tiny, [f"data.root={mine}"])
    reference_stage(params)
    return mine, params


def _rewrite_pool(mine: Path, column: str, values) -> None:
    """A shard rewritten by hand and listed anew in its manifest (as a user who writes their own shards would):
    what the data contract's own checks then read, past the reference, trained again on the new data's key."""
    shard = sorted((mine / "pool").glob("part-*.parquet"))[0]
    table = pq.read_table(shard)
    pq.write_table(table.set_column(table.column_names.index(column), column, values(table)), shard)
    manifest = json.loads((mine / "manifest.json").read_text())
    manifest["files"][f"pool/{shard.name}"] = file_sha256(shard)
    (mine / "manifest.json").write_text(json.dumps(manifest))
    reference_stage(load_params(mine.parent / "params.yaml", [f"data.root={mine}"]))  # other data: the reference anew


def test_non_dense_or_repeated_pool_ids_are_named_before_any_scoring(prefect_server, tiny, imported, capsys):
    mine, params = imported
    _rewrite_pool(mine, "id", lambda t: pa.array(t.column("id").to_numpy() + 2**40))
    err = _fails(capsys, "score", "--params", str(tiny), "--set", f"data.root={mine}")
    assert "part-00000.parquet: row 0 has id 1099511627776" in err and "dense" in err
    _rewrite_pool(mine, "id", lambda t: pa.array(np.zeros(t.num_rows, np.int64)))
    err = _fails(capsys, "score", "--params", str(tiny), "--set", f"data.root={mine}")
    assert "part-00000.parquet: row 1 repeats id 0" in err


def test_string_labels_in_the_shards_are_named(prefect_server, tiny, imported, capsys):
    mine, _ = imported
    _rewrite_pool(mine, "label", lambda t: pa.array([str(v) for v in t.column("label").to_pylist()]))
    err = _fails(capsys, "score", "--params", str(tiny), "--set", f"data.root={mine}")
    assert "part-00000.parquet: column 'label' is string" in err


def test_a_store_moved_aside_is_scored_again_not_handed_back_from_the_cache(prefect_server, tiny, imported, capsys):
    """The score stage's result lives in the shared store: a cache hit needs the store to hold its scorer."""
    from winnow.scores import store

    mine, params = imported
    paths = Paths.of(params)
    assert main(["score", "--params", str(tiny), "--set", f"data.root={mine}"]) == 0
    scorer_id = json.loads(paths.scorer.read_text())["scorer_id"]
    assert store.holds(paths.store, scorer_id)
    paths.store.rename(paths.store.with_name("scores.aside.duckdb"))  # as the damaged-store error advises
    with store.connect(paths.store):  # and another dataset's scoring starts a new store, without this scorer
        pass
    assert main(["score", "--params", str(tiny), "--set", f"data.root={mine}"]) == 0
    assert store.holds(paths.store, scorer_id)  # rebuilt, and the learner can read it
    assert main(["train", "--policy", "easy_reference", "--params", str(tiny), "--set", f"data.root={mine}"]) == 0


def test_a_truncated_checkpoint_and_a_corrupt_store_are_named(prefect_server, tiny, imported, capsys):
    mine, params = imported
    paths = Paths.of(params)
    paths.store.parent.mkdir(parents=True, exist_ok=True)
    paths.store.write_bytes(b"not a database" * 100)
    err = _fails(capsys, "score", "--params", str(tiny), "--set", f"data.root={mine}")
    assert "scores.duckdb: not a readable DuckDB score store" in err and "another winnow process" not in err
    paths.store.unlink()
    paths.reference.write_bytes(paths.reference.read_bytes()[:1000])
    err = _fails(capsys, "score", "--params", str(tiny), "--set", f"data.root={mine}")
    assert "reference.pt: not a readable checkpoint" in err


def test_a_full_disk_while_saving_a_checkpoint_and_a_reference_with_nan_weights_are_one_line_naming_the_file(
    prefect_server, tiny, monkeypatch, capsys
):
    """Issue 46: torch's writer on a full disk raised a bare RuntimeError; NaN weights were loaded, scored, and the
    learner's divergence blamed on its learning rate."""
    from models import build_classifier
    from winnow.stages.data import data_stage

    data_stage(load_params(tiny))
    nan = build_classifier("cnn-nano", 20).state_dict()
    nan["features.0.weight"][0, 0, 0, 0] = float("nan")
    torch.save(nan, tiny.parent / "diverged.pt")
    err = _fails(capsys, "reference", "--params", str(tiny), "--set", f"reference.checkpoint={tiny.parent / 'diverged.pt'}")
    assert "diverged.pt: features.0.weight holds NaN or infinite values (reference.checkpoint)" in err

    def full(*args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:603] . unexpected pos 64 vs 0")

    monkeypatch.setattr(torch, "save", full)
    err = _fails(capsys, "reference", "--params", str(tiny))
    assert "reference.pt: could not be written (" in err and "free space on its disk" in err


def test_a_damaged_block_of_the_score_store_is_named_with_the_fix(tmp_path):
    from winnow.errors import StoreError
    from winnow.scores import store

    path = tmp_path / "scores.duckdb"
    with store.connect(path) as con:
        store.register_scorer(con, "s", "m", "d", "classification", "cnn-nano")
        con.execute("INSERT INTO scores SELECT 's', i, random(), 'ok' FROM range(1000000) t(i)")
        store.mark_complete(con, "s", 1.0)
    with open(path, "r+b") as f:  # a bad block of the scores' data (the third 256 KiB block after the headers)
        f.seek(12288 + 2 * 262144 + 1000)
        f.write(os.urandom(4096))
    with pytest.raises(StoreError, match=r"scores\.duckdb: a block of the score store is damaged .* Move it aside"):
        store.load_losses(path, "s")


@pytest.mark.slow  # kept out of the default suite to hold it within ten minutes; -m slow runs it
def test_a_reference_loaded_from_a_torchvision_checkpoint_scores_the_pool_and_is_charged_no_training(
    prefect_server, tiny, sources, capsys
):
    import torch
    import torchvision

    from models import build_classifier

    mine = tiny.parent / "mine"
    _import(sources, mine)
    classes = len(read_manifest(mine)["class_names"])
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18(weights=None, num_classes=classes).state_dict(), tiny.parent / "resnet18.pt")
    sets = ["--set", f"data.root={mine}", "--set", "reference.model=resnet18", "--set", "train.policies=[uniform,learnability]"]
    loaded = ["--set", f"reference.checkpoint={tiny.parent / 'resnet18.pt'}"]
    assert main(["pipeline", "--params", str(tiny), *sets, *loaded]) == 0
    paths = Paths.of(load_params(tiny, [s for s in (*sets, *loaded) if s != "--set"]))
    reference = json.loads(paths.reference_record.read_text())
    assert reference["steps"] == 0 and reference["loaded_from"] == str(tiny.parent / "resnet18.pt")
    costs = json.loads((paths.metrics / "summary.json").read_text())["ledger"]["policies"]["learnability"]["costs"]
    assert costs["reference_training"] == 0.0 and costs["pool_scoring"] > 0  # trained elsewhere; scoring paid here
    torch.save(build_classifier("cnn-nano", classes).state_dict(), tiny.parent / "nano.pt")  # another architecture
    err = _fails(capsys, "reference", "--params", str(tiny), *sets, "--set", f"reference.checkpoint={tiny.parent / 'nano.pt'}")
    assert "nano.pt: does not fit ResNetClassifier (reference.checkpoint)" in err and "set reference.model (now resnet18)" in err


def test_a_diverging_run_stops_with_the_step_and_the_fix(prefect_server, tiny, capsys):
    err = _fails(capsys, "pipeline", "--params", str(tiny), "--set", "reference.lr=1e30")
    assert "loss is nan at step" in err and "lower the learning rate" in err


def test_a_folder_or_a_binary_file_as_params_is_named(tiny, capsys):
    assert "is a folder, not a params file" in _fails(capsys, "pipeline", "--params", str(tiny.parent))
    binary = tiny.parent / "weights.bin"
    binary.write_bytes(bytes(range(256)) * 4)
    assert "weights.bin: not a text file" in _fails(capsys, "pipeline", "--params", str(binary))


def test_the_generator_refuses_to_overwrite_an_imported_dataset_even_when_forced(prefect_server, tiny, sources, capsys):
    mine = tiny.parent / "mine"
    _import(sources, mine)
    before = {p: p.read_bytes() for p in mine.rglob("*") if p.is_file()}
    err = _fails(capsys, "data", "synth", "--params", str(tiny), "--set", f"data.root={mine}", "--force")
    assert "holds a dataset the generator did not write" in err and "data.name" in err
    assert {p: p.read_bytes() for p in mine.rglob("*") if p.is_file()} == before


@pytest.mark.parametrize("code", [errno.ENOSPC, pytest.param(errno.EROFS, marks=pytest.mark.slow)])
def test_a_full_disk_or_a_read_only_folder_is_one_line_naming_the_file(prefect_server, tiny, monkeypatch, capsys, code):
    """Issue 26: these were raw tracebacks. The machine's refusal is said in one line, with the file and the fix."""
    from winnow.cli import main
    from winnow.config import load_params
    from winnow.stages import records
    from winnow.stages.data import data_stage

    data_stage(load_params(tiny))

    def refused(obj, path):
        raise OSError(code, os.strerror(code), str(path))

    monkeypatch.setattr(records, "write_json", refused)  # where the reference stage writes its record
    assert main(["reference", "--params", str(tiny)]) == 2
    said = _said(capsys)
    assert "reference.json" in said and os.strerror(code) in said and "Traceback" not in said
    assert ("free space" if code == errno.ENOSPC else "writable") in said


def test_scoring_a_dataset_whose_manifest_is_gone_names_the_manifest_not_the_reference(prefect_server, tiny, capsys):
    """Issue 26: with the manifest missing, `winnow score` blamed a stale reference.pt (its key reads the manifest)."""
    from winnow.cli import main
    from winnow.config import load_params
    from winnow.stages.data import data_stage
    from winnow.stages.reference import reference_stage

    params = load_params(tiny)
    data_stage(params)
    reference_stage(params)
    (Path(params.data.root) / "manifest.json").unlink()
    assert main(["score", "--params", str(tiny)]) == 2
    said = capsys.readouterr().err
    assert "manifest.json: no manifest" in said and "reference.pt" not in said


def test_a_second_run_training_the_same_policy_at_once_is_refused_not_run_twice(prefect_server, tiny, capsys):
    """Issue 26: two `winnow train` of one policy at once both wrote one checkpoint (the second resumed from the
    first's live one). The first holds a lock while it trains; the second is refused at once, naming it."""
    from winnow.cli import main
    from winnow.config import load_params
    from winnow.files import exclusive
    from winnow.stages.chain import run_chain
    from winnow.stages.paths import Paths

    params = load_params(tiny)
    run_chain(params, skip=("train", "curate", "evaluate", "summary"))
    paths = Paths.of(params)
    with exclusive(paths.lock("train-uniform"), paths.learner("uniform"), "training uniform into it"):  # the first run
        assert main(["train", "--policy", "uniform", "--params", str(tiny)]) == 2
    said = capsys.readouterr().err
    assert "uniform.pt: another run is training uniform into it right now" in said
    assert not paths.learner("uniform").exists()  # the refused run wrote nothing
    assert main(["train", "--policy", "uniform", "--params", str(tiny)]) == 0  # once the first is done, it runs


def test_advise_places_an_imported_dataset_on_the_regime_map(prefect_server, tiny, sources, capsys):
    """`winnow advise` on a user's own data: the reference and a pilot trained on it, its features measured from its
    own files, and the nearest point of a map measured elsewhere (here two points written for the test)."""
    from winnow.studies.runs import spread

    mine = tiny.parent / "mine"
    _import(sources, mine)

    def point(name, curated, pays):
        features = {"curated_share": curated, "reference_val": 0.9, "pilot_val": 0.6, "scorer_over_learner": 1.0}
        row = {k: spread([v]) for k, v in features.items()}
        return {
            "point": name,
            "pays": pays,
            "reference": "cnn-nano",
            "best_baseline": ["curated_only"],
            "flop_ratio_vs_best": spread([0.6 if pays else 1.5]),
            "final_over_best": spread([0.01 if pays else -0.05]),
            **row,
        }

    world = tiny.parent / "metrics" / "elsewhere" / "bench"
    world.mkdir(parents=True)
    rows = [point("much curated", 0.3, True), point("little curated", 0.003, False)]
    (world / "classification-regimes.json").write_text(json.dumps({"data": "data/elsewhere", "rows": rows}))

    assert main(["advise", "--params", str(tiny), "--set", f"data.root={mine}", "--set", "bench.pilot_steps=10"]) == 0
    said = capsys.readouterr().out
    assert "nearest point on the map: much curated of data/elsewhere" in said and "should pay" in said
    advice = json.loads((tiny.parent / "metrics" / "mine" / "advise-classification.json").read_text())
    counts = read_manifest(mine)["counts"]
    assert advice["features"]["curated_share"] == pytest.approx(counts["curated"] / counts["pool"])  # its own rows
    assert 0 <= advice["features"]["pilot_val"] <= 1 and advice["scorer"] == "cnn-nano"

    # checked against what a study measured on this very data: the map's own rule, and whether the two agree
    study = tiny.parent / "metrics" / "mine" / "bench" / "classification-levers.json"
    study.parent.mkdir(parents=True)
    never = {"flop_ratio_vs_best": spread([None, None]), "final_over_best": spread([-0.02, -0.01])}
    study.write_text(
        json.dumps(
            {"study": "levers", "objective": "classification", "data": str(mine), "rows": [{"lever": "learnability", **never}]}
        )
    )
    elsewhere = study.with_name("other.json")
    elsewhere.write_text(json.dumps({"study": "levers", "objective": "classification", "data": "data/elsewhere", "rows": []}))
    sets = ["--set", f"data.root={mine}", "--set", "bench.pilot_steps=10"]
    assert main(["advise", "--params", str(tiny), *sets, "--against", str(elsewhere)]) == 2  # before any training
    assert "measured on data/elsewhere" in capsys.readouterr().err
    assert main(["advise", "--params", str(tiny), *sets, "--against", str(study)]) == 0
    assert "measured on this data" in capsys.readouterr().out
    advice = json.loads((tiny.parent / "metrics" / "mine" / "advise-classification.json").read_text())
    assert advice["measured"]["pays"] is False and advice["measured"]["seeds"] == 2
    assert advice["measured"]["agrees"] is (advice["selection_should_pay"] is False)


def test_a_budgets_bench_with_data_seeds_gives_each_seed_its_own_curated_and_val_draw_of_imported_data(
    prefect_server, tiny, sources, tmp_path
):
    mine = tmp_path / "mine"
    _import(sources, mine)
    sets = [
        f"data.root={mine}",
        "bench.seeds=2",
        "bench.data_seeds=true",
        "bench.budgets=[0.5,1.0]",
        "bench.policies=[uniform,curated_only]",
        "train.steps=20",
    ]
    assert main(["bench", "--study", "budgets", "--params", str(tiny), *[a for s in sets for a in ("--set", s)]]) == 0
    paths = Paths.of(load_params(tiny, sets))
    result = json.loads(paths.study_json("budgets").read_text())
    assert result["data_seeds"] is True and result["data"] == str(mine)
    draws = [read_manifest(tmp_path / f"mine-data-{seed}") for seed in (0, 1)]
    assert [d["redrawn"]["seed"] for d in draws] == [0, 1]
    assert draws[0]["files"]["curated/part-00000.parquet"] != draws[1]["files"]["curated/part-00000.parquet"]
    assert draws[0]["files"]["eval/test/part-00000.parquet"] == read_manifest(mine)["files"]["eval/test/part-00000.parquet"]
    assert "Each seed its own data" in paths.study_report("budgets").read_text()


@pytest.mark.parametrize("objective", ["classification", pytest.param("contrastive", marks=pytest.mark.slow)])
def test_a_recorded_training_sequence_is_replayed_through_winnow_pipeline_on_imported_data(
    prefect_server, tiny, sources, tmp_path, objective
):
    from winnow.datasets.replay import read_sequence

    mine = tmp_path / "mine"
    _import(sources, mine)
    sets = [f"data.root={mine}", "train.policies=[replay,uniform,learnability]", "train.replay=learnability"]
    args = [a for s in sets for a in ("--set", s)]
    assert main(["pipeline", "--params", str(tiny), *args, "--objective", objective]) == 0  # replay runs last
    paths = Paths.of(load_params(tiny, [*sets, f"objective={objective}"]))
    sequence, meta = read_sequence(paths.sequence("learnability"))
    record = json.loads(paths.train_record("replay").read_text())
    assert len(sequence) == record["steps"] == meta["steps"] and record["replayed_policy"] == "learnability"
    assert record.get("actor") is None and record["super_batch_size"] == record["batch_size"]  # no super-batch, no actor
