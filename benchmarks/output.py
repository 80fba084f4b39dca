"""What every benchmark script does with its result: print it as JSON, and write the same text to --out when given."""

from __future__ import annotations

import json
import platform
from pathlib import Path


def emit(result: dict, out: Path | None) -> dict:
    text = json.dumps(result, indent=2)
    print(text)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")
    return result


def cpu_model() -> str:
    """The CPU's model name (CPU kernels differ between models: a figure says which one measured it)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()
