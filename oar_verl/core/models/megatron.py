"""The attribution adapter of a megatron-core `GPTModel` (verl's Megatron engine), beside the
Hugging Face / FSDP2 one (`hf.HFParts`): the same `ModelParts`, for a model that is
sequence-first and whose head is split over the vocabulary by tensor parallelism.

- Layout: the methods speak batch-first ([N, L, H]); the decoder runs sequence-first
  ([L, N, H]) on the rows as the HF adapter lays them out (real tokens first, so that
  megatron's rotary positions 0..n-1 are the rows' position ids), with a boolean mask
  [N, 1, L, L] (True = masked: causal or padding). Under sequence parallelism the decoder's
  input is scattered over the tensor-parallel ranks and its output gathered back.
- Vocabulary: `logits` gives this rank's shard [..., V / tp] of the head's vocabulary
  (verl's Megatron engine takes its log-probs over the same, padded, vocabulary), computed
  for the hidden states it is given only. Every reduction over the vocabulary is a
  tensor-parallel one: a log-softmax from all-reduced maxima and sums (its backward
  all-reduces one sum per position), sums and token lookups from all-reduced partial sums;
  the vocabulary is never gathered.
- Gradients: only to the tensor the methods mark (the embedding output); the parameters'
  `.grad` / `main_grad` and megatron's gradient hooks are not touched (`autograd.grad`).
- Collectives: tensor-parallel ranks hold the same rows, so they run the same program;
  data-parallel ranks keep in step by the methods' synchronised steps. Parameters are
  resident (megatron's distributed optimizer shards optimizer state only), so a pass needs
  no gather (`materialized` is empty).
- OAR-P's key/value cache: the cache is the clean prefix's tokens, and a perturbed pass
  recomputes the prefix (megatron's inference contexts are built for generation); its
  passes stay within the token budget, which counts prefix and suffix.

Pipeline parallelism (a model without its embedding or its head) and context parallelism
are refused here, and before Ray by the settings check.
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
import torch.utils.checkpoint
from megatron.core.models.gpt import GPTModel
from megatron.core.tensor_parallel import (
    copy_to_tensor_model_parallel_region,
    gather_from_sequence_parallel_region,
    reduce_from_tensor_model_parallel_region,
    scatter_to_sequence_parallel_region,
)
from torch import nn

from oar_verl.core.models.shared import gather_columns, real_tokens_first


def unwrap(model: nn.Module) -> GPTModel:
    """The `GPTModel` inside megatron's wrappers (DDP, Float16Module), or a ValueError."""
    module = model
    while not isinstance(module, GPTModel) and isinstance(getattr(module, "module", None), nn.Module):
        module = module.module
    if not isinstance(module, GPTModel):
        raise ValueError(f"model: expected a megatron-core GPTModel (or a wrapper of one), got {type(model).__name__}")
    return module


def megatron_parts(model: nn.Module) -> MegatronParts:
    """The parts of a megatron-core GPT model that holds its whole depth (no pipeline
    stages) with no context parallelism."""
    gpt = unwrap(model)
    if not (gpt.pre_process and gpt.post_process):
        raise ValueError(
            "model: a pipeline stage of a megatron-core GPTModel (attribution needs the embedding and the head "
            "on one rank: actor.megatron.pipeline_model_parallel_size=1)"
        )
    if gpt.config.context_parallel_size > 1:
        raise ValueError("model: megatron-core context parallelism is not supported by attribution (actor.megatron.context_parallel_size=1)")
    if gpt.position_embedding_type not in ("rope", "learned_absolute", "none"):
        raise ValueError(f"model: position embedding {gpt.position_embedding_type!r} is not supported by attribution")
    embedding = gpt.embedding.word_embeddings
    return MegatronParts(gpt=gpt, model=model, tp_group=embedding.tp_group, vocab_start=embedding.vocab_start_index)


