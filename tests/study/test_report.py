"""The study's plan and report, on synthetic results (no training)."""

import pytest
from PIL import Image

from oar_verl.study.plan import FULL, SMOKE, StudyPlan
from oar_verl.study.report import verdict, write_report


def synthetic(finals: dict[str, list[float]]) -> dict:
    runs = [
        {"method": method, "seed": seed, "accuracy": {"0": 0.5, "10": final}, "train_score": {"1": 0.3, "10": final - 0.1},
         "entropy_end": 1.2, "step_time_s": 4.0, "attribution_time_s": None if method == "grpo" else 0.5, "wall_s": 100.0}
        for method, values in finals.items() for seed, final in enumerate(values)
    ]  # fmt: skip
    return {"plan": {**FULL.__dict__, "methods": list(finals)}, "machine": "test machine", "runs": runs, "fidelity": None}


def test_verdict_separates_a_real_difference_from_noise():
    lines = verdict(synthetic({"grpo": [0.50, 0.51, 0.49], "oar_g": [0.60, 0.61, 0.59], "oar_p": [0.40, 0.41, 0.39], "oar_g_permuted": [0.45, 0.55, 0.50]}))
    assert "OAR-G**: final held-out accuracy 0.600 vs GRPO 0.500, a difference of +10.0 points" in lines[0] and "better than GRPO" in lines[0]
    assert "worse than GRPO" in lines[1]
    assert "not distinguishable" in lines[2]
    assert "too few seeds" in verdict(synthetic({"grpo": [0.5], "oar_g": [0.9]}))[0]


def test_report_has_the_table_curves_and_verdict(tmp_path):
    results = synthetic({"grpo": [0.50, 0.52], "oar_g": [0.55, 0.57]})
    results["runs"][2]["step_time_s"] = 6.0  # oar_g seed 0: 1.5x GRPO seed 0; seed 1: 1.0x
    path = write_report({**results, "prepare_s": 60.0}, tmp_path, command="python -m oar_verl.study")
    text = path.read_text()
    assert "| GRPO | 2 | 0.510 ± 0.014 | 0.510 | 4.00 | 1.00x |" in text and "| OAR-G | 2 | 0.560 ± 0.014 | 0.560 | 5.00 | 1.25x |" in text
    assert "on test machine: 8 minutes of compute" in text and "## Verdict" in text
    for image in ("accuracy.png", "train_reward.png"):
        assert Image.open(tmp_path / "results" / image).size[0] > 400


def test_plan_checks_and_overrides():
    with pytest.raises(ValueError, match="methods: unknown"):
        StudyPlan(methods=("grpo", "ppo"))
    overrides = FULL.verl_overrides("oar_g_permuted", 2)
    assert "algorithm.oar.permute_weights=true" in overrides and "actor_rollout_ref.rollout.seed=2" in overrides and "data.seed=2" in overrides
    assert not any("permute" in o for o in FULL.verl_overrides("oar_g", 2))
    assert len(FULL.seeds) >= 3 and set(SMOKE.methods) < set(FULL.methods) and {"grpo", "oar_g_permuted"} <= set(SMOKE.methods)
