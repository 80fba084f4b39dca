"""The models' speed-ups change nothing but the clock: same values, same gradients, same trained bytes."""

import copy

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from models import MaxPool, build_classifier


def _with_torchs_pools(model: nn.Module) -> nn.Module:
    """A copy of a cnn whose pools are torch's nn.MaxPool2d, as they were before MaxPool."""
    slow = copy.deepcopy(model)
    slow.features = nn.Sequential(*[nn.MaxPool2d(2) if isinstance(m, MaxPool) else m for m in slow.features])
    return slow


def _pool_outputs(pool: nn.Module, images: torch.Tensor, upstream: torch.Tensor):
    x = images.clone().requires_grad_()
    out = pool(x)
    out.backward(upstream)
    return out.detach(), x.grad


@pytest.mark.parametrize(
    "images",
    [
        torch.randint(0, 3, (8, 16, 32, 32), generator=torch.Generator().manual_seed(0)).float(),  # ties in most windows
        torch.zeros(8, 16, 32, 32),  # a blank image: every window a tie
        torch.randn(4, 8, 15, 15, generator=torch.Generator().manual_seed(1)),  # an odd size: the last row dropped
    ],
    ids=["ties", "blank", "odd"],
)
@pytest.mark.parametrize("settings", [{}, {"kernel_size": 3, "stride": 2, "padding": 1}, {"ceil_mode": True}], ids=str)
def test_channels_last_pool_gives_the_same_values_and_gradients_as_torchs(images, settings):
    settings = {"kernel_size": 2, **settings}
    upstream = torch.randn(nn.MaxPool2d(**settings)(images).shape, generator=torch.Generator().manual_seed(2))
    expected, expected_grad = _pool_outputs(nn.MaxPool2d(**settings), images, upstream)
    out, grad = _pool_outputs(MaxPool(**settings), images, upstream)
    assert torch.equal(out, expected) and torch.equal(grad, expected_grad)
    assert out.is_contiguous()  # handed back in the input's layout: the next convolution runs as before


@pytest.mark.parametrize(
    "images",
    [
        torch.randint(0, 3, (8, 16, 32, 32), generator=torch.Generator().manual_seed(0)).float(),  # ties
        torch.zeros(8, 16, 32, 32),  # every window a tie
        torch.randn(4, 8, 15, 17, generator=torch.Generator().manual_seed(1)),  # odd sizes: the last row, column dropped
        torch.randn(3, 701, 6, 4, generator=torch.Generator().manual_seed(2)),  # more than one vector's worth of channels
    ],
    ids=["ties", "blank", "odd", "wide"],
)
def test_with_no_gradient_the_pool_gives_torchs_values_without_indices(images):
    images = images.clone()
    images[0, 0, 0, 1] = float("nan")  # a NaN wins its window
    with torch.no_grad(), _Ops() as ops:
        out = MaxPool(2)(images)
    assert "winnow.max_pool_2x2.default" in ops.names and not any("max_pool2d" in n for n in ops.names)  # the fast path ran
    with torch.no_grad():
        expected = nn.MaxPool2d(2)(images)
    assert torch.equal(out.isnan(), expected.isnan())
    assert torch.equal(out.nan_to_num(), expected.nan_to_num())
    assert out.is_contiguous()
    with torch.no_grad():  # a channels-last input: the same values, handed back contiguous as the other path does
        relaid = MaxPool(2)(images.contiguous(memory_format=torch.channels_last))
    assert torch.equal(relaid.nan_to_num(), expected.nan_to_num()) and relaid.is_contiguous()


class _Ops(TorchDispatchMode):
    """The names of the aten (and custom) ops that ran."""

    def __init__(self):
        super().__init__()
        self.names = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.append(str(func))
        return func(*args, **(kwargs or {}))


def test_the_no_gradient_pool_is_a_well_formed_op_and_a_pool_that_needs_a_gradient_keeps_torchs():
    from models import _halved

    torch.library.opcheck(_halved, (torch.randn(2, 3, 8, 6),))  # its fake agrees with it: shapes, strides, no aliasing
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    with _Ops() as ops:
        MaxPool(2)(x).sum().backward()
    assert not any("max_pool_2x2" in n for n in ops.names) and x.grad is not None  # indices kept for the gradient
    with torch.no_grad(), pytest.raises(RuntimeError):  # too small to pool: torch's own error, as nn.MaxPool2d gives
        MaxPool(2)(torch.randn(1, 1, 1, 4))


@pytest.mark.parametrize("name", ["cnn-nano", "cnn-small"])
def test_a_cnn_scores_the_same_bits_with_either_pool(name):
    """The no-gradient pool (scoring, the actor's scores, evaluation) gives a network's outputs bit for bit."""
    torch.manual_seed(0)
    fast = build_classifier(name, 20)
    slow = _with_torchs_pools(fast)
    images = torch.randn(64, 3, 32, 32)
    images[:8] = 0.0  # blank images: ties through the network
    with torch.no_grad():
        assert torch.equal(fast(images).view(torch.int32), slow(images).view(torch.int32))


