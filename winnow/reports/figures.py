"""The figures quoted in README.md and docs/: every block between markers is written from a committed file.

    <!-- figures: NAME -->
    ...written by `winnow figures` from FIGURES[NAME]'s file...
    <!-- /figures -->

`winnow figures` rewrites every block; `winnow figures --check` fails when a block of the working tree differs from
what its file says, so a number in the docs cannot drift from the metrics behind it. tests/test_figures.py checks the
same of the last commit (committed()): running `winnow pipeline` rewrites metrics/ with this machine's seconds, and
that must not turn a user's test suite red. Adding a figure is one entry in FIGURES and one marker in a page.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import re
import subprocess
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from winnow.errors import DataError, MissingInput
from winnow.files import write_text
from winnow.reports import claims
from winnow.reports.budgets import figure as budgets_figure
from winnow.reports.pool import figure as pool_figure
from winnow.reports.result_figures import (
    advice,
    bench,
    flop_lines,
    headline,
    levers,
    one_line,
    regimes,
)
from winnow.reports.system_figures import (
    compile_step,
    data_path,
    end_to_end,
    host_memory,
    parallel_arms,
    scoring,
    stage_startup,
    step_time,
)
from winnow.reports.tables import study_table

REPO = Path(__file__).resolve().parents[2]
PAGES = ("README.md", "docs")  # where blocks may live: README.md, every docs/*.md and docs/studies/*.md


BLOCK = re.compile(r"(<!-- figures: (?P<name>[\w.-]+) -->\n)(?P<body>.*?)(<!-- /figures -->)", re.S)


@dataclass(frozen=True)
class Figure:
    source: str | tuple[str, ...]  # the committed file it is written from, relative to the repository (or files)
    render: Callable[..., str]  # of the file's JSON; of {file: its JSON} where a figure reads several
    reads_tree: bool = False  # it also reads files its source names (each seed's run): render passes it `repo`

    @property
    def files(self) -> tuple[str, ...]:
        return self.source if isinstance(self.source, tuple) else (self.source,)


FIGURES: dict[str, Figure] = {
    "claims": Figure(tuple(dict.fromkeys(f for c in claims.CLAIMS for f in c.files)), claims.figure),
    "studies-verdicts": Figure(tuple(dict.fromkeys(f for c in claims.CLAIMS for f in c.files)), claims.by_page),
    "claims-short": Figure(tuple(dict.fromkeys(f for c in claims.CLAIMS for f in c.files)), claims.short_figure),
    "classification": Figure("metrics/synthetic/classification/summary.json", headline),
    "classification-verdict": Figure("metrics/synthetic/classification/summary.json", one_line),
    "contrastive": Figure("metrics/synthetic/contrastive/summary.json", headline),
    "contrastive-verdict": Figure("metrics/synthetic/contrastive/summary.json", one_line),
    "bench-classification": Figure("metrics/synthetic/bench/classification.json", bench),
    "bench-contrastive": Figure("metrics/synthetic/bench/contrastive.json", bench),
    "bench-mnist": Figure("metrics/mnist/bench/classification.json", bench),
    "bench-mnist-pairs": Figure("metrics/mnist-pairs/bench/contrastive.json", bench),
    "levers-mnist-pairs-jest": Figure("metrics/mnist-pairs/bench/contrastive-levers-jest.json", levers),
    "levers-mnist-2pct": Figure("metrics/mnist-2pct/bench/classification-levers.json", levers),
    "levers-synthetic": Figure("metrics/synthetic/bench/classification-levers.json", levers),
    "regimes-synthetic": Figure("metrics/synthetic/bench/classification-regimes.json", regimes),
    "advise-mnist-2pct": Figure("metrics/mnist-2pct/advise-classification.json", advice),
    "regimes-synthetic-contrastive": Figure("metrics/synthetic/bench/contrastive-regimes.json", regimes),
    "regimes-synthetic-contrastive-replication": Figure("metrics/synthetic/bench/contrastive-regimes-replication.json", regimes),
    "advise-mnist-pairs": Figure("metrics/mnist-pairs/advise-contrastive.json", advice),
    "step-time": Figure("metrics/synthetic/bench/step_time.json", step_time),
    "scoring-classification": Figure("metrics/synthetic/bench/scoring_classification.json", scoring),
    "scoring-contrastive": Figure("metrics/synthetic/bench/scoring_contrastive.json", scoring),
    "levers-mnist-2pct-cnn-tiny": Figure("metrics/mnist-2pct/bench/classification-levers-cnn-tiny-scorer.json", levers),
    "levers-mnist-2pct-tiny-reference": Figure("metrics/mnist-2pct/bench/classification-levers-cnn-tiny-reference.json", levers),
    "levers-mnist-2pct-short-budgets": Figure("metrics/mnist-2pct/bench/classification-levers-short-budgets.json", levers),
    "flops-mnist-2pct-tiny-reference": Figure(
        "metrics/mnist-2pct/bench/classification-levers-cnn-tiny-reference.json",
        functools.partial(flop_lines, label="cnn-tiny-reference"),
        reads_tree=True,
    ),
    "levers-mnist-2pct-long-budget": Figure("metrics/mnist-2pct/bench/classification-levers-long-budget.json", levers),
    "flops-mnist-2pct-long-budget": Figure(
        "metrics/mnist-2pct/bench/classification-levers-long-budget.json",
        functools.partial(flop_lines, label="long-budget"),
        reads_tree=True,
    ),
    "flops-mnist-2pct-cnn-tiny": Figure(
        "metrics/mnist-2pct/bench/classification-levers-cnn-tiny-scorer.json",
        functools.partial(flop_lines, label="cnn-tiny-scorer"),
        reads_tree=True,
    ),
    "end-to-end": Figure("metrics/synthetic/bench/end_to_end.jsonl", end_to_end),
    "end-to-end-contrastive": Figure("metrics/synthetic/bench/end_to_end_contrastive.jsonl", end_to_end),
    "parallel-arms-contrastive": Figure("metrics/synthetic/bench/parallel_arms_contrastive.json", parallel_arms),
    "stage-startup": Figure("metrics/synthetic/bench/stage_startup.json", stage_startup),
    "compile-step": Figure("metrics/synthetic/bench/compile_step.json", compile_step),
    "host-memory": Figure("metrics/synthetic/bench/host_memory.json", host_memory),
    "data-path": Figure("metrics/synthetic/bench/data_path.json", data_path),
    "levers-mnist-2pct-5-seeds": Figure("metrics/mnist-2pct/bench/classification-levers-anneal-floor-5-seeds.json", levers),
    "scorers-synthetic": Figure("metrics/synthetic/bench/classification-scorers.json", study_table),
    "learners-synthetic": Figure("metrics/synthetic/bench/classification-learners.json", study_table),
    "pool-pretraining": Figure("metrics/synthetic/bench/classification-pool-pretraining.json", pool_figure),
    "pool-pretraining-4x": Figure("metrics/synthetic/bench/classification-pool-pretraining-4x.json", pool_figure),
    "budgets": Figure("metrics/synthetic/bench/classification-budgets.json", budgets_figure),
}


@contextlib.contextmanager
def committed(repo: Path = REPO):
    """A temporary folder holding README.md, docs/ and metrics/ as HEAD has them: the pages and the files they are
    written from as a clone of this commit sees them, whatever a local run has written since. Outside a git checkout
    (an unpacked release), the folder itself."""

    def git(*args: str) -> bytes:
        return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, check=True).stdout

    try:
        top = git("ls-tree", "--name-only", "HEAD").decode().split()
    except (OSError, subprocess.CalledProcessError):
        yield repo
        return
    archive = git("archive", "HEAD", "--", *[name for name in (*PAGES, "metrics") if name in top])
    with tempfile.TemporaryDirectory(prefix="winnow-committed-") as folder:
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(folder, filter="data")
        yield Path(folder)


def pages(repo: Path = REPO) -> list[Path]:
    return [repo / "README.md", *sorted((repo / "docs").glob("*.md")), *sorted((repo / "docs" / "studies").glob("*.md"))]


def render(name: str, repo: Path = REPO) -> str:
    if name not in FIGURES:
        raise KeyError(f"no figure {name!r}; the figures are {', '.join(FIGURES)} (winnow/reports/figures.py)")
    figure = FIGURES[name]
    missing = [path for path in figure.files if not (repo / path).is_file()]
    if missing:
        raise MissingInput(
            f"figure {name!r} is written from {', '.join(missing)}, which is not there (the bench or benchmark that "
            "writes it: docs/benchmarks.md; or restore it with git)"
        )
    read = {path: _load(repo / path) for path in figure.files}
    data = read if isinstance(figure.source, tuple) else read[figure.source]
    text = figure.render(data, repo=repo) if figure.reads_tree else figure.render(data)
    return text if text.endswith("\n") else text + "\n"  # the closing marker on a line of its own


def _load(path: Path):
    text = path.read_text()
    return [json.loads(line) for line in text.splitlines()] if path.suffix == ".jsonl" else json.loads(text)


OPEN, CLOSE = re.compile(r"<!-- figures: (?P<name>[\w.-]+) -->"), "<!-- /figures -->"


def check_markers(page: Path, text: str) -> None:
    """Every block opened, then closed, each on a line of its own, none inside another: else an error naming the
    line, before anything is written (a lost closing marker would make a block swallow the prose after it)."""
    opened = None  # (line, name) of the block open at this point
    for number, line in enumerate(text.splitlines(), 1):
        start, end = OPEN.search(line), CLOSE in line
        if start and (line.strip() != start.group(0) or opened):
            where = f"inside the block {opened[1]!r} opened at line {opened[0]}" if opened else "not alone on its line"
            raise DataError(f"{page}:{number}: the marker of {start.group('name')!r} is {where}; close each block first")
        if end and (line.strip() != CLOSE or not opened):
            why = "closes no block" if not opened else "is not alone on its line"
            raise DataError(f"{page}:{number}: {CLOSE} {why}; each block is <!-- figures: NAME --> ... {CLOSE}")
        if start:
            opened = (number, start.group("name"))
        elif end:
            opened = None
    if opened:
        raise DataError(f"{page}:{opened[0]}: the block {opened[1]!r} is never closed; add {CLOSE} after its text")


def rewrite(page: Path, repo: Path = REPO) -> str:
    """The page with every block written from its file."""
    text = page.read_text()
    check_markers(page, text)
    return BLOCK.sub(lambda m: m.group(1) + render(m.group("name"), repo) + m.group(4), text)


def stale(repo: Path = REPO) -> list[str]:
    """The blocks whose text differs from what their file says ('page: name'), and any block a page quotes twice."""
    out = []
    for page in pages(repo):
        text, seen = page.read_text(), set()
        check_markers(page.relative_to(repo), text)
        for m in BLOCK.finditer(text):
            name = m.group("name")
            if name in seen:  # a page pasted into itself quotes its figures twice
                out.append(f"{page.relative_to(repo)}: {name} (quoted twice)")
            seen.add(name)
            if m.group("body") != render(name, repo):
                out.append(f"{page.relative_to(repo)}: {name}")
    return out


def write_all(repo: Path = REPO) -> list[Path]:
    """Rewrite every page that has a stale block; the pages written. Every page's markers are checked before any
    page is written."""
    for page in pages(repo):
        check_markers(page.relative_to(repo), page.read_text())
    written = []
    for page in pages(repo):
        new = rewrite(page, repo)
        if new != page.read_text():
            write_text(new, page)
            written.append(page)
    return written
