"""`winnow advise`: before paying for selection, place this data on the regime map and say whether it should pay.

It trains what the pipeline would train first anyway (the reference, reused by `winnow pipeline`) and one short
uniform pilot (bench.pilot_steps), measures the features of studies/pilot.py, and finds the nearest point of every
committed regime map of this objective (`winnow bench --study regimes`, metrics/<dataset>/bench/<objective>-
regimes.json). Its answer is that point's outcome, with the distance and what the point measured, never more:
a map is only as good as its points, and the report of each map says how often advice from the other points
matched a point's own outcome (leave one out).
"""

from __future__ import annotations

import json
from pathlib import Path

from winnow.config import Params
from winnow.errors import MissingInput
from winnow.files import write_json
from winnow.stages.data import data_stage
from winnow.stages.paths import Paths
from winnow.stages.reference import reference_stage
from winnow.studies import pilot as pilots
from winnow.studies.projection import read_at
from winnow.studies.regime_map import pays, place


def read_maps(params: Params) -> list[dict]:
    """Every regime map of this objective under params.metrics, each row tagged with the dataset it was measured on."""
    rows = []
    for path in sorted(Path(params.metrics).glob(f"*/bench/{params.objective}-regimes.json")):
        result = json.loads(path.read_text())
        rows += [{**row, "map": str(path), "data": result["data"]} for row in result["rows"]]
    return rows


def read_ladders(params: Params) -> list[dict]:
    """Every committed learner ladder of this objective under params.metrics (`winnow bench --study ladder`, with or
    without bench.label)."""
    paths = sorted(Path(params.metrics).glob(f"*/bench/{params.objective}-ladder*.json"))  # labelled runs too
    return [json.loads(path.read_text()) for path in paths]


def measured_outcome(path: str | Path, params: Params) -> dict:
    """What selection did on this very data, from a study measured on it (`--study levers`: its learnability row;
    `--study regimes`: its as-configured point), read with the map's own rule (studies/regime_map.pays): the check of
    advice on data the map was not fitted on."""
    path = Path(path)
    if not path.is_file():
        raise MissingInput(f"{path}: no such study result (a levers or regimes JSON under metrics/<dataset>/bench/)")
    result = json.loads(path.read_text())
    if result.get("study") not in ("levers", "regimes") or result.get("objective") != params.objective:
        raise MissingInput(f"{path}: not a {params.objective} levers or regimes study (study {result.get('study')!r})")
    if "data" not in result or "rows" not in result:
        raise MissingInput(f"{path}: no 'data' or 'rows': not what `winnow bench --study levers|regimes` writes")
    if not _same_data(result["data"], params):
        raise MissingInput(f"{path}: measured on {result['data']}, not on {params.data.root}; pass a study of this data")
    key, name = ("lever", "learnability") if result["study"] == "levers" else ("point", "as-configured")
    row = next((r for r in result["rows"] if r[key] == name), None)
    if row is None:
        raise MissingInput(f"{path}: no {key} {name!r} (learnability as configured) to check the advice against")
    return {
        "file": str(path),
        "pays": pays(row),
        "flop_ratio_vs_best": row["flop_ratio_vs_best"],
        "final_over_best": row["final_over_best"],
        "seeds": row["final_over_best"]["runs"],
    }


def _same_data(root: str, params: Params) -> bool:
    return Path(root).resolve() == Path(params.data.root).resolve()


