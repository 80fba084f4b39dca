"""The training loop keeps a step's freed buffers in glibc's heap (winnow/method/host_memory.py), and a user can
say no. Each check runs in a fresh Python process: mallopt is process-wide, and glibc's sliding mmap threshold
remembers what a process did before."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import textwrap

import pytest

from winnow.method.host_memory import without_settings


def _glibc() -> tuple[int, ...]:
    name, version = platform.libc_ver()
    return tuple(int(part) for part in version.split(".")[:2]) if name == "glibc" and version else ()


pytestmark = pytest.mark.skipif(_glibc() < (2, 33), reason="glibc 2.33 or later only (mallinfo2)")

# mallinfo2().hblks: how many blocks glibc serves by mmap. A fresh 8 MiB block is one more of them under glibc's
# defaults (the sliding threshold starts at 128 KiB) and none once the thresholds are raised.
PROBE = textwrap.dedent(
    """
    import ctypes, json, sys

    class MallInfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in
                    ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                     "keepcost")]

    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype, libc.malloc.restype = MallInfo2, ctypes.c_void_p

    def mapped_by_an_8_mib_block():
        before = libc.mallinfo2().hblks
        block = libc.malloc(8 * 2**20)
        after = libc.mallinfo2().hblks
        libc.free(ctypes.c_void_p(block))
        return after - before

    effect = None
    """
)
REPORT = 'print(json.dumps({"effect": effect, "mapped": mapped_by_an_8_mib_block()}))\n'


def probe(setup: str, **env: str) -> dict:
    # a machine's own malloc settings (a CI runner may set MALLOC_*_) are dropped: each test says what it sets
    environment = without_settings(os.environ) | env
    script = PROBE + textwrap.dedent(setup) + "\n" + REPORT
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=environment, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


KEEP = "from winnow.method.host_memory import keep_freed_buffers\neffect = keep_freed_buffers()"


def test_glibc_maps_a_large_block_by_default():
    assert probe("")["mapped"] == 1


def test_keeping_freed_buffers_serves_a_large_block_from_the_heap():
    assert probe(KEEP) == {"effect": "kept in the heap", "mapped": 0}


def test_winnow_malloc_default_leaves_glibc_as_it_is():
    out = probe(KEEP, WINNOW_MALLOC="default")
    assert out == {"effect": "glibc defaults (WINNOW_MALLOC=default)", "mapped": 1}


def test_a_misspelt_winnow_malloc_is_an_error_naming_the_variable():
    environment = {**os.environ, "WINNOW_MALLOC": "defualt"}
    script = "from winnow.method.host_memory import keep_freed_buffers\nkeep_freed_buffers()"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=environment, timeout=300)
    assert done.returncode != 0
    assert "WINNOW_MALLOC='defualt'" in done.stderr and "'default'" in done.stderr


def test_the_users_own_glibc_tunables_win():
    # a threshold below 8 MiB that the user chose: winnow must not raise it
    out = probe(KEEP, GLIBC_TUNABLES="glibc.malloc.mmap_threshold=1048576")
    assert out == {"effect": "the user's malloc settings (GLIBC_TUNABLES or MALLOC_*_)", "mapped": 1}


def test_the_users_own_malloc_variables_win():
    out = probe(KEEP, MALLOC_MMAP_THRESHOLD_="1048576")
    assert out == {"effect": "the user's malloc settings (GLIBC_TUNABLES or MALLOC_*_)", "mapped": 1}


def test_a_preloaded_allocator_is_left_to_its_own_settings():
    # the loader warns that it cannot preload a file that is not there, and goes on: only the variable is read
    out = probe(KEEP, LD_PRELOAD="/nonexistent/libjemalloc.so.2")
    assert out == {"effect": "a preloaded allocator (LD_PRELOAD): its own settings", "mapped": 1}


def test_the_training_loop_keeps_freed_buffers():
    """Through winnow's own loop: a few steps of a tiny model, then the probe."""
    out = probe(
        """
        import numpy as np, torch
        from winnow.config import OptimConfig
        from winnow.datasets.contract import Split
        from winnow.method.objectives import OBJECTIVES
        from winnow.method.training import train
        images = torch.zeros(64, 3, 16, 16, dtype=torch.uint8)
        split = Split(np.arange(64), images, np.arange(64) % 4, {}, [])
        model = OBJECTIVES["classification"].build_model("cnn-nano", 4, 16)
        train(model, split, OptimConfig(steps=2, batch_size=16, warmup_steps=1), seed=0)
        from winnow.method import host_memory
        effect = host_memory._state.get("effect")  # the loop itself set it: nothing above called it
        """
    )
    assert out == {"effect": "kept in the heap", "mapped": 0}
