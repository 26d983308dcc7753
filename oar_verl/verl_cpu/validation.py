"""Settings a CPU run refuses before Ray starts: those that need a GPU, and those that
would silently compute wrong results on the CPU."""

from __future__ import annotations

import os

from omegaconf import DictConfig

from oar_verl.integration.megatron_extra import INSTALL_HINT, megatron_installed
from oar_verl.verl_cpu.vllm_settings import vllm_errors

GPU_ONLY_ROLLOUTS = ("sglang", "trtllm")
CPU_ROLLOUTS = ("hf", "vllm")
GLOO_CHECKPOINT_ENGINE = "gloo"  # verl_cpu/checkpoint_engine.py (not imported here: it imports verl)


def cpu_settings_errors(config: DictConfig) -> list[str]:
    """Every problem with running `config` on the CPU backend, one message per setting."""
    errors = []
    model = config.actor_rollout_ref.model
    rollout = config.actor_rollout_ref.rollout
    if rollout.name in GPU_ONLY_ROLLOUTS:
        errors.append(
            f"actor_rollout_ref.rollout.name={rollout.name} needs a GPU; on the CPU use actor_rollout_ref.rollout.name=vllm (vLLM's CPU build) or hf"
        )
    elif rollout.name not in CPU_ROLLOUTS:
        errors.append(f"actor_rollout_ref.rollout.name={rollout.name}: the CPU backend serves rollouts with vllm (vLLM's CPU build) or hf")
    elif rollout.name == "vllm":
        errors += vllm_errors(rollout, model.path)
    attention = model.get("override_config", {}).get("attn_implementation", "flash_attention_2")
    if attention.startswith("flash"):
        errors.append(
            f"actor_rollout_ref.model.override_config.attn_implementation={attention} needs a GPU (verl's default); "
            "set +actor_rollout_ref.model.override_config.attn_implementation=sdpa"
        )
    if model.get("use_fused_kernels", False):
        errors.append("actor_rollout_ref.model.use_fused_kernels=True runs GPU kernels; set it to False")
    if model.get("use_liger", False):
        errors.append("actor_rollout_ref.model.use_liger=True runs Triton GPU kernels; set it to False")
    for role in ("actor", "ref"):
        strategy = config.actor_rollout_ref[role].strategy
        if strategy == "megatron" and config.actor_rollout_ref[role].get("megatron") is None:
            errors.append(
                f"actor_rollout_ref.{role}.strategy=megatron without actor_rollout_ref.{role}.megatron settings: use the Megatron preset (--config-name cpu_megatron)"
            )
        elif strategy == "megatron":
            errors += megatron_errors(config.actor_rollout_ref[role].megatron, f"actor_rollout_ref.{role}.megatron")
        elif strategy not in ("fsdp", "fsdp2"):
            errors.append(
                f"actor_rollout_ref.{role}.strategy={strategy}: the CPU backend runs verl's FSDP engines (fsdp2 recommended) and its Megatron engine"
            )
    if rollout.tensor_model_parallel_size * rollout.data_parallel_size * rollout.pipeline_model_parallel_size != 1:
        errors.append(
            f"actor_rollout_ref.rollout.tensor_model_parallel_size (and data/pipeline sizes) must be 1 for the CPU backend's {rollout.name} rollout"
        )
    if config.algorithm.adv_estimator == "gae" or config.critic.get("enable"):
        errors.append(
            f"algorithm.adv_estimator={config.algorithm.adv_estimator}: a critic loads its value head with flash attention "
            "in verl 0.9.1 (verl/utils/model.py::load_valuehead_model); use a critic-free estimator (grpo, oar_g, oar_p)"
        )
    ranks = config.trainer.n_gpus_per_node * config.trainer.nnodes
    if config.trainer.get("v1", {}).get("trainer_mode") == "separate_async":
        ranks += rollout.nnodes * rollout.n_gpus_per_node  # the standalone rollout replicas' logical GPUs
        backend = rollout.checkpoint_engine.backend
        if backend != GLOO_CHECKPOINT_ENGINE:
            errors.append(
                f"actor_rollout_ref.rollout.checkpoint_engine.backend={backend}: separate_async syncs its standalone rollout replicas "
                f"through a checkpoint engine, and verl's (nccl, nixl, mooncake, hccl) need accelerators; set it to {GLOO_CHECKPOINT_ENGINE}"
            )
    ray_init = config.get("ray_kwargs", {}).get("ray_init", {})
    if (ray_init.get("num_gpus") or 0) < ranks:
        errors.append(f"ray_kwargs.ray_init.num_gpus={ray_init.get('num_gpus')}: give Ray one logical GPU per rank (>= {ranks})")
    if (ray_init.get("num_cpus") or 0) < 3 * ranks + 2:
        errors.append(f"ray_kwargs.ray_init.num_cpus={ray_init.get('num_cpus')}: verl reserves 3 CPUs per rank plus 2 (>= {3 * ranks + 2})")
    if os.environ.get("CUDA_VISIBLE_DEVICES") == "":
        errors.append("CUDA_VISIBLE_DEVICES is set but empty: Ray then refuses the logical GPUs the CPU backend needs; unset it")
    if not config.trainer.get("use_v1", True):
        errors.append("trainer.use_v1=False: the CPU backend is tested with verl's v1 trainer only")
    return errors


def megatron_errors(megatron: DictConfig, prefix: str) -> list[str]:
    """Problems with a Megatron engine's settings (`prefix`: where they are) on the CPU."""
    if not megatron_installed():
        return [f"{prefix}: verl's Megatron engine needs megatron-core and mbridge, which are not installed: {INSTALL_HINT}"]
    errors = []
    if not megatron.get("vanilla_mbridge", False):
        errors.append(
            f"{prefix}.vanilla_mbridge=False selects Megatron-Bridge, which needs Python >= 3.12 and is not installable here; set it to True (mbridge builds the same GPTModel)"
        )
    sequence_parallel = (megatron.get("override_transformer_config") or {}).get("sequence_parallel", True)  # mbridge's default: on at TP > 1
    if sequence_parallel and megatron.get("tensor_model_parallel_size", 1) > 1:
        errors.append(
            f"{prefix}.override_transformer_config.sequence_parallel={sequence_parallel}: megatron's local norms (no TransformerEngine or apex on the CPU) "
            "refuse sequence parallelism, which mbridge turns on at tensor parallelism > 1; set it to False"
        )
    for key in ("pipeline_model_parallel_size", "context_parallel_size", "expert_model_parallel_size"):
        if megatron.get(key, 1) > 1:
            errors.append(f"{prefix}.{key}={megatron[key]}: not run on the CPU backend; set it to 1")
    return errors