def advise(params: Params, against: str | Path | None = None) -> dict:
    """Train the reference and the pilot, place the data on the map; the advice, also written as JSON. `against`: a
    study measured on this data (measured_outcome), recorded beside the advice with whether the two agree."""
    measured = measured_outcome(against, params) if against is not None else None  # a wrong file fails before training
    rows = read_maps(params)
    if measured is not None:  # advice checked against this data's outcome must come from the map of other data
        others = [r for r in rows if not _same_data(r["data"], params)]
        if rows and not others:
            raise MissingInput(f"every regime map of {params.objective} was measured on {params.data.root}: nothing to check")
        rows = others
    if not rows:
        raise MissingInput(
            f"no regime map for {params.objective} under {params.metrics}/*/bench/: run `winnow bench --study regimes` "
            "(on the built-in pool, or on data like yours) first"
        )
    data_stage(params)  # the built-in pool, generated when it is not there; an imported dataset as it is
    reference_stage(params)  # the run's own: `winnow pipeline` reuses it
    pilot = pilots.run_pilot(params, "advise")
    features = pilots.features(params, pilot)
    advice = place(params.objective, params.data.root, features, rows, measured)
    advice["projections"] = [read_at(ladder, features["scorer_over_learner"]) for ladder in read_ladders(params)]
    write_json(advice, Paths.of(params).metrics_root / params.data.name / f"advise-{params.objective}.json")
    return advice


def say(advice: dict) -> str:
    """The advice in words."""
    f, n = advice["features"], advice["nearest"]
    lines = [
        f"this data: curated {f['curated_share']:.1%} of the pool; reference val {f['reference_val']:.4f}; "
        f"a {f['pilot_val']:.4f} pilot (uniform); scorer {f['scorer_over_learner']:.3f}x the learner's FLOPs per example",
        f"nearest point on the map: {n['point']} of {n['data']} (distance {n['distance']:.2f}): learnability "
        + (
            f"took {n['flop_ratio_vs_best']:.2f}x the FLOPs of the best baseline"
            if n["flop_ratio_vs_best"] is not None
            else "never reached the target of the best baseline"
        )
        + f" ({', '.join(sorted(set(n['best_baseline'])))}), ending {n['final_over_best']:+.4f} against it"
        + f" -> selection {'should pay' if advice['selection_should_pay'] else 'should not pay'} here",
    ]
    if advice["far"]:
        lines.append("no point on the map is near this data (distance > 2): measure it (`winnow bench`) before trusting this")
    if advice["scorer"]:
        s = advice["scorer_point"]
        lines.append(f"scorer: {advice['scorer']} (the nearest point where selection paid: {s['point']} of {s['data']})")
    else:
        lines.append("no point on the map paid: train on the best baseline instead")
    for p in advice.get("projections", []):
        lines.append(_projection_line(p))
    if "measured" in advice:
        m = advice["measured"]
        lines.append(
            f"measured on this data ({m['file']}, {m['seeds']} seeds): selection {'paid' if m['pays'] else 'did not pay'}"
            f" -> the advice {'agrees' if m['agrees'] else 'DISAGREES'}"
        )
    return "\n".join(lines)


def _projection_line(p: dict) -> str:
    """A ladder's projection at this data's scorer / learner FLOPs, labelled as one."""
    head = f"projection from the ladder measured on {p['data']} ({p['label']}): "
    online = p["online"]
    if online is None:
        parts = ["no line fitted for learnability"]
    else:
        r, (low, high) = online["ratio"], online["measured_x"]
        interval = f" [{r['low']:.2f}, {r['high']:.2f}]" if r["low"] is not None else ""
        parts = [
            f"learnability at x = {online['x']:.4f} (selection / learner FLOPs a step; measured at {low:.4f}-{high:.4f}): "
            f"{r['mean']:.2f}x the comparator's FLOPs{interval}"
        ]
        cross = online["crosses_1_at_x"]
        if cross is not None:
            parts.append(f"below 1 where x < {cross['mean']:.4f}")
        else:
            kinds = sorted({c if isinstance(c, str) else "crosses" for c in online["crossings"]})
            parts.append(f"no crossing over every seed ({', '.join(kinds)})")
    for r in p["replay"]:
        n = r["reuses"]
        if n is not None:
            parts.append(f"a replay on {r['learner']} pays from {n['mean']:.1f} reuses ({n['reached']}/{n['runs']} seeds)")
        else:
            parts.append(f"a replay on {r['learner']} does not pay in every seed")
    return head + "; ".join(parts)
