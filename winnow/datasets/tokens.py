"""Tokenise once per machine: the tokens of many captions at once (a shard's, a pool's) kept in the decoded cache
(winnow/datasets/decoded.py: its folder, bound and eviction), so every later stage and process reads them instead
of tokenising again. open_clip's BPE with ftfy runs at thousands of captions a second, slower than a small CLIP's
forward. An entry is keyed by the texts and by the tokenizer: its class, open_clip's and ftfy's versions, its
context length, and the tokens it gives a fixed probe text (another vocabulary or setting gives others).
"""

from __future__ import annotations

import functools
import hashlib
from importlib import metadata

import numpy as np
import torch

from winnow.datasets import decoded

KEPT_FROM = 256  # texts in a call from which their tokens are kept (a set of class prompts is not worth a file)
PROBE = 'A probe: Ünïcode, digits 0123, a "quote" and an emoji 🙂 — tokenised the same way?'


def tokenised(tokenizer, texts: list[str]) -> torch.Tensor:
    """tokenizer(texts), read from the cache when it holds these texts' tokens from this tokenizer (int64, as the
    tokenizer gives them), else tokenised and kept there when there are many texts and the cache is on."""
    name = _key(tokenizer, texts) if len(texts) >= KEPT_FROM and decoded.folder() is not None else None
    kept = decoded.read_entry(name, _fits(len(texts))) if name else None
    if kept is not None:
        return torch.from_numpy(kept["tokens"].astype(np.int64))
    tokens = tokenizer(texts)
    if name:
        decoded.write_entry(name, tokens=tokens.numpy().astype(np.int32 if int(tokens.max()) < 2**31 else np.int64))
    return tokens


def _fits(rows: int):
    def check(f: dict) -> None:
        if f["tokens"].ndim != 2 or len(f["tokens"]) != rows:
            raise ValueError(f"holds tokens of shape {f['tokens'].shape} for {rows} texts")

    return check


def _key(tokenizer, texts: list[str]) -> str | None:
    """The entry's name, or None for a tokenizer that says nothing of its context length (not kept)."""
    identity = _identity(tokenizer)
    if identity is None:
        return None
    encoded = [text.encode("utf-8", "surrogatepass") for text in texts]
    h = hashlib.sha256(f"tokens|{identity}|{len(texts)}|".encode())
    h.update(np.fromiter(map(len, encoded), np.int64, len(encoded)).tobytes())  # every length first: no separator to hold
    h.update(b"".join(encoded))  # then the bytes at once (a caption at a time took 2 ms per 5,000)
    return h.hexdigest()


@functools.lru_cache(maxsize=16)
def _identity(tokenizer) -> str | None:
    length = getattr(tokenizer, "context_length", None)
    if length is None:
        return None
    inner = getattr(tokenizer, "tokenizer", tokenizer)  # models.Deduplicated wraps open_clip's
    kind = type(inner)
    versions = "|".join(_version(p) for p in ("open_clip_torch", "ftfy"))
    probe = hashlib.sha256(tokenizer([PROBE]).numpy().tobytes()).hexdigest()
    return f"{kind.__module__}.{kind.__qualname__}|{versions}|{length}|{probe}"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "-"
