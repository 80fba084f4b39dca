"""The built-in pool is not easy for the method: no pathology but undecodable bytes is separable from clean
examples by a model-free detector (pixel statistics, nearest-neighbour distance, a caption word check) at
AUROC above 0.9. A filter a user writes in an afternoon must not be able to do winnow's job."""

import numpy as np
import pytest

from winnow.config import DataConfig
from winnow.datasets.captions import COLOUR_WORDS, SHAPE_WORDS
from winnow.datasets.synth import CLASS_NAMES, COLOURS, SHAPES, make_pool, wrong_labels

LIMIT = 0.9
CLASS_WORDS = {w for words in (*SHAPE_WORDS.values(), *COLOUR_WORDS.values()) for w in words}


def auroc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve of `scores` for `positive` (ties split), either direction: the detector's best."""
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    ranks[order] = np.arange(1, len(scores) + 1)
    for value in np.unique(scores):  # average ranks over ties
        tied = scores == value
        ranks[tied] = ranks[tied].mean()
    n_pos, n_neg = positive.sum(), (~positive).sum()
    area = (ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    return max(area, 1 - area)


def detectors(pool: dict) -> dict[str, np.ndarray]:
    images = pool["image"].astype(np.float64) / 255.0  # (N, H, W, 3)
    grey = images.mean(-1)
    small = grey.reshape(len(grey), 8, grey.shape[1] // 8, 8, grey.shape[2] // 8).mean((2, 4)).reshape(len(grey), -1)
    squared = (small**2).sum(1)
    distances = squared[:, None] + squared[None, :] - 2 * small @ small.T
    np.fill_diagonal(distances, np.inf)
    saturation = images.max(-1) - images.min(-1)
    rows = np.abs(np.diff(grey, axis=1)).mean(2)  # how much each row differs from the one above
    return {
        "pixel spread": grey.std((1, 2)),
        "brightness": grey.mean((1, 2)),
        "colour spread": images.std((1, 2)).mean(1),
        "most saturated pixels": np.percentile(saturation.reshape(len(grey), -1), 95, axis=1),
        "sharpest row break": rows.max(1) / (rows.mean(1) + 1e-9),
        "bottom rows alike": np.abs(np.diff(grey[:, -8:], axis=1)).mean((1, 2)),
        "nearest neighbour": distances.min(1),
        "names a class in the caption": np.array([any(w in c for w in CLASS_WORDS) for c in pool["caption"]], dtype=float),
    }


@pytest.fixture(scope="module")
def pool():
    cfg = DataConfig(num_pool=4000, shard_size=4000, duplicate_sources=80)  # the default rates; 1000 sources / 50,000 rows
    return make_pool(cfg, np.random.default_rng(0))


def test_no_pathology_is_separable_by_a_model_free_detector(pool):
    scores = detectors(pool)
    clean = pool["pathology"] == "clean"
    found = {}
    for kind in sorted(set(pool["pathology"]) - {"clean", "undecodable"}):
        mine = pool["pathology"] == kind
        both = clean | mine
        best = max(scores, key=lambda d: auroc(scores[d][both], mine[both]))
        found[kind] = (best, round(auroc(scores[best][both], mine[both]), 3))
    separable = {k: v for k, v in found.items() if v[1] > LIMIT}
    assert not separable, f"separable without a model (AUROC > {LIMIT}): {separable}; all: {found}"


def test_wrong_labels_go_mostly_to_a_class_that_looks_alike():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, len(CLASS_NAMES), 20000)
    wrong = wrong_labels(rng, labels, 0.8)
    assert (wrong != labels).all()
    colours = len(COLOURS)
    alike = (wrong // colours == labels // colours) | (wrong % colours == labels % colours)
    chance = (len(COLOURS) - 1 + len(SHAPES) - 1) / (len(CLASS_NAMES) - 1)  # 7 of 19 by chance
    assert alike.mean() == pytest.approx(0.8 + 0.2 * chance, abs=0.02)


def test_the_detectors_do_find_an_easy_pathology():
    """The test above can fail: a flat blank image, as the old pool drew them, is found at once."""
    rng = np.random.default_rng(1)
    n = 400
    flat = np.clip(rng.random((n // 2, 1, 1, 3)) * 255 + rng.normal(0, 2, (n // 2, 32, 32, 3)), 0, 255).astype(np.uint8)
    pool = make_pool(DataConfig(num_pool=n, shard_size=n, duplicate_sources=10), rng)
    images = np.concatenate([pool["image"][pool["pathology"] == "clean"], flat])
    kinds = np.array(["clean"] * int((pool["pathology"] == "clean").sum()) + ["flat"] * len(flat))
    scores = detectors({"image": images, "caption": np.array(["a red circle"] * len(images), dtype=object)})
    assert auroc(scores["pixel spread"], kinds == "flat") > 0.99
