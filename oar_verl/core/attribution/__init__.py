"""Attribution: raw scores [B, R] of every reasoning token of the attributed rows, 0 elsewhere.

    attribute(model, batch, segments, config, rows=None, sync_passes=None) -> scores [B, R]
    attribute_with_log_probs(...) -> chunks.ScoresAndLogProbs    (fused with the log-prob pass)

The method and mode are the config's: `GradientConfig` runs OAR-G (`gradient.py`);
`PerturbationConfig` runs OAR-P, by perturbed passes (`perturbation.py`: exact,
span_approx, and guided_approx with `guided.py`) or by its Taylor expansion (`taylor.py`).
The gradient methods (OAR-G, taylor) run on the chunk driver (`chunks.py`), which can fuse
them with the trainer's log-prob pass; `base.py` holds what every method shares.

    configs  <-  base  <-  chunks  <-  gradient, taylor  <-  guided  <-  perturbation  <-  this dispatch
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from oar_verl.core.attribution import gradient, perturbation, taylor
from oar_verl.core.attribution.base import PassSync
from oar_verl.core.attribution.chunks import ScoresAndLogProbs
from oar_verl.core.attribution.configs import GradientConfig, PerturbationConfig
from oar_verl.core.layout import ResponseBatch
from oar_verl.core.spans import Segments

METHODS: dict[str, type] = {gradient.NAME: GradientConfig, perturbation.NAME: PerturbationConfig}
"""Estimator name -> the config class of its method."""


def config_class(name: str, setting: str = "method") -> type:
    """The config class of the method an estimator name runs."""
    if name not in METHODS:
        raise ValueError(f"{setting}: unknown attribution method {name!r}, expected one of {sorted(METHODS)}")
    return METHODS[name]


def attribute(
    model: torch.nn.Module,
    batch: ResponseBatch,
    segments: Segments,
    config: GradientConfig | PerturbationConfig,
    rows: torch.Tensor | None = None,
    sync_passes: PassSync | None = None,
) -> torch.Tensor:
    """Scores [B, R] (float32) of the method and mode `config` names; see the methods'
    `attribute` for the arguments."""
    if isinstance(config, GradientConfig):
        return gradient.attribute(model, batch, segments, config, rows, sync_passes)
    if isinstance(config, PerturbationConfig):
        module = taylor if config.mode == "taylor" else perturbation
        return module.attribute(model, batch, segments, config, rows, sync_passes)
    raise TypeError(f"config: expected a GradientConfig or a PerturbationConfig, got {type(config).__name__}")


def fused_attribution(config: GradientConfig | PerturbationConfig) -> Callable[..., ScoresAndLogProbs] | None:
    """`attribute_with_log_probs(model, batch, segments, config, rows=None, *, temperature,
    log_prob_fn, sync_passes) -> chunks.ScoresAndLogProbs` of the method `config` runs:
    OAR-G, and OAR-P's `taylor` mode (one clean forward with autograd); None for OAR-P's
    other modes, whose passes are not a forward over whole sequences."""
    if isinstance(config, GradientConfig):
        return gradient.attribute_with_log_probs
    if isinstance(config, PerturbationConfig) and config.mode == "taylor":
        return taylor.attribute_with_log_probs
    return None


__all__ = ["METHODS", "GradientConfig", "PerturbationConfig", "ScoresAndLogProbs", "attribute", "config_class", "fused_attribution"]
