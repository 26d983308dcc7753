"""Settings checked in the launching process, before Ray starts: for any estimator its name
and the model paths (`launch_checks`); for OAR's, the installed verl
(a tested release, or one whose internals the plugin relies on are identical:
`verl_internals`), unknown or out-of-range `algorithm.oar.*` keys, backends the attribution
role does not support (and Megatron settings it cannot honour), and training data whose answers `answer_pattern` cannot find
(`data_check`)."""

from __future__ import annotations

import logging

from oar_verl.integration import ESTIMATORS
from oar_verl.integration.config import METHOD_DEFAULT_TARGETS, OARSettings
from oar_verl.integration.data_check import data_errors
from oar_verl.integration.errors import SettingsError
from oar_verl.integration.launch_checks import context_warning, estimator_errors, local_model_config, missing_value_errors, model_path_errors
from oar_verl.integration.megatron_extra import INSTALL_HINT, megatron_installed
from oar_verl.integration.verl_internals import support_problem

logger = logging.getLogger("oar_verl")
HALF_PRECISIONS = ("16", "fp16", "float16")  # verl's names for float16 (verl.utils.torch_dtypes.HALF_LIST)


def oar_settings_errors(config) -> list[str]:
    """Every problem with running `config`'s OAR estimator, one message per setting."""
    method = config.algorithm.adv_estimator
    if method not in ESTIMATORS:
        return []
    errors = []
    import verl

    unsupported, untested = support_problem(verl.__version__)
    if unsupported:
        errors.append(unsupported)
    elif untested:
        logger.warning("%s", untested)
    try:
        settings = OARSettings.from_algorithm_config(config.algorithm)
        settings.method_config(method, pad_token_id=0)
    except ValueError as error:
        settings = None
        errors.append(str(error))
    longest = int(config.data.get("max_prompt_length", 0)) + int(config.data.get("max_response_length", 0))
    if settings is not None and settings.max_tokens_per_pass < longest:
        errors.append(
            f"algorithm.oar.max_tokens_per_pass={settings.max_tokens_per_pass}: one pass must hold a whole sequence, up to "
            f"data.max_prompt_length + data.max_response_length = {longest} tokens; raise it to at least {longest}"
        )
    trainer = config.trainer
    if not trainer.get("use_v1", True):
        errors.append(f"trainer.use_v1=False: algorithm.adv_estimator={method} runs on verl's v1 trainer (the legacy trainer is deprecated)")
    actor = config.actor_rollout_ref.actor
    if actor.strategy == "megatron":
        errors += megatron_errors(config, method)
    elif actor.strategy != "fsdp2":
        errors.append(
            f"actor_rollout_ref.actor.strategy={actor.strategy}: {method} attributes on FSDP2-sharded or Megatron actors; set it to fsdp2 or megatron"
        )
    else:
        precision = (actor.get("fsdp_config", {}).get("mixed_precision") or {}).get("param_dtype", "bf16")
        if str(precision) in HALF_PRECISIONS:
            errors.append(
                f"actor_rollout_ref.actor.fsdp_config.mixed_precision.param_dtype={precision}: {method}'s gradient passes have no loss "
                "scaling, and fp16 gradients of the attribution objective underflow; use bf16 (verl's default) or fp32"
            )
    errors += engine_setting_errors(config, method)
    samples = config.actor_rollout_ref.rollout.get("n", 1)
    if samples < 2:
        errors.append(
            f"actor_rollout_ref.rollout.n={samples}: {method} keeps GRPO's group baseline, which needs >= 2 responses a prompt (with 1 every advantage is 0)"
        )
    if not errors:
        errors += data_errors(config, OARSettings.from_algorithm_config(config.algorithm).answer_pattern)
    return errors


