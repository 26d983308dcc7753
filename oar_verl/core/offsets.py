"""Character offsets of sampled tokens in their decoded text, without re-tokenizing.

The text is what verl's reward functions read: `tokenizer.decode(ids,
skip_special_tokens=True)`. Each token gets the half-open character interval
[start, end) of the text it produced. Decoding is incremental (a window of previous
tokens gives each new token its context, as streaming detokenizers do): a token whose
bytes end inside a multi-byte character produces no text on its own and is given the
first character it helps to complete; special tokens cover no character.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

_INCOMPLETE = "\ufffd"


@dataclass(frozen=True)
class TokenOffsets:
    """Decoded text of one response and each token's character interval.

    Attributes:
        text: `tokenizer.decode(ids, skip_special_tokens=True)`.
        starts: [N] int64, first character each token covers.
        ends: [N] int64, one past the last character each token covers
            (`starts == ends` for tokens that cover no character).
    """

    text: str
    starts: np.ndarray
    ends: np.ndarray

    def tokens_overlapping(self, char_start: int, char_end: int) -> np.ndarray:
        """Indices of the tokens that cover any character in [char_start, char_end)."""
        return np.flatnonzero((self.starts < char_end) & (self.ends > char_start))


def token_offsets(tokenizer, ids: Sequence[int]) -> TokenOffsets:
    """Character interval of every token of `ids` (a sampled response, padding removed)."""
    ids = [int(i) for i in ids]
    full_text = _decode(tokenizer, ids)
    offsets = _incremental_offsets(tokenizer, ids, full_text)
    if offsets is None:
        offsets = _prefix_offsets(tokenizer, ids, full_text)
    return offsets


def _decode(tokenizer, ids: Sequence[int]) -> str:
    return tokenizer.decode(list(ids), skip_special_tokens=True)


def _incremental_offsets(tokenizer, ids: list[int], full_text: str) -> TokenOffsets | None:
    """Streaming decode; None when its pieces do not add up to `full_text` (tokenizers whose
    decode cleans up spaces across tokens), where the exact prefix method takes over."""
    special = set(tokenizer.all_special_ids)
    starts = np.zeros(len(ids), dtype=np.int64)
    ends = np.zeros(len(ids), dtype=np.int64)
    kept: list[int] = []  # non-special ids decoded so far
    prefix_offset = read_offset = 0  # kept[prefix_offset:read_offset] is the context window
    pending: list[int] = []  # token indices whose text is not complete yet
    text = ""
    for index, token in enumerate(ids):
        if token in special:
            starts[index] = ends[index] = len(text)
            continue
        kept.append(token)
        pending.append(index)
        context = _decode(tokenizer, kept[prefix_offset:read_offset])
        extended = _decode(tokenizer, kept[prefix_offset:])
        if len(extended) <= len(context) or extended.endswith(_INCOMPLETE):
            continue
        delta = extended[len(context) :]
        done = [
            _decoded_length(tokenizer, kept[prefix_offset : len(kept) - len(pending) + position + 1]) - len(context)
            for position in range(len(pending) - 1)
        ]
        _assign(starts, ends, pending, len(text), done + [len(delta)])
        text += delta
        pending = []
        prefix_offset, read_offset = read_offset, len(kept)
    if pending:  # a response cut inside a multi-byte character
        rest = full_text[len(text) :]
        _assign(starts, ends, pending, len(text), [0.5] * (len(pending) - 1) + [len(rest)])
        text += rest
    if text != full_text:
        return None
    return TokenOffsets(full_text, starts, ends)


def _decoded_length(tokenizer, ids: list[int]) -> float:
    """Characters complete after `ids`, plus one half when bytes of the next character
    are already there."""
    text = _decode(tokenizer, ids)
    stripped = text.rstrip(_INCOMPLETE)
    return len(stripped) + (0.5 if len(stripped) < len(text) else 0.0)


def _assign(starts: np.ndarray, ends: np.ndarray, pending: list[int], start: int, done: list[float]) -> None:
    """Intervals of the pending tokens, whose text starts at `start`: `done[i]` is
    `_decoded_length` after pending token i, relative to `start`. A token holding bytes of a
    character completed later covers that character too."""
    total = int(done[-1])
    previous = 0
    for index, completed in zip(pending, done):
        whole = min(max(int(completed), previous), total)
        end = min(whole + (1 if completed > int(completed) else 0), total)
        starts[index], ends[index] = start + previous, start + max(end, whole)
        previous = whole


def _prefix_offsets(tokenizer, ids: list[int], full_text: str) -> TokenOffsets:
    """Exact but quadratic: token k ends where decode(ids[:k+1]) stops agreeing with the
    full text."""
    starts = np.zeros(len(ids), dtype=np.int64)
    ends = np.zeros(len(ids), dtype=np.int64)
    previous_end = 0
    for index in range(len(ids)):
        prefix = _decode(tokenizer, ids[: index + 1]).rstrip(_INCOMPLETE)
        common = len(_common_prefix(prefix, full_text))
        end = max(previous_end, common)
        starts[index], ends[index] = previous_end, end
        previous_end = end
    return TokenOffsets(full_text, starts, ends)


def _common_prefix(a: str, b: str) -> str:
    limit = min(len(a), len(b))
    index = 0
    while index < limit and a[index] == b[index]:
        index += 1
    return a[:index]
