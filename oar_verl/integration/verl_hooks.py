"""Every change oar_verl makes to verl at run time, in one module, installed explicitly:
`install_oar()` by the plugin in every process that imports verl, `install_cpu_backend()`
by `oar_verl.verl_cpu.backend` when the CPU platform is chosen. Importing this module
changes nothing.

Where verl has an extension point it is used; where the upstream patches in `patches/`
add one, it is detected by the attribute the patch adds (never by reading source text);
otherwise the change is made here, after checking that the object replaced is the one
expected. Every verl function or class these changes rely on is listed, with its digest
per tested release, in `oar_verl.integration.verl_internals`, checked before Ray starts.

OAR (`install_oar`), each when verl imports the module concerned:
- `oar_p` / `oar_g` in the advantage-estimator registry (`register_adv_est`), declaring
  their `oar_weights` input where estimators declare inputs (patch 0004);
- `verl.utils.config.validate_config` rebound to run the OAR settings check first (verl
  has no validation hook; `verl.trainer.main_ppo` runs it before Ray starts);
- the OAR step: a pre-advantage step where verl has them (patch 0006), else the
  `TRAINER_REGISTRY` entries of the sync, colocate_async and separate_async modes replaced
  by the OAR trainers (`register_trainer` refuses to rebind a name), which build verl's
  own trainer for any other estimator;
- `compute_oar_scores` as a worker computation where verl has them (patch 0006); else the
  OAR trainers give the actor workers the role themselves.

CPU backend (`install_cpu_backend`):
- the `cpu` platform (`PlatformRegistry`), the `hf` rollout (`RolloutReplicaRegistry`;
  its trainer-side adapter by `register_rollout_class`, patch 0003, else in verl 0.9.1's
  private `_ROLLOUT_REGISTRY`), verl's FSDP engines for device `cpu` (`EngineRegistry`);
- the process-group backend: verl builds "cpu:gloo,cpu:gloo" on the CPU, which torch
  refuses; `initialize_global_process_group_ray` is given "cpu:gloo" (patch 0001 adds
  `default_process_group_backend`);
- FSDP2 offload: `CPUOffloadPolicy(pin_memory=True)` needs an accelerator; the engine
  module's `CPUOffloadPolicy` is replaced by one that does not pin (patch 0002 adds
  `fsdp_utils.fsdp2_cpu_offload_policy`);
- pi_old in host memory: `fsdp2_sharded_save_to_cpu` copies with `.cpu()`, a no-op for a
  host-memory shard, so separate_async's saved pi_old followed the optimizer; wrapped to
  clone each saved shard, when the function is a tested release's own (patch 0007 adds no
  attribute; its fix changes the function, whose syntax-tree digest `verl_internals` keeps);
- the master port of each worker group: verl draws it by binding port 0 and closing the
  socket, and the port stays free until the process group's store binds it, seconds later,
  while every other process on the host draws ephemeral ports from the same range (two
  test runs side by side met `EADDRINUSE`); `RayWorkerGroup` is given its public
  `master_port_range` argument, a random window below the host's ephemeral range
  (`master_port_window`), where the caller gave none.
"""

from __future__ import annotations

import functools
import logging
import random
from pathlib import Path

from oar_verl.integration import import_hooks

logger = logging.getLogger("oar_verl")

_MARK = "_oar_verl_hook"


class HookError(RuntimeError):
    """verl's object is not the one oar_verl's change was written for."""


def is_hooked(function) -> bool:
    """True for a function (or class stand-in) this module put in verl's place."""
    return getattr(function, _MARK, False)


def mark_hooked(function):
    """`function` marked as put in verl's (or megatron-core's, `verl_cpu.megatron`) place, so
    that a second install sees it (`is_hooked`) and leaves it."""
    setattr(function, _MARK, True)
    return function


# OAR ---------------------------------------------------------------------------------------


def install_oar() -> None:
    """The OAR hooks, each run when verl imports its module (now, if it already has)."""
    import_hooks.after_import("verl.trainer.ppo.core_algos", register_estimators)
    import_hooks.after_import("verl.utils.config", add_settings_check)
    import_hooks.after_import("verl.trainer.ppo.v1.trainer_sync", install_oar_step)
    import_hooks.after_import("verl.workers.engine_workers", register_worker_computation)


def register_estimators(core_algos) -> None:
    """`oar_p` and `oar_g` in verl's estimator registry (idempotent)."""
    from oar_verl.integration import ESTIMATORS, WEIGHTS_FIELD
    from oar_verl.integration.estimators import compute_oar_outcome_advantage

    declares_inputs = hasattr(core_algos, "get_adv_estimator_inputs")  # patch 0004
    for name in ESTIMATORS:
        register = core_algos.register_adv_est(name, inputs=(WEIGHTS_FIELD,)) if declares_inputs else core_algos.register_adv_est(name)
        register(compute_oar_outcome_advantage)


