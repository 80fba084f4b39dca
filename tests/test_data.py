"""Bad shards get a clear error naming the file and row, never a silent drop."""

import io

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from winnow.datasets.contract import DataError, load_split


def _png(colour=(255, 0, 0)):
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), colour).save(buf, format="PNG")
    return buf.getvalue()


def _write(folder, **columns):
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), folder / "part-00000.parquet")
    return folder


def test_a_good_shard_decodes_to_uint8_tensors(tmp_path):
    split = load_split(
        _write(tmp_path / "s", id=[0, 1], image=[_png(), _png((0, 0, 255))], label=pa.array([1, 2], pa.int32())), 32, 5
    )
    assert split.images.shape == (2, 3, 32, 32) and split.images.dtype.is_floating_point is False
    assert split.images[1, 2].float().mean() == 255 and split.labels.tolist() == [1, 2]


def test_images_of_another_size_are_resized(tmp_path):
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (0, 255, 0)).save(buf, format="JPEG")
    split = load_split(_write(tmp_path / "s", id=[0], image=[buf.getvalue()], label=pa.array([0], pa.int32())), 32, 5)
    assert split.images.shape == (1, 3, 32, 32)


def test_a_missing_column_names_the_file_and_the_column(tmp_path):
    folder = _write(tmp_path / "s", id=[0], image=[_png()])
    with pytest.raises(DataError, match=r"part-00000\.parquet.*missing required column.*label"):
        load_split(folder, 32, 5)


def test_a_label_out_of_range_names_the_file_and_row(tmp_path):
    folder = _write(tmp_path / "s", id=[0, 7], image=[_png(), _png()], label=pa.array([1, 9], pa.int32()))
    with pytest.raises(DataError, match=r"part-00000\.parquet: row 1 \(id 7\) has label 9"):
        load_split(folder, 32, 5)


def test_a_shard_that_is_not_parquet_is_named(tmp_path):
    folder = tmp_path / "s"
    folder.mkdir()
    (folder / "part-00000.parquet").write_text("id,image,label\n0,x,1\n")
    with pytest.raises(DataError, match=r"part-00000\.parquet: not a readable Parquet file"):
        load_split(folder, 32, 5)


def test_corrupt_and_null_images_are_skipped_with_their_ids(tmp_path):
    folder = _write(
        tmp_path / "s", id=[0, 1, 2], image=[_png(), b"\x89PNG garbage", None], label=pa.array([0, 1, None], pa.int32())
    )
    split = load_split(folder, 32, 5)
    assert split.ids.tolist() == [0]
    assert [s["id"] for s in split.skipped] == [1, 2]


def test_an_empty_folder_says_so(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no part-"):
        load_split(tmp_path / "empty", 32, 5)
