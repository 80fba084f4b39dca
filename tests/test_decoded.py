"""Decode once per machine (winnow/datasets/decoded.py): a shard's images come from the decoded cache the second
time, equal to a fresh decode; a rewritten shard is decoded anew; a torn entry is a miss; the cache keeps to its
bound; an interrupted decode keeps the shards it finished."""

import shutil

import pyarrow.parquet as pq
import pytest
import torch

from winnow.datasets import contract, decoded, tokens
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

    monkeypatch.setattr(contract, "decode_row", refuse)


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
    real, calls = contract.decode_row, []

    def stop_in_the_third_shard(blob, size, fit="squash"):
        calls.append(1)
        if len(calls) > 2 * 300 + 10:
            raise KeyboardInterrupt
        return real(blob, size, fit)

    monkeypatch.setattr(contract, "decode_row", stop_in_the_third_shard)
    with pytest.raises(KeyboardInterrupt):
        load_split(pool, 32, 20)
    assert len(_entries(tmp_path)) == 2 and not list((tmp_path / "cache").glob("*/*.tmp*"))
    calls.clear()
    monkeypatch.setattr(contract, "decode_row", lambda blob, size, fit: (calls.append(1), real(blob, size, fit))[1])
    load_split(pool, 32, 20)
    left = sorted(pool.glob("part-*.parquet"))[2:]
    # every row is judged, a null one too
    assert len(calls) == sum(pq.read_table(p, columns=["image"]).column("image").length() for p in left)


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


def test_a_cached_shard_is_read_without_its_image_bytes(pool, monkeypatch):
    shard = sorted(pool.glob("part-*.parquet"))[0]
    first = contract.decode_file(shard, 32, 20, ("caption",))
    read = []
    real = pq.read_table
    monkeypatch.setattr(contract.pq, "read_table", lambda path, columns=None: read.append(columns) or real(path, columns=columns))
    again = contract.decode_file(shard, 32, 20, ("caption",))
    assert read and all(columns is not None and "image" not in columns for columns in read)
    assert torch.equal(first[1], again[1]) and (first[0] == again[0]).all() and (first[3]["caption"] == again[3]["caption"]).all()
    assert first[4] == again[4]  # the undecodable rows, still named


def test_many_captions_are_tokenised_once_per_machine_equal_to_the_tokenizer(pool, tmp_path):
    from models import clip_tokenizer

    tokenizer = clip_tokenizer("clip-pico")
    captions = [f"a photo of a {i % 37} thing, number {i}" for i in range(tokens.KEPT_FROM + 44)]
    first = tokens.tokenised(tokenizer, captions)
    assert torch.equal(first, tokenizer(captions)) and first.dtype == torch.long
    kept = _entries(tmp_path)
    assert len(kept) == 1

    class Refusing:  # the same tokenizer, that must not be called on the captions
        def __init__(self, inner):
            self.tokenizer, self.context_length, self.inner = inner.tokenizer, inner.context_length, inner

        def __call__(self, texts):
            if texts != [tokens.PROBE]:
                raise AssertionError("tokenised again")
            return self.inner(texts)

    again = tokens.tokenised(Refusing(tokenizer), captions)  # read back, not tokenised
    assert torch.equal(again, first) and again.dtype == torch.long
    tokens.tokenised(tokenizer, captions[:-1])  # other texts: another entry
    assert len(_entries(tmp_path)) == 2
    shorter = Refusing(tokenizer)
    shorter.context_length = tokenizer.context_length - 1  # another context length: another entry, never this one's tokens
    with pytest.raises(AssertionError, match="tokenised again"):
        tokens.tokenised(shorter, captions)
    few = captions[: tokens.KEPT_FROM - 1]  # a prompt set is not worth a file
    assert torch.equal(tokens.tokenised(tokenizer, few), tokenizer(few)) and len(_entries(tmp_path)) == 2
    kept[0].write_bytes(b"torn")  # a torn entry is a miss
    assert torch.equal(tokens.tokenised(tokenizer, captions), first)


