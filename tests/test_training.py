"""The training loop: selection changes what is kept, and a crashed run resumes to the same weights."""

import copy

import numpy as np
import pytest
import torch

from models import build_classifier
from winnow.config import TrainConfig
from winnow.datasets.contract import load_split
from winnow.datasets.stream import InMemory
from winnow.method.checkpoints import CheckpointPlan
from winnow.method.losses import per_example_loss
from winnow.method.selection import Selector
from winnow.method.training import Actor, Blend, train


class Crash(Exception):
    pass


def _in_memory(pool, seed=0):
    """The pool drawn in memory with its labels, its pathology counted in each kept batch."""
    return InMemory(pool, torch.as_tensor(pool.labels), seed, pool.columns["pathology"])


def _run(pool, cfg, path=None, on_step=None, policy="uniform", reference_loss=None, actor=None):
    torch.manual_seed(0)
    model = build_classifier("cnn-nano", 20)
    out = train(
        model,
        _in_memory(pool),
        cfg,
        seed=0,
        selector=Selector(policy, keep_fraction=0.5, reference_loss=reference_loss),
        actor=Actor(actor) if actor is not None else None,
        checkpoint=CheckpointPlan(path, every=5),
        on_step=on_step,
    )
    return model, out


def _actor():
    torch.manual_seed(1)
    return build_classifier("cnn-nano", 20)


@pytest.fixture(scope="module")
def pool(tiny_data):
    return load_split(f"{tiny_data.data.root}/pool", 32, 20)


def test_a_crashed_run_resumes_from_its_checkpoint_and_ends_with_the_same_weights(pool, tmp_path):
    cfg = TrainConfig(model="cnn-nano", steps=12, batch_size=16, warmup_steps=2)
    reference_loss = torch.rand(int(pool.ids.max()) + 1, generator=torch.Generator().manual_seed(0))  # indexed by example id
    straight, _ = _run(pool, cfg, tmp_path / "a.pt", policy="learnability", reference_loss=reference_loss)

    def crash(step, ids):
        if step == 8:
            raise Crash

    with pytest.raises(Crash):
        _run(pool, cfg, tmp_path / "b.pt", crash, policy="learnability", reference_loss=reference_loss)
    assert torch.load(tmp_path / "b.pt", weights_only=False)["step"] == 5  # last checkpoint before the crash
    resumed, out = _run(pool, cfg, tmp_path / "b.pt", policy="learnability", reference_loss=reference_loss)
    assert out["step"] == 12 and len(out["steps_log"]) == 12
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(a, b)


