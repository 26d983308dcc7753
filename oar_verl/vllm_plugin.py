"""The `vllm.general_plugins` entry point: runs in every vLLM process, on any machine.

It acts only in a run of oar_verl's CPU backend (`VERL_PLATFORM=cpu`, which verl's workers
and the vLLM processes they start inherit) on vLLM's CPU platform; anywhere else it returns
without a change.

What it changes there:
- vLLM's shared-memory queues unlink their `/dev/shm` segment once their readers attached,
  so a run whose vLLM processes are killed leaves none behind (`verl_cpu.vllm_shared_memory`).
- vLLM's CPU linear layers pack their weight into a kernel handle after loading and then
  replace `layer.weight` by an empty tensor (`vllm/model_executor/layers/linear.py`:
  `dispatch_cpu_unquantized_gemm(layer, remove_weight=True)`), so the next weight load,
  verl's weight sync after each update, fails ("Attempted to load weight ... into parameter
  (torch.Size([0]))"). The plugin keeps the weight; verl runs `process_weights_after_loading`
  again after each sync, which packs a new handle from the new weight. Cost: each linear
  weight is held twice (its handle and the tensor). Upstream: the vLLM patch
  `patches/vllm-0.24.0/0001` adds the setting `VLLM_CPU_KEEP_LINEAR_WEIGHTS`; on a vLLM that
  has it, the plugin sets it instead of wrapping vLLM's dispatch.
"""

from __future__ import annotations

import functools
import os

from oar_verl import cpu_platform_selected, plugin_logger

MARK = "_oar_verl_keeps_weights"
KEEP_WEIGHTS_SETTING = "VLLM_CPU_KEEP_LINEAR_WEIGHTS"  # vLLM's, with patches/vllm-0.24.0/0001

logger = plugin_logger()


def register() -> None:
    """vLLM's plugin hook: on vLLM's CPU platform in a CPU-backend run, keep linear weights
    and unlink shared-memory segments once attached."""
    if not cpu_platform_selected():
        return
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        return
    from vllm.model_executor.layers import utils

    from oar_verl.verl_cpu import vllm_shared_memory

    vllm_shared_memory.install()

    import vllm.envs

    if KEEP_WEIGHTS_SETTING in vllm.envs.environment_variables:
        os.environ[KEEP_WEIGHTS_SETTING] = "1"
        logger.debug("oar_verl: vLLM's CPU linear layers keep their weights (%s=1)", KEEP_WEIGHTS_SETTING)
        return
    if getattr(utils.dispatch_cpu_unquantized_gemm, MARK, False):
        return
    utils.dispatch_cpu_unquantized_gemm = keeping_weights(utils.dispatch_cpu_unquantized_gemm)
    logger.debug("oar_verl: vLLM's CPU linear layers keep their weights (verl's weight sync reloads them)")


def keeping_weights(dispatch):
    """`dispatch(layer, remove_weight)` that never removes the weight."""

    @functools.wraps(dispatch)
    def dispatch_keeping_weight(layer, remove_weight: bool) -> None:
        dispatch(layer, remove_weight=False)

    setattr(dispatch_keeping_weight, MARK, True)
    return dispatch_keeping_weight
