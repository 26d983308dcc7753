"""The study's plan and report, on synthetic results (no training)."""

import pytest
from PIL import Image

from oar_verl.study.pages import write_report
from oar_verl.study.plan import CHAINS, CHAINS_CLIPPING, CHAINS_FOLLOWUP, FULL, NO_CLIPPING, PLANS, SMOKE, StudyPlan
from oar_verl.study.report import HAND_NOTES, verdict


def synthetic(finals: dict[str, list[float]]) -> dict:
    runs = [
        {"method": method, "seed": seed, "accuracy": {"0": 0.5, "10": final}, "train_score": {"1": 0.3, "10": final - 0.1},
         "entropy_end": 1.2, "step_time_s": 4.0, "attribution_time_s": None if method == "grpo" else 0.5, "wall_s": 100.0}
        for method, values in finals.items() for seed, final in enumerate(values)
    ]  # fmt: skip
    return {"plan": {**FULL.__dict__, "methods": list(finals)}, "machine": "test machine", "runs": runs, "fidelity": None}


def test_verdict_separates_a_real_difference_from_noise():
    lines = verdict(
        synthetic({"grpo": [0.50, 0.51, 0.49], "oar_g": [0.60, 0.61, 0.59], "oar_p": [0.40, 0.41, 0.39], "oar_g_permuted": [0.45, 0.55, 0.50]})
    )
    assert "OAR-G**: final held-out accuracy 0.600 vs GRPO 0.500, a difference of +10.0 points" in lines[0] and "better than GRPO" in lines[0]
    assert "worse than GRPO" in lines[1]
    assert "not distinguishable" in lines[2]
    assert "too few seeds" in verdict(synthetic({"grpo": [0.5], "oar_g": [0.9]}))[0]


def test_report_has_the_table_curves_and_verdict(tmp_path):
    results = synthetic({"grpo": [0.50, 0.52], "oar_g": [0.55, 0.57]})
    results["runs"][2]["step_time_s"] = 6.0  # oar_g seed 0: 1.5x GRPO seed 0; seed 1: 1.0x
    path = write_report({**results, "prepare_s": 60.0}, tmp_path, command="python -m oar_verl.study")
    assert path == tmp_path / "results_first.md"
    text = path.read_text()
    assert "| GRPO | 2 | 0.510 ± 0.014 | 0.510 | 4.00 | 1.00x |" in text and "| OAR-G | 2 | 0.560 ± 0.014 | 0.560 | 5.00 | 1.25x |" in text
    assert "on test machine: 8 minutes of compute" in text and "## Verdict" in text
    for image in ("first_accuracy.png", "first_train_reward.png"):
        assert Image.open(tmp_path / "results" / image).size[0] > 400
    path.write_text(path.read_text() + f"\n{HAND_NOTES}\n\n- a note\n")
    write_report({**results, "prepare_s": 60.0}, tmp_path, command="python -m oar_verl.study")
    assert path.read_text().endswith(f"{HAND_NOTES}\n\n- a note\n") and path.read_text().count(HAND_NOTES) == 1


def powered_results(differences: dict[str, float], seeds: int = 6) -> dict:
    """Synthetic runs of the chains plan: each method's primary metric is GRPO's plus its
    difference, with a per-seed wobble that pairing removes."""
    runs = []
    for method, difference in differences.items():
        for seed in range(seeds):
            level = 0.5 + 0.02 * seed + difference + (0.004 if seed % 2 else -0.004) * (method != "grpo")
            runs.append({"method": method, "seed": seed, "accuracy": {"0": 0.45, "10": level, "20": level}, "train_score": {"1": 0.3, "20": level},
                         "entropy_end": 1.0, "step_time_s": 4.0 + (method != "grpo"), "attribution_time_s": None if method == "grpo" else 0.5, "wall_s": 300.0,
                         "error_lines": {"0": {"correct": 230, "step 2 (wraps)": 200, "answer": 82}, "20": {"correct": 300, "step 2 (wraps)": 212}},
                         "error_token_share": {"1": 0.03 if method == "grpo" else 0.2, "2": 0.03 if method == "grpo" else 0.25}})  # fmt: skip
    plan = {**CHAINS.__dict__, "seeds": list(range(seeds))}
    return {"plan": plan, "machine": "test machine", "runs": runs, "prepare_s": 60.0, "fidelity": None}


def test_powered_report_has_the_preregistration_gate_and_contrasts(tmp_path):
    results = powered_results({"grpo": 0.0, "oracle": 0.05, "oar_g": 0.01, "oar_p_taylor": 0.0, "oar_g_permuted": 0.012})
    results["gate"] = {"passed": True, "mean": 0.05, "low": 0.04, "high": 0.06, "seeds": list(range(6))}
    path = write_report(results, tmp_path, command="python -m oar_verl.study --plan chains")
    text = path.read_text()
    assert path == tmp_path / "results.md" and "30 of 30 runs so far" in text
    assert "## Pre-registration (committed on 2026-12-04, before any run of this plan)" in text
    assert "Oracle - GRPO over seeds [0, 1, 2, 3, 4, 5]: +5.00 points, 95% interval [+4.00, +6.00]: passed" in text
    oracle_row = next(line for line in text.splitlines() if line.startswith("| oracle (perfect attribution) - GRPO |"))
    assert "| 6 | +5.00 | [+4." in oracle_row and "| 0.031 | 0.125 |" in oracle_row  # p = 2/64; Holm x4
    assert "| OAR-G - OAR-G, permuted weights (control) | 6 | -0.20 |" in text
    for image in ("chains_accuracy.png", "chains_error_token_share.png", "chains_error_lines.png"):
        assert Image.open(tmp_path / "results" / image).size[0] > 400


