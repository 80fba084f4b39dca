"""Streaming pools: shards decoded one at a time through a shuffle buffer, resumable, rank-sharded."""

import functools
import threading

import numpy as np
import pytest
import torch

from winnow.datasets.contract import load_split
from winnow.datasets.stream import InMemory, ShardStream
from winnow.errors import DataError
from winnow.method import objectives
from winnow.method.training import Blend


@pytest.fixture(scope="module")
def pool(tiny_data):
    return load_split(f"{tiny_data.data.root}/pool", 32, 20)


def _stream(tiny_data, buffer=200, seed=0, rank=0, world=1, decoded=None, prefetch=True, broken=None):
    def decode(path):
        if decoded is not None:
            decoded.append(path.name)
        if path.name == broken:
            raise DataError(f"{path}: not a Parquet file")
        return objectives.decode_shard("classification", "cnn-nano", path, 32, 20)

    return ShardStream(f"{tiny_data.data.root}/pool", decode, buffer, seed, rank, world, prefetch)


def test_streamed_examples_carry_the_same_pixels_and_labels_as_the_pool_loaded_whole(tiny_data, pool):
    stream = _stream(tiny_data)
    row_of = {int(i): r for r, i in enumerate(pool.ids)}
    for _ in range(5):
        drawn = stream.draw(32)
        rows = torch.as_tensor([row_of[int(i)] for i in drawn.ids])
        assert torch.equal(drawn.images, pool.images[rows])
        assert torch.equal(drawn.targets, torch.as_tensor(pool.labels)[rows])
        assert list(drawn.pathology) == list(pool.columns["pathology"][rows.numpy()])


