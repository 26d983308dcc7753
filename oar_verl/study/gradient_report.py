"""The gradient-level test's statistics and page, as pre-registered in docs/results.md:
paired per-batch differences (arm - GRPO) of the cosine with the reference gradient and of
the first-order AdamW gain, the calibration on chains, the decision on filler with Holm's
correction over its family of 10 contrasts."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from scipy.stats import t as student_t

from oar_verl.study.gradient_test import ARMS, CHECKPOINTS
from oar_verl.study.statistics import holm, t_interval

CLOSE_TO_GRPO = 0.05  # calibration: |oracle_beta1 - GRPO| <= this share of GRPO's mean cosine
MIN_RELATIVE_GAIN = 0.10  # decision: the oracle mask's mean gain >= this share of GRPO's mean cosine
KEEPS_OF_ORACLE_GAIN = 0.5  # decision: an estimator keeps at least this share of the oracle mask's gain
LEVEL = 0.95
ESTIMATORS = ("oar_g", "oar_p_taylor")
ARM_LABELS = {"grpo": "GRPO", "oracle_mask": "oracle mask", "oracle_beta1": "oracle, Bi-Level beta 1", "oracle_beta40": "oracle, Bi-Level beta 40",
              "oar_g": "OAR-G", "oar_g_permuted": "OAR-G permuted", "oar_p_taylor": "OAR-P taylor",
              "oar_p_taylor_permuted": "OAR-P taylor permuted"}  # fmt: skip


@dataclass(frozen=True)
class Paired:
    """`minuend` - `subtrahend` of one measure over a cell's batches with a gradient:
    mean, t interval, paired t-test p."""

    minuend: str
    subtrahend: str
    n: int
    mean: float
    low: float
    high: float
    p: float


def measure(cell: dict, arm: str, name: str) -> list[float]:
    """Per batch with a gradient (`with_gradient`), `arm`'s `name` (cosine, gain or norm)."""
    return [batch["arms"][arm][name] for batch in with_gradient(cell)]


def with_gradient(cell: dict) -> list[dict]:
    """A cell's batches where GRPO's gradient is not 0: a batch whose every advantage is 0
    gives no arm a gradient (its cosines are undefined, its AdamW gain is momentum's only)."""
    return [batch for batch in cell["batches"] if batch["arms"]["grpo"]["norm"] > 0]


def paired(cell: dict, minuend: str, subtrahend: str, name: str = "cosine") -> Paired:
    """The paired difference of `name` between two arms over a cell's batches."""
    pairs = [(a, b) for a, b in zip(measure(cell, minuend, name), measure(cell, subtrahend, name)) if math.isfinite(a) and math.isfinite(b)]
    differences = [a - b for a, b in pairs]
    if len(differences) < 2:
        return Paired(minuend, subtrahend, len(differences), math.nan, math.nan, math.nan, math.nan)
    mean, low, high = t_interval(differences, LEVEL)
    spread = statistics.stdev(differences)
    if spread == 0:
        return Paired(minuend, subtrahend, len(differences), mean, mean, mean, 1.0 if mean == 0 else 0.0)
    p = 2 * student_t.sf(abs(mean) / (spread / math.sqrt(len(differences))), len(differences) - 1)
    return Paired(minuend, subtrahend, len(differences), mean, low, high, float(p))


def finite_mean(values: list[float]) -> float:
    finite = [value for value in values if math.isfinite(value)]
    return statistics.fmean(finite) if finite else float("nan")


def calibration(cell: dict) -> dict:
    """Chains: beta 1 close to GRPO and beta 40 below it (the cosine)."""
    grpo = finite_mean(measure(cell, "grpo", "cosine"))
    beta1, beta40 = paired(cell, "oracle_beta1", "grpo"), paired(cell, "oracle_beta40", "grpo")
    close, below = abs(beta1.mean) <= CLOSE_TO_GRPO * abs(grpo), beta40.high < 0
    return {"grpo_cosine": grpo, "beta1": beta1, "beta40": beta40, "beta1_close": close, "beta40_below": below, "passed": close and below}


