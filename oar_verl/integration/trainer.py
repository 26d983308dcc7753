"""The OAR step of verl's v1 trainers (sync, colocate_async and separate_async).

With `algorithm.adv_estimator` = `oar_p` / `oar_g`, the advantage step becomes:

1. GRPO advantages exactly as verl computes them (std and epsilon rules,
   `norm_adv_by_std_in_grpo`);
2. rows whose advantage is zero (every answer of the group scored the same) and padding
   rows are left alone; the others are segmented (tokenizer, on the sampled ids) and
   scored on the actor workers (`worker.compute_oar_scores`), with the parameters that
   produced `old_log_probs`;
3. advantages = Bi-Level weights x GRPO advantage; rows without an answer, with empty
   reasoning or degenerate scores keep weight 1; `oar/*` metrics and
   `timing_s/oar_attribution` (with `timing_s/oar_segment`, the driver's share) go to verl's trackers; every `algorithm.oar.heatmap_freq`
   steps, token heatmaps (`integration/heatmaps.py`).

Two ways in, chosen by what verl offers:
- verl with the upstream patches (`patches/verl-0.9.1/0004`-`0006`): a pre-advantage step
  (`pre_advantage_step`) writes the weights to TransferQueue as `oar_weights`, the
  registered estimator (declaring that input) multiplies verl's GRPO advantage by them,
  and the workers run `compute_oar_scores` as a registered worker computation;
- verl 0.9.1 as released: `OARTrainerSync` / `OARTrainerColocateAsync` /
  `OARTrainerSeparateAsync` (verl's classes with the `OARStep` mixin) replace verl's
  trainers of those modes and their actor worker classes, compute verl's GRPO advantages
  (the estimator swapped to `grpo` for that call) and multiply them in place. For every
  other estimator, constructing one returns verl's own trainer (`OARStep.__new__`), which
  keeps verl's own worker classes.
"""

from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path

import numpy as np
import ray
import torch
import transfer_queue as tq
from omegaconf import open_dict
from tensordict import TensorDict
from transfer_queue import KVBatchMeta
from verl.trainer.ppo.core_algos import compute_grpo_outcome_advantage
from verl.trainer.ppo.utils import Role
from verl.utils.debug import marked_timer
from verl.workers.utils.padding import response_to_nested

from oar_verl.core.reshape import permute_within_rows, row_weights
from oar_verl.core.spans import Segments, segment_responses
from oar_verl.integration import ESTIMATORS, WEIGHTS_FIELD
from oar_verl.integration.config import OARSettings
from oar_verl.integration.heatmaps import publish_heatmaps
from oar_verl.integration.metrics import oar_metrics
from oar_verl.integration.worker import (
    COMPUTATION,
    FUSED_KEY,
    RANK_FIELD,
    SCORES_FIELD,
    SEGMENTS_FIELD,
    OARActorRolloutRefWorker,
    OARDetachActorWorker,
)

ACTOR_ROLES = (Role.ActorRollout, Role.ActorRolloutRef, Role.Actor)


def uses_oar(config) -> bool:
    return config.algorithm.adv_estimator in ESTIMATORS


def takes_rollout_log_probs(config) -> bool:
    """`algorithm.rollout_correction.bypass_mode`: verl takes the rollout's log-probs as
    `old_log_probs` (no old-log-prob pass, no pi_old kept)."""
    correction = config.algorithm.get("rollout_correction", None)
    return bool(correction and correction.get("bypass_mode", False))


def replays_routes(config) -> bool:
    """The actor's `router_replay.mode` (megatron, veomni; MoE models) is not "disabled": verl's
    own old-log-prob pass records (R2) or replays (R3) the experts' routes, which a fused
    attribution pass, running the model outside the engine's forward, would not."""
    strategy = config.actor_rollout_ref.actor.strategy
    engine = config.actor_rollout_ref.actor.get(strategy, None) if strategy in ("megatron", "veomni") else None
    replay = engine.get("router_replay", None) if engine is not None else None
    return replay is not None and replay.get("mode", "disabled") != "disabled"