def engine_setting_errors(config, method: str) -> list[str]:
    """The actor engine's settings attribution cannot honour (docs/verl_settings.md), one
    message each, naming the key."""
    errors = []
    actor, model = config.actor_rollout_ref.actor, config.actor_rollout_ref.model
    for key, value in (
        ("actor_rollout_ref.actor.ulysses_sequence_parallel_size", actor.get("ulysses_sequence_parallel_size", 1)),
        (
            "actor_rollout_ref.actor.fsdp_config.ulysses_sequence_parallel_size",
            (actor.get("fsdp_config") or {}).get("ulysses_sequence_parallel_size", 1),
        ),
    ):
        if int(value or 1) > 1:
            errors.append(f"{key}={value}: {method} reads each row's answer positions on one rank; Ulysses splits sequences over ranks: set it to 1")
    if model.get("use_fused_kernels", False):
        errors.append(
            f"actor_rollout_ref.model.use_fused_kernels=True: fused kernels never materialise logits, which {method} reads; set it to False"
        )
    if model.get("use_liger", False):
        errors.append(f"actor_rollout_ref.model.use_liger=True: {method} is not tested with Liger's kernels in the actor; set it to False")
    if model.get("enable_activation_offload", False):
        errors.append(
            f"actor_rollout_ref.model.enable_activation_offload=True turns off the activation checkpointing {method}'s backward relies on "
            "(memory then grows with every layer's activations); set it to False"
        )
    megatron_lora = int((model.get("lora") or {}).get("rank", 0) or 0)
    if actor.strategy == "megatron" and megatron_lora > 0:
        errors.append(
            f"actor_rollout_ref.model.lora.rank={megatron_lora}: {method} on Megatron actors is not tested through a LoRA adapter "
            "(FSDP2 actors attribute through it: lora_rank); set it to 0"
        )
    vision = vision_model_error(model.get("path"), method)
    if vision:
        errors.append(vision)
    return errors


def vision_model_error(path, method: str) -> str | None:
    """A refusal when the local model at `path` is a vision-language model (its config has a
    `vision_config`): attribution reads text tokens only."""
    if "vision_config" not in (local_model_config(path) or {}):
        return None
    return f"actor_rollout_ref.model.path={path}: a vision-language model (its config.json has a vision_config); {method} attributes text-only models"


COSTLY_PASS_RATIO = 50  # warn when a mode's perturbed tokens exceed the log-prob pass's this many times