def test_drawing_each_step_ahead_trains_on_the_same_rows_and_a_crash_resumes_to_the_same_weights(pool, tmp_path):
    """The next step's draw made during this one (datasets/prefetch.py, what a CUDA run does), here on the CPU: the
    same kept ids and weights as drawing in line, and a checkpoint written while a draw is ahead resumes without
    skipping or repeating it. A schedule that anneals changes the draw's size on the way."""
    from winnow.datasets.prefetch import Prefetched
    from winnow.method.schedules import Schedule

    cfg = TrainConfig(model="cnn-nano", steps=12, batch_size=16, warmup_steps=2)
    reference_loss = torch.rand(int(pool.ids.max()) + 1, generator=torch.Generator().manual_seed(0))

    def run(sampler, path, on_step=None):
        torch.manual_seed(0)
        model = build_classifier("cnn-nano", 20)
        selector = Selector("learnability", keep_fraction=0.5, reference_loss=reference_loss, schedule=Schedule(0.25))
        train(model, sampler, cfg, seed=0, selector=selector, checkpoint=CheckpointPlan(path, every=5), on_step=on_step)
        return model

    kept = {"in line": [], "ahead": []}
    in_line = run(_in_memory(pool), tmp_path / "a.pt", lambda step, ids: kept["in line"].append(ids.copy()))
    ahead = run(
        Prefetched(_in_memory(pool), torch.device("cpu")), tmp_path / "b.pt", lambda s, ids: kept["ahead"].append(ids.copy())
    )
    assert all(np.array_equal(a, b) for a, b in zip(kept["in line"], kept["ahead"], strict=True))

    def crash(step, ids):
        if step == 8:
            raise Crash

    crashed = Prefetched(_in_memory(pool), torch.device("cpu"))
    with pytest.raises(Crash):  # checkpointed at step 5, with step 6's draw made ahead
        run(crashed, tmp_path / "c.pt", crash)
    assert crashed.pending is None  # the crashed run's draw made ahead was joined and put back: no thread outlives it
    resumed = run(Prefetched(_in_memory(pool), torch.device("cpu")), tmp_path / "c.pt")
    for a, b, c in zip(in_line.state_dict().values(), ahead.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(a, b) and torch.equal(a, c)


def test_a_crashed_run_with_an_actor_resumes_to_the_same_learner_and_actor_weights(pool, tmp_path):
    cfg = TrainConfig(model="cnn-nano", steps=12, batch_size=16, warmup_steps=2)
    reference_loss = torch.rand(int(pool.ids.max()) + 1, generator=torch.Generator().manual_seed(0))
    kw = dict(policy="learnability", reference_loss=reference_loss)
    straight_actor = _actor()
    straight, _ = _run(pool, cfg, tmp_path / "a.pt", actor=straight_actor, **kw)

    def crash(step, ids):
        if step == 8:
            raise Crash

    with pytest.raises(Crash):
        _run(pool, cfg, tmp_path / "b.pt", crash, actor=_actor(), **kw)
    assert torch.load(tmp_path / "b.pt", weights_only=False)["step"] == 5
    resumed_actor = _actor()  # fresh weights: the checkpoint must restore the actor and its optimiser too
    resumed, out = _run(pool, cfg, tmp_path / "b.pt", actor=resumed_actor, **kw)
    assert out["step"] == 12 and all("actor_loss" in row for row in out["steps_log"])
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(a, b)
    for a, b in zip(straight_actor.state_dict().values(), resumed_actor.state_dict().values()):
        assert torch.equal(a, b)


class Spy:
    """A loss function that records who ran it, on how many examples, and whether it built a graph."""

    def __init__(self, learner, actor):
        self.names, self.calls = {id(learner): "learner", id(actor): "actor"}, []

    def __call__(self, model, images, targets):
        self.calls.append((self.names[id(model)], len(images), torch.is_grad_enabled()))
        return per_example_loss(model, images, targets)


@pytest.mark.parametrize("trains_on, actor_batch", [("kept", 16), ("super_batch", 32)])
def test_the_actor_scores_each_super_batch_and_trains_beside_the_learner(pool, trains_on, actor_batch):
    torch.manual_seed(0)
    learner, actor = build_classifier("cnn-nano", 20), _actor()
    before = [p.detach().clone() for p in actor.parameters()]
    spy = Spy(learner, actor)
    cfg = TrainConfig(model="cnn-nano", steps=3, batch_size=16, warmup_steps=1)
    reference_loss = torch.zeros(int(pool.ids.max()) + 1)
    selector = Selector("learnability", keep_fraction=0.5, reference_loss=reference_loss)
    train(learner, pool, cfg, seed=0, selector=selector, actor=Actor(actor, trains_on), loss_fn=spy)
    per_step = [("actor", 32, False), ("learner", 16, True), ("actor", actor_batch, True)]
    assert spy.calls == per_step * 3  # the learner never scores: the actor does, then both train
    assert any(not torch.equal(a, b) for a, b in zip(before, actor.parameters()))


def test_policies_without_an_online_loss_ignore_the_actor(pool):
    torch.manual_seed(0)
    learner, actor = build_classifier("cnn-nano", 20), _actor()
    spy = Spy(learner, actor)
    cfg = TrainConfig(model="cnn-nano", steps=2, batch_size=16, warmup_steps=1)
    reference_loss = torch.zeros(int(pool.ids.max()) + 1)
    selector = Selector("easy_reference", keep_fraction=0.5, reference_loss=reference_loss)
    train(learner, pool, cfg, seed=0, selector=selector, actor=Actor(actor), loss_fn=spy)
    assert spy.calls == [("learner", 16, True)] * 2  # no actor cost where the policy reads no online loss


def test_easy_reference_keeps_the_examples_the_reference_finds_easiest(pool):
    cfg = TrainConfig(model="cnn-nano", steps=3, batch_size=16, warmup_steps=1)
    reference_loss = torch.zeros(int(pool.ids.max()) + 1)
    reference_loss[pool.ids[pool.columns["pathology"] == "noisy_label"]] = 10.0  # the reference says: wrong labels are hard
    _, out = _run(pool, cfg, policy="easy_reference", reference_loss=reference_loss)
    assert all(row.get("selected_noisy_label", 0.0) == 0.0 for row in out["steps_log"])
    _, uniform = _run(pool, cfg)
    assert np.mean([row.get("selected_noisy_label", 0.0) for row in uniform["steps_log"]]) > 0.1


def test_a_policy_that_needs_reference_losses_refuses_to_run_without_them(pool):
    with pytest.raises(ValueError, match="needs reference losses"):
        _run(pool, TrainConfig(model="cnn-nano", steps=1), policy="learnability")


KILL_TRAINING_AT_STEP_8 = """
import os, signal, sys
sys.path.insert(0, {root!r})
import torch
from models import build_classifier
from winnow.config import TrainConfig
from winnow.datasets.contract import load_split
from winnow.datasets.stream import InMemory
from winnow.method.checkpoints import CheckpointPlan
from winnow.method.selection import Selector
from winnow.method.training import train
torch.set_num_threads({threads})  # the parent's: float sums depend on how work is split over threads
pool = load_split({pool!r}, 32, 20)
def kill(step, ids):
    if step == 8:
        os.kill(os.getpid(), signal.SIGKILL)
torch.manual_seed(0)
train(build_classifier("cnn-nano", 20), InMemory(pool, torch.as_tensor(pool.labels), 0, pool.columns["pathology"]),
      TrainConfig(model="cnn-nano", steps=12, batch_size=16, warmup_steps=2), seed=0,
      selector=Selector("uniform", keep_fraction=0.5), checkpoint=CheckpointPlan({ckpt!r}, every=5), on_step=kill)
"""


@pytest.mark.e2e  # runs whole stages or other processes: the full tier
def test_a_training_run_killed_with_sigkill_resumes_from_its_checkpoint_to_the_same_weights(pool, tiny_data, tmp_path):
    import signal
    import subprocess
    import sys
    import textwrap
    from pathlib import Path

    cfg = TrainConfig(model="cnn-nano", steps=12, batch_size=16, warmup_steps=2)
    straight, _ = _run(pool, cfg, tmp_path / "a.pt")
    code = textwrap.dedent(
        KILL_TRAINING_AT_STEP_8.format(
            root=str(Path(__file__).resolve().parents[1]),
            pool=f"{tiny_data.data.root}/pool",
            ckpt=str(tmp_path / "b.pt"),
            threads=torch.get_num_threads(),
        )
    )
    killed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert torch.load(tmp_path / "b.pt", weights_only=False)["step"] == 5
    resumed, out = _run(pool, cfg, tmp_path / "b.pt")
    assert out["step"] == 12 and len(out["steps_log"]) == 12  # no step lost, none repeated
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(a, b)


def test_a_nan_loss_stops_training_with_the_step_and_what_to_do(pool):
    model = build_classifier("cnn-nano", 20)
    nan_loss = lambda m, x, y: m(x.float()).sum(1) * float("nan")  # noqa: E731
    with pytest.raises(FloatingPointError, match=r"loss is nan at step 0.*lower the learning rate"):
        train(model, pool, TrainConfig(model="cnn-nano", steps=3, batch_size=8), seed=0, loss_fn=nan_loss)


def test_a_batch_larger_than_the_data_names_the_batch_not_a_super_batch(tiny_data):
    from winnow.datasets.contract import load_split
    from winnow.errors import DataError

    curated = load_split(f"{tiny_data.data.root}/curated", 32, 20).subset(range(20))
    with pytest.raises(DataError, match=r"reference: batch_size \(32\) is larger than the 20 examples"):
        train(
            build_classifier("cnn-nano", 20),
            curated,
            TrainConfig(model="cnn-nano", steps=2, batch_size=32),
            seed=0,
            name="reference",
        )


@pytest.mark.parametrize("policy", ["uniform", "easy_reference", "hard_learner", "learnability"])
def test_every_policy_trains_at_a_keep_fraction_of_one_tenth(pool, policy):
    cfg = TrainConfig(model="cnn-nano", steps=2, batch_size=16, warmup_steps=1)
    reference_loss = torch.rand(int(pool.ids.max()) + 1, generator=torch.Generator().manual_seed(0))
    kept = []
    torch.manual_seed(0)
    selector = Selector(policy, keep_fraction=0.1, reference_loss=reference_loss)
    train(build_classifier("cnn-nano", 20), pool, cfg, seed=0, selector=selector, actor=Actor(_actor()),
          on_step=lambda step, ids: kept.append(ids))  # fmt: skip
    assert [len(set(ids.tolist())) for ids in kept] == [16, 16]  # 16 distinct of a super-batch of 160


def _clip_pool(tiny_data):
    from winnow.method.objectives import OBJECTIVES

    split = OBJECTIVES["contrastive"].usable(load_split(f"{tiny_data.data.root}/pool", 32, 20))
    return split, OBJECTIVES["contrastive"].targets("clip-pico", split)


def _jest_run(split, tokens, path, steps, on_step=None, kept=None):
    from models import build_clip
    from winnow.method.losses import per_example_contrastive

    n = int(split.ids.max()) + 1
    gen = torch.Generator().manual_seed(0)
    image, text = (torch.nn.functional.normalize(torch.randn(n, 32, generator=gen), dim=1) for _ in range(2))
    torch.manual_seed(0)
    learner = build_clip("clip-pico")
    torch.manual_seed(1)
    actor = build_clip("clip-pico", 16)  # the actor at train.score_resolution 16, the learner at 32
    cfg = TrainConfig(model="clip-pico", steps=steps, batch_size=16, warmup_steps=1)
    selector = Selector("learnability", keep_fraction=0.25, method="jest", chunks=4, reference_embeddings=(image, text, 10.0))

    def each_step(step, ids):
        if kept is not None:
            kept.append(ids)
        if on_step is not None:
            on_step(step, ids)

    train(learner, InMemory(split, tokens, 0), cfg, seed=0, selector=selector, actor=Actor(actor),
          loss_fn=per_example_contrastive, checkpoint=CheckpointPlan(path, every=2), on_step=each_step)  # fmt: skip
    return learner, actor


def test_a_jest_run_keeps_distinct_pairs_and_a_crashed_one_resumes_to_the_same_weights(tiny_data, tmp_path):
    split, tokens = _clip_pool(tiny_data)
    kept = []
    straight, straight_actor = _jest_run(split, tokens, tmp_path / "a.pt", 5, kept=kept)
    assert [len(set(ids.tolist())) for ids in kept] == [16] * 5

    def crash(step, ids):
        if step == 3:
            raise Crash

    with pytest.raises(Crash):
        _jest_run(split, tokens, tmp_path / "b.pt", 5, on_step=crash)
    resumed, resumed_actor = _jest_run(split, tokens, tmp_path / "b.pt", 5)
    for a, b in zip([*straight.state_dict().values(), *straight_actor.state_dict().values()],
                    [*resumed.state_dict().values(), *resumed_actor.state_dict().values()]):  # fmt: skip
        assert torch.equal(a, b)


def test_jest_refuses_to_run_without_the_references_embeddings(tiny_data):

    with pytest.raises(ValueError, match="needs reference embeddings"):
        Selector("learnability", keep_fraction=0.5, method="jest", reference_loss=torch.zeros(10))


def test_a_finished_run_run_again_leaves_its_checkpoint_byte_for_byte(pool, tmp_path):
    """Every later stage is keyed on the checkpoint's bytes: rerunning a finished stage must not make it stale."""
    cfg = TrainConfig(model="cnn-nano", steps=3, batch_size=16, warmup_steps=1)
    _run(pool, cfg, tmp_path / "run.pt")
    first = (tmp_path / "run.pt").read_bytes()
    _run(pool, cfg, tmp_path / "run.pt")  # resumes at its last step and saves again
    assert (tmp_path / "run.pt").read_bytes() == first


@pytest.mark.parametrize("name", ["cnn-nano", "clip-pico"])
def test_the_update_the_loop_uses_gives_the_numbers_of_torchs_default_loop(name):
    """Trainee's AdamW runs foreach (one kernel over every tensor), and clip-pico's token table only on the rows
    looked up (method/optim.py): the same weights as the dense for-loop update torch uses on a CPU, so the
    speed-up moves no curve."""
    from models import build_clip, clip_tokenizer
    from winnow.config import OptimConfig
    from winnow.datasets.stream import Draw
    from winnow.method.losses import per_example_contrastive
    from winnow.method.training import Trainee

    torch.manual_seed(0)
    clip = name.startswith("clip")
    model = build_clip(name, 32) if clip else build_classifier(name, 20)
    targets = clip_tokenizer(name)([f"a shape number {i}" for i in range(16)]) if clip else torch.randint(0, 20, (16,))
    batch = Draw(np.arange(16), torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8), targets, None)
    loss = per_example_contrastive if clip else per_example_loss
    weights = []
    for loops_own in (True, False):
        trainee = Trainee(copy.deepcopy(model), OptimConfig(lr=1e-2), 1)
        assert trainee.optimizer.defaults["foreach"] is True
        if not loops_own:
            trainee.optimizer = torch.optim.AdamW(trainee.model.parameters(), lr=1e-2, weight_decay=0.05, foreach=False)
        for step in range(3):
            trainee.step(batch, loss, 1e-2, "fp32", name, step)
        weights.append(trainee.model.state_dict())
    for a, b in zip(weights[0].values(), weights[1].values(), strict=True):
        assert torch.equal(a, b)


