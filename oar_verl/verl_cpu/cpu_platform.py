"""The `cpu` platform for verl's platform registry (`verl.plugin.platform`).

Selected only by `VERL_PLATFORM=cpu`: `is_platform_available` is False, so autodetection
on a GPU machine never picks it. Collectives run on gloo. Ray places verl's workers on
logical GPUs (`ray_resource_name` is "GPU"), which a CPU run declares with
`ray_init.num_gpus`: verl's resource pools ask for one accelerator per rank.
"""

from __future__ import annotations

import contextlib
from types import ModuleType

import torch
from verl.plugin.platform.platform_base import PlatformBase

from oar_verl.verl_cpu import device

NAME = "cpu"


class PlatformCPU(PlatformBase):
    """verl's platform interface on the CPU (one device, "cpu", gloo)."""

    @property
    def device_name(self) -> str:
        return "cpu"

    @property
    def vendor_name(self) -> str:
        return "cpu"

    @property
    def device_module(self) -> ModuleType:
        return device

    def is_available(self) -> bool:
        return True

    def is_platform_available(self, use_smi_check: bool = False) -> bool:
        return False  # only ever chosen explicitly, with VERL_PLATFORM=cpu

    def current_device(self) -> str:  # verl types it int; it is passed to `.to(...)`
        return "cpu"

    def device_count(self) -> int:
        return 1

    def set_device(self, device_index: int) -> None:
        """One CPU device: nothing to select."""

    def synchronize(self, device_index=None) -> None:
        torch.cpu.synchronize()

    def manual_seed(self, seed: int) -> None:
        torch.manual_seed(seed)

    def manual_seed_all(self, seed: int) -> None:
        torch.manual_seed(seed)

    def set_allocator_settings(self, settings: str) -> None:
        """No caching allocator on the CPU."""

    def empty_cache(self) -> None:
        """No caching allocator on the CPU."""

    def get_device_capability(self, device_index: int = 0):
        return None, None

    def communication_backend_name(self) -> str:
        return "gloo"

    def visible_devices_envvar(self) -> str:
        return "CUDA_VISIBLE_DEVICES"  # what Ray sets for the logical GPUs it hands out

    @contextlib.contextmanager
    def nvtx_range(self, msg: str):
        yield

    def profiler_start(self) -> None:
        """No device profiler on the CPU."""

    def profiler_stop(self) -> None:
        """No device profiler on the CPU."""

    def ray_resource_name(self) -> str:
        return "GPU"

    def ray_noset_envvars(self) -> list[str]:
        return []

    def is_ipc_supported(self) -> bool:
        return False

    def cudart(self):
        return None
