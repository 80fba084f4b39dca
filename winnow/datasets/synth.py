"""The built-in generated pool: every byte follows from the parameters and the seed.

Classes are (shape, colour family) pairs: 5 shapes x 4 colours = 20 classes. Each
image also has a texture, a size, a rotation, a position, a background and
sometimes a distractor, so a small network needs thousands of steps. The texture
is ignored by the labels and is the transfer task.

The images are drawn by winnow.datasets.render and the captions written by winnow.datasets.captions;
the generator's code is all three files, and a manifest records their hash.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from winnow.config import DataConfig
from winnow.datasets.captions import TEXTURE_WORDS, captions_for, uninformative_captions
from winnow.datasets.contract import file_sha256, generated, read_manifest
from winnow.datasets.render import (
    COLOURS,
    SHAPES,
    TEXTURES,
    augment,
    encode_png,
    half_decoded,
    render,
    render_blank,
    render_clutter,
)
from winnow.errors import DataError
from winnow.files import write_json

SCHEMA_VERSION = 1
CODE = ("synth.py", "render.py", "captions.py")  # the generator's files, beside this one: its manifest records their hash


CLASS_NAMES = tuple(f"{c} {s}" for s in SHAPES for c in COLOURS)


PATHOLOGIES = (
    "clean",
    "noisy_label",
    "duplicate",
    "blank",
    "corrupt",
    "undecodable",
    "off_distribution",
    "mismatched_caption",
    "uninformative_caption",
)


ARROW_SCHEMA = pa.schema(
    [
        ("id", pa.int64()),
        ("image", pa.binary()),
        ("label", pa.int32()),
        ("caption", pa.string()),
        ("pathology", pa.string()),
        ("texture", pa.int32()),
    ]
)


def class_prior(num_classes: int, imbalance: float, rng: np.random.Generator) -> np.ndarray:
    """Zipf-like class frequencies (exponent `imbalance`), in a seeded class order."""
    weights = (np.arange(num_classes) + 1.0) ** -imbalance if imbalance > 0 else np.ones(num_classes)
    weights = weights[rng.permutation(num_classes)]
    return weights / weights.sum()


def _clean_examples(rng, n, size, prior=None, easy=None):
    """Clean examples: images, labels, textures and captions that describe them."""
    num_classes = len(CLASS_NAMES)
    labels = rng.choice(num_classes, size=n, p=prior) if prior is not None else rng.integers(0, num_classes, n)
    texture = rng.integers(0, len(TEXTURES), n)
    images, radius, centre = render(rng, labels // len(COLOURS), labels % len(COLOURS), texture, size, easy)
    captions = captions_for(rng, labels, texture, radius, centre)
    return images, labels.astype(np.int32), texture.astype(np.int32), captions


CONFUSABLE_SHARE = 0.8  # of wrong labels, the share given a confusable class: the same shape or the same colour


def wrong_labels(rng: np.random.Generator, labels: np.ndarray, confusable: float, prior: np.ndarray | None = None) -> np.ndarray:
    """Another class for each label: with probability `confusable` one that shares its shape or its colour (as
    annotators confuse classes that look alike), else any other class; with a `prior`, each candidate in proportion
    to its share of the pool (data.label_noise: frequency), else alike."""
    if prior is not None:
        return _wrong_by_prior(rng, labels, confusable, prior)
    num_classes, colours = len(CLASS_NAMES), len(COLOURS)
    shape, colour = labels // colours, labels % colours
    same_shape = rng.random(len(labels)) < colours / (colours + len(SHAPES))  # 3 such classes of 7, in proportion
    other_colour = (colour + rng.integers(1, colours, len(labels))) % colours
    other_shape = (shape + rng.integers(1, len(SHAPES), len(labels))) % len(SHAPES)
    near = np.where(same_shape, shape * colours + other_colour, other_shape * colours + colour)
    anywhere = (labels + rng.integers(1, num_classes, len(labels))) % num_classes
    return np.where(rng.random(len(labels)) < confusable, near, anywhere).astype(labels.dtype)


def _wrong_by_prior(rng: np.random.Generator, labels: np.ndarray, confusable: float, prior: np.ndarray) -> np.ndarray:
    """wrong_labels with each candidate class weighted by the prior: the look-alikes (same shape or same colour) with
    probability `confusable`, else any other class."""
    colours = len(COLOURS)
    classes = np.arange(len(CLASS_NAMES))
    near = rng.random(len(labels)) < confusable
    out = labels.copy()
    for label in np.unique(labels):
        alike = (classes // colours == label // colours) | (classes % colours == label % colours)
        for rows, candidates in ((near, alike), (~near, np.ones_like(alike))):
            rows = np.flatnonzero((labels == label) & rows)
            weights = np.where(candidates & (classes != label), prior, 0.0)
            out[rows] = rng.choice(classes, size=len(rows), p=weights / weights.sum())
    return out.astype(labels.dtype)


def make_pool(cfg: DataConfig, rng: np.random.Generator) -> dict:
    """The noisy pool's columns: images, labels and captions as given to the learner, pathology, texture."""
    n, size = cfg.num_pool, cfg.image_size
    num_classes = len(CLASS_NAMES)
    rates = cfg.pathologies.model_dump()
    probs = np.array([1.0 - sum(rates.values())] + [rates[p] for p in PATHOLOGIES[1:]])
    pathology = rng.choice(len(PATHOLOGIES), size=n, p=probs)
    prior = class_prior(num_classes, cfg.class_imbalance, rng)
    images, labels, texture, captions = _clean_examples(rng, n, size, prior=prior)
    true_captions, true_labels = captions.copy(), labels.copy()
    by_frequency = prior if cfg.label_noise == "frequency" else None  # which classes wrong labels name (and duplicates show)

    def any_label(count: int) -> np.ndarray:
        return (
            rng.choice(num_classes, size=count, p=by_frequency)
            if by_frequency is not None
            else rng.integers(0, num_classes, count)
        )

    def where(name):
        return np.flatnonzero(pathology == PATHOLOGIES.index(name))

    idx = where("noisy_label")  # the image and caption agree; the label does not
    labels[idx] = wrong_labels(rng, labels[idx], CONFUSABLE_SHARE, by_frequency)

    idx = where("duplicate")  # augmented near-copies of a few hundred ordinary images, each with a caption of its own
    src_images, src_labels, src_texture, _ = _clean_examples(rng, cfg.duplicate_sources, size, prior=by_frequency)
    pick = rng.integers(0, cfg.duplicate_sources, len(idx))
    images[idx] = augment(rng, src_images[pick])
    labels[idx], texture[idx] = src_labels[pick], src_texture[pick]  # (the captions drawn for these rows stay)

    # Blank and clutter images carry a random label and another image's alt-text.
    for name, images_of in (("blank", render_blank), ("off_distribution", render_clutter)):
        idx = where(name)
        images[idx] = images_of(rng, len(idx), size)
        labels[idx] = any_label(len(idx))
        captions[idx] = true_captions[rng.integers(0, n, len(idx))]

    idx = where("corrupt")
    images[idx] = half_decoded(rng, images[idx])

    idx = where("mismatched_caption")  # the caption of an example of another class: it does not describe this image
    donor = rng.integers(0, n, len(idx))
    for _ in range(20):  # redraw donors of the same class (each try leaves 1/20 of them)
        same = true_labels[donor] == true_labels[idx]
        if not same.any():
            break
        donor[same] = rng.integers(0, n, int(same.sum()))
    captions[idx] = true_captions[donor]

    idx = where("uninformative_caption")
    captions[idx] = uninformative_captions(rng, len(idx))

    undecodable = pathology == PATHOLOGIES.index("undecodable")
    labels[undecodable] = any_label(int(undecodable.sum()))
    names = np.array(PATHOLOGIES, dtype=object)[pathology]
    return {
        "image": images,
        "label": labels,
        "caption": captions,
        "pathology": names,
        "texture": texture,
        "undecodable": undecodable,
    }


