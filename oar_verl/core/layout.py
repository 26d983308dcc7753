"""verl's batch layout for sampled responses.

Every row is `[left-padded prompt | right-padded response]` in one tensor of length
L = P + R, where P is the padded prompt length and R the padded response length, with
`attention_mask` 1 on real tokens and `position_ids` counting real tokens from 0. Response
token k of a row sits at sequence position P + k; the logits at position j predict the
token at j + 1, so response token k is predicted by position P + k - 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class ResponseBatch:
    """Prompts and sampled responses in verl's layout.

    Attributes:
        input_ids: [B, L] integer token ids, prompt then response.
        attention_mask: [B, L] 1 (or True) on real tokens, 0 on padding.
        position_ids: [B, L] integer positions of the real tokens, 0 at the first one.
        response_length: R, the padded response length; the responses are
            `input_ids[:, -R:]`.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    response_length: int

    def __post_init__(self) -> None:
        ids, mask, pos = self.input_ids, self.attention_mask, self.position_ids
        if ids.dim() != 2:
            raise ValueError(f"input_ids: expected shape [B, L], got {tuple(ids.shape)}")
        if ids.dtype.is_floating_point or ids.dtype == torch.bool:
            raise ValueError(f"input_ids: expected an integer dtype, got {ids.dtype}")
        for name, tensor in (("attention_mask", mask), ("position_ids", pos)):
            if tuple(tensor.shape) != tuple(ids.shape):
                raise ValueError(f"{name}: expected shape {tuple(ids.shape)} like input_ids, got {tuple(tensor.shape)}")
            if tensor.device != ids.device:
                raise ValueError(f"{name}: on {tensor.device}, input_ids on {ids.device}")
        if pos.dtype.is_floating_point:
            raise ValueError(f"position_ids: expected an integer dtype, got {pos.dtype}")
        if not 0 < self.response_length < ids.shape[1]:
            raise ValueError(f"response_length: expected 0 < response_length < L = {ids.shape[1]}, got {self.response_length}")

    @property
    def prompt_length(self) -> int:
        """P, the padded prompt length: response token k sits at position P + k."""
        return self.input_ids.shape[1] - self.response_length

    @property
    def responses(self) -> torch.Tensor:
        """[B, R] the response token ids (padding included)."""
        return self.input_ids[:, self.prompt_length :]

    @property
    def response_mask(self) -> torch.Tensor:
        """[B, R] bool, True on real response tokens."""
        return self.attention_mask[:, self.prompt_length :].bool()

    def select(self, rows: torch.Tensor) -> ResponseBatch:
        """The sub-batch of `rows` ([B'] indices or [B] bool)."""
        return ResponseBatch(self.input_ids[rows], self.attention_mask[rows], self.position_ids[rows], self.response_length)

    @classmethod
    def from_token_lists(
        cls,
        prompts: Sequence[Sequence[int]],
        responses: Sequence[Sequence[int]],
        *,
        pad_token_id: int,
        device: torch.device | str = "cpu",
    ) -> ResponseBatch:
        """Lays out unpadded prompt and response id lists as verl does (left-padded
        prompts, right-padded responses)."""
        if len(prompts) != len(responses) or not prompts:
            raise ValueError(f"prompts and responses: expected the same non-zero number of rows, got {len(prompts)} and {len(responses)}")
        for row, (prompt, response) in enumerate(zip(prompts, responses)):
            if not prompt:
                raise ValueError(f"prompts[{row}]: empty prompt (the first response token needs a position predicting it)")
            if not response:
                raise ValueError(f"responses[{row}]: empty response")
        P = max(len(p) for p in prompts)
        R = max(len(r) for r in responses)
        B = len(prompts)
        input_ids = torch.full((B, P + R), pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((B, P + R), dtype=torch.long)
        for row, (prompt, response) in enumerate(zip(prompts, responses)):
            input_ids[row, P - len(prompt) : P] = torch.tensor(prompt, dtype=torch.long)
            input_ids[row, P : P + len(response)] = torch.tensor(response, dtype=torch.long)
            attention_mask[row, P - len(prompt) : P + len(response)] = 1
        position_ids = (attention_mask.cumsum(dim=1) - 1).clamp(min=0)
        return cls(input_ids.to(device), attention_mask.to(device), position_ids.to(device), R)
