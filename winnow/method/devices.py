"""Which device and precision a stage runs at, and the process group under torchrun.

`device: auto` is CUDA when present (this rank's GPU under torchrun), else the CPU.
`precision: auto` is bfloat16 autocast on CUDA and float32 on the CPU: bf16 keeps
float32's range, so no loss scaling is needed; weights, optimiser state and the
losses written to the store stay float32.
"""

from __future__ import annotations

import contextlib
import os

import torch
import torch.distributed as dist

from winnow.errors import ConfigError


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {name!r} asked for, but torch sees no CUDA device; set device: auto or cpu")
        if device.index is None:
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    return device


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A batch to the device: on CUDA through pinned host memory and a non-blocking copy, so the copy runs on the
    copy engine while the host goes on to launch the step's kernels (they queue behind it on the stream); on the
    CPU the tensor as it is."""
    if device.type != "cuda" or tensor.device.type == "cuda":  # there already (datasets/prefetch.py copied it)
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)


def autocast_dtype(device: torch.device, precision: str = "auto") -> torch.dtype | None:
    """The autocast dtype, or None for plain float32."""
    if precision == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    return {"fp32": None, "bf16": torch.bfloat16}[precision]


def autocast(device: torch.device, precision: str = "auto"):
    dtype = autocast_dtype(device, precision)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


@contextlib.contextmanager
def cpu_share(parallel: int):
    """torch's CPU threads for one of `parallel` processes sharing this machine: the process's count over
    `parallel` (at least one) until the block ends. Thread count is where some of torch's CPU reductions split
    their sums (layer norm's and convolution's weight gradients), so it decides the last bits of a run's numbers:
    every train stage of a config runs on the same share, whoever launches it (tests/test_devices.py)."""
    if parallel <= 1:
        yield torch.get_num_threads()
        return
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, before // parallel))
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


def rank_and_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


ARM_WORKER = "WINNOW_ARM_WORKER"  # set in a process that trains one of several arms at once (tasks/launch.py)


def runs_bare() -> bool:
    """Whether this process is a worker that runs its stage without Prefect: a torchrun rank, or one arm of several
    trained at once; whoever launched it orchestrates."""
    return under_torchrun() or os.environ.get(ARM_WORKER) == "1"


def under_torchrun() -> bool:
    """Whether this process is one of several ranks torchrun launched (it sets WORLD_SIZE)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_distributed() -> tuple[int, int]:
    """Join the process group when launched by torchrun: NCCL on GPUs, gloo on CPUs."""
    if under_torchrun() and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return rank_and_world()
