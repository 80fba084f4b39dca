"""`winnow data corrupt SOURCE DEST`: controlled noise for any dataset in the data contract.

The generator's pathologies, applied to a user's clean data so a benchmark can be built from it:
wrong labels (uniform over the other classes, or flipped to a confusable class drawn from a
confusion matrix: given, or measured from a classifier checkpoint on SOURCE's validation split, eval/val), near-
duplicates, blanks, half-decoded images, undecodable bytes and, where captions exist, mismatched
captions. Each pool row draws at most one pathology at the given rates; what it drew is written to
its `pathology` column (with its `clean_label` and `clean_caption`), so the report can show what
each policy kept. Only the pool changes: curated/ and eval/ are copied byte for byte.

The pool is read and written one shard at a time (memory does not grow with the pool), each shard
with its own generator seeded by (seed, shard): the output is byte-identical for a seed. It is
written to DEST.importing and renamed into place, manifest last, like an import.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from winnow.datasets.contract import read_manifest, read_shard, shard_files
from winnow.datasets.images import decode_image
from winnow.datasets.publish import check_apart, check_dest, publish, staging_folder
from winnow.datasets.render import encode_png, half_decoded, render_flat
from winnow.errors import DataError

KINDS = ("noisy_label", "duplicate", "blank", "corrupt", "undecodable", "mismatched_caption")
LABEL_UNKNOWN = {"noisy_label", "blank", "off_distribution", "undecodable"}  # earlier pathologies that break the label
DONORS_PER_SHARD = 20  # near-duplicates copy one of this many images of their shard: a few images, repeated


def check_rates(rates: dict[str, float], confusable: float) -> None:
    unknown = set(rates) - set(KINDS)
    if unknown:
        raise DataError(f"unknown pathology {sorted(unknown)}; the kinds are {list(KINDS)}")
    for kind, rate in rates.items():
        if not 0 <= rate <= 1:
            raise DataError(f"--{kind.replace('_', '-')} must be a rate in [0, 1], got {rate}")
    if sum(rates.values()) > 1:
        raise DataError(f"the pathology rates add up to {sum(rates.values()):.3f}; each row draws at most one, so keep them <= 1")
    if not 0 <= confusable <= 1:
        raise DataError(f"--confusable must be a share of the wrong labels in [0, 1], got {confusable}")


def read_confusion(path: str | Path, source: Path, num_classes: int) -> np.ndarray:
    """A KxK matrix of how often class i is mistaken for class j: from a .npy, .csv or .json file, or
    measured by a classifier checkpoint (.pt, e.g. a reference trained on SOURCE) on SOURCE's eval/val (never its test split)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such confusion matrix or checkpoint (--confusion)")
    if path.suffix == ".pt":
        matrix = measured_confusion(path, source, num_classes)
    else:
        try:
            if path.suffix == ".npy":
                matrix = np.load(path, allow_pickle=False)
            elif path.suffix == ".json":
                matrix = np.asarray(json.loads(path.read_text()), dtype=np.float64)
            else:
                matrix = np.loadtxt(path, delimiter=",", ndmin=2)
        except (ValueError, OSError) as e:
            raise DataError(f"{path}: not a readable confusion matrix ({e}); write K rows of K numbers") from e
    matrix = np.asarray(matrix, dtype=np.float64)
    if matrix.shape != (num_classes, num_classes):
        raise DataError(f"{path}: the confusion matrix is {matrix.shape}, but {source} has {num_classes} classes")
    if not np.isfinite(matrix).all() or (matrix < 0).any():
        raise DataError(f"{path}: the confusion matrix has a negative or non-finite entry; counts or rates are >= 0")
    return matrix


def measured_confusion(checkpoint: Path, source: Path, num_classes: int) -> np.ndarray:
    """Counts of (true class, predicted class) of a classifier checkpoint on SOURCE's validation split (eval/val):
    which classes look alike is a choice made on the data, so it never reads the test set."""
    import torch

    from winnow.datasets.contract import load_split, to_input
    from winnow.method.checkpoints import load_checkpoint, model_from_checkpoint

    meta = load_checkpoint(checkpoint).get("meta", {})
    if meta.get("objective") != "classification" or meta.get("num_classes") != num_classes:
        raise DataError(
            f"{checkpoint}: --confusion needs a classifier of {source}'s {num_classes} classes, but this checkpoint is a "
            f"{meta.get('objective')} model of {meta.get('num_classes')} classes"
        )
    model = model_from_checkpoint(checkpoint).eval()
    val = load_split(source / "eval/val", meta["image_size"], num_classes, metadata=())
    labelled = val.labels >= 0
    with torch.no_grad():
        batches = [model(to_input(val.images[i : i + 500], model)).argmax(1) for i in range(0, len(val), 500)]
        predicted = torch.cat(batches).numpy()
    matrix = np.zeros((num_classes, num_classes))
    np.add.at(matrix, (val.labels[labelled], predicted[labelled]), 1)
    return matrix


