"""The built-in pool's captions: several words per factor, so text carries more than the class and is never one template."""

from __future__ import annotations

import numpy as np

from winnow.datasets.render import COLOURS, SHAPES, TEXTURES

# Caption vocabulary: several words per factor, so text carries more than the class and is never one template.
SHAPE_WORDS = {
    "circle": ("circle", "disc", "round dot"),
    "square": ("square", "box", "block"),
    "triangle": ("triangle", "wedge"),
    "cross": ("cross", "plus sign"),
    "ring": ("ring", "hoop", "donut"),
}


COLOUR_WORDS = {
    "red": ("red", "crimson", "scarlet"),
    "yellow": ("yellow", "golden", "lemon"),
    "green": ("green", "emerald", "lime"),
    "blue": ("blue", "navy", "azure"),
}


TEXTURE_WORDS = {
    "solid": ("plain", "solid"),
    "stripes": ("striped", "banded"),
    "dots": ("dotted", "spotted"),
    "checker": ("checkered", "chequered"),
}


TEMPLATES = (
    "a {size}{colour} {texture} {shape} {position}",
    "{texture} {shape}, {colour}, {position}",
    "photo of a {colour} {shape} with a {texture} pattern",
    "a {colour} {shape} {position}",
    "there is a {size}{texture} {shape} in {colour}",
    "{colour} {texture} {shape}",
)


# Alt-text that describes the picture without naming what is in it, as much real alt-text does.
VAGUE_TEMPLATES = (
    "a {size}{texture} thing {position}",
    "something {texture} {position}",
    "my photo, {position}",
    "a {texture} pattern",
)
VAGUE_SHARE = 0.25  # of clean captions
UNINFORMATIVE = (
    "a photo I took",
    "look at this",
    "new upload",
    "from my collection",
    "see description",
    "IMG_{:04d}",
    "DSC{:05d}",
    "photo",
    "image",
    "untitled",
    "picture {}",
    "download ({})",
    "stock photo {}",
)


def captions_for(rng: np.random.Generator, labels, texture, radius, centre) -> np.ndarray:
    """One caption per example from its factors: a random template and random synonyms."""
    out = []
    for label, tex, r, (cx, cy) in zip(labels, texture, radius, centre):
        shape, colour = SHAPES[label // len(COLOURS)], COLOURS[label % len(COLOURS)]
        if abs(cx) < 0.25 and abs(cy) < 0.25:
            position = "in the centre"
        elif abs(cx) >= abs(cy):
            position = "on the left" if cx < 0 else "on the right"
        else:
            position = "at the top" if cy < 0 else "at the bottom"
        words = {
            "shape": _pick(rng, SHAPE_WORDS[shape]),
            "colour": _pick(rng, COLOUR_WORDS[colour]),
            "texture": _pick(rng, TEXTURE_WORDS[TEXTURES[tex]]),
            "size": "small " if r < 0.4 else ("large " if r > 0.5 else ""),
            "position": position,
        }
        templates = VAGUE_TEMPLATES if rng.random() < VAGUE_SHARE else TEMPLATES
        out.append(_pick(rng, templates).format(**words))
    return np.array(out, dtype=object)


def uninformative_captions(rng: np.random.Generator, n: int) -> np.ndarray:
    return np.array([_pick(rng, UNINFORMATIVE).format(int(rng.integers(0, 10000))) for _ in range(n)], dtype=object)


def _pick(rng, options):
    return options[int(rng.integers(0, len(options)))]
