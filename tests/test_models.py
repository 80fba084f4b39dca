"""The models' speed-ups change nothing but the clock: same values, same gradients, same trained bytes."""

import copy

import pytest
import torch
from torch import nn

from models import MaxPool, build_classifier


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
def test_channels_last_pool_gives_the_same_values_and_gradients_as_torchs(images):
    upstream = torch.randn(nn.MaxPool2d(2)(images).shape, generator=torch.Generator().manual_seed(2))
    expected, expected_grad = _pool_outputs(nn.MaxPool2d(2), images, upstream)
    out, grad = _pool_outputs(MaxPool(2), images, upstream)
    assert torch.equal(out, expected) and torch.equal(grad, expected_grad)
    assert out.is_contiguous()  # handed back in the input's layout: the next convolution runs as before


def test_a_cnn_trains_to_the_same_bytes_with_either_pool():
    torch.manual_seed(0)
    fast = build_classifier("cnn-nano", 5)
    slow = copy.deepcopy(fast)
    slow.features = nn.Sequential(*[nn.MaxPool2d(2) if isinstance(m, MaxPool) else m for m in slow.features])
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