def decision(results: dict) -> dict:
    """Filler, both checkpoints: the family of 10 contrasts with Holm's p-values, whether
    reweighting can help, and whether OAR delivers it."""
    family = {}
    for checkpoint in CHECKPOINTS:
        cell = results["cells"][f"filler/{checkpoint}"]
        for arm in ("oracle_mask", *ESTIMATORS):
            family[f"{checkpoint}: {arm} - grpo"] = paired(cell, arm, "grpo")
        for arm in ESTIMATORS:
            family[f"{checkpoint}: {arm} - {arm}_permuted"] = paired(cell, arm, f"{arm}_permuted")
    adjusted = holm({name: contrast.p for name, contrast in family.items()})

    def beats(name: str) -> bool:
        return family[name].mean > 0 and adjusted[name] < 1 - LEVEL

    can_help, delivers = True, {arm: True for arm in ESTIMATORS}
    for checkpoint in CHECKPOINTS:
        grpo = finite_mean(measure(results["cells"][f"filler/{checkpoint}"], "grpo", "cosine"))
        oracle = family[f"{checkpoint}: oracle_mask - grpo"]
        can_help &= beats(f"{checkpoint}: oracle_mask - grpo") and oracle.mean >= MIN_RELATIVE_GAIN * abs(grpo)
        for arm in ESTIMATORS:
            keeps = family[f"{checkpoint}: {arm} - grpo"].mean >= KEEPS_OF_ORACLE_GAIN * oracle.mean
            delivers[arm] &= keeps and beats(f"{checkpoint}: {arm} - {arm}_permuted")
    return {"family": family, "holm": adjusted, "can_help": can_help, "delivers": {arm: can_help and ok for arm, ok in delivers.items()}}


def plot_cosines(results: dict, path: Path) -> Path:
    """Per cell, each arm's mean cosine difference from GRPO with its 95% interval."""
    cells = list(results["cells"])
    figure = Figure(figsize=(5.2 * len(cells), 3.6))
    arms = [arm for arm in ARMS if arm != "grpo"]
    for column, key in enumerate(cells):
        axes = figure.add_subplot(1, len(cells), column + 1)
        contrasts = [paired(results["cells"][key], arm, "grpo") for arm in arms]
        for row, contrast in enumerate(contrasts):
            axes.errorbar(contrast.mean, row, xerr=[[contrast.mean - contrast.low], [contrast.high - contrast.mean]], fmt="o", capsize=3)
        axes.axvline(0.0, color="grey", linewidth=0.8)
        axes.set_yticks(range(len(arms)), [ARM_LABELS[arm] for arm in arms] if column == 0 else [""] * len(arms))
        axes.invert_yaxis()
        axes.set_title(key.replace("/", ", "), fontsize=9)
        axes.set_xlabel("cosine with the reference, arm - GRPO")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(figure).print_png(path)
    return path


def _interval(contrast: Paired, spec: str = "+.4f") -> str:
    return f"{contrast.mean:{spec}} [{contrast.low:{spec}}, {contrast.high:{spec}}]"


