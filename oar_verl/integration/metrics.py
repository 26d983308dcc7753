"""`oar/*` metrics of one training step, for verl's trackers.

oar/weight/{mean,std,min,max}   over the reasoning tokens that were reweighted
oar/weight/frac_suppressed      share of those tokens with weight < 1 (damped)
oar/weight/frac_boosted         share with weight > 1 (boosted)
oar/answer_found_rate           share of the batch's responses whose answer was found
oar/rows/attributed             responses reweighted
oar/rows/zero_advantage         responses skipped: their group's rewards were all equal
oar/rows/degenerate             responses with nonzero advantage left at GRPO weights:
                                no answer, empty reasoning, constant or non-finite scores
oar/rows/low_signal             responses left at GRPO weights because their largest score
                                is below `min_signal` x the step's median row's
oar/ranks/without_attributed_rows  data-parallel ranks that attributed no response (they
                                ran one-token dummy steps while the others attributed)
"""

from __future__ import annotations

import torch


def oar_metrics(
    *,
    weights: torch.Tensor,
    reasoning: torch.Tensor,
    real: torch.Tensor,
    answer_found: torch.Tensor,
    nonzero: torch.Tensor,
    degenerate: torch.Tensor,
    low_signal: torch.Tensor,
    attributed: torch.Tensor,
    dp_rank: torch.Tensor,
) -> dict[str, float]:
    """weights [B, R]; reasoning [B, R] bool (reweighted tokens); real, answer_found,
    nonzero, degenerate, low_signal, attributed: [B] bool (padding rows have `real` False); dp_rank
    [B] int64, the data-parallel rank that held each row."""
    values = weights[reasoning].float()
    metrics = {
        "oar/answer_found_rate": float(answer_found[real].float().mean()) if bool(real.any()) else 0.0,
        "oar/rows/attributed": float(attributed.sum()),
        "oar/rows/zero_advantage": float((real & ~nonzero).sum()),
        "oar/rows/degenerate": float(degenerate.sum()),
        "oar/rows/low_signal": float(low_signal.sum()),
        "oar/ranks/without_attributed_rows": float(len(dp_rank.unique()) - len(dp_rank[attributed].unique())),
    }
    if values.numel():
        metrics.update(
            {
                "oar/weight/mean": float(values.mean()),
                "oar/weight/std": float(values.std(unbiased=False)),
                "oar/weight/min": float(values.min()),
                "oar/weight/max": float(values.max()),
                "oar/weight/frac_suppressed": float((values < 1).float().mean()),
                "oar/weight/frac_boosted": float((values > 1).float().mean()),
            }
        )
    return metrics
