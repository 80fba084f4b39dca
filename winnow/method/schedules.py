"""How selection changes over a run: the levers that keep a weak reference from steering the learner for good.

Selection steered by a small reference keeps concentrating on what the reference finds easy; once the learner
passes the reference, learnability turns to noise. Three published remedies, each a plain function of the step:

- anneal: train on uniform batches for the last `anneal_last` share of the steps (InfoBatch, ICLR'24: the full
  data at the end); no super-batch is drawn and no actor scores or trains then, and the ledger charges those
  steps as uniform's.
- floor: a `floor` share of every kept batch is drawn uniformly from the super-batch, the rest by score
  (RHO-LOSS's softmax floor), so no part of the data is starved.
- relaxing temperature: softmax (or weighted) selection's temperature moves geometrically from
  `train.temperature` to `temperature_end` over the run (rank-based pressure that decays, Loshchilov and Hutter).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Schedule:
    anneal_last: float = 0.0  # the last share of steps trained on uniform batches, in [0, 1)
    floor: float = 0.0  # the share of each kept batch drawn uniformly from the super-batch, in [0, 1)
    temperature_end: float | None = None  # the temperature at the last step (None: constant)

    def __post_init__(self):
        for name in ("anneal_last", "floor"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if self.temperature_end is not None and not self.temperature_end > 0:
            raise ValueError(f"temperature_end must be above 0, got {self.temperature_end}")

    def selecting_steps(self, steps: int) -> int:
        """How many of `steps` steps select (the rest, at the end, are uniform)."""
        return steps - int(round(steps * self.anneal_last))

    def selecting(self, step: int, steps: int) -> bool:
        """Whether step `step` (0-based) selects."""
        return step < self.selecting_steps(steps)

    def temperature(self, start: float, step: int, steps: int) -> float:
        """The selection temperature at `step`: `start` throughout, or geometric from it to temperature_end."""
        if self.temperature_end is None or steps <= 1:
            return start
        progress = min(step, steps - 1) / (steps - 1)
        return math.exp((1 - progress) * math.log(start) + progress * math.log(self.temperature_end))

    @property
    def constant(self) -> bool:
        """No lever set: every step selects the same way."""
        return self == Schedule()