def fuses_log_probs(config) -> bool:
    """Whether the OAR step answers verl's old-log-prob pass with fused attribution: the
    settings fuse (`OARSettings.fuses_log_probs`), there is an old-log-prob pass to fuse with
    (`takes_rollout_log_probs`) and it needs no route recording (`replays_routes`)."""
    settings = OARSettings.from_algorithm_config(config.algorithm)
    if settings.oracle or not settings.fuses_log_probs(config.algorithm.adv_estimator):  # the oracle's scores need no pass
        return False
    return not takes_rollout_log_probs(config) and not replays_routes(config)


@dataclasses.dataclass(frozen=True)
class AttributionRequest:
    """A step's rows prepared for attribution (see `prepare_attribution`).

    Attributes:
        batch: the rows' TransferQueue meta, with the `oar_segments` field added.
        extra_info: the worker request's batch-level settings (method, settings, step).
        responses, response_mask: [B, R] padded.
        segments: the rows' segments; real, nonzero, attribute: [B] bool.
    """

    batch: KVBatchMeta
    extra_info: dict
    responses: torch.Tensor
    response_mask: torch.Tensor
    segments: Segments
    real: torch.Tensor
    nonzero: torch.Tensor
    attribute: torch.Tensor

    @property
    def segment_field(self) -> torch.Tensor:
        """[B, 4]: reasoning_end, answer_start, answer_end, attribute."""
        s = self.segments
        return torch.stack([s.reasoning_end, s.answer_start, s.answer_end, self.attribute.long()], dim=1)


def grpo_row_advantage(trainer, padded: TensorDict) -> tuple[torch.Tensor, torch.Tensor]:
    """([B] each row's GRPO advantage, [B, R] GRPO advantages), as verl computes them, from
    `rm_scores` and `uid`."""
    mask = padded["response_mask"].float()
    uid = padded["uid"]  # group ids: a non-tensor stack or list, as verl stores them
    uid = np.array(uid.tolist() if hasattr(uid, "tolist") else list(uid), dtype=object)
    grpo, _ = compute_grpo_outcome_advantage(
        padded["rm_scores"].float(), mask, uid, norm_adv_by_std_in_grpo=trainer.config.algorithm.get("norm_adv_by_std_in_grpo", True)
    )
    return grpo[torch.arange(len(grpo)), mask.argmax(dim=1)], grpo * mask


def prepare_attribution(trainer, batch: KVBatchMeta, row_advantage: torch.Tensor, padded: TensorDict) -> AttributionRequest:
    """Segments the rows (tokenizer, sampled ids), picks those to attribute (real, nonzero
    advantage, answer found, reasoning not empty) and writes `oar_segments` for the workers."""
    settings = OARSettings.from_algorithm_config(trainer.config.algorithm)
    response_mask = padded["response_mask"].bool()  # [B, R]
    responses = padded["responses"].long()  # [B, R]
    real = torch.tensor([not tag.get("is_padding", False) for tag in batch.tags]) & response_mask.any(dim=1)  # [B]
    nonzero = real & (row_advantage != 0)
    with marked_timer("oar_segment", trainer.timing_raw):  # on the driver: timing_s/oar_segment
        segments = segment_responses(trainer.tokenizer, responses, response_mask, settings.answer_pattern)
    extra_info = {
        "oar_method": trainer.config.algorithm.adv_estimator,
        "oar_settings": dataclasses.asdict(settings),
        "oar_step": int(trainer.global_steps),
    }
    request = AttributionRequest(batch, extra_info, responses, response_mask, segments, real, nonzero, nonzero & segments.usable)
    fields = TensorDict({SEGMENTS_FIELD: request.segment_field}, batch_size=len(responses))
    return dataclasses.replace(request, batch=tq.kv_batch_put(keys=batch.keys, partition_id=batch.partition_id, fields=fields))


def request_scores(trainer, request: AttributionRequest, use_registered_computation: bool) -> None:
    """Runs the attribution on the actor workers; they write `oar_scores` per row."""
    meta = KVBatchMeta(keys=request.batch.keys, tags=request.batch.tags, partition_id=request.batch.partition_id,
                       fields=["prompts", "responses", SEGMENTS_FIELD], extra_info=dict(request.extra_info))  # fmt: skip
    if use_registered_computation:
        meta.extra_info["computation"] = COMPUTATION
        trainer.actor_rollout_wg.compute_registered(meta)
    else:
        trainer.actor_rollout_wg.compute_oar_scores(meta)


