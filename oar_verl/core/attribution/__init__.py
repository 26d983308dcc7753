"""Attribution methods, one module each, one interface:

    attribute(model, batch: ResponseBatch, segments: Segments, config, rows=None) -> scores [B, R]

`METHODS` maps each estimator name to its module's `attribute` and config class.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from oar_verl.core.attribution import gradient, perturbation
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


__all__ = ["METHODS", "GradientConfig", "Method", "PerturbationConfig", "get_method"]
