"""What the attribution role needs from each verl engine family, one adapter each: the model
the attribution methods drive (`oar_verl.core.models.model_parts` picks its parts), the precision
context the engine runs its forward in, and verl's own log-prob and entropy functions for
the fused log-prob pass. The OAR step and the attribution methods are the same for all.

- FSDP (`fsdp`, `fsdp2`): the FSDP-wrapped Hugging Face model and the engine's autocast,
  for the unfused requests (a fused request runs through verl's engine itself:
  `engine_attribution`).
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
from verl.utils.device import get_device_name

from oar_verl.core.attribution.chunks import LogProbFn


@dataclass(frozen=True)
class EngineAdapter:
    """model: what the attribution methods run on; precision: a new context of the
    engine's forward precision per call; log_prob_fn: verl's log-probs and entropies of
    logits at the temperature, for the project's own fused pass (Megatron; None on FSDP,
    whose fused pass is verl's own: `engine_attribution`)."""

    model: nn.Module
    precision: Callable[[], contextlib.AbstractContextManager]
    log_prob_fn: LogProbFn | None


def engine_adapter(engine) -> EngineAdapter:
    """The adapter of a verl actor engine (FSDP or Megatron)."""
    if engine.engine_config.strategy == "megatron":
        return _megatron_adapter(engine)
    return EngineAdapter(engine.module, lambda: engine_autocast(engine), None)


def engine_autocast(engine) -> contextlib.AbstractContextManager:
    """The autocast verl's FSDP engine runs its forward in (`forward_step`): the mixed
    precision's parameter dtype, none for float32."""
    dtype = getattr(engine, "_autocast_dtype", torch.bfloat16)
    return contextlib.nullcontext() if dtype == torch.float32 else torch.autocast(device_type=get_device_name(), dtype=dtype)


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
