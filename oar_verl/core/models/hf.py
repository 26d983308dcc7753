"""The adapter of a Hugging Face causal LM, plain or FSDP2-sharded (verl's FSDP engines):
`HFParts`, the `ModelParts` of a `...ForCausalLM` split into backbone, embeddings and head.
"""

from __future__ import annotations

import contextlib
import functools
import weakref
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.utils.checkpoint
from torch import nn
from transformers.modeling_layers import GradientCheckpointingLayer

from oar_verl.core.models.shared import gather_columns, real_tokens_first


@dataclass(frozen=True)
class HFParts:
    """backbone: input embeddings [N, L, H] -> last hidden state [N, L, H]; embeddings: ids
    [N, L] -> [N, L, H]; head: [..., H] -> logits [..., V]; logit_softcap: the model's final
    logit soft-cap; model: the whole LM (under FSDP2, the root module).

    Under FSDP2 every parameter gather is a collective that all ranks must issue alike. A
    model pass runs inside `materialized()`, which gathers the parameters the parts use
    outside the decoder layers once, on entry, in a fixed order; inside it `embed` and
    `logits` issue no collective however often they are called, and the decoder layers
    gather their own in their hooks, once per backbone forward and once per backward. So
    ranks stay in step exactly when they run the same sequence of backbone passes, whatever
    their rows: the attribution methods run every rank through the same number of steps of
    the same program (`attribution.base.synchronized_steps`).
    """

    backbone: nn.Module
    embeddings: nn.Module
    head: nn.Module
    logit_softcap: float | None
    model: nn.Module

    def _sharded_modules(self) -> list[nn.Module]:
        """The FSDP2 modules holding the root's, the embeddings' and the head's parameters
        (verl's `apply_fsdp2` wraps an untied model's embeddings and head on their own), each
        once, in that order; none for a plain model."""
        modules: list[nn.Module] = []
        for module in (self.model, self.embeddings, self.head):
            if hasattr(module, "unshard") and all(module is not other for other in modules):
                modules.append(module)
        return modules

    @contextlib.contextmanager
    def materialized(self) -> Iterator[None]:
        """Runs one model pass with the root's, the embeddings' and the head's parameters
        gathered (see the class docstring). A backward inside the block must be the block's
        last use of the embeddings and the head: FSDP reshards every group when a backward
        ends."""
        modules = self._sharded_modules()
        if not modules:
            yield
            return
        _forward_root_once(self.model)
        for module in modules:
            module.unshard()
        try:
            yield
        finally:
            for module in modules:
                module.reshard()

    @contextlib.contextmanager
    def gathered_through_backward(self) -> Iterator[None]:
        """Inside `materialized()`: every FSDP2 group stays gathered when a backward ends, so
        one forward's graph can be backpropagated several times (each backward then runs
        the same collectives on every rank: none for the groups already gathered); on exit
        the groups are resharded and set back to FSDP2's default, resharding after each
        backward (`FSDPModule.set_reshard_after_backward`; verl never changes it)."""
        groups = [module for module in self.model.modules() if hasattr(module, "set_reshard_after_backward")]
        for module in groups:
            module.set_reshard_after_backward(False, recurse=False)
        try:
            yield
        finally:
            for module in groups:
                module.set_reshard_after_backward(True, recurse=False)
                module.reshard()

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        """[N, L, H] input embeddings of ids [N, L] (the module's own forward: no FSDP hook)."""
        return self.embeddings.forward(input_ids)

    def hidden_states(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        """[N, L, H] last hidden states of input embeddings [N, L, H] in verl's padded layout.

        The backbone runs on the rows as verl's FSDP engine lays out a micro-batch: each
        row's real tokens moved to the front, padding after them, so that its kernels see
        the same data as the trainer's own passes (left padding changes low-order bits in
        bf16); the states are moved back to the input's layout.
        """
        to_front, back = real_tokens_first(attention_mask)  # [N, L] each
        output = self.backbone(
            inputs_embeds=gather_columns(inputs_embeds, to_front),
            attention_mask=attention_mask.gather(1, to_front),
            position_ids=position_ids.gather(1, to_front),
            use_cache=False,
        )
        hidden = output.last_hidden_state if hasattr(output, "last_hidden_state") else output[0]
        return gather_columns(hidden, back)

    def hidden_states_and_cache(self, input_ids, attention_mask, position_ids, past_key_values=None):
        """([N, L, H] hidden states of `input_ids` [N, L], the key/value cache after them).

        With `past_key_values` (a cache of the first M positions), `input_ids` are the
        positions after them and `attention_mask` [N, M + L] covers both.
        """
        output = self.backbone(
            inputs_embeds=self.embed(input_ids),
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            use_cache=True,
        )
        return output.last_hidden_state, output.past_key_values

    def logits(self, hidden: torch.Tensor, upcast: bool = True) -> torch.Tensor:
        """[..., V] logits of hidden states [..., H] (the head's own forward: no FSDP hook):
        in float32 (float64 for a float64 model) with `upcast`, else in the head's dtype, as
        the model's forward gives them."""
        logits = self.head.forward(hidden)
        if upcast:
            logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
        if self.logit_softcap:
            logits = torch.tanh(logits / self.logit_softcap) * self.logit_softcap
        return logits

    # Reductions over the vocabulary (the last dimension of what `logits` gives).

    vocab_parallel = False  # `logits` gives the whole vocabulary

    def log_softmax(self, logits: torch.Tensor) -> torch.Tensor:
        """[..., V] log-probabilities of logits [..., V]."""
        return torch.log_softmax(logits, dim=-1)

    def vocab_sum(self, values: torch.Tensor) -> torch.Tensor:
        """[...] the sum of per-vocabulary values [..., V]."""
        return values.sum(dim=-1)

    def token_values(self, values: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """[...] the values [..., V] at token ids [...]."""
        return values.gather(-1, tokens[..., None])[..., 0]

    def activation_checkpointing(self) -> contextlib.AbstractContextManager:
        """A pass with gradients, checkpointed as the model is in training
        (`activation_checkpointing`)."""
        return activation_checkpointing(self.model)


def hf_parts(model: nn.Module) -> HFParts:
    """The parts of a Hugging Face causal LM (`...ForCausalLM`): backbone, embeddings, head."""
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
    return HFParts(backbone, embeddings, head, softcap, model)


_ROOTS_RUN: weakref.WeakSet = weakref.WeakSet()


def _forward_root_once(model: nn.Module) -> None:
    """FSDP2 initialises a root module's state on its first forward; attribution calls the
    sub-modules directly, so each root runs one forward of its own first (one token, no
    gradient, once per process: the same on every rank, which enter `materialized` in step)."""
    if model in _ROOTS_RUN:
        return
    device = torch.accelerator.current_accelerator(check_available=True) or torch.device("cpu")  # FSDP2 computes there, offloaded or not
    with torch.no_grad():
        model(input_ids=torch.zeros((1, 1), dtype=torch.long, device=device), use_cache=False)
    _ROOTS_RUN.add(model)


@contextlib.contextmanager
def activation_checkpointing(model: nn.Module) -> Iterator[None]:
    """Runs a pass with autograd checkpointing the decoder layers the model checkpoints in
    training (Hugging Face's `gradient_checkpointing_enable`, as verl's
    `enable_gradient_checkpointing` sets it), which eval mode otherwise turns off: the
    backward then keeps one layer's activations at a time instead of every layer's.

    Such a layer is a `GradientCheckpointingLayer` that checkpoints only while its own
    `training` flag is set: the flag is set on the layer alone (its attention, MLP and
    dropout stay in eval mode, so the numbers are eval's), with torch's non-reentrant
    checkpoint (the reentrant one cannot give gradients to the inputs), and both restored
    after. Not for passes with a key/value cache (checkpointing drops it).
    """
    layers = [m for m in model.modules() if isinstance(m, GradientCheckpointingLayer) and m.gradient_checkpointing]
    saved = [(layer, layer.training, layer.__dict__.get("_gradient_checkpointing_func")) for layer in layers]
    for layer in layers:
        layer.training = True
        layer._gradient_checkpointing_func = functools.partial(torch.utils.checkpoint.checkpoint, use_reentrant=False)
    try:
        yield
    finally:
        for layer, training, function in saved:
            layer.training = training
            if function is None:
                del layer._gradient_checkpointing_func
            else:
                layer._gradient_checkpointing_func = function
