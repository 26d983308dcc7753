"""Bi-Level reshaping: raw token scores -> advantage weights (OAR_SPEC section 6).

Per row, over its reasoning tokens R (the mask):

    l_t = log(1 + s_t)
    n_t = (l_t - min l) / (max l - min l)
    tau = quantile_q(n)                                   (linear interpolation, per row)
    w_t = max(n_t / tau, min_weight)                      if n_t <  tau   (suppress)
    w_t = 1 + beta (n_t - tau) / (1 - tau)                if n_t >= tau   (boost)
    w_t <- w_t |R| / sum_R w                              (preserve_mass)

Tokens outside the mask get weight 1, and so do all tokens of a degenerate row: no
reasoning token, max l = min l, or any non-finite score on a reasoning token.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def degenerate_rows(scores: torch.Tensor, reasoning_mask: torch.Tensor) -> torch.Tensor:
    """[B] bool: rows that Bi-Level leaves at weight 1 (empty mask, constant or non-finite
    scores on the mask). Levels that differ by less than the dtype's smallest normal number
    count as constant: a subnormal spread is below float resolution (and torch's
    vectorised log1p flushes subnormals to zero on some CPUs)."""
    _check_inputs(scores, reasoning_mask)
    mask = reasoning_mask
    finite = torch.isfinite(scores) | ~mask
    level = torch.log1p(torch.where(mask & finite, scores.clamp(min=0), 0.0))
    highest = torch.where(mask, level, -torch.inf).amax(dim=1)
    lowest = torch.where(mask, level, torch.inf).amin(dim=1)
    spread = highest - lowest  # [B]; -inf - inf = -inf on empty rows
    return ~mask.any(dim=1) | ~finite.all(dim=1) | ~(spread >= torch.finfo(level.dtype).tiny)


def low_signal_rows(scores: torch.Tensor, reasoning_mask: torch.Tensor, min_signal: float) -> torch.Tensor:
    """[B] bool: rows whose largest reasoning score is below `min_signal` times the median,
    over the rows with reasoning tokens, of each row's largest score. Bi-Level normalises each
    row on its own, so a row whose strongest token moves the answer a hundred times less
    than a typical row's would still get weights from `min_weight` to 1 + beta from score
    differences at noise level; such rows keep GRPO's weights instead. 0 turns it off.

    Args:
        scores: [B, T] raw scores (>= 0 on the mask; non-finite ones count as 0 here).
        reasoning_mask: [B, T] bool.
        min_signal: in [0, 1).
    """
    _check_inputs(scores, reasoning_mask)
    if not 0.0 <= min_signal < 1.0:
        raise ValueError(f"min_signal: expected a value in [0, 1), got {min_signal}")
    has_reasoning = reasoning_mask.any(dim=1)  # [B]
    if min_signal == 0.0 or not bool(has_reasoning.any()):
        return torch.zeros(scores.shape[0], dtype=torch.bool, device=scores.device)
    clean = torch.where(reasoning_mask & torch.isfinite(scores), scores.float(), 0.0)
    strongest = clean.amax(dim=1)  # [B]
    typical = strongest[has_reasoning].median()
    return has_reasoning & (strongest < min_signal * typical)


def bilevel_weights(
    scores: torch.Tensor,
    reasoning_mask: torch.Tensor,
    *,
    quantile: float = 0.25,
    beta: float = 1.0,
    min_weight: float = 0.1,
    preserve_mass: bool = True,
) -> torch.Tensor:
    """Token weights [B, T] (float32) from raw scores [B, T] (>= 0) on reasoning_mask [B, T].

    Args:
        scores: [B, T] floating, raw attribution scores; only masked entries are read.
        reasoning_mask: [B, T] bool, True on the reasoning tokens to reweight.
        quantile: q in (0, 1), the per-row quantile of n that splits suppress from boost.
        beta: >= 0, the largest boost above 1 (reached by the top-scoring token).
        min_weight: in (0, 1], the floor of suppressed weights.
        preserve_mass: rescale each row so its reasoning weights average 1.
    """
    _check_inputs(scores, reasoning_mask)
    if not 0.0 < quantile < 1.0:
        raise ValueError(f"quantile: expected a value in (0, 1), got {quantile}")
    if not beta >= 0.0 or beta == float("inf"):
        raise ValueError(f"beta: expected a finite value >= 0, got {beta}")
    if not 0.0 < min_weight <= 1.0:
        raise ValueError(f"min_weight: expected a value in (0, 1], got {min_weight}")
    mask = reasoning_mask
    degenerate = degenerate_rows(scores, mask)  # [B]
    if bool((mask & torch.isfinite(scores) & (scores < 0)).any()):
        raise ValueError("scores: raw attribution scores must be >= 0 on reasoning tokens")
    active = mask & ~degenerate[:, None]  # [B, T]
    level = torch.log1p(torch.where(active, scores, 0.0).double())  # [B, T], float64 for the ranks
    lowest = torch.where(active, level, torch.inf).amin(dim=1, keepdim=True)  # [B, 1]
    highest = torch.where(active, level, -torch.inf).amax(dim=1, keepdim=True)
    span = torch.where(degenerate[:, None], 1.0, highest - lowest)
    normalised = torch.where(active, (level - lowest) / span, 0.0)  # [B, T] in [0, 1]
    tau = _masked_quantile(normalised, active, quantile)  # [B, 1]

    suppressed = torch.clamp(normalised / tau.clamp(min=1e-300), min=min_weight)
    boosted = 1.0 + beta * torch.where(tau < 1.0, (normalised - tau) / (1.0 - tau).clamp(min=1e-300), 0.0)
    weights = torch.where(normalised < tau, suppressed, boosted)
    if preserve_mass:
        count = active.sum(dim=1, keepdim=True)
        total = torch.where(active, weights, 0.0).sum(dim=1, keepdim=True)
        weights = weights * torch.where(count > 0, count / total, 1.0)
    return torch.where(active, weights, 1.0).float()


@dataclass(frozen=True)
class RowWeights:
    """What `row_weights` gives: weights [B, T] float32 (1 wherever nothing is reweighted),
    and [B] bool the reweighted rows left at weight 1, `degenerate` (Bi-Level's fallback:
    empty reasoning, constant or non-finite scores) and `low_signal` (`low_signal_rows`)."""

    weights: torch.Tensor
    degenerate: torch.Tensor
    low_signal: torch.Tensor


def row_weights(
    scores: torch.Tensor,
    reasoning_mask: torch.Tensor,
    rows: torch.Tensor,
    *,
    quantile: float = 0.25,
    beta: float = 1.0,
    min_weight: float = 0.1,
    preserve_mass: bool = True,
    min_signal: float = 0.0,
) -> RowWeights:
    """The trainer's weights for the rows it reweights: `bilevel_weights` on `rows` ([B]
    bool) over `reasoning_mask` ([B, T] bool), with low-signal rows (`min_signal`) back at
    weight 1; scores [B, T] as `bilevel_weights` takes them."""
    reasoning = reasoning_mask & rows[:, None]
    weights = bilevel_weights(scores, reasoning, quantile=quantile, beta=beta, min_weight=min_weight, preserve_mass=preserve_mass)
    degenerate = rows & degenerate_rows(scores, reasoning)  # [B]
    low_signal = rows & ~degenerate & low_signal_rows(scores, reasoning & ~degenerate[:, None], min_signal)  # [B]
    return RowWeights(torch.where(low_signal[:, None], 1.0, weights), degenerate, low_signal)


def permute_within_rows(weights: torch.Tensor, mask: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A control for studies: each row's masked weights in a random order.

    Same weights per row (so the same distribution and, with `preserve_mass`, the same
    total), but no longer tied to the tokens the attribution scored.

    Args:
        weights: [B, R] float.
        mask: [B, R] bool, the entries to shuffle (the reasoning of reweighted rows).
        generator: a CPU generator (seeded by the caller).

    Returns:
        [B, R] weights, equal to `weights` outside `mask`.
    """
    permuted = weights.clone()
    for row in range(weights.shape[0]):
        positions = mask[row].nonzero().flatten()
        order = torch.randperm(len(positions), generator=generator).to(positions.device)
        permuted[row, positions] = weights[row, positions[order]]
    return permuted


