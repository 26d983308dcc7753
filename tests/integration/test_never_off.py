"""With an OAR estimator, a training step that skips the OAR step stops the run: verl's
own `PPOTrainer.step`, driving a `_step_once` from a verl whose pipeline no longer calls the
advantage hook oar_verl overrides."""

import pytest
import torch
from omegaconf import OmegaConf
from transfer_queue import KVBatchMeta

from oar_verl.integration.trainer import OARStepBypassed, OARTrainerSync


def trainer_whose_step_once(step_once, estimator="oar_g", parameter_sync_step=1):
    """An `OARTrainerSync` with only what verl's `PPOTrainer.step` reads, and `step_once`
    in place of verl's `_step_once`."""
    trainer = object.__new__(OARTrainerSync)
    trainer.config = OmegaConf.create({"algorithm": {"adv_estimator": estimator}, "data": {"train_batch_size": 4}})
    trainer.parameter_sync_step = parameter_sync_step
    trainer.global_steps = 3
    trainer.prepare_step = dict
    trainer._step_once = lambda metrics, timing_raw, sample_batch_size: step_once(trainer, metrics)
    return trainer


def rows(metrics) -> KVBatchMeta:
    """One row, keyed by the update's number."""
    key = str(len(metrics.setdefault("updates", [])))
    metrics["updates"].append(key)
    return KVBatchMeta(keys=[key], tags=[{}], partition_id="train")


def renamed_hook_pipeline(trainer, metrics):
    """verl's pipeline with the advantage hook renamed: GRPO advantages, no OAR step."""
    return rows(metrics)


def oar_pipeline(trainer, metrics):
    """What `_step_once` does when it calls `_compute_advantage` (the OAR step's count)."""
    trainer._oar_steps_done += 1
    return rows(metrics)


def test_a_step_without_the_oar_step_stops_the_run():
    trainer = trainer_whose_step_once(renamed_hook_pipeline)
    with pytest.raises(
        OARStepBypassed, match=r"algorithm.adv_estimator=oar_g: training step 3 ran 0 OAR advantage step\(s\) for 1 update\(s\).*_compute_advantage"
    ):
        trainer.step({}, {})


def test_every_update_of_a_step_needs_its_oar_step():
    calls, metrics = iter([oar_pipeline, renamed_hook_pipeline]), {}
    trainer = trainer_whose_step_once(lambda t, m: next(calls)(t, metrics), parameter_sync_step=2)
    with pytest.raises(OARStepBypassed, match=r"ran 1 OAR advantage step\(s\) for 2 update\(s\)"):
        trainer.step({}, {})


def test_a_step_with_the_oar_step_and_other_estimators_pass():
    metrics = {}
    assert trainer_whose_step_once(lambda t, m: oar_pipeline(t, metrics), parameter_sync_step=2).step({}, {}).keys == ["0", "1"]
    assert trainer_whose_step_once(renamed_hook_pipeline, estimator="grpo").step({}, {}).keys == ["0"]


def test_the_estimator_refuses_to_run_without_weights():
    """The registered estimator is the other guard: verl calling it directly (its own
    advantage step, not the OAR step) gets an error, never GRPO's advantages."""
    from verl.trainer.ppo.core_algos import get_adv_estimator_fn

    rewards, mask = torch.zeros(2, 3), torch.ones(2, 3)
    with pytest.raises(ValueError, match="need per-token weights from the OAR attribution step"):
        get_adv_estimator_fn("oar_p")(token_level_rewards=rewards, response_mask=mask, index=["a", "a"])