@dataclass
class PrefixCache:
    """The clean prefix a perturbed OAR-P pass recomputes: token ids and position ids [N, M]
    (the methods use it as Hugging Face's cache: crop, select rows, repeat rows)."""

    input_ids: torch.Tensor
    position_ids: torch.Tensor

    def crop(self, length: int) -> None:
        self.input_ids, self.position_ids = self.input_ids[:, :length], self.position_ids[:, :length]

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self.input_ids, self.position_ids = self.input_ids[indices], self.position_ids[indices]

    def batch_repeat_interleave(self, repeats: int) -> None:
        self.input_ids = self.input_ids.repeat_interleave(repeats, dim=0)
        self.position_ids = self.position_ids.repeat_interleave(repeats, dim=0)


class _VocabParallelLogSoftmax(torch.autograd.Function):
    """log_softmax over a vocabulary split along the last dimension across `group`:
    [..., V / tp] logits -> this shard's [..., V / tp] log-probabilities. The backward
    all-reduces one sum per position: dz = g - softmax(z) * sum_V g."""

    @staticmethod
    def forward(ctx, logits: torch.Tensor, group) -> torch.Tensor:
        maximum = logits.detach().amax(dim=-1, keepdim=True)
        dist.all_reduce(maximum, op=dist.ReduceOp.MAX, group=group)
        shifted = logits - maximum
        total = shifted.exp().sum(dim=-1, keepdim=True)
        dist.all_reduce(total, group=group)
        log_probs = shifted - total.log()
        ctx.save_for_backward(log_probs)
        ctx.group = group
        return log_probs

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (log_probs,) = ctx.saved_tensors
        total = grad.sum(dim=-1, keepdim=True)
        dist.all_reduce(total, group=ctx.group)
        return grad - log_probs.exp() * total, None


