"""The CPU Megatron shims refuse megatron-core / mbridge releases they were not written for
(the shims that patch torch run in the Megatron tests' own processes); the CUDA-as-CPU
torch function mode, scoped, here."""

import importlib.metadata

import pytest
import torch

pytest.importorskip("megatron.core", reason="the megatron extra: pip install 'oar_verl[megatron]'")

from oar_verl.verl_cpu import megatron  # noqa: E402
from oar_verl.verl_cpu.megatron import ShimError  # noqa: E402


def test_installed_releases_pass():
    megatron.check_versions()


@pytest.mark.parametrize("package, version", [("megatron-core", "0.17.0"), ("mbridge", "0.16.0")])
def test_other_releases_are_refused_by_name(monkeypatch, package, version):
    real = importlib.metadata.version
    monkeypatch.setattr(importlib.metadata, "version", lambda name: version if name == package else real(name))
    with pytest.raises(ShimError, match=f"written for {package} {megatron.TESTED_RELEASES[package]}x, found {version}"):
        megatron.check_versions()


def test_cuda_as_cpu_mode_keeps_tensors_on_the_host_unpinned():
    """What verl's Megatron engine asks of CUDA on the CPU backend: tensors on "cuda", CUDA
    type names, pinned host copies for parameter / optimizer offload."""
    from oar_verl.verl_cpu.megatron import CudaAsCpuMode

    source = torch.arange(6.0)
    with CudaAsCpuMode():
        created = torch.empty(3, device="cuda", pin_memory=True)
        offloaded = source.cpu().clone().pin_memory()
        moved = source.to("cuda")
        name = source.type()
    assert created.device.type == "cpu" and not created.is_pinned()
    assert torch.equal(offloaded, source) and moved.device.type == "cpu"
    assert name == "torch.cuda.FloatTensor"
    with pytest.raises(RuntimeError, match="pin_memory|NVIDIA driver"):  # the CPU build's words, the CUDA build's
        torch.empty(3, pin_memory=True)  # outside the mode torch still refuses