def worker_scores(request: AttributionRequest) -> tuple[torch.Tensor, torch.Tensor]:
    """([B, R] the workers' `oar_scores`, [B] the data-parallel rank that scored each row)."""
    R = request.response_mask.shape[1]
    outputs = tq.kv_batch_get(
        keys=request.batch.keys, partition_id=request.batch.partition_id, select_fields=[SCORES_FIELD, RANK_FIELD]
    ).to_padded_tensor()
    return outputs[SCORES_FIELD].float()[:, :R], outputs[RANK_FIELD].long()


def oracle_scores(trainer, request: AttributionRequest) -> tuple[torch.Tensor, torch.Tensor]:
    """([B, R] the study oracle's scores, [B] zeros: computed on the driver), from the
    arithmetic question in each row's prompt (`algorithm.oar.oracle`, study only)."""
    from oar_verl.study.oracle import find_question
    from oar_verl.study.oracle import oracle_scores as task_oracle_scores

    prompts = tq.kv_batch_get(keys=request.batch.keys, partition_id=request.batch.partition_id, select_fields=["prompts"])["prompts"]
    questions = []
    for row, prompt in enumerate(prompts.unbind(0)):
        question = find_question(trainer.tokenizer.decode(prompt.tolist(), skip_special_tokens=True))
        if question is None and bool(request.attribute[row]):
            raise ValueError(
                f"algorithm.oar.oracle: row {row}'s prompt has no generated arithmetic question (the oracle is for the study's task only)"
            )
        questions.append(question or "0+0")
    scores = task_oracle_scores(trainer.tokenizer, request.responses, request.response_mask, request.segments, questions)
    return scores, torch.zeros(len(questions), dtype=torch.long)


def weights_from_scores(
    trainer, request: AttributionRequest, metrics: dict, row_advantage: torch.Tensor, scores: torch.Tensor, dp_rank: torch.Tensor
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Bi-Level weights [B, R] from the rows' scores ([B, R]; 1 where nothing is
    reweighted), the `oar/*` metrics, and the step's record for `dump_dir` / heatmaps."""
    settings = OARSettings.from_algorithm_config(trainer.config.algorithm)
    segments, attribute, nonzero = request.segments, request.attribute, request.nonzero
    R = request.response_mask.shape[1]
    reasoning = segments.reasoning_mask(R) & attribute[:, None]  # [B, R]
    reshaped = row_weights(scores, reasoning, attribute, quantile=settings.quantile, beta=settings.beta, min_weight=settings.min_weight,
                           preserve_mass=settings.preserve_mass, min_signal=settings.min_signal)  # fmt: skip
    weights, low_signal = reshaped.weights, reshaped.low_signal
    degenerate = nonzero & (~segments.usable | reshaped.degenerate) | low_signal  # [B], left at GRPO weights from here on
    if settings.permute_weights:  # the study's control: same weights, shuffled within each response
        generator = torch.Generator().manual_seed(settings.seed + int(trainer.global_steps))
        weights = permute_within_rows(weights, reasoning & ~degenerate[:, None], generator)
    record = {"responses": request.responses, "response_mask": request.response_mask, "segments": request.segment_field, "found": segments.found,
              "scores": scores, "weights": weights, "row_advantage": row_advantage, "degenerate": degenerate, "low_signal": low_signal, "dp_rank": dp_rank}  # fmt: skip
    metrics.update(
        oar_metrics(
            weights=weights,
            reasoning=reasoning & ~degenerate[:, None],
            real=request.real,
            answer_found=segments.found,
            nonzero=nonzero,
            degenerate=degenerate & ~low_signal,
            low_signal=low_signal,
            attributed=attribute & ~degenerate,
            dp_rank=dp_rank,
        )
    )
    return weights, record


