"""Model adapters: the seam between the attribution methods and a training backend.

    model_parts(model) -> ModelParts     (protocol.py)
        hf.HFParts              a Hugging Face causal LM, plain or FSDP2-sharded (verl's FSDP engines)
        megatron.MegatronParts  a megatron-core GPTModel (verl's Megatron engine; the megatron extra)

`shared.py` holds what both adapters use. Under FSDP2 the HF adapter uses public FSDP2
APIs only (the root's forward, `unshard` / `reshard`, `set_reshard_after_backward`).
"""

from __future__ import annotations

from torch import nn

from oar_verl.core.models.hf import hf_parts
from oar_verl.core.models.protocol import ModelParts
from oar_verl.core.models.shared import eval_mode, idle_forward, log_probs_and_entropy


def model_parts(model: nn.Module) -> ModelParts:
    """The adapter of `model`'s backend: `MegatronParts` for a megatron-core `GPTModel`
    (wrapped as verl's Megatron engine wraps it, or bare), else `HFParts` of a Hugging Face
    causal LM (`...ForCausalLM`)."""
    if type(model).__module__.startswith("megatron."):
        from oar_verl.core.models.megatron import megatron_parts  # megatron-core is an optional extra

        return megatron_parts(model)
    return hf_parts(model)


__all__ = ["ModelParts", "eval_mode", "idle_forward", "log_probs_and_entropy", "model_parts"]
