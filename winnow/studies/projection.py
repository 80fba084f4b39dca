"""The projection (issue 43): where selection's FLOPs against the best baseline would cross 1, fitted to the ladder's
measured points (studies/ladder.py). A projection from measured points, never a measurement: every figure it writes
says so.

- The online arm (learnability): its FLOPs to uniform's target over its learner's comparator's, per seed, under the
  fixed reading, against x = the scorers' forward FLOPs over the learner's. Selection costs the actor's scoring and
  step on top of the learner's, a share of the learner's step that falls as x does, so the ratio is fitted as a line
  in x (least squares over every seed's point), with the 95% band of the fitted mean (Student's t, n - 2 degrees of
  freedom). It is read at a learner of ViT-B's width and depth at the data's size (FLOPs measured here, as the ledger
  measures the others) and where the line, and each edge of its band, crosses 1.
- The replay: its ratio at N learners sharing the recording's selection is measured (N in method/ledger.SHARED); per
  seed it is fitted as L + S / N (L the learner's own steps, S the recording's selection, each over the comparator's
  FLOPs), and it crosses 1 from N* = S / (1 - L) reuses (never where L >= 1: the replayed steps alone cost more).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from winnow.method.ledger import SHARED, forward_flops_per_example
from winnow.studies.budgets import FIXED, replay_shared
from winnow.studies.runs import T975, spread

LABEL = "a projection from measured points, not a measurement"
# the paper's learner, at the data's size: ViT-B's width and depth (classification: winnow's vit-b, patch 4; CLIP:
# open_clip's ViT-B/32 image and text towers)
PAPER_LEARNER = {"classification": "vit-b", "contrastive": "clip-vit-b-32"}


def fit_line(xs: list[float], ys: list[float]) -> dict:
    """Least squares y = a + b x, with what the band of the fitted mean needs."""
    x, y = np.asarray(xs, float), np.asarray(ys, float)
    n = len(x)
    if n < 3 or np.ptp(x) == 0:
        raise ValueError(f"a line needs 3 points or more at 2 x values or more, got {n} at {sorted(set(xs))}")
    xbar, sxx = x.mean(), ((x - x.mean()) ** 2).sum()
    b = float(((x - xbar) * (y - y.mean())).sum() / sxx)
    a = float(y.mean() - b * xbar)
    resid = y - (a + b * x)
    s = float(math.sqrt((resid**2).sum() / (n - 2)))
    return {"a": a, "b": b, "n": n, "s": s, "xbar": float(xbar), "sxx": float(sxx)}


def band(fit: dict, x: float) -> tuple[float, float, float]:
    """The fitted mean at x and its 95% band (a FLOPs ratio is never below 0: the band's low edge stops there)."""
    mean = fit["a"] + fit["b"] * x
    t = T975[min(fit["n"] - 2, len(T975)) - 1]
    half = t * fit["s"] * math.sqrt(1 / fit["n"] + (x - fit["xbar"]) ** 2 / fit["sxx"])
    return mean, max(0.0, mean - half), mean + half


def crossing(fit: dict, grid: np.ndarray, level: float = 1.0) -> dict:
    """Where the fitted mean crosses `level` (x = (level - a) / b; None where a >= level: the ratio is at or above it
    for every learner size, or b <= 0: it does not fall as the learner grows), and where each edge of its band does
    on a (log-spaced) grid of x: the x at which the edge goes from below `level` to at or above it; None where it
    does not on the grid (above it throughout, or below)."""
    a, b = fit["a"], fit["b"]
    mean = (level - a) / b if a < level and b > 0 else None
    _, lows, highs = zip(*(band(fit, float(x)) for x in grid))

    def edge(values) -> float | None:
        if values[0] >= level:
            return None
        at = [float(x) for x, v in zip(grid, values) if v >= level]
        return at[0] if at else None

    return {"mean": mean, "band_low_edge": edge(lows), "band_high_edge": edge(highs)}


def online(rows: list[dict], paper_flops: float | None, policy: str = "learnability") -> dict:
    """The online arm's ratio against x = scorer FLOPs / learner FLOPs, fitted over every seed's point."""
    xs, ys, never = [], [], 0
    for row in rows:
        verdict = row.get("verdicts", {}).get(policy)
        if verdict is None:
            continue
        for value in verdict["readings"][FIXED]["flop_ratio"]["values"]:
            if value is None:
                never += 1
            else:
                xs.append(row["scorer_flops_over_learner"])
                ys.append(value)
    out = {"policy": policy, "reading": FIXED, "points": len(xs), "never_reached": never, "label": LABEL}
    try:
        fit = fit_line(xs, ys)
    except ValueError as e:
        return {**out, "fit": None, "why": str(e)}
    scorer = rows[0]["scorer_forward_flops"]
    at = {row["learner"]: row["scorer_flops_over_learner"] for row in rows}
    if paper_flops:
        at["paper's learner (ViT-B)"] = scorer / paper_flops
    cross = crossing(fit, np.geomspace(1e-6, 10.0, 2000))
    return {
        **out,
        "model": "ratio = a + b * (scorer FLOPs / learner FLOPs)",
        "fit": fit,
        "at": {name: dict(zip(("x", "ratio", "low", "high"), (x, *band(fit, x)))) for name, x in at.items()},
        # x above which the ratio is 1 or more: a learner smaller than scorer / x loses; None: below 1 on the whole grid
        "crosses_1_at_x": cross,
        "crosses_1_at_learner_flops": {k: (scorer / v if v else None) for k, v in cross.items()},
        "never_reached_note": f"{never} seed-points never reached the target and are not in the fit" if never else "",
    }


def replay(row: dict) -> dict | None:
    """A learner's replay read at N = 1, 3, 10 sharers of the recording, fitted per seed as L + S / N."""
    names = {1: "replay", **{n: replay_shared(n) for n in SHARED[1:]}}
    verdicts = row.get("verdicts", {})
    if any(name not in verdicts for name in names.values()):
        return None
    per_n = {n: verdicts[name]["readings"][FIXED]["flop_ratio"] for n, name in names.items()}
    seeds = len(per_n[1]["values"])
    reuses, fits = [], []
    inverse = np.array([1.0 / n for n in names])
    for i in range(seeds):
        values = [per_n[n]["values"][i] for n in names]
        if any(v is None for v in values):
            reuses.append(None)
            continue
        s, l_ = np.polyfit(inverse, np.array(values), 1)  # ratio = L + S * (1 / N)
        fits.append({"L": float(l_), "S": float(s)})
        reuses.append(_reuses(float(l_), float(s)))
    return {
        "learner": row["learner"],
        "measured": {str(n): r for n, r in per_n.items()},
        "fits": fits,
        "model": "ratio = L + S / N",
        # the reuses from which the replay reaches uniform's target in fewer FLOPs than the comparator; None: never
        "crosses_1_at_reuses": spread(reuses, log=True) if any(v is not None for v in reuses) else spread(reuses),
        "label": LABEL,
    }


def _reuses(l_: float, s: float, tol: float = 1e-9) -> float | None:
    """The N from which L + S / N is below 1: at least 1 (one learner is the fewest), None when L is 1 or more."""
    if l_ >= 1 - tol:
        return None
    return max(1.0, s / (1 - l_))


def paper_learner_flops(objective: str, image_size: int, num_classes: int) -> float:
    """The forward FLOPs per example of the paper's learner size at the data's size, measured as the ledger measures
    the learner's (torch's count of matrix multiplies and convolutions)."""
    from models import clip_tokenizer
    from winnow.method.objectives import OBJECTIVES

    name = PAPER_LEARNER[objective]
    model = OBJECTIVES[objective].build_model(name, num_classes, image_size)
    images = torch.zeros(2, 3, image_size, image_size)
    if objective == "contrastive":
        tokens = clip_tokenizer(name)(["a photo of a shape"] * 2)
        return forward_flops_per_example(model, lambda m, i, t: m(i, t), images, tokens)
    return forward_flops_per_example(model, lambda m, i, t: m(i), images, torch.zeros(2, dtype=torch.long))


def project(rows: list[dict], objective: str, image_size: int, num_classes: int) -> dict:
    """The online fit and each larger learner's replay fit (see the module's docstring)."""
    paper = paper_learner_flops(objective, image_size, num_classes)
    return {
        "label": LABEL,
        "paper_learner": PAPER_LEARNER[objective],
        "paper_learner_forward_flops": paper,
        "online": online(rows, paper),
        "replay": [r for r in (replay(row) for row in rows) if r is not None],
    }


def read_at(result: dict, x: float) -> dict:
    """A committed ladder's projection read at a user's scorer / learner FLOPs (`winnow advise`): the online line's
    ratio there with its band, where it crosses 1, and each replay's reuses to cross 1; labelled a projection."""
    online = result["projection"]["online"]
    out = {"label": LABEL, "data": result["data"], "x": x, "online": None, "replay": []}
    if online.get("fit"):
        mean, low, high = band(online["fit"], x)
        out["online"] = {
            "ratio": mean,
            "low": low,
            "high": high,
            "crosses_1_at_x": online["crosses_1_at_x"]["mean"],
            "measured_x": [row["scorer_flops_over_learner"] for row in result["rows"]],
        }
    for r in result["projection"]["replay"]:
        out["replay"].append({"learner": r["learner"], "reuses": r["crosses_1_at_reuses"]})
    return out