def add_settings_check(config_module) -> None:
    """`validate_config` runs the OAR settings check (`integration.validation.check`) first."""
    from oar_verl.integration import validation

    verl_validate = config_module.validate_config
    if is_hooked(verl_validate):
        return

    @functools.wraps(verl_validate)
    def validate_config(config, *args, **kwargs):
        validation.check(config)
        return verl_validate(config, *args, **kwargs)

    config_module.validate_config = mark_hooked(validate_config)


def install_oar_step(trainer_sync) -> None:
    """The OAR step in verl's v1 trainers: verl's pre-advantage step (patched verl), else the
    OAR trainer classes in verl's trainer registry."""
    from verl.trainer.ppo.v1 import trainer_base

    from oar_verl.integration import ESTIMATORS, trainer

    registry = getattr(trainer_base, "register_pre_advantage_step", None)  # patch 0006
    if registry is not None:
        for name in ESTIMATORS:
            registry(name)(trainer.pre_advantage_step)  # idempotent for the same function
        logger.info("oar_verl: OAR step registered as verl's pre-advantage step (patched verl)")
        return
    for mode, (verl_class, oar_class) in trainer.oar_trainers().items():
        current = trainer_base.TRAINER_REGISTRY.get(mode)
        if current is oar_class:
            continue
        if current is not verl_class:
            raise HookError(f"verl's {mode!r} trainer is {current!r}, not verl's {verl_class.__name__}: oar_verl cannot install its OAR step")
        trainer_base.TRAINER_REGISTRY[mode] = oar_class
    logger.info("oar_verl: OAR step installed in verl's sync, colocate_async and separate_async trainers (verl 0.9.1)")


def register_worker_computation(engine_workers) -> bool:
    """`compute_oar_scores` among verl's worker computations (patch 0006); False on a verl
    without them."""
    registry = getattr(engine_workers, "register_worker_computation", None)
    if registry is None:
        return False
    from oar_verl.integration.worker import COMPUTATION, compute_oar_scores

    registry(COMPUTATION)(compute_oar_scores)
    return True


# CPU backend -------------------------------------------------------------------------------

CPU_PROCESS_GROUP_BACKEND = "cpu:gloo"


def install_cpu_backend(platform_name: str, platform_class: type, load_replica, rollout_adapter: str) -> None:
    """The CPU backend's registrations and shims (idempotent; see the module docstring).

    Args:
        platform_name, platform_class: verl's platform for the CPU.
        load_replica: () -> the `hf` rollout replica class.
        rollout_adapter: dotted path of the `hf` rollout's trainer-side adapter.
    """
    from verl.plugin.platform.platform_manager import PlatformRegistry

    if PlatformRegistry.get(platform_name) is not platform_class:  # first: verl's engine modules ask for the platform when imported
        PlatformRegistry.register(platform_name)(platform_class)
    from verl.workers.engine.fsdp.transformer_impl import FSDPEngineWithLMHead, FSDPEngineWithValueHead
    from verl.workers.rollout.replica import RolloutReplicaRegistry

    RolloutReplicaRegistry.register("hf", load_replica)
    _register_rollout_adapter("hf", rollout_adapter)
    for model_type, engine in (("language_model", FSDPEngineWithLMHead), ("value_model", FSDPEngineWithValueHead)):
        register_cpu_engine(model_type, ("fsdp", "fsdp2"), engine)
    _patch_process_group()
    _patch_offload_policy()
    _patch_sharded_save()
    _patch_master_port_range()


def register_cpu_engine(model_type: str, backends: tuple[str, ...], engine: type) -> None:
    """`engine` registered for device "cpu" under `backends` (unless it already is: verl's
    registry asserts on a second registration and has no lookup by device, so its private
    table `EngineRegistry._engines` is read, guarded)."""
    from verl.workers.engine.base import EngineRegistry

    table = getattr(EngineRegistry, "_engines", None)
    if not isinstance(table, dict):
        raise HookError("verl's EngineRegistry has no `_engines` table: cannot tell whether the CPU engines are registered")
    registered = table.get(model_type, {})
    if all("cpu" in registered.get(backend, {}) for backend in backends):
        return
    EngineRegistry.register(model_type=model_type, backend=list(backends), device=["cpu"])(engine)


