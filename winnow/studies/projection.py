"""The projection (issue 43): where selection's FLOPs against the best baseline would cross 1, from the ladder's
measured points (studies/ladder.py). A projection from measured points, never a measurement: every figure it writes
says so.

- The online arm (learnability): its FLOPs to uniform's target over its learner's comparator's, under the fixed
  reading, against x = the selection's FLOPs per step (the actor's scoring and training, as the ledger measured them)
  over the learner's training step. Selection adds a share of the learner's step that falls as the learner grows,
  so the ratio is fitted as a line in x, seed by seed (each seed's learners share one reference and one pool, so
  its points are not independent of each other; the seeds are): the line's value at each x and where it crosses 1
  are summarised over seeds (mean and 95% Student's t interval, seeds - 1 degrees of freedom). Every seed must reach
  the target at every learner for a fit; one that does not is counted and said. Read at each measured learner and at
  a learner of ViT-B's width and depth at the data's size, whose x is the smallest learner's scaled by their forward
  FLOPs (measured here; it assumes a training step scales as the forward does). Far outside the measured x, the
  line is an assumption, not a finding: the page says how far.
- The replay: its FLOPs ratio charged with the recording's selection shared by N learners (N in
  method/ledger.SHARED) is the same run charged again, exactly L + S / N (L the learner's own steps, S the
  recording's selection, each over the comparator's FLOPs): read from the N = 1 and N = 10 charges, it crosses 1
  from N* = S / (1 - L) reuses (never where L >= 1: the replayed steps alone cost more).
"""

from __future__ import annotations

import numpy as np
import torch

from winnow.method.ledger import SHARED, forward_flops_per_example
from winnow.studies.budget_rule import FIXED
from winnow.studies.budgets import replay_shared
from winnow.studies.runs import spread

LABEL = "a projection from measured points, not a measurement"
# the paper's learner, at the data's size: ViT-B's width and depth (classification: winnow's vit-b, patch 4, 64
# patches at 32 px where ViT-B/16 has 196 at 224 px; CLIP: open_clip's ViT-B/32, which at 32 px sees one image
# patch, so its FLOPs are mostly its text tower's)
PAPER_LEARNER = {"classification": "vit-b", "contrastive": "clip-vit-b-32"}


def fit_line(xs: list[float], ys: list[float]) -> dict:
    """Least squares y = a + b x."""
    x, y = np.asarray(xs, float), np.asarray(ys, float)
    if len(set(xs)) < 2:
        raise ValueError(f"a line needs points at 2 x values or more, got {sorted(set(xs))}")
    b, a = np.polyfit(x, y, 1)
    return {"a": float(a), "b": float(b)}


def _crossing(a: float, b: float, level: float = 1.0) -> float | str:
    """Where a + b x crosses `level`, or why it does not: "never below" (at or above it for every x >= 0), "below
    everywhere" (it does not rise with x, and starts below)."""
    if a >= level:
        return "never below"
    if b <= 0:
        return "below everywhere"
    return (level - a) / b


def online(rows: list[dict], paper_scale: float | None, policy: str = "learnability") -> dict:
    """The online arm's ratio against x (the selection's FLOPs per step over the learner's), fitted seed by seed.
    `paper_scale`: the paper's learner's x over the smallest learner's (their forward FLOPs' inverse ratio)."""
    rows = [r for r in rows if policy in r.get("verdicts", {})]
    model = "ratio = a + b * x, x = selection / learner FLOPs per step"
    out = {"policy": policy, "reading": FIXED, "label": LABEL, "model": model}
    xs = [r["selection_over_learner"] for r in rows]
    if len(set(xs)) < 3:
        return {**out, "fit": None, "why": f"a line needs 3 learners or more, at 3 x values; the ladder has {len(set(xs))}"}
    per_seed = list(zip(*(r["verdicts"][policy]["readings"][FIXED]["flop_ratio"]["values"] for r in rows)))
    fits = [fit_line(xs, list(values)) if None not in values else None for values in per_seed]
    fitted = [f for f in fits if f is not None]
    if len(fitted) < 2:
        return {
            **out,
            "fit": None,
            "seeds_fitted": len(fitted),
            "seeds": len(fits),
            "why": f"{len(fits) - len(fitted)} of {len(fits)} seeds never reached the target at some learner: "
            "fewer than 2 seeds to fit",
        }
    at = {r["learner"]: r["selection_over_learner"] for r in rows}
    if paper_scale:
        at["paper's learner (ViT-B)"] = xs[0] * paper_scale
    crossings = [_crossing(f["a"], f["b"]) for f in fitted]
    numeric = [c for c in crossings if not isinstance(c, str)]
    slope = spread([f["b"] for f in fitted])
    return {
        **out,
        "seeds_fitted": len(fitted),
        "seeds": len(fits),
        "never_reached_note": (
            f"{len(fits) - len(fitted)} of {len(fits)} seeds never reached the target at some learner and are left out"
            if len(fitted) < len(fits)
            else ""
        ),
        "fit": {"a": spread([f["a"] for f in fitted]), "b": slope},
        "per_seed_fits": fitted,
        "slope_distinguishable": slope["low"] is not None and (slope["low"] > 0 or slope["high"] < 0),
        "measured_x": [min(xs), max(xs)],
        "at": {name: {"x": x, "ratio": spread([f["a"] + f["b"] * x for f in fitted])} for name, x in at.items()},
        # per seed: the x below which the ratio is under 1 (a larger learner), or why there is none
        "crossings": crossings,
        "crosses_1_at_x": spread(numeric, log=True) if len(numeric) == len(crossings) else None,
        "learner_step_flops": {r["learner"]: r["learner_step_flops"] for r in rows},
        "selection_step_flops": rows[0]["learner_step_flops"] * xs[0],
        "steps_differ": len({r["steps"] for r in rows}) > 1,
    }