class _Counted(InMemory):
    """An in-memory sampler that records how many rows each draw asked for."""

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.asked = []

    def draw(self, n):
        self.asked.append(n)
        return super().draw(n)


def _blended_run(pool, curated, cfg, path, on_step=None):
    torch.manual_seed(0)
    model = build_classifier("cnn-nano", 20)
    source = _Counted(pool, torch.as_tensor(pool.labels), 0, pool.columns["pathology"])
    blend = Blend(source, InMemory(curated, torch.as_tensor(curated.labels), 4), share=0.25)
    out = train(
        model,
        blend,
        cfg,
        seed=0,
        selector=Selector("hard_learner", keep_fraction=0.5),
        actor=Actor(_actor()),
        checkpoint=CheckpointPlan(path, every=5),
        on_step=on_step,
    )
    return model, out, source


def test_a_blended_run_takes_its_curated_share_of_every_batch_and_selects_the_rest_from_the_pool(pool, tiny_data, tmp_path):
    from winnow.datasets.contract import Split

    loaded = load_split(f"{tiny_data.data.root}/curated", 32, 20)
    curated = Split(loaded.ids + 10**6, loaded.images, loaded.labels)  # ids apart from the pool's, to tell them apart
    cfg = TrainConfig(model="cnn-nano", steps=12, batch_size=16, warmup_steps=2)
    kept = []
    straight, out, source = _blended_run(pool, curated, cfg, tmp_path / "a.pt", lambda step, ids: kept.append(ids))
    assert all(len(ids) == 16 and int((ids >= 10**6).sum()) == 4 for ids in kept)  # a quarter of every batch curated
    assert set(source.asked) == {24}  # the super-batch is drawn for the pool's 12 rows, at keep fraction 0.5

    def crash(step, ids):
        if step == 8:
            raise Crash

    with pytest.raises(Crash):
        _blended_run(pool, curated, cfg, tmp_path / "b.pt", crash)
    resumed, out, _ = _blended_run(pool, curated, cfg, tmp_path / "b.pt")  # the curated draw resumes where it was
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(a, b)
