"""A self-contained HTML page of token heatmaps: no script, no external resource.

Each response token is one `<span class="tok">` coloured by its weight (diverging around
1: red boosted, blue damped), underlined in its segment's colour, with the token index,
id, segment, raw score and weight on hover (`title`) and in `data-*` attributes. All text
is escaped, so a response cannot inject markup; without scripts a long response renders
as plain text does. The page opens with `READING_GUIDE`; a response whose weights all
fell back to 1 says why above its tokens.
"""

from __future__ import annotations

import html
from collections.abc import Sequence

from oar_verl.viz.heatmap import READING_GUIDE, SEGMENT_COLOURS, TokenHeatmap, scale_stops, weight_colour

STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
section.heatmap { margin-bottom: 2.5em; }
h2 { font-size: 1.1em; margin: 0 0 .3em; }
.notes { color: #555; font-size: .9em; margin: 0 0 .5em; }
.guide { background: #f6f6f6; padding: .5em .7em; font-size: .9em; }
.fallback { color: #8a1c1c; background: #fdecea; border-left: 4px solid #d62728; padding: .3em .6em; margin: 0 0 .5em; }
pre.prompt { background: #f6f6f6; padding: .6em; white-space: pre-wrap; font-size: .85em; }
.legend { font-size: .85em; margin: .4em 0; }
.legend span { display: inline-block; padding: 0 .4em; margin-right: .3em; }
.response { font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: 1.15em; line-height: 1.9; white-space: pre-wrap; word-break: break-all; }
.tok, .key { padding: 1px 0; border-bottom: 3px solid transparent; }
""" + "".join(f".seg-{name} {{ border-bottom-color: {colour}; }}\n" for name, colour in SEGMENT_COLOURS.items())


def render_html(heatmaps: Sequence[TokenHeatmap], *, title: str = "OAR token credit") -> str:
    """One page with a section per heatmap."""
    sections = "\n".join(_section(index, heatmap) for index, heatmap in enumerate(heatmaps))
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head>\n"
        f'<body><h1>{html.escape(title)}</h1>\n<p class="guide">{html.escape(READING_GUIDE)}</p>\n{sections}\n</body></html>\n'
    )


def _section(index: int, heatmap: TokenHeatmap) -> str:
    low, high = heatmap.weight_range()
    notes = " · ".join(html.escape(note) for note in heatmap.summary())
    tokens = "".join(_token(k, heatmap, low, high) for k in range(len(heatmap.token_ids)))
    fallback = f'<p class="fallback">not reweighted, all weights 1: {html.escape(heatmap.fallback)}</p>' if heatmap.fallback else ""
    return (
        f'<section class="heatmap" id="response-{index}">'
        f'<h2>{html.escape(heatmap.title or f"response {index}")}</h2><p class="notes">{notes}</p>{fallback}'
        f'<details><summary>prompt</summary><pre class="prompt">{html.escape(heatmap.prompt)}</pre></details>'
        f'{_legend(low, high)}<div class="response">{tokens}</div></section>'
    )


def _token(k: int, heatmap: TokenHeatmap, low: float, high: float) -> str:
    weight, score, segment = heatmap.weights[k], heatmap.scores[k], heatmap.segments[k]
    red, green, blue = weight_colour(weight, low, high)
    hover = f"token {k} · id {heatmap.token_ids[k]} · {segment}\nscore {score:.4g}\nweight {weight:.4f}"
    text = heatmap.pieces[k].replace("\n", "\u21b5\n")
    return (
        f'<span class="tok seg-{html.escape(segment)}" style="background-color: rgb({red}, {green}, {blue})" '
        f'data-weight="{weight:.6g}" data-score="{score:.6g}" title="{html.escape(hover)}">{html.escape(text)}</span>'
    )


def _legend(low: float, high: float) -> str:
    swatches = "".join(f'<span style="background-color: rgb{weight_colour(w, low, high)}">{w:.2f}</span>' for w in scale_stops(low, high))
    segments = "".join(f'<span class="key seg-{name}">{name}</span>' for name in SEGMENT_COLOURS)
    return f'<div class="legend">weight {swatches} &nbsp; segment {segments}</div>'
