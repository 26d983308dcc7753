"""The study runner's order, gate and resumption, with the training runs replaced by stubs
(the smoke test trains through verl)."""

import dataclasses
import json

import pytest

from oar_verl.study import runner
from oar_verl.study.plan import CHAINS


def fake_run(gain: dict[str, float]):
    calls = []

    def run_one(plan, paths, method, seed, workdir):
        calls.append((method, seed))
        level = 0.5 + 0.01 * seed + gain.get(method, 0.0) + (0.003 if seed % 2 else 0.0) * (method == "oracle")
        return {"method": method, "seed": seed, "accuracy": {"0": 0.4, "10": level}, "step_time_s": 1.0, "wall_s": 1.0}

    return run_one, calls


@pytest.fixture
def stubbed(monkeypatch, tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"weights")
    monkeypatch.setattr(runner, "prepare", lambda plan, workdir: {"model": tmp_path})
    monkeypatch.setattr(runner, "fidelity", lambda plan, model: {"responses": 0})
    return tmp_path


@pytest.mark.parametrize("oracle_gain, passed", [(0.05, True), (0.0, False)])
def test_other_methods_run_only_past_the_gate(monkeypatch, stubbed, oracle_gain, passed):
    plan = dataclasses.replace(CHAINS, seeds=(0, 1, 2))
    run_one, calls = fake_run({"oracle": oracle_gain})
    monkeypatch.setattr(runner, "run_one", run_one)
    results = runner.run_study(plan, stubbed / "work", stubbed / "results.json", log=lambda m: None)
    gate_runs = [(m, s) for s in plan.seeds for m in ("grpo", "oracle")]
    assert calls[: len(gate_runs)] == gate_runs and results["gate"]["passed"] is passed
    assert len(calls) == (len(plan.methods) * len(plan.seeds) if passed else len(gate_runs))
    assert results["gate"]["mean"] == pytest.approx(oracle_gain + 0.001)
    assert json.loads((stubbed / "results.json").read_text())["gate"] == results["gate"]  # the report-only page reads the file


def test_a_rerun_resumes_and_past_gate_runs_the_rest(monkeypatch, stubbed):
    plan = dataclasses.replace(CHAINS, seeds=(0, 1))
    run_one, calls = fake_run({})
    monkeypatch.setattr(runner, "run_one", run_one)
    runner.run_study(plan, stubbed / "work", stubbed / "results.json", log=lambda m: None)
    assert len(calls) == 4  # the gate's runs; the gate not passed
    calls.clear()
    results = runner.run_study(plan, stubbed / "work", stubbed / "results.json", log=lambda m: None, past_gate=True)
    assert len(calls) == 6 and ("grpo", 0) not in calls and len(results["runs"]) == 10


def test_a_resume_on_another_warm_start_or_plan_is_refused(monkeypatch, stubbed):
    """Runs from two models (a warm start rebuilt on another machine) or two plans never mix."""
    plan = dataclasses.replace(CHAINS, seeds=(0, 1))
    run_one, calls = fake_run({})
    monkeypatch.setattr(runner, "run_one", run_one)
    runner.run_study(plan, stubbed / "work", stubbed / "results.json", log=lambda m: None)
    (stubbed / "model.safetensors").write_bytes(b"other weights")
    with pytest.raises(ValueError, match="measured from the warm start with weights .* would mix runs from two models"):
        runner.run_study(plan, stubbed / "work", stubbed / "results.json", log=lambda m: None)
    with pytest.raises(ValueError, match="holds the results of another plan than 'chains'"):
        runner.run_study(dataclasses.replace(plan, rl_steps=1), stubbed / "work", stubbed / "results.json", log=lambda m: None)
    assert len(calls) == 4  # the gate's runs, once


def test_the_chains_plan_ships_its_warm_start(tmp_path):
    paths = runner.prepare(dataclasses.replace(CHAINS, train_size=4, test_size=4), tmp_path)
    shipped = runner.STORED_WARM_STARTS / "chains" / "model.safetensors"
    assert runner.weights_digest(paths["model"]) == runner.weights_digest(shipped.parent)


def test_a_follow_up_starts_from_the_warm_start_of_the_study_it_follows(monkeypatch, tmp_path):
    """`chains_followup` ships no model of its own: it copies the chains study's, so that its
    runs pair with the study's (same weights, recorded and checked by the page)."""
    from oar_verl.study.plan import CHAINS_FOLLOWUP

    copied = []
    monkeypatch.setattr(runner, "prepare_run", lambda workdir, **settings: copied.append(sorted(p.name for p in (workdir / "model").iterdir())) or {})
    runner.prepare(CHAINS_FOLLOWUP, tmp_path)
    assert copied == [sorted(p.name for p in (runner.STORED_WARM_STARTS / "chains").iterdir())] and "model.safetensors" in copied[0]
