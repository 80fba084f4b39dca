"""An ImageFolder tree (root/<class>/<image>): the folder names are the classes."""

from __future__ import annotations

from pathlib import Path

from winnow.errors import DataError
from winnow.importers.source import (
    BATCH,
    IMAGE_EXTENSIONS,
    Source,
)


def read_imagefolder(source: str | Path) -> Source:
    """root/<class>/<image>: each image's label is its class folder's name; captions are empty. The file list
    is held (paths only); each image is read when its batch is."""
    source = Path(source)
    classes = sorted(p.name for p in source.iterdir() if p.is_dir()) if source.is_dir() else []
    if not classes:
        raise DataError(f"{source}: no class folders (an ImageFolder tree is root/<class>/<image>)")
    entries, not_images = [], 0
    for name in classes:
        for path in sorted((source / name).iterdir()):
            if path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS:
                entries.append((name, path))
            else:
                not_images += 1

    def read(images: bool = True):
        batch, size = [], 0
        for name, path in entries:
            image = path.read_bytes() if images else None
            batch.append({"image": image, "label": name, "caption": None, "source_key": f"{name}/{path.name}"})
            size += len(image or b"")
            if len(batch) == BATCH.rows or size >= BATCH.bytes:
                yield batch, None
                batch, size = [], 0
        if batch:
            yield batch, None

    skipped = {"entries_not_images": not_images} if not_images else {}
    return Source(path=str(source), read=read, schema=None, classes=classes, skipped=skipped)