def clean_split(rng: np.random.Generator, n: int, size: int) -> dict:
    images, labels, texture, captions = _clean_examples(rng, n, size)
    return {
        "image": images,
        "label": labels,
        "caption": captions,
        "pathology": np.full(n, "clean", dtype=object),
        "texture": texture,
    }


def _write_split(folder: Path, columns: dict, shard_size: int, desc: str = "") -> list[Path]:
    """Write columns (image as uint8 (N,H,W,3)) as part-00000.parquet, part-00001.parquet..."""
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("part-*.parquet"):
        old.unlink()
    columns = dict(columns)
    images, undecodable = columns.pop("image"), columns.pop("undecodable", None)
    n = len(images)
    files = []
    for shard, start in enumerate(tqdm(range(0, n, shard_size), desc=desc, unit="shard", leave=False, disable=None)):
        stop = min(start + shard_size, n)
        blobs = []
        for i in range(start, stop):
            png = encode_png(images[i])
            if undecodable is not None and undecodable[i]:
                png = png[: len(png) // 3]  # a truncated download
            blobs.append(png)
        table = pa.table(
            {
                "id": pa.array(np.arange(start, stop, dtype=np.int64)),
                "image": pa.array(blobs, type=pa.binary()),
                "label": pa.array(columns["label"][start:stop], type=pa.int32()),
                "caption": pa.array(list(columns["caption"][start:stop]), type=pa.string()),
                "pathology": pa.array(list(columns["pathology"][start:stop]), type=pa.string()),
                "texture": pa.array(columns["texture"][start:stop], type=pa.int32()),
            },
            schema=ARROW_SCHEMA,
        )
        for name in sorted(set(columns) - set(ARROW_SCHEMA.names)):
            table = table.append_column(name, pa.array(list(columns[name][start:stop])))
        path = folder / f"part-{shard:05d}.parquet"
        pq.write_table(table, path, compression="zstd", write_statistics=False)
        files.append(path)
    return files


def generator_params(cfg: DataConfig) -> dict:
    """What the bytes follow from: the parameters (seed included) and the generator's code (CODE)."""
    return {
        "code_sha256": hashlib.sha256("".join(file_sha256(Path(__file__).with_name(f)) for f in CODE).encode()).hexdigest(),
        **cfg.model_dump(exclude={"dir", "name", "fit", "workers"}),  # how it is read, not what it is
    }


def check_owned(root: Path) -> None:
    """The generator writes only a folder it owns: absent, empty, or generated by it. Anything
    else may be a user's data, and is never overwritten."""
    if (root / "manifest.json").exists():
        manifest = read_manifest(root)
        if not generated(manifest):
            raise DataError(
                f"{root}: holds a dataset the generator did not write (an import, or data of your own), which it never "
                f"overwrites. Set data.name (or data.root) to another folder to generate the built-in pool there."
            )
        extra = sorted(
            str(p.relative_to(root))
            for p in root.rglob("*")
            if p.is_file() and str(p.relative_to(root)) not in manifest.get("files", {}) and p.name != "manifest.json"
        )
        if extra:
            raise DataError(
                f"{root}: was generated, but now also holds files the generator did not write ({', '.join(extra[:3])}"
                f"{'...' if len(extra) > 3 else ''}); move them out, or set data.name to another folder"
            )
    elif root.exists() and any(root.iterdir()):
        raise DataError(
            f"{root}: has files but no manifest.json, so winnow will neither read nor overwrite it. Import your data "
            f"with `winnow data import KIND SOURCE {root}` (it writes the manifest), or set data.name to a new folder."
        )


def synthesize(cfg: DataConfig, root: str | Path | None = None) -> Path:
    """Write pool/, curated/, eval/test, eval/val, eval/texture and manifest.json under `root`. They are written
    into root.generating/ and moved into place at the end, so a crash never leaves a half-written root."""
    final = Path(root or cfg.root)
    check_owned(final)
    root = final.with_name(final.name + ".generating")
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    seeds = np.random.SeedSequence(cfg.seed).spawn(5)  # children by index: adding val left the other splits as they were
    pool_rng, curated_rng, test_rng, transfer_rng, val_rng = (np.random.default_rng(s) for s in seeds)
    size = cfg.image_size

    pool = make_pool(cfg, pool_rng)
    _write_split(root / "pool", pool, cfg.shard_size, desc="pool")
    counts = {"pool": cfg.num_pool, "pool_pathologies": {p: int((pool["pathology"] == p).sum()) for p in PATHOLOGIES}}

    held_out = (
        ("curated", curated_rng, cfg.num_curated),
        ("eval/test", test_rng, cfg.num_test),
        ("eval/val", val_rng, cfg.num_val),
    )
    for name, rng, n in held_out:
        _write_split(root / name, clean_split(rng, n, size), cfg.shard_size, desc=name)
        counts[name] = n

    # Transfer: classify the texture (ignored by the labels) with a linear probe on frozen features.
    texture = clean_split(transfer_rng, cfg.num_transfer, size)
    texture["label"] = texture["texture"]
    texture["fold"] = np.where(np.arange(cfg.num_transfer) < cfg.num_transfer * 2 // 3, "train", "test").astype(object)
    _write_split(root / "eval/texture", texture, cfg.shard_size, desc="texture")
    counts["eval/texture"] = cfg.num_transfer

    files = sorted(p for p in root.rglob("*.parquet"))
    content = {str(p.relative_to(root)): file_sha256(p) for p in files}
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "image": {"format": "png", "height": size, "width": size, "channels": 3},
        "class_names": list(CLASS_NAMES),
        "tasks": {
            "test": {"label": "label", "class_names": list(CLASS_NAMES)},
            "texture": {
                "label": "label",
                "class_names": list(TEXTURES),
                "probe": True,
                "prompt_names": [TEXTURE_WORDS[t][0] + " shape" for t in TEXTURES],
            },
        },
        "counts": counts,
        "generator": generator_params(cfg),
        "files": content,
        "content_hash": hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest(),
        "pool_hash": hashlib.sha256(
            json.dumps({k: v for k, v in content.items() if k.startswith("pool/")}, sort_keys=True).encode()
        ).hexdigest(),
    }
    write_json(manifest, root / "manifest.json")
    if final.exists():
        shutil.rmtree(final)
    os.replace(root, final)
    return final
