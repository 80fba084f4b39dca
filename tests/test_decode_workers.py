"""Decoding in worker processes and cheap decoding (winnow/datasets/workers.py, images.py; issue 45): workers give
the very pixels, rows and skipped rows of decoding in line; a stream with workers draws and resumes as one without;
a worker that dies is a clear error and the next call works; a large JPEG decoded at a reduced scale stays within a
stated tolerance of a full decode; `fit: crop` keeps the centre; a split too large for the decoded cache is not
cached, and that is said once."""

import io
import logging
import os
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from winnow.config import load_params
from winnow.datasets import contract, decoded, workers
from winnow.datasets.contract import Split
from winnow.datasets.images import decode_image
from winnow.datasets.stream import ShardStream
from winnow.errors import ConfigError


@pytest.fixture
def pool(tiny_data, tmp_path, monkeypatch):
    """A copy of the tiny pool (its undecodable rows included), with the decoded cache off: every read decodes."""
    monkeypatch.setenv("WINNOW_DECODED_CACHE", "off")
    shutil.copytree(f"{tiny_data.data.root}/pool", tmp_path / "pool")
    return tmp_path / "pool"


@pytest.fixture
def two_workers():
    workers.configure(2)
    yield workers.pool()
    workers.configure(0)


def _decoded(pool):
    return [contract.decode_file(p, 32, 20, ("pathology",)) for p in sorted(pool.glob("part-*.parquet"))]


def test_workers_decode_the_very_pixels_rows_and_skipped_rows_of_decoding_in_line(pool, two_workers):
    with_workers = _decoded(pool)
    workers.configure(0)
    in_line = _decoded(pool)
    assert sum(len(part[4]) for part in in_line) > 0  # the tiny pool has undecodable rows: listed by both, alike
    for (ids, images, labels, meta, skipped), (ids0, images0, labels0, meta0, skipped0) in zip(with_workers, in_line):
        assert (ids == ids0).all() and torch.equal(images, images0) and (labels == labels0).all()
        assert (meta["pathology"] == meta0["pathology"]).all() and skipped == skipped0


def _stream(pool, seed=3):
    def decode(path):
        ids, images, labels, meta, skipped = contract.decode_file(path, 32, 20)
        return Split(ids, images, labels, meta, skipped), torch.as_tensor(labels)

    return ShardStream(pool, decode, buffer_size=300, seed=seed)


def test_a_stream_with_workers_draws_and_resumes_exactly_as_one_decoding_in_line(pool, two_workers):
    stream = _stream(pool)
    first = [stream.draw(64).ids for _ in range(6)]
    state = stream.state()
    later = [stream.draw(64).ids for _ in range(12)]  # crosses shards: the shard ahead decodes in the workers
    stream.close()

    resumed = _stream(pool)
    resumed.restore(state)
    assert all((a == b).all() for a, b in zip(later, [resumed.draw(64).ids for _ in range(12)]))
    resumed.close()

    workers.configure(0)
    in_line = _stream(pool)
    assert all((a == b).all() for a, b in zip(first + later, [in_line.draw(64).ids for _ in range(18)]))
    in_line.close()


def _dies(blobs, size, fit, memory, first, total):
    os._exit(3)  # as a worker killed by the OOM killer would end


def test_a_worker_that_dies_is_a_clear_error_naming_the_shard_and_the_next_call_works(pool):
    shard = sorted(pool.glob("part-*.parquet"))[0]
    blobs = pq.read_table(shard).column("image").to_pylist()
    dying = workers.DecodePool(1, task=_dies)
    with pytest.raises(workers.WorkerDied, match=f"{shard.name}: a decode worker died") as error:
        dying.decode(blobs, 32, "squash", str(shard))
    assert "nothing of this shard was kept" in str(error.value) and "resume" in str(error.value)
    dying.task = workers.decode_slice  # the same pool object starts afresh
    keep, pixels, failed = dying.decode(blobs, 32, "squash", str(shard))
    assert len(keep) + len(failed) == len(blobs) and pixels.shape == (len(keep), 3, 32, 32)
    dying.close()


