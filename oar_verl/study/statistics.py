"""The study's statistics, as pre-registered in docs/results.md: the primary metric of a
run, paired per-seed differences between two methods with a t interval and an exact
sign-flip test, and Holm's correction over the contrasts."""

from __future__ import annotations

import itertools
import math
import statistics
from dataclasses import dataclass

from scipy.stats import t as student_t


def primary_metric(run: dict) -> float:
    """Mean held-out accuracy over a run's evaluations after training began (step >= 1)."""
    values = [accuracy for step, accuracy in run["accuracy"].items() if int(step) >= 1]
    if not values:
        raise ValueError(f"run {run['method']} seed {run['seed']}: no held-out evaluation after step 0")
    return statistics.fmean(values)


@dataclass(frozen=True)
class Contrast:
    """`minuend` - `subtrahend` on the primary metric, paired by seed.

    Attributes:
        differences: per common seed, in seed order.
        mean, low, high: the mean difference and its t interval (`level`).
        p_sign_flip: exact two-sided sign-flip p-value (every sign pattern of the differences).
        p_holm: the p-value after Holm's correction over the study's contrasts (None until set).
    """

    minuend: str
    subtrahend: str
    seeds: tuple[int, ...]
    differences: tuple[float, ...]
    mean: float
    low: float
    high: float
    level: float
    p_sign_flip: float
    p_holm: float | None = None

    @property
    def name(self) -> str:
        return f"{self.minuend} - {self.subtrahend}"


def t_interval(values: list[float], level: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high): Student's t interval of the mean of `values` (n >= 2)."""
    if len(values) < 2:
        raise ValueError(f"t interval: needs at least 2 values, got {len(values)}")
    mean = statistics.fmean(values)
    half = student_t.ppf(0.5 + level / 2, len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
    return mean, float(mean - half), float(mean + half)


def sign_flip_p(values: list[float]) -> float:
    """Exact two-sided p-value of mean(values) = 0 under random signs: the share of the 2^n
    sign patterns whose |mean| is at least the observed one."""
    observed = abs(sum(values))
    patterns = list(itertools.product((1, -1), repeat=len(values)))
    extreme = sum(abs(sum(sign * value for sign, value in zip(signs, values))) >= observed - 1e-12 for signs in patterns)
    return extreme / len(patterns)


def holm(p_values: dict[str, float]) -> dict[str, float]:
    """Holm's step-down adjusted p-values (family-wise error), same keys."""
    order = sorted(p_values, key=p_values.get)
    adjusted, running = {}, 0.0
    for rank, name in enumerate(order):
        running = max(running, min(1.0, (len(order) - rank) * p_values[name]))
        adjusted[name] = running
    return adjusted


def contrast(runs: list[dict], minuend: str, subtrahend: str, level: float = 0.95) -> Contrast:
    """The paired contrast of two methods over the seeds both have."""
    by_seed = {(run["method"], run["seed"]): primary_metric(run) for run in runs}
    seeds = tuple(sorted(seed for method, seed in by_seed if method == minuend and (subtrahend, seed) in by_seed))
    differences = tuple(by_seed[(minuend, seed)] - by_seed[(subtrahend, seed)] for seed in seeds)
    mean, low, high = t_interval(list(differences), level)
    return Contrast(minuend, subtrahend, seeds, differences, mean, low, high, level, sign_flip_p(list(differences)))


def contrasts(runs: list[dict], pairs: list[tuple[str, str]], level: float = 0.95) -> list[Contrast]:
    """Every pair's contrast (pairs whose methods share fewer than 2 seeds left out), with
    Holm's correction over the whole family `pairs`: a contrast not computed counts with
    p = 1, its most conservative value, so that a cut-short study's p-values are not
    corrected over fewer contrasts than were pre-registered."""
    done = {(run["method"], run["seed"]) for run in runs}
    seeds = {seed for _, seed in done}
    computed = [contrast(runs, a, b, level) for a, b in pairs if sum((a, seed) in done and (b, seed) in done for seed in seeds) >= 2]
    family = {f"{a} - {b}": 1.0 for a, b in pairs}
    adjusted = holm({**family, **{c.name: c.p_sign_flip for c in computed}})
    return [Contrast(**{**c.__dict__, "p_holm": adjusted[c.name]}) for c in computed]


def gate_passed(runs: list[dict], level: float = 0.95) -> tuple[bool, Contrast]:
    """Whether the oracle beats GRPO beyond its interval (the low end above 0), and the contrast."""
    result = contrast(runs, "oracle", "grpo", level)
    return result.low > 0, result
