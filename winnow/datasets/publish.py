"""Publishing a dataset folder: written into DEST.importing beside DEST, the manifest last, then renamed over DEST,
so a folder that looks complete always is. Shared by `winnow data import` and `winnow data corrupt`."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from winnow.datasets.digests import file_sha256
from winnow.errors import DataError
from winnow.files import write_json

STAGING_MARK = ".winnow-importing"  # what makes DEST.importing ours to remove


def publish(staging: Path, target: Path, manifest: dict) -> None:
    """Finish a dataset written into `staging`: its shards' hashes and content hash into the manifest, the
    manifest written last, then the folder renamed over `target` (a previous import, or an empty folder)."""
    content = {str(p.relative_to(staging)): file_sha256(p) for p in sorted(staging.rglob("*.parquet"))}
    manifest = {
        **manifest,
        "files": content,
        "content_hash": hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest(),
    }
    write_json(manifest, staging / "manifest.json")
    (staging / STAGING_MARK).unlink()
    if not target.exists():
        staging.rename(target)
        return
    # swap by renames, never a delete in place: a kill at any point leaves DEST whole (the old dataset or the new), or
    # missing with the old one whole at DEST.replaced; the next import clears what is left
    replaced = _replaced(target)
    shutil.rmtree(replaced, ignore_errors=True)
    target.rename(replaced)
    staging.rename(target)
    shutil.rmtree(replaced)


def check_dest(dest: Path) -> None:
    """DEST must be new, empty, or a previous import (its manifest has "source"): never someone's other files."""
    if not dest.exists() or (dest.is_dir() and not any(dest.iterdir())) or _is_import(dest):
        return
    raise DataError(
        f"{dest}: already holds files that `winnow data import` did not write; import into a new or empty folder "
        "(or move those files away first)"
    )


def _is_import(folder: Path) -> bool:
    try:
        return "source" in json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError, TypeError):
        return False


def staging_folder(dest: Path) -> Path:
    """A fresh DEST.importing beside DEST; one left by an import that stopped half-way is removed, anything else refused."""
    staging = dest.parent / (dest.name + ".importing")
    shutil.rmtree(_replaced(dest), ignore_errors=True)  # a dataset an earlier swap was killed before deleting
    if staging.exists():
        if not ((staging / STAGING_MARK).exists() or _is_import(staging)):
            raise DataError(f"{staging}: exists and was not left by `winnow data import`; move it away or import elsewhere")
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    (staging / STAGING_MARK).touch()
    return staging


def _replaced(dest: Path) -> Path:
    """Where a swap puts the dataset it replaces, until the new one is in place (a name only winnow uses)."""
    return dest.parent / (dest.name + ".replaced")


def check_apart(dest: Path, sources: list) -> None:
    """DEST is replaced as a whole, so no source may live inside it, and it may not sit inside a source folder."""
    d = dest.resolve()
    for s in [Path(p).resolve() for p in sources]:
        if d == s or d in s.parents or (s.is_dir() and s in d.parents):
            raise DataError(f"{dest}: the destination overlaps the source {s}; import into a folder outside it")
