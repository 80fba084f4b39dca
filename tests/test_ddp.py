"""The learner on many devices: DDP under torchrun, two CPU processes on gloo, against one process."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from models import build_classifier
from winnow.config import TrainConfig
from winnow.datasets.contract import load_split
from winnow.method.selection import Selector
from winnow.method.training import Actor, train

pytestmark = pytest.mark.e2e  # through the entry points a user runs (Prefect, the CLI, DVC, torchrun): the full tier

SCRIPT = Path(__file__).parent / "scripts" / "ddp_train.py"


@pytest.fixture(scope="module")
def ddp_run(tiny_data, tmp_path_factory):
    """One torchrun launch of two gloo ranks (tests/scripts/ddp_train.py); returns its folder, pool and reference losses."""
    out = tmp_path_factory.mktemp("ddp")
    pool_dir = f"{tiny_data.data.root}/pool"
    pool = load_split(pool_dir, 32, 20)
    reference_loss = torch.rand(int(pool.ids.max()) + 1, generator=torch.Generator().manual_seed(1))
    torch.save(reference_loss, out / "reference_loss.pt")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[1])}
    launched = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            str(SCRIPT),
            pool_dir,
            str(out / "reference_loss.pt"),
            str(out),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert launched.returncode == 0, launched.stderr[-3000:]
    return out, pool, reference_loss


def _one_process(pool, reference_loss, with_actor: bool = False):
    """What tests/scripts/ddp_train.py runs on two ranks, in one process selecting per rank's share (groups=2):
    the learner, the actor (or None), the kept ids and step-1 gradients per step, and the step log."""
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
        pool,
        TrainConfig(model="cnn-nano", steps=4, batch_size=16, warmup_steps=1),
        seed=0,
        selector=Selector("learnability", keep_fraction=0.5, reference_loss=reference_loss, groups=2),
        actor=Actor(actor) if actor is not None else None,
        on_step=on_step,
    )["steps_log"]
    return model, actor, kept, grads, log


def test_two_gloo_ranks_select_and_step_as_one_process_selecting_from_each_ranks_share(ddp_run):
    out, pool, reference_loss = ddp_run
    ranks = [torch.load(out / f"in_memory-rank{r}.pt", weights_only=False) for r in (0, 1)]

    model, _, kept, grads, log = _one_process(pool, reference_loss)

    for step in range(1, 5):  # rank 0 kept the first half of one process's choice, rank 1 the second
        assert ranks[0]["kept"][step] + ranks[1]["kept"][step] == kept[step]
    for rank in ranks:  # DDP's averaged gradient is the gradient of the mean loss over both ranks' kept examples
        for a, b in zip(rank["grads"], grads):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
        for name, w in model.state_dict().items():
            torch.testing.assert_close(rank["weights"][name], w, rtol=1e-4, atol=1e-5)
    assert [r["loss"] for r in ranks[0]["log"]] == [r["loss"] for r in ranks[1]["log"]]  # the log is the mean over ranks
    assert [r["loss"] for r in ranks[0]["log"]] == pytest.approx([r["loss"] for r in log], abs=1e-4)


def test_two_gloo_ranks_with_an_actor_select_by_its_loss_as_one_process_does(ddp_run):
    out, pool, reference_loss = ddp_run
    ranks = [torch.load(out / f"actor-rank{r}.pt", weights_only=False) for r in (0, 1)]
    _, actor, kept, _, _ = _one_process(pool, reference_loss, with_actor=True)
    for step in range(1, 5):  # each rank kept by the actor's loss on its own share, as the one process did
        assert ranks[0]["kept"][step] + ranks[1]["kept"][step] == kept[step]
    for rank in ranks:  # the actor's gradients are averaged over ranks too: one actor, as in one process
        for name, w in actor.state_dict().items():
            torch.testing.assert_close(rank["actor"][name], w, rtol=1e-4, atol=1e-5)


def test_streamed_ranks_train_on_disjoint_examples_and_keep_identical_replicas(ddp_run):
    out, _, _ = ddp_run
    ranks = [torch.load(out / f"stream-rank{r}.pt", weights_only=False) for r in (0, 1)]
    for step in range(1, 5):
        assert len(ranks[0]["kept"][step]) == len(ranks[1]["kept"][step]) == 8
        assert not set(ranks[0]["kept"][step]) & set(ranks[1]["kept"][step])
    for name, w in ranks[0]["weights"].items():
        assert torch.equal(w, ranks[1]["weights"][name])  # DDP keeps the replicas in step


@pytest.mark.slow  # about 20 s: torchrun ranks under the flow (the suite stays within ten minutes; gloo ranks stay in it)
def test_the_train_flow_launches_the_stage_as_ddp_ranks_when_asked(prefect_server, tiny):
    from flows.pipeline import train_flow
    from winnow.config import load_params
    from winnow.method.checkpoints import load_checkpoint
    from winnow.stages.data import data_stage
    from winnow.stages.paths import Paths

    overrides = ["train.nproc_per_node=2", "train.steps=12"]
    params = load_params(tiny, overrides)
    data_stage(params)
    out = train_flow(policy="uniform", params_path=str(tiny), overrides=overrides)
    assert out["world_size"] == 2 and out["steps"] == 12
    ckpt = load_checkpoint(Paths.of(params).learner("uniform"))
    assert ckpt["complete"] and len(ckpt["sampler"]) == 2  # every rank's sampler state, for a resume


@pytest.mark.slow  # two torchrun launches, one killed (about 30 s): the slow tier, -m slow
def test_a_crashed_ddp_run_on_a_streamed_pool_resumes_every_rank_to_the_same_weights(tiny_data, tmp_path):
    def launch(checkpoint, out, crash_at) -> subprocess.Popen:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[1])}
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
        script = [str(SCRIPT.with_name("ddp_resume.py")), f"{tiny_data.data.root}/pool", str(checkpoint), str(out)]
        return subprocess.Popen(
            [*command, *script, str(crash_at)], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env
        )

    def finish(process: subprocess.Popen) -> tuple[int, str]:
        _, err = process.communicate(timeout=300)
        return process.returncode, err

    straight = launch(tmp_path / "straight.pt", tmp_path / "straight", 0)  # the uninterrupted run, beside the crashed one
    crashed = launch(tmp_path / "crashed.pt", tmp_path / "crashed", 5)
    assert finish(straight)[0] == 0
    assert finish(crashed)[0] != 0  # both ranks stop at step 5
    assert torch.load(tmp_path / "crashed.pt", weights_only=False)["step"] == 3
    code, err = finish(launch(tmp_path / "crashed.pt", tmp_path / "crashed", 0))
    assert code == 0, err[-3000:]
    for rank in (0, 1):
        straight = torch.load(tmp_path / "straight" / f"rank{rank}.pt")
        again = torch.load(tmp_path / "crashed" / f"rank{rank}.pt")
        for name, w in straight.items():
            assert torch.equal(w, again[name]), name
