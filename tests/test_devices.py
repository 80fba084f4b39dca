"""Device and precision: the same code on CPU, in bf16 autocast, and on CUDA when a GPU is present."""

import pytest
import torch

from winnow.config import ConfigError, load_params
from winnow.method.checkpoints import model_from_checkpoint
from winnow.method.devices import autocast_dtype, cpu_share, pick_device
from winnow.stages.data import data_stage
from winnow.stages.evaluate import evaluate_stage
from winnow.stages.paths import Paths
from winnow.stages.reference import reference_stage
from winnow.stages.score import score_stage
from winnow.stages.summary import summary_stage
from winnow.stages.train import train_stage


def test_auto_means_cuda_with_bf16_when_present_and_cpu_with_fp32_otherwise():
    device = pick_device("auto")
    assert device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert autocast_dtype(torch.device("cuda"), "auto") is torch.bfloat16
    assert autocast_dtype(torch.device("cpu"), "auto") is None
    assert autocast_dtype(torch.device("cpu"), "bf16") is torch.bfloat16


def test_an_arm_of_several_at_once_trains_on_its_share_of_the_threads_and_gives_them_back():
    before = torch.get_num_threads()
    with cpu_share(1) as threads:
        assert threads == torch.get_num_threads() == before  # one arm at a time: torch's own count, untouched
    with cpu_share(2) as threads:
        assert threads == torch.get_num_threads() == max(1, before // 2)
    with cpu_share(before + 1) as threads:
        assert threads == 1  # more arms than threads: one each, never none
    assert torch.get_num_threads() == before


def test_the_thread_count_decides_the_last_bits_of_a_gradient_so_it_is_part_of_the_config():
    """Why train.parallel_arms is a param DVC tracks, not a machine setting: a layer norm's weight gradient sums over
    the batch in one chunk per thread, so one thread and two round differently (the forward does not)."""
    if torch.get_num_threads() < 2:
        pytest.skip("one CPU thread: nothing to compare")
    torch.manual_seed(0)
    x, norm = torch.randn(64, 17, 128), torch.nn.LayerNorm(128)

    def gradient(arms: int) -> torch.Tensor:
        norm.zero_grad()
        with cpu_share(arms):
            (norm(x) * x).sum().backward()
        return norm.weight.grad.clone()

    every_thread, one_thread = gradient(1), gradient(torch.get_num_threads())
    assert not torch.equal(every_thread, one_thread) and torch.allclose(every_thread, one_thread, rtol=1e-4)
    assert torch.equal(gradient(1), every_thread)  # the same threads: the same bits


@pytest.mark.parametrize("key, value", [("device", "tpu"), ("precision", "fp8"), ("precision", "fp16")])
def test_a_wrong_device_or_precision_is_an_error_naming_the_key(tiny, key, value):
    with pytest.raises(ConfigError, match=key):
        load_params(tiny, [f"{key}={value}"])


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_asking_for_cuda_without_a_gpu_says_so():
    with pytest.raises(ConfigError, match="no CUDA device"):
        pick_device("cuda")


def _stages(params, seen: set | None = None):
    """reference, score and train; `seen` collects (device type, dtype) of every conv or linear output."""

    def record(module, inputs, output):
        if seen is not None and isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)) and isinstance(output, torch.Tensor):
            seen.add((output.device.type, output.dtype))

    hook = torch.nn.modules.module.register_module_forward_hook(record)
    try:
        data_stage(params)
        reference_stage(params)
        score = score_stage(params)
        train = train_stage(params, "learnability")
    finally:
        hook.remove()
    return score, train


def test_the_stages_run_in_bf16_autocast_and_keep_float32_weights_and_scores(tiny):
    params = load_params(tiny, ["precision=bf16", "train.steps=10", "reference.steps=10"])
    seen = set()
    score, train = _stages(params, seen)
    assert ("cpu", torch.bfloat16) in seen  # the forward passes really ran in bf16
    assert train["steps"] == 10 and 0.0 <= train["final_metric"] <= 1.0
    model = model_from_checkpoint(Paths.of(params).learner("learnability"))
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert score["num_examples"] == params.data.num_pool


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_on_a_gpu_the_whole_chain_runs_on_cuda_in_bf16(tiny):
    params = load_params(tiny, ["device=cuda", "train.policies=[uniform, learnability]"])
    seen = set()
    _stages(params, seen)
    train_stage(params, "uniform")
    evaluate_stage(params)
    summary = summary_stage(params, write_report=False)
    assert ("cuda", torch.bfloat16) in seen and not any(
        device == "cpu" for device, _ in seen
    )  # every forward on the GPU, in bf16
    assert set(summary["policies"]) == {"uniform", "learnability"}
    assert summary["policies"]["uniform"]["step_ratio"] is not None
