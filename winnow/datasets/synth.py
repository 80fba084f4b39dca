"""The built-in generated pool: every byte follows from the parameters and the seed.

Classes are (shape, colour family) pairs: 5 shapes x 4 colours = 20 classes. Each
image also has a texture, a size, a rotation, a position, a background and
sometimes a distractor, so a small network needs thousands of steps. The texture
is ignored by the labels and is the transfer task.

Pixel maths uses only IEEE-exact operations (+ - * / sqrt, floor) on float64, so
the PNG bytes are the same on every machine: the committed data.dvc stays valid.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image
from tqdm import tqdm

from winnow.config import DataConfig
from winnow.datasets.contract import file_sha256, generated, read_manifest
from winnow.errors import DataError

SCHEMA_VERSION = 1
SHAPES = ("circle", "square", "triangle", "cross", "ring")
COLOURS = ("red", "yellow", "green", "blue")
# Hue centres (degrees) of the colour families; each image jitters around them.
HUES = {"red": 0.0, "yellow": 55.0, "green": 125.0, "blue": 225.0}
TEXTURES = ("solid", "stripes", "dots", "checker")
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

# Caption vocabulary: several words per factor, so text carries more than the class and is never one template.
SHAPE_WORDS = {
    "circle": ("circle", "disc", "round dot"),
    "square": ("square", "box", "block"),
    "triangle": ("triangle", "wedge"),
    "cross": ("cross", "plus sign"),
    "ring": ("ring", "hoop", "donut"),
}
COLOUR_WORDS = {
    "red": ("red", "crimson", "scarlet"),
    "yellow": ("yellow", "golden", "lemon"),
    "green": ("green", "emerald", "lime"),
    "blue": ("blue", "navy", "azure"),
}
TEXTURE_WORDS = {
    "solid": ("plain", "solid"),
    "stripes": ("striped", "banded"),
    "dots": ("dotted", "spotted"),
    "checker": ("checkered", "chequered"),
}
TEMPLATES = (
    "a {size}{colour} {texture} {shape} {position}",
    "{texture} {shape}, {colour}, {position}",
    "photo of a {colour} {shape} with a {texture} pattern",
    "a {colour} {shape} {position}",
    "there is a {size}{texture} {shape} in {colour}",
    "{colour} {texture} {shape}",
)
UNINFORMATIVE = ("IMG_{:04d}", "DSC{:05d}", "photo", "image", "untitled", "picture {}", "download ({})", "stock photo {}")

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


# ---------------------------------------------------------------- rendering


def _hsv_to_rgb(h, s, v):
    """Piecewise-linear HSV->RGB; h in degrees [0, 360), arrays of shape (N,)."""
    h = h % 360.0
    c = v * s
    hp = h / 60.0
    x = c * (1.0 - np.abs(hp % 2.0 - 1.0))
    zeros = np.zeros_like(h)
    sector = np.floor(hp).astype(np.int64) % 6
    table = [(c, x, zeros), (x, c, zeros), (zeros, c, x), (zeros, x, c), (x, zeros, c), (c, zeros, x)]
    rgb = np.zeros(h.shape + (3,))
    for k, (r, g, b) in enumerate(table):
        m = sector == k
        rgb[m] = np.stack([r[m], g[m], b[m]], axis=-1)
    return rgb + (v - c)[:, None]


def _grid(n: int, size: int):
    coords = (np.arange(size, dtype=np.float64) + 0.5) / size * 2.0 - 1.0  # [-1, 1]
    yy, xx = np.meshgrid(coords, coords, indexing="ij")
    return np.broadcast_to(xx, (n, size, size)), np.broadcast_to(yy, (n, size, size))


def _shape_mask(shape, u, v, r):
    """Shape masks in the object's own rotated frame (u, v), radius r: (N, H, W) bool."""
    rr = r[:, None, None]
    au, av = np.abs(u), np.abs(v)
    d2 = u * u + v * v
    masks = np.zeros(u.shape, dtype=bool)
    for k, name in enumerate(SHAPES):
        m = shape == k
        if not m.any():
            continue
        if name == "circle":
            mk = d2[m] < rr[m] ** 2
        elif name == "square":
            mk = np.maximum(au[m], av[m]) < rr[m] * 0.82
        elif name == "triangle":  # equilateral, three half-planes; 0.5 and sqrt(3)/2 exact enough
            s3 = np.sqrt(3.0) / 2.0
            a = -v[m]
            b = 0.5 * v[m] + s3 * u[m]
            c = 0.5 * v[m] - s3 * u[m]
            mk = np.maximum(np.maximum(a, b), c) < rr[m] * 0.55
        elif name == "cross":
            arm = rr[m] * 0.32
            mk = ((au[m] < arm) & (av[m] < rr[m])) | ((av[m] < arm) & (au[m] < rr[m]))
        else:  # ring
            mk = (d2[m] < rr[m] ** 2) & (d2[m] > (rr[m] * 0.58) ** 2)
        masks[m] = mk
    return masks


