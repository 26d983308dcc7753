"""The attribution role on verl's actor workers.

`compute_oar_scores(worker, data)` runs OAR-P or OAR-G (`oar_verl.core`) with the actor
engine's own model: the FSDP2-sharded (or Megatron-parallel) parameters that produced
`old_log_probs`, in the engine's eval mode (offloaded parameters brought back), through the
engine family's adapter (`backends`). Each data-parallel rank scores its share of the rows
(tensor-parallel ranks share theirs); ranks keep the same number of model passes (FSDP
gathers and tensor-parallel reductions are collective). On a verl with worker computations (patches/verl-0.9.1/0006) it is registered
as one; on verl 0.9.1 as released, `OARWorkerRole` mixed into verl's actor worker classes
carries it (`OARActorRolloutRefWorker`, `OARDetachActorWorker` for separate_async).

Inputs, per row (TransferQueue fields):
    prompts [P_i], responses [R_i]  (nested, unpadded), int64
    oar_segments [4] int64: reasoning_end, answer_start, answer_end, attribute (0/1)
Batch-level (extra_info): oar_method ("oar_p" | "oar_g"), oar_settings (dict of
`OARSettings`), oar_step (int, offsets the OAR-G noise seed).
Output: oar_scores [R_i] float32 per row (nested), oar_dp_rank int64 per row (the
data-parallel rank that held it, for the `oar/ranks/*` metric).

Fused attribution (`algorithm.oar.fuse_log_probs`, verl 0.9.1 path; OAR-G and OAR-P taylor):
the trainer sends its old-log-prob request with `oar_fused` set;
`OARWorkerRole.compute_log_prob` then answers it with the method's
`attribute_with_log_probs` (`core.attribution.fused_attribution`): verl's `log_probs` and `entropy`
(at the request's `temperature`, nested [P_i + R_i] as verl's model outputs are) and
`oar_scores` from the same clean pass. The numbers are verl's: the passes run in the
precision the engine runs its forward in, and the log-probs and entropies come from verl's
own functions (`backends`) on logits at the temperature taken as verl takes them. The fused
pass runs the model outside the engine's forward, so it neither records nor replays MoE
routes: the trainer never sends a fused request to an actor with `router_replay` on
(`trainer.fuses_log_probs`), and unfused requests go to verl's own `compute_log_prob`.
"""

from __future__ import annotations

import contextlib
import dataclasses

import torch
import torch.distributed as dist
from tensordict import TensorDict
from verl.experimental.separation.engine_workers import DetachActorWorker
from verl.single_controller.base.decorator import make_nd_compute_dataproto_dispatch_fn, register
from verl.utils import tensordict_utils as tu
from verl.utils.device import get_device_id
from verl.utils.profiler import DistProfiler
from verl.workers.engine_workers import ActorRolloutRefWorker

from oar_verl.core.attribution import attribute, fused_attribution
from oar_verl.core.attribution.base import max_over_ranks
from oar_verl.core.layout import ResponseBatch
from oar_verl.core.spans import Segments
from oar_verl.integration.backends import engine_adapter
from oar_verl.integration.config import OARSettings
from oar_verl.integration.engine_attribution import EngineAttribution, RowSpec, log_prob_pass_loss, row_fields

SEGMENTS_FIELD = "oar_segments"
SCORES_FIELD = "oar_scores"
RANK_FIELD = "oar_dp_rank"  # the data-parallel rank that scored the row
FUSED_KEY = "oar_fused"  # extra_info flag of an old-log-prob request answered by fused OAR-G
COMPUTATION = "oar_scores"  # its name among verl's worker computations, where verl has them


def _rows(nested: torch.Tensor) -> list[list[int]]:
    """The rows of a nested (jagged) tensor of token ids as lists."""
    return [row.tolist() for row in nested.unbind(0)]


