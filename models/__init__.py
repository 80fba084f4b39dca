"""Model builders: named configs and one builder per objective.

"reference = cnn-tiny, learner = cnn-small" is a line in params.yaml. The CNNs are
what trains in minutes on 2 CPU cores; the ViTs are open_clip vision towers (built
with no pretrained weights) from a tiny one up to ViT-B width and depth. CLIP models
are open_clip configs: winnow's own small ones (models/configs/*.json, registered
with open_clip on import) and open_clip's, ViT-B-32 included; never pretrained.
"""

from __future__ import annotations

import functools
import logging
import threading
from pathlib import Path

import torch
from torch import nn

# name -> (family, config). Widths double per stage; each stage halves the resolution.
CLASSIFIERS: dict[str, tuple[str, dict]] = {
    "cnn-nano": ("cnn", {"widths": (8, 16, 32), "blocks": 1}),
    "cnn-tiny": ("cnn", {"widths": (16, 32, 64), "blocks": 1}),
    "cnn-small": ("cnn", {"widths": (32, 64, 128), "blocks": 1}),
    "cnn-medium": ("cnn", {"widths": (48, 96, 192), "blocks": 1}),
    "cnn-base": ("cnn", {"widths": (64, 128, 256), "blocks": 2}),
    "vit-tiny": ("vit", {"patch_size": 4, "width": 96, "layers": 4, "heads": 3}),
    "vit-small": ("vit", {"patch_size": 4, "width": 384, "layers": 12, "heads": 6}),
    "vit-b": ("vit", {"patch_size": 4, "width": 768, "layers": 12, "heads": 12}),
    # torchvision's ResNets, their state-dict keys unchanged: a reference loaded from a torchvision checkpoint
    "resnet18": ("resnet", {"block": "basic", "layers": (2, 2, 2, 2)}),
    "resnet34": ("resnet", {"block": "basic", "layers": (3, 4, 6, 3)}),
    "resnet50": ("resnet", {"block": "bottleneck", "layers": (3, 4, 6, 3)}),
}


class MaxPool(nn.MaxPool2d):
    """nn.MaxPool2d, computed in channels-last memory on the CPU and handed back (and its gradient handed back
    upstream) in the input's layout.

    torch's CPU kernel for NCHW max pooling is not vectorised: on a cnn-small batch it took longer than the
    convolution before it (28 ms against 26 ms, one thread; channels-last 2.6 ms). The values are the same, and so
    are the gradients (the same element wins a tie), so a model trains to the same bytes, only sooner; the layout
    copies are `copy_`, which the FLOP counter (winnow/method/flops.py) does not count, so a step's measured FLOPs
    are unchanged too (tests/test_models.py). On other devices, and with return_indices, it is nn.MaxPool2d.

    With no gradient to keep (scoring, the actor's scores, evaluation), a 2x2 pool of stride 2 is two elementwise
    maxima over strided views instead (_halved): no indices, no layout copies, faster (benchmarks/scoring_throughput.py
    and step_time.py measure it in place). A maximum is exact, so the values are the same; only a window whose
    largest value is a zero of both signs may hand back the other zero (torch.maximum's tie rule differs between its
    vector and scalar loops). tests/test_models.py checks the values and a network's outputs bit for bit."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu" or x.dim() != 4 or self.return_indices:
            return super().forward(x)
        if not (torch.is_grad_enabled() and x.requires_grad) and self._halves() and min(x.shape[-2:]) >= 2:
            return _halved(x)
        return _ChannelsLastPool.apply(x, *self._settings())

    def _settings(self) -> tuple:
        """(kernel size, stride, padding, dilation) as pairs, and ceil_mode: what torch's pooling kernel takes."""
        pair = nn.modules.utils._pair
        stride = self.stride if self.stride is not None else self.kernel_size
        return pair(self.kernel_size), pair(stride), pair(self.padding), pair(self.dilation), self.ceil_mode

    def _halves(self) -> bool:
        """Whether this pool is a plain 2x2 window of stride 2 (floor mode): what _halved computes."""
        return self._settings() == ((2, 2), (2, 2), (0, 0), (1, 1), False)


@torch.library.custom_op("winnow::max_pool_2x2", mutates_args=())
def _halved(x: torch.Tensor) -> torch.Tensor:
    """2x2 max pooling of stride 2 (floor mode) with no gradient: the larger of each column pair, then of each row
    pair; a NaN wins, as in torch's kernel, and an odd last row or column is dropped, as floor mode drops it.

    One op, as torch's max_pool2d is one, so the ledger charges it what it charges torch's pool: nothing (the
    FLOP counter, winnow/method/flops.py, counts matrix products, convolutions and pointwise ops; inside an op it
    sees nothing, so the maxima within are not counted as pointwise ops and no FLOP figure moves)."""
    h, w = x.shape[-2] // 2 * 2, x.shape[-1] // 2 * 2
    x = x[..., :h, :w]
    columns = torch.maximum(x[..., 1::2], x[..., 0::2])
    # contiguous, as the channels-last path hands its output back and as the fake below says (for any input layout)
    return torch.maximum(columns[..., 1::2, :], columns[..., 0::2, :]).contiguous()


