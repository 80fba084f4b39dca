"""The next step's draw, made while this step trains and already on its way to the device (a GPU run's data path).

On CUDA a step's host work (drawing the super-batch, gathering its rows, pinning them) would otherwise leave the GPU
idle between steps. `Prefetched` wraps any sampler (datasets/stream.py): `ahead(n)` starts step s + 1's draw of n
rows in a thread of its own while the caller trains step s, pins it and copies it on a CUDA stream of its own
(non-blocking: the copy overlaps the step's kernels); `draw(n)` hands it over once the caller's stream has waited
for that copy.

What it keeps: the sampler is called in the same order with the same sizes, so the draws are the very ones of a
run without it. A checkpoint written while a draw is ahead stores the sampler's state from before that draw
(`state()`), so a resumed run draws it again, neither skipped nor doubled. A draw asked with another size than the
one made ahead (a schedule that anneals) puts the sampler back and draws again. Tested on the CPU, where it runs
without pinning or streams (tests/test_training.py); the training loop uses it on CUDA only.
"""

from __future__ import annotations

import threading

import torch

from winnow.datasets.stream import Draw


class _Ahead:
    def __init__(self, n: int, state_before: dict):
        self.n, self.state_before = n, state_before
        self.drawn: Draw | None = None
        self.error: BaseException | None = None
        self.event = None  # CUDA: the copy's end, on the prefetch stream
        self.thread: threading.Thread | None = None


class Prefetched:
    """A sampler whose next draw is made ahead (see the module's docstring); everything else is the sampler's."""

    def __init__(self, sampler, device: torch.device):
        self.inner, self.device = sampler, device
        self.stream = torch.cuda.Stream(device) if device.type == "cuda" else None
        self.pending: _Ahead | None = None

    def __getattr__(self, name: str):  # kinds, size, peek, rows...: the sampler's own
        return getattr(self.inner, name)

    def ahead(self, n: int) -> None:
        """Start drawing the next n rows (and their copy to the device) in a thread."""
        self._drop()
        pending = _Ahead(n, self.inner.state())
        pending.thread = threading.Thread(target=self._draw, args=(pending,), name="winnow-prefetch", daemon=True)
        self.pending = pending
        pending.thread.start()

    def _draw(self, pending: _Ahead) -> None:
        try:
            drawn = self.inner.draw(pending.n)
            if self.stream is not None:
                torch.cuda.set_device(self.device)  # a thread's own current device: this rank's GPU, not GPU 0
                with torch.cuda.stream(self.stream):
                    images = drawn.images.pin_memory().to(self.device, non_blocking=True)
                    targets = drawn.targets.pin_memory().to(self.device, non_blocking=True)
                pending.event = torch.cuda.Event()
                pending.event.record(self.stream)
                drawn = Draw(drawn.ids, images, targets, drawn.pathology, drawn.weights, drawn.labels)
            pending.drawn = drawn
        except BaseException as error:  # raised where the draw is asked for, as it would have been
            pending.error = error

    def draw(self, n: int) -> Draw:
        """The draw made ahead, when it was of n rows; else the sampler put back and n rows drawn now."""
        pending, self.pending = self.pending, None
        if pending is None:
            return self.inner.draw(n)
        pending.thread.join()
        if pending.n != n:
            self.inner.restore(pending.state_before)
            return self.inner.draw(n)
        if pending.error is not None:
            raise pending.error
        if pending.event is not None:  # the step's kernels wait for the copy, and the copy's memory for them
            current = torch.cuda.current_stream(self.device)
            current.wait_event(pending.event)
            pending.drawn.images.record_stream(current)
            pending.drawn.targets.record_stream(current)
        return pending.drawn

    def state(self) -> dict:
        """The sampler's state before the draw made ahead, if one is: what a checkpoint must hold."""
        return self.pending.state_before if self.pending is not None else self.inner.state()

    def restore(self, state: dict) -> None:
        self._drop()
        self.inner.restore(state)

    def _drop(self) -> None:
        """Forget a draw made ahead, the sampler put back as before it."""
        pending, self.pending = self.pending, None
        if pending is not None:
            pending.thread.join()
            self.inner.restore(pending.state_before)

    def close(self) -> None:
        self._drop()
        self.inner.close()
