"""What a heatmap shows (one response: token pieces, segments, scores, weights) and the
diverging colour scale around weight 1 that the HTML and PNG renderers share."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from oar_verl.core.offsets import token_offsets

WHITE = (255, 255, 255)
BOOST = (214, 39, 40)  # weight above 1
DAMP = (31, 119, 180)  # weight below 1
SEGMENT_COLOURS = {"reasoning": "#2ca02c", "bridge": "#9467bd", "answer": "#ff7f0e", "tail": "#7f7f7f", "unsegmented": "#bcbd22"}
BYTE_PIECE = "\u00b7"  # shown for a token that holds bytes of a character another token completes
READING_GUIDE = (
    "How to read: a token's weight multiplies its response's GRPO advantage, so on a negative advantage (e.g. reward 0) a high weight "
    "means more blame; only reasoning is reweighted (bridge, answer and tail keep weight 1); colours are scaled per response."
)


@dataclass(frozen=True)
class TokenHeatmap:
    """One response, one entry per response token.

    Attributes:
        pieces: the text each token contributes to the decoded response (a special token
            shows its name; a token holding only part of a multi-byte character shows
            `BYTE_PIECE`), so that the pieces put together read as the response.
        token_ids: the sampled ids.
        segments: reasoning / bridge / answer / tail / unsegmented per token.
        scores: raw attribution scores.
        weights: Bi-Level weights (1 where nothing was reweighted).
        prompt: the prompt as text.
        reward: the response's reward, when known.
        title: a heading (method, step, row...).
        notes: short facts shown under the title (answer found, degenerate, advantage...).
        fallback: why every weight is 1 (no answer found, empty reasoning...), shown as a
            warning; empty when the response was reweighted.
    """

    pieces: list[str]
    token_ids: list[int]
    segments: list[str]
    scores: list[float]
    weights: list[float]
    prompt: str = ""
    reward: float | None = None
    title: str = ""
    notes: tuple[str, ...] = ()
    fallback: str = ""

    def __post_init__(self) -> None:
        lengths = {len(self.pieces), len(self.token_ids), len(self.segments), len(self.scores), len(self.weights)}
        if len(lengths) != 1:
            raise ValueError(f"TokenHeatmap: pieces, token_ids, segments, scores and weights differ in length: {sorted(lengths)}")

    @classmethod
    def build(cls, tokenizer, token_ids: Sequence[int], segments, scores, weights, **details) -> TokenHeatmap:
        """From the sampled ids (padding removed) and per-token lists of equal length;
        `details` are the other fields (prompt, reward, title, notes)."""
        ids = [int(token) for token in token_ids]
        return cls(pieces=token_pieces(tokenizer, ids), token_ids=ids, segments=list(segments), scores=[float(s) for s in scores],
                   weights=[float(w) for w in weights], **details)  # fmt: skip

    @classmethod
    def from_explanation(cls, explanation, tokenizer, *, reward: float | None = None, title: str | None = None) -> TokenHeatmap:
        """From `oar_verl.core.explain`'s result (`fallback` from `fallback_reason`)."""
        notes = (f"target {explanation.target}", f"answer found: {explanation.answer_found}", f"degenerate: {explanation.degenerate}")
        return cls.build(
            tokenizer, explanation.response_ids, explanation.segments, explanation.scores, explanation.weights,
            prompt=tokenizer.decode(explanation.prompt_ids, skip_special_tokens=False), reward=reward,
            title=title if title is not None else explanation.method, notes=notes, fallback=fallback_reason(explanation),
        )  # fmt: skip

    def summary(self) -> list[str]:
        """The facts shown under the title: reward, length, then `notes`."""
        reward = "unknown" if self.reward is None else f"{self.reward:g}"
        return [f"reward {reward}", f"{len(self.token_ids)} tokens", *self.notes]

    def weight_range(self) -> tuple[float, float]:
        """(lowest, highest) finite weight, widened to include 1."""
        finite = [w for w in self.weights if math.isfinite(w)] or [1.0]
        return min(min(finite), 1.0), max(max(finite), 1.0)


def fallback_reason(explanation) -> str:
    """Why `oar_verl.core.explain`'s result kept every weight at 1 (plain GRPO); "" when it
    was reweighted."""
    if not explanation.degenerate:
        return ""
    if not explanation.answer_found:
        return "the answer pattern finds no answer"
    reasoning = [score for score, segment in zip(explanation.scores, explanation.segments) if segment == "reasoning"]
    if not reasoning:
        return "empty reasoning (the response starts with the answer's marker)"
    if not all(math.isfinite(score) for score in reasoning):
        return "non-finite attribution scores on the reasoning"
    return "constant attribution scores on the reasoning"


def token_pieces(tokenizer, ids: list[int]) -> list[str]:
    """The text each token adds to the decoded response, [N] strings (see `TokenHeatmap`)."""
    offsets = token_offsets(tokenizer, ids)
    special = set(tokenizer.all_special_ids)
    pieces, shown_until = [], 0
    for token, start, end in zip(ids, offsets.starts.tolist(), offsets.ends.tolist()):
        if token in special:
            pieces.append(tokenizer.convert_ids_to_tokens(token))
            continue
        piece = offsets.text[max(start, shown_until) : end]
        shown_until = max(shown_until, end)
        pieces.append(piece or BYTE_PIECE)
    return pieces


def scale_stops(low: float, high: float) -> list[float]:
    """The weights a colour legend shows: both ends, 1, and the midpoints."""
    return sorted({low, (low + 1) / 2, 1.0, (1 + high) / 2, high})


def weight_intensity(weight: float, low: float, high: float) -> float:
    """Signed colour intensity in [-1, 1]: 0 at weight 1, +1 at `high`, -1 at `low`
    (linear on each side, so monotone in the weight); non-finite weights give 0."""
    if not math.isfinite(weight):
        return 0.0
    if weight >= 1.0:
        return 0.0 if high <= 1.0 else min((weight - 1.0) / (high - 1.0), 1.0)
    return 0.0 if low >= 1.0 else -min((1.0 - weight) / (1.0 - low), 1.0)


def weight_colour(weight: float, low: float, high: float) -> tuple[int, int, int]:
    """RGB of a weight on the diverging scale: white at 1, red up to `high`, blue down to `low`."""
    intensity = weight_intensity(weight, low, high)
    target = BOOST if intensity > 0 else DAMP
    share = abs(intensity)
    return tuple(round(w + share * (t - w)) for w, t in zip(WHITE, target))
