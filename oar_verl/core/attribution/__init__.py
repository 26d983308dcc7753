"""Attribution methods, one module each, one interface:

    attribute(model, batch: ResponseBatch, segments: Segments, config, rows=None) -> scores [B, R]

`METHODS` maps each estimator name to its module's `attribute` and config class;
`fused_attribution(config)` gives the variant fused with the trainer's log-prob pass where
the method's clean forward can serve as that pass.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from oar_verl.core.attribution import gradient, perturbation, taylor
from oar_verl.core.attribution.gradient import GradientConfig
from oar_verl.core.attribution.perturbation import PerturbationConfig


@dataclass(frozen=True)
class Method:
    attribute: Callable
    config_class: type


METHODS: dict[str, Method] = {
    perturbation.NAME: Method(perturbation.attribute, PerturbationConfig),
    gradient.NAME: Method(gradient.attribute, GradientConfig),
}


def get_method(name: str, setting: str = "method") -> Method:
    if name not in METHODS:
        raise ValueError(f"{setting}: unknown attribution method {name!r}, expected one of {sorted(METHODS)}")
    return METHODS[name]


def fused_attribution(config: GradientConfig | PerturbationConfig) -> Callable | None:
    """`attribute_with_log_probs(model, batch, segments, config, rows=None, *, temperature,
    log_prob_fn, sync_passes) -> chunks.ScoresAndLogProbs` of the method `config` runs:
    OAR-G, and OAR-P's `taylor` mode (one clean forward with autograd); None for OAR-P's
    other modes, whose passes are not a forward over whole sequences."""
    if isinstance(config, GradientConfig):
        return gradient.attribute_with_log_probs
    if isinstance(config, PerturbationConfig) and config.mode == "taylor":
        return taylor.attribute_with_log_probs
    return None


__all__ = ["METHODS", "GradientConfig", "Method", "PerturbationConfig", "fused_attribution", "get_method"]
