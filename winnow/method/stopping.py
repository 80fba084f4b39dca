"""The one stopping rule every arm is costed by, uniform included (docs/DESIGN.md, the ledger).

- The curve of every arm is smoothed the same way: at each evaluation, the mean of the last k
  evaluations (fewer at the start of the run).
- The target is uniform's smoothed curve at its last evaluation: the mean of its last k evaluations.
- An arm reaches the target at the evaluation after which its smoothed curve stays at or above it
  (a crossing that dips back below does not count). The step is interpolated linearly between that
  evaluation and the one before it, so ratios are not stuck on the evaluation grid.
- Uniform is read at its own crossing, by the same rule as every other arm, not at the end of its run by
  fiat: one that plateaued crosses before its end; one still climbing at its end crosses at its last
  evaluation (its target is where it ended), and the report says so.

FLOPs and seconds are read at the interpolated step (`at`): the FLOPs from the ledger's per-step
cost, the seconds from the run's clock, interpolated between its evaluations.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

# Metrics are logged as float32 means: two curves with the same counts of correct examples can differ in the last
# bits. A value within this of the target counts as reaching it (far below one example of a held-out set).
ROUNDING = 1e-6


def smooth(values: Sequence[float], k: int) -> list[float]:
    """At each evaluation, the mean of the last k values (fewer at the start)."""
    if k < 1:
        raise ValueError(f"the smoothing window must be at least 1, not {k}")
    return [sum(values[max(0, i + 1 - k) : i + 1]) / (i + 1 - max(0, i + 1 - k)) for i in range(len(values))]


def target(values: Sequence[float], k: int) -> float:
    """The mean of the last k evaluations: uniform's smoothed curve at its end."""
    if not values:
        raise ValueError("the target needs a curve with at least one evaluation")
    return smooth(values, k)[-1]


@dataclass(frozen=True)
class Crossing:
    """Where an arm's smoothed curve reaches the target for good: `step` interpolated (None: never),
    `evaluation` the index of the first evaluation from which it stays at or above."""

    step: float | None
    evaluation: int | None

    @property
    def reached(self) -> bool:
        return self.step is not None


def crossing(steps: Sequence[float], values: Sequence[float], goal: float, k: int) -> Crossing:
    """The step after which the curve, smoothed over k, stays at or above `goal`; interpolated between
    the last evaluation below it and the next."""
    if len(steps) != len(values):
        raise ValueError(f"{len(steps)} steps but {len(values)} values")
    smoothed = smooth(values, k)
    below = [i for i, v in enumerate(smoothed) if v < goal - ROUNDING]
    if not below:
        return Crossing(float(steps[0]), 0) if smoothed else Crossing(None, None)
    last = below[-1]
    if last == len(smoothed) - 1:
        return Crossing(None, None)
    after = last + 1
    lo, hi = smoothed[last], smoothed[after]
    fraction = min(1.0, (goal - lo) / (hi - lo))  # hi >= goal > lo (up to ROUNDING), so in (0, 1]
    return Crossing(steps[last] + fraction * (steps[after] - steps[last]), after)


def first_crossing(steps: Sequence[float], values: Sequence[float], goal: float, k: int) -> Crossing:
    """The step at which the curve, smoothed over k, first reaches `goal`, whether or not it stays there (the
    reading a sensitivity line sets beside `crossing`); interpolated the same way."""
    if len(steps) != len(values):
        raise ValueError(f"{len(steps)} steps but {len(values)} values")
    smoothed = smooth(values, k)
    first = next((i for i, v in enumerate(smoothed) if v >= goal - ROUNDING), None)
    if first is None or first == 0:
        return Crossing(float(steps[0]), 0) if first == 0 else Crossing(None, None)
    lo, hi = smoothed[first - 1], smoothed[first]
    fraction = min(1.0, (goal - lo) / (hi - lo))
    return Crossing(steps[first - 1] + fraction * (steps[first] - steps[first - 1]), first)


def at(points: Sequence[Sequence[float]], step: float | None) -> float | None:
    """The value at `step` of a piecewise-linear series of [step, value] points (a run's clock), interpolated
    between its points; from (0, 0) before the first."""
    if step is None:
        return None
    previous = (0.0, 0.0)
    for x, y in points:
        if step <= x:
            x0, y0 = previous
            return y0 + (y - y0) * (step - x0) / (x - x0) if x > x0 else float(y)
        previous = (float(x), float(y))
    raise ValueError(f"step {step} is past the series' last point at {previous[0]}")