def _register_rollout_adapter(name: str, adapter: str) -> None:
    from verl.workers.rollout import base as rollout_base

    if hasattr(rollout_base, "register_rollout_class"):  # patch 0003
        rollout_base.register_rollout_class(name, adapter)
        return
    table = getattr(rollout_base, "_ROLLOUT_REGISTRY", None)  # verl 0.9.1: a private table, no register function
    if not isinstance(table, dict):
        raise HookError("verl.workers.rollout.base has neither register_rollout_class nor `_ROLLOUT_REGISTRY`: cannot add the hf rollout")
    key = (name, "async")
    if table.get(key, adapter) != adapter:
        raise HookError(f"verl's rollout table already maps {key} to {table[key]}")
    table[key] = adapter


def _patch_process_group() -> None:
    import verl.checkpoint_engine.base as checkpoint_base
    import verl.utils.distributed as distributed
    import verl.workers.engine_workers as engine_workers

    original = distributed.initialize_global_process_group_ray
    if is_hooked(original) or hasattr(distributed, "default_process_group_backend"):  # patch 0001
        return
    for module in (engine_workers, checkpoint_base):
        if getattr(module, "initialize_global_process_group_ray", None) is not original:
            raise HookError(f"{module.__name__}.initialize_global_process_group_ray is not verl's original: cannot patch")

    @functools.wraps(original)
    def initialize_global_process_group_ray(timeout_second=None, backend=None):
        return original(timeout_second=timeout_second, backend=backend or CPU_PROCESS_GROUP_BACKEND)

    mark_hooked(initialize_global_process_group_ray)
    for module in (distributed, engine_workers, checkpoint_base):
        module.initialize_global_process_group_ray = initialize_global_process_group_ray


def _patch_offload_policy() -> None:
    import torch.distributed.fsdp
    import verl.utils.fsdp_utils as fsdp_utils
    import verl.workers.engine.fsdp.transformer_impl as transformer_impl

    current = transformer_impl.CPUOffloadPolicy
    if is_hooked(current) or hasattr(fsdp_utils, "fsdp2_cpu_offload_policy"):  # patch 0002
        return
    if current is not torch.distributed.fsdp.CPUOffloadPolicy:
        raise HookError("verl's transformer_impl.CPUOffloadPolicy is not torch's: cannot patch")

    def unpinned_offload_policy(pin_memory: bool = True, **kwargs):
        """Pinned memory needs an accelerator; on the CPU the offload target is unpinned."""
        return current(pin_memory=False, **kwargs)

    transformer_impl.CPUOffloadPolicy = mark_hooked(unpinned_offload_policy)


def _patch_sharded_save() -> None:
    import verl.utils.fsdp_utils as fsdp_utils

    from oar_verl.integration.verl_internals import is_tested_code

    original = fsdp_utils.fsdp2_sharded_save_to_cpu
    if is_hooked(original) or not is_tested_code("verl.utils.fsdp_utils", "fsdp2_sharded_save_to_cpu"):
        return  # hooked already, or not verl 0.9.1's aliasing copy (patch 0007)

    @functools.wraps(original)
    def fsdp2_sharded_save_to_cpu(model):
        """verl's, with each saved shard a copy (a host-memory shard is otherwise aliased)."""
        state, global_spec = original(model)
        return {name: (tensor.clone(), spec) for name, (tensor, spec) in state.items()}, global_spec

    fsdp_utils.fsdp2_sharded_save_to_cpu = mark_hooked(fsdp2_sharded_save_to_cpu)


# Ray's default worker ports end at 19999; the master ports are drawn above them.
MASTER_PORT_FLOOR = 20000
MASTER_PORT_WINDOW = 64
EPHEMERAL_PORT_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")


def master_port_window(random_source: random.Random | None = None) -> list[int] | None:
    """[first, end) of a random window of MASTER_PORT_WINDOW ports between
    MASTER_PORT_FLOOR and the start of the host's ephemeral range (ports no process is
    handed by binding port 0 or connecting), or None where that range is unknown or leaves
    no room (verl then draws an ephemeral port, as it does by default)."""
    try:
        ephemeral_start = int(EPHEMERAL_PORT_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    last_start = ephemeral_start - MASTER_PORT_WINDOW
    if last_start < MASTER_PORT_FLOOR:
        return None
    first = (random_source or random.SystemRandom()).randint(MASTER_PORT_FLOOR, last_start)
    return [first, first + MASTER_PORT_WINDOW]


def _patch_master_port_range() -> None:
    from verl.single_controller.ray.base import RayWorkerGroup

    original = RayWorkerGroup.__init__
    if is_hooked(original):
        return

    @functools.wraps(original)
    def __init__(self, *args, **kwargs):
        if kwargs.get("master_port_range") is None:
            kwargs["master_port_range"] = master_port_window()
        original(self, *args, **kwargs)

    RayWorkerGroup.__init__ = mark_hooked(__init__)
