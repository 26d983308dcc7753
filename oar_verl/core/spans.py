"""Segmentation of sampled responses into reasoning | bridge | answer | tail, in tokens.

The answer is found in the decoded text (`answers`), and its characters are mapped back to
the sampled token ids through their decoded offsets (`offsets`): the response is never
re-tokenized. A token that straddles two segments belongs to the later one (a token
"\\n####" is bridge, not reasoning). Only reasoning tokens are reweighted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from oar_verl.core.answers import answer_finder
from oar_verl.core.offsets import TokenOffsets, batch_token_offsets

SEGMENT_NAMES = ("reasoning", "bridge", "answer", "tail")
UNSEGMENTED = "unsegmented"  # label of every token of a row without an answer


@dataclass(frozen=True)
class Segments:
    """Per-row token boundaries in response coordinates (token k of the response).

    reasoning = [0, reasoning_end), bridge = [reasoning_end, answer_start),
    answer = [answer_start, answer_end), tail = [answer_end, response length).

    Attributes:
        reasoning_end: [B] int64.
        answer_start: [B] int64.
        answer_end: [B] int64.
        found: [B] bool, False where no answer was found (then all boundaries are 0).
    """

    reasoning_end: torch.Tensor
    answer_start: torch.Tensor
    answer_end: torch.Tensor
    found: torch.Tensor

    @property
    def usable(self) -> torch.Tensor:
        """[B] bool: an answer was found and the reasoning is not empty."""
        return self.found & (self.reasoning_end > 0)

    def to(self, device: torch.device | str) -> Segments:
        return Segments(*(t.to(device) for t in (self.reasoning_end, self.answer_start, self.answer_end, self.found)))

    def select(self, rows: torch.Tensor) -> Segments:
        """The segments of `rows` ([B'] indices or [B] bool)."""
        return Segments(self.reasoning_end[rows], self.answer_start[rows], self.answer_end[rows], self.found[rows])

    def reasoning_mask(self, response_length: int) -> torch.Tensor:
        """[B, R] bool, True on the reasoning tokens of usable rows."""
        k = torch.arange(response_length, device=self.reasoning_end.device)
        return (k[None, :] < self.reasoning_end[:, None]) & self.usable[:, None]

    def answer_mask(self, response_length: int) -> torch.Tensor:
        """[B, R] bool, True on the answer tokens of rows with an answer."""
        k = torch.arange(response_length, device=self.answer_start.device)[None, :]
        return (k >= self.answer_start[:, None]) & (k < self.answer_end[:, None]) & self.found[:, None]

    def labels(self, row: int, length: int) -> list[str]:
        """Segment name of each of the first `length` response tokens of `row`."""
        if not bool(self.found[row]):
            return [UNSEGMENTED] * length
        bounds = (int(self.reasoning_end[row]), int(self.answer_start[row]), int(self.answer_end[row]))
        return [SEGMENT_NAMES[sum(k >= b for b in bounds)] for k in range(length)]


def segment_responses(
    tokenizer,
    responses: torch.Tensor,
    response_mask: torch.Tensor,
    answer_pattern: str | re.Pattern = "auto",
) -> Segments:
    """Finds reasoning / bridge / answer / tail in every row of a batch of sampled responses.

    Args:
        tokenizer: the tokenizer that sampled the ids (only its `decode` and
            `all_special_ids` are used).
        responses: [B, R] response token ids, right-padded.
        response_mask: [B, R], 1 on real response tokens (a prefix of each row).
        answer_pattern: a name of `answers.BUILTIN_PATTERNS` or a regular expression.

    Returns:
        Segments of the B rows; rows without an answer have `found` False.
    """
    if responses.shape != response_mask.shape or responses.dim() != 2:
        raise ValueError(f"responses and response_mask: expected equal shapes [B, R], got {tuple(responses.shape)} and {tuple(response_mask.shape)}")
    find = answer_finder(answer_pattern)
    lengths = response_mask.bool().sum(dim=1).tolist()
    rows = responses.tolist()
    bounds = torch.zeros((len(rows), 3), dtype=torch.long)
    found = torch.zeros(len(rows), dtype=torch.bool)
    for row, offsets in enumerate(batch_token_offsets(tokenizer, [ids[:length] for ids, length in zip(rows, lengths)])):
        token_bounds = _segment_tokens(offsets, find)
        if token_bounds is not None:
            bounds[row] = torch.tensor(token_bounds)
            found[row] = True
    device = responses.device
    return Segments(bounds[:, 0].to(device), bounds[:, 1].to(device), bounds[:, 2].to(device), found.to(device))


def _segment_tokens(offsets: TokenOffsets, find) -> tuple[int, int, int] | None:
    """(reasoning_end, answer_start, answer_end) in tokens of one response, or None without an answer."""
    span = find(offsets.text)
    if span is None:
        return None
    answer_tokens = offsets.tokens_overlapping(span.answer_start, span.answer_end)
    marked_tokens = offsets.tokens_overlapping(span.bridge_start, span.answer_end)
    return int(marked_tokens[0]), int(answer_tokens[0]), int(answer_tokens[-1]) + 1