def _texture(texture, u, v, freq):
    """1.0 where the texture darkens the shape, else 0.0."""
    f = freq[:, None, None]
    stripes = ((u * f) % 1.0) < 0.5
    cu, cv = (u * f) % 1.0 - 0.5, (v * f) % 1.0 - 0.5
    dots = cu * cu + cv * cv < 0.09
    checker = (np.floor(u * f) + np.floor(v * f)) % 2.0 == 0.0
    out = np.zeros(u.shape)
    for k, pattern in ((1, stripes), (2, dots), (3, checker)):
        m = texture == k
        out[m] = pattern[m]
    return out


def _background(rng, n, size, xx, yy):
    base = rng.random((n, 3)) * 0.55 + 0.15
    grey = base.mean(axis=1, keepdims=True)
    base = grey + (base - grey) * 0.35  # mostly desaturated, so colour belongs to the object
    gx, gy = rng.normal(0, 0.12, (2, n))
    grad = gx[:, None, None] * xx + gy[:, None, None] * yy
    return np.clip(base[:, None, None, :] + grad[..., None], 0.0, 1.0)


def render(rng: np.random.Generator, shape, colour, texture, size: int, easy=None, chunk: int = 256) -> np.ndarray:
    """Render N objects: uint8 (N, size, size, 3), their radius (N,) and centre (N, 2) in [-1, 1].

    `easy` marks large, centred, plain ones.

    Works in chunks that fit in cache (several times faster than one big array).
    """
    easy = np.zeros(len(shape), dtype=bool) if easy is None else easy
    parts = [
        _render(rng, shape[i : i + chunk], colour[i : i + chunk], texture[i : i + chunk], size, easy[i : i + chunk])
        for i in range(0, len(shape), chunk)
    ]
    if not parts:
        return np.zeros((0, size, size, 3), np.uint8), np.zeros(0), np.zeros((0, 2))
    return tuple(np.concatenate(p) for p in zip(*parts))


def _render(rng, shape, colour, texture, size, easy):
    n = len(shape)
    xx, yy = _grid(n, size)
    img = _background(rng, n, size, xx, yy)

    radius = np.where(easy, 0.62, rng.random(n) * 0.32 + 0.28)
    centre = np.where(easy[:, None], 0.0, (rng.random((n, 2)) * 2 - 1) * (0.95 - radius)[:, None])
    rot = rng.normal(size=(n, 2))
    rot /= np.sqrt((rot * rot).sum(axis=1, keepdims=True))  # cos/sin without transcendental calls
    dx, dy = xx - centre[:, 0, None, None], yy - centre[:, 1, None, None]
    cs, sn = rot[:, 0, None, None], rot[:, 1, None, None]
    u, v = cs * dx + sn * dy, -sn * dx + cs * dy

    hue = np.array([HUES[COLOURS[c]] for c in colour]) + (rng.random(n) * 2 - 1) * 14
    sat = np.where(easy, 0.9, rng.random(n) * 0.45 + 0.5)
    val = np.where(easy, 0.95, rng.random(n) * 0.4 + 0.55)
    rgb = _hsv_to_rgb(hue, sat, val)

    # A distractor: a small blob of another colour and shape, so colour and shape are not just "the biggest pixels".
    has_distractor = (rng.random(n) < 0.5) & ~easy
    d_shape = rng.integers(0, len(SHAPES), n)
    d_centre = (rng.random((n, 2)) * 2 - 1) * 0.8
    d_r = rng.random(n) * 0.1 + 0.12
    d_rgb = _hsv_to_rgb(rng.random(n) * 360, rng.random(n) * 0.6 + 0.3, rng.random(n) * 0.5 + 0.4)
    d_mask = _shape_mask(d_shape, xx - d_centre[:, 0, None, None], yy - d_centre[:, 1, None, None], d_r)
    d_mask &= has_distractor[:, None, None]
    img = np.where(d_mask[..., None], d_rgb[:, None, None, :], img)

    mask = _shape_mask(np.asarray(shape), u, v, radius)
    freq = rng.random(n) * 2.0 + 3.0
    shade = 1.0 - 0.55 * _texture(np.where(easy, 0, texture), u, v, freq)
    obj = rgb[:, None, None, :] * shade[..., None]
    img = np.where(mask[..., None], obj, img)

    noise = rng.normal(0, 0.03, img.shape)
    return _to_uint8(img + noise), radius, centre


