"""The filtered baseline: the model-free filters a user runs before training any model (winnow/curation/filters.py)."""

import numpy as np
import torch

from winnow.curation.filters import ModelFreeFilter, model_free_filter


def _images(n: int, seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).integers(0, 256, size=(n, 3, 32, 32), dtype=np.uint8))


def test_flat_images_exact_and_near_duplicates_are_dropped_and_counted_the_first_copy_kept():
    images = _images(6)
    images[1] = 128  # flat
    images[3] = images[0]  # an exact copy of row 0
    images[2] = torch.linspace(0, 255, 32).round().to(torch.uint8)  # a picture with a layout: a ramp...
    images[2, :, 8:20, 8:20] = 30  # ... and a dark square on it
    near = images[2].int() + torch.from_numpy(np.random.default_rng(1).integers(-2, 3, size=(3, 32, 32)))
    images[5] = near.clamp(0, 255).to(torch.uint8)  # a near-copy of row 2: a little noise, the same layout
    result = model_free_filter(images)
    assert result.keep.tolist() == [True, False, True, False, True, False]
    assert result.dropped == {"flat": 1, "exact_duplicate": 1, "near_duplicate": 1}


def test_distinct_images_are_all_kept():
    assert model_free_filter(_images(200)).keep.all()


def test_the_filter_read_shard_by_shard_keeps_the_very_rows_it_keeps_over_the_whole_pool():
    images = _images(30)
    images[4], images[17], images[25] = images[2], images[2], images[11]  # copies within a chunk and across chunks
    images[9] = 7  # flat
    chunked = ModelFreeFilter()
    keep = np.concatenate([chunked.keep(images[a : a + 10]) for a in range(0, 30, 10)])
    whole = model_free_filter(images)
    assert keep.tolist() == whole.keep.tolist() and chunked.dropped == whole.dropped
    assert whole.dropped == {"flat": 1, "exact_duplicate": 3, "near_duplicate": 0}
    assert len(chunked.exact) == 26 and len(chunked.near) == 26  # it remembers a hash an image it kept, never pixels
