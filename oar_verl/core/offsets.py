"""Character offsets of sampled tokens in their decoded text, without re-tokenizing.

The text is what verl's reward functions read: `tokenizer.decode(ids,
skip_special_tokens=True)`. Each token gets the half-open character interval
[start, end) of the text it produced. Decoding is incremental (a window of previous
tokens gives each new token its context, as streaming detokenizers do): a token whose
bytes end inside a multi-byte character produces no text on its own and is given the
first character it helps to complete; special tokens cover no character.

Byte-level BPE tokenizers (GPT-2's, Qwen's, Llama 3's: a `ByteLevel` decoder) take a fast
path with the same result: each token's bytes from a table built once per tokenizer (and
checked id by id against `decode` then), a batch's texts the UTF-8 decoding of its rows'
bytes, found blockwise in one vectorised pass, and a token's characters those its bytes
overlap. Other tokenizers (decode-time space cleanup, other decoders), and responses whose
bytes are not UTF-8 (a cut character), use the streaming decode.
"""

from __future__ import annotations

import contextlib
import itertools
import weakref
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from tokenizers import decoders

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
    return batch_token_offsets(tokenizer, [list(map(int, ids))])[0]


ROWS_PER_BLOCK = 256  # byte-level fast path: rows gathered at once (bounds its memory to a few MB)


def batch_token_offsets(tokenizer, rows: Sequence[list[int]]) -> list[TokenOffsets]:
    """`token_offsets` of each row (lists of ids, padding removed). On a byte-level
    tokenizer the rows' bytes are gathered and their characters located blockwise in one
    vectorised pass; rows whose bytes are not UTF-8, and other tokenizers, take the
    streaming decode."""
    table = _byte_table(tokenizer)
    fast: list[TokenOffsets | None] = []
    for first in range(0, len(rows), ROWS_PER_BLOCK):
        block = rows[first : first + ROWS_PER_BLOCK]
        fast += _byte_offsets(table, block) if table is not None else [None] * len(block)
    return [offsets if offsets is not None else _streaming_offsets(tokenizer, ids) for offsets, ids in zip(fast, rows)]


def _streaming_offsets(tokenizer, ids: list[int]) -> TokenOffsets:
    full_text = _decode(tokenizer, ids)
    return _incremental_offsets(tokenizer, ids, full_text) or _prefix_offsets(tokenizer, ids, full_text)


