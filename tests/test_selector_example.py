"""docs/selector.md's loop, run as written: winnow's scores and selection in a plain PyTorch loop, no trainer."""

import re
from pathlib import Path

import numpy as np
import torch

from winnow.config import load_params
from winnow.stages.data import data_stage
from winnow.stages.reference import reference_stage
from winnow.stages.score import score_stage

DOC = Path(__file__).resolve().parents[1] / "docs" / "selector.md"


def test_the_selector_example_in_the_docs_trains_on_the_most_learnable_rows_of_each_super_batch(tiny):
    params = load_params(tiny)
    data_stage(params)
    reference_stage(params)
    score_stage(params)
    code = re.search(r"```python\n(.*?)```", DOC.read_text(), re.S).group(1)
    assert len(code.strip().splitlines()) <= 32  # a loop a reader takes in at a glance
    kept, real_keep = [], None

    def spy(self, ids, k, actor=None, name="select"):
        chosen = real_keep(self, ids, k, actor, name)
        kept.append((ids, chosen, actor))
        return chosen

    from winnow.method.selection import Selector

    real_keep = Selector.keep
    Selector.keep = spy
    try:
        namespace = {"STEPS": 3}
        exec(compile(code, str(DOC), "exec"), namespace)
    finally:
        Selector.keep = real_keep
    learnability = None
    for ids, chosen, actor_loss in kept:
        assert len(ids) == 128 and len(set(chosen.tolist())) == 64
        learnability = actor_loss - namespace["reference_loss"][torch.from_numpy(ids)]
        threshold = learnability[chosen].min()
        outside = np.setdiff1d(np.arange(len(ids)), chosen.numpy())
        assert (learnability[outside] <= threshold).all()  # the kept rows are the 64 most learnable
    assert len(kept) == 3 and learnability is not None