def _method_config(worker, data: TensorDict, method: str, settings: OARSettings):
    """The request's core config; OAR-G's seed fresh each step and on each rank."""
    config = settings.method_config(method, worker.actor.model_config.tokenizer.pad_token_id)
    if method == "oar_g":
        rank = dist.get_rank() if dist.is_initialized() else 0
        step = int(tu.get(data, key="oar_step", default=0))
        config = dataclasses.replace(config, seed=settings.seed + 1_000_003 * step + rank)
    return config


def _pad_id(worker) -> int:
    """The tokenizer's pad id (0 when it has none): fills empty responses and dummy rows."""
    pad = worker.actor.model_config.tokenizer.pad_token_id
    return pad if pad is not None else 0


def _segments(data: TensorDict) -> torch.Tensor:
    """[b, 4] int64 `oar_segments` of the request's rows."""
    segments = data[SEGMENTS_FIELD]
    return (segments.to_padded_tensor(0) if segments.is_nested else segments).long()


def compute_oar_scores(worker: ActorRolloutRefWorker, data: TensorDict) -> TensorDict | None:
    """OAR scores of this rank's rows with `worker`'s actor engine, by the project's own
    forward (`oar_verl.core`): unfused requests, and fused ones on Megatron actors."""
    method = tu.get(data, key="oar_method")
    settings = OARSettings(**tu.get(data, key="oar_settings"))
    engine = worker.actor.engine
    adapter = engine_adapter(engine)
    config = _method_config(worker, data, method, settings)

    prompts, responses = _rows(data["prompts"]), _rows(data["responses"])
    segments = _segments(data)
    pad = _pad_id(worker)
    device = get_device_id()
    batch = ResponseBatch.from_token_lists(prompts, [r or [pad] for r in responses], pad_token_id=pad, device=device)
    spans = Segments(segments[:, 0], segments[:, 1], segments[:, 2], segments[:, 2] > 0).to(device)
    attribute_rows = (segments[:, 3] > 0).to(device)

    fused = bool(tu.get(data, key=FUSED_KEY, default=False))
    with engine.eval_mode(), adapter.precision():
        if fused:
            attribute_with_log_probs = fused_attribution(config)
            if attribute_with_log_probs is None:
                raise ValueError(f"{method} with {config}: no fused log-prob pass; the trainer must not request one")
            temperature = float(tu.get(data, key="temperature", default=1.0))
            result = attribute_with_log_probs(
                adapter.model,
                batch,
                spans,
                config,
                rows=attribute_rows,
                temperature=temperature,
                log_prob_fn=adapter.log_prob_fn,
                sync_passes=max_over_ranks,
            )
            scores = result.scores
        else:
            scores = attribute(adapter.model, batch, spans, config, rows=attribute_rows, sync_passes=max_over_ranks)
    lengths = [len(r) for r in responses]
    fields = {
        SCORES_FIELD: _nested_responses(scores, lengths),
        RANK_FIELD: torch.full((len(lengths),), engine.get_data_parallel_rank()),
    }  # [b, R_i], [b]
    if fused:  # verl's model-output layout: [P_i + R_i] per row, position j holding token j + 1's value
        prompt_lengths = [len(p) for p in prompts]
        fields["log_probs"] = _nested_sequences(result.log_probs, prompt_lengths, lengths)
        fields["entropy"] = _nested_sequences(result.entropy, prompt_lengths, lengths)
    output = TensorDict(fields, batch_size=[len(prompts)])
    return output if engine.is_mp_src_rank_with_outputs() else None