def perturbation_cost_warning(config) -> str | None:
    """A warning when `oar_p`'s perturbation mode would compute far more tokens a step than
    the step's log-prob pass, estimated from the config alone (before Ray): per rank,
    responses x perturbed reasoning tokens, each a sequence recomputed from its token on
    (KV reuse: on average half the response), against responses x (prompt + response).
    The mode `taylor` (fused with the log-prob pass) is never warned about."""
    if config.algorithm.adv_estimator != "oar_p":
        return None
    settings = OARSettings.from_algorithm_config(config.algorithm)
    unit_share = {
        "exact": 1.0,
        "span_approx": 1.0 / settings.span,
        "guided_approx": settings.guided_fraction + settings.calibration_fraction * (1 - settings.guided_fraction),
    }
    if settings.perturbation_mode not in unit_share:
        return None
    data, trainer = config.data, config.trainer
    responses = int(data.train_batch_size) * int(config.actor_rollout_ref.rollout.n)
    ranks = max(1, int(trainer.n_gpus_per_node) * int(trainer.get("nnodes", 1)))
    per_rank = -(-responses // ranks)
    P, R = int(data.max_prompt_length), int(data.max_response_length)
    perturbed = per_rank * R * unit_share[settings.perturbation_mode]  # sequences, each ~R / 2 tokens
    ratio = perturbed * (R / 2) / (per_rank * (P + R))
    if ratio < COSTLY_PASS_RATIO:
        return None
    return (
        f"algorithm.oar.perturbation_mode={settings.perturbation_mode}: about {perturbed:,.0f} perturbed sequences per rank per step "
        f"({per_rank} responses x up to {R} reasoning tokens), about {ratio:,.0f}x the tokens of the step's log-prob pass; "
        "at this response length use algorithm.oar.perturbation_mode=taylor (fused with the log-prob pass)"
    )


def megatron_errors(config, method: str) -> list[str]:
    """What attribution cannot honour on a Megatron actor (`actor_rollout_ref.actor.megatron`)."""
    if not megatron_installed():
        return [f"actor_rollout_ref.actor.strategy=megatron: megatron-core and mbridge are not installed: {INSTALL_HINT}"]
    megatron, prefix = config.actor_rollout_ref.actor.get("megatron"), "actor_rollout_ref.actor.megatron"
    if megatron is None:
        return [f"{prefix}: missing; compose a Megatron config (verl's ppo_megatron_trainer, oar_verl's ppo_megatron or cpu_megatron)"]
    errors = []
    if megatron.get("pipeline_model_parallel_size", 1) > 1:
        errors.append(
            f"{prefix}.pipeline_model_parallel_size={megatron.pipeline_model_parallel_size}: {method} needs the embedding and the head on each rank; set it to 1 (use tensor parallelism)"
        )
    if (megatron.get("virtual_pipeline_model_parallel_size") or 1) > 1:
        errors.append(
            f"{prefix}.virtual_pipeline_model_parallel_size={megatron.virtual_pipeline_model_parallel_size}: {method} needs the whole model in one chunk; set it to null"
        )
    if megatron.get("context_parallel_size", 1) > 1 or megatron.get("dynamic_context_parallel", False):
        errors.append(
            f"{prefix}.context_parallel_size={megatron.get('context_parallel_size', 1)} (dynamic_context_parallel={megatron.get('dynamic_context_parallel', False)}): {method} needs whole sequences on each rank; set them to 1 and False"
        )
    replay = (megatron.get("router_replay") or {}).get("mode", "disabled")
    if replay != "disabled":
        errors.append(
            f"{prefix}.router_replay.mode={replay}: {method}'s passes do not replay the rollout's MoE routing (verl's log-prob pass does); set it to disabled"
        )
    if str(megatron.get("dtype", "bfloat16")) in (*HALF_PRECISIONS, "float16"):
        errors.append(
            f"{prefix}.dtype={megatron.dtype}: {method}'s gradient passes have no loss scaling, and fp16 gradients of the attribution objective underflow; use bfloat16"
        )
    settings = OARSettings.from_algorithm_config(config.algorithm)
    target = settings.target or METHOD_DEFAULT_TARGETS[method]
    if (
        method == "oar_p"
        and settings.perturbation_mode == "taylor"
        and target != "answer_logprob"
        and megatron.get("tensor_model_parallel_size", 1) > 1
    ):
        errors.append(
            f"algorithm.oar.perturbation_mode=taylor with algorithm.oar.target={target} and {prefix}.tensor_model_parallel_size={megatron.tensor_model_parallel_size}: "
            "taylor's Fisher directions need the target's whole vocabulary, which tensor parallelism splits; use target answer_logprob, mode exact, or oar_g"
        )
    return errors


def launch_errors(config) -> list[str]:
    """Every problem found in `config` before Ray: for any estimator its name, mandatory
    values and model paths; for OAR's, its settings (`oar_settings_errors`)."""
    return estimator_errors(config) + missing_value_errors(config) + model_path_errors(config) + oar_settings_errors(config)


def check(config) -> None:
    """The plugin's check in verl's `validate_config` (once per launch, before Ray): refuses
    `config` with every error (any estimator: its name and the model paths; OAR's: its
    settings), warns about a costly OAR-P mode and a context shorter than prompt + response."""
    errors = launch_errors(config)
    if errors:
        raise SettingsError(f"algorithm.adv_estimator={config.algorithm.adv_estimator}:\n  - " + "\n  - ".join(errors))
    for warning in (perturbation_cost_warning(config), context_warning(config)):
        if warning:
            logger.warning("%s", warning)