def attribution_weights(
    trainer, batch: KVBatchMeta, metrics: dict, row_advantage: torch.Tensor, padded: TensorDict, use_registered_computation: bool
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Segmentation, worker scores and Bi-Level weights of a batch in one go.

    Args:
        trainer: verl's v1 trainer (its tokenizer, worker group, step, config).
        batch: the step's TransferQueue rows.
        metrics: the step's metrics, extended with `oar/*`.
        row_advantage: [B] each row's GRPO advantage (0: not reweighted).
        padded: the rows' `responses` and `response_mask`, padded to [B, R].
        use_registered_computation: call the workers through verl's worker computations
            (patched verl) instead of the OAR worker subclass's method.
    """
    request = prepare_attribution(trainer, batch, row_advantage, padded)
    if OARSettings.from_algorithm_config(trainer.config.algorithm).oracle:
        return weights_from_scores(trainer, request, metrics, row_advantage, *oracle_scores(trainer, request))
    request_scores(trainer, request, use_registered_computation)
    return weights_from_scores(trainer, request, metrics, row_advantage, *worker_scores(request))


def dump_record(trainer, batch: KVBatchMeta, record: dict[str, torch.Tensor]) -> None:
    """Writes the step's record, with the rows' prompts (`prompts` [B, P] right-padded,
    `prompt_lengths` [B]), to `algorithm.oar.dump_dir`/step_N.pt when set; with several
    updates a step (`parameter_sync_step` > 1), update k's to step_N_k.pt."""
    directory = OARSettings.from_algorithm_config(trainer.config.algorithm).dump_dir
    if directory:
        prompts = tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id, select_fields=["prompts"])["prompts"]
        lengths = torch.tensor([len(row) for row in prompts.unbind(0)])
        record = {**record, "prompts": prompts.to_padded_tensor(0), "prompt_lengths": lengths}
        update = f"_{trainer.local_trigger_step}" if int(getattr(trainer, "parameter_sync_step", 1)) > 1 else ""
        path = Path(directory) / f"step_{trainer.global_steps}{update}.pt"
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({name: tensor.cpu() for name, tensor in record.items()}, path)


# verl with the upstream patches ------------------------------------------------------------


def pre_advantage_step(trainer, batch: KVBatchMeta, metrics: dict) -> KVBatchMeta:
    """Writes `oar_weights` (nested [R_i] per row) for the estimator, which declares it."""
    with marked_timer("oar_attribution", trainer.timing_raw):
        data = tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id, select_fields=["uid", "rm_scores", "responses", "response_mask"])
        nested_mask = data["response_mask"]
        padded = data.to_padded_tensor()
        row_advantage, grpo = grpo_row_advantage(trainer, padded)
        weights, record = attribution_weights(trainer, batch, metrics, row_advantage, padded, use_registered_computation=True)
        dump_record(
            trainer, batch, {**record, "grpo_advantages": grpo, "advantages": grpo * weights, "path": torch.tensor(1), "fused": torch.tensor(False)}
        )
        metrics["oar/fused"] = 0.0  # verl's pre-advantage step comes after its own log-prob pass
        publish_heatmaps(trainer, batch, record)
        fields = TensorDict({WEIGHTS_FIELD: response_to_nested(weights, nested_mask)}, batch_size=len(weights))
        return tq.kv_batch_put(keys=batch.keys, partition_id=batch.partition_id, fields=fields)


# verl 0.9.1 as released ---------------------------------------------------------------------


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


class OARStepBypassed(RuntimeError):
    """verl ran a training step with an OAR estimator without the OAR step."""


def _verl_class(trainer) -> type:
    """The verl trainer class an OAR trainer (class or instance) extends."""
    own = trainer if isinstance(trainer, type) else type(trainer)
    return next(cls for cls in own.__mro__ if cls.__module__.startswith("verl."))


