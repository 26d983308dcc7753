"""End to end: verl's stock v1 trainer runs GRPO on the CPU backend (a tiny model built
and warm-started here, generated GSM8K-format data), then resumes from its checkpoint."""

import re
from pathlib import Path

import pytest
from safetensors.torch import load_file

from oar_verl.quickstart import read_metrics, run_training, train_command
from oar_verl.verl_cpu.hf_server import weights_digest

SYNC_LINE = re.compile(r"\[oar_verl\.hf_rollout\] replica 0 step (\d+): weights synced, sha256 ([0-9a-f]{64})")
CHECKPOINT_OVERRIDES = ["trainer.save_freq=2", "actor_rollout_ref.actor.checkpoint.save_contents=[model,optimizer,extra,hf_model]"]


def synced_digests(log: Path) -> list[tuple[int, str]]:
    return [(int(step), digest) for step, digest in SYNC_LINE.findall(log.read_text())]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, quickstart_inputs):
    """Two steps with a checkpoint, then a resumed run to step 3."""
    workdir = tmp_path_factory.mktemp("grpo")
    paths = quickstart_inputs
    checkpoints = workdir / "checkpoints"
    results = {}
    for name, steps, extra in (("first", 2, ["trainer.val_before_train=true", "trainer.test_freq=2"]), ("resumed", 3, [])):
        log, metrics = workdir / f"{name}.log", workdir / f"{name}.jsonl"
        command = train_command(paths, checkpoints, estimator="grpo", steps=steps, overrides=CHECKPOINT_OVERRIDES + extra)
        result = run_training(command, metrics, log)
        assert result.returncode == 0, log.read_text()[-6000:]
        results[name] = (log, read_metrics(metrics))
    return paths, checkpoints, results


def test_policy_trained_and_rollout_weights_follow(runs):
    paths, checkpoints, results = runs
    log, metrics = results["first"]
    initial = weights_digest(load_file(paths["model"] / "model.safetensors").items())
    trained = weights_digest(load_file(checkpoints / "global_step_2" / "actor" / "huggingface" / "model.safetensors").items())
    assert trained != initial, "the policy did not change"
    digests = synced_digests(log)
    # every sync was verified on arrival (sent digest == loaded digest, else the run fails)
    assert [step for step, _ in digests] == [0, 1, 2]
    assert digests[0][1] == initial, "the rollout server did not start from the trainer's weights"
    assert digests[-1][1] == trained, "the rollout server does not hold the trainer's final weights"
    assert len({digest for _, digest in digests}) == 3, "weights did not change between steps"


def test_rollout_log_probs_match_the_actor(runs):
    _, _, results = runs
    _, metrics = results["first"]
    for step in (1, 2):
        assert metrics[step]["training/rollout_probs_diff_valid"] == 1.0
        assert metrics[step]["training/rollout_probs_diff_max"] < 1e-4, metrics[step]["training/rollout_probs_diff_max"]


def test_rewards_vary_and_validation_runs(runs):
    _, _, results = runs
    _, metrics = results["first"]
    score = metrics[1]["critic/score/mean"]
    assert 0.0 < score < 1.0, "GRPO needs groups with different rewards"
    assert 0.0 < metrics[0]["val-core/openai/gsm8k/acc/mean@1"] < 1.0
    assert "val-core/openai/gsm8k/acc/mean@1" in metrics[2]


def test_resume_continues_from_the_checkpoint(runs):
    _, checkpoints, results = runs
    log, metrics = results["resumed"]
    assert "Resuming from" in log.read_text() and str(checkpoints / "global_step_2") in log.read_text()
    assert sorted(metrics) == [3], "the resumed run must train step 3 only"
    first_digests = synced_digests(results["first"][0])
    resumed_digests = synced_digests(log)
    assert resumed_digests[0] == (2, first_digests[-1][1]), "the resumed trainer must hold the checkpoint's weights"
