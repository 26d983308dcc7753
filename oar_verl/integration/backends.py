"""What the attribution role needs from each verl engine family, one adapter each: the model
the attribution methods drive (`oar_verl.core.models.model_parts` picks its parts), the precision
context the engine runs its forward in, and verl's own log-prob and entropy functions for
the fused log-prob pass. The OAR step and the attribution methods are the same for all.

- FSDP (`fsdp`, `fsdp2`): the FSDP-wrapped Hugging Face model; the engine's autocast;
  `logprobs_from_logits` and the engine's entropy function (`prepare_model_outputs`).
- Megatron: the engine's single model chunk (a megatron-core `GPTModel` in megatron's DDP
  and Float16Module wrappers; virtual pipeline stages are refused); no autocast (megatron
  holds its parameters in the compute dtype and returns float32 logits); verl's
  vocabulary-parallel log-probs and entropy (`_lm_head_logits_processor`), on this rank's
  vocabulary shard.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from verl.utils import torch_functional as verl_F
from verl.utils.device import get_device_name

from oar_verl.core.attribution.chunks import LogProbFn


@dataclass(frozen=True)
class EngineAdapter:
    """model: what the attribution methods run on; precision: a new context of the
    engine's forward precision per call; log_prob_fn: verl's log-probs and entropies of
    logits at the temperature (the fused pass)."""

    model: nn.Module
    precision: Callable[[], contextlib.AbstractContextManager]
    log_prob_fn: LogProbFn


def engine_adapter(engine, use_remove_padding: bool) -> EngineAdapter:
    """The adapter of a verl actor engine (FSDP or Megatron)."""
    if engine.engine_config.strategy == "megatron":
        return _megatron_adapter(engine)
    return EngineAdapter(engine.module, lambda: engine_autocast(engine), verl_log_prob_fn(engine, use_remove_padding))


def engine_autocast(engine) -> contextlib.AbstractContextManager:
    """The autocast verl's FSDP engine runs its forward in (`forward_step`): the mixed
    precision's parameter dtype, none for float32."""
    dtype = getattr(engine, "_autocast_dtype", torch.bfloat16)
    return contextlib.nullcontext() if dtype == torch.float32 else torch.autocast(device_type=get_device_name(), dtype=dtype)


def verl_log_prob_fn(engine, use_remove_padding: bool) -> LogProbFn:
    """verl's log-probs and entropies of logits at the temperature, by the functions its FSDP
    engine uses (`prepare_model_outputs`): `logprobs_from_logits`; for the entropy, with
    remove-padding, the engine's `compute_entropy_from_logits` (`entropy_from_logits` or,
    with `entropy_from_logits_with_chunking`, the chunked one with the engine's
    `entropy_from_logits_chunk_size`; compiled under `use_torch_compile`) on the logits as
    rows [N, V], as the engine calls it on its packed tokens; without, `entropy_from_logits`."""
    config = engine.engine_config

    def packed_entropy(logits: torch.Tensor) -> torch.Tensor:
        """[N, S] entropies of logits [N, S, V], computed on the [N S, V] rows."""
        rows = logits.reshape(-1, logits.shape[-1])
        if config.entropy_from_logits_with_chunking:
            return engine.compute_entropy_from_logits(rows, chunk_size=config.entropy_from_logits_chunk_size).reshape(logits.shape[:-1])
        return engine.compute_entropy_from_logits(rows).reshape(logits.shape[:-1])

    entropy_fn = packed_entropy if use_remove_padding else verl_F.entropy_from_logits

    def log_prob_fn(logits: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return verl_F.logprobs_from_logits(logits, tokens), entropy_fn(logits)

    return log_prob_fn


def _megatron_adapter(engine) -> EngineAdapter:
    from verl.utils.megatron.tensor_parallel import vocab_parallel_entropy, vocab_parallel_entropy_with_chunking, vocab_parallel_log_probs_from_logits

    if len(engine.module) != 1:
        raise ValueError(
            f"actor_rollout_ref.actor.megatron.virtual_pipeline_model_parallel_size: the actor holds {len(engine.module)} model chunks; "
            "attribution needs the whole model in one (pipeline and virtual pipeline parallelism 1)"
        )
    config = engine.engine_config

    def log_prob_fn(logits: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[N, S] log-probs and entropies of this rank's logit shard [N, S, V / tp], as
        verl's Megatron engine takes them (entropy on the logits, log-probs on a copy)."""
        log_probs = vocab_parallel_log_probs_from_logits(logits.clone(), tokens)
        if config.entropy_from_logits_with_chunking:
            return log_probs, vocab_parallel_entropy_with_chunking(logits, chunk_size=config.entropy_from_logits_chunk_size)
        return log_probs, vocab_parallel_entropy(logits)

    return EngineAdapter(engine.module[0], contextlib.nullcontext, log_prob_fn)