class OARStep:
    """The OAR step, mixed into verl's v1 trainer classes (`OARTrainerSync`,
    `OARTrainerColocateAsync`, `OARTrainerSeparateAsync`): one implementation of the
    methods it extends (`step`, `_init_resource_pool_mgr`, `_compute_old_log_prob`,
    `_compute_advantage`); a run with another estimator gets verl's own class instead
    (`__new__`). A trainer class
    supplies only its actor worker class with the attribution role (`_oar_worker_class`)
    and, where its actors hold newer weights than pi_old at the advantage step,
    `_old_policy_weights`.

    With `oar_g` (or `oar_p` in `taylor` mode) and `algorithm.oar.fuse_log_probs` (the
    default), the old-log-prob step is answered by fused attribution: the rows are segmented
    before it (rewards are known by then), the actor workers return verl's `log_probs` /
    `entropy` and the scores from one clean pass, and verl's own code turns them into
    `old_log_probs`, `entropy` and its metrics; the advantage step then only reads the
    scores. Unfused (other OAR-P modes, `fuse_log_probs=false`, verl taking the rollout's
    log-probs under `algorithm.rollout_correction.bypass_mode`, or an actor whose
    `router_replay` records or replays MoE routes in its log-prob pass), the advantage step runs
    the attribution; the actor's weights are the same at both steps (the update comes after
    them), so either way the scores are those of the policy the update starts from, which in
    the async modes may be newer than the one that sampled the responses. In separate_async
    (several updates a step, `parameter_sync_step`) verl computes every update's
    `old_log_probs` with pi_old, the weights of the step's first update, and so do the
    scores, fused or not.

    Never silently off: each training step (`step`, one or more of verl's `_step_once`)
    must have run the OAR advantage step once per `_step_once`; otherwise the run stops with
    `OARStepBypassed`, naming what verl called instead.
    """

    _oar_fused: AttributionRequest | None = None
    _oar_steps_done = 0  # OAR advantage steps run within the current training step
    _oar_worker_class: type = OARActorRolloutRefWorker

    def __new__(cls, config=None, *args, **kwargs):
        """verl's own trainer class for a run whose estimator is not OAR's: a plain GRPO or
        PPO run with oar_verl installed runs verl's classes (and verl's workers) unchanged.
        (Without a config, as when unpickled, an OAR trainer.)"""
        if config is not None and not uses_oar(config):
            return _verl_class(cls)(config, *args, **kwargs)
        return super().__new__(cls)

    def step(self, metrics: dict, timing_raw: dict) -> KVBatchMeta:
        self._oar_steps_done = 0
        batch = super().step(metrics, timing_raw)
        expected = int(getattr(self, "parameter_sync_step", 1))
        if self._oar_steps_done != expected:
            raise OARStepBypassed(
                f"algorithm.adv_estimator={self.config.algorithm.adv_estimator}: training step {self.global_steps} ran "
                f"{self._oar_steps_done} OAR advantage step(s) for {expected} update(s): verl's {_verl_class(self).__name__}."
                "_step_once did not call `_compute_advantage`, the method oar_verl overrides, so the advantages would be "
                "plain GRPO's. This verl's trainer pipeline is not the one oar_verl was tested with (see oar_verl/integration/verl_internals.py)."
            )
        return batch

    def _init_resource_pool_mgr(self):
        super()._init_resource_pool_mgr()
        for role in ACTOR_ROLES:  # the actor workers gain the attribution role
            if role in self.role_worker_mapping:
                self.role_worker_mapping[role] = ray.remote(self._oar_worker_class)

    def _old_policy_weights(self) -> contextlib.AbstractContextManager:
        """The actors hold pi_old's weights inside the block (they already do here)."""
        return contextlib.nullcontext()

    def _compute_old_log_prob(self, batch: KVBatchMeta, metrics: dict) -> KVBatchMeta:
        self._oar_fused = None
        if not fuses_log_probs(self.config):
            return super()._compute_old_log_prob(batch, metrics)
        with marked_timer("oar_attribution", self.timing_raw):
            data = tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id, select_fields=["uid", "rm_scores", "responses", "response_mask"])
            padded = data.to_padded_tensor()
            row_advantage, _ = grpo_row_advantage(self, padded)
            request = prepare_attribution(self, batch, row_advantage, padded)
        fused_keys = {**request.extra_info, FUSED_KEY: True}
        request.batch.extra_info.update(fused_keys)
        try:
            output = super()._compute_old_log_prob(request.batch, metrics)
        finally:
            for key in fused_keys:
                request.batch.extra_info.pop(key, None)
        self._oar_fused = request
        return output

    def _compute_advantage(self, batch: KVBatchMeta, metrics: dict) -> KVBatchMeta:
        with _estimator(self.config, "grpo"):
            batch = super()._compute_advantage(batch, metrics)
        with marked_timer("oar_attribution", self.timing_raw):
            data = tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id, select_fields=["advantages", "responses", "response_mask"])
            nested_mask = data["response_mask"]
            padded = data.to_padded_tensor()
            advantages = padded["advantages"].float()  # [B, R]
            mask = padded["response_mask"].bool()
            row_advantage = advantages[torch.arange(len(advantages)), mask.float().argmax(dim=1)]  # [B]
            fused, self._oar_fused = self._oar_fused, None
            if fused is not None and list(fused.batch.keys) == list(batch.keys):  # scores came with old_log_probs
                weights, record = weights_from_scores(self, fused, metrics, row_advantage, *worker_scores(fused))
            else:
                with self._old_policy_weights():
                    weights, record = attribution_weights(self, batch, metrics, row_advantage, padded, use_registered_computation=False)
            dump_record(
                self,
                batch,
                {
                    **record,
                    "grpo_advantages": advantages,
                    "advantages": advantages * weights * mask,
                    "path": torch.tensor(0),
                    "fused": torch.tensor(fused is not None),
                },
            )
            metrics["oar/fused"] = float(fused is not None)
            self._oar_steps_done += 1
            publish_heatmaps(self, batch, record)
            reshaped = response_to_nested(advantages * weights * mask, nested_mask)
            output = TensorDict({"advantages": reshaped, "returns": reshaped.clone()}, batch_size=len(advantages))
            return tq.kv_batch_put(keys=batch.keys, partition_id=batch.partition_id, fields=output)


