"""OAR-P `guided_approx`: APPROXIMATE. OAR-G ranks each row's reasoning tokens; the top
`guided_fraction` of them and a random `calibration_fraction` of the others are scored
exactly (OAR-P's perturbed passes), and every other token gets its OAR-G score times a,
a fitted per row by least squares through the origin on the calibration tokens (on every
measured token when a row has none)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from oar_verl.core.attribution import gradient
from oar_verl.core.attribution.base import PassSync, TokenScores
from oar_verl.core.attribution.configs import GradientConfig, PerturbationConfig
from oar_verl.core.layout import ResponseBatch
from oar_verl.core.spans import Segments


@dataclass(frozen=True)
class GuidedUnits:
    """The tokens guided_approx scores exactly, per row of a batch of B rows.

    Attributes:
        guide: [B, R] OAR-G scores.
        top: per row, [k_b] the positions OAR-G ranks highest (k_b = ceil(guided_fraction n_b)).
        calibration: per row, [c_b] positions drawn at random from the others.
    """

    guide: torch.Tensor
    top: list[torch.Tensor]
    calibration: list[torch.Tensor]

    @property
    def units(self) -> list[torch.Tensor]:
        """Per row, the sorted positions scored exactly (top and calibration)."""
        return [torch.cat([top, drawn]).sort().values for top, drawn in zip(self.top, self.calibration)]


def guided_units(
    model: torch.nn.Module, batch: ResponseBatch, segments: Segments, config: PerturbationConfig, sync_passes: PassSync | None
) -> GuidedUnits:
    """OAR-G's scores of every row (its steps run on every rank, dummies on a rank without
    rows), the top tokens by them, and the calibration draw (seeded by `config.seed`)."""
    guide_config = GradientConfig(target=config.target, seed=config.seed, max_tokens_per_pass=config.max_tokens_per_pass)
    with torch.enable_grad():
        guide = gradient.attribute(model, batch, segments, guide_config, sync_passes=sync_passes)  # [B, R]
    generator = torch.Generator().manual_seed(config.seed)
    top, calibration = [], []
    for row, end in enumerate(segments.reasoning_end.tolist()):
        order = guide[row, :end].argsort(descending=True).cpu()
        chosen = order[: math.ceil(config.guided_fraction * end)]
        rest = order[len(chosen) :]
        drawn = rest[torch.randperm(len(rest), generator=generator)[: math.ceil(config.calibration_fraction * len(rest))]]
        top.append(chosen.to(guide.device))
        calibration.append(drawn.to(guide.device))
    return GuidedUnits(guide, top, calibration)


def fill_unmeasured(units: GuidedUnits, segments: Segments, measured: TokenScores) -> TokenScores:
    """The exact scores `measured` on the units, and a_b x OAR-G on every other reasoning
    token of row b (see the module docstring)."""
    pieces = [measured]
    for row, end in enumerate(segments.reasoning_end.tolist()):
        device = units.guide.device
        is_measured = torch.zeros(end, dtype=torch.bool, device=device)
        is_measured[units.top[row]] = True
        is_measured[units.calibration[row]] = True
        exact = torch.zeros(end, dtype=measured.value.dtype, device=device)
        mine = measured.row == row
        exact[measured.token[mine]] = measured.value[mine]
        g = units.guide[row, :end].to(measured.value.dtype)
        calibration = is_measured.clone()
        calibration[units.top[row]] = False
        fit = calibration if bool(calibration.any()) else is_measured
        denominator = float((g[fit] ** 2).sum())
        scale = float((exact[fit] * g[fit]).sum()) / denominator if denominator > 0 else 0.0
        others = (~is_measured).nonzero().squeeze(1)
        pieces.append(TokenScores(torch.full((len(others),), row, device=device), others, scale * g[others]))
    return TokenScores.cat(pieces, measured.value.device)
