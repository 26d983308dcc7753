"""The outcome P_final that attribution measures (OAR_SPEC section 3).

z_j are the logits at sequence position j (they predict token j + 1), teacher-forced on the
response's own answer tokens a_1..a_A:

- `answer_mean`: P_final = softmax(mean of z over the positions predicting a_1..a_A).
- `first_answer`: P_final = softmax(z at the position predicting a_1).
- `answer_logprob`: phi = mean_k log P(a_k | prefix), a scalar.
- `every_answer`: P_final = the joint distribution of every answer position's next token,
  prod_k softmax(z at the position predicting a_k), each position teacher-forced on the
  answer before it. Its KL is the sum of the per-position KLs, so a change that moves any
  answer token (a sign, a tens digit, a last digit) counts, where `first_answer` sees only
  the first and `answer_mean` averages logits of positions that predict different tokens.

Distribution targets are returned as log-probabilities [N, V] (`every_answer`: [N, A, V],
positions past a row's answer uniform, so they add nothing to a KL), `answer_logprob` as [N]. V is
the vocabulary the parts' head gives (a tensor-parallel rank's shard of it on Megatron:
every reduction over it goes through the parts).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from oar_verl.core.layout import ResponseBatch
from oar_verl.core.models.protocol import ModelParts
from oar_verl.core.names import did_you_mean
from oar_verl.core.spans import Segments

TARGET_MODES = ("answer_mean", "first_answer", "answer_logprob", "every_answer")


def check_target(mode: str, setting: str = "target") -> None:
    if mode not in TARGET_MODES:
        raise ValueError(f"{setting}: unknown target {mode!r}{did_you_mean(mode, TARGET_MODES)}, expected one of {list(TARGET_MODES)}")


@dataclass(frozen=True)
class AnswerPositions:
    """Where each row's answer is predicted, padded to the longest answer A.

    Attributes:
        positions: [N, A] int64 sequence positions predicting the answer tokens (0 past the
            row's answer).
        tokens: [N, A] int64 the answer token ids.
        mask: [N, A] bool, True on real answer tokens.
    """

    positions: torch.Tensor
    tokens: torch.Tensor
    mask: torch.Tensor

    @property
    def columns_needed(self) -> torch.Tensor:
        """[N] int64: the sequence prefix length that determines each row's target."""
        return self.positions.max(dim=1).values + 1

    def select(self, rows: torch.Tensor) -> AnswerPositions:
        return AnswerPositions(self.positions[rows], self.tokens[rows], self.mask[rows])

    def shifted(self, offset: int) -> AnswerPositions:
        """The positions moved by `offset` (for hidden states that start at -offset)."""
        return AnswerPositions(torch.where(self.mask, self.positions + offset, 0), self.tokens, self.mask)


def answer_positions(batch: ResponseBatch, segments: Segments) -> AnswerPositions:
    """Answer positions of every row; every row must have an answer (`segments.found`)."""
    if not bool(segments.found.all()):
        raise ValueError("segments: answer positions asked for a row without an answer")
    length = segments.answer_end - segments.answer_start  # [N]
    A = int(length.max())
    k = torch.arange(A, device=length.device)[None, :]  # [1, A]
    mask = k < length[:, None]  # [N, A]
    token_index = torch.where(mask, segments.answer_start[:, None] + k, 0)  # [N, A] in the response
    positions = torch.where(mask, batch.prompt_length + token_index - 1, 0)  # predicting positions
    tokens = batch.responses.gather(1, token_index)
    return AnswerPositions(positions, tokens, mask)


def compute_target(parts: ModelParts, hidden: torch.Tensor, answer: AnswerPositions, mode: str) -> torch.Tensor:
    """The target of each row from hidden states [N, L, H]: [N, V] log-probs ([N, A, V]
    for `every_answer`) or [N] phi."""
    if mode == "first_answer":
        first = hidden.gather(1, answer.positions[:, :1, None].expand(-1, -1, hidden.shape[-1]))  # [N, 1, H]
        return parts.log_softmax(parts.logits(first[:, 0]))  # [N, V]
    gathered = hidden.gather(1, answer.positions[:, :, None].expand(-1, -1, hidden.shape[-1]))  # [N, A, H]
    logits = parts.logits(gathered)  # [N, A, V]
    weights = answer.mask.to(logits.dtype) / answer.mask.sum(dim=1, keepdim=True)  # [N, A], rows sum to 1
    if mode == "answer_mean":
        mean_logits = (logits * weights[:, :, None]).sum(dim=1)  # [N, V]
        return parts.log_softmax(mean_logits)
    if mode == "answer_logprob":
        token_logprobs = parts.token_values(parts.log_softmax(logits), answer.tokens)  # [N, A]
        return (token_logprobs * weights).sum(dim=1)  # [N]
    if mode == "every_answer":
        return parts.log_softmax(logits.masked_fill(~answer.mask[:, :, None], 0.0))  # [N, A, V]
    check_target(mode)
    raise AssertionError("unreachable")


def target_shift(parts: ModelParts, clean: torch.Tensor, other: torch.Tensor, mode: str) -> torch.Tensor:
    """[N] how far `other` moved from `clean`: KL(P0 || P) = sum_v p0 (log p0 - log p) for
    distributions (summed over the answer positions for `every_answer`), phi0 - phi (signed)
    for `answer_logprob`."""
    if mode == "answer_logprob":
        return clean - other
    p0 = clean.exp()
    divergence = parts.vocab_sum(torch.where(p0 > 0, p0 * (clean - other), 0.0))  # 0 log 0 = 0; [N] or [N, A]
    return divergence.sum(dim=1) if mode == "every_answer" else divergence