def _cell_table(cell: dict) -> list[str]:
    grpo_norm = finite_mean(measure(cell, "grpo", "norm"))
    lines = [
        "| arm | mean cosine | - GRPO, 95% interval | p | AdamW gain - GRPO (x1e-6), 95% interval | norm / GRPO's |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for arm in ARMS:
        cosine = finite_mean(measure(cell, arm, "cosine"))
        if arm == "grpo":
            lines.append(f"| {ARM_LABELS[arm]} | {cosine:.4f} | | | gain {finite_mean(measure(cell, arm, 'gain')) * 1e6:.3f} | 1 |")
            continue
        difference, gain = paired(cell, arm, "grpo"), paired(cell, arm, "grpo", "gain")
        scaled = Paired(gain.minuend, gain.subtrahend, gain.n, gain.mean * 1e6, gain.low * 1e6, gain.high * 1e6, gain.p)
        norm = finite_mean(measure(cell, arm, "norm")) / grpo_norm
        lines.append(
            f"| {ARM_LABELS[arm]} | {cosine:.4f} | {_interval(difference)} | {difference.p:.2g} | {_interval(scaled, '+.3f')} | {norm:.2f} |"
        )
    return lines


def write_gradient_report(results: dict, out_dir: Path) -> Path:
    """Writes `results_gradients.md` and its figure under `out_dir`."""
    plan = results["plan"]
    figure = plot_cosines(results, out_dir / "results" / "gradients_cosines.png")
    lines = [
        "# The paired gradient-level test",
        "",
        f"Generated by `python -m oar_verl.study --plan gradients` on {results['machine']}. Pre-registered in "
        "[results.md](results.md) (the design, the calibration and the decision rules); this page gives the numbers.",
        "",
        f"Per task and checkpoint, {plan['batches']} batches of {plan['prompts']} prompts x {plan['samples']} samples; every arm's "
        "policy gradient on the same samples; the reference gradient from an independent pool of "
        f"{plan['reference_prompts']} x {plan['reference_samples']} samples with a leave-one-out baseline. Batches where every "
        "advantage is 0 (no gradient for any arm) are left out of the differences; `n` counts the batches used.",
        "",
        f"![cosine with the reference gradient, arm - GRPO, 95% intervals]({figure.relative_to(out_dir).as_posix()})",
        "",
    ]
    for key, cell in results["cells"].items():
        batches = cell["batches"]
        if len(batches) < 2:
            continue
        shares = {name: finite_mean([b["shares"][name] for b in batches]) for name in batches[0]["shares"]}
        used = len(with_gradient(cell))
        lines += [
            f"## {key.replace('/', ', ')}",
            "",
            f"Model `{cell['model']}` (weights SHA-256 `{cell['weights_sha256'][:16]}...`); {len(batches)} batches ({used} with a gradient), "
            f"mean reward {finite_mean([b['reward'] for b in batches]):.3f}, filler {sum(b['filler_tokens'] for b in batches) / max(1, sum(b['reasoning_tokens'] for b in batches)):.0%} "
            f"of the reasoning tokens. Share of GRPO's gradient (projection) on the first-error tokens of wrong responses: "
            f"{shares['grpo_error']:.3f}; on the filler: {shares['grpo_filler']:.3f}; share of beta 40's gradient on the first-error "
            f"tokens: {shares['oracle_beta40_error']:.3f}.",
            "",
            *_cell_table(cell),
            "",
        ]
    if all(f"{task}/{checkpoint}" in results["cells"] and len(results["cells"][f"{task}/{checkpoint}"]["batches"]) >= 2
           for task in ("chains", "filler") for checkpoint in CHECKPOINTS):  # fmt: skip
        lines += _outcomes(results)
    path = out_dir / "results_gradients.md"
    path.write_text("\n".join(lines).rstrip("\n") + "\n", encoding="utf-8")
    return path


def _outcomes(results: dict) -> list[str]:
    lines = ["## Calibration (chains, pre-registered)", ""]
    for checkpoint in CHECKPOINTS:
        result = calibration(results["cells"][f"chains/{checkpoint}"])
        lines.append(
            f"- {checkpoint}: beta 1 - GRPO {_interval(result['beta1'])} (close: |mean| <= {CLOSE_TO_GRPO:.0%} of GRPO's "
            f"{result['grpo_cosine']:.4f}: {'yes' if result['beta1_close'] else 'no'}); beta 40 - GRPO {_interval(result['beta40'])} "
            f"(below 0: {'yes' if result['beta40_below'] else 'no'}): calibration {'passed' if result['passed'] else 'FAILED'}."
        )
    outcome = decision(results)
    lines += ["", "## Decision (filler, pre-registered)", "", "| contrast | n | mean, 95% interval | p | Holm p |", "| --- | --- | --- | --- | --- |"]
    for name, contrast in outcome["family"].items():
        lines.append(f"| {name} | {contrast.n} | {_interval(contrast)} | {contrast.p:.2g} | {outcome['holm'][name]:.2g} |")
    delivered = [ARM_LABELS[arm] for arm, ok in outcome["delivers"].items() if ok]
    lines += [
        "",
        f"Reweighting can help: **{'yes' if outcome['can_help'] else 'no'}**. OAR delivers it: "
        f"**{'yes, ' + ' and '.join(delivered) if delivered else 'no'}**.",
        "",
    ]
    return lines