def _masked_quantile(values: torch.Tensor, mask: torch.Tensor, q: float) -> torch.Tensor:
    """[B, 1] the q-quantile of each row's masked values (linear interpolation, as
    `torch.quantile`); 0 for rows with an empty mask."""
    count = mask.sum(dim=1, keepdim=True)  # [B, 1]
    ordered = torch.where(mask, values, torch.inf).sort(dim=1).values  # masked values first
    rank = q * (count - 1).clamp(min=0)  # [B, 1] fractional rank
    below = rank.floor().long()
    above = rank.ceil().long()
    low = ordered.gather(1, below)
    high = ordered.gather(1, above)
    quantile = low + (high - low) * (rank - below)
    return torch.where(count > 0, quantile, 0.0)


def _check_inputs(scores: torch.Tensor, reasoning_mask: torch.Tensor) -> None:
    if scores.dim() != 2:
        raise ValueError(f"scores: expected shape [B, T], got {tuple(scores.shape)}")
    if not scores.dtype.is_floating_point:
        raise ValueError(f"scores: expected a floating dtype, got {scores.dtype}")
    if reasoning_mask.dtype != torch.bool:
        raise ValueError(f"reasoning_mask: expected dtype torch.bool, got {reasoning_mask.dtype}")
    if reasoning_mask.shape != scores.shape:
        raise ValueError(f"reasoning_mask: expected shape {tuple(scores.shape)} like scores, got {tuple(reasoning_mask.shape)}")
