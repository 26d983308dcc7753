"""Installs the CPU backend into verl's registries in the current process."""

from __future__ import annotations

import os

from oar_verl.verl_cpu import cpu_platform, megatron, shims

ADAPTER = "oar_verl.verl_cpu.hf_adapter.HFServerAdapter"


def cpu_platform_selected() -> bool:
    """True where verl is told to run on the CPU (`VERL_PLATFORM=cpu`)."""
    return os.environ.get("VERL_PLATFORM", "").strip().lower() == cpu_platform.NAME


def install() -> None:
    """The `cpu` platform, the `hf` rollout (replica and trainer-side adapter), the `gloo`
    checkpoint engine (standalone rollout replicas), the shims for verl internals without
    an extension point and, where the megatron extra is installed, verl's Megatron engine
    for the CPU (idempotent)."""
    shims.check_verl_version()
    cpu_platform.register()
    _register_rollout()
    import oar_verl.verl_cpu.checkpoint_engine  # noqa: F401 - registers the `gloo` backend

    shims.install()
    megatron.register_engine()


def _register_rollout() -> None:
    from verl.workers.rollout import base as rollout_base
    from verl.workers.rollout.replica import RolloutReplicaRegistry

    def load_replica():
        from oar_verl.verl_cpu.hf_replica import HFReplica

        return HFReplica

    RolloutReplicaRegistry.register("hf", load_replica)
    if hasattr(rollout_base, "register_rollout_class"):  # upstream: patches/verl-0.9.1/0003
        rollout_base.register_rollout_class("hf", ADAPTER)
        return
    # verl 0.9.1 keeps its trainer-side adapters in a private table with no register function.
    key = ("hf", "async")
    if rollout_base._ROLLOUT_REGISTRY.get(key, ADAPTER) != ADAPTER:
        raise shims.ShimError(f"verl's rollout table already maps {key} to {rollout_base._ROLLOUT_REGISTRY[key]}")
    rollout_base._ROLLOUT_REGISTRY[key] = ADAPTER
