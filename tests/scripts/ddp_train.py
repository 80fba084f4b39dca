"""Run under torchrun by tests/test_ddp.py: a few learnability steps with DDP, recording what each rank did.

argv: pool folder, reference-loss file, output folder. Writes <out>/<mode>-rank<r>.pt for mode
in_memory (the pool held whole), stream (rank-sharded ShardStream) and actor (the pool held whole,
a cnn-nano actor scoring and training beside the learner).
"""

import sys
from pathlib import Path

import torch

from models import build_classifier
from winnow.config import TrainConfig
from winnow.datasets.contract import load_split
from winnow.datasets.stream import ShardStream
from winnow.method import objectives
from winnow.method.devices import init_distributed
from winnow.method.selection import Selector
from winnow.method.training import Actor, train

pool_dir, reference_path, out = sys.argv[1], sys.argv[2], Path(sys.argv[3])
rank, world = init_distributed()
assert world == 2, world
reference_loss = torch.load(reference_path)
cfg = TrainConfig(model="cnn-nano", steps=4, batch_size=16, warmup_steps=1)


def run(mode: str, data, with_actor: bool = False) -> None:
    torch.manual_seed(0)
    model = build_classifier("cnn-nano", 20)
    torch.manual_seed(1)
    actor = build_classifier("cnn-nano", 20) if with_actor else None
    kept, grads = {}, []

    def on_step(step, ids):
        kept[step] = ids.tolist()
        if step == 1:
            grads.extend(p.grad.clone() for p in model.parameters())

    log = train(
        model,
        data,
        cfg,
        seed=0,
        selector=Selector("learnability", keep_fraction=0.5, reference_loss=reference_loss),
        actor=Actor(actor) if actor is not None else None,
        on_step=on_step,
    )["steps_log"]
    saved = {"kept": kept, "grads": grads, "weights": model.state_dict(), "log": log}
    if actor is not None:
        saved["actor"] = actor.state_dict()
    torch.save(saved, out / f"{mode}-rank{rank}.pt")


run("in_memory", load_split(pool_dir, 32, 20))
run("actor", load_split(pool_dir, 32, 20), with_actor=True)
decode = lambda path: objectives.decode_shard("classification", "cnn-nano", path, 32, 20)  # noqa: E731
run("stream", ShardStream(pool_dir, decode, 200, seed=0, rank=rank, world=world))