def _to_uint8(img):
    return np.floor(np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def render_clutter(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    """Off-distribution images: rectangles and bars of many colours, no class object."""
    xx, yy = _grid(n, size)
    img = _background(rng, n, size, xx, yy)
    for _ in range(6):
        c = rng.random((n, 2)) * 2 - 1
        half = rng.random((n, 2)) * 0.5 + 0.05
        rgb = _hsv_to_rgb(rng.random(n) * 360, rng.random(n), rng.random(n) * 0.7 + 0.3)
        m = (np.abs(xx - c[:, 0, None, None]) < half[:, 0, None, None]) & (
            np.abs(yy - c[:, 1, None, None]) < half[:, 1, None, None]
        )
        img = np.where(m[..., None], rgb[:, None, None, :], img)
    return _to_uint8(img + rng.normal(0, 0.06, img.shape))


def render_blank(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    base = rng.random((n, 1, 1, 3))
    return _to_uint8(np.broadcast_to(base, (n, size, size, 3)) + rng.normal(0, 0.01, (n, size, size, 3)))


def corrupt(rng: np.random.Generator, images: np.ndarray) -> np.ndarray:
    """What a half-downloaded JPEG decodes to: rows from a random line down are grey or garbage."""
    out = images.copy()
    n, size = len(images), images.shape[1]
    start = rng.integers(size // 5, size * 3 // 5, n)
    garbage = rng.random(n) < 0.5
    for i in range(n):
        out[i, start[i] :] = rng.integers(0, 256, out[i, start[i] :].shape, dtype=np.uint8) if garbage[i] else 128
    return out


def encode_png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


# ---------------------------------------------------------------- splits


def class_prior(num_classes: int, imbalance: float, rng: np.random.Generator) -> np.ndarray:
    """Zipf-like class frequencies (exponent `imbalance`), in a seeded class order."""
    weights = (np.arange(num_classes) + 1.0) ** -imbalance if imbalance > 0 else np.ones(num_classes)
    weights = weights[rng.permutation(num_classes)]
    return weights / weights.sum()


def captions_for(rng: np.random.Generator, labels, texture, radius, centre) -> np.ndarray:
    """One caption per example from its factors: a random template and random synonyms."""
    out = []
    for label, tex, r, (cx, cy) in zip(labels, texture, radius, centre):
        shape, colour = SHAPES[label // len(COLOURS)], COLOURS[label % len(COLOURS)]
        if abs(cx) < 0.25 and abs(cy) < 0.25:
            position = "in the centre"
        elif abs(cx) >= abs(cy):
            position = "on the left" if cx < 0 else "on the right"
        else:
            position = "at the top" if cy < 0 else "at the bottom"
        words = {
            "shape": _pick(rng, SHAPE_WORDS[shape]),
            "colour": _pick(rng, COLOUR_WORDS[colour]),
            "texture": _pick(rng, TEXTURE_WORDS[TEXTURES[tex]]),
            "size": "small " if r < 0.4 else ("large " if r > 0.5 else ""),
            "position": position,
        }
        out.append(_pick(rng, TEMPLATES).format(**words))
    return np.array(out, dtype=object)


def uninformative_captions(rng: np.random.Generator, n: int) -> np.ndarray:
    return np.array([_pick(rng, UNINFORMATIVE).format(int(rng.integers(0, 10000))) for _ in range(n)], dtype=object)


def _pick(rng, options):
    return options[int(rng.integers(0, len(options)))]


def _clean_examples(rng, n, size, prior=None, easy=None):
    """Clean examples: images, labels, textures and captions that describe them."""
    num_classes = len(CLASS_NAMES)
    labels = rng.choice(num_classes, size=n, p=prior) if prior is not None else rng.integers(0, num_classes, n)
    texture = rng.integers(0, len(TEXTURES), n)
    images, radius, centre = render(rng, labels // len(COLOURS), labels % len(COLOURS), texture, size, easy)
    captions = captions_for(rng, labels, texture, radius, centre)
    return images, labels.astype(np.int32), texture.astype(np.int32), captions


def make_pool(cfg: DataConfig, rng: np.random.Generator) -> dict:
    """The noisy pool's columns: images, labels and captions as given to the learner, pathology, texture."""
    n, size = cfg.num_pool, cfg.image_size
    num_classes = len(CLASS_NAMES)
    rates = cfg.pathologies.model_dump()
    probs = np.array([1.0 - sum(rates.values())] + [rates[p] for p in PATHOLOGIES[1:]])
    pathology = rng.choice(len(PATHOLOGIES), size=n, p=probs)
    images, labels, texture, captions = _clean_examples(rng, n, size, prior=class_prior(num_classes, cfg.class_imbalance, rng))
    true_captions, true_labels = captions.copy(), labels.copy()

    def where(name):
        return np.flatnonzero(pathology == PATHOLOGIES.index(name))

    idx = where("noisy_label")  # the image and caption agree; the label does not
    labels[idx] = (labels[idx] + rng.integers(1, num_classes, len(idx))) % num_classes

    idx = where("duplicate")  # near-copies of a few easy, prototypical images, with their own captions
    src_images, src_labels, src_texture, src_captions = _clean_examples(
        rng, cfg.duplicate_sources, size, easy=np.ones(cfg.duplicate_sources, dtype=bool)
    )
    pick = rng.integers(0, cfg.duplicate_sources, len(idx))
    jitter = rng.integers(-3, 4, (len(idx), size, size, 3))
    images[idx] = np.clip(src_images[pick].astype(np.int64) + jitter, 0, 255).astype(np.uint8)
    labels[idx], texture[idx], captions[idx] = src_labels[pick], src_texture[pick], src_captions[pick]

    # Blank and clutter images carry a random label and another image's alt-text.
    for name, images_of in (("blank", render_blank), ("off_distribution", render_clutter)):
        idx = where(name)
        images[idx] = images_of(rng, len(idx), size)
        labels[idx] = rng.integers(0, num_classes, len(idx))
        captions[idx] = true_captions[rng.integers(0, n, len(idx))]

    idx = where("corrupt")
    images[idx] = corrupt(rng, images[idx])

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
    labels[undecodable] = rng.integers(0, num_classes, int(undecodable.sum()))
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
    """What the bytes follow from: the parameters (seed included) and this file's code."""
    return {
        "code_sha256": file_sha256(Path(__file__)),
        **cfg.model_dump(exclude={"dir", "name"}),
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
    """Write pool/, curated/, eval/test, eval/texture and manifest.json under `root`. They are written
    into root.generating/ and moved into place at the end, so a crash never leaves a half-written root."""
    final = Path(root or cfg.root)
    check_owned(final)
    root = final.with_name(final.name + ".generating")
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    pool_rng, curated_rng, test_rng, transfer_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(cfg.seed).spawn(4))
    size = cfg.image_size

    pool = make_pool(cfg, pool_rng)
    _write_split(root / "pool", pool, cfg.shard_size, desc="pool")
    counts = {"pool": cfg.num_pool, "pool_pathologies": {p: int((pool["pathology"] == p).sum()) for p in PATHOLOGIES}}

    for name, rng, n in (("curated", curated_rng, cfg.num_curated), ("eval/test", test_rng, cfg.num_test)):
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
    (root / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    if final.exists():
        shutil.rmtree(final)
    os.replace(root, final)
    return final
