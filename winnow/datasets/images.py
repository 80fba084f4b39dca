"""An image's bytes decoded to 8-bit RGB pixels: the one decoder every split, the decoded cache and the importers use
(the decoded cache keys its entries on this module's code, datasets/decoded.py)."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, UnidentifiedImageError


def decode_image(blob: bytes, size: int | None = None) -> np.ndarray:
    """PNG/JPEG bytes -> uint8 (H, W, 3). Raises ValueError when the bytes are not an image, or an
    image too large to decode safely (PIL's decompression-bomb limit)."""
    try:
        with Image.open(io.BytesIO(blob)) as im:
            im = _to_rgb(im)
            if size is not None and im.size != (size, size):
                im = im.resize((size, size), Image.BILINEAR)
            return np.asarray(im)
    except Image.DecompressionBombError as e:
        raise ValueError(f"decompression bomb: {e}") from e
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise ValueError(str(e) or type(e).__name__) from e


def _to_rgb(im: Image.Image) -> Image.Image:
    """8-bit RGB. PIL's own convert("RGB") clips 16-bit and 32-bit greyscale at 255 (a near-white
    image); those are rescaled from their full range instead."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        pixels = np.asarray(im, dtype=np.float64)
        top = 65535.0 if im.mode.startswith("I;16") or (im.mode == "I" and im.format == "PNG") else max(float(pixels.max()), 1.0)
        grey = np.clip(np.round(pixels / top * 255.0), 0, 255).astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB")
    return im.convert("RGB")