@_halved.register_fake
def _(x: torch.Tensor) -> torch.Tensor:  # its output's shape, for tracing (torch.compile, meta tensors)
    return x.new_empty((*x.shape[:-2], x.shape[-2] // 2, x.shape[-1] // 2))


def _relaid(x: torch.Tensor, layout: torch.memory_format) -> torch.Tensor:
    """x copied into `layout` (a copy_, not a clone: the FLOP counter counts no copy)."""
    return torch.empty_like(x, memory_format=layout).copy_(x)


class _ChannelsLastPool(torch.autograd.Function):
    """Max pooling run on a channels-last copy: the forward's output and the backward's gradient both go back in the
    contiguous layout the rest of the network uses, so every other kernel runs exactly as before."""

    @staticmethod
    def forward(ctx, x, kernel_size, stride, padding, dilation, ceil_mode):
        relaid = _relaid(x, torch.channels_last)
        out, indices = torch.ops.aten.max_pool2d_with_indices(relaid, kernel_size, stride, padding, dilation, ceil_mode)
        ctx.save_for_backward(relaid, indices)
        ctx.args = (kernel_size, stride, padding, dilation, ceil_mode)
        return _relaid(out, torch.contiguous_format)

    @staticmethod
    def backward(ctx, grad):
        relaid, indices = ctx.saved_tensors
        grad = torch.ops.aten.max_pool2d_with_indices_backward(_relaid(grad, torch.channels_last), relaid, *ctx.args, indices)
        return _relaid(grad, torch.contiguous_format), None, None, None, None, None


class ConvNet(nn.Module):
    """Plain conv stages (conv-GroupNorm-GELU), global average pool, linear head."""

    def __init__(self, num_classes: int, widths=(32, 64, 128), blocks: int = 1):
        super().__init__()
        layers, c_in = [], 3
        for stage, width in enumerate(widths):
            for _ in range(blocks):
                layers += [nn.Conv2d(c_in, width, 3, padding=1, bias=False), nn.GroupNorm(4, width), nn.GELU()]
                c_in = width
            if stage < len(widths) - 1:
                layers.append(MaxPool(2))
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.feature_dim = c_in
        self.head = nn.Linear(c_in, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class ViTClassifier(nn.Module):
    """An open_clip VisionTransformer tower with a linear head on its pooled token."""

    def __init__(self, num_classes: int, image_size: int, patch_size: int, width: int, layers: int, heads: int):
        super().__init__()
        from open_clip.transformer import VisionTransformer

        self.tower = VisionTransformer(
            image_size=image_size, patch_size=patch_size, width=width, layers=layers, heads=heads, mlp_ratio=4.0, output_dim=width
        )
        self.feature_dim = width
        self.head = nn.Linear(width, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.tower(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.tower(x))


def _resnet(num_classes: int, block: str, layers: tuple[int, ...]) -> nn.Module:
    """torchvision's ResNet (weights=None: nothing downloaded), with the embed() and feature_dim the probe reads;
    its state dict is torchvision's, key for key, so `reference.checkpoint` loads one saved from torchvision."""
    from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

    class ResNetClassifier(ResNet):
        def embed(self, x: torch.Tensor) -> torch.Tensor:
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
            x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
            return torch.flatten(self.avgpool(x), 1)

    model = ResNetClassifier({"basic": BasicBlock, "bottleneck": Bottleneck}[block], list(layers), num_classes=num_classes)
    model.feature_dim = model.fc.in_features
    return model


def build_classifier(name: str, num_classes: int, image_size: int = 32) -> nn.Module:
    """Build a named classifier with fresh weights (nothing is ever downloaded), for images of
    image_size pixels (model.input_size: larger images are resized down to it, data.to_input)."""
    if name not in CLASSIFIERS:
        raise KeyError(f"unknown model {name!r}; choose one of {sorted(CLASSIFIERS)}")
    family, cfg = CLASSIFIERS[name]
    if family == "cnn":
        model = ConvNet(num_classes, **cfg)
    elif family == "resnet":
        model = _resnet(num_classes, **cfg)
    else:
        model = ViTClassifier(num_classes, image_size=image_size, **cfg)
    model.input_size = image_size
    return model


CONFIG_DIR = Path(__file__).parent / "configs"
# name -> open_clip config name, and whether the token embedding trains. When this was chosen,
# AdamW updated all 49408 rows of a token embedding each step, which on a CPU cost more than the
# rest of a tiny model's step, so the nano and tiny configs keep their random token embedding
# fixed (the transformer still learns). The pico scorer trains its narrow one (48 wide): measured
# on the default pool, that lifted its zero-shot accuracy as a reference from 0.181 to 0.222 and
# learnability with it from 0.47x to 0.27x uniform's steps. winnow's AdamW now updates only the
# rows a caption reached (winnow/method/optim.py), which makes a trained table cheap; the choice is
# kept because changing it would change every committed CLIP figure.
CLIPS: dict[str, tuple[str, bool]] = {
    "clip-pico": ("winnow-clip-pico", True),
    "clip-nano": ("winnow-clip-nano", False),
    "clip-tiny": ("winnow-clip-tiny", False),
    "clip-small": ("winnow-clip-small", True),
    "clip-vit-b-32": ("ViT-B-32", True),
}


def _register_configs() -> None:
    import open_clip

    if "winnow-clip-pico" not in open_clip.list_models():
        open_clip.add_model_config(CONFIG_DIR)


def _fresh_weights(record: logging.LogRecord) -> bool:
    """Drops open_clip's "No pretrained weights loaded" (winnow builds every CLIP fresh, on purpose); keeps the rest."""
    return not record.getMessage().startswith("No pretrained weights loaded for model")


def build_clip(name: str, image_size: int | None = None) -> nn.Module:
    """An open_clip CLIP model with fresh weights (pretrained=None: nothing is downloaded). With
    image_size, its vision tower is built for images of that size (fewer patches at a lower one:
    how a scorer runs at low resolution); model.input_size records it (data.to_input)."""
    import open_clip

    if name not in CLIPS:
        raise KeyError(f"unknown CLIP model {name!r}; choose one of {sorted(CLIPS)}")
    _register_configs()
    config, train_token_embedding = CLIPS[name]
    root = logging.getLogger()  # open_clip warns on the root logger that no weights were loaded: fresh is the intent
    root.addFilter(_fresh_weights)
    try:
        model = open_clip.create_model(config, pretrained=None, force_image_size=image_size)
    finally:
        root.removeFilter(_fresh_weights)
    model.token_embedding.weight.requires_grad_(train_token_embedding)
    model.input_size = model.visual.image_size[0] if isinstance(model.visual.image_size, tuple) else model.visual.image_size
    return model


def clip_context_length(name: str) -> int:
    """How many tokens the model's tokenizer writes per caption (models sharing it read the same targets)."""
    import open_clip

    if name not in CLIPS:
        raise KeyError(f"unknown CLIP model {name!r}; choose one of {sorted(CLIPS)}")
    _register_configs()
    return open_clip.get_model_config(CLIPS[name][0])["text_cfg"]["context_length"]


def patch_size(name: str) -> int | None:
    """A ViT's patch size (its input must be a multiple of it), None for a CNN (any size)."""
    if name in CLASSIFIERS:
        return CLASSIFIERS[name][1].get("patch_size")
    if name in CLIPS:
        import open_clip

        _register_configs()
        return open_clip.get_model_config(CLIPS[name][0])["vision_cfg"].get("patch_size")
    raise KeyError(f"unknown model {name!r}")


@functools.lru_cache(maxsize=None)
def clip_tokenizer(name: str):
    """open_clip's tokenizer for the model's context length (works offline), built once per process (its
    vocabulary takes 0.25 s to load) and tokenising each distinct caption once per call (Deduplicated)."""
    import open_clip

    _register_configs()
    return Deduplicated(open_clip.get_tokenizer(CLIPS[name][0]))


class Deduplicated:
    """A tokenizer that encodes each distinct text of a call once and copies its row to the repeats: the same
    tensor as the tokenizer's own (it encodes each text alone), sooner when captions repeat (templates, class
    prompts). open_clip's BPE with ftfy runs at ~4,000 captions/s: on a shard of templated captions it had taken
    longer than the model's forward."""

    WORDS_KEPT = 200_000  # open_clip's BPE keeps every word it has seen; this one lives as long as the process

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.lock = threading.Lock()  # a stream tokenises the shard ahead in a thread; evaluation in the loop's
        cache = getattr(tokenizer, "cache", None)
        self.initial = dict(cache) if isinstance(cache, dict) else None

    def __call__(self, texts: str | list[str], context_length: int | None = None) -> torch.Tensor:
        texts = [texts] if isinstance(texts, str) else list(texts)
        first: dict[str, int] = {}
        rows = torch.tensor([first.setdefault(text, len(first)) for text in texts], dtype=torch.long)
        with self.lock:
            if self.initial is not None and len(self.tokenizer.cache) > self.WORDS_KEPT:
                self.tokenizer.cache.clear()
                self.tokenizer.cache.update(self.initial)
            return self.tokenizer(list(first), context_length)[rows]

    def __getattr__(self, name: str):  # the rest of open_clip's tokenizer, as it is
        tokenizer = self.__dict__.get("tokenizer")
        if tokenizer is None:
            raise AttributeError(name)
        return getattr(tokenizer, name)
