"""With an OAR estimator, a training step that skips the OAR step stops the run: verl's
own `PPOTrainer.step`, driving a `_step_once` from a verl whose pipeline no longer calls the
advantage hook oar_verl overrides. The passing pipeline calls the real
`OARStep._compute_advantage` (verl's GRPO step, TransferQueue and the attribution stubbed),
so the count it keeps is the one tested."""

import pytest
import torch
from omegaconf import OmegaConf
from tensordict import TensorDict
from transfer_queue import KVBatchMeta
from verl.trainer.ppo.v1 import trainer_base

from oar_verl.integration import trainer as trainer_module
from oar_verl.integration.trainer import OARStepBypassed, oar_trainers


@pytest.fixture
def stubbed_step(monkeypatch):
    """What `_compute_advantage` calls around its count: verl's own advantage step (the
    batch unchanged), TransferQueue (one row of 3 tokens, advantage 1), the attribution
    (weights 1), the dumps and heatmaps; the advantages it writes are recorded."""
    written = []
    nested = lambda rows: torch.nested.as_nested_tensor(rows, layout=torch.jagged)  # noqa: E731
    data = TensorDict(
        {"advantages": nested([torch.ones(3)]), "responses": nested([torch.arange(3)]), "response_mask": nested([torch.ones(3, dtype=torch.long)])},
        batch_size=[1],
    )
    monkeypatch.setattr(trainer_base.PPOTrainer, "_compute_advantage", lambda self, batch, metrics: batch)
    monkeypatch.setattr(trainer_module.tq, "kv_batch_get", lambda keys, partition_id, select_fields: data)
    monkeypatch.setattr(
        trainer_module.tq,
        "kv_batch_put",
        lambda keys, partition_id, fields: written.append(fields) or KVBatchMeta(keys=keys, tags=[{}] * len(keys), partition_id=partition_id),
    )
    monkeypatch.setattr(
        trainer_module, "attribution_weights", lambda trainer, batch, metrics, row_advantage, padded, **kwargs: (torch.ones(1, 3), {})
    )
    monkeypatch.setattr(trainer_module, "dump_record", lambda trainer, batch, record: None)
    monkeypatch.setattr(trainer_module, "publish_heatmaps", lambda trainer, batch, record: None)
    return written


def trainer_whose_step_once(step_once, parameter_sync_step=1):
    """An `OARTrainerSync` with only what verl's `PPOTrainer.step` and the OAR step read, and
    `step_once` in place of verl's `_step_once`."""
    trainer = object.__new__(oar_trainers()["sync"][1])
    trainer.config = OmegaConf.create({"algorithm": {"adv_estimator": "oar_g"}, "data": {"train_batch_size": 4}})
    trainer.parameter_sync_step = parameter_sync_step
    trainer.global_steps = 3
    trainer.timing_raw = {}
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
    """verl's pipeline: the advantage step is the hook the OAR step overrides."""
    return trainer._compute_advantage(rows(metrics), metrics)


def test_a_step_without_the_oar_step_stops_the_run(stubbed_step):
    trainer = trainer_whose_step_once(renamed_hook_pipeline)
    with pytest.raises(
        OARStepBypassed, match=r"algorithm.adv_estimator=oar_g: training step 3 ran 0 OAR advantage step\(s\) for 1 update\(s\).*_compute_advantage"
    ):
        trainer.step({}, {})
    assert stubbed_step == []


def test_every_update_of_a_step_needs_its_oar_step(stubbed_step):
    calls, metrics = iter([oar_pipeline, renamed_hook_pipeline]), {}
    trainer = trainer_whose_step_once(lambda t, m: next(calls)(t, metrics), parameter_sync_step=2)
    with pytest.raises(OARStepBypassed, match=r"ran 1 OAR advantage step\(s\) for 2 update\(s\)"):
        trainer.step({}, {})


def test_a_step_with_its_oar_steps_passes_and_writes_the_reshaped_advantages(stubbed_step):
    metrics = {}
    trainer = trainer_whose_step_once(lambda t, m: oar_pipeline(t, metrics), parameter_sync_step=2)
    assert trainer.step({}, {}).keys == ["0", "1"]
    assert len(stubbed_step) == 2 and metrics["oar/fused"] == 0.0
    torch.testing.assert_close(stubbed_step[0]["advantages"].to_padded_tensor(0.0), torch.ones(1, 3))


def test_the_estimator_refuses_to_run_without_weights():
    """The registered estimator is the other guard: verl calling it directly (its own
    advantage step, not the OAR step) gets an error, never GRPO's advantages."""
    from verl.trainer.ppo.core_algos import get_adv_estimator_fn

    rewards, mask = torch.zeros(2, 3), torch.ones(2, 3)
    with pytest.raises(ValueError, match="need per-token weights from the OAR attribution step"):
        get_adv_estimator_fn("oar_p")(token_level_rewards=rewards, response_mask=mask, index=["a", "a"])