def _byte_of_symbol() -> dict[str, int]:
    """GPT-2's byte-to-unicode alphabet, inverted: symbol -> the byte it stands for."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    codes = printable[:]
    shift = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + shift)
            shift += 1
    return {chr(code): byte for byte, code in zip(printable, codes)}


BYTE_OF_SYMBOL = _byte_of_symbol()


@dataclass(frozen=True)
class ByteTable:
    """Each id's bytes in `decode(skip_special_tokens=True)`: `data[starts[i] : starts[i] +
    lengths[i]]` (uint8 [total], int64 [V], int64 [V]); special tokens have none."""

    data: np.ndarray
    starts: np.ndarray
    lengths: np.ndarray


_BYTE_TABLES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # tokenizer -> its table, or None


def _byte_table(tokenizer) -> ByteTable | None:
    """The table of a fast tokenizer with a ByteLevel decoder whose `decode` is its
    backend's (no `clean_up_tokenization_spaces`), checked id by id against `decode`;
    None for any other. Built once per tokenizer (a vocabulary of 150k: about a second)."""
    try:
        return _BYTE_TABLES[tokenizer]
    except (KeyError, TypeError):
        pass
    backend = getattr(tokenizer, "backend_tokenizer", None)
    table = None
    if backend is not None and isinstance(backend.decoder, decoders.ByteLevel) and not getattr(tokenizer, "clean_up_tokenization_spaces", False):
        table = _checked_table(backend, _token_pieces(backend))
    with contextlib.suppress(TypeError):  # not weak-referenceable: no cache
        _BYTE_TABLES[tokenizer] = table
    return table


def _token_pieces(backend) -> list[bytes]:
    """Each id's bytes as the ByteLevel decoder makes them: a token's symbols mapped back to
    bytes, or its own UTF-8 when a character is outside the byte alphabet; none for special
    tokens and ids outside the vocabulary."""
    vocab = backend.get_vocab(with_added_tokens=True)
    pieces = [b""] * (max(vocab.values()) + 1)
    for symbol, index in vocab.items():
        try:
            pieces[index] = bytes(BYTE_OF_SYMBOL[char] for char in symbol)
        except KeyError:
            pieces[index] = symbol.encode("utf-8")
    for index, added in backend.get_added_tokens_decoder().items():
        if added.special:
            pieces[index] = b""
    return pieces


def _checked_table(backend, pieces: list[bytes]) -> ByteTable | None:
    """The table of `pieces` if every id decodes alone to its piece's (lossy) UTF-8 text,
    else None. The ByteLevel decoder maps each token to bytes and decodes their
    concatenation once, so a row whose bytes are valid UTF-8 then decodes to exactly them."""
    decoded = backend.decode_batch([[index] for index in range(len(pieces))], skip_special_tokens=True)
    if any(text != piece.decode("utf-8", errors="replace") for text, piece in zip(decoded, pieces)):
        return None
    lengths = np.fromiter((len(piece) for piece in pieces), dtype=np.int64, count=len(pieces))
    return ByteTable(np.frombuffer(b"".join(pieces), dtype=np.uint8), np.cumsum(lengths) - lengths, lengths)


def _byte_offsets(table: ByteTable, rows: list[list[int]]) -> list[TokenOffsets | None]:
    """Offsets of each row from its tokens' bytes; None for a row whose bytes are not UTF-8
    (a character cut at the end) or hold an id outside the table."""
    counts = np.fromiter((len(ids) for ids in rows), dtype=np.int64, count=len(rows))  # [B]
    index = np.fromiter(itertools.chain.from_iterable(rows), dtype=np.int64, count=int(counts.sum()))  # [T]
    token_bounds = np.concatenate(([0], np.cumsum(counts)))  # [B + 1]
    unknown = (index < 0) | (index >= len(table.lengths))
    usable = np.ones(len(rows), dtype=bool)
    usable[np.repeat(np.arange(len(rows)), counts)[unknown]] = False
    index = np.where(unknown, 0, index)
    lengths = table.lengths[index]  # [T]
    byte_ends = np.cumsum(lengths)
    byte_starts = byte_ends - lengths
    raw = table.data[np.arange(int(byte_ends[-1]) if index.size else 0) + np.repeat(table.starts[index] - byte_starts, lengths)]  # [bytes]
    byte_bounds = np.concatenate(([0], byte_ends))[token_bounds]  # [B + 1]
    char_starts = np.flatnonzero((raw & 0xC0) != 0x80)  # [C] first byte of each character
    char_ends = np.append(char_starts[1:], len(raw)) if len(char_starts) else char_starts
    starts = np.searchsorted(char_ends, byte_starts, side="right")  # characters ending by the token's first byte
    ends = np.maximum(np.where(lengths > 0, np.searchsorted(char_starts, byte_ends, side="left"), starts), starts)
    first_chars = np.searchsorted(char_starts, byte_bounds[:-1], side="left")  # [B] each row's first character
    texts: list[str | None] = []
    for row in range(len(rows)):
        try:
            texts.append(raw[byte_bounds[row] : byte_bounds[row + 1]].tobytes().decode("utf-8") if usable[row] else None)
        except UnicodeDecodeError:
            texts.append(None)
    offsets: list[TokenOffsets | None] = []
    for row, text in enumerate(texts):
        if text is None:
            offsets.append(None)
            continue
        tokens = slice(token_bounds[row], token_bounds[row + 1])
        offsets.append(TokenOffsets(text, starts[tokens] - first_chars[row], ends[tokens] - first_chars[row]))
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
