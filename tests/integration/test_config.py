import dataclasses
from pathlib import Path

import pytest
import yaml

from oar_verl.core import GradientConfig, PerturbationConfig
from oar_verl.integration.config import OARSettings, settings_markdown

DEFAULTS_YAML = "oar_verl/config/oar_defaults.yaml"


def test_yaml_defaults_match_the_dataclass():
    from pathlib import Path

    declared = yaml.safe_load((Path(__file__).parents[2] / DEFAULTS_YAML).read_text())["algorithm"]["oar"]
    assert declared == dataclasses.asdict(OARSettings())


def test_every_field_is_documented():
    for field in dataclasses.fields(OARSettings):
        assert len(field.metadata.get("help", "")) > 20, field.name


def test_method_configs_follow_the_spec_defaults():
    settings = OARSettings()
    assert settings.method_config("oar_g", pad_token_id=7) == GradientConfig(target="answer_mean", noise_std=1e-3, seed=0)
    assert settings.method_config("oar_p", pad_token_id=7) == PerturbationConfig(
        target="answer_mean", perturbation_id=7
    )  # this project's default (OAR_SPEC section 11)
    assert OARSettings(target="answer_logprob", perturbation_id=3).method_config("oar_p", 7).perturbation_id == 3


@pytest.mark.parametrize(
    "values, key",
    [
        ({"quantile": 1.0}, "algorithm.oar.quantile"),
        ({"quantile": 0}, "algorithm.oar.quantile"),
        ({"beta": -1}, "algorithm.oar.beta"),
        ({"min_weight": 0}, "algorithm.oar.min_weight"),
        ({"min_signal": 1.0}, "algorithm.oar.min_signal"),
        ({"noise_std": -0.1}, "algorithm.oar.noise_std"),
        ({"max_tokens_per_pass": 0}, "algorithm.oar.max_tokens_per_pass"),
        ({"heatmap_freq": -1}, "algorithm.oar.heatmap_freq"),
        ({"heatmap_responses": 0}, "algorithm.oar.heatmap_responses"),
        ({"perturbation_id": -2}, "algorithm.oar.perturbation_id"),
        ({"target": "last"}, "algorithm.oar.target"),
        ({"answer_pattern": "(unclosed"}, "algorithm.oar.answer_pattern"),
        ({"quantil": 0.3}, "algorithm.oar: unknown setting"),
    ],
)
def test_bad_settings_name_the_key(values, key):
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        OARSettings.from_config(values)


@pytest.mark.parametrize(
    "values, key",
    [
        ({"perturbation_mode": "fast"}, "algorithm.oar.perturbation_mode"),
        ({"span": 0}, "algorithm.oar.span"),
        ({"perturbation_mode": "taylor", "taylor_top": -1}, "algorithm.oar.taylor_top"),
        ({"perturbation_mode": "taylor", "taylor_top": 0, "taylor_samples": 0}, "algorithm.oar.taylor_top, taylor_samples"),
    ],
)
def test_bad_perturbation_settings_name_the_key(values, key):
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        OARSettings.from_config(values).method_config("oar_p", pad_token_id=0)
    assert OARSettings.from_config({"perturbation_mode": "span_approx", "span": 2}).method_config("oar_p", 0).span == 2
    taylor = OARSettings.from_config({"perturbation_mode": "taylor", "taylor_top": 8, "taylor_samples": 2}).method_config("oar_p", 0)
    assert (taylor.mode, taylor.taylor_top, taylor.taylor_samples) == ("taylor", 8, 2)


def test_method_specific_refusals():
    with pytest.raises(ValueError, match=r"algorithm\.oar\.noise_std"):
        OARSettings(noise_std=0.0).method_config("oar_g", 0)
    assert OARSettings(noise_std=0.0, target="answer_logprob").method_config("oar_g", 0).noise_std == 0.0
    with pytest.raises(ValueError, match=r"algorithm\.oar\.perturbation_id"):
        OARSettings().method_config("oar_p", pad_token_id=None)


def test_fused_attribution_follows_the_method_the_core_can_fuse():
    fused = OARSettings()
    assert fused.fuses_log_probs("oar_g") and not fused.fuses_log_probs("oar_p")
    assert OARSettings(perturbation_mode="taylor").fuses_log_probs("oar_p")
    for mode in ("exact", "span_approx", "guided_approx"):
        assert not OARSettings(perturbation_mode=mode).fuses_log_probs("oar_p")
    assert not OARSettings(fuse_log_probs=False, perturbation_mode="taylor").fuses_log_probs("oar_p")
    assert not OARSettings(fuse_log_probs=False).fuses_log_probs("oar_g")


def test_the_settings_page_is_generated_from_the_fields():
    page = Path(__file__).parents[2] / "docs" / "settings.md"
    assert page.read_text() == settings_markdown(), "docs/settings.md is stale: regenerate it (command at its top)"
    assert all(f"| `{setting.name}` |" in page.read_text() for setting in dataclasses.fields(OARSettings))
