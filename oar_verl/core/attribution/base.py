"""What the attribution methods share: input checks, row selection, the scatter of
per-reasoning-token scores back to [B, R], and the step count every data-parallel rank
runs (the chunks under a token budget: `chunks.py`).

Every method module exposes `attribute(model, batch, segments, config, rows=None)` and
returns raw scores [B, R] (float32, >= 0): one per reasoning token of every attributed row,
0 elsewhere. A row is attributed when it is in `rows` (default: all) and `segments.usable`
(answer found, reasoning not empty).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch
import torch.distributed as dist

from oar_verl.core.layout import ResponseBatch
from oar_verl.core.spans import Segments

PassSync = Callable[[int], int]
"""Maps this process's number of model passes (or steps) to the number every process runs
(`max_over_ranks`): FSDP ranks must run the same passes, each gathering parameters
collectively."""

Step = TypeVar("Step")


def row_seed(seed: int, row: int) -> int:
    """The seed of the random generator of batch row `row` (OAR-G's noise, taylor's
    projections): `numpy.random.SeedSequence([seed, row]).generate_state(1, numpy.uint64)[0]
    % 2**63`, so a row's draws do not depend on the rows it shares a pass with."""
    return int(np.random.SeedSequence([seed, row]).generate_state(1, np.uint64)[0]) % 2**63


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


def passes_to_run(local: int, sync: PassSync | None) -> int:
    """The number of passes this process runs: its own, or the synchronised count."""
    total = local if sync is None else int(sync(local))
    if total < local:
        raise ValueError(f"sync_passes: returned {total} passes, fewer than this process needs ({local})")
    return total


def max_over_ranks(local: int) -> int:
    """The `PassSync` of the default process group: every rank's maximum of `local` (one
    all-reduce, on the CPU where the group has gloo, as verl's groups do, else on the
    accelerator)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return local
    on_cpu = "gloo" in str(dist.get_backend())
    count = torch.tensor([local], dtype=torch.long, device="cpu" if on_cpu else torch.accelerator.current_accelerator())
    dist.all_reduce(count, op=dist.ReduceOp.MAX)
    return int(count)


def synchronized_steps(steps: Sequence[Step], sync: PassSync | None) -> Iterator[Step | None]:
    """This process's steps, then None up to the number of steps every process runs: a
    method runs the same program on each item (on None, on a one-token dummy input whose
    result it drops), so all ranks issue the same collectives whatever their rows."""
    total = passes_to_run(len(steps), sync)
    for k in range(total):
        yield steps[k] if k < len(steps) else None


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


@dataclass(frozen=True)
class TokenScores:
    """Scores of single tokens: `value` [N] of response token `token` [N] of row `row` [N]."""

    row: torch.Tensor
    token: torch.Tensor
    value: torch.Tensor

    @staticmethod
    def cat(pieces: Sequence[TokenScores], device: torch.device) -> TokenScores:
        """The pieces one after the other (none: empty tensors on `device`)."""
        if not pieces:
            empty = torch.zeros(0, dtype=torch.long, device=device)
            return TokenScores(empty, empty, torch.zeros(0, dtype=torch.float32, device=device))
        return TokenScores(*(torch.cat([getattr(piece, name) for piece in pieces]) for name in ("row", "token", "value")))

    def scatter(self, batch_size: int, response_length: int, batch_rows: torch.Tensor) -> torch.Tensor:
        """[B, R] float32 scores, these at (batch_rows[row], token), 0 elsewhere."""
        return scatter_scores(batch_size, response_length, batch_rows[self.row], self.token, self.value)