def confusable_targets(matrix: np.ndarray) -> np.ndarray:
    """Row i: where a wrong label of class i goes (off-diagonal, normalised); a class never confused is
    flipped uniformly."""
    off = matrix * (1 - np.eye(len(matrix)))
    sums = off.sum(1, keepdims=True)
    uniform = (1 - np.eye(len(matrix))) / max(len(matrix) - 1, 1)
    return np.where(sums > 0, off / np.where(sums > 0, sums, 1), uniform)


@dataclass
class _Rows:
    """One shard being corrupted: what each row held (as read), and what it will hold."""

    drawn: np.ndarray  # each row's drawn pathology: an index into ("clean",) + KINDS
    images: list
    labels: np.ndarray  # -1: none
    captions: list
    before: list[str]  # the pathology an earlier corruption recorded ("clean" where none)
    clean_labels: np.ndarray  # what each image truly shows (-1: unknown)
    clean_captions: list
    pathology: list[str] = field(default_factory=list)
    new_images: list = field(default_factory=list)
    new_labels: np.ndarray | None = None
    new_captions: list = field(default_factory=list)

    def of(self, kind: str) -> np.ndarray:
        return np.flatnonzero(self.drawn == (("clean",) + KINDS).index(kind))


def corrupt_shard(
    table: pa.Table, rng: np.random.Generator, rates: dict, num_classes: int, confusable: float, flips: np.ndarray | None
) -> tuple[pa.Table, dict]:
    """One pool shard with pathologies drawn at `rates`; returns it with pathology, clean_label and
    clean_caption columns, and the count of each pathology written. Each kind is applied in turn, drawing
    from `rng` in a fixed order, so the same seed writes the same bytes."""
    rows = _read_rows(table, rng, rates)
    _flip_labels(rows, rows.of("noisy_label"), rng, num_classes, confusable, flips)
    _duplicate(rows, rows.of("duplicate"), rng)
    for i in rows.of("blank"):
        pixels = _decode(rows.images[i])
        h, w = pixels.shape[:2] if pixels is not None else (32, 32)
        rows.new_images[i] = encode_png(np.ascontiguousarray(render_flat(rng, 1, max(h, w))[0][:h, :w]))
    for i in rows.of("corrupt"):
        pixels = _decode(rows.images[i])
        if pixels is None:
            rows.pathology[i] = rows.before[i]
            continue
        rows.new_images[i] = encode_png(half_decoded(rng, pixels[None])[0])
    for i in rows.of("undecodable"):  # a download cut short: the first bytes of the file only
        if rows.images[i] is None:
            rows.pathology[i] = rows.before[i]  # nothing left to cut short
        else:
            rows.new_images[i] = rows.images[i][: max(1, len(rows.images[i]) // 8)]
    _mismatch_captions(rows, rows.of("mismatched_caption"), rng)
    counts: dict[str, int] = {}
    for kind in rows.pathology:
        counts[kind] = counts.get(kind, 0) + 1
    return _written(table, rows), counts


def _read_rows(table: pa.Table, rng: np.random.Generator, rates: dict) -> _Rows:
    """The shard's rows and each one's drawn pathology (at most one each; the rest keep what they were)."""
    n = table.num_rows
    kinds = ("clean",) + KINDS
    probs = np.array([1.0 - sum(rates.get(k, 0.0) for k in KINDS)] + [rates.get(k, 0.0) for k in KINDS])
    drawn = rng.choice(len(kinds), size=n, p=probs / probs.sum())
    images = table.column("image").to_pylist()
    labels = np.array(table.column("label").fill_null(-1).to_pylist(), dtype=np.int64)
    captions = table.column("caption").to_pylist() if "caption" in table.column_names else [None] * n
    before = table.column("pathology").to_pylist() if "pathology" in table.column_names else ["clean"] * n
    before = [b or "clean" for b in before]
    # what each row's image truly shows: the source's own record where it was corrupted before; else its label,
    # unless an earlier pathology says the label is wrong (-1: unknown)
    if "clean_label" in table.column_names:
        clean_labels = np.array(table.column("clean_label").fill_null(-1).to_pylist(), dtype=np.int64)
    else:
        clean_labels = np.where([b in LABEL_UNKNOWN for b in before], -1, labels)
    clean_captions = table.column("clean_caption").to_pylist() if "clean_caption" in table.column_names else list(captions)
    rows = _Rows(drawn, images, labels, captions, before, clean_labels, clean_captions)
    rows.pathology = [kinds[d] if d else before[i] for i, d in enumerate(drawn)]
    rows.new_images, rows.new_labels, rows.new_captions = list(images), labels.copy(), list(captions)
    return rows


def _flip_labels(rows: _Rows, idx: np.ndarray, rng, num_classes: int, confusable: float, flips: np.ndarray | None) -> None:
    """Wrong labels: another class than the truth, uniformly, or (a `confusable` share) drawn from `flips`."""
    for i in idx[rows.labels[idx] < 0]:  # no label to make wrong
        rows.pathology[i] = rows.before[i]
    idx = idx[rows.labels[idx] >= 0]
    truth = np.where(rows.clean_labels[idx] >= 0, rows.clean_labels[idx], rows.labels[idx])  # wrong relative to the truth
    shift = rng.integers(1, max(num_classes, 2), len(idx))
    uniform = (truth + shift) % num_classes
    if flips is not None and len(idx):
        use_matrix = rng.random(len(idx)) < confusable
        cumulative = np.cumsum(flips[truth], axis=1)
        drawn_class = (rng.random((len(idx), 1)) > cumulative).sum(1).clip(0, num_classes - 1)
        rows.new_labels[idx] = np.where(use_matrix & (drawn_class != truth), drawn_class, uniform)
    else:
        rows.new_labels[idx] = uniform


def _duplicate(rows: _Rows, idx: np.ndarray, rng) -> None:
    """Near-duplicates: a jittered copy of one of a few clean images of the shard, with its label and caption."""
    if not len(idx):
        return
    clean = np.flatnonzero((rows.drawn == 0) & (np.array(rows.before) == "clean"))  # copies of clean images only
    if not len(clean):  # every row drawn for some pathology (--duplicate 1.0): copy the clean originals
        clean = np.flatnonzero(np.array(rows.before) == "clean")
    donors = rng.choice(clean, size=min(DONORS_PER_SHARD, len(clean)), replace=False) if len(clean) else np.array([], int)
    for i in idx:
        if not len(donors):
            rows.pathology[i] = rows.before[i]
            continue
        d = int(donors[rng.integers(0, len(donors))])
        pixels = _decode(rows.images[d])
        if pixels is None:
            rows.pathology[i] = rows.before[i]
            continue
        jitter = rng.integers(-3, 4, pixels.shape)
        rows.new_images[i] = encode_png(np.clip(pixels.astype(np.int64) + jitter, 0, 255).astype(np.uint8))
        rows.new_labels[i], rows.new_captions[i] = rows.labels[d], rows.captions[d]
        rows.clean_labels[i], rows.clean_captions[i] = rows.clean_labels[d], rows.clean_captions[d]


def _mismatch_captions(rows: _Rows, idx: np.ndarray, rng) -> None:
    """Mismatched captions: the caption of another example, of another class where labels say."""
    if not len(idx):
        return
    has_caption = np.array([c is not None and bool(str(c).strip()) for c in rows.captions])
    candidates = np.flatnonzero(has_caption)
    labels = rows.labels
    for i in idx:
        others = candidates[(labels[candidates] != labels[i]) | (labels[i] < 0)] if len(candidates) else candidates
        others = others[others != i]
        if not has_caption[i] or not len(others):
            rows.pathology[i] = rows.before[i]
            continue
        rows.new_captions[i] = rows.captions[int(others[rng.integers(0, len(others))])]


def _written(table: pa.Table, rows: _Rows) -> pa.Table:
    """The shard as written: its new images, labels and captions, with pathology, clean_label and clean_caption."""
    out = table
    replace = {
        "image": pa.array(rows.new_images, pa.binary()),
        "label": pa.array([None if v < 0 else int(v) for v in rows.new_labels], pa.int32()),
    }
    if "caption" in table.column_names:
        replace["caption"] = pa.array(rows.new_captions, pa.string())
    for name, array in replace.items():
        out = out.set_column(out.column_names.index(name), name, array)
    extra = {
        "pathology": pa.array(rows.pathology, pa.string()),
        "clean_label": pa.array([None if v < 0 else int(v) for v in rows.clean_labels], pa.int32()),
    }
    if "caption" in table.column_names:
        extra["clean_caption"] = pa.array(rows.clean_captions, pa.string())
    for name, array in extra.items():
        if name in out.column_names:
            out = out.drop_columns([name])
        out = out.append_column(name, array)
    return out


def _has_captions(path) -> bool:
    if "caption" not in pq.read_schema(path).names:
        return False
    return pq.read_table(path, columns=["caption"]).column("caption").null_count < pq.read_metadata(path).num_rows


def _decode(blob) -> np.ndarray | None:
    if blob is None:
        return None
    try:
        return decode_image(blob)
    except ValueError:
        return None


def corrupt_dataset(
    source: str | Path,
    dest: str | Path,
    rates: dict[str, float],
    *,
    confusable: float = 0.0,
    confusion: str | Path | None = None,
    seed: int = 0,
) -> Path:
    """Write SOURCE with its pool corrupted at `rates` (per row, at most one pathology each) to DEST."""
    source, dest = Path(source), Path(dest)
    rates = {k: float(v) for k, v in rates.items() if v}
    check_rates(rates, confusable)
    manifest = read_manifest(source)
    num_classes = len(manifest.get("class_names", []))
    files = shard_files(source / "pool")
    if rates.get("noisy_label") and num_classes < 2:
        raise DataError(f"{source}: --noisy-label needs labels of at least 2 classes; its manifest has {num_classes}")
    if confusable and confusion is None:
        raise DataError(
            "--confusable needs --confusion: a KxK matrix (.npy/.csv/.json) or a classifier checkpoint (.pt) whose "
            "mistakes on SOURCE's eval/val say which classes are confusable"
        )
    if confusion is not None and not confusable:
        raise DataError(
            "--confusion is read only with --confusable SHARE (the share of wrong labels flipped to a confusable "
            "class); pass --confusable, or leave --confusion out"
        )
    if rates.get("mismatched_caption") and not any(_has_captions(path) for path in files):
        raise DataError(f"{source / 'pool'}: has no captions, so --mismatched-caption has nothing to mismatch")
    matrix = read_confusion(confusion, source, num_classes) if confusion is not None else None
    flips = confusable_targets(matrix) if matrix is not None else None
    check_apart(dest, [source])
    check_dest(dest)
    target = dest.resolve()
    staging = staging_folder(target)
    totals: dict[str, int] = {}
    try:
        for name in ("curated", "eval"):
            if (source / name).exists():
                shutil.copytree(source / name, staging / name)
        (staging / "pool").mkdir()
        for shard, path in enumerate(tqdm(files, desc="corrupt pool", unit="shard", leave=False, disable=None)):
            table = read_shard(path)
            out, counts = corrupt_shard(table, np.random.default_rng([seed, shard]), rates, num_classes, confusable, flips)
            pq.write_table(out, staging / "pool" / path.name, compression="zstd")
            for k, v in counts.items():
                totals[k] = totals.get(k, 0) + v
    except Exception:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    manifest = dict(manifest)
    manifest.setdefault("source", {"path": str(source)})
    generator = manifest.pop("generator", None)  # no longer the generator's output: `winnow data synth` must not own it
    manifest.pop("pool_hash", None)
    if "pool_pathologies" in manifest.get("counts", {}):
        manifest["counts"] = {**manifest["counts"], "pool_pathologies": dict(sorted(totals.items()))}
    manifest["corrupted"] = {
        "from_generator": generator,
        "from": str(source),
        "from_content_hash": manifest.get("content_hash"),
        "rates": rates,
        "confusable": confusable,
        "confusion": str(confusion) if confusion is not None else None,
        "confusion_matrix": matrix.tolist() if matrix is not None else None,  # what the flips were drawn from
        "seed": seed,
        "pool_pathologies": dict(sorted(totals.items())),
    }
    columns = manifest.get("source", {}).get("metadata_columns")
    if isinstance(columns, dict) and "pool" in columns:  # the pool's record of what the shards carry
        added = [c for c in ("pathology", "clean_label", "clean_caption") if c not in columns["pool"]]
        manifest["source"] = {**manifest["source"], "metadata_columns": {**columns, "pool": columns["pool"] + added}}
    publish(staging, target, manifest)
    return dest