def _photo(width: int, height: int, seed: int = 0) -> bytes:
    """A JPEG with a photo's spectrum (smooth shapes, some texture): a small random field upscaled, plus noise."""
    rng = np.random.default_rng(seed)
    field = (rng.random((height // 40, width // 40, 3)) * 255).astype(np.uint8)
    low = Image.fromarray(field).resize((width, height), Image.BICUBIC)
    pixels = np.clip(np.asarray(low, dtype=np.float64) + rng.normal(0, 6, (height, width, 3)), 0, 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "JPEG", quality=90)
    return out.getvalue()


DRAFT_TOLERANCE = 3.0  # mean absolute difference, in 8-bit levels, from a full decode then the same resize


@pytest.mark.parametrize("fit", ["squash", "crop"])
def test_a_large_jpeg_decodes_at_a_reduced_scale_within_tolerance_of_a_full_decode(fit):
    blob = _photo(1024, 768)
    with Image.open(io.BytesIO(blob)) as im:
        im.draft("RGB", (224, 224) if fit == "squash" else (299, 224))
        assert im.size[0] < 1024  # the decoder skips work: libjpeg's DCT scaling (here by 1/2 or 1/4)
    fast = decode_image(blob, 224, fit).astype(np.float64)
    with Image.open(io.BytesIO(blob)) as im:  # the full decode, then the same fit
        full = im.convert("RGB")
        if fit == "crop":
            full = full.resize((299, 224), Image.BILINEAR).crop((37, 0, 261, 224))
        else:
            full = full.resize((224, 224), Image.BILINEAR)
    difference = np.abs(fast - np.asarray(full, dtype=np.float64))
    assert fast.shape == (224, 224, 3)
    assert 0 < difference.mean() < DRAFT_TOLERANCE  # not the full decode, but close to it


def test_fit_crop_keeps_the_centre_and_squash_the_whole_picture():
    wide = np.zeros((32, 96, 3), np.uint8)
    wide[:, :32] = (255, 0, 0)  # red left third, green centre, blue right third
    wide[:, 32:64] = (0, 255, 0)
    wide[:, 64:] = (0, 0, 255)
    out = io.BytesIO()
    Image.fromarray(wide).save(out, "PNG")
    crop, squash = decode_image(out.getvalue(), 32, "crop"), decode_image(out.getvalue(), 32, "squash")
    assert (crop[:, :, 1] == 255).all() and (crop[:, :, [0, 2]] == 0).all()  # only the green centre
    assert squash[:, 0, 0].min() > 200 and squash[:, -1, 2].min() > 200  # red and blue borders kept


def test_a_split_larger_than_the_decoded_cache_bound_is_decoded_each_time_not_cached_and_said_once(
    tiny_data, tmp_path, monkeypatch, caplog
):
    shutil.copytree(f"{tiny_data.data.root}/pool", tmp_path / "pool")
    monkeypatch.setenv("WINNOW_DECODED_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("WINNOW_DECODED_CACHE_GB", "0.001")  # 1 MB: the pool decodes to more
    with caplog.at_level(logging.WARNING, logger="winnow"):
        contract.load_split(tmp_path / "pool", 32, 20)
        contract.load_split(tmp_path / "pool", 32, 20)
    said = [r.message for r in caplog.records if "more than the cache's bound" in r.message]
    assert len(said) == 1 and str(tmp_path / "pool") in said[0]
    assert not list((tmp_path / "cache").glob("*/*.npz"))  # nothing written, nothing evicted and decoded again
    monkeypatch.setenv("WINNOW_DECODED_CACHE_GB", "20")
    decoded._said.clear()
    contract.load_split(tmp_path / "pool", 32, 20)
    assert list((tmp_path / "cache").glob("*/*.npz"))  # within the bound, cached as before


def test_data_workers_and_fit_are_validated_and_leave_the_generated_data_alone(tmp_path):
    with pytest.raises(ConfigError, match="workers"):
        load_params("params.yaml", ["data.workers=-1"])
    with pytest.raises(ConfigError, match="fit"):
        load_params("params.yaml", ["data.fit=stretch"])
    from winnow.datasets.synth import generator_params

    base = load_params("params.yaml", [])
    other = load_params("params.yaml", ["data.workers=2", "data.fit=crop"])
    assert generator_params(base.data) == generator_params(other.data)  # how the data is read, not what it is


def test_by_default_a_cpu_run_whose_threads_take_every_core_decodes_in_line():
    cores = len(os.sched_getaffinity(0))
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(cores)
        assert workers.default_workers("cpu") == 0
        torch.set_num_threads(1)
        assert workers.default_workers("cpu") == cores - 1
        assert workers.default_workers("cpu", parallel=cores) == 0  # the other arms' threads take the rest
        assert workers.default_workers("cuda") == cores - 1  # on a GPU the host keeps one core for the loop
    finally:
        torch.set_num_threads(before)


def test_an_empty_shard_decodes_to_nothing_in_the_workers(two_workers):
    keep, pixels, failed = two_workers.decode([], 32, "squash", "empty")
    assert keep.shape == (0,) and pixels.shape == (0, 3, 32, 32) and failed == []


def test_a_shard_of_only_undecodable_rows_is_listed_whole_by_the_workers(two_workers, tmp_path):
    table = pa.table({"id": [1, 2], "image": [b"junk", None], "label": [0, 1]})
    pq.write_table(table, tmp_path / "part-00000.parquet")
    ids, images, labels, meta, skipped = contract.decode_file(tmp_path / "part-00000.parquet", 32, 20)
    assert len(ids) == 0 and images.shape == (0, 3, 32, 32)
    assert [s["id"] for s in skipped] == [1, 2] and "null image" in skipped[1]["reason"]


def test_too_little_shared_memory_is_named_before_any_worker_starts(monkeypatch, two_workers):
    monkeypatch.setattr(workers, "_shared_room", lambda: 10_000_000)  # 10 MB free, as a container's small /dev/shm
    with pytest.raises(workers.WorkerDied, match=r"part-00007.parquet: 151 MB of shared memory needed .* 10 MB free in /dev/shm"):
        two_workers.decode([b"x"] * 1000, 224, "squash", "part-00007.parquet")


def _configure_in_a_daemon(queue):
    workers.configure(2)
    queue.put(workers.pool() is None)


def test_a_daemon_process_such_as_a_dask_worker_decodes_in_line():
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    daemon = context.Process(target=_configure_in_a_daemon, args=(queue,), daemon=True)
    daemon.start()
    assert queue.get(timeout=60) is True  # a daemon may start no processes: 0 workers, not a crash
    daemon.join()
