"""A PNG of one token heatmap (matplotlib, Agg canvas: no display, safe off the main thread).

Tokens flow as monospace text in lines of `width` characters, each on a box coloured by
its weight and underlined in its segment's colour; a header gives the title, reward and
notes (and why the weights fell back to 1, when they did), a footer the colour scale and a
caption on how to read it (`READING_GUIDE`). A response longer than `max_tokens` keeps its
first tokens, its bridge and answer and its last lines, with a "…" line in place of the
tokens left out of the middle.
"""

from __future__ import annotations

import textwrap
from collections.abc import Container
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from oar_verl.viz.heatmap import READING_GUIDE, SEGMENT_COLOURS, TokenHeatmap, scale_stops, weight_colour

FONT = {"family": "DejaVu Sans Mono", "size": 10}
CHAR_WIDTH_IN = 0.6 * FONT["size"] / 72  # DejaVu Sans Mono advance: 0.6 em
LINE_HEIGHT_IN = 1.9 * FONT["size"] / 72
SCALE_LINES = 2  # the colour scale and the space above it
MARKED_SEGMENTS = ("bridge", "answer")  # always drawn, however long the response
ELIDED_COLOUR = "#eeeeee"


def render_png(heatmap: TokenHeatmap, path: str | Path, *, width: int = 100, max_tokens: int = 3000, dpi: int = 150) -> Path:
    """Writes the heatmap to `path` as a PNG; past `max_tokens` tokens, the middle is left
    out (see the module docstring). Returns the path."""
    if width < 10:
        raise ValueError(f"width: expected at least 10 characters per line, got {width}")
    low, high = heatmap.weight_range()
    shown = _shown_tokens(heatmap.segments, max_tokens)
    pieces = [heatmap.pieces[k] if isinstance(k, int) else f"\u2026 {len(k)} tokens left out \u2026" for k in shown]
    boxes = _layout(pieces, width, elided={i for i, k in enumerate(shown) if isinstance(k, range)})
    header = _header(heatmap, len(heatmap.pieces) - sum(isinstance(k, int) for k in shown), width)
    caption = textwrap.wrap(READING_GUIDE, width)
    top = len(header) + 1  # first line of tokens
    lines = (boxes[-1][1] + 1) if boxes else 1
    height = top + lines + SCALE_LINES + len(caption)
    figure = Figure(figsize=(width * CHAR_WIDTH_IN + 0.4, height * LINE_HEIGHT_IN + 0.3), dpi=dpi)
    FigureCanvasAgg(figure)
    axes = figure.add_axes((0.2 / figure.get_figwidth(), 0.0, width * CHAR_WIDTH_IN / figure.get_figwidth(), 1.0))
    axes.set_xlim(0, width)
    axes.set_ylim(height, 0)
    axes.axis("off")

    for line, (text, style) in enumerate(header):
        axes.text(0, 0.8 + 1.1 * line, text, fontdict={**FONT, **style}, va="center")
    for (column, line, text), k in zip(boxes, shown):
        _token(axes, heatmap, k, column, top + line, text, low, high)
    _scale(axes, top + lines + 0.6, low, high, width)
    for line, text in enumerate(caption):
        axes.text(0, top + lines + SCALE_LINES + 0.5 + line, text, fontdict={**FONT, "color": "#555555"}, va="center")
    figure.savefig(path, format="png")
    return Path(path)


def _header(heatmap: TokenHeatmap, left_out: int, width: int) -> list[tuple[str, dict]]:
    """(text, font style) of each header line: the title, the notes, why the weights fell back."""
    notes = heatmap.summary() + ([f"{left_out} tokens left out"] if left_out else [])
    header = [(heatmap.title or "OAR token credit", {"weight": "bold"}), (" · ".join(notes)[:width], {"color": "#555555"})]
    if heatmap.fallback:
        header.append((f"not reweighted, all weights 1: {heatmap.fallback}"[:width], {"color": "#b00000"}))
    return header


def _token(axes, heatmap: TokenHeatmap, k: int | range, column: int, top: float, text: str, low: float, high: float) -> None:
    """Token `k` (or, for a range, the marker of the tokens left out) at `column` of line `top`."""
    if isinstance(k, range):
        axes.add_patch(Rectangle((column, top + 0.1), len(text), 0.8, facecolor=ELIDED_COLOUR, edgecolor="none"))
        axes.text(column, top + 0.5, text, fontdict={**FONT, "color": "#555555"}, va="center")
        return
    colour = [c / 255 for c in weight_colour(heatmap.weights[k], low, high)]
    segment_colour = SEGMENT_COLOURS.get(heatmap.segments[k], "#000000")
    axes.add_patch(Rectangle((column, top + 0.1), len(text), 0.8, facecolor=colour, edgecolor="none"))
    axes.add_patch(Rectangle((column, top + 0.85), len(text), 0.1, facecolor=segment_colour, edgecolor="none"))
    axes.text(column, top + 0.5, text, fontdict=FONT, va="center")


def _shown_tokens(segments: list[str], max_tokens: int) -> list[int | range]:
    """The token indices to draw, in order, with a range of the tokens left out in place of
    each gap: all tokens when they are at most `max_tokens`, else the last quarter of
    `max_tokens`, the bridge and answer (even past `max_tokens`), and as many first tokens
    as the rest of `max_tokens` allows."""
    count = len(segments)
    if count <= max_tokens:
        return list(range(count))
    marked = [k for k, segment in enumerate(segments) if segment in MARKED_SEGMENTS]
    kept = set(range(count - max_tokens // 4, count)) | set(range(marked[0], marked[-1] + 1) if marked else ())
    kept |= set(range(max(max_tokens - len(kept), 0)))
    shown, following = [], 0
    for k in sorted(kept):
        if k > following:
            shown.append(range(following, k))
        shown.append(k)
        following = k + 1
    return shown


def _layout(pieces: list[str], width: int, elided: Container[int] = ()) -> list[tuple[int, int, str]]:
    """(column, line, shown text) of each token: a newline shows as "↵" and ends the line;
    a piece that does not fit starts a new line (and is cut at `width`); the pieces at the
    positions `elided` (markers of tokens left out) have a line of their own."""
    boxes, column, line = [], 0, 0
    for index, piece in enumerate(pieces):
        newline = piece.endswith("\n") or index in elided
        text = (piece.replace("\n", "\u21b5") or " ")[:width]
        if column + len(text) > width or (index in elided and column > 0):
            column, line = 0, line + 1
        boxes.append((column, line, text))
        column += len(text)
        if newline:
            column, line = 0, line + 1
    return boxes


def _scale(axes, top: float, low: float, high: float, width: int) -> None:
    """The colour scale from `low` to `high` and the segment key, on one line."""
    column = 0
    axes.text(column, top + 0.5, "weight", fontdict=FONT, va="center")
    column += 7
    for weight in scale_stops(low, high):
        label = f"{weight:.2f}"
        axes.add_patch(Rectangle((column, top + 0.1), len(label) + 1, 0.8, facecolor=[c / 255 for c in weight_colour(weight, low, high)]))
        axes.text(column + 0.5, top + 0.5, label, fontdict=FONT, va="center")
        column += len(label) + 2
    column += 2
    for name, colour in SEGMENT_COLOURS.items():
        if column + len(name) > width:
            break
        axes.add_patch(Rectangle((column, top + 0.85), len(name), 0.1, facecolor=colour, edgecolor="none"))
        axes.text(column, top + 0.5, name, fontdict=FONT, va="center")
        column += len(name) + 2
