"""OAR settings: `algorithm.oar.*` in verl's config, one dataclass, checked before Ray starts.

    python -m verl.trainer.main_ppo algorithm.adv_estimator=oar_g +algorithm.oar.quantile=0.3
    python -m oar_verl.main_ppo algorithm.adv_estimator=oar_p algorithm.oar.target=answer_mean

(`oar_verl.main_ppo`'s configs declare `algorithm.oar`, so no `+` is needed there.) The
estimator name picks the method: `oar_p` (perturbation) or `oar_g` (gradient).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field

from oar_verl.core.answers import answer_finder
from oar_verl.core.attribution import GradientConfig, PerturbationConfig, fused_attribution
from oar_verl.core.names import did_you_mean
from oar_verl.core.targets import check_target

PREFIX = "algorithm.oar"
# This project's defaults (docs/OAR_SPEC.md section 11): the reference code's OAR-P target,
# first_answer, found the error token less often than answer_mean in stage 0 (docs/stage0.md).
METHOD_DEFAULT_TARGETS = {"oar_p": "answer_mean", "oar_g": "answer_mean"}


@dataclass(frozen=True)
class SettingType:
    """What a setting accepts: `kind` "bool", "int", "float" or "str", and maybe null."""

    kind: str
    nullable: bool

    def accepts(self, value) -> bool:
        if value is None:
            return self.nullable
        if self.kind == "float":
            return isinstance(value, (int, float)) and not isinstance(value, bool)
        return type(value) is {"bool": bool, "int": int, "str": str}[self.kind]

    @property
    def description(self) -> str:
        words = {"bool": "true or false", "int": "an integer", "float": "a number", "str": "a string"}[self.kind]
        return words + (" or null" if self.nullable else "")


@dataclass(frozen=True)
class OARSettings:
    answer_pattern: str = field(
        default="auto",
        metadata={
            "help": "Where the final answer is: boxed (MATH), gsm8k (####), answer_colon (DAPO), auto (the first of these that matches), or a regular expression with a group 'answer'. Use the format your reward function reads."
        },
    )
    target: str | None = field(
        default=None,
        metadata={
            "help": "P_final mode: answer_mean, first_answer, answer_logprob or every_answer (every answer position: the sum of their KLs; not with perturbation_mode taylor). None: the method's default, answer_mean for both (the reference code's OAR-P default is first_answer: docs/OAR_SPEC.md section 11)."
        },
    )
    quantile: float = field(
        default=0.25,
        metadata={
            "help": "Bi-Level q in (0, 1): per-response quantile of normalised scores below which tokens are damped (authors' lab README: 0.25)."
        },
    )
    beta: float = field(
        default=1.0, metadata={"help": "Bi-Level boost >= 0: the top token's weight before mass preservation is 1 + beta (authors' lab README: 1.0)."}
    )
    min_weight: float = field(default=0.1, metadata={"help": "Floor of damped weights, in (0, 1] (reference code: 0.1)."})
    min_signal: float = field(
        default=0.01,
        metadata={
            "help": "Rows whose largest reasoning score is below min_signal x the step's median row's keep GRPO's weights (counted in oar/rows/low_signal): Bi-Level normalises each row alone and would spread weights over differences at noise level. In [0, 1); 0: off (the reference)."
        },
    )
    preserve_mass: bool = field(
        default=True, metadata={"help": "Rescale each response's reasoning weights to mean 1, keeping its total advantage (paper abstract)."}
    )
    noise_std: float = field(
        default=1e-3,
        metadata={"help": "oar_g: sigma of the Gaussian noise on reasoning embeddings (reference code: 1e-3); 0 only with target answer_logprob."},
    )
    seed: int = field(
        default=0,
        metadata={
            "help": "oar_g: noise seed (oar_p: the guided_approx and taylor draws); each step and data-parallel rank offsets it so draws differ."
        },
    )
    fuse_log_probs: bool = field(
        default=True,
        metadata={
            "help": "oar_g, and oar_p with perturbation_mode taylor: attribute inside verl's old-log-prob request. FSDP actors: verl's own pass (old_log_probs and entropy are verl's, bit for bit; it also records the clean targets), then the attribution passes through verl's engine on the attributed rows (docs/verl_settings.md). Megatron actors: the method's clean forward gives old_log_probs, entropy and the clean target, computed as verl computes them. False: verl's log-prob pass, then attribution on its own (also chosen, whatever this says, under rollout_correction.bypass_mode or an actor router_replay mode other than disabled). oar_p's other modes never fuse. Applies on verl 0.9.1 as released (the trainer subclass), not through the upstream patches' pre-advantage step."
        },
    )
    perturbation_id: int | None = field(
        default=None, metadata={"help": "oar_p: token id put in place of a perturbed token. None: the tokenizer's pad id (reference code)."}
    )
    perturbation_mode: str = field(
        default="exact",
        metadata={
            "help": "oar_p: exact (the definition); span_approx (APPROXIMATE: runs of `span` tokens replaced together, sharing a score); guided_approx (APPROXIMATE: exact on the top `guided_fraction` by OAR-G plus a random `calibration_fraction` of the rest, the others OAR-G scaled to fit); taylor (APPROXIMATE: each replacement's effect expanded around the clean pass, first order for answer_logprob, the Fisher form for KL targets; one forward and taylor_top + taylor_samples backward passes, one for answer_logprob)."
        },
    )
    taylor_top: int = field(
        default=4,
        metadata={
            "help": "oar_p with taylor, KL targets: the most probable answer tokens whose Fisher terms are taken exactly, one backward pass each (>= 0)."
        },
    )
    taylor_samples: int = field(
        default=0,
        metadata={
            "help": "oar_p with taylor, KL targets: Gaussian projections estimating the other tokens' Fisher terms without bias, one backward pass each (>= 0; 0 drops them; taylor_top + taylor_samples >= 1)."
        },
    )
    span: int = field(default=4, metadata={"help": "oar_p with perturbation_mode span_approx: tokens replaced together (>= 1)."})
    guided_fraction: float = field(
        default=0.25, metadata={"help": "oar_p with guided_approx: share of reasoning tokens, the top ones by OAR-G, scored exactly (in (0, 1])."}
    )
    calibration_fraction: float = field(
        default=0.1,
        metadata={
            "help": "oar_p with guided_approx: share of the other tokens drawn at random and scored exactly to fit the OAR-G scale (in (0, 1])."
        },
    )
    max_tokens_per_pass: int = field(
        default=16384,
        metadata={
            "help": "Token budget of one attribution pass on a worker (with use_remove_padding the rows' real tokens, else rows x the longest): bounds its memory whatever the batch; verl's log-prob pass keeps its own limit (log_prob_max_token_len_per_gpu), the attribution passes after it use this one (docs/verl_settings.md; docs/benchmarks.md: about 0.46 MiB per token for a 7B model in bf16 with the actor's gradient checkpointing, 6.3 MiB without; recipes/README.md gives the budget per GPU size). It must hold one prompt plus response; scores do not depend on it."
        },
    )
    permute_weights: bool = field(
        default=False,
        metadata={
            "help": "CONTROL for studies, not for training: each response's reasoning weights randomly permuted (same weights, no outcome grounding), seeded by `seed` and the step."
        },
    )
    oracle: bool = field(
        default=False,
        metadata={
            "help": "STUDY ONLY, not for training: scores from the study task's oracle (oar_verl.study.oracle: 1 on the token where a response first goes wrong, 1e-3 on its other reasoning tokens) in place of the model's attribution, which is then not run: OAR with perfect attribution, the bound on what any estimator can give on the task. Needs the study's generated arithmetic prompts."
        },
    )
    heatmap_freq: int = field(
        default=0,
        metadata={
            "help": "Every N steps, token heatmaps of a few responses (HTML page + PNGs) under trainer.default_local_dir/oar_heatmaps/, logged to wandb (HTML) and tensorboard (images) when verl has them on. 0: off."
        },
    )
    heatmap_responses: int = field(
        default=2, metadata={"help": "Responses per heatmap step (>= 1): a correct and an incorrect one first when the batch has both."}
    )
    dump_dir: str | None = field(
        default=None,
        metadata={
            "help": "If set, each step writes DIR/step_N.pt (DIR/step_N_k.pt per update k when a step has several, as in separate_async): responses, segments, raw scores, weights, GRPO and OAR advantages ([B, R] tensors) for inspection."
        },
    )

    def __post_init__(self) -> None:
        if self.target is not None:
            check_target(self.target, f"{PREFIX}.target")
        checks = {
            "quantile": 0.0 < self.quantile < 1.0,
            "beta": 0.0 <= self.beta < float("inf"),
            "min_weight": 0.0 < self.min_weight <= 1.0,
            "min_signal": 0.0 <= self.min_signal < 1.0,
            "noise_std": 0.0 <= self.noise_std < float("inf"),
            "max_tokens_per_pass": self.max_tokens_per_pass >= 1,
            "heatmap_freq": self.heatmap_freq >= 0,
            "heatmap_responses": self.heatmap_responses >= 1,
            "perturbation_id": self.perturbation_id is None or self.perturbation_id >= 0,
        }
        ranges = {
            "quantile": "in (0, 1)",
            "beta": ">= 0",
            "min_weight": "in (0, 1]",
            "min_signal": "in [0, 1)",
            "noise_std": ">= 0",
            "max_tokens_per_pass": ">= 1",
            "heatmap_freq": ">= 0 (0: off)",
            "heatmap_responses": ">= 1",
            "perturbation_id": ">= 0 or null",
        }
        for name, ok in checks.items():
            if not ok:
                raise ValueError(f"{PREFIX}.{name}: expected a value {ranges[name]}, got {getattr(self, name)!r}")
        try:
            answer_finder(self.answer_pattern)
        except ValueError as error:
            raise ValueError(f"{PREFIX}.{error}") from None

    @classmethod
    def from_config(cls, section: Mapping | None) -> OARSettings:
        """Settings from `algorithm.oar` (a DictConfig or dict; None gives the defaults)."""
        if section is not None and not isinstance(section, Mapping):
            raise ValueError(f"{PREFIX}: expected a mapping of settings (e.g. +{PREFIX}.quantile=0.3), got {section!r}")
        values = dict(section or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            named = ", ".join(f"{name!r}{did_you_mean(name, known)}" for name in unknown)
            raise ValueError(f"{PREFIX}: unknown setting(s) {named}; known: {sorted(known)}")
        for name, value in values.items():
            expected = cls.expected_type(name)
            if not expected.accepts(value):
                raise ValueError(f"{PREFIX}.{name}: expected {expected.description}, got {value!r} ({type(value).__name__})")
        return cls(**values)

    @classmethod
    def expected_type(cls, name: str) -> SettingType:
        """The type setting `name` takes, from its annotation."""
        annotation = next(f.type for f in dataclasses.fields(cls) if f.name == name)
        parts = [part.strip() for part in str(annotation).split("|")]
        return SettingType(next(part for part in parts if part != "None"), "None" in parts)

    @classmethod
    def from_algorithm_config(cls, algorithm: Mapping) -> OARSettings:
        """Settings from the `algorithm` config: `algorithm.oar`, or on a verl whose
        AlgoConfig has `estimator_config` (patches/verl-0.9.1/0005),
        `algorithm.estimator_config.oar` (the two must not both be set)."""
        own = algorithm.get("oar")
        upstream = (algorithm.get("estimator_config") or {}).get("oar")
        if own and upstream:
            raise ValueError(f"{PREFIX} and algorithm.estimator_config.oar: set OAR settings in one place only")
        return cls.from_config(own or upstream)

    def fuses_log_probs(self, method: str) -> bool:
        """Whether `method`'s attribution answers verl's old-log-prob pass: `fuse_log_probs`
        and a method the core can fuse (`core.attribution.fused_attribution`)."""
        return self.fuse_log_probs and fused_attribution(self.method_config(method, pad_token_id=0)) is not None

    def method_config(self, method: str, pad_token_id: int | None):
        """The core config of `method` ("oar_p" or "oar_g") under these settings."""
        target = self.target or METHOD_DEFAULT_TARGETS[method]
        if method == "oar_g":
            if self.noise_std == 0 and target != "answer_logprob":
                raise ValueError(f"{PREFIX}.noise_std: 0 gives all-zero KL gradients with target {target!r}; use > 0 or target answer_logprob")
            return GradientConfig(target=target, noise_std=self.noise_std, seed=self.seed, max_tokens_per_pass=self.max_tokens_per_pass)
        perturbation_id = self.perturbation_id if self.perturbation_id is not None else pad_token_id
        if perturbation_id is None:
            raise ValueError(f"{PREFIX}.perturbation_id: the tokenizer has no pad token; set a token id")
        try:
            return PerturbationConfig(
                target=target, perturbation_id=perturbation_id, max_tokens_per_pass=self.max_tokens_per_pass, mode=self.perturbation_mode,
                span=self.span, guided_fraction=self.guided_fraction, calibration_fraction=self.calibration_fraction, seed=self.seed,
                taylor_top=self.taylor_top, taylor_samples=self.taylor_samples,
            )  # fmt: skip
        except ValueError as error:
            message = str(error).replace("mode:", "perturbation_mode:", 1)
            raise ValueError(f"{PREFIX}.{message}") from None


def settings_summary() -> str:
    """One line per `algorithm.oar.*` setting: its name, default and the first sentence of
    its help (the `--help` of the hydra entry points)."""
    lines = []
    for setting in dataclasses.fields(OARSettings):
        first_sentence = setting.metadata["help"].split(". ")[0].rstrip(".")
        lines.append(f"  {PREFIX}.{setting.name} (default {setting.default!r}): {first_sentence}.")
    return "\n".join(lines)


def settings_markdown() -> str:
    """`docs/settings.md`: every `algorithm.oar.*` setting with its default and its whole
    help, generated from the fields (tests/integration/test_config.py checks the page)."""
    rows = ["| key | default | meaning |", "| --- | --- | --- |"]
    for setting in dataclasses.fields(OARSettings):
        default = "null" if setting.default is None else str(setting.default).lower() if isinstance(setting.default, bool) else setting.default
        rows.append(f"| `{setting.name}` | `{default}` | {setting.metadata['help'].replace('|', '/')} |")
    return "\n".join(
        [
            "# OAR settings (`algorithm.oar.*`)",
            "",
            "Generated from `oar_verl/integration/config.py` (`OARSettings`); do not edit by hand:",
            "`python -c \"from oar_verl.integration.config import settings_markdown; print(settings_markdown(), end='')\" > docs/settings.md`.",
            "With `oar_verl.main_ppo`'s presets the keys exist; with verl's own entry point add them with `+`",
            "(`+algorithm.oar.quantile=0.3`). Defaults also in `oar_verl/config/oar_defaults.yaml`.",
            "",
            *rows,
            "",
        ]
    )
