"""The parts of a Hugging Face causal LM that attribution drives separately.

Attribution needs logits at a few target positions only, never [N, L, V]: it runs the
backbone (the model without its head) to hidden states [N, L, H] and applies the output
head to the gathered target positions. OAR-G also feeds the backbone input embeddings.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class LMParts:
    """backbone: inputs -> last hidden state [N, L, H]; embeddings: ids [N, L] -> [N, L, H];
    head: [..., H] -> logits [..., V]; logit_softcap: the model's final logit soft-cap;
    model: the whole LM (for FSDP2, the module whose root parameters must be gathered)."""

    backbone: nn.Module
    embeddings: nn.Module
    head: nn.Module
    logit_softcap: float | None
    model: nn.Module

    @contextlib.contextmanager
    def materialized(self) -> Iterator[None]:
        """Runs the block with the model's own parameters gathered.

        The parts are called directly, not through the model's forward. Under FSDP2
        (`fully_shard`) that forward is what gathers the parameters the root module holds
        (embeddings, final norm, head), so they are gathered here and re-sharded after;
        sharded sub-modules (decoder layers) gather their own in their hooks, forward and
        backward. Plain modules need nothing.
        """
        unshard = getattr(self.model, "unshard", None)
        if unshard is None:
            yield
            return
        # What the root's pre-forward does first (idempotent): mark the root, share its state
        # with the sub-modules. torch has no public call for it.
        self.model._get_fsdp_state()._lazy_init()
        unshard()
        try:
            yield
        finally:
            self.model.reshard()

    def hidden_states(
        self,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor,
        *,
        input_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """[N, L, H] last hidden states for ids [N, L] or embeddings [N, L, H]."""
        output = self.backbone(
            input_ids=input_ids,
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            use_cache=False,
        )
        return output.last_hidden_state if hasattr(output, "last_hidden_state") else output[0]

    def hidden_states_and_cache(self, attention_mask, position_ids, input_ids, past_key_values=None):
        """([N, L, H] hidden states of `input_ids` [N, L], the key/value cache after them).

        With `past_key_values` (a cache of the first M positions), `input_ids` are the
        positions after them and `attention_mask` [N, M + L] covers both.
        """
        output = self.backbone(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            use_cache=True,
        )
        return output.last_hidden_state, output.past_key_values

    def idle_pass(self, device: torch.device, backward: bool) -> None:
        """A one-token forward (and backward to the input) whose result is discarded.

        Under FSDP every rank must run the same number of forward and backward passes
        (each gathers the sharded parameters collectively); a rank with less attribution
        work than the others runs these to keep step with them.
        """
        ids = torch.zeros((1, 1), dtype=torch.long, device=device)
        ones = torch.ones_like(ids)
        with self.materialized(), torch.set_grad_enabled(backward):
            embeds = self.embeddings(ids).detach().requires_grad_(backward)
            hidden = self.hidden_states(ones, ids, inputs_embeds=embeds)
            logits = self.logits(hidden[:, -1])
            if backward:
                torch.autograd.grad(logits.sum(), embeds)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """[..., V] logits of hidden states [..., H], in float32 (float64 for a float64 model)."""
        logits = self.head(hidden)
        logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
        if self.logit_softcap:
            logits = torch.tanh(logits / self.logit_softcap) * self.logit_softcap
        return logits


def lm_parts(model: nn.Module) -> LMParts:
    """Splits a Hugging Face causal LM (`...ForCausalLM`) into backbone, embeddings and head."""
    backbone = getattr(model, "base_model", None)
    get_input = getattr(model, "get_input_embeddings", None)
    get_output = getattr(model, "get_output_embeddings", None)
    if backbone is None or backbone is model or get_input is None or get_output is None:
        raise ValueError(
            f"model: expected a Hugging Face causal LM with a base model, input embeddings and an output head, got {type(model).__name__}"
        )
    try:
        embeddings, head = get_input(), get_output()
    except NotImplementedError:
        embeddings = head = None
    if embeddings is None or head is None:
        raise ValueError(f"model: {type(model).__name__} exposes no input embeddings or no output head")
    softcap = getattr(getattr(model, "config", None), "final_logit_softcapping", None)
    return LMParts(backbone, embeddings, head, softcap, model)


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Runs the block with every module in eval mode, then restores each module's mode."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training
