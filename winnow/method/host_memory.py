"""glibc's allocator, set for a training loop on the CPU.

Every step frees and allocates again the same large buffers: activations, gradients, a CLIP token table's gradient
(49,408 x 48 floats, 9.5 MB). With glibc's defaults a block over the mmap threshold gets fresh pages from the
kernel, and memory freed at the top of the heap goes back to the kernel once more than the trim threshold of it is
free; so a step pays page faults and the kernel's zeroing for buffers it held a moment before (torch's profiler
shows them as aten::fill_ and copy_ on new tensors). Raising both thresholds keeps freed buffers in the heap for
the next step. It changes where memory comes from, never a number computed: the same curves bit for bit.

`keep_freed_buffers()` sets them once per process with mallopt(3), which is process-wide. It leaves glibc as it
is when WINNOW_MALLOC=default (unset or `keep` keeps the buffers; any other value is an error that names it),
when the user set glibc's own malloc tunables (GLIBC_TUNABLES, MALLOC_*_), with another allocator preloaded
(LD_PRELOAD naming a *malloc* library), and on a C library that is not glibc.
What it gained and cost is measured in benchmarks/host_memory.py: step times and peak resident memory with and
without, each setting in a fresh process.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import platform

from winnow.errors import ConfigError

log = logging.getLogger("winnow")

MMAP_THRESHOLD = 32 * 2**20  # glibc's own ceiling for its sliding threshold (64-bit): a larger block is still mapped
TRIM_THRESHOLD = 2**30  # freed memory the heap may keep before giving its top back to the kernel
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt's parameter numbers (malloc.h)
_USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_")
READS = ("WINNOW_MALLOC", "GLIBC_TUNABLES", "LD_PRELOAD", *_USER_SETTINGS)  # every variable _apply() looks at
_state: dict = {}


def without_settings(environ) -> dict:
    """`environ` less every variable that decides what keep_freed_buffers() does: for a fresh process (a test, a
    benchmark) that must run with winnow's choice alone, whatever the machine it runs on sets."""
    return {k: v for k, v in environ.items() if k not in READS}


def keep_freed_buffers() -> str:
    """Raise glibc's mmap and trim thresholds for this process (once; later calls return the first answer).
    Returns what is in effect: "kept in the heap", or why glibc's defaults stand."""
    if "effect" not in _state:
        _state["effect"] = _apply()
        log.debug("allocator: %s", _state["effect"])
    return _state["effect"]


def _apply() -> str:
    choice = os.environ.get("WINNOW_MALLOC", "").strip().lower()
    if choice not in ("", "keep", "default"):
        raise ConfigError(
            f"WINNOW_MALLOC={os.environ['WINNOW_MALLOC']!r}: expected 'keep' (freed buffers kept in the heap, the "
            "default when it is unset) or 'default' (glibc's own settings)"
        )
    if choice == "default":
        return "glibc defaults (WINNOW_MALLOC=default)"
    if "malloc" in os.environ.get("GLIBC_TUNABLES", "") or any(name in os.environ for name in _USER_SETTINGS):
        return "the user's malloc settings (GLIBC_TUNABLES or MALLOC_*_)"
    if "malloc" in os.environ.get("LD_PRELOAD", "").lower():  # jemalloc, tcmalloc, mimalloc: not glibc's heap
        return "a preloaded allocator (LD_PRELOAD): its own settings"
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return "not glibc: the C library's defaults"
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    if not (libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) and libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)):
        return "glibc defaults (mallopt refused)"
    return "kept in the heap"
