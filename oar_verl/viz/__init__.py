"""Token heatmaps of OAR's credit: which tokens were boosted, which damped.

    heatmap = TokenHeatmap.from_explanation(explanation, tokenizer)
    Path("explain.html").write_text(render_html([heatmap]))   # self-contained page
    render_png(heatmap, "explain.png")                          # for papers and issues

Never imports verl; the training-time hook lives in `oar_verl.integration.heatmaps`.
"""

from oar_verl.viz.heatmap import READING_GUIDE, TokenHeatmap, fallback_reason, weight_colour
from oar_verl.viz.html import render_html
from oar_verl.viz.png import render_png

__all__ = ["READING_GUIDE", "TokenHeatmap", "fallback_reason", "render_html", "render_png", "weight_colour"]
