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

    def run_training(command, metrics_file, log_file=None, env=None):
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