def test_the_stream_holds_one_buffer_and_decodes_shards_one_at_a_time_as_it_goes(tiny_data, pool):
    decoded = []
    stream = _stream(tiny_data, buffer=200, decoded=decoded)
    stream.draw(32)
    assert len(stream.buffer["ids"]) == 200 and len(set(stream.buffer["refs"][:, 0])) == 1  # from the first shard alone
    stream.close()
    assert len(decoded) == 2  # ... and the next one decoded ahead, in the background
    seen = []
    for _ in range(3 * len(pool) // 32):  # three epochs' worth of draws
        seen.extend(stream.draw(32).ids.tolist())
    counts = np.bincount(seen, minlength=int(pool.ids.max()) + 1)[pool.ids]
    assert (counts > 0).all()  # every usable example came round
    assert counts.mean() == pytest.approx(3, abs=0.3) and counts.max() <= 8
    assert not set(seen) - set(pool.ids.tolist())  # never an undecodable row
    assert len(decoded) >= 3 * 4  # four shards per epoch, each decoded once per epoch


def test_a_stream_restored_from_its_state_draws_exactly_what_the_original_would(tiny_data):
    original = _stream(tiny_data, seed=3)
    for _ in range(11):
        original.draw(32)
    state = original.state()
    restored = _stream(tiny_data, seed=3)
    restored.restore(state)
    for _ in range(15):  # across shard and epoch boundaries
        a, b = original.draw(32), restored.draw(32)
        assert np.array_equal(a.ids, b.ids) and torch.equal(a.images, b.images) and torch.equal(a.targets, b.targets)


def test_ranks_stream_disjoint_shards_and_each_draws_its_share(tiny_data):
    decoded = {0: [], 1: []}
    ranks = [_stream(tiny_data, rank=r, world=2, decoded=decoded[r]) for r in (0, 1)]
    draws = [s.draw(64) for s in ranks]
    assert [len(d.ids) for d in draws] == [32, 32]
    assert not set(decoded[0]) & set(decoded[1])
    assert not set(draws[0].ids.tolist()) & set(draws[1].ids.tolist())


def test_the_in_memory_sampler_gives_each_rank_its_slice_of_one_global_super_batch(pool):
    targets = torch.as_tensor(pool.labels)
    whole = InMemory(pool, targets, seed=5).draw(64)
    halves = [InMemory(pool, targets, seed=5, rank=r, world=2).draw(64) for r in (0, 1)]
    assert np.array_equal(np.concatenate([h.ids for h in halves]), whole.ids)


def test_training_on_a_stream_killed_half_way_resumes_to_the_same_weights(tiny_data, pool, tmp_path):
    from models import build_classifier
    from winnow.config import TrainConfig
    from winnow.method.checkpoints import CheckpointPlan
    from winnow.method.selection import Selector
    from winnow.method.training import train

    class Crash(Exception):
        pass

    cfg = TrainConfig(model="cnn-nano", steps=14, batch_size=16, warmup_steps=2)
    reference_loss = torch.rand(int(pool.ids.max()) + 1, generator=torch.Generator().manual_seed(0))

    def run(path, on_step=None):
        torch.manual_seed(0)
        model = build_classifier("cnn-nano", 20)
        out = train(
            model,
            _stream(tiny_data, buffer=100),
            cfg,
            seed=0,
            selector=Selector("learnability", keep_fraction=0.5, reference_loss=reference_loss),
            checkpoint=CheckpointPlan(path, every=5),
            on_step=on_step,
        )
        return model, out

    def crash(step, ids):
        if step == 8:
            raise Crash

    straight, out = run(tmp_path / "a.pt")
    assert any(k.startswith("selected_noisy_label") for k in out["steps_log"][-1])
    with pytest.raises(Crash):
        run(tmp_path / "b.pt", crash)
    resumed, out = run(tmp_path / "b.pt")
    assert out["step"] == 14 and len(out["steps_log"]) == 14
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(a, b)


def test_the_train_stage_streams_a_pool_larger_than_the_shuffle_buffer(tiny, tiny_data):
    from winnow.config import load_params
    from winnow.stages.train import pool_sampler, train_stage

    overrides = ["train.shuffle_buffer=256", f"data.root={tiny_data.data.root}", "train.steps=12", "train.eval_examples=50"]
    params = load_params(tiny, overrides)
    assert isinstance(pool_sampler(params, "cnn-nano", 0)[0], ShardStream)
    out = train_stage(params, "uniform")
    assert out["pool_streamed"] and out["shuffle_buffer"] == 256 and out["pool_size"] == params.data.num_pool
    assert out["curve_split"] == "eval/val" and out["curve_examples"] == 50  # its curve read a bounded sample
    assert not [t for t in threading.enumerate() if t.name.startswith("winnow-decode-")]  # none outlives the run
    assert isinstance(pool_sampler(load_params(tiny, [f"data.root={tiny_data.data.root}"]), "cnn-nano", 0)[0], InMemory)


def test_a_contrastive_stream_yields_caption_tokens_as_targets(tiny_data):
    decode = functools.partial(objectives.decode_shard, "contrastive", "clip-nano", size=32, num_classes=20)
    stream = ShardStream(f"{tiny_data.data.root}/pool", decode, 128, 0)
    drawn = stream.draw(64)
    assert drawn.targets.shape[0] == 64 and drawn.targets.dtype == torch.int64  # caption tokens


def test_decoding_the_next_shard_ahead_draws_the_very_same_batches_and_decodes_each_shard_once_an_epoch(tiny_data, pool):
    runs = {}
    for prefetch in (True, False):
        decoded = []
        stream = _stream(tiny_data, buffer=200, seed=5, decoded=decoded, prefetch=prefetch)
        draws = [stream.draw(32) for _ in range(2 * len(pool) // 32)]  # two epochs
        stream.close()
        runs[prefetch] = draws, decoded
    for ahead, inline in zip(runs[True][0], runs[False][0], strict=True):
        assert np.array_equal(ahead.ids, inline.ids) and torch.equal(ahead.images, inline.images)
    ahead, inline = runs[True][1], runs[False][1]
    assert ahead[: len(inline)] == inline and len(ahead) == len(inline) + 1  # the same order, one shard further on


def test_a_super_batch_larger_than_a_shard_decodes_as_many_shards_ahead_as_it_spans_and_draws_the_same(tiny_data):
    runs = {}
    for prefetch in (True, False):
        stream = _stream(tiny_data, buffer=800, seed=2, prefetch=prefetch)
        draws = [stream.draw(700) for _ in range(6)]  # the tiny pool's shards hold 300 rows: a draw spans three
        if prefetch:
            assert sum(stream.rows[a.index] for a in stream.ahead) >= 700 and len(stream.ahead) >= 3
        stream.close()
        assert not stream.ahead
        runs[prefetch] = draws
    for ahead, inline in zip(runs[True], runs[False], strict=True):
        assert np.array_equal(ahead.ids, inline.ids) and torch.equal(ahead.images, inline.images)


def test_a_shard_that_fails_to_decode_ahead_fails_where_the_stream_reaches_it_naming_the_file(tiny_data):
    decoded = []
    probe = _stream(tiny_data, buffer=200, decoded=decoded, prefetch=False)
    probe.draw(32)
    second = next(probe._upcoming())
    stream = _stream(tiny_data, buffer=200, broken=probe.files[second].name)
    stream.draw(32)  # the first shard reads; the second failed in the background, and says nothing yet
    with pytest.raises(DataError, match=probe.files[second].name):
        for _ in range(40):
            stream.draw(32)


def test_a_bounded_validation_sample_is_the_same_rows_each_time_in_their_order(tiny_data):
    from winnow.stages.inputs import sampled

    val = load_split(f"{tiny_data.data.root}/eval/val", 32, 20)
    once, again = sampled(val, 50), sampled(val, 50)
    assert len(once) == 50 and np.array_equal(once.ids, again.ids) and np.all(np.diff(once.ids) > 0)
    assert torch.equal(once.images, val.images[torch.as_tensor(np.searchsorted(val.ids, once.ids))])
    assert sampled(val, None) is val and sampled(val, len(val)) is val


@pytest.fixture(scope="module")
def three_times(tmp_path_factory):
    """The tiny pool's generator at three times its size (the same curated, val and test sets)."""
    from conftest import TINY

    from winnow.config import params_from_dict
    from winnow.datasets.synth import synthesize

    root = tmp_path_factory.mktemp("three_times") / "data"
    params = params_from_dict({**TINY, "data": {**TINY["data"], "num_pool": 3 * TINY["data"]["num_pool"], "root": str(root)}})
    synthesize(params.data, root)
    return params


def _held_bytes(obj, seen: set | None = None) -> int:
    """The bytes of every tensor and array an object reaches through its attributes and containers."""
    seen = set() if seen is None else seen
    if (
        id(obj) in seen
        or isinstance(obj, (str, bytes, int, float, type, threading.Thread))
        or callable(obj)
        and not (isinstance(obj, functools.partial))
    ):
        return 0
    seen.add(id(obj))
    if torch.is_tensor(obj):
        return obj.untyped_storage().nbytes()
    if isinstance(obj, np.ndarray):
        return obj.nbytes
    if isinstance(obj, functools.partial):
        return sum(_held_bytes(a, seen) for a in (*obj.args, *obj.keywords.values()))
    if isinstance(obj, dict):
        return sum(_held_bytes(v, seen) for v in obj.values())
    if isinstance(obj, (list, tuple, set)):
        return sum(_held_bytes(v, seen) for v in obj)
    return _held_bytes(vars(obj), seen) if hasattr(obj, "__dict__") else 0


# (the selecting arms draw from the pool as uniform does)
@pytest.mark.parametrize(
    "policy", ["uniform", "filtered", "curated_plus_pool", "balanced", "curated_mix", "learnability_mix"]
)  # the other selecting arms draw from the pool as uniform does
def test_no_arm_holds_more_as_a_pool_larger_than_the_shuffle_buffer_grows(tiny, tiny_data, three_times, policy):
    from winnow.config import load_params
    from winnow.stages.train import pool_sampler

    held = []
    for data in (tiny_data, three_times):
        params = load_params(tiny, [f"data.root={data.data.root}", "train.shuffle_buffer=256"])
        sampler, _ = pool_sampler(params, "cnn-nano", 0, policy=policy)
        pool = sampler.pool if isinstance(sampler, Blend) else sampler  # a blend: the curated set beside the pool
        assert not isinstance(pool, InMemory)  # it streams
        for _ in range(30):
            pool.draw(64)
        pool.close()
        held.append(_held_bytes(sampler))
    grown = three_times.data.num_pool - tiny_data.data.num_pool
    assert held[1] - held[0] < 16 * grown  # ids at most (the filter's dropped ids), never an image (3 KiB a row)


@pytest.fixture(scope="module")
def with_copies(tmp_path_factory):
    """An imported pool of 400 noise images in four shards, 40 of them exact copies of another (some in another
    shard) and 20 flat: what the model-free filters drop."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    from winnow.importers.importing import import_source

    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (400, 16, 16, 3), dtype=np.uint8)
    pixels[rng.choice(np.arange(10, 400), 40, replace=False)] = pixels[rng.integers(0, 10, 40)]
    pixels[380:] = 90
    blobs = []
    for image in pixels:
        buf = io.BytesIO()
        Image.fromarray(image).save(buf, format="PNG")
        blobs.append(buf.getvalue())
    root = tmp_path_factory.mktemp("with_copies")
    pq.write_table(pa.table({"image": blobs, "label": pa.array(rng.integers(0, 2, 400), pa.int32())}), root / "pool.parquet")
    return import_source("parquet", root / "pool.parquet", root / "data", shard_size=100)


def test_the_filtered_pool_streamed_draws_exactly_the_rows_the_filter_keeps_in_memory(tiny, with_copies):
    from winnow.config import load_params
    from winnow.stages.train import pool_sampler

    settings = [f"data.root={with_copies}", "data.image_size=16", "train.batch_size=16"]
    whole, whole_info = pool_sampler(load_params(tiny, settings), "cnn-nano", 0, policy="filtered")
    streamed, info = pool_sampler(load_params(tiny, [*settings, "train.shuffle_buffer=64"]), "cnn-nano", 0, policy="filtered")
    assert info["filter_dropped"] == whole_info["filter_dropped"]
    assert (
        whole_info["filter_dropped"]["flat"] >= 10 and whole_info["filter_dropped"]["exact_duplicate"] >= 20
    )  # less what the held-out sets took
    seen = set()
    for _ in range(4 * len(whole.split) // 32):  # four epochs' worth
        seen.update(streamed.draw(32).ids.tolist())
    streamed.close()
    assert seen == set(whole.split.ids.tolist())


def test_a_mixture_draws_each_part_in_its_share_resumes_exactly_and_splits_evenly_over_ranks(pool):
    from winnow.datasets.mixture import Mixture

    def mixture(rank=0, world=1):
        small, large = pool.subset(np.arange(300)), pool.subset(np.arange(300, len(pool)))
        parts = [InMemory(s, torch.as_tensor(s.labels), 3, s.columns["pathology"], rank, world) for s in (small, large)]
        return Mixture(parts, [len(small), len(large)], seed=3, world=world)

    one = mixture()
    drawn = np.concatenate([one.draw(64).ids for _ in range(300)])
    share = np.mean(drawn < 300)
    assert share == pytest.approx(300 / len(pool), abs=0.02)  # a uniform draw over the union, in expectation
    first = mixture()
    for _ in range(5):
        first.draw(64)
    again = mixture()
    again.restore(first.state())
    a, b = first.draw(64), again.draw(64)
    assert np.array_equal(a.ids, b.ids) and torch.equal(a.images, b.images) and list(a.pathology) == list(b.pathology)
    ranks = [mixture(rank, 2) for rank in (0, 1)]
    for _ in range(20):
        halves = [r.draw(64) for r in ranks]
        assert [len(h.ids) for h in halves] == [32, 32]


def _class_counts(sampler, draws: int = 200, n: int = 64) -> np.ndarray:
    labels = np.concatenate([sampler.draw(n).labels for _ in range(draws)])
    sampler.close()
    return np.bincount(labels, minlength=20)


@pytest.mark.parametrize("buffer", [None, 256], ids=["in memory", "streamed"])
def test_the_balanced_baseline_draws_every_class_about_as_often_from_a_long_tailed_pool(tiny, tiny_data, buffer):
    from winnow.config import load_params
    from winnow.stages.train import pool_sampler

    sets = [f"data.root={tiny_data.data.root}", *([f"train.shuffle_buffer={buffer}"] if buffer else [])]
    params = load_params(tiny, sets)
    uniform, balanced = (_class_counts(pool_sampler(params, "cnn-nano", 0, policy=p)[0]) for p in ("uniform", "balanced"))
    tail = uniform.max() / uniform.min()
    assert tail > 5  # the pool's Zipf tail, as uniform sees it
    # evened out: held whole, to within 2.5x; streamed, a class is drawn only as often as the buffer holds its rows, so
    # the rarest are under-drawn still (a 256-row buffer of a 1,200-row pool): at least fivefold flatter than uniform
    assert balanced.max() / balanced.min() < (2.5 if buffer is None else tail / 5)


@pytest.mark.parametrize("policy", ["curated_mix", "learnability_mix"])
def test_a_blended_arm_takes_its_share_of_every_batch_from_the_curated_set(tiny, tiny_data, policy):
    from winnow.config import load_params
    from winnow.stages.train import pool_sampler

    params = load_params(tiny, [f"data.root={tiny_data.data.root}", "train.curated_share=0.25"])
    sampler, _ = pool_sampler(params, "cnn-nano", 0, policy=policy)
    assert isinstance(sampler, Blend) and sampler.share == 0.25 and sampler.curated.size == tiny_data.data.num_curated
    assert sampler.rows(64, 1) == 16  # a fixed share of every batch, not the curated set's share of the rows (0.2)


def test_a_trained_arm_records_its_kept_class_mix_beside_its_pathology_mix(tiny, tiny_data):
    from winnow.config import load_params
    from winnow.stages.train import train_stage

    params = load_params(tiny, [f"data.root={tiny_data.data.root}", "train.steps=20", "train.eval_examples=50"])
    shares = {p: train_stage(params, p)["kept_class_share"] for p in ("uniform", "balanced")}
    for share in shares.values():
        assert len(share) == 20 and sum(share) == pytest.approx(1.0, abs=1e-4)
    assert max(shares["balanced"]) < max(shares["uniform"])  # the head class, evened out


def test_learnability_on_top_of_the_curated_set_scores_a_super_batch_for_the_pools_share_alone(tiny, tiny_data):
    from winnow.config import load_params
    from winnow.stages.reference import reference_stage
    from winnow.stages.score import score_stage
    from winnow.stages.train import train_stage

    sets = [f"data.root={tiny_data.data.root}", "train.steps=10", "train.eval_examples=50", "train.curated_share=0.5"]
    params = load_params(tiny, sets)
    reference_stage(params)
    score_stage(params)
    plain, mixed = (train_stage(params, p) for p in ("learnability", "learnability_mix"))
    assert mixed["curated_share"] == 0.5 and plain["curated_share"] is None
    assert mixed["super_batch_size"] == plain["super_batch_size"] // 2 == 32  # 16 pool rows kept of 32, 16 curated
    assert mixed["actor_scoring_flops_per_step"] == pytest.approx(plain["actor_scoring_flops_per_step"] / 2, rel=0.02)
    assert mixed["learner_step_flops"] == pytest.approx(plain["learner_step_flops"], rel=1e-6)  # its whole batch
    assert mixed["selected_mix"]["clean"] > plain["selected_mix"]["clean"]  # half of every batch the clean curated rows


def test_the_curated_set_alone_is_also_read_early_stopped_at_its_best_val_evaluation(tiny, tiny_data):
    from winnow.config import load_params
    from winnow.files import read_csv
    from winnow.stages.paths import Paths
    from winnow.stages.train import train_stage

    params = load_params(tiny, [f"data.root={tiny_data.data.root}", "train.steps=40", "train.eval_examples=100"])
    record = train_stage(params, "curated_only")
    curve = {int(r["step"]): float(r["accuracy"]) for r in read_csv(Paths.of(params).curve("curated_only"))}
    best = max(curve.values())
    assert record["best_val"] == pytest.approx(best) and record["best_val_step"] == min(s for s, v in curve.items() if v == best)
    assert 0.0 <= record["final_metric_at_best_val"] <= 1.0
    if record["best_val_step"] == 40:  # best at the end: the same weights, the same test metric
        assert record["final_metric_at_best_val"] == pytest.approx(record["final_metric"])
    assert train_stage(params, "uniform").get("best_val_step") is None  # read so for the curated set alone
