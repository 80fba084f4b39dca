"""The built-in pool's images: shapes of a colour family with a texture, on a background, drawn in numpy.

Pixel maths uses only IEEE-exact operations (+ - * / sqrt, floor) on float64, so the PNG bytes are the
same on every machine: the committed data.dvc stays valid.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

SHAPES = ("circle", "square", "triangle", "cross", "ring")


COLOURS = ("red", "yellow", "green", "blue")


# Hue centres (degrees) of the colour families; each image jitters around them.
HUES = {"red": 0.0, "yellow": 55.0, "green": 125.0, "blue": 225.0}


TEXTURES = ("solid", "stripes", "dots", "checker")


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
    """Off-distribution images: clutter of many small objects of any colour, and no class object among them."""
    xx, yy = _grid(n, size)
    img = _background(rng, n, size, xx, yy)
    for _ in range(4):
        _blob(rng, img, xx, yy, radius=(0.1, 0.26), saturation=(0.3, 0.95))
    return _to_uint8(img + rng.normal(0, 0.03, img.shape))  # the same sensor noise as every other image


NO_CLASS_HUES = (28.0, 90.0, 175.0, 290.0)  # orange, chartreuse, cyan, purple: between the classes' colour families


def _blob(rng, img, xx, yy, radius, saturation, present=None, hues=None) -> None:
    """Paint a rotated shape of a random colour (or of a hue near one of `hues`) into each image (where
    `present`), in place."""
    n = len(img)
    shape = rng.integers(0, len(SHAPES), n)
    centre = (rng.random((n, 2)) * 2 - 1) * 0.75
    r = rng.random(n) * (radius[1] - radius[0]) + radius[0]
    rot = rng.normal(size=(n, 2))
    rot /= np.sqrt((rot * rot).sum(axis=1, keepdims=True))
    dx, dy = xx - centre[:, 0, None, None], yy - centre[:, 1, None, None]
    cs, sn = rot[:, 0, None, None], rot[:, 1, None, None]
    rgb = _hsv_to_rgb(
        rng.random(n) * 360, rng.random(n) * (saturation[1] - saturation[0]) + saturation[0], rng.random(n) * 0.4 + 0.55
    )
    mask = _shape_mask(shape, cs * dx + sn * dy, -sn * dx + cs * dy, r)
    if present is not None:
        mask &= present[:, None, None]
    img[:] = np.where(mask[..., None], rgb[:, None, None, :], img)


def render_blank(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    """Images of no class: the same backgrounds and sensor noise as the rest, and an object as large as a class
    object but of a colour no class has (orange, chartreuse, cyan, purple). Its label is wrong whatever it says."""
    xx, yy = _grid(n, size)
    img = _background(rng, n, size, xx, yy)
    _blob(rng, img, xx, yy, radius=(0.28, 0.5), saturation=(0.5, 0.95), hues=NO_CLASS_HUES)
    return _to_uint8(img + rng.normal(0, 0.03, img.shape))


def render_flat(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    """Blank frames: one flat colour and a trace of noise (what `winnow data corrupt --blank` writes)."""
    base = rng.random((n, 1, 1, 3))
    return _to_uint8(np.broadcast_to(base, (n, size, size, 3)) + rng.normal(0, 0.01, (n, size, size, 3)))


def half_decoded(rng: np.random.Generator, images: np.ndarray) -> np.ndarray:
    """What a decoder that lost sync part-way makes of an image: from a random line down, the rows are shifted
    sideways and their colour channels swapped. No constant signature: the pixels are the image's own."""
    out = images.copy()
    n, size = len(images), images.shape[1]
    start = rng.integers(size // 5, size * 3 // 5, n)
    shift = rng.integers(size // 4, size * 3 // 4, n)
    order = np.array([(1, 2, 0), (2, 0, 1), (2, 1, 0), (0, 2, 1), (1, 0, 2)])[rng.integers(0, 5, n)]
    for i in range(n):
        tail = np.roll(out[i, start[i] :], shift[i], axis=1)
        out[i, start[i] :] = tail[..., order[i]]
    return out


def augment(rng: np.random.Generator, images: np.ndarray) -> np.ndarray:
    """Near-copies as a re-upload makes them: mirrored or not, shifted a few pixels, brighter or darker, re-noised."""
    n = len(images)
    out = images.astype(np.float64) / 255.0
    flip = rng.random(n) < 0.5
    out[flip] = out[flip, :, ::-1]
    for i, (dy, dx) in enumerate(rng.integers(-3, 4, (n, 2))):
        out[i] = np.roll(out[i], (int(dy), int(dx)), axis=(0, 1))
    out = out * rng.uniform(0.85, 1.15, (n, 1, 1, 1)) + rng.normal(0, 0.03, out.shape)
    return _to_uint8(out)


def encode_png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()
