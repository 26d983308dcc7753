"""With oar_verl installed, a run whose estimator is not OAR's gets verl's own trainer (and
so verl's own workers); an OAR run gets the trainer with the OAR step."""

import pytest

from oar_verl.integration.command_line import CommandLine, compose_config
from oar_verl.integration.trainer import OAR_TRAINER_NAMES, OARStep, fuses_log_probs, oar_trainers
from oar_verl.tiny.launch import CONFIG_DIR, PRESETS, TRAINER_MODES, mode_overrides


def config(estimator: str, mode: str):
    # separate_async: a standalone rollout replica, and a step's prompts are parameter_sync_step (4) mini-batches
    separate = [
        "actor_rollout_ref.rollout.nnodes=1",
        "actor_rollout_ref.rollout.n_gpus_per_node=1",
        "actor_rollout_ref.rollout.checkpoint_engine.backend=gloo",
        "actor_rollout_ref.actor.ppo_mini_batch_size=2",
    ]
    overrides = [f"algorithm.adv_estimator={estimator}", f"trainer.v1.trainer_mode={mode}", *(separate if mode == "separate_async" else [])]
    return compose_config(CommandLine.parse(["--config-name", "cpu", *overrides], CONFIG_DIR, "cpu"))


@pytest.mark.parametrize("mode", sorted(OAR_TRAINER_NAMES))
@pytest.mark.parametrize("estimator", ["grpo", "gae", "rloo"])
def test_other_estimators_get_verls_own_trainer(mode, estimator):
    verl_class, oar_class = oar_trainers()[mode]
    trainer = oar_class(config=config(estimator, mode))
    assert type(trainer) is verl_class and not isinstance(trainer, OARStep)


@pytest.mark.parametrize("mode", sorted(OAR_TRAINER_NAMES))
@pytest.mark.parametrize("estimator", ["oar_g", "oar_p"])
def test_oar_estimators_get_the_oar_step(mode, estimator):
    _, oar_class = oar_trainers()[mode]
    trainer = oar_class(config(estimator, mode))
    assert type(trainer) is oar_class and trainer.config.algorithm.adv_estimator == estimator


@pytest.mark.parametrize("mode", sorted(TRAINER_MODES))
def test_the_main_jobs_trainer_modes_need_no_extra_keys(mode):
    """`python -m oar_verl.quickstart --trainer-mode MODE` composes a config verl's trainer of
    that mode accepts (its own checks run when it is built)."""
    composed = compose_config(CommandLine.parse(["--config-name", "cpu", "algorithm.adv_estimator=oar_g", *mode_overrides(mode)], CONFIG_DIR, "cpu"))
    trainer = oar_trainers()[mode][1](config=composed)
    assert trainer.trainer_mode == mode


@pytest.mark.parametrize(
    ("strategy", "extra", "fused"),
    [
        ("fsdp2", [], True),
        ("fsdp2", ["algorithm.oar.fuse_log_probs=false"], False),
        ("fsdp2", ["algorithm.rollout_correction.bypass_mode=true"], False),
        ("megatron", [], True),
        ("megatron", ["actor_rollout_ref.actor.megatron.router_replay.mode=R2"], False),
        ("megatron", ["actor_rollout_ref.actor.megatron.router_replay.mode=R3"], False),
    ],
)
def test_fusion_only_where_verls_log_prob_pass_has_nothing_else_to_do(strategy, extra, fused):
    """Fused attribution runs the model outside the engine's forward: where verl's own pass
    must record or replay MoE routes (router replay) or is skipped (bypass mode), it is off."""
    overrides = ["--config-name", PRESETS[strategy], "algorithm.adv_estimator=oar_g", *extra]
    assert fuses_log_probs(compose_config(CommandLine.parse(overrides, CONFIG_DIR, PRESETS[strategy]))) is fused