def test_the_pool_hands_its_gradient_upstream_in_the_layout_of_its_input():
    conv = nn.Conv2d(3, 8, 3, padding=1)
    x = conv(torch.randn(4, 3, 16, 16))
    layouts = []
    x.register_hook(lambda grad: layouts.append(grad.is_contiguous()))
    MaxPool(2)(x).sum().backward()
    assert layouts == [True]  # GELU and GroupNorm's backward see the layout they saw before


def test_a_step_of_a_cnn_counts_the_same_flops_with_either_pool():
    from winnow.config import OptimConfig
    from winnow.datasets.stream import Draw
    from winnow.method.flops import training_step_flops
    from winnow.method.losses import per_example_loss

    torch.manual_seed(0)
    fast = build_classifier("cnn-small", 20)
    slow = _with_torchs_pools(fast)
    batch = Draw(
        torch.arange(32).numpy(), torch.randint(0, 256, (32, 3, 32, 32), dtype=torch.uint8), torch.randint(0, 20, (32,)), None
    )
    counts = [training_step_flops(model, OptimConfig(), per_example_loss, batch) for model in (fast, slow)]
    assert counts[0] == counts[1]  # the layout copies are no computation, and the ledger does not charge them


@pytest.mark.parametrize("name", ["cnn-nano", "cnn-small"])
def test_scoring_with_no_gradient_counts_the_same_flops_with_either_pool(name):
    """The no-gradient pool is one op, charged nothing as torch's max_pool2d is: the ledger's scoring line is the
    same number whichever pool runs."""
    from winnow.datasets.stream import Draw
    from winnow.method.flops import scoring_flops
    from winnow.method.losses import per_example_loss

    torch.manual_seed(0)
    fast = build_classifier(name, 20)
    slow = _with_torchs_pools(fast)
    batch = Draw(
        torch.arange(64).numpy(), torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8), torch.randint(0, 20, (64,)), None
    )
    assert scoring_flops(fast, per_example_loss, batch) == scoring_flops(slow, per_example_loss, batch) > 0


def test_a_pool_asked_for_its_indices_is_torchs_own():
    images = torch.randn(2, 4, 8, 8)
    out, indices = MaxPool(2, return_indices=True)(images)
    expected, expected_indices = nn.MaxPool2d(2, return_indices=True)(images)
    assert torch.equal(out, expected) and torch.equal(indices, expected_indices)


def test_a_cnn_trains_to_the_same_bytes_with_either_pool():
    torch.manual_seed(0)
    fast = build_classifier("cnn-nano", 5)
    slow = _with_torchs_pools(fast)
    assert sum(isinstance(m, MaxPool) for m in fast.modules()) == 2
    images, labels = torch.randn(16, 3, 32, 32), torch.randint(0, 5, (16,))
    images[:4] = 0.0  # blank images: ties through the network
    for model in (fast, slow):
        opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
        for _ in range(3):
            opt.zero_grad()
            nn.functional.cross_entropy(model(images), labels).backward()
            opt.step()
    for a, b in zip(fast.state_dict().values(), slow.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_the_caption_tokenizer_encodes_each_distinct_caption_once_and_gives_open_clips_tensor():
    import open_clip

    from models import clip_tokenizer

    captions = ["a red circle", "a red circle", "", "café ☕ " * 40, "a blue square", "a red circle", "A Red Circle"]
    ours = clip_tokenizer("clip-pico")
    assert ours is clip_tokenizer("clip-pico")  # built once per process
    expected = open_clip.get_tokenizer("winnow-clip-pico")(captions)
    assert torch.equal(ours(captions), expected)
    assert ours([]).shape == (0, expected.shape[1])
    assert torch.equal(ours("a red circle"), expected[:1])
    assert torch.equal(ours(captions, context_length=8), open_clip.get_tokenizer("winnow-clip-pico")(captions, 8))
    assert ours.sot_token_id == open_clip.get_tokenizer("winnow-clip-pico").sot_token_id  # the rest is open_clip's own


def test_the_long_lived_tokenizer_forgets_words_past_its_bound_and_still_gives_the_same_tensor(monkeypatch):
    import open_clip

    from models import Deduplicated

    ours = Deduplicated(open_clip.get_tokenizer("winnow-clip-pico"))
    monkeypatch.setattr(Deduplicated, "WORDS_KEPT", 5)
    captions = [f"caption number {i} of many" for i in range(20)]
    first = ours(captions)
    assert len(ours.tokenizer.cache) > 5
    ours.tokenizer.cache["a word seen long ago"] = "a word seen long ago"
    again = ours(captions)  # the word cache is reset before this call: the words are encoded anew
    assert "a word seen long ago" not in ours.tokenizer.cache
    assert torch.equal(first, again) and torch.equal(first, open_clip.get_tokenizer("winnow-clip-pico")(captions))


def test_a_clip_is_built_fresh_without_open_clips_no_weights_warning_and_other_warnings_still_show(caplog):
    import logging

    from models import build_clip

    with caplog.at_level(logging.WARNING):
        build_clip("clip-nano")
        logging.warning("another warning")
    messages = [r.getMessage() for r in caplog.records]
    assert not any("No pretrained weights loaded" in m for m in messages)
    assert "another warning" in messages
