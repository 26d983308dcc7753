"""What the attribution methods share: input checks, row selection, the scatter of
per-reasoning-token scores back to [B, R], and passes under a token budget.

Every method module exposes `attribute(model, batch, segments, config, rows=None)` and
returns raw scores [B, R] (float32, >= 0): one per reasoning token of every attributed row,
0 elsewhere. A row is attributed when it is in `rows` (default: all) and `segments.usable`
(answer found, reasoning not empty).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

PassSync = Callable[[int], int]
"""Maps this process's number of model passes to the number every process runs (e.g. an
all-reduce max over data-parallel ranks): FSDP ranks must run the same number of passes."""

from oar_verl.core.layout import ResponseBatch
from oar_verl.core.spans import Segments


def attributed_rows(batch: ResponseBatch, segments: Segments, rows: torch.Tensor | None) -> torch.Tensor:
    """[B'] indices of the rows to attribute; checks that the inputs agree in shape."""
    B, R = batch.input_ids.shape[0], batch.response_length
    for name in ("reasoning_end", "answer_start", "answer_end", "found"):
        tensor = getattr(segments, name)
        if tuple(tensor.shape) != (B,):
            raise ValueError(f"segments.{name}: expected shape ({B},) for a batch of {B} rows, got {tuple(tensor.shape)}")
    if bool((segments.answer_end > R).any()):
        raise ValueError(f"segments: an answer ends past the response length {R}")
    selected = segments.usable.to(batch.input_ids.device)
    if rows is not None:
        if tuple(rows.shape) != (B,) or rows.dtype != torch.bool:
            raise ValueError(f"rows: expected a bool tensor of shape ({B},), got {rows.dtype} {tuple(rows.shape)}")
        selected = selected & rows.to(selected.device)
    return selected.nonzero().squeeze(1)


def rows_per_pass(max_tokens_per_pass: int, sequence_length: int, setting: str) -> int:
    """How many sequences of `sequence_length` tokens one forward pass may hold."""
    if max_tokens_per_pass < sequence_length:
        raise ValueError(
            f"{setting}: {max_tokens_per_pass} tokens cannot hold one sequence of {sequence_length} tokens "
            f"(prompt plus response up to the answer); raise it to at least {sequence_length}"
        )
    return max_tokens_per_pass // sequence_length


def passes_to_run(local: int, sync: PassSync | None) -> int:
    """The number of passes this process runs: its own, or the synchronised count."""
    total = local if sync is None else int(sync(local))
    if total < local:
        raise ValueError(f"sync_passes: returned {total} passes, fewer than this process needs ({local})")
    return total


def scatter_scores(
    batch_size: int,
    response_length: int,
    row_index: torch.Tensor,
    token_index: torch.Tensor,
    values: torch.Tensor,
) -> torch.Tensor:
    """[B, R] float32 zeros with `values` [N] at (row_index [N], token_index [N])."""
    scores = torch.zeros((batch_size, response_length), dtype=torch.float32, device=values.device)
    scores[row_index, token_index] = values.float().clamp(min=0.0)  # KL >= 0; rounding may dip below
    return scores
