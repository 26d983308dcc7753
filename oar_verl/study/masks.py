"""The gradient test's token classes on the study's arithmetic task, from what the task's
generator knows (`oar_verl.tiny.arithmetic`), and the oracle mask built on them.

- filler: the reward-irrelevant letters (and the space before them) after each step line
  of the filler task; drawn at random, they carry nothing about the answer.
- results: each step line's result; every other reasoning token (a line's left value,
  operator, operand, `=`, the newline) is fixed by what came before, and the generator's
  traces slip only on results.
- first error: the token of each response's first error (`oracle.first_error_token`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from oar_verl.core.offsets import batch_token_offsets
from oar_verl.core.spans import Segments
from oar_verl.study.oracle import STEP_LINE, first_error_token

FILLER_CHARACTERS = frozenset("abcdefghijklmnopqrstuvwxyz ")


@dataclass(frozen=True)
class TokenClasses:
    """[B, R] bool masks over the response tokens, each within the reasoning.

    Attributes:
        reasoning: the reasoning tokens of rows with an answer (`Segments.reasoning_mask`).
        filler: reasoning tokens whose text is lowercase letters or spaces only.
        results: reasoning tokens overlapping a step line's result.
        first_error: the token of each row's first error, when it lies in the reasoning.
    """

    reasoning: torch.Tensor
    filler: torch.Tensor
    results: torch.Tensor
    first_error: torch.Tensor


def token_classes(
    tokenizer, responses: torch.Tensor, response_mask: torch.Tensor, segments: Segments, questions: list[str], filler: bool
) -> TokenClasses:
    """The token classes of B responses ([B, R] ids and mask, right-padded) to `questions`;
    `filler`: responses in the filler format (the first error is found with it ignored)."""
    B, R = responses.shape
    reasoning = segments.reasoning_mask(R)
    masks = {name: torch.zeros((B, R), dtype=torch.bool) for name in ("filler", "results", "first_error")}
    lengths = response_mask.bool().sum(dim=1).tolist()
    rows = [ids[:length] for ids, length in zip(responses.tolist(), lengths)]
    for row, (offsets, question) in enumerate(zip(batch_token_offsets(tokenizer, rows), questions)):
        for token, (start, end) in enumerate(zip(offsets.starts, offsets.ends)):
            masks["filler"][row, token] = bool(end > start and set(offsets.text[start:end]) <= FILLER_CHARACTERS)
        for start, end in result_spans(offsets.text):
            masks["results"][row, offsets.tokens_overlapping(start, end)] = True
        error = first_error_token(offsets, question, filler)
        if error is not None:
            masks["first_error"][row, error] = True
    return TokenClasses(reasoning, *(mask & reasoning for mask in masks.values()))


def result_spans(text: str) -> list[tuple[int, int]]:
    """[start, end) character spans of every step line's result in a response's text."""
    spans, offset = [], 0
    for line in text.split("\n"):
        match = STEP_LINE.match(line)
        if match is not None:
            spans.append((offset + match.start(4), offset + match.end(4)))
        offset += len(line) + 1
    return spans


def oracle_mask_weights(reasoning: torch.Tensor, irrelevant: torch.Tensor, floor: float = 0.1) -> torch.Tensor:
    """[B, R] weights: `floor` on the `irrelevant` reasoning tokens, 1 on the other reasoning
    tokens, each row's reasoning weights then scaled to average 1 (mass preserved); 1
    outside the reasoning. reasoning, irrelevant: [B, R] bool."""
    if not 0.0 < floor <= 1.0:
        raise ValueError(f"floor: expected a value in (0, 1], got {floor}")
    raw = torch.where(irrelevant & reasoning, floor, 1.0)
    count = reasoning.sum(dim=1, keepdim=True)
    total = torch.where(reasoning, raw, 0.0).sum(dim=1, keepdim=True)
    scaled = raw * torch.where(count > 0, count / total.clamp(min=floor), 1.0)
    return torch.where(reasoning, scaled, 1.0).float()
