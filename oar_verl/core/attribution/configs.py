"""The attribution methods' settings, checked when built: `GradientConfig` (OAR-G) and
`PerturbationConfig` (OAR-P in its four modes). Each field's `help` is what the plugin's
settings table and command line show."""

from __future__ import annotations

from dataclasses import dataclass, field

from oar_verl.core.names import did_you_mean
from oar_verl.core.targets import check_target

MODES = ("exact", "span_approx", "guided_approx", "taylor")
"""OAR-P's modes: the definition, and three approximations of it."""


@dataclass(frozen=True)
class GradientConfig:
    target: str = field(
        default="answer_mean", metadata={"help": "P_final mode: answer_mean (OAR-G reference default), first_answer, answer_logprob or every_answer."}
    )
    noise_std: float = field(
        default=1e-3,
        metadata={
            "help": "sigma of the Gaussian noise on reasoning embeddings (reference code: 1e-3). 0 is allowed only with answer_logprob, where the KL gradient does not vanish."
        },
    )
    seed: int = field(
        default=0, metadata={"help": "Seed of the noise generators (>= 0; each row's generator is seeded from it and the row's index)."}
    )
    max_tokens_per_pass: int = field(
        default=16384, metadata={"help": "Token budget of one forward+backward pass (rows x length): bounds peak memory."}
    )

    def __post_init__(self) -> None:
        check_target(self.target)
        if not self.noise_std >= 0 or self.noise_std == float("inf"):
            raise ValueError(f"noise_std: expected a finite value >= 0, got {self.noise_std}")
        if self.noise_std == 0 and self.target != "answer_logprob":
            raise ValueError(f"noise_std: 0 gives all-zero KL gradients with target {self.target!r}; use > 0 or target 'answer_logprob'")
        if self.seed < 0:
            raise ValueError(f"seed: expected >= 0, got {self.seed}")
        if self.max_tokens_per_pass < 1:
            raise ValueError(f"max_tokens_per_pass: expected >= 1, got {self.max_tokens_per_pass}")


@dataclass(frozen=True)
class PerturbationConfig:
    target: str = field(
        default="first_answer",
        metadata={
            "help": "P_final mode: first_answer (OAR-P reference default), answer_mean, answer_logprob or every_answer (not with mode taylor)."
        },
    )
    perturbation_id: int | None = field(
        default=None, metadata={"help": "Token id put in place of the perturbed token; the tokenizer's pad id in the reference. Required."}
    )
    max_tokens_per_pass: int = field(
        default=16384,
        metadata={"help": "Token budget of one forward pass (sequences x length): bounds peak memory. Must hold one prompt plus response."},
    )
    mode: str = field(
        default="exact",
        metadata={
            "help": "exact (the definition), or span_approx: APPROXIMATE, each run of `span` consecutive reasoning tokens is replaced at once and its tokens share the score (about span x fewer sequences); guided_approx: APPROXIMATE, exact scores for the top tokens by OAR-G, calibrated OAR-G for the rest; taylor: APPROXIMATE, a first-order (answer_logprob) or Fisher (KL targets) expansion of every replacement, one forward and taylor_top + taylor_samples backward passes (one for answer_logprob)."
        },
    )
    span: int = field(default=4, metadata={"help": "span_approx: tokens replaced together (>= 1; 1 is exact)."})
    guided_fraction: float = field(
        default=0.25,
        metadata={"help": "guided_approx: share of each response's reasoning tokens, the top ones by OAR-G, scored exactly (in (0, 1])."},
    )
    calibration_fraction: float = field(
        default=0.1,
        metadata={
            "help": "guided_approx: share drawn at random from the other tokens and scored exactly, to fit the scale applied to their OAR-G scores (in (0, 1])."
        },
    )
    seed: int = field(
        default=0, metadata={"help": "guided_approx: seed of the OAR-G noise and of the calibration draw; taylor: seed of the Gaussian projections."}
    )
    taylor_top: int = field(
        default=4,
        metadata={"help": "taylor (KL targets): the most probable answer tokens whose Fisher terms are taken exactly, one backward each (>= 0)."},
    )
    taylor_samples: int = field(
        default=0,
        metadata={
            "help": "taylor (KL targets): Gaussian projections estimating the rest of the vocabulary's terms without bias, one backward each (>= 0; 0 drops the rest)."
        },
    )

    def __post_init__(self) -> None:
        check_target(self.target)
        if self.mode not in MODES:
            raise ValueError(f"mode: unknown OAR-P mode {self.mode!r}{did_you_mean(self.mode, MODES)}, expected one of {list(MODES)}")
        for name in ("taylor_top", "taylor_samples"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: expected >= 0 backward passes, got {getattr(self, name)}")
        if self.mode == "taylor" and self.target == "every_answer":
            raise ValueError(
                "mode: taylor's Fisher form takes one distribution a row; target 'every_answer' has one a position: use mode exact, or oar_g"
            )
        if self.taylor_top + self.taylor_samples < 1:
            raise ValueError(f"taylor_top, taylor_samples: at least one direction is needed, got {self.taylor_top} and {self.taylor_samples}")
        if self.span < 1:
            raise ValueError(f"span: expected >= 1 consecutive tokens, got {self.span}")
        for name in ("guided_fraction", "calibration_fraction"):
            if not 0.0 < getattr(self, name) <= 1.0:
                raise ValueError(f"{name}: expected a fraction in (0, 1], got {getattr(self, name)}")
        if self.perturbation_id is None or int(self.perturbation_id) < 0:
            raise ValueError(f"perturbation_id: expected a token id >= 0 (e.g. tokenizer.pad_token_id), got {self.perturbation_id!r}")
        if self.max_tokens_per_pass < 1:
            raise ValueError(f"max_tokens_per_pass: expected >= 1, got {self.max_tokens_per_pass}")