def test_powered_report_before_the_gate_is_decided(tmp_path):
    results = powered_results({"grpo": 0.0}, seeds=1)
    text = write_report(results, tmp_path, command="python -m oar_verl.study --plan chains").read_text()
    assert "Not decided yet" in text and "No contrast has two seeds of both arms yet." in text


def test_plan_checks_and_overrides():
    with pytest.raises(ValueError, match="methods: unknown"):
        StudyPlan(methods=("grpo", "ppo"))
    overrides = FULL.verl_overrides("oar_g_permuted", 2)
    assert "algorithm.oar.permute_weights=true" in overrides and "actor_rollout_ref.rollout.seed=2" in overrides and "data.seed=2" in overrides
    assert not any("permute" in o for o in FULL.verl_overrides("oar_g", 2))
    assert {"grpo", "oracle", "oar_g_permuted"} == set(SMOKE.methods) and set(PLANS) == {
        "first",
        "smoke",
        "chains",
        "chains_followup",
        "chains_clipping",
    }
    with pytest.raises(ValueError, match="gate_methods"):
        StudyPlan(methods=("grpo", "oar_g"), gate_methods=("grpo", "oracle"))
    assert "algorithm.oar.oracle=true" in CHAINS.verl_overrides("oracle", 0) and "trainer.resume_mode=auto" in CHAINS.verl_overrides("grpo", 0)
    unclipped = [o for o in CHAINS_CLIPPING.verl_overrides("oracle_concentrated_unclipped", 0) if "clip_grad" in o]
    assert unclipped == [f"actor_rollout_ref.actor.optim.clip_grad={NO_CLIPPING}"] and NO_CLIPPING >= 1e6
    assert not any("clip_grad" in o for o in CHAINS_CLIPPING.verl_overrides("oracle_concentrated", 0))


def test_the_gate_runs_first():
    order = CHAINS.run_order()
    assert order[: 2 * len(CHAINS.seeds)] == [(m, s) for s in CHAINS.seeds for m in ("grpo", "oracle")]
    assert len(order) == len(set(order)) == len(CHAINS.methods) * len(CHAINS.seeds) >= 5 * 6


def test_powered_report_when_the_gate_stops_the_study(tmp_path):
    results = powered_results({"grpo": 0.0, "oracle": -0.01})
    results["runs"] = [run for run in results["runs"] if run["method"] in ("grpo", "oracle")]
    results["gate"] = {"passed": False, "mean": -0.01, "low": -0.04, "high": 0.02, "seeds": list(range(6))}
    text = write_report(results, tmp_path, command="python -m oar_verl.study --plan chains").read_text()
    assert "12 of 30 planned runs, the gate's; the gate was not passed, so the other 18 were not run" in text
    assert "-1.00 points, 95% interval [-4.00, +2.00]: not passed: the task cannot show credit assignment" in text


def test_a_follow_up_is_a_section_of_the_page_of_the_study_it_follows(tmp_path):
    """The follow-up's runs are paired with the study's GRPO and oracle runs of the same seeds,
    on the study's page, whichever plan's results the page is written from."""
    import json

    study = powered_results({"grpo": 0.0, "oracle": -0.01})
    study["gate"] = {"passed": False, "mean": -0.01, "low": -0.04, "high": 0.02, "seeds": list(range(6))}
    follow_up = powered_results({"oracle_concentrated": 0.03})
    follow_up["plan"] = {**CHAINS_FOLLOWUP.__dict__, "seeds": list(range(6))}
    for results, digest in ((study, "abc"), (follow_up, "abc")):
        results["warm_start_sha256"] = digest
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "chains.json").write_text(json.dumps(study))
    (tmp_path / "results" / "chains_followup.json").write_text(json.dumps(follow_up))
    path = write_report(follow_up, tmp_path, command="python -m oar_verl.study --plan chains_followup")
    text = path.read_text()
    assert path == tmp_path / "results.md" and "## Follow-up after the gate" in text and "6 of 6 runs" in text
    assert (
        "| oracle, boost 40 (concentrated) - GRPO | 6 | +3.00 |" in text
        and "| oracle, boost 40 (concentrated) - oracle (perfect attribution) | 6 | +4.00 |" in text
    )
    assert "| oracle, boost 40 (concentrated) | 6 |" in text and Image.open(tmp_path / "results" / "chains_followup_accuracy.png").size[0] > 400
    follow_up["warm_start_sha256"] = "another model"
    (tmp_path / "results" / "chains_followup.json").write_text(json.dumps(follow_up))
    with pytest.raises(ValueError, match="another warm start"):
        write_report(study, tmp_path, command="python -m oar_verl.study --plan chains")
