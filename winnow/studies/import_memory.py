"""--study import_memory: peak memory of `winnow data import` from each kind of source, the pool and a larger one."""

from __future__ import annotations

import json
import logging
import shutil
import sys
import time
from pathlib import Path

from winnow.config import Params
from winnow.datasets.contract import read_manifest
from winnow.files import write_json
from winnow.importers import READERS
from winnow.stages.data import data_stage
from winnow.stages.paths import Paths
from winnow.studies.memory import fresh_process, peak

log = logging.getLogger("winnow")


def write_import_source(pool: Path, kind: str, dest: Path, copies: int) -> Path:
    """The pool's shards written `copies` times over as a source a user would have: Parquet files of 5,000
    rows, WebDataset tars of 5,000 keys (png, txt, cls, json), or an ImageFolder tree of PNG files. Written once
    (a `complete` mark), reused after."""
    import io
    import tarfile

    import pyarrow as pa
    import pyarrow.parquet as pq

    from winnow.datasets.contract import shard_files

    if (dest / "complete").exists():
        return dest
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    files = shard_files(pool)
    for copy in range(copies):
        for path in files:
            table = pq.read_table(path, columns=["image", "label", "caption"])
            stem = f"{copy:03d}-{path.stem}"
            if kind == "parquet":
                pq.write_table(
                    table.append_column("copy", pa.array([copy] * table.num_rows, pa.int32())), dest / f"{stem}.parquet"
                )
                continue
            images, labels, captions = (table.column(c).to_pylist() for c in ("image", "label", "caption"))
            if kind == "imagefolder":
                for i, (image, label) in enumerate(zip(images, labels)):
                    folder = dest / f"class{label:02d}"
                    folder.mkdir(exist_ok=True)
                    (folder / f"{stem}-{i:05d}.png").write_bytes(image)
                continue
            with tarfile.open(dest / f"{stem}.tar", "w") as tar:
                for i, (image, label, caption) in enumerate(zip(images, labels, captions)):
                    for ext, data in (
                        ("png", image),
                        ("txt", (caption or "").encode()),
                        ("cls", str(label).encode()),
                        ("json", json.dumps({"copy": copy, "row": i}).encode()),
                    ):
                        info = tarfile.TarInfo(f"{stem}-{i:05d}.{ext}")
                        info.size = len(data)
                        tar.addfile(info, io.BytesIO(data))
    (dest / "complete").touch()
    return dest


def measure_import(kind: str, source: str, dest: str) -> dict:
    """`winnow data import KIND SOURCE DEST` in this process: its peak resident memory and seconds."""
    from winnow.importers.importing import import_source

    started = time.perf_counter()
    import_source(kind, source, dest, seed=0)
    return peak(started)


def run(params: Params) -> dict:
    """Peak memory of importing the default pool, and one bench.memory_scale times larger, from each kind of source
    (READERS), each import alone in a fresh process. Sources and imports go under artifacts/memory/import/ (outside
    data.dvc). Writes import_memory.json under Paths.bench."""
    scale = params.bench.memory_scale
    data_stage(params)
    root = Path(params.artifacts) / "memory" / "import"
    rows = []
    for kind in READERS:
        for factor in (1, scale):
            log.info("import memory bench: %s source, %dx the pool", kind, factor)
            source = write_import_source(Path(params.data.root) / "pool", kind, root / f"{kind}-x{factor}", factor)
            dest = root / f"imported-{kind}-x{factor}"
            shutil.rmtree(dest, ignore_errors=True)
            measured = fresh_process("winnow.studies.import_memory", [kind, str(source), str(dest)], f"import {kind} x{factor}")
            counts = read_manifest(dest)["counts"]
            source_mib = sum(p.stat().st_size for p in source.rglob("*") if p.is_file()) / 2**20
            rows.append({"kind": kind, "examples": sum(counts.values()), "source_mib": round(source_mib, 1), **measured})
            log.info("import memory bench: %s x%d: peak %.0f MiB", kind, factor, measured["peak_rss_mib"])
            shutil.rmtree(dest)
    result = {"scale": scale, "rows": rows}
    write_json(result, Paths.of(params).study_json("import_memory"))
    return result


def table(result: dict) -> str:
    lines = ["| source | examples | on disk (MiB) | peak RSS (MiB) | seconds |", "|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(
            f"| {r['kind']} | {r['examples']:,} | {r['source_mib']:.0f} | {r['peak_rss_mib']:.0f} | {r['seconds']:.0f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":  # the fresh process of run()
    print(json.dumps(measure_import(*sys.argv[1:4])))


def report(result: dict, paths) -> Path:
    """Its JSON is what a person reads (the table above prints it): nothing more to draw."""
    return paths.study_report(result.get("study", "import_memory"))
