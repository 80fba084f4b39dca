"""Decode once per machine (winnow/datasets/decoded.py): a shard's images come from the decoded cache the second
time, equal to a fresh decode; a rewritten shard is decoded anew; a torn entry is a miss; the cache keeps to its
bound; an interrupted decode keeps the shards it finished."""

import shutil

import pyarrow.parquet as pq
import pytest
import torch

from winnow.datasets import contract, decoded
from winnow.datasets.contract import load_split
from winnow.errors import ConfigError


@pytest.fixture
def pool(tiny_data, tmp_path, monkeypatch):
    """A copy of the tiny pool and an empty cache of this test's own."""
    monkeypatch.setenv("WINNOW_DECODED_CACHE", str(tmp_path / "cache"))
    shutil.copytree(f"{tiny_data.data.root}/pool", tmp_path / "pool")
    return tmp_path / "pool"


def _entries(tmp_path):
    return sorted((tmp_path / "cache").glob("*/*.npz"))


def _no_decoding(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("decoded again")

    monkeypatch.setattr(contract, "decode_image", refuse)


def test_a_split_decoded_twice_comes_from_the_cache_equal_to_a_fresh_decode(pool, tmp_path, monkeypatch):
    first = load_split(pool, 32, 20)
    assert len(_entries(tmp_path)) == 4  # one entry per shard
    _no_decoding(monkeypatch)
    again = load_split(pool, 32, 20)
    assert torch.equal(first.images, again.images) and (first.ids == again.ids).all() and (first.labels == again.labels).all()
    assert first.skipped == again.skipped and first.skipped  # the undecodable rows are named the same way
    assert again.images.shape[1:] == (3, 32, 32) and again.images.is_contiguous()


def test_another_size_or_a_rewritten_shard_is_decoded_anew_never_read_stale(pool, tmp_path, monkeypatch):
    load_split(pool, 32, 20)
    assert len(_entries(tmp_path)) == 4
    assert load_split(pool, 16, 20).images.shape[-1] == 16  # another size, another entry
    assert len(_entries(tmp_path)) == 8
    shard = sorted(pool.glob("part-*.parquet"))[0]
    other = sorted(pool.glob("part-*.parquet"))[1]
    shard.write_bytes(other.read_bytes())  # rewritten: now the second shard's rows (ids repeat, the split refuses)
    with pytest.raises(contract.DataError, match="not unique"):
        load_split(pool, 32, 20)
    monkeypatch.setenv("WINNOW_DECODED_CACHE", "off")
    fresh = contract.decode_file(shard, 32, 20)
    monkeypatch.setenv("WINNOW_DECODED_CACHE", str(tmp_path / "cache"))
    assert torch.equal(contract.decode_file(shard, 32, 20)[1], fresh[1])


def test_a_torn_entry_is_a_miss_and_the_shard_is_decoded_again(pool, tmp_path, caplog):
    first = load_split(pool, 32, 20)
    entry = _entries(tmp_path)[0]
    entry.write_bytes(entry.read_bytes()[:100])  # cut short, as a crash or a full disk would
    again = load_split(pool, 32, 20)
    assert torch.equal(first.images, again.images) and "unreadable" in caplog.text
    assert entry.stat().st_size > 100  # written whole again


def test_an_interrupted_decode_keeps_the_shards_it_finished(pool, tmp_path, monkeypatch):
    real, calls = contract.decode_image, []

    def stop_in_the_third_shard(blob, size=None):
        calls.append(1)
        if len(calls) > 2 * 300 + 10:
            raise KeyboardInterrupt
        return real(blob, size)

    monkeypatch.setattr(contract, "decode_image", stop_in_the_third_shard)
    with pytest.raises(KeyboardInterrupt):
        load_split(pool, 32, 20)
    assert len(_entries(tmp_path)) == 2 and not list((tmp_path / "cache").glob("*/*.tmp*"))
    calls.clear()
    monkeypatch.setattr(contract, "decode_image", lambda blob, size=None: (calls.append(1), real(blob, size))[1])
    load_split(pool, 32, 20)
    left = sorted(pool.glob("part-*.parquet"))[2:]
    assert len(calls) == sum(pq.read_table(p, columns=["image"]).column("image").drop_null().length() for p in left)


def test_the_cache_keeps_to_its_bound_evicting_the_oldest_and_can_be_turned_off(pool, tmp_path, monkeypatch):
    load_split(pool, 32, 20)
    one = _entries(tmp_path)[0].stat().st_size
    monkeypatch.setenv("WINNOW_DECODED_CACHE_GB", str(2.5 * one / 1e9))  # room for two entries and a half
    load_split(pool, 16, 20)  # four more entries, a quarter the size: the oldest 32 px ones make room
    assert len(_entries(tmp_path)) < 8 and sum(p.stat().st_size for p in _entries(tmp_path)) <= 2.5 * one
    with monkeypatch.context() as m:
        _no_decoding(m)
        load_split(pool, 16, 20)  # the newest entries are all kept

    monkeypatch.setenv("WINNOW_DECODED_CACHE", "off")
    shutil.rmtree(tmp_path / "cache")
    load_split(pool, 32, 20)
    assert not (tmp_path / "cache").exists()


def test_a_bound_that_is_not_a_number_of_gb_is_an_error_naming_the_variable(monkeypatch):
    monkeypatch.setenv("WINNOW_DECODED_CACHE_GB", "lots")
    with pytest.raises(ConfigError, match="WINNOW_DECODED_CACHE_GB='lots'"):
        decoded.limit_bytes()
