"""A PNG of one token heatmap (matplotlib, Agg canvas: no display, safe off the main thread).

Tokens flow as monospace text in lines of `width` characters, each on a box coloured by
its weight and underlined in its segment's colour; a header gives the title, reward and
notes, a footer the colour scale.
"""

from __future__ import annotations

from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from oar_verl.viz.heatmap import SEGMENT_COLOURS, TokenHeatmap, scale_stops, weight_colour

FONT = {"family": "DejaVu Sans Mono", "size": 10}
CHAR_WIDTH_IN = 0.6 * FONT["size"] / 72  # DejaVu Sans Mono advance: 0.6 em
LINE_HEIGHT_IN = 1.9 * FONT["size"] / 72
HEADER_LINES, FOOTER_LINES = 3, 2


def render_png(heatmap: TokenHeatmap, path: str | Path, *, width: int = 100, max_tokens: int = 3000, dpi: int = 150) -> Path:
    """Writes the heatmap to `path` as a PNG; tokens past `max_tokens` are left out (noted).

    Returns the path.
    """
    if width < 10:
        raise ValueError(f"width: expected at least 10 characters per line, got {width}")
    low, high = heatmap.weight_range()
    boxes = _layout(heatmap.pieces[:max_tokens], width)
    lines = (boxes[-1][1] + 1) if boxes else 1
    figure = Figure(figsize=(width * CHAR_WIDTH_IN + 0.4, (lines + HEADER_LINES + FOOTER_LINES) * LINE_HEIGHT_IN + 0.3), dpi=dpi)
    FigureCanvasAgg(figure)
    axes = figure.add_axes((0.2 / figure.get_figwidth(), 0.0, width * CHAR_WIDTH_IN / figure.get_figwidth(), 1.0))
    axes.set_xlim(0, width)
    axes.set_ylim(lines + HEADER_LINES + FOOTER_LINES, 0)
    axes.axis("off")

    notes = heatmap.summary()
    if len(heatmap.pieces) > max_tokens:
        notes.append(f"first {max_tokens} shown")
    axes.text(0, 0.8, heatmap.title or "OAR token credit", fontdict={**FONT, "weight": "bold"}, va="center")
    axes.text(0, 1.9, " · ".join(notes)[:width], fontdict={**FONT, "color": "#555555"}, va="center")

    for index, (column, line, text) in enumerate(boxes):
        top = line + HEADER_LINES
        colour = [c / 255 for c in weight_colour(heatmap.weights[index], low, high)]
        axes.add_patch(Rectangle((column, top + 0.1), len(text), 0.8, facecolor=colour, edgecolor="none"))
        axes.add_patch(Rectangle((column, top + 0.85), len(text), 0.1, facecolor=SEGMENT_COLOURS.get(heatmap.segments[index], "#000000"), edgecolor="none"))
        axes.text(column, top + 0.5, text, fontdict=FONT, va="center")

    _scale(axes, lines + HEADER_LINES + 0.6, low, high, width)
    figure.savefig(path, format="png")
    return Path(path)


def _layout(pieces: list[str], width: int) -> list[tuple[int, int, str]]:
    """(column, line, shown text) of each token: a newline shows as "↵" and ends the line;
    a piece that does not fit starts a new line (and is cut at `width`)."""
    boxes, column, line = [], 0, 0
    for piece in pieces:
        newline = piece.endswith("\n")
        text = (piece.replace("\n", "\u21b5") or " ")[:width]
        if column + len(text) > width:
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
