"""Run under torchrun by tests/test_ddp.py: a streamed DDP learnability run that checkpoints every 3 steps.

argv: pool folder, checkpoint path, output folder, step to crash at (0: never). Every rank exits at
that step; a relaunch resumes from the checkpoint. Writes <out>/rank<r>.pt (final weights) when done.
"""

import sys
from pathlib import Path

import torch

from models import build_classifier
from winnow.config import TrainConfig
from winnow.datasets.stream import ShardStream, shard_rows
from winnow.method import objectives
from winnow.method.checkpoints import CheckpointPlan
from winnow.method.devices import init_distributed
from winnow.method.selection import Selector
from winnow.method.training import train

pool_dir, checkpoint, out, crash_at = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4])
rank, world = init_distributed()
reference_loss = torch.rand(sum(shard_rows(pool_dir)), generator=torch.Generator().manual_seed(1))
decode = lambda path: objectives.decode_shard("classification", "cnn-nano", path, 32, 20)  # noqa: E731


def crash(step, ids):
    if step == crash_at:
        sys.exit(3)


torch.manual_seed(0)
model = build_classifier("cnn-nano", 20)
train(
    model,
    ShardStream(pool_dir, decode, 100, seed=0, rank=rank, world=world),
    TrainConfig(model="cnn-nano", steps=8, batch_size=16, warmup_steps=1),
    seed=0,
    selector=Selector("learnability", keep_fraction=0.5, reference_loss=reference_loss),
    checkpoint=CheckpointPlan(checkpoint, every=3),
    on_step=crash,
)
out.mkdir(parents=True, exist_ok=True)
torch.save(model.state_dict(), out / f"rank{rank}.pt")
