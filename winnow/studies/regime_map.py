"""The regime map's rule, shared by the study that measures it (studies/regimes.py) and by `winnow advise`, which
reads it: where selection pays at a point, how far two points are apart, the nearest point to new data, and the map
advised against itself point by point."""

from __future__ import annotations

import math

from winnow.studies import pilot as pilots


def pays(row: dict) -> bool:
    """Selection pays at a point when every seed reached the target, in fewer FLOPs than the best baseline (the
    interval's upper end below 1, or the one seed's value when there is one), ending no lower on average."""
    flops, final = row["flop_ratio_vs_best"], row["final_over_best"]
    if flops["reached"] < flops["runs"]:
        return False
    upper = flops["high"] if flops["high"] is not None else flops["mean"]
    return upper < 1.0 and final["mean"] >= 0.0


# How far apart two points are on each coordinate of pilot.coordinates: about threefold in curated share or in the
# scorer's size, or 0.1 of the metric, counts as one unit.
SCALES = (0.5, 0.1, 0.1, 0.1, 0.5)


def point_features(row: dict) -> dict:
    """A map row's features: the mean over its seeds."""
    return {k: row[k]["mean"] for k in pilots.FEATURES}


def distance(a: dict, b: dict) -> float:
    return math.sqrt(sum(((x - y) / s) ** 2 for x, y, s in zip(pilots.coordinates(a), pilots.coordinates(b), SCALES)))


def nearest(features: dict, rows: list[dict]) -> tuple[dict, float]:
    """The map row closest to `features`, and how far it is."""
    scored = [(distance(features, point_features(row)), i) for i, row in enumerate(rows)]
    d, i = min(scored)
    return rows[i], d


def leave_one_out(result: dict) -> dict:
    """Each point of a map advised from the others alone: how often the advice matched its own outcome."""
    rows = result["rows"]
    if len(rows) < 2:
        return {"agreed": None, "points": len(rows), "per_point": {}}
    per_point = {}
    for i, row in enumerate(rows):
        other, d = nearest(point_features(row), rows[:i] + rows[i + 1 :])
        per_point[row["point"]] = {"nearest": other["point"], "distance": d, "advised": other["pays"], "measured": row["pays"]}
    agreed = sum(p["advised"] == p["measured"] for p in per_point.values())
    return {"agreed": agreed, "points": len(rows), "per_point": per_point}


def place(objective: str, data: str, mine: dict, rows: list[dict], measured: dict | None = None) -> dict:
    """The advice for data with features `mine` from the map rows (each tagged with its map and data): the nearest
    point's outcome, the nearest point that paid, and, given what selection measured on this data, whether the
    two agree. Trains nothing (summaries.rewrite_advice places a committed advice again after a map changes)."""
    row, d = nearest(mine, rows)
    paying = [r for r in rows if r["pays"]]
    scorer, scorer_d = nearest(mine, paying) if paying else (None, None)
    advice = {
        "objective": objective,
        "data": data,
        "features": mine,
        "nearest": {
            "map": row["map"],
            "data": row["data"],
            "point": row["point"],
            "distance": d,
            "features": point_features(row),
            "pays": row["pays"],
            "flop_ratio_vs_best": row["flop_ratio_vs_best"]["mean"],
            "final_over_best": row["final_over_best"]["mean"],
            "best_baseline": row["best_baseline"],
            "reference": row["reference"],
        },
        "selection_should_pay": row["pays"],
        "scorer": scorer["reference"] if scorer else None,
        "scorer_point": {"point": scorer["point"], "data": scorer["data"], "distance": scorer_d} if scorer else None,
        "far": d > 2.0,  # two units from every point: the map has nothing like this data
        "maps": sorted({r["map"] for r in rows}),
    }
    if measured is not None:
        measured = {**measured, "pays": pays(measured)}
        advice["measured"] = {**measured, "agrees": measured["pays"] == advice["selection_should_pay"]}
    return advice