class SeparateAsyncOARStep(OARStep):
    """The OAR step of verl's separate asynchronous v1 trainer (standalone rollout replicas,
    several updates a step)."""

    _oar_worker_class = OARDetachActorWorker

    @contextlib.contextmanager
    def _old_policy_weights(self):
        """After a step's first update the actors hold newer weights than pi_old: set them
        aside, restore pi_old (which verl's `_compute_old_log_prob` saved as slot 0 at the
        first update) for the block, and put them back, as verl's own old-log-prob step
        does. Under `bypass_mode` verl keeps no pi_old: the block sees the current weights."""
        if self.local_trigger_step == 0 or takes_rollout_log_probs(self.config):
            yield
            return
        current = self.local_trigger_step
        self.actor_rollout_wg.save_model_to_cpu(current)
        self.actor_rollout_wg.restore_model_from_cpu(0)
        try:
            yield
        finally:
            self.actor_rollout_wg.restore_model_from_cpu(current)
            self.actor_rollout_wg.clear_cpu_model(current)


OAR_TRAINER_NAMES = {"sync": "OARTrainerSync", "colocate_async": "OARTrainerColocateAsync", "separate_async": "OARTrainerSeparateAsync"}
_OAR_TRAINERS: dict[str, tuple[type, type]] = {}


def oar_trainers() -> dict[str, tuple[type, type]]:
    """verl trainer mode -> (verl's class, the class with the OAR step that replaces it in
    verl's registry: `verl_hooks.install_oar_step`), built on first use.

    The OAR classes (`OARTrainerSync`, `OARTrainerColocateAsync`, `OARTrainerSeparateAsync`,
    also attributes of this module) subclass verl's v1 trainers, which this module does not
    import at its top: importing verl's trainers runs the plugin's hook that installs these
    classes, and a module that imported them first would be half-defined when it runs."""
    if not _OAR_TRAINERS:
        from verl.trainer.ppo.v1.trainer_colocate_async import PPOTrainerColocateAsync
        from verl.trainer.ppo.v1.trainer_separate_async import PPOTrainerSeparateAsync
        from verl.trainer.ppo.v1.trainer_sync import PPOTrainerSync  # may run the hook, which calls back here

        steps = {"sync": (OARStep, PPOTrainerSync), "colocate_async": (OARStep, PPOTrainerColocateAsync),
                 "separate_async": (SeparateAsyncOARStep, PPOTrainerSeparateAsync)}  # fmt: skip
        for mode, (step, verl_class) in steps.items():
            if mode not in _OAR_TRAINERS:
                name = OAR_TRAINER_NAMES[mode]
                doc = f"verl's {verl_class.__name__} with the OAR step."
                _OAR_TRAINERS[mode] = (verl_class, type(name, (step, verl_class), {"__module__": __name__, "__qualname__": name, "__doc__": doc}))
    return _OAR_TRAINERS


def __getattr__(name: str) -> type:
    """The OAR trainer classes by name (`from ... import OARTrainerSync`, unpickling)."""
    for mode, class_name in OAR_TRAINER_NAMES.items():
        if name == class_name:
            return oar_trainers()[mode][1]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