def replay(row: dict) -> dict | None:
    """A learner's replay charged at N = 1 and N = 10 sharers of the recording (the same run): per seed, L and S, and
    the reuses N* from which it is below 1; None for a learner with no replay (the recording one)."""
    one, ten = "replay", replay_shared(SHARED[-1])
    verdicts = row.get("verdicts", {})
    if one not in verdicts or ten not in verdicts:
        return None
    r1 = verdicts[one]["readings"][FIXED]["flop_ratio"]["values"]
    r10 = verdicts[ten]["readings"][FIXED]["flop_ratio"]["values"]
    per_seed = []
    for a, b in zip(r1, r10):
        if a is None or b is None:
            per_seed.append({"why": "the replay or its comparator never reached the target"})
            continue
        s = (a - b) / (1 - 1 / SHARED[-1])
        l_ = a - s
        per_seed.append({"L": l_, "S": s, "reuses": _reuses(l_, s)})
    reuses = [p.get("reuses") for p in per_seed]
    every = all(isinstance(v, float) for v in reuses)
    return {
        "learner": row["learner"],
        "model": "ratio = L + S / N (the same run charged again: not N runs)",
        "per_seed": per_seed,
        # the reuses from which the replay reaches uniform's target in fewer FLOPs than the comparator, where every
        # seed has one; else each seed's value or why not
        "crosses_1_at_reuses": spread(reuses, log=True) if every else None,
        "label": LABEL,
    }


def _reuses(l_: float, s: float, tol: float = 1e-9) -> float | str:
    """The N from which L + S / N is below 1: at least 1 (one learner is the fewest); "never" when L is 1 or more
    (the replayed steps alone cost more than the comparator's)."""
    if l_ >= 1 - tol:
        return "never"
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
    """The online fit and each larger learner's replay (see the module's docstring)."""
    paper = paper_learner_flops(objective, image_size, num_classes)
    return {
        "label": LABEL,
        "paper_learner": PAPER_LEARNER[objective],
        "paper_learner_forward_flops": paper,
        "online": online(rows, rows[0]["learner_forward_flops"] / paper),
        "replay": [r for r in (replay(row) for row in rows) if r is not None],
    }


def read_at(result: dict, scorer_over_learner: float) -> dict:
    """A committed ladder's projection read at a user's scorer / learner forward FLOPs (`winnow advise`'s feature),
    taken to the fit's x (selection / learner FLOPs per step) by the ladder's own smallest learner's proportion of
    the two; the line's value there over the fitted seeds, where it crosses 1, each replay's reuses. Labelled."""
    online = result["projection"]["online"]
    out = {"label": LABEL, "data": result["data"], "online": None, "replay": []}
    if online.get("fit"):
        first = result["rows"][0]
        x = scorer_over_learner * first["selection_over_learner"] / first["scorer_flops_over_learner"]
        out["online"] = {
            "x": x,
            "ratio": spread([f["a"] + f["b"] * x for f in online["per_seed_fits"]]),
            "measured_x": online["measured_x"],
            "crosses_1_at_x": online["crosses_1_at_x"],
            "crossings": online["crossings"],
        }
    for r in result["projection"]["replay"]:
        out["replay"].append({"learner": r["learner"], "reuses": r["crosses_1_at_reuses"], "per_seed": r["per_seed"]})
    return out
