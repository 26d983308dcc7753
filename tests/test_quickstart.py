"""The quickstart's command line: the preset per actor strategy (the training itself runs in
tests/verl_cpu)."""

import subprocess

import pytest

from oar_verl import quickstart


@pytest.fixture
def commands(tmp_path, monkeypatch) -> list[list[str]]:
    """The training commands `quickstart.main` runs, recorded instead of run (no model built)."""
    recorded = []
    monkeypatch.setattr(quickstart, "prepare", lambda workdir: {"model": tmp_path / "m", "train": tmp_path / "t", "val": tmp_path / "v"})

    def run_training(command, metrics_file, log_file=None, env=None, on_record=None):
        recorded.append(command)
        metrics_file.write_text('{"step": 0, "data": {"val-core/openai/gsm8k/acc/mean@1": 0.5}}\n')
        return subprocess.CompletedProcess(command, 0)

    monkeypatch.setattr(quickstart, "run_training", run_training)
    return recorded


def test_trainer_mode_adds_what_the_cpu_needs(tmp_path, commands):
    quickstart.main(["--trainer-mode", "separate_async", "--workdir", str(tmp_path), "--steps", "2"])
    (command,) = commands
    assert "trainer.v1.trainer_mode=separate_async" in command and set(quickstart.TRAINER_MODES["separate_async"]) <= set(command)
    assert (tmp_path / "metrics_oar_g_separate_async.jsonl").exists()


@pytest.mark.parametrize("strategy, preset", [("fsdp2", "cpu"), ("megatron", "cpu_megatron")])
def test_strategy_selects_its_preset(tmp_path, commands, strategy, preset):
    quickstart.main(["--strategy", strategy, "--workdir", str(tmp_path), "--steps", "2"])
    (command,) = commands
    assert command[command.index("--config-name") + 1] == preset
    assert f"trainer.default_local_dir={tmp_path / ('checkpoints_oar_g' if strategy == 'fsdp2' else 'checkpoints_oar_g_megatron')}" in command
    assert "trainer.v1.trainer_mode=sync" in command


def test_progress_prints_steps_and_evaluations_as_they_come(capsys):
    progress = quickstart.Progress(steps=20, problems=256)
    progress(0, {"val-core/openai/gsm8k/acc/mean@1": 0.48})
    progress(3, {"critic/score/mean": 0.25, "timing_s/step": 8.14})
    assert capsys.readouterr().out.splitlines() == ["  held-out accuracy at step 0: 0.480 +- 0.061", "  step 3/20: training reward 0.250, 8.1 s"]


def test_a_failed_training_shows_the_end_of_verls_output(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(quickstart, "prepare", lambda workdir: {"model": tmp_path / "m", "train": tmp_path / "t", "val": tmp_path / "v"})

    def run_training(command, metrics_file, log_file=None, env=None, on_record=None):
        log_file.write_text("".join(f"line {i}\n" for i in range(100)) + "ValueError: the cause\n")
        return subprocess.CompletedProcess(command, 1)

    monkeypatch.setattr(quickstart, "run_training", run_training)
    with pytest.raises(SystemExit, match=r"training failed \(exit code 1\); its output: .*train_oar_g\.log"):
        quickstart.main(["--workdir", str(tmp_path), "--steps", "2"])
    err = capsys.readouterr().err
    assert "ValueError: the cause" in err and "line 99" in err and "line 50" not in err


def test_the_main_job_rolls_out_through_vllm_unless_told(tmp_path, commands):
    quickstart.main(["--workdir", str(tmp_path), "--steps", "2"])
    quickstart.main(["--rollout", "hf", "--workdir", str(tmp_path), "--steps", "2"])
    vllm, hf = commands
    assert "actor_rollout_ref.rollout.name=vllm" in vllm and "actor_rollout_ref.rollout.name=hf" not in vllm
    assert "actor_rollout_ref.rollout.name=hf" in hf and "actor_rollout_ref.rollout.name=vllm" not in hf
    assert (tmp_path / "metrics_oar_g.jsonl").exists() and (tmp_path / "metrics_oar_g_hf.jsonl").exists()
