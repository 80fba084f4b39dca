"""An image's bytes decoded to 8-bit RGB pixels: the one decoder every split, the decoded cache and the importers use
(the decoded cache keys its entries on this module's code, datasets/decoded.py)."""

from __future__ import annotations

import io
import re

import numpy as np
from PIL import Image, UnidentifiedImageError

DECODE_VERSION = 2  # bump when decoding gives other pixels for the same bytes (2: large JPEGs decoded at a reduced scale)
FITS = ("squash", "crop")  # how an image that is not size x size becomes one (data.fit)


def decode_image(blob: bytes, size: int | None = None, fit: str = "squash") -> np.ndarray:
    """PNG/JPEG bytes -> uint8 (H, W, 3), at size x size when a size is given. Raises ValueError when the bytes are
    not an image, or an image too large to decode safely (PIL's decompression-bomb limit).

    A JPEG at least twice the size is decoded at a reduced scale (PIL's draft: libjpeg's DCT scaling by 1/2, 1/4
    or 1/8, to the smallest scale at or above the size on both sides), which skips most of the decoding's work;
    the resize then averages what is left (tests/test_decode_workers.py bounds the difference from a full decode).
    fit "squash" resizes both sides to the size (the whole picture, its aspect ratio changed); "crop" resizes the
    shorter side to the size and keeps the centre square (the aspect ratio kept, the borders of the longer side
    cut: open_clip's and torchvision's evaluation transform)."""
    if fit not in FITS:  # not a ValueError: that would mark the row undecodable instead of naming the setting
        raise RuntimeError(f"fit must be one of {FITS}, got {fit!r}")
    try:
        with Image.open(io.BytesIO(blob)) as im:
            if size is not None and im.format == "JPEG" and min(im.size) >= 2 * size:
                im.draft("RGB", (size, size) if fit == "squash" else _shorter_side_at(im.size, size))
            im = _to_rgb(im)
            if size is not None and im.size != (size, size):
                im = _fitted(im, size, fit)
            return np.asarray(im)
    except Image.DecompressionBombError as e:
        raise ValueError(f"decompression bomb: {e}") from e
    except (UnidentifiedImageError, OSError, SyntaxError) as e:  # without PIL's object address: the same reason each run
        raise ValueError(re.sub(r"<_io\.BytesIO object at 0x[0-9a-f]+>", "its bytes", str(e)) or type(e).__name__) from e


def decode_row(blob: bytes | None, size: int | None, fit: str = "squash") -> tuple[np.ndarray | None, str | None]:
    """One row's image column -> (its pixels, None), or (None, the reason it is skipped) when the row holds no image
    or bytes that do not decode: the one place a row is judged, in line and in the decode workers alike."""
    try:
        if blob is None:
            raise ValueError("null image")
        return decode_image(blob, size, fit), None
    except ValueError as e:
        return None, f"undecodable image: {e}"


def _shorter_side_at(wh: tuple[int, int], size: int) -> tuple[int, int]:
    """The (w, h) of an image of shape wh scaled so that its shorter side is `size`."""
    scale = size / min(wh)
    return max(size, round(wh[0] * scale)), max(size, round(wh[1] * scale))


def _fitted(im: Image.Image, size: int, fit: str) -> Image.Image:
    if fit == "squash":
        return im.resize((size, size), Image.BILINEAR)
    w, h = _shorter_side_at(im.size, size)
    left, top = (w - size) // 2, (h - size) // 2
    return im.resize((w, h), Image.BILINEAR).crop((left, top, left + size, top + size))


def _to_rgb(im: Image.Image) -> Image.Image:
    """8-bit RGB. PIL's own convert("RGB") clips 16-bit and 32-bit greyscale at 255 (a near-white
    image); those are rescaled from their full range instead."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        pixels = np.asarray(im, dtype=np.float64)
        top = 65535.0 if im.mode.startswith("I;16") or (im.mode == "I" and im.format == "PNG") else max(float(pixels.max()), 1.0)
        grey = np.clip(np.round(pixels / top * 255.0), 0, 255).astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB")
    if im.mode == "RGB":  # already: decoded as it is, without convert's copy (a third of a small PNG's decode)
        im.load()
        return im
    return im.convert("RGB")
