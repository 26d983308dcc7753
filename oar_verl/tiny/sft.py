"""Supervised (teacher-forced) training steps for the small models of the demo, the tests
and the CPU training runs."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def lm_batch(prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]], pad_token_id: int):
    """Right-padded (input_ids, attention_mask, labels), each [N, L]; labels are -100 except
    on response tokens, so only responses are learned."""
    width = max(len(p) + len(r) for p, r in zip(prompts, responses))
    input_ids = torch.full((len(prompts), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(prompts), width), dtype=torch.long)
    labels = torch.full((len(prompts), width), -100, dtype=torch.long)
    for row, (prompt, response) in enumerate(zip(prompts, responses)):
        sequence = list(prompt) + list(response)
        input_ids[row, : len(sequence)] = torch.tensor(sequence)
        attention_mask[row, : len(sequence)] = 1
        labels[row, len(prompt) : len(sequence)] = torch.tensor(list(response))
    return input_ids, attention_mask, labels


def train_step(model, optimizer, input_ids, attention_mask, labels) -> float:
    """One optimizer step on the mean next-token loss of the labelled tokens."""
    loss = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels).loss
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.item()
