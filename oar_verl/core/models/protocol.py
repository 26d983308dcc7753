"""What the attribution methods need of a model: the `ModelParts` protocol every backend's
adapter implements (`hf.HFParts`: Hugging Face models, plain or FSDP2-sharded;
`megatron.MegatronParts`: megatron-core's `GPTModel`).

Attribution needs logits at a few target positions only, never [N, L, V]: it runs the
backbone (the model without its head) on input embeddings to hidden states [N, L, H] and
applies the output head to the gathered target positions. Every reduction over the
vocabulary goes through the parts (`log_softmax`, `vocab_sum`, `token_values`), so a
backend whose head is split over the vocabulary (megatron-core's tensor parallelism)
reduces across its shards instead of gathering them.
"""

from __future__ import annotations

import contextlib
from typing import Any, Protocol

import torch
from torch import nn


class ModelParts(Protocol):
    """The adapter of one model. `model` is what the engine holds (eval mode is set on it);
    `vocab_parallel` is True when `logits` gives a shard of the vocabulary."""

    model: nn.Module
    vocab_parallel: bool

    def materialized(self) -> contextlib.AbstractContextManager:
        """One model pass with the parameters used outside the decoder layers gathered (a
        no-op where parameters are resident)."""

    def gathered_through_backward(self) -> contextlib.AbstractContextManager:
        """Inside `materialized()`: one forward's graph can be backpropagated several times."""

    def activation_checkpointing(self) -> contextlib.AbstractContextManager:
        """A pass with gradients, checkpointed as the model is in training."""

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        """[N, L, H] input embeddings of ids [N, L]."""

    def hidden_states(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        """[N, L, H] last hidden states of input embeddings [N, L, H] in verl's left-padded layout."""

    def hidden_states_and_cache(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor, past_key_values: Any = None
    ) -> tuple[torch.Tensor, Any]:
        """([N, L, H] hidden states of ids [N, L], a cache of their prefix); with
        `past_key_values` (the first M positions), `attention_mask` [N, M + L] covers both.
        The cache supports `crop`, `batch_select_indices` and `batch_repeat_interleave`."""

    def logits(self, hidden: torch.Tensor, upcast: bool = True) -> torch.Tensor:
        """[..., V] logits of hidden states [..., H] (V: this rank's shard when `vocab_parallel`)."""

    def log_softmax(self, logits: torch.Tensor) -> torch.Tensor:
        """[..., V] log-probabilities of logits [..., V] over the whole vocabulary."""

    def vocab_sum(self, values: torch.Tensor) -> torch.Tensor:
        """[...] the sum over the whole vocabulary of per-vocabulary values [..., V]."""

    def token_values(self, values: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """[...] the values [..., V] at token ids [...]."""
