"""OAR settings are refused in the launching process, before Ray starts, naming the key."""

import logging
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module

from oar_verl.integration.validation import check, oar_settings_errors, perturbation_cost_warning, vision_model_error
from oar_verl.main_ppo import SettingsError, check_and_prepare
from oar_verl.tiny.arithmetic import write_split

DATA = write_split(Path(tempfile.mkdtemp()) / "train.parquet", 8, seed=0, split="train")  # GSM8K-format rows


def config(*overrides, name="ppo"):
    with initialize_config_module(config_module="oar_verl.config", version_base=None):
        defaults = [
            "algorithm.adv_estimator=oar_g",
            f"data.train_files={DATA}",
            f"data.val_files={DATA}",
            "actor_rollout_ref.model.path=Qwen/Qwen2.5-0.5B",
            "actor_rollout_ref.rollout.n=4",
            "actor_rollout_ref.rollout.name=vllm",
        ]
        if name == "ppo":
            defaults.append("actor_rollout_ref.actor.strategy=fsdp2")
        return compose(config_name=name, overrides=[*defaults, *overrides])


def test_defaults_pass():
    assert oar_settings_errors(config()) == []
    for mode in ("sync", "colocate_async", "separate_async"):
        assert oar_settings_errors(config(f"trainer.v1.trainer_mode={mode}")) == []
    assert oar_settings_errors(config("algorithm.adv_estimator=grpo", "actor_rollout_ref.actor.strategy=megatron")) == []


@pytest.mark.parametrize(
    "override, named",
    [
        ("algorithm.oar.quantile=1.5", "algorithm.oar.quantile"),
        ("+algorithm.oar.q=0.3", "algorithm.oar: unknown setting(s) 'q'"),
        ("trainer.use_v1=false", "trainer.use_v1=False"),
        ("actor_rollout_ref.actor.strategy=fsdp", "actor_rollout_ref.actor.strategy=fsdp"),
        ("actor_rollout_ref.actor.strategy=megatron", "actor_rollout_ref.actor.megatron: missing"),
        ("+actor_rollout_ref.actor.fsdp_config.mixed_precision.param_dtype=fp16", "mixed_precision.param_dtype=fp16"),
        ("actor_rollout_ref.actor.ulysses_sequence_parallel_size=2", "actor_rollout_ref.actor.ulysses_sequence_parallel_size=2"),
        (
            "actor_rollout_ref.actor.fsdp_config.ulysses_sequence_parallel_size=2",
            "actor_rollout_ref.actor.fsdp_config.ulysses_sequence_parallel_size=2",
        ),
        ("actor_rollout_ref.model.enable_activation_offload=true", "actor_rollout_ref.model.enable_activation_offload=True"),
        ("actor_rollout_ref.model.use_liger=true", "actor_rollout_ref.model.use_liger=True"),
        ("actor_rollout_ref.model.use_fused_kernels=true", "use_fused_kernels=True"),
        ("data.train_files=/nowhere/train.parquet", "data.train_files[0] (/nowhere/train.parquet): no such file"),
        (
            "algorithm.oar.answer_pattern=boxed",
            "answer_pattern='boxed' finds no answer in 8 of 8 sampled rows; set algorithm.oar.answer_pattern=gsm8k",
        ),
    ],
)
def test_refusals_name_the_setting(override, named):
    errors = oar_settings_errors(config(override))
    assert len(errors) == 1 and named in errors[0], errors
    with pytest.raises(SettingsError, match="algorithm.adv_estimator=oar_g"):
        check_and_prepare(config(override))


def test_lora_is_honoured_on_fsdp_and_refused_on_megatron():
    assert oar_settings_errors(config("actor_rollout_ref.model.lora_rank=8")) == []
    errors = oar_settings_errors(config("actor_rollout_ref.model.lora.rank=8", name="ppo_megatron"))
    assert len(errors) == 1 and "actor_rollout_ref.model.lora.rank=8" in errors[0], errors


def test_vision_language_models_are_refused(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "qwen2_5_vl", "vision_config": {"depth": 2}}')
    assert "a vision-language model" in (vision_model_error(tmp_path, "oar_g") or "")
    (tmp_path / "config.json").write_text('{"model_type": "qwen2"}')
    assert vision_model_error(tmp_path, "oar_g") is None


def test_megatron_defaults_pass():
    assert oar_settings_errors(config(name="ppo_megatron")) == []
    assert oar_settings_errors(config("actor_rollout_ref.actor.megatron.tensor_model_parallel_size=4", name="ppo_megatron")) == []
    taylor = [
        "algorithm.adv_estimator=oar_p",
        "algorithm.oar.perturbation_mode=taylor",
        "actor_rollout_ref.actor.megatron.tensor_model_parallel_size=2",
    ]
    assert oar_settings_errors(config(*taylor, "algorithm.oar.target=answer_logprob", name="ppo_megatron")) == []


