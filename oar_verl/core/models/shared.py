"""What the model adapters share: the real-tokens-first layout of verl's engines, the idle
pass of a rank with fewer passes than the others, the default log-prob function, and eval
mode around a whole attribution."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from oar_verl.core.models.protocol import ModelParts


def real_tokens_first(attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(to_front [N, L], back [N, L]) column indices for rows left-padded as in verl's
    layout (`attention_mask` [N, L]): `x.gather(1, to_front)` moves each row's real tokens to
    the front (padding after them), as verl's engines lay out a micro-batch;
    `y.gather(1, back)` moves a result back to the input's layout."""
    L = attention_mask.shape[1]
    leading = (attention_mask.cumsum(dim=1) == 0).sum(dim=1)  # [N] left-padding columns
    columns = torch.arange(L, device=attention_mask.device)[None, :]
    return (columns + leading[:, None]) % L, (columns - leading[:, None]) % L


def gather_columns(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """values [N, L, H] with their columns taken at `index` [N, L] (row by row)."""
    return values.gather(1, index[:, :, None].expand(-1, -1, values.shape[-1]))


def idle_forward(parts: ModelParts, device: torch.device) -> None:
    """A one-token forward whose result is discarded: OAR-P's pass on a rank with fewer
    passes than the others (every OAR-P pass is one backbone forward)."""
    ids = torch.zeros((1, 1), dtype=torch.long, device=device)
    with parts.materialized(), torch.no_grad():
        parts.hidden_states(parts.embed(ids), torch.ones_like(ids), ids)


def log_probs_and_entropy(parts: ModelParts, logits: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """([N, S] log-probs of tokens [N, S], [N, S] entropies) of logits [N, S, V], in
    float32 (float64 for a float64 model), by the parts' vocabulary reductions: the default
    log-prob function of the fused passes."""
    log_probs = parts.log_softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)))  # [N, S, V]
    return parts.token_values(log_probs, tokens), -parts.vocab_sum(log_probs.exp() * log_probs)


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
