"""Every summary over seeds in a study's JSON, rewritten from the per-seed values it keeps, rerunning nothing.

A study's JSON keeps each seed's value beside every summary (`spread`'s `values`), so when the way seeds are
summarised changes (ratios moved to a log-scale mean and interval: studies/runs.spread), the committed results
are brought up to date from their own numbers, with what is derived from the summaries (a regime point's verdict,
the map's check of itself, an advice's nearest point and verdict), and every study's report and plot redrawn:

    uv run python -m winnow.studies.summaries            # every study under metrics/, and each advise-*.json
    uv run python -m winnow.studies.summaries --check    # exit 1 if any committed summary is not what its values give

`winnow bench --study NAME --report-only` does the same for one study.

A summary with no interval (`low`) is a legacy record: written under the previous protocol as mean ± std (docs/benchmarks.md
quotes those studies as the record of what was run, not as claims) and kept as written.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from winnow.config import params_from_dict
from winnow.files import write_json
from winnow.stages.paths import Paths
from winnow.studies.runs import is_ratio, spread

SPREAD = frozenset({"mean", "std", "reached", "runs", "values"})  # the keys every summary over seeds has
OBJECTIVE_FIRST = re.compile(r"^(?P<objective>classification|contrastive)(-(?P<rest>.+))?$")
REPORTED = ("policies", "scorers", "learners", "jest", "curate", "levers", "regimes")  # studies with a page


def resummarise(node, keys: tuple[str, ...] = ()):
    """`node` with every summary over seeds recomputed from its values (a ratio's on the log scale)."""
    if isinstance(node, dict):
        if SPREAD <= node.keys() and isinstance(node["values"], list):
            # what else the node says (a property's name, whether it was met) kept beside its recomputed summary
            return {**node, **spread(node["values"], log=is_ratio(*keys))} if "low" in node else node  # legacy: as written
        return {k: resummarise(v, (*keys, k)) for k, v in node.items()}
    if isinstance(node, list):
        return [resummarise(v, keys) for v in node]
    return node


def refresh(result: dict) -> dict:
    """A study's result with its summaries recomputed, and what is derived from them."""
    result = resummarise(result)
    if result.get("study") == "regimes":
        from winnow.studies.regime_map import leave_one_out, pays

        result["rows"] = [{**row, "pays": pays(row)} for row in result["rows"]]
        if "leave_one_out" in result:
            result["leave_one_out"] = leave_one_out(result)
    return result


def study_of(path: Path) -> tuple[str, str | None] | None:
    """The study and label a study JSON under metrics/<dataset>/bench/ holds, from its name; None for a file that
    is no study's (a benchmark's, the memory studies')."""
    m = OBJECTIVE_FIRST.match(path.stem)
    if m is None:
        return None
    rest = m["rest"]
    if rest is None:
        return "policies", None
    for study in sorted(REPORTED, key=len, reverse=True):
        if rest == study or rest.startswith(f"{study}-"):
            return study, rest[len(study) + 1 :] or None
    return None


def paths_of(path: Path, result: dict, metrics: Path) -> Paths:
    """The Paths a study JSON was written under (its report and plots beside the committed ones)."""
    study, label = study_of(path)
    dataset = path.parent.parent.name
    raw = {"objective": result["objective"], "data": {"root": result.get("data") or f"data/{dataset}"}}
    params = params_from_dict(raw).model_copy(update={"metrics": str(metrics)})
    params = params.model_copy(update={"bench": params.bench.model_copy(update={"label": label})})
    paths = Paths.of(params)
    if paths.study_json(study).resolve() != path.resolve():
        raise ValueError(f"{path}: read as study {study!r} label {label!r}, which would be {paths.study_json(study)}")
    return paths


def rewrite_study(path: Path, metrics: Path, check: bool = False) -> bool:
    """Rewrite one study's JSON from its values and redraw its report; whether anything changed."""
    import importlib

    result = json.loads(path.read_text())
    fresh = refresh(result)
    changed = fresh != result
    if not check:
        write_json(fresh, path)
        study, _ = study_of(path)
        importlib.import_module(f"winnow.studies.{study}").report(fresh, paths_of(path, fresh, metrics))
    return changed


def rewrite_advice(path: Path, check: bool = False) -> bool:
    """An advise-*.json placed again on the maps it names, as they are now (trains nothing)."""
    from winnow.studies.regime_map import place

    advice = json.loads(path.read_text())
    rows = []
    for map_path in advice["maps"]:
        result = json.loads(Path(map_path).read_text())
        rows += [{**row, "map": map_path, "data": result["data"]} for row in result["rows"]]
    measured = resummarise(advice["measured"], ("measured",)) if "measured" in advice else None
    fresh = place(advice["objective"], advice["data"], advice["features"], rows, measured)
    changed = fresh != advice
    if not check:
        write_json(fresh, path)
    return changed


def rewrite_all(metrics: Path = Path("metrics"), check: bool = False) -> list[Path]:
    """Every study JSON under metrics/*/bench/ and every advice beside them; the files that changed (or would)."""
    changed = []
    for path in sorted(metrics.glob("*/bench/*.json")):
        if study_of(path) and rewrite_study(path, metrics, check):
            changed.append(path)
    for path in sorted(metrics.glob("*/advise-*.json")):  # after the maps they read
        if rewrite_advice(path, check):
            changed.append(path)
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m winnow.studies.summaries", description=__doc__.split("\n\n")[0])
    parser.add_argument("--metrics", type=Path, default=Path("metrics"))
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a summary is stale")
    args = parser.parse_args(argv)
    changed = rewrite_all(args.metrics, args.check)
    for path in changed:
        print(f"{'stale' if args.check else 'rewritten'}: {path}")
    return 1 if args.check and changed else 0


if __name__ == "__main__":
    sys.exit(main())
