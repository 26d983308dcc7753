"""Runtime shims for the verl 0.9.1 internals a CPU run needs and that have no extension
point. Each checks the verl release (`check_verl_version`) and that the object it replaces is the one it expects
before patching, and each has an upstream patch in `patches/verl-0.9.1/`; where verl
already carries the patch, its shim steps aside:

- process group: verl builds the backend "cpu:gloo,<device>:<ccl>", which is
  "cpu:gloo,cpu:gloo" on the CPU and makes torch raise "Duplicate device type cpu"
  (`verl/utils/distributed.py::initialize_global_process_group_ray`, the trainer's path;
  the SFT trainer's `initialize_global_process_group` is left alone);
- reference model: the forward-only FSDP2 path offloads with
  `CPUOffloadPolicy(pin_memory=True)`, which needs an accelerator
  (`verl/workers/engine/fsdp/transformer_impl.py`);
- pi_old in host memory: separate_async keeps pi_old's weights with
  `fsdp2_sharded_save_to_cpu`, which copies each shard with `.cpu()`, a no-op for a
  shard already in host memory: the "saved" weights aliased the live ones and followed the
  optimizer, so every update's old_log_probs came from the current weights
  (`verl/utils/fsdp_utils.py`; the FSDP1 variant copies already);
- engines: verl's FSDP engines are registered for cuda and npu only; they are registered
  for "cpu" too (that one is an extension point: `EngineRegistry.register`).
"""

from __future__ import annotations

import functools

import verl

from oar_verl.verl_internals import support_problem

_CPU_BACKEND = "cpu:gloo"


class ShimError(RuntimeError):
    """verl is not the release these shims were written for."""


def check_verl_version() -> None:
    """A tested verl, or one whose patched internals are identical (`verl_internals`)."""
    unsupported, _ = support_problem(verl.__version__)
    if unsupported:
        raise ShimError(f"oar_verl's CPU backend: {unsupported}")


def install() -> None:
    """Installs every CPU shim (idempotent)."""
    check_verl_version()
    _patch_process_group()
    _patch_offload_policy()
    _patch_sharded_save()
    _register_engines()


def _patch_process_group() -> None:
    import verl.checkpoint_engine.base as checkpoint_base
    import verl.utils.distributed as distributed
    import verl.workers.engine_workers as engine_workers

    original = distributed.initialize_global_process_group_ray
    if getattr(original, "_oar_cpu_shim", False) or hasattr(distributed, "default_process_group_backend"):
        return  # patched already (here, or upstream: patches/verl-0.9.1/0001)
    for module in (engine_workers, checkpoint_base):
        if getattr(module, "initialize_global_process_group_ray", None) is not original:
            raise ShimError(f"{module.__name__}.initialize_global_process_group_ray is not verl's original: cannot patch")

    @functools.wraps(original)
    def initialize_global_process_group_ray(timeout_second=None, backend=None):
        return original(timeout_second=timeout_second, backend=backend or _CPU_BACKEND)

    initialize_global_process_group_ray._oar_cpu_shim = True
    for module in (distributed, engine_workers, checkpoint_base):
        module.initialize_global_process_group_ray = initialize_global_process_group_ray


def _patch_offload_policy() -> None:
    import inspect

    import torch.distributed.fsdp
    import verl.workers.engine.fsdp.transformer_impl as transformer_impl

    current = transformer_impl.CPUOffloadPolicy
    if getattr(current, "_oar_cpu_shim", False) or "offload_policy = CPUOffloadPolicy(pin_memory=True)" not in inspect.getsource(transformer_impl):
        return  # patched already (here, or upstream: patches/verl-0.9.1/0002)
    if current is not torch.distributed.fsdp.CPUOffloadPolicy:
        raise ShimError("verl's transformer_impl.CPUOffloadPolicy is not torch's: cannot patch")

    def unpinned_offload_policy(pin_memory: bool = True, **kwargs):
        """Pinned memory needs an accelerator; on the CPU the offload target is unpinned."""
        return current(pin_memory=False, **kwargs)

    unpinned_offload_policy._oar_cpu_shim = True
    transformer_impl.CPUOffloadPolicy = unpinned_offload_policy


def _patch_sharded_save() -> None:
    import inspect

    import verl.utils.fsdp_utils as fsdp_utils

    original = fsdp_utils.fsdp2_sharded_save_to_cpu
    if getattr(original, "_oar_cpu_shim", False) or "local_gpu_tensor.detach().cpu()" not in inspect.getsource(original):
        return  # patched already (here, or upstream: patches/verl-0.9.1/0007)

    @functools.wraps(original)
    def fsdp2_sharded_save_to_cpu(model):
        """verl's, with each saved shard a copy (a host-memory shard is otherwise aliased)."""
        state, global_spec = original(model)
        return {name: (tensor.clone(), spec) for name, (tensor, spec) in state.items()}, global_spec

    fsdp2_sharded_save_to_cpu._oar_cpu_shim = True
    fsdp_utils.fsdp2_sharded_save_to_cpu = fsdp2_sharded_save_to_cpu


def _register_engines() -> None:
    from verl.workers.engine.base import EngineRegistry
    from verl.workers.engine.fsdp.transformer_impl import FSDPEngineWithLMHead, FSDPEngineWithValueHead

    for model_type, engine in (("language_model", FSDPEngineWithLMHead), ("value_model", FSDPEngineWithValueHead)):
        registered = EngineRegistry._engines.get(model_type, {})
        if all("cpu" in registered.get(backend, {}) for backend in ("fsdp", "fsdp2")):
            continue
        EngineRegistry.register(model_type=model_type, backend=["fsdp", "fsdp2"], device=["cpu"])(engine)