@pytest.mark.parametrize(
    "overrides, named",
    [
        (["actor_rollout_ref.actor.megatron.pipeline_model_parallel_size=2"], "megatron.pipeline_model_parallel_size=2"),
        (["actor_rollout_ref.actor.megatron.virtual_pipeline_model_parallel_size=2"], "megatron.virtual_pipeline_model_parallel_size=2"),
        (["actor_rollout_ref.actor.megatron.context_parallel_size=2"], "megatron.context_parallel_size=2"),
        (["actor_rollout_ref.actor.megatron.dtype=float16"], "megatron.dtype=float16"),
        (["actor_rollout_ref.actor.megatron.router_replay.mode=R2"], "megatron.router_replay.mode=R2"),
        (
            [
                "algorithm.adv_estimator=oar_p",
                "algorithm.oar.perturbation_mode=taylor",
                "actor_rollout_ref.actor.megatron.tensor_model_parallel_size=2",
            ],
            "perturbation_mode=taylor with algorithm.oar.target=answer_mean",
        ),
    ],
)
def test_megatron_refusals_name_the_setting(overrides, named):
    errors = oar_settings_errors(config(*overrides, name="ppo_megatron"))
    assert len(errors) == 1 and named in errors[0], errors


def test_megatron_without_the_extra_says_how_to_install(monkeypatch):
    import oar_verl.integration.validation as validation

    monkeypatch.setattr(validation, "megatron_installed", lambda: False)
    (error,) = oar_settings_errors(config(name="ppo_megatron"))
    assert "megatron-core and mbridge are not installed" in error and "pip install 'oar_verl[megatron]'" in error


@pytest.mark.slow
def test_stock_entry_point_refuses_before_ray(tmp_path):
    """`python -m verl.trainer.main_ppo` with the plugin: the OAR check runs inside verl's
    own config validation, in the launching process."""
    command = [
        sys.executable, "-m", "verl.trainer.main_ppo", "algorithm.adv_estimator=oar_g", "+algorithm.oar.quantile=2.0",
        "actor_rollout_ref.actor.strategy=fsdp2", "data.train_files=x", "data.val_files=x", "actor_rollout_ref.model.path=x",
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode != 0
    assert "algorithm.oar.quantile: expected a value in (0, 1), got 2.0" in result.stderr
    assert "ray init" not in result.stdout.lower() and "Started a local Ray instance" not in result.stderr


def recipe_shape(*overrides):
    """The 7B MATH recipe's step: 512 prompts x 8 samples on 8 ranks, 1024 + 3072 tokens."""
    return config("algorithm.adv_estimator=oar_p", "data.train_batch_size=512", "actor_rollout_ref.rollout.n=8", "trainer.n_gpus_per_node=8",
                  "data.max_prompt_length=1024", "data.max_response_length=3072", *overrides)  # fmt: skip


def test_a_costly_perturbation_mode_is_warned_about_before_ray():
    warning = perturbation_cost_warning(recipe_shape())
    # 512 responses per rank x 3072 perturbed sequences of ~1536 tokens against 512 x 4096
    assert warning.startswith(
        "algorithm.oar.perturbation_mode=exact: about 1,572,864 perturbed sequences per rank per step (512 responses x up to 3072"
    )
    assert "about 1,152x the tokens of the step's log-prob pass" in warning and "perturbation_mode=taylor" in warning
    logged = []
    handler = logging.Handler()
    handler.emit = lambda record: logged.append(record.getMessage())
    logging.getLogger("oar_verl").addHandler(handler)
    try:
        assert oar_settings_errors(recipe_shape()) == []
        assert logged == [], "the errors' check (run twice by oar_verl.main_ppo) logs nothing"
        check(recipe_shape())  # verl's validate_config, once per launch
    finally:
        logging.getLogger("oar_verl").removeHandler(handler)
    assert warning in logged
    guided = perturbation_cost_warning(recipe_shape("algorithm.oar.perturbation_mode=guided_approx"))
    assert "about 511,181 perturbed sequences" in guided  # 3072 x (0.25 + 0.1 x 0.75) per response


def test_cheap_modes_and_short_responses_are_not_warned_about():
    assert perturbation_cost_warning(recipe_shape("algorithm.oar.perturbation_mode=taylor")) is None
    assert perturbation_cost_warning(recipe_shape("algorithm.adv_estimator=oar_g")) is None
    assert perturbation_cost_warning(config("algorithm.adv_estimator=oar_p", "data.max_prompt_length=64", "data.max_response_length=32")) is None