def engine_log_prob_with_scores(worker: ActorRolloutRefWorker, data: TensorDict, verl_log_prob) -> TensorDict | None:
    """A fused request on an FSDP actor: verl's own log-prob pass (`verl_log_prob(data)`,
    recording the clean targets) and the attribution passes, both through verl's engine
    (`engine_attribution`); verl's output with `oar_scores` and `oar_dp_rank` added."""
    method = tu.get(data, key="oar_method")
    settings = OARSettings(**tu.get(data, key="oar_settings"))
    config = _method_config(worker, data, method, settings)
    engine = worker.actor.engine
    prompts, responses = _rows(data["prompts"]), _rows(data["responses"])
    segments = _segments(data)
    for key, values in row_fields([len(p) for p in prompts], segments).items():
        data[key] = values
    packed = bool(worker.actor.model_config.get("use_remove_padding", False))
    attribution = EngineAttribution(engine, config, packed, _pad_id(worker))
    with (
        attribution.clean_target_recorder() as recorder,
        log_prob_pass_loss(worker.actor, data, recorder) if recorder is not None else contextlib.nullcontext(),
    ):
        output = verl_log_prob(data)
    rows = [
        RowSpec(b, p + r, len(p), *segments[b, :3].tolist())
        for b, (p, r, flag) in enumerate(zip(prompts, responses, segments[:, 3].tolist()))
        if flag
    ]
    R = max((len(r) for r in responses), default=1)
    scores = attribution.scores(rows, len(prompts), R, recorder.clean if recorder is not None else None)
    if output is None:
        return None
    output[SCORES_FIELD] = _nested_responses(scores, [len(r) for r in responses])
    output[RANK_FIELD] = torch.full((len(prompts),), engine.get_data_parallel_rank())
    return output


def _nested_responses(values: torch.Tensor, lengths: list[int]) -> torch.Tensor:
    """[b, R] padded per-response values -> nested [R_i]."""
    return torch.nested.as_nested_tensor([row[:n] for row, n in zip(values.cpu(), lengths)], layout=torch.jagged)


def _nested_sequences(values: torch.Tensor, prompt_lengths: list[int], lengths: list[int]) -> torch.Tensor:
    """[b, R] per-response-token values -> nested [P_i + R_i] in the layout of verl's model
    outputs (`verl.workers.utils.padding.response_from_nested` reads them back)."""
    rows = []
    for row, p, n in zip(values.cpu(), prompt_lengths, lengths):
        sequence = torch.zeros(p + n, dtype=row.dtype)
        sequence[p - 1 : p - 1 + n] = row[:n]
        rows.append(sequence)
    return torch.nested.as_nested_tensor(rows, layout=torch.jagged)


class OARWorkerRole:
    """The OAR attribution role, mixed into verl's actor worker classes (verl 0.9.1, where
    workers cannot gain a computation without a subclass)."""

    @register(dispatch_mode=make_nd_compute_dataproto_dispatch_fn(mesh_name="actor"))
    def compute_oar_scores(self, data: TensorDict) -> TensorDict | None:
        return compute_oar_scores(self, data)

    @register(dispatch_mode=make_nd_compute_dataproto_dispatch_fn(mesh_name="actor"))
    def compute_log_prob(self, data: TensorDict) -> TensorDict | None:
        """verl's log-prob pass, or fused attribution when the request carries `oar_fused`."""
        if tu.get(data, key=FUSED_KEY, default=False):
            return self._fused_log_prob(data)
        return super().compute_log_prob(data)

    @DistProfiler.annotate(color="blue", role="actor_compute_log_prob")  # as verl's compute_log_prob is profiled
    def _fused_log_prob(self, data: TensorDict) -> TensorDict | None:
        if self.actor.engine.engine_config.strategy == "megatron":
            return compute_oar_scores(self, data)
        return engine_log_prob_with_scores(self, data, super().compute_log_prob)


class OARActorRolloutRefWorker(OARWorkerRole, ActorRolloutRefWorker):
    """verl's actor/rollout/ref worker (sync and colocate_async trainers) with the OAR role."""


class OARDetachActorWorker(OARWorkerRole, DetachActorWorker):
    """verl's separate_async actor worker (keeps pi_old's weights in host memory across a
    `parameter_sync_step` cycle) with the OAR role."""