def test_texts_that_join_alike_are_kept_apart(pool, tmp_path):
    from models import clip_tokenizer

    tokenizer = clip_tokenizer("clip-pico")
    n = tokens.KEPT_FROM
    one = ["a\x1fb"] + ["c"] * (n - 1)
    other = ["a", "b\x1fc"] + ["c"] * (n - 2)
    assert torch.equal(tokens.tokenised(tokenizer, one), tokenizer(one))
    assert torch.equal(tokens.tokenised(tokenizer, other), tokenizer(other))
    assert len(_entries(tmp_path)) == 2


def test_a_large_entry_is_mapped_from_its_file_equal_copy_on_write_and_a_torn_one_is_a_miss(tmp_path, monkeypatch, caplog):
    import numpy as np

    monkeypatch.setenv("WINNOW_DECODED_CACHE", str(tmp_path / "cache"))
    images = np.random.default_rng(0).integers(0, 256, (400, 3, 32, 32), dtype=np.uint8)  # 1.2 MB: mapped
    assert images.nbytes >= decoded.MAPPED_FROM
    decoded.store("ab" * 32, np.arange(400), images, [(400, "undecodable image: truncated")])
    kept, loaded, skipped = decoded.load("ab" * 32, 401, 32)
    assert isinstance(loaded, np.memmap) and np.array_equal(loaded, images)
    assert np.array_equal(kept, np.arange(400)) and skipped == [(400, "undecodable image: truncated")]
    torch.from_numpy(loaded)[0] = 0  # writable, and written in this process's copy only
    assert np.array_equal(decoded.load("ab" * 32, 401, 32)[1], images)

    entry = _entries(tmp_path)[0]
    entry.write_bytes(entry.read_bytes()[: entry.stat().st_size // 2])  # cut inside the images: no zip directory left
    assert decoded.load("ab" * 32, 401, 32) is None and "unreadable" in caplog.text
    assert not entry.exists()  # removed: the next decode writes it whole


def test_an_entry_np_savez_compressed_wrote_is_read_as_usual(tmp_path, monkeypatch):
    import numpy as np

    monkeypatch.setenv("WINNOW_DECODED_CACHE", str(tmp_path / "cache"))
    images = np.zeros((400, 3, 32, 32), np.uint8)
    path = tmp_path / "cache" / "cd" / f"{'cd' * 32}.npz"
    path.parent.mkdir(parents=True)
    np.savez_compressed(path, kept=np.arange(400), images=images, bad=np.zeros(0, np.int64), reasons=np.zeros(0, str))
    kept, loaded, skipped = decoded.load("cd" * 32, 400, 32)
    assert not isinstance(loaded, np.memmap) and np.array_equal(loaded, images) and skipped == []


def test_a_mapped_entry_with_bytes_changed_in_place_is_a_miss_not_other_pixels(tmp_path, monkeypatch, caplog):
    """A damaged disk block keeps the file's size and its zip directory: the CRC-32 written beside the mapped images
    catches it."""
    import numpy as np

    monkeypatch.setenv("WINNOW_DECODED_CACHE", str(tmp_path / "cache"))
    images = np.random.default_rng(1).integers(0, 256, (400, 3, 32, 32), dtype=np.uint8)
    decoded.store("ef" * 32, np.arange(400), images, [])
    entry = _entries(tmp_path)[0]
    data = bytearray(entry.read_bytes())
    middle = len(data) // 2  # inside the images
    data[middle : middle + 8] = bytes(255 - b for b in data[middle : middle + 8])
    entry.write_bytes(bytes(data))
    assert decoded.load("ef" * 32, 400, 32) is None and "do not match the checksum" in caplog.text
    assert not entry.exists()


def test_a_cache_folder_that_cannot_be_made_slows_a_run_down_and_stops_nothing(pool, tmp_path, monkeypatch, caplog):
    (tmp_path / "a-file").write_text("not a folder")
    monkeypatch.setenv("WINNOW_DECODED_CACHE", str(tmp_path / "a-file" / "cache"))  # as a read-only folder refuses it
    split = load_split(pool, 32, 20)
    assert len(split) > 0 and "could not write" in caplog.text