@dataclass(frozen=True)
class MegatronParts:
    """gpt: the GPTModel; model: what the engine holds (its wrapper; eval mode is set on
    it); tp_group: the tensor-parallel group; vocab_start: the first token id of this rank's
    vocabulary shard."""

    gpt: GPTModel
    model: nn.Module
    tp_group: dist.ProcessGroup | None
    vocab_start: int

    @property
    def tensor_parallel(self) -> int:
        return self.tp_group.size() if self.tp_group is not None else 1

    @property
    def vocab_parallel(self) -> bool:
        """True when `logits` gives a shard of the vocabulary."""
        return self.tensor_parallel > 1

    @contextlib.contextmanager
    def materialized(self):
        yield  # parameters are resident on every rank

    @contextlib.contextmanager
    def gathered_through_backward(self):
        yield

    @contextlib.contextmanager
    def activation_checkpointing(self):
        """A pass with gradients that keeps one decoder layer's activations at a time when
        the model recomputes activations in training (`recompute_granularity` set: megatron
        honours it in training mode only, and attribution runs in eval mode): each layer
        runs under torch's non-reentrant checkpoint, its forward restored after."""
        if self.gpt.config.recompute_granularity is None:
            yield
            return
        layers = list(self.gpt.decoder.layers)
        for layer in layers:
            layer.forward = functools.partial(torch.utils.checkpoint.checkpoint, type(layer).forward.__get__(layer), use_reentrant=False)
        try:
            yield
        finally:
            for layer in layers:
                del layer.forward

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        """[N, L, H] word embeddings of ids [N, L], replicated on the tensor-parallel ranks
        (megatron's vocabulary-parallel lookup, all-reduced; never reduce-scattered)."""
        embedding = self.gpt.embedding.word_embeddings
        if not self.vocab_parallel:
            return F.embedding(input_ids, embedding.weight)
        outside = (input_ids < embedding.vocab_start_index) | (input_ids >= embedding.vocab_end_index)
        local = F.embedding(torch.where(outside, 0, input_ids - embedding.vocab_start_index), embedding.weight)
        local = local.masked_fill(outside[..., None], 0.0)
        return reduce_from_tensor_model_parallel_region(local, group=self.tp_group)

    def hidden_states(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        """[N, L, H] last hidden states (after the final norm) of input embeddings [N, L, H]
        in verl's padded layout (see the module docstring)."""
        L = inputs_embeds.shape[1]
        to_front, back = real_tokens_first(attention_mask)  # [N, L] each
        x = gather_columns(inputs_embeds, to_front)
        valid = attention_mask.gather(1, to_front).bool()  # [N, L]
        if self.gpt.embedding.add_position_embedding:
            x = x + self.gpt.embedding.position_embeddings(position_ids.gather(1, to_front))
        sequence_parallel = self.gpt.config.sequence_parallel and self.tensor_parallel > 1
        padded = -(-L // self.tensor_parallel) * self.tensor_parallel if sequence_parallel else L
        if padded > L:  # whole sequence-parallel shards: padding columns after every row's tokens
            x = F.pad(x, (0, 0, 0, padded - L))
            valid = F.pad(valid, (0, padded - L))
        x = x.transpose(0, 1).contiguous()  # [L', N, H]
        if self.gpt.config.fp32_residual_connection:
            x = x.float()
        causal = torch.ones((padded, padded), dtype=torch.bool, device=x.device).triu(1)  # [L', L'] True above the diagonal
        mask = causal[None, None] | ~valid[:, None, None, :]  # [N, 1, L', L'] True = masked
        rotary = self.gpt.rotary_pos_emb(padded) if self.gpt.position_embedding_type == "rope" else None
        if sequence_parallel:
            x = scatter_to_sequence_parallel_region(x, group=self.tp_group)
        hidden = self.gpt.decoder(hidden_states=x, attention_mask=mask, rotary_pos_emb=rotary)
        if sequence_parallel:
            hidden = gather_from_sequence_parallel_region(hidden, tensor_parallel_output_grad=False, group=self.tp_group)
        return gather_columns(hidden[:L].transpose(0, 1), back)  # [N, L, H]

    def hidden_states_and_cache(self, input_ids, attention_mask, position_ids, past_key_values: PrefixCache | None = None):
        """([N, L, H] hidden states of `input_ids` [N, L], the prefix cache after them); with
        `past_key_values` (the first M positions), `attention_mask` [N, M + L] covers both
        and the prefix is recomputed."""
        if past_key_values is not None:
            input_ids = torch.cat([past_key_values.input_ids, input_ids], dim=1)
            position_ids = torch.cat([past_key_values.position_ids, position_ids], dim=1)
        start = 0 if past_key_values is None else past_key_values.input_ids.shape[1]
        hidden = self.hidden_states(self.embed(input_ids), attention_mask, position_ids)
        return hidden[:, start:], PrefixCache(input_ids, position_ids)

    def logits(self, hidden: torch.Tensor, upcast: bool = True) -> torch.Tensor:
        """[..., V / tp] this rank's shard of the logits of hidden states [..., H] (the head's
        weight applied to these states only), in float32 (float64 for a float64 model)
        whatever `upcast` says: megatron's half-precision wrapper (Float16Module) returns
        its logits in float32, and verl's Megatron engine takes temperature, log-probs and
        entropy on those. In the backward the hidden states' gradient is summed over the
        shards."""
        layer = self.gpt.output_layer
        weight = self.gpt.shared_embedding_or_output_weight() if self.gpt.share_embeddings_and_output_weights else layer.weight
        if self.vocab_parallel:
            hidden = copy_to_tensor_model_parallel_region(hidden, group=self.tp_group)
        logits = F.linear(hidden, weight, getattr(layer, "bias", None))
        return logits.to(torch.promote_types(logits.dtype, torch.float32))

    def log_softmax(self, logits: torch.Tensor) -> torch.Tensor:
        if not self.vocab_parallel:
            return torch.log_softmax(logits, dim=-1)
        return _VocabParallelLogSoftmax.apply(logits, self.tp_group)

    def vocab_sum(self, values: torch.Tensor) -> torch.Tensor:
        """[...] the sum over the whole vocabulary of this shard's values [..., V / tp] (the
        result is replicated; its gradient is taken as each rank's own)."""
        total = values.sum(dim=-1)
        return reduce_from_tensor_model_parallel_region(total, group=self.tp_group) if self.vocab_parallel else total

    def token_values(self, values: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """[...] the values at token ids [...], from the shard that holds each id."""
        if not self.vocab_parallel:
            return values.gather(-1, tokens[..., None])[..., 0]
        local = tokens - self.vocab_start
        outside = (local < 0) | (local >= values.shape[-1])
        picked = values.gather(-1, torch.where(outside, 0, local)[..., None])[..., 0].masked_fill(outside, 0.0)
        return reduce_from_tensor_model_parallel_region(picked, group=self.tp_group)
