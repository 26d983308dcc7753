"""A device module for the CPU: what verl calls on `get_torch_device()`.

verl treats the device module like `torch.cuda`; `torch.cpu` lacks most of that API
(memory statistics, RNG state, allocator controls). This module answers with `torch.cpu`
where it can, the process-wide CPU generator for RNG state, zeros for accelerator memory
statistics (there is no separate device memory), and no-ops for cache control.
"""

from __future__ import annotations

import contextlib
from types import SimpleNamespace

import torch

# Present in torch.cpu: streams, events, synchronize, device_count, current_device, is_available.
Stream = torch.cpu.Stream
Event = torch.cpu.Event
stream = torch.cpu.stream
current_stream = torch.cpu.current_stream
synchronize = torch.cpu.synchronize
is_available = torch.cpu.is_available
device_count = torch.cpu.device_count


def current_device() -> str:
    """verl passes this to `.to(...)`: the string "cpu", not an accelerator index."""
    return "cpu"


def set_device(device=None) -> None:
    """One CPU device: nothing to select."""


def get_device_name(device=None) -> str:
    return "CPU"


def get_device_properties(device=None) -> SimpleNamespace:
    return SimpleNamespace(name="CPU", total_memory=0, major=0, minor=0, multi_processor_count=torch.get_num_threads())


def empty_cache() -> None:
    """No caching allocator on the CPU."""


def ipc_collect() -> None:
    """No CUDA IPC on the CPU."""


def set_per_process_memory_fraction(fraction: float, device=None) -> None:
    """No device memory pool to cap on the CPU."""


def mem_get_info(device=None) -> tuple[int, int]:
    """(free, total) device memory: the CPU has no separate device memory."""
    return 0, 0


def memory_allocated(device=None) -> int:
    return 0


def memory_reserved(device=None) -> int:
    return 0


def max_memory_allocated(device=None) -> int:
    return 0


def max_memory_reserved(device=None) -> int:
    return 0


def reset_peak_memory_stats(device=None) -> None:
    """Nothing to reset: the statistics above are constant."""


def reset_accumulated_memory_stats(device=None) -> None:
    """Nothing to reset: the statistics above are constant."""


def get_rng_state(device=None) -> torch.Tensor:
    return torch.get_rng_state()


def set_rng_state(state: torch.Tensor, device=None) -> None:
    torch.set_rng_state(state)


def manual_seed(seed: int) -> None:
    torch.manual_seed(seed)


def manual_seed_all(seed: int) -> None:
    torch.manual_seed(seed)


class memory:  # noqa: N801 - mirrors torch.cuda.memory
    """Memory-history recording (verl's memory profiler): nothing is recorded on the CPU."""

    @staticmethod
    def _record_memory_history(*args, **kwargs) -> None:
        return None

    @staticmethod
    def _snapshot(*args, **kwargs) -> dict:
        return {"segments": [], "device_traces": []}

    @staticmethod
    def _dump_snapshot(*args, **kwargs) -> None:
        return None


@contextlib.contextmanager
def nvtx_range(message: str):
    yield
