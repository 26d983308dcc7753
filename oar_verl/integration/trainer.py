"""The OAR step of verl's v1 synchronous trainer.

With `algorithm.adv_estimator` = `oar_p` / `oar_g`, the advantage step becomes:

1. verl's own GRPO advantages (the v1 path: session handling, KL-in-reward, rollout
   correction; std and epsilon rules, `norm_adv_by_std_in_grpo`), written to TransferQueue;
2. rows whose advantage is zero (every answer of the group scored the same) and padding
   rows are left alone; the others are segmented (tokenizer, on the sampled ids) and
   scored on the actor workers (`worker.OARActorRolloutRefWorker.compute_oar_scores`),
   with the parameters that produced `old_log_probs`;
3. advantages = Bi-Level weights x GRPO advantage, rows without an answer, with empty
   reasoning or degenerate scores keeping weight 1; `oar/*` metrics and
   `timing_s/oar_attribution` go to verl's trackers.

With any other estimator the trainer is verl's, unchanged.
"""

from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path

import ray
import torch
import transfer_queue as tq
from omegaconf import open_dict
from tensordict import TensorDict
from transfer_queue import KVBatchMeta
from verl.trainer.ppo.utils import Role
from verl.trainer.ppo.v1.trainer_sync import PPOTrainerSync
from verl.utils.debug import marked_timer
from verl.workers.utils.padding import response_to_nested

from oar_verl.core.reshape import bilevel_weights, degenerate_rows
from oar_verl.core.spans import segment_responses
from oar_verl.integration import ESTIMATORS
from oar_verl.integration.config import OARSettings
from oar_verl.integration.metrics import oar_metrics
from oar_verl.integration.worker import SCORES_FIELD, SEGMENTS_FIELD, OARActorRolloutRefWorker

ACTOR_ROLES = (Role.ActorRollout, Role.ActorRolloutRef, Role.Actor)


def uses_oar(config) -> bool:
    return config.algorithm.adv_estimator in ESTIMATORS


@contextlib.contextmanager
def _estimator(config, name: str):
    """Runs the block with `algorithm.adv_estimator` set to `name`."""
    original = config.algorithm.adv_estimator
    with open_dict(config):
        config.algorithm.adv_estimator = name
    try:
        yield
    finally:
        with open_dict(config):
            config.algorithm.adv_estimator = original


class OARTrainerSync(PPOTrainerSync):
    """verl's v1 synchronous trainer with the OAR advantage step."""

    def _init_resource_pool_mgr(self):
        super()._init_resource_pool_mgr()
        if uses_oar(self.config):  # the actor workers gain the attribution role
            for role in ACTOR_ROLES:
                if role in self.role_worker_mapping:
                    self.role_worker_mapping[role] = ray.remote(OARActorRolloutRefWorker)

    def _compute_advantage(self, batch: KVBatchMeta, metrics: dict) -> KVBatchMeta:
        if not uses_oar(self.config):
            return super()._compute_advantage(batch, metrics)
        with _estimator(self.config, "grpo"):
            batch = super()._compute_advantage(batch, metrics)
        with marked_timer("oar_attribution", self.timing_raw):
            return self._reshape_advantages(batch, metrics)

    def _reshape_advantages(self, batch: KVBatchMeta, metrics: dict) -> KVBatchMeta:
        method = self.config.algorithm.adv_estimator
        settings = OARSettings.from_config(self.config.algorithm.get("oar"))
        data = tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id, select_fields=["advantages", "responses", "response_mask"])
        nested_mask = data["response_mask"]
        padded = data.to_padded_tensor()
        advantages = padded["advantages"].float()  # [B, R]
        response_mask = padded["response_mask"].bool()  # [B, R]
        responses = padded["responses"].long()  # [B, R]
        B, R = advantages.shape

        real = torch.tensor([not tag.get("is_padding", False) for tag in batch.tags]) & response_mask.any(dim=1)  # [B]
        first = response_mask.float().argmax(dim=1)  # [B] first response token
        row_advantage = advantages[torch.arange(B), first]  # [B], constant over a row in GRPO
        nonzero = real & (row_advantage != 0)
        segments = segment_responses(self.tokenizer, responses, response_mask, settings.answer_pattern)
        attribute = nonzero & segments.usable  # [B]

        segment_field = torch.stack([segments.reasoning_end, segments.answer_start, segments.answer_end, attribute.long()], dim=1)  # [B, 4]
        tq.kv_batch_put(keys=batch.keys, partition_id=batch.partition_id, fields=TensorDict({SEGMENTS_FIELD: segment_field}, batch_size=B))
        request = KVBatchMeta(
            keys=batch.keys,
            tags=batch.tags,
            partition_id=batch.partition_id,
            fields=["prompts", "responses", SEGMENTS_FIELD],
            extra_info={"oar_method": method, "oar_settings": dataclasses.asdict(settings), "oar_step": int(self.global_steps)},
        )
        self.actor_rollout_wg.compute_oar_scores(request)
        scores = tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id, select_fields=[SCORES_FIELD])
        scores = scores.to_padded_tensor()[SCORES_FIELD].float()[:, :R]  # [B, R]

        reasoning = segments.reasoning_mask(R) & attribute[:, None]  # [B, R]
        weights = bilevel_weights(
            scores, reasoning, quantile=settings.quantile, beta=settings.beta, min_weight=settings.min_weight, preserve_mass=settings.preserve_mass
        )  # [B, R], 1 outside attributed reasoning
        degenerate = nonzero & (~segments.usable | (attribute & degenerate_rows(scores, reasoning)))  # [B]
        reshaped = advantages * weights * response_mask  # [B, R]
        output = TensorDict(
            {"advantages": response_to_nested(reshaped, nested_mask), "returns": response_to_nested(reshaped, nested_mask)},
            batch_size=B,
        )
        if settings.dump_dir:
            _dump(Path(settings.dump_dir) / f"step_{self.global_steps}.pt", responses=responses, response_mask=response_mask, segments=segment_field,
                  found=segments.found, scores=scores, weights=weights, grpo_advantages=advantages, advantages=reshaped, degenerate=degenerate)  # fmt: skip
        metrics.update(
            oar_metrics(
                weights=weights,
                reasoning=reasoning & ~degenerate[:, None],
                real=real,
                answer_found=segments.found,
                nonzero=nonzero,
                degenerate=degenerate,
                attributed=attribute & ~degenerate,
            )
        )
        return tq.kv_batch_put(keys=batch.keys, partition_id=batch.partition_id, fields=output)


def _dump(path: Path, **tensors: torch.Tensor) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({name: tensor.cpu() for name, tensor in tensors.items()}, path)


def install(trainer_sync_module) -> None:
    """Makes `OARTrainerSync` verl's "sync" trainer (it defers to verl's for non-OAR
    estimators). verl's `register_trainer` refuses to rebind a name, so the registry entry
    is replaced after checking it still holds verl's class."""
    from verl.trainer.ppo.v1 import trainer_base

    current = trainer_base.TRAINER_REGISTRY.get("sync")
    if current is OARTrainerSync:
        return
    if current is not trainer_sync_module.PPOTrainerSync:
        raise RuntimeError(f"verl's 'sync' trainer is {current!r}, not verl's PPOTrainerSync: oar_verl cannot install its OAR step")
    trainer_base.TRAINER_REGISTRY["sync"] = OARTrainerSync
