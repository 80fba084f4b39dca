"""`winnow data import KIND SOURCE DEST`: a user's own shards into the data contract (winnow.importers.importing).

READERS is the one place an importer's kind lives: the CLI's choices and help, the import-memory study and
the importer read it. A new kind of source is one reader file (a function from a path to a Source) and one entry.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from winnow.importers.imagefolder import read_imagefolder
from winnow.importers.parquet import read_parquet_table
from winnow.importers.webdataset import read_webdataset


@dataclass(frozen=True)
class Reader:
    kind: str
    read: Callable  # (path, **columns) -> importers.source.Source
    help: str
    columns: bool = False  # takes --image-column, --label-column, --caption-column


READERS: dict[str, Reader] = {
    r.kind: r
    for r in (
        Reader("parquet", read_parquet_table, "a Parquet file or folder with a column of encoded image bytes", columns=True),
        Reader("webdataset", read_webdataset, "a folder of .tar shards as img2dataset writes them (image + txt/json/cls)"),
        Reader("imagefolder", read_imagefolder, "an ImageFolder tree, root/<class>/<image>"),
    )
}
