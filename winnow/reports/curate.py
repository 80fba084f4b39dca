"""The curate report: reports/<dataset>/curate-<objective>.md, what was kept by class and pathology, with image grids."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from winnow.curation.rules import RULES
from winnow.datasets.contract import shard_files
from winnow.datasets.images import decode_image
from winnow.files import write_text
from winnow.reports.plots import plot_examples
from winnow.reports.tables import curate_table


def write_curate_report(record: dict, examples: dict[str, list[tuple]], paths) -> Path:
    """reports/<dataset>/curate-<objective>.md: what was kept, by class and pathology, and two image grids."""
    plots, path = paths.curate_plots, paths.curate_report
    link = Path(os.path.relpath(plots, path.parent)).as_posix()
    for side in ("kept", "dropped"):
        plot_examples(examples[side], plots / f"{side}.png", f"{side} (a random sample; score above, pathology in red)")
    fraction = f"{record['fraction']:.0%} of the pool" if record["fraction"] is not None else f"what {record['rule']} keeps"
    balanced = ", the same fraction of each class" if record["balance"] else ""
    checkpoint = (
        f" The checkpoint: the {record['checkpoint_scorer']} ({record['checkpoint_model']}) of `{record['checkpoint']}`."
        if "checkpoint" in record
        else ""
    )
    text = f"""# winnow curate: {record["objective"]}

Source `{record["source"]}`: {record["pool_rows"]:,} pool examples scored by {record["reference_model"]} (scorer `{record["scorer_id"]}` in the store).
Rule `{record["rule"]}`: keep {fraction}{balanced}, ranked by {RULES[record["rule"]].describe}.{checkpoint}
Kept {record["kept_rows"]:,} ({record["kept_fraction"]:.1%}), written to `{record["dest"]}` in the data contract
(ids renumbered from 0, the pool id in `source_id`; `kept_ids.npy` lists the pool ids kept, sorted).
Train on it with `--set data.root={record["dest"]}`.

{curate_table(record)}

![kept examples]({link}/kept.png)

![dropped examples]({link}/dropped.png)

Regenerate: `winnow curate` ({record["seconds"]:.0f} s here).
"""
    write_text(text, path)
    return path


def grid_examples(
    pool: Path, kept: np.ndarray, scores: np.ndarray, meta: dict, class_names: list[str], captions: bool, seed: int, n: int = 24
):
    """A random sample of kept and of dropped examples (seeded), decoded for the report's image grids:
    per side a list of (image, label or caption, score, pathology)."""
    rng = np.random.default_rng(seed)
    dropped = np.setdiff1d(np.flatnonzero(~np.isnan(scores)), kept)
    chosen = {
        side: np.sort(rng.choice(ids, size=min(n, len(ids)), replace=False)) if len(ids) else ids
        for side, ids in (("kept", kept), ("dropped", dropped))
    }
    wanted = np.concatenate(list(chosen.values()))
    images = {}
    for path in shard_files(pool):
        table = pq.read_table(path, columns=["id", "image"])
        ids = table.column("id").to_numpy()
        rows = np.flatnonzero(np.isin(ids, wanted))
        blobs = table.column("image").take(pa.array(rows)).to_pylist()
        for i, blob in zip(ids[rows], blobs):
            try:
                images[int(i)] = decode_image(blob)
            except ValueError:
                pass
    out = {}
    for side, ids in chosen.items():
        rows = []
        for i in ids:
            if int(i) not in images:
                continue
            label = meta["label"][i]
            name = class_names[label] if label >= 0 else "(no label)"
            text = (meta["caption"][i] or "(empty caption)") if captions else name
            rows.append((images[int(i)], str(text), float(scores[i]), meta["pathology"][i]))
        out[side] = rows
    return out
